package modelfile

import (
	"encoding/json"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

func TestDiffStructureAndMetrics(t *testing.T) {
	dir := t.TempDir()
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	a := writeSafetensors(t, dir, "a.safetensors",
		f32("same", tensor.Shape{2, 2}, 1, -2, 0.5, 3),
		f32("scaled", tensor.Shape{3}, 1, 2, 2),
		f32("reshaped", tensor.Shape{2, 2}, 1, 2, 3, 4),
		f32("nan", tensor.Shape{3}, nan, inf, 1),
		f32("zero", tensor.Shape{2}, 0, 0),
		f32("only_a", tensor.Shape{1}, 1),
		f32("empty", tensor.Shape{3, 0}),
	)
	// B stores "same" as F16 (the values are exact in F16), and in another order.
	same16 := make([]byte, 8)
	tensor.Float32ToF16(same16, []float32{1, -2, 0.5, 3})
	b := writeGGUF(t, dir, "b.gguf",
		f32("only_b", tensor.Shape{1}, 1),
		f32("nan", tensor.Shape{3}, nan, 1, 1),
		f32("zero", tensor.Shape{2}, 0, 1),
		f32("reshaped", tensor.Shape{4}, 1, 2, 3, 4),
		f32("scaled", tensor.Shape{3}, 2, 4, 4),
		tensor.View{Name: "same", DType: tensor.F16, Shape: tensor.Shape{2, 2}, Data: same16},
		f32("empty", tensor.Shape{3, 0}),
	)
	r, err := Diff(open(t, a), open(t, b), DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.OnlyInA, []string{"only_a"}) || !slices.Equal(r.OnlyInB, []string{"only_b"}) {
		t.Errorf("only in A %v, only in B %v", r.OnlyInA, r.OnlyInB)
	}
	got := map[string]TensorDiff{}
	for _, d := range r.Tensors {
		got[d.Name] = d
	}
	want := map[string]TensorDiff{
		"same": {Name: "same", DTypeA: tensor.F32, DTypeB: tensor.F16, ShapeA: tensor.Shape{2, 2},
			ShapeB: tensor.Shape{2, 2}, Compared: true, Identical: true, Within: true, Cosine: 1},
		// b = 2a: ‖a−b‖ = ‖a‖ = 3, so the relative error is 1 and the cosine 1.
		"scaled": {Name: "scaled", DTypeA: tensor.F32, DTypeB: tensor.F32, ShapeA: tensor.Shape{3},
			ShapeB: tensor.Shape{3}, Compared: true, MaxAbsDiff: 2, RelError: 1, Cosine: 1},
		"reshaped": {Name: "reshaped", DTypeA: tensor.F32, DTypeB: tensor.F32, ShapeA: tensor.Shape{2, 2},
			ShapeB: tensor.Shape{4}},
		// NaN matches NaN; Inf against 1 is a non-finite mismatch; the finite pair (1, 1) agrees.
		"nan": {Name: "nan", DTypeA: tensor.F32, DTypeB: tensor.F32, ShapeA: tensor.Shape{3}, ShapeB: tensor.Shape{3},
			Compared: true, NonFinite: 1, Cosine: 1},
		"empty": {Name: "empty", DTypeA: tensor.F32, DTypeB: tensor.F32, ShapeA: tensor.Shape{3, 0},
			ShapeB: tensor.Shape{3, 0}, Compared: true, Identical: true, Within: true, Cosine: 1},
		"zero": {Name: "zero", DTypeA: tensor.F32, DTypeB: tensor.F32, ShapeA: tensor.Shape{2}, ShapeB: tensor.Shape{2},
			Compared: true, MaxAbsDiff: 1, RelError: math.Inf(1), Cosine: 0},
	}
	if len(got) != len(want) {
		t.Errorf("%d tensors compared, want %d", len(got), len(want))
	}
	for name, w := range want {
		if g := got[name]; !reflect.DeepEqual(g, w) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, g, w)
		}
	}
	if !r.Differs {
		t.Error("models with tensors in one only, a shape change and a NaN mismatch do not differ")
	}
	// Tolerances: "scaled" has max abs diff 2 and relative error 1.
	for _, tc := range []struct {
		tol, relTol float64
		within      bool
	}{{0, 0, false}, {1.9, 0, false}, {2, 0, true}, {0, 1, true}, {0, 0.99, false}, {1.9, 1, true}} {
		r, err := Diff(open(t, a), open(t, b), DiffOptions{Tol: tc.tol, RelTol: tc.relTol})
		if err != nil {
			t.Fatal(err)
		}
		within := map[string]bool{}
		for _, d := range r.Tensors {
			within[d.Name] = d.Within
		}
		if within["scaled"] != tc.within || !within["same"] || within["nan"] || within["reshaped"] || !r.Differs ||
			r.Tol != tc.tol || r.RelTol != tc.relTol {
			t.Errorf("tol %g rel %g: within %v", tc.tol, tc.relTol, within)
		}
	}
	// JSON has no Inf: the relative error of "zero" must come out as null, and the document must parse.
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"name":"zero","dtype_a":"F32","dtype_b":"F32","shape_a":[2],"shape_b":[2],"compared":true,"identical":false,"within":false,"nonfinite_mismatches":0,"max_abs_diff":1,"rel_error":null,"cosine":0`) {
		t.Errorf("JSON: %s", js)
	}
}

// A quantized tensor is dequantized and compared with float64 sums; the chunked, parallel pass must give the
// metrics of a direct computation over the whole tensor.
func TestDiffQuantizedAgainstDirectComputation(t *testing.T) {
	dir := t.TempDir()
	const rows, cols = 96, 1024 // 98304 elements: more than one chunk
	x := randomF32(1, rows*cols)
	a := writeSafetensors(t, dir, "a.safetensors", f32("w", tensor.Shape{rows, cols}, x...))
	for _, dt := range []tensor.DType{tensor.Q8_0, tensor.Q4_K, tensor.BF16} {
		var data []byte
		if dt.IsQuantized() {
			n, _ := dt.Bytes(int64(len(x)))
			data = make([]byte, n)
			if err := quant.Encode(dt, data, x, cols, nil); err != nil {
				t.Fatal(err)
			}
		} else {
			data = make([]byte, 2*len(x))
			tensor.FromFloat32(data, x, dt)
		}
		b := writeGGUF(t, dir, dt.String()+".gguf", tensor.View{Name: "w", DType: dt, Shape: tensor.Shape{rows, cols}, Data: data})
		r, err := Diff(open(t, a), open(t, b), DiffOptions{})
		if err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if dt.IsQuantized() {
			err = quant.Decode(dt, y, data)
		} else {
			err = tensor.ToFloat32(y, data, dt)
		}
		if err != nil {
			t.Fatal(err)
		}
		var d2, a2, b2, ab, maxAbs float64
		for i := range x {
			d := float64(x[i]) - float64(y[i])
			d2, a2, b2, ab = d2+d*d, a2+float64(x[i])*float64(x[i]), b2+float64(y[i])*float64(y[i]), ab+float64(x[i])*float64(y[i])
			maxAbs = max(maxAbs, math.Abs(d))
		}
		g := r.Tensors[0]
		close := func(p, q float64) bool { return math.Abs(p-q) <= 1e-12*math.Max(1, math.Abs(q)) }
		if g.MaxAbsDiff != maxAbs || !close(g.RelError, math.Sqrt(d2/a2)) || !close(g.Cosine, ab/math.Sqrt(a2*b2)) {
			t.Errorf("%s: %+v; direct: max %g rel %g cos %g", dt, g, maxAbs, math.Sqrt(d2/a2), ab/math.Sqrt(a2*b2))
		}
		t.Logf("%s vs F32: max abs %.4g, relative error %.4g, cosine %.8f", dt, g.MaxAbsDiff, g.RelError, g.Cosine)
	}
}

func TestDiffIsDeterministicAcrossThreads(t *testing.T) {
	dir := t.TempDir()
	var va, vb []tensor.View
	for i := range 9 {
		x := randomF32(uint64(i), 1000*(i+1))
		y := slices.Clone(x)
		for j := range y {
			y[j] *= 1.001
		}
		name := string(rune('a' + i))
		va = append(va, f32(name, tensor.Shape{int64(len(x))}, x...))
		vb = append(vb, f32(name, tensor.Shape{int64(len(y))}, y...))
	}
	a, b := open(t, writeSafetensors(t, dir, "a.safetensors", va...)), open(t, writeGGUF(t, dir, "b.gguf", vb...))
	one, err := Diff(a, b, DiffOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	var calls, last int
	many, err := Diff(a, b, DiffOptions{Threads: 4, Progress: func(done, total int) { calls, last = calls+1, done }})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(one, many) {
		t.Error("the report depends on the number of threads")
	}
	if calls != 9 || last != 9 {
		t.Errorf("progress called %d times, last %d", calls, last)
	}
}

// The Hugging Face checkpoint and llama.cpp's F32 conversion of it hold the same numbers: with the llama mapping
// every tensor pairs up and is identical, in both directions. Without the row reordering the q and k projections
// differ, which shows that the mapping undoes the converter's rotary permutation.
func TestDiffLlamaConversion(t *testing.T) {
	hfDir := testshared.Path(t, "models", "tiny-llama-a", "hf")
	ggufDir := filepath.Join(filepath.Dir(hfDir), "gguf")
	hf := open(t, hfDir)
	conv := open(t, filepath.Join(ggufDir, "tiny-llama-a-f32.gguf"))
	for _, pair := range [][2]*Model{{hf, conv}, {conv, hf}} {
		mapping, err := LlamaMapping(pair[0], pair[1])
		if err != nil {
			t.Fatal(err)
		}
		r, err := Diff(pair[0], pair[1], DiffOptions{Map: mapping})
		if err != nil {
			t.Fatal(err)
		}
		if r.Differs || len(r.Tensors) != len(hf.Tensors) {
			t.Errorf("%s vs %s: only in A %v, only in B %v", pair[0].Path, pair[1].Path, r.OnlyInA, r.OnlyInB)
			for _, d := range r.Tensors {
				if !d.Identical {
					t.Errorf("  %s: %+v", d.Name, d)
				}
			}
		}
	}

	mapping, err := LlamaMapping(hf, conv)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Diff(hf, conv, DiffOptions{Map: namesOnly{mapping}})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range r.Tensors {
		rotary := strings.HasSuffix(d.Name, "q_proj.weight") || strings.HasSuffix(d.Name, "k_proj.weight")
		if d.Identical == rotary {
			t.Errorf("%s without row reordering: identical %v", d.Name, d.Identical)
		}
	}

	// Against quantized conversions the values differ, by amounts that grow as the bits shrink.
	prev := 0.0
	for _, name := range []string{"f16", "q8_0", "q6_k", "q4_0"} {
		g := open(t, filepath.Join(ggufDir, "tiny-llama-a-"+name+".gguf"))
		mapping, err := LlamaMapping(hf, g)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Diff(hf, g, DiffOptions{Map: mapping, RelTol: 0.02})
		if err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for _, d := range r.Tensors {
			if !d.Compared || d.Cosine < 0.99 {
				t.Errorf("%s: %s: %+v", name, d.Name, d)
			}
			worst = max(worst, d.RelError)
		}
		t.Logf("%s: largest relative error %.3g", name, worst)
		if worst <= prev || r.Differs != (worst > 0.02) {
			t.Errorf("%s: largest relative error %g after %g", name, worst, prev)
		}
		prev = worst
	}

	if _, err := LlamaMapping(hf, hf); err == nil {
		t.Error("llama mapping of two safetensors models accepted")
	}
}

// namesOnly keeps a mapping's names and drops its row reordering.
type namesOnly struct{ Mapping }

func (m namesOnly) Pair(a string, rows int64) (string, []int64) {
	b, _ := m.Mapping.Pair(a, rows)
	return b, nil
}

func BenchmarkDiff(b *testing.B) {
	dir := b.TempDir()
	const n = 1 << 22
	x := randomF32(1, n)
	y := slices.Clone(x)
	y[7] = 0
	pa := writeSafetensors(b, dir, "a.safetensors", f32("w", tensor.Shape{n}, x...), f32("v", tensor.Shape{n}, y...))
	pb := writeGGUF(b, dir, "b.gguf", f32("w", tensor.Shape{n}, y...), f32("v", tensor.Shape{n}, x...))
	ma, _ := Open(pa)
	mb, _ := Open(pb)
	defer ma.Close()
	defer mb.Close()
	b.SetBytes(2 * 2 * 4 * n) // both tensors of both models
	for b.Loop() {
		if _, err := Diff(ma, mb, DiffOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
