package main

import (
	"fmt"
	"runtime"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/lathe-ml/lathe/train"
	"github.com/urfave/cli/v2"
)

// runtimeFlags are the flags of the commands that run a model (eval, generate).
func runtimeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "adapter", Usage: "LoRA adapter applied unmerged: a PEFT directory or a GGUF adapter (repeatable)"},
		&cli.Float64Flag{Name: "adapter-scale", Value: 1, Usage: "multiplier of every adapter's own alpha/r scale"},
		&cli.StringFlag{Name: "kv", Value: "f16", Usage: "KV cache precision: f16 (llama.cpp's default, reproduces its numbers) or f32"},
		&cli.IntFlag{Name: "threads", Usage: "threads to use (default: all cores)"},
	}
}

// openRuntime opens MODEL (a GGUF file or a Hugging Face directory) with the adapters and settings of the flags.
func openRuntime(c *cli.Context, cmd string) (*train.Model, error) {
	if c.NArg() != 1 {
		return nil, fmt.Errorf("%s: expected MODEL, got %d arguments", cmd, c.NArg())
	}
	if n := c.Int("threads"); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	kv, err := tensor.ParseDType(c.String("kv"))
	if err != nil {
		return nil, fmt.Errorf("%s: --kv: %w", cmd, err)
	}
	m, err := train.Open(c.Args().Get(0))
	if err != nil {
		return nil, err
	}
	if err := m.SetCacheType(kv); err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: --kv: %w", cmd, err)
	}
	for _, path := range c.StringSlice("adapter") {
		a, err := adapter.Open(path)
		if err != nil {
			m.Close()
			return nil, err
		}
		err = m.ApplyAdapter(a, c.Float64("adapter-scale"))
		a.Close()
		if err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}
