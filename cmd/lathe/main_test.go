package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// run executes lathe in-process as a shell would (flags permuted), returning stdout and the exit code.
func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	app.ErrWriter = &out
	err := app.Run(permuteArgs(app, append([]string{"lathe"}, args...)))
	code := exitCode(&out, err)
	return out.String(), code
}

func writeModel(t *testing.T, path string, views ...tensor.View) {
	t.Helper()
	if err := safetensors.WriteFile(path, views, nil); err != nil {
		t.Fatal(err)
	}
}

func f32View(name string, shape tensor.Shape, vals ...float32) tensor.View {
	data := make([]byte, 4*len(vals))
	if err := tensor.FromFloat32(data, vals, tensor.F32); err != nil {
		panic(err)
	}
	return tensor.View{Name: name, DType: tensor.F32, Shape: shape, Data: data}
}

func TestInspectJSONShardedListsEachTensorOnce(t *testing.T) {
	dir := t.TempDir()
	views := []tensor.View{
		f32View("a", tensor.Shape{2, 2}, 1, 2, 3, 4),
		f32View("b", tensor.Shape{2, 2}, 5, 6, 7, 8),
		f32View("c", tensor.Shape{4}, 9, 10, 11, 12),
	}
	files, err := safetensors.WriteShards(dir, views, map[string]string{"format": "pt"}, 20)
	if err != nil {
		t.Fatal(err)
	}
	shards := 0
	for _, f := range files {
		if filepath.Ext(f) == ".safetensors" {
			shards++
		}
	}
	if shards < 2 {
		t.Fatalf("wanted at least 2 shards, got %v", files)
	}
	out, code := run(t, "inspect", dir, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var r modelfile.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, tr := range r.Tensors {
		seen[tr.Name]++
	}
	if len(r.Files) != shards || r.TensorCount != 3 || len(seen) != 3 || seen["a"] != 1 || seen["b"] != 1 || seen["c"] != 1 {
		t.Errorf("files %v, tensors %v", r.Files, seen)
	}
	if r.Parameters != 12 || r.TensorBytes != 48 {
		t.Errorf("parameters %d, bytes %d", r.Parameters, r.TensorBytes)
	}
}

func TestInspectStatsAndStdin(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	writeModel(t, path, f32View("w", tensor.Shape{4}, -3, 1, 2, 4))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stdin := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = stdin }()
	out, code := run(t, "inspect", "-", "--stats", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var r modelfile.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	s := r.Tensors[0].Stats
	if s == nil || s.Min != -3 || s.Max != 4 || s.Mean != 1 || s.AbsMax != 4 || s.Std != 2.5495097567963922 {
		t.Errorf("stats %+v", s)
	}
}

func TestCastFlagsAfterArgumentsAndExitCodes(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.safetensors")
	writeModel(t, in, f32View("w", tensor.Shape{3}, 1, 0.1, 65520),
		tensor.View{Name: "ids", DType: tensor.I32, Shape: tensor.Shape{1}, Data: []byte{7, 0, 0, 0}})
	out := filepath.Join(dir, "out.safetensors")
	if msg, code := run(t, "cast", in, out, "--dtype", "f16"); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	f, err := safetensors.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, _ := f.Tensor("w")
	ids, _ := f.Tensor("ids")
	// 0.1 rounds to 0x2e66; 65520 is the tie above the largest F16 and rounds to +Inf.
	if w.DType != tensor.F16 || !bytes.Equal(w.Data, []byte{0x00, 0x3c, 0x66, 0x2e, 0x00, 0x7c}) {
		t.Errorf("w: %s % x", w.DType, w.Data)
	}
	if ids.DType != tensor.I32 || !bytes.Equal(ids.Data, []byte{7, 0, 0, 0}) {
		t.Errorf("integer tensor changed: %s % x", ids.DType, ids.Data)
	}

	cases := []struct {
		args []string
		code int
	}{
		{[]string{"cast", in, filepath.Join(dir, "x.safetensors")}, 2},                                        // --dtype missing
		{[]string{"cast", in, filepath.Join(dir, "x.safetensors"), "--dtype", "q9"}, 2},                       // unknown type
		{[]string{"inspect", filepath.Join(dir, "absent.safetensors")}, 2},                                    // no such file
		{[]string{"inspect", in, out}, 2},                                                                     // too many arguments
		{[]string{"cast", in, filepath.Join(dir, "y.safetensors"), "--dtype", "bf16"}, 0},                     // fine
		{[]string{"cast", in, filepath.Join(dir, "z.safetensors"), "--dtype", "f16", "--compress", "lz4"}, 2}, // unsupported compression
	}
	for _, tc := range cases {
		if msg, code := run(t, tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.code, msg)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.safetensors")); !os.IsNotExist(err) {
		t.Error("a failed cast left an output file")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".tmp" {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestMalformedInputIsAnInputError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(path, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'}, 0o644); err != nil {
		t.Fatal(err)
	}
	msg, code := run(t, "inspect", path)
	if code != 2 || !bytes.Contains([]byte(msg), []byte("bad.safetensors")) {
		t.Errorf("exit %d, message %q", code, msg)
	}
}

func TestInspectRealFiles(t *testing.T) {
	for _, rel := range []string{"models/tiny-llama-a/hf", "models/tiny-llama-a/gguf/tiny-llama-a-q4_k_m.gguf",
		"data/safetensors/peft-gpt2-lora/adapter_model.safetensors"} {
		path := testshared.Path(t, filepath.FromSlash(rel))
		out, code := run(t, "inspect", path, "--json")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", rel, code, out)
		}
		var r modelfile.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		if r.TensorCount == 0 || r.Parameters == 0 {
			t.Errorf("%s: empty report", rel)
		}
		if r.Format == modelfile.GGUF && (r.GGUF == nil || r.GGUF.FileType != "Q4_K_M" || r.GGUF.Tokenizer.Tokens != 1024) {
			t.Errorf("%s: gguf summary %+v", rel, r.GGUF)
		}
	}
}

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(&out, t.TempDir()); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !bytes.Contains(out.Bytes(), []byte("byte-identical")) || !bytes.Contains(out.Bytes(), []byte("tiny-q4_k_m.gguf: gguf")) {
		t.Errorf("demo output:\n%s", out.String())
	}
}

// An output that names an input is refused (exit 2, input untouched) unless --force is given.
func TestOutputOverInputNeedsForce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	writeModel(t, path, f32View("w", tensor.Shape{2}, 1.5, -2))
	before, _ := os.ReadFile(path)
	if msg, code := run(t, "cast", path, path, "--dtype", "bf16"); code != 2 || !strings.Contains(msg, "--force") {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the refused command changed its input")
	}
	if msg, code := run(t, "cast", path, path, "--dtype", "bf16", "--force"); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v, _ := f.Tensor("w"); v.DType != tensor.BF16 {
		t.Errorf("forced cast wrote %s", v.DType)
	}
}

// split writes a gguf-split set that opens as the original model, and --merge gives the original file back.
func TestSplitAndMerge(t *testing.T) {
	src := testshared.Path(t, "models", "tiny-llama-a", "gguf", "tiny-llama-a-q4_k_m.gguf")
	dir := t.TempDir()
	out, code := run(t, "split", src, filepath.Join(dir, "part"), "--max-size", "1M")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	files := strings.Fields(out)
	if len(files) < 3 || !strings.HasSuffix(files[0], "part-00001-of-0000"+fmt.Sprint(len(files))+".gguf") {
		t.Fatalf("split wrote %v", files)
	}
	merged := filepath.Join(dir, "merged.gguf")
	if out, code := run(t, "split", "--merge", files[0], merged); code != 0 {
		t.Fatalf("merge: exit %d: %s", code, out)
	}
	want, _ := os.ReadFile(src)
	got, _ := os.ReadFile(merged)
	if !bytes.Equal(got, want) {
		t.Errorf("split + merge is not the original file (%d vs %d bytes)", len(got), len(want))
	}
}
