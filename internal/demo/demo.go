// Package demo holds the tiny model that `lathe demo` tours, embedded so that the demo needs no download.
package demo

import "embed"

//go:generate go run ./gen tiny

// Files is the model in Hugging Face layout: tiny/config.json, tiny/model.safetensors, tiny/tokenizer.model and
// tiny/tokenizer_config.json.
//
//go:embed tiny
var Files embed.FS
