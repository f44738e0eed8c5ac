package sparsity

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

func f32View(name string, shape tensor.Shape, vals ...float32) tensor.View {
	data := make([]byte, 4*len(vals))
	if err := tensor.FromFloat32(data, vals, tensor.F32); err != nil {
		panic(err)
	}
	return tensor.View{Name: name, DType: tensor.F32, Shape: shape, Data: data}
}

// memModel opens views as an in-memory safetensors model.
func memModel(t *testing.T, views ...tensor.View) *modelfile.Model {
	t.Helper()
	var buf bytes.Buffer
	decls := make([]safetensors.TensorInfo, len(views))
	byName := map[string][]byte{}
	for i, v := range views {
		decls[i] = safetensors.TensorInfo{Name: v.Name, DType: v.DType, Shape: v.Shape}
		byName[v.Name] = v.Data
	}
	w, err := safetensors.NewWriter(&buf, decls, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range w.Tensors() {
		if err := w.WriteTensor(d.Name, byName[d.Name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m, err := modelfile.FromBytes("mem.safetensors", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func floats(t *testing.T, v tensor.View) []float32 {
	t.Helper()
	x, err := decode(v)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestWandaImatrixOracle runs §8.6's Wanda case through a model and an importance matrix: the imatrix, keyed by the
// GGUF name, holds the mean squared inputs [1, 4, 0.01], so ‖X‖ = [1, 2, 0.1] and a third of each row goes.
func TestWandaImatrixOracle(t *testing.T) {
	const name = "model.layers.0.mlp.down_proj.weight"
	m := memModel(t, f32View(name, tensor.Shape{2, 3}, 1, -2, 3, 4, 0.5, -1.5),
		f32View("model.norm.weight", tensor.Shape{3}, 1, 1, 1))
	im := &convert.Imatrix{Name: "test.imatrix", Entries: map[string][]float32{"blk.0.ffn_down.weight": {1, 4, 0.01}}}
	opts := Options{
		Score:     prune.ScoreOptions{Method: prune.Wanda},
		Selection: prune.Selection{Budget: prune.Budget{Kind: prune.Fraction, Value: 1.0 / 3, Drop: true}, Group: prune.PerRow},
		Imatrix:   im,
	}
	set, err := ComputeMasks(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Tensors) != 1 || set.Tensors[0].Name != name {
		t.Fatalf("masked %v", set.Tensors)
	}
	var out bytes.Buffer
	rep, err := Prune(&out, m, set, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pm, err := modelfile.FromBytes("pruned", out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	v, _ := pm.View(name)
	if got, want := floats(t, v), []float32{1, -2, 0, 4, 0.5, 0}; !slices.Equal(got, want) {
		t.Errorf("pruned %v, want %v", got, want)
	}
	// ‖ΔW‖² = 9 + 2.25, ‖W‖² = 1+4+9+16+0.25+2.25.
	wantErr := math.Sqrt(11.25 / 32.5)
	if tp := rep.Tensors[0]; tp.Kept != 4 || tp.Zeros != 2 || math.Abs(tp.RelError-wantErr) > 1e-12 ||
		rep.ModelElements != 9 || math.Abs(rep.ModelSparsity-2.0/9) > 1e-15 {
		t.Errorf("report %+v, model %d/%v; want error %v", tp, rep.ModelElements, rep.ModelSparsity, wantErr)
	}
	if set.Metadata["method"] != "wanda" || set.Metadata["drop"] != "0.3333333333333333" || set.Metadata["group"] != "row" {
		t.Errorf("metadata %v", set.Metadata)
	}
	// Without an entry for the tensor, Wanda cannot score it.
	opts.Imatrix = &convert.Imatrix{Name: "other", Entries: map[string][]float32{"blk.1.ffn_down.weight": {1, 1, 1}}}
	if _, err := ComputeMasks(m, opts); err == nil {
		t.Error("imatrix without the tensor: no error")
	}
	opts.Imatrix = nil
	if _, err := ComputeMasks(m, opts); err == nil {
		t.Error("wanda without imatrix: no error")
	}
}

func tinyModel(t testing.TB, elems ...string) *modelfile.Model {
	t.Helper()
	m, err := modelfile.Open(testshared.Path(t, append([]string{"models", "tiny-llama-a"}, elems...)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPruneRoundTrip prunes tiny-llama-a in each stored format and reads the output back: same tensors, order of
// types and metadata; unpruned tensors byte-identical; pruned ones zero exactly where the mask removes entries and
// (for float types) bit-identical elsewhere; quantized ones re-encoded to their own type.
func TestPruneRoundTrip(t *testing.T) {
	for _, path := range [][]string{
		{"hf"}, {"gguf", "tiny-llama-a-f16.gguf"}, {"gguf", "tiny-llama-a-q8_0.gguf"}, {"gguf", "tiny-llama-a-q4_0.gguf"},
		{"gguf", "tiny-llama-a-q4_k_m.gguf"},
	} {
		t.Run(path[len(path)-1], func(t *testing.T) {
			m := tinyModel(t, path...)
			set, err := ComputeMasks(m, Options{
				Score:     prune.ScoreOptions{Method: prune.Magnitude},
				Selection: prune.Selection{Budget: prune.Budget{Kind: prune.Fraction, Value: 0.5}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(set.Tensors) != 6*7 {
				t.Fatalf("%d masks, want 42 (7 linear layers × 6 blocks)", len(set.Tensors))
			}
			var out bytes.Buffer
			rep, err := Prune(&out, m, set, WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pm, err := modelfile.FromBytes("pruned", out.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if len(pm.Tensors) != len(m.Tensors) || pm.Format != m.Format {
				t.Fatalf("%d tensors (%s), want %d (%s)", len(pm.Tensors), pm.Format, len(m.Tensors), m.Format)
			}
			if m.GGUF != nil && len(pm.GGUF.Metadata.KVs()) != len(m.GGUF.Metadata.KVs()) {
				t.Errorf("%d metadata keys, want %d", len(pm.GGUF.Metadata.KVs()), len(m.GGUF.Metadata.KVs()))
			}
			exactZeros := true
			for i, in := range m.Tensors {
				o := pm.Tensors[i]
				if o.Name != in.Name || o.DType != in.DType || !o.Shape.Equal(in.Shape) {
					t.Fatalf("tensor %d: %s %s %v, want %s %s %v", i, o.Name, o.DType, o.Shape, in.Name, in.DType, in.Shape)
				}
				iv, _ := m.View(in.Name)
				ov, _ := pm.View(in.Name)
				tm, masked := set.Lookup(in.Name)
				if !masked {
					if !bytes.Equal(iv.Data, ov.Data) {
						t.Errorf("%s: unpruned tensor changed", in.Name)
					}
					continue
				}
				x, y := floats(t, iv), floats(t, ov)
				for k := range x {
					keep := tm.Mask.Get(k/tm.Mask.Cols, k%tm.Mask.Cols)
					switch {
					case !keep && y[k] != 0:
						exactZeros = false
					case keep && in.DType.IsFloat() && math.Float32bits(x[k]) != math.Float32bits(y[k]):
						t.Fatalf("%s: kept entry %d changed: %v → %v", in.Name, k, x[k], y[k])
					}
				}
			}
			// Q8_0 and Q4_0 represent zero exactly (d·0, d·(8−8)); Q4_K's per-block minimum may not.
			if wantExact := m.GGUF == nil || !slices.ContainsFunc(m.Tensors, func(t modelfile.Tensor) bool {
				return t.DType == tensor.Q4_K
			}); wantExact && !exactZeros {
				t.Error("a pruned entry is not zero")
			}
			if d := rep.Total.Sparsity; math.Abs(d-0.5) > 1e-3 {
				t.Errorf("total sparsity %v", d)
			}
			for _, tp := range rep.Tensors {
				if tp.RelError <= 0.05 || tp.RelError >= 0.6 || exactZeros && tp.Zeros < tp.Elements-tp.Kept {
					t.Errorf("%s: error %v, zeros %d of %d pruned", tp.Name, tp.RelError, tp.Zeros, tp.Elements-tp.Kept)
				}
			}
			t.Logf("total sparsity %.4f, model sparsity %.4f, relative error %.4f, zeros %d",
				rep.Total.Sparsity, rep.ModelSparsity, rep.Total.RelError, rep.Total.Zeros)
		})
	}
}

// TestKeepAllIsIdentity: with every entry kept, pruning reproduces a float model byte for byte — the writers lay
// out the file as the input was laid out.
func TestKeepAllIsIdentity(t *testing.T) {
	for _, path := range [][]string{{"hf", "model.safetensors"}, {"gguf", "tiny-llama-a-f16.gguf"}} {
		m := tinyModel(t, path...)
		set, err := ComputeMasks(m, Options{Score: prune.ScoreOptions{Method: prune.Magnitude},
			Selection: prune.Selection{Budget: prune.Budget{Kind: prune.Fraction, Value: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := Prune(&out, m, set, WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		in, err := os.ReadFile(m.Files[0])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(in, out.Bytes()) {
			t.Errorf("%s: output differs from input (%d and %d bytes)", path[len(path)-1], len(in), out.Len())
		}
	}
}

// TestPrincipalMasksDeterministic: principal masks of the real model are identical across runs and worker counts,
// and a written mask file is identical across runs and reads back to the same masks.
func TestPrincipalMasksDeterministic(t *testing.T) {
	m := tinyModel(t, "hf")
	opts := Options{
		Score:     prune.ScoreOptions{Method: prune.Principal, Rank: 32},
		Selection: prune.Selection{Budget: prune.Budget{Kind: prune.LoRA, Value: 8}},
		Targets:   func(name string, shape tensor.Shape) bool { return DefaultTarget(name, shape) && firstTwoBlocks(name) },
	}
	var files [][]byte
	for _, workers := range []int{1, 2} {
		opts.Workers = workers
		set, err := ComputeMasks(m, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, tm := range set.Tensors {
			rows, cols := tm.Mask.Rows, tm.Mask.Cols
			if got, want := tm.Mask.Kept(), prune.LoRABudget(rows, cols, 8); got != want {
				t.Errorf("%s: kept %d, want LoRA budget %d", tm.Name, got, want)
			}
		}
		var buf bytes.Buffer
		if err := WriteMasks(&buf, set); err != nil {
			t.Fatal(err)
		}
		files = append(files, buf.Bytes())
		back, err := ReadMasks(bytes.NewReader(buf.Bytes()), int64(buf.Len()), "masks")
		if err != nil {
			t.Fatal(err)
		}
		if len(back.Tensors) != len(set.Tensors) || back.Metadata["rank"] != "32" || back.Metadata["keep"] != "lora:8" {
			t.Fatalf("read back %d masks, metadata %v", len(back.Tensors), back.Metadata)
		}
		for i, tm := range set.Tensors {
			b := back.Tensors[i]
			if b.Name != tm.Name || !b.Shape.Equal(tm.Shape) || !b.Mask.Equal(tm.Mask) {
				t.Errorf("%s: mask changed in the round trip", tm.Name)
			}
		}
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Error("mask files of 1 and 2 workers differ")
	}
}

// firstTwoBlocks keeps the test to the first two blocks.
func firstTwoBlocks(name string) bool {
	ok0, _ := filepath.Match("model.layers.[01].*", name)
	return ok0
}

// TestSparseBitmaskExport writes compressed-tensors' layout and decompresses it as bitmask_decompress does
// (unpackbits little-endian, values scattered in row-major order): the result is the densely pruned model.
func TestSparseBitmaskExport(t *testing.T) {
	const name = "model.layers.0.self_attn.q_proj.weight"
	// Row 0 keeps columns 0, 2, 3, 8 as in the bitmask oracle of §8.6; row 1 keeps nothing; row 2 keeps two entries,
	// one of which is −0 and so is not stored.
	w := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, float32(math.Copysign(0, -1)), 24, 25, 26, 27}
	m := memModel(t, f32View(name, tensor.Shape{3, 9}, w...), f32View("lm_head.weight", tensor.Shape{1, 2}, 1, 2))
	mask := prune.NewMask(3, 9)
	for _, j := range []int{0, 2, 3, 8} {
		mask.Set(0, j, true)
	}
	mask.Set(2, 3, true)
	mask.Set(2, 4, true)
	set := &MaskSet{Tensors: []TensorMask{{Name: name, Shape: tensor.Shape{3, 9}, Mask: mask}},
		Metadata: map[string]string{"structure": "unstructured"}}
	var out bytes.Buffer
	rep, err := ExportSparseBitmask(&out, m, set, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.NewReader(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	get := func(n string) tensor.View {
		v, err := f.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if bm := get(name + ".bitmask"); !bm.Shape.Equal(tensor.Shape{3, 2}) || !slices.Equal(bm.Data, []byte{13, 1, 0, 0, 8, 0}) {
		t.Errorf("bitmask %v %v, want [3 2] [13 1 0 0 8 0]", bm.Shape, bm.Data)
	}
	i64s := func(v tensor.View) []int64 {
		var r []int64
		for k := 0; k < len(v.Data); k += 8 {
			r = append(r, int64(binary.LittleEndian.Uint64(v.Data[k:])))
		}
		return r
	}
	if got := i64s(get(name + ".row_offsets")); !slices.Equal(got, []int64{0, 4, 4}) {
		t.Errorf("row_offsets %v, want [0 4 4]", got)
	}
	if got := i64s(get(name + ".shape")); !slices.Equal(got, []int64{3, 9}) {
		t.Errorf("shape %v", got)
	}
	if got := floats(t, get(name+".compressed")); !slices.Equal(got, []float32{1, 3, 4, 9, 22}) {
		t.Errorf("compressed %v, want [1 3 4 9 22]", got)
	}
	if v := get("lm_head.weight"); !slices.Equal(floats(t, v), []float32{1, 2}) {
		t.Error("lm_head changed")
	}
	if _, err := f.Tensor(name); err == nil {
		t.Error("the dense weight is still there")
	}
	sc := rep.SparsityConfig
	if sc["format"] != "sparse-bitmask" || sc["sparsity_structure"] != "unstructured" ||
		!slices.Equal(sc["targets"].([]string), []string{"model.layers.0.self_attn.q_proj"}) {
		t.Errorf("sparsity config %v", sc)
	}
	// The export of the real model decompresses to the dense pruned model.
	tm := tinyModel(t, "hf")
	masks, err := ComputeMasks(tm, Options{Score: prune.ScoreOptions{Method: prune.Magnitude},
		Selection: prune.Selection{Structure: prune.Structure{N: 2, M: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	var dense, sparse bytes.Buffer
	if _, err := Prune(&dense, tm, masks, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err = ExportSparseBitmask(&sparse, tm, masks, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.SparsityConfig["sparsity_structure"] != "2:4" || sparse.Len() >= dense.Len()*3/4 {
		t.Errorf("structure %v, sparse %d bytes vs dense %d", rep.SparsityConfig["sparsity_structure"], sparse.Len(), dense.Len())
	}
	dm, _ := modelfile.FromBytes("dense", dense.Bytes())
	sf, err := safetensors.NewReader(bytes.NewReader(sparse.Bytes()), int64(sparse.Len()))
	if err != nil {
		t.Fatal(err)
	}
	for _, mt := range masks.Tensors {
		want, _ := dm.View(mt.Name)
		vals, _ := sf.Tensor(mt.Name + ".compressed")
		bits, _ := sf.Tensor(mt.Name + ".bitmask")
		got := make([]byte, len(want.Data))
		rows, cols, stride := int(mt.Shape[0]), int(mt.Shape[1]), (int(mt.Shape[1])+7)/8
		next := 0
		for i := range rows {
			for j := range cols {
				if bits.Data[i*stride+j/8]>>(j%8)&1 != 0 {
					copy(got[(i*cols+j)*4:], vals.Data[next*4:next*4+4])
					next++
				}
			}
		}
		if next*4 != len(vals.Data) || !bytes.Equal(got, want.Data) {
			t.Fatalf("%s: decompressed tensor differs from the dense pruned one", mt.Name)
		}
	}
}

// TestQuantizedReencodeMatchesQuant: a pruned Q8_0 tensor holds exactly quant.Encode of the masked decoded values.
func TestQuantizedReencodeMatchesQuant(t *testing.T) {
	m := tinyModel(t, "gguf", "tiny-llama-a-q8_0.gguf")
	set, err := ComputeMasks(m, Options{Score: prune.ScoreOptions{Method: prune.Random, Seed: 3},
		Selection: prune.Selection{Budget: prune.Budget{Kind: prune.Fraction, Value: 0.3}},
		Targets:   func(n string, s tensor.Shape) bool { return n == "blk.2.ffn_up.weight" }})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := Prune(&out, m, set, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	pm, _ := modelfile.FromBytes("pruned", out.Bytes())
	v, _ := m.View("blk.2.ffn_up.weight")
	x := floats(t, v)
	tm := set.Tensors[0]
	tm.Mask.Apply(x)
	want := make([]byte, len(v.Data))
	if err := quant.Encode(tensor.Q8_0, want, x, tm.Mask.Cols, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := pm.View("blk.2.ffn_up.weight")
	if !bytes.Equal(got.Data, want) {
		t.Error("pruned Q8_0 tensor is not the encoding of the masked values")
	}
}

func TestPruneRejects(t *testing.T) {
	m := memModel(t, f32View("a.weight", tensor.Shape{2, 2}, 1, 2, 3, 4))
	mk := func(name string, shape tensor.Shape) *MaskSet {
		r, c, _ := matrixSize(shape)
		return &MaskSet{Tensors: []TensorMask{{Name: name, Shape: shape, Mask: prune.NewMask(r, c)}}}
	}
	var out bytes.Buffer
	if _, err := Prune(&out, m, mk("b.weight", tensor.Shape{2, 2}), WriteOptions{}); err == nil {
		t.Error("mask of a missing tensor: no error")
	}
	if _, err := Prune(&out, m, mk("a.weight", tensor.Shape{4, 1}), WriteOptions{}); err == nil {
		t.Error("mask of another shape: no error")
	}
	if _, err := ComputeMasks(m, Options{Score: prune.ScoreOptions{Method: prune.Magnitude}}); err == nil {
		t.Error("no budget: no error")
	}
	if _, err := ComputeMasks(m, Options{Score: prune.ScoreOptions{Method: prune.Magnitude},
		Selection: prune.Selection{Budget: prune.Budget{Kind: prune.Fraction, Value: 0.5}},
		Targets:   func(string, tensor.Shape) bool { return false }}); err == nil {
		t.Error("no targets: no error")
	}
}

func TestCombineAndReport(t *testing.T) {
	a, b := prune.NewMask(2, 3), prune.NewMask(2, 3)
	a.Set(0, 0, true)
	a.Set(1, 2, true)
	b.Set(0, 0, true)
	b.Set(0, 1, true)
	shape := tensor.Shape{2, 3}
	sa := &MaskSet{Tensors: []TensorMask{{"w", shape, a}}, Metadata: map[string]string{"method": "principal"}}
	sb := &MaskSet{Tensors: []TensorMask{{"w", shape, b}}, Metadata: map[string]string{"method": "wanda"}}
	and, err := Combine(And, sa, sb)
	if err != nil {
		t.Fatal(err)
	}
	or, err := Combine(Or, sa, sb)
	if err != nil {
		t.Fatal(err)
	}
	ra, ro := and.Report(), or.Report()
	if ra.Total.Kept != 1 || ro.Total.Kept != 3 || math.Abs(ro.Total.Sparsity-0.5) > 1e-15 ||
		and.Metadata["input1.method"] != "wanda" || and.Metadata["combine"] != "and" {
		t.Errorf("and %+v, or %+v, metadata %v", ra.Total, ro.Total, and.Metadata)
	}
	sc := &MaskSet{Tensors: []TensorMask{{"v", shape, b}}}
	if _, err := Combine(And, sa, sc); err == nil {
		t.Error("combining different tensors: no error")
	}
}
