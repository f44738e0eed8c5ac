package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

// isAdapter reports whether path is a LoRA adapter rather than a model: an adapter directory (PEFT or mlx-lm) or a
// GGUF file whose general.type is "adapter" (llama.cpp's LoRA adapters).
func isAdapter(path string) bool {
	st, err := os.Stat(path)
	if err != nil {
		return false
	}
	if st.IsDir() {
		_, err := os.Stat(filepath.Join(path, adapter.ConfigName))
		return err == nil
	}
	f, err := gguf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	typ, err := f.Metadata.String("general.type")
	return err == nil && typ == "adapter"
}

// convertAdapter is `lathe convert ADAPTER -o OUT [--to peft|gguf|mlx] [--base BASE]`; the format defaults from OUT
// (.gguf or - for standard output → gguf, else peft).
func convertAdapter(c *cli.Context, in, out string, outType tensor.DType) error {
	to := c.String("to")
	if to == "" {
		to = "peft"
		if out == "-" || strings.EqualFold(filepath.Ext(out), ".gguf") {
			to = "gguf"
		}
	}
	switch to {
	case "gguf":
		return adapterToGGUF(c, in, out, outType)
	case "peft", "mlx":
	default:
		return fmt.Errorf("convert: --to %q: want peft, gguf or mlx", to)
	}
	if c.Bool("dry-run") {
		return fmt.Errorf("convert: --dry-run is not supported for adapters")
	}
	if outType != tensor.Invalid {
		return fmt.Errorf("convert: --outtype %s: %s and mlx-lm adapters keep the factors' own type; --outtype applies to GGUF adapters", outType, to)
	}
	if !isAdapter(in) {
		return fmt.Errorf("convert: --to %s: %s is not a LoRA adapter (no %s, not a GGUF adapter)", to, in, adapter.ConfigName)
	}
	a, err := adapter.Open(in)
	if err != nil {
		return err
	}
	defer a.Close()
	var base *adapter.HFBase
	if c.String("base") != "" {
		b, err := adapter.OpenHFBase(c.String("base"))
		if err != nil {
			return fmt.Errorf("convert: --base: %w", err)
		}
		base = &b
	} else if a.Format == adapter.GGUF {
		return fmt.Errorf("convert: %s is a GGUF adapter: --base (the GGUF or HF model it applies to) is required to name its modules", in)
	}
	if to == "mlx" {
		err = a.WriteMLX(out, base)
	} else {
		err = a.WriteAsPEFT(out, base)
	}
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	return nil
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
