package main

import (
	"encoding/binary"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
)

// TestTrainLIFTSparseDelta: --method lift writes the merged model and, with --sparse-delta-out, the sparse update
// in compressed-tensors' sparse-bitmask layout, whose entries are exactly what the merge added to the base weight.
func TestTrainLIFTSparseDelta(t *testing.T) {
	dir := t.TempDir()
	merged, delta := filepath.Join(dir, "merged.safetensors"), filepath.Join(dir, "delta.safetensors")
	args := trainArgs(t, "", "--steps", "2", "--method", "lift", "--target", "v_proj", "--merge-out", merged,
		"--sparse-delta-out", delta, "--method-arg", "filter_rank=8")
	args = slicesWithout(args, "-o", "")
	if msg, code := run(t, args...); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	base, err := safetensors.Open(filepath.Join(testshared.Path(t, "models", "tiny-llama-a", "hf"), "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	m, err := safetensors.Open(merged)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d, err := safetensors.Open(delta)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if md := d.Metadata(); md["lathe.delta"] != "sparse" || md["lathe.method"] != "lift" {
		t.Errorf("sparse delta metadata %v", md)
	}
	const name = "model.layers.0.self_attn.v_proj.weight"
	floats := func(f *safetensors.File, name string) []float32 {
		v, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		x, err := v.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	w0, w1, values := floats(base, name), floats(m, name), floats(d, name+".compressed")
	bits, err := d.Tensor(name + ".bitmask")
	if err != nil {
		t.Fatal(err)
	}
	rows, stride := int(bits.Shape[0]), int(bits.Shape[1])
	cols := len(w0) / rows
	next, changed := 0, 0
	for r := range rows {
		for c := range cols {
			var dv float32
			if bits.Data[r*stride+c/8]>>(c%8)&1 == 1 {
				dv, next = values[next], next+1
			}
			if got := w1[r*cols+c] - w0[r*cols+c]; math.Abs(float64(got-dv)) > 1e-6*(1+math.Abs(float64(w0[r*cols+c]))) {
				t.Fatalf("%s[%d,%d]: the merge added %g, the sparse delta holds %g", name, r, c, got, dv)
			}
			if dv != 0 {
				changed++
			}
		}
	}
	shape, err := d.Tensor(name + ".shape")
	if err != nil {
		t.Fatal(err)
	}
	if next != len(values) || changed == 0 || binary.LittleEndian.Uint64(shape.Data) != uint64(rows) {
		t.Errorf("%d of %d values read, %d entries changed", next, len(values), changed)
	}
}

// TestTrainMethodOutputsChecked: outputs a method cannot write are refused before training, naming the flag.
func TestTrainMethodOutputsChecked(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", filepath.Join(dir, "a"), "--method", "dora", "--gguf-out", filepath.Join(dir, "a.gguf")}, "--gguf-out"},
		{[]string{"-o", filepath.Join(dir, "b"), "--method", "full"}, "--merge-out"},
		{[]string{"--method", "full"}, "--merge-out"},
		{[]string{"-o", filepath.Join(dir, "c"), "--sparse-delta-out", filepath.Join(dir, "d")}, "lift"},
	} {
		args := slicesWithout(trainArgs(t, "", c.args...), "-o", "")
		if msg, code := run(t, args...); code != 2 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and a message naming %s", c.args, code, msg, c.want)
		}
	}
}

// slicesWithout drops the pair flag, value from args.
func slicesWithout(args []string, flag, value string) []string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && args[i+1] == value {
			return append(args[:i:i], args[i+2:]...)
		}
	}
	return args
}
