package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

// isPEFTAdapter reports whether dir is an adapter directory (PEFT or mlx-lm) rather than a model.
func isPEFTAdapter(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, adapter.ConfigName))
	return err == nil
}

// adapterToGGUF is `lathe convert ADAPTER_DIR -o adapter.gguf --base BASE`.
func adapterToGGUF(c *cli.Context, in, out string, outType tensor.DType) error {
	if c.String("base") == "" {
		return fmt.Errorf("convert: %s is an adapter: --base (the GGUF or HF model it applies to) is required", in)
	}
	if c.Bool("dry-run") {
		return fmt.Errorf("convert: --dry-run is not supported for adapters")
	}
	base, err := adapter.OpenGGUFBase(c.String("base"))
	if err != nil {
		return fmt.Errorf("convert: --base: %w", err)
	}
	a, err := adapter.Open(in)
	if err != nil {
		return err
	}
	defer a.Close()
	o, err := createOutput(out, c.Bool("force"), a.Files...)
	if err != nil {
		return err
	}
	defer o.abort()
	if err := a.WriteGGUF(o, base, adapter.GGUFOptions{Type: outType, Name: c.String("name")}); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	return o.commit()
}
