package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/tensor"
)

func TestHashCommand(t *testing.T) {
	dir := t.TempDir()
	st := filepath.Join(dir, "m.safetensors")
	gg := filepath.Join(dir, "m.gguf")
	views := []tensor.View{f32View("w", tensor.Shape{2}, 1, 2),
		{Name: "b", DType: tensor.I32, Shape: tensor.Shape{1, 1}, Data: []byte{0xf9, 0xff, 0xff, 0xff}}}
	writeModel(t, st, views...)
	writeGGUFModel(t, gg, views[1], views[0])

	// The digest of these two tensors is pinned by modelfile's golden test (computed with Python's hashlib).
	const model = "430e8151e061f95c71a5bef8d8bba0442cced3bf832a27929318fce0be5f68ac"
	out, code := run(t, "hash", st, gg)
	if want := fmt.Sprintf("%s  %s\n%s  %s\n", model, st, model, gg); code != 0 || out != want {
		t.Errorf("exit %d\n%s\nwant\n%s", code, out, want)
	}
	out, code = run(t, "hash", gg, "--tensors")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasSuffix(lines[0], "  b") || !strings.HasSuffix(lines[1], "  w") ||
		lines[2] != model+"  "+gg {
		t.Errorf("--tensors: exit %d\n%s", code, out)
	}
	out, code = run(t, "hash", st, "--fast", "--json")
	var r modelfile.HashReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if code != 0 || r.Algorithm != modelfile.XXH64 || len(r.Model) != 16 || len(r.Tensors) != 2 || r.Tensors[1].DType != "F32" {
		t.Errorf("--fast --json: exit %d, %+v", code, r)
	}
	if out, code := run(t, "hash"); code != 2 {
		t.Errorf("no file: exit %d\n%s", code, out)
	}
}
