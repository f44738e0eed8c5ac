// Package demo holds the tiny model that `lathe demo` tours, embedded so that the demo needs no download.
package demo

import "embed"

//go:generate go run ./gen tiny

// Files is the model in Hugging Face layout (tiny/config.json, tiny/model.safetensors, tiny/tokenizer.model,
// tiny/tokenizer_config.json) and a PEFT LoRA adapter for it (tiny-lora/adapter_config.json,
// tiny-lora/adapter_model.safetensors).
//
//go:embed tiny tiny-lora
var Files embed.FS
