// Package demo holds the tiny model that `lathe demo` tours, embedded so that the demo needs no download.
package demo

import "embed"

//go:generate go run ./gen tiny

// Files is the model in Hugging Face layout: tiny/config.json and tiny/model.safetensors.
//
//go:embed tiny
var Files embed.FS
