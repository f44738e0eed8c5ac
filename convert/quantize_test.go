package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// tinyGGUF opens one of the reference files of ../shared/models/tiny-llama-a (README there: made by llama.cpp's
// convert_hf_to_gguf and `llama-quantize <f32.gguf> <out> <TYPE> 2`).
func tinyGGUF(t testing.TB, variant string) *gguf.File {
	t.Helper()
	f, err := gguf.Open(testshared.Path(t, "models", "tiny-llama-a", "gguf", "tiny-llama-a-"+variant+".gguf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// readQuantized opens a GGUF written to memory.
func readQuantized(t testing.TB, b []byte) *gguf.File {
	t.Helper()
	f, err := gguf.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// byteDiff describes where two byte slices first differ.
func byteDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d", i)
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

// tinyLlamaResults is the part of results.json the tests read.
type tinyLlamaResults struct {
	TensorTypes map[string]map[string]string `json:"tensor_types"`
	SizeBytes   map[string]int64             `json:"size_bytes"`
}

func readResults(t *testing.T) tinyLlamaResults {
	b, err := os.ReadFile(testshared.Path(t, "models", "tiny-llama-a", "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r tinyLlamaResults
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

var referenceTypes = []string{"q8_0", "q4_0", "q4_k_m", "q6_k"}

func fileType(t testing.TB, name string) gguf.FileType {
	ft, err := gguf.ParseFileType(name)
	if err != nil {
		t.Fatal(err)
	}
	return ft
}

// TestPlanMatchesLlamaQuantize: the plan for tiny-llama-a-f32.gguf gives, tensor by tensor, the types llama-quantize
// chose (results.json tensor_types), in the order of its output files, and the sizes of those files.
func TestPlanMatchesLlamaQuantize(t *testing.T) {
	res := readResults(t)
	in := tinyGGUF(t, "f32")
	for _, variant := range referenceTypes {
		t.Run(variant, func(t *testing.T) {
			want := res.TensorTypes[variant]
			if len(want) == 0 {
				t.Fatalf("results.json has no tensor types for %s", variant)
			}
			plan, err := PlanQuantize(in, QuantizeOptions{Type: fileType(t, variant)})
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Tensors) != len(want) {
				t.Fatalf("%d tensors planned, llama-quantize wrote %d", len(plan.Tensors), len(want))
			}
			ref := tinyGGUF(t, variant).Tensors()
			for i, pt := range plan.Tensors {
				if got := pt.To.String(); got != want[pt.Name] {
					t.Errorf("%s: %s, llama-quantize chose %s", pt.Name, got, want[pt.Name])
				}
				if ref[i].Name != pt.Name {
					t.Errorf("position %d: %s, llama-quantize wrote %s", i, pt.Name, ref[i].Name)
				}
			}
		})
	}
}

// TestQuantizeMatchesLlamaQuantize quantizes tiny-llama-a-f32.gguf and compares the result with llama-quantize's
// file: every tensor's data must be identical, and the whole file too.
func TestQuantizeMatchesLlamaQuantize(t *testing.T) {
	in := tinyGGUF(t, "f32")
	for _, variant := range referenceTypes {
		t.Run(variant, func(t *testing.T) {
			var out bytes.Buffer
			if err := Quantize(&out, in, QuantizeOptions{Type: fileType(t, variant)}); err != nil {
				t.Fatal(err)
			}
			ref := tinyGGUF(t, variant)
			got := readQuantized(t, out.Bytes())
			for _, ti := range ref.Tensors() {
				rv, err := ref.Tensor(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				gv, err := got.Tensor(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				if gv.DType != rv.DType || !bytes.Equal(gv.Data, rv.Data) {
					t.Errorf("%s: %s data differs from llama-quantize's %s (%s)", ti.Name, gv.DType, rv.DType,
						byteDiff(gv.Data, rv.Data))
				}
			}
			want, err := os.ReadFile(ref.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("file differs from llama-quantize's (%s)", byteDiff(out.Bytes(), want))
			}
		})
	}
}

// TestQuantizeDeterministic: the output does not depend on the number of cores.
func TestQuantizeDeterministic(t *testing.T) {
	in := tinyGGUF(t, "f32")
	run := func(procs int) []byte {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		var out bytes.Buffer
		if err := Quantize(&out, in, QuantizeOptions{Type: fileType(t, "IQ4_XS")}); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	if a, b := run(1), run(4); !bytes.Equal(a, b) {
		t.Errorf("IQ4_XS output with 1 and 4 threads differs (%s)", byteDiff(a, b))
	}
}

// TestQuantizeReport checks the error report against figures computed independently from llama-quantize's Q8_0
// and Q4_0 files (whose data Quantize reproduces) and the F32 source.
func TestQuantizeReport(t *testing.T) {
	in := tinyGGUF(t, "f32")
	var snr []float64
	for _, variant := range []string{"q8_0", "q4_0"} {
		var rep QuantReport
		if err := Quantize(io.Discard, in, QuantizeOptions{Type: fileType(t, variant), Report: &rep}); err != nil {
			t.Fatal(err)
		}
		ref := tinyGGUF(t, variant)
		var sse, sxx float64
		var n int64
		for _, e := range rep.Tensors {
			x := decodeTensor(t, in, e.Name)
			y := decodeTensor(t, ref, e.Name)
			var tsse, tsxx, tsyy, tsxy, mx float64
			for i := range x {
				d := float64(y[i]) - float64(x[i])
				tsse += d * d
				tsxx += float64(x[i]) * float64(x[i])
				tsyy += float64(y[i]) * float64(y[i])
				tsxy += float64(x[i]) * float64(y[i])
				mx = math.Max(mx, math.Abs(d))
			}
			sse, sxx, n = sse+tsse, sxx+tsxx, n+int64(len(x))
			near := func(what string, got, want float64) {
				if math.Abs(got-want) > 1e-9*math.Abs(want) {
					t.Errorf("%s %s: %s %g, want %g", variant, e.Name, what, got, want)
				}
			}
			near("RMSE", e.RMSE, math.Sqrt(tsse/float64(len(x))))
			near("max abs", e.MaxAbs, mx)
			near("SNR", e.SNR, 10*math.Log10(tsxx/tsse))
			near("cosine", e.Cosine, tsxy/math.Sqrt(tsxx*tsyy))
			if e.Elements != int64(len(x)) || e.To != ref.Tensors()[indexOf(ref, e.Name)].DType {
				t.Errorf("%s %s: %d elements to %s", variant, e.Name, e.Elements, e.To)
			}
		}
		// 1-D norms are copied, every other tensor is in the report.
		if len(rep.Tensors) != 6*7+2 {
			t.Errorf("%s: %d tensors in the report, want 44", variant, len(rep.Tensors))
		}
		if got, want := rep.Total.RMSE, math.Sqrt(sse/float64(n)); math.Abs(got-want) > 1e-9*want {
			t.Errorf("%s: total RMSE %g, want %g", variant, got, want)
		}
		snr = append(snr, rep.Total.SNR)
		if b, err := json.Marshal(rep); err != nil || !bytes.Contains(b, []byte(`"snr_db":`)) {
			t.Errorf("report does not encode: %v", err)
		}
	}
	if snr[0] < 35 || snr[1] > snr[0]-15 {
		t.Errorf("total SNR Q8_0 %.1f dB, Q4_0 %.1f dB: want Q8_0 > 35 dB and 4 bits fewer to cost > 15 dB", snr[0],
			snr[1])
	}
}

func indexOf(f *gguf.File, name string) int {
	for i, t := range f.Tensors() {
		if t.Name == name {
			return i
		}
	}
	return -1
}

func decodeTensor(t testing.TB, f *gguf.File, name string) []float32 {
	t.Helper()
	v, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, v.Elements())
	if v.DType == tensor.F32 {
		err = tensor.ToFloat32(x, v.Data, v.DType)
	} else {
		err = quant.Decode(v.DType, x, v.Data)
	}
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestRequantize: a quantized input needs AllowRequantize, and is then dequantized before quantizing again; so
// Q8_0 → Q4_0 is Q4_0 of the Q8_0 values.
func TestRequantize(t *testing.T) {
	in := tinyGGUF(t, "q8_0")
	err := Quantize(io.Discard, in, QuantizeOptions{Type: fileType(t, "Q4_0")})
	if err == nil || !strings.Contains(err.Error(), "requantizing from Q8_0") {
		t.Fatalf("requantizing without permission: err = %v", err)
	}
	var out bytes.Buffer
	if err := Quantize(&out, in, QuantizeOptions{Type: fileType(t, "Q4_0"), AllowRequantize: true}); err != nil {
		t.Fatal(err)
	}
	got := readQuantized(t, out.Bytes())
	v, err := got.Tensor("blk.3.ffn_up.weight")
	if err != nil {
		t.Fatal(err)
	}
	x := decodeTensor(t, in, "blk.3.ffn_up.weight")
	want := make([]byte, len(v.Data))
	if err := quant.Encode(tensor.Q4_0, want, x, 256, nil); err != nil {
		t.Fatal(err)
	}
	if v.DType != tensor.Q4_0 || !bytes.Equal(v.Data, want) {
		t.Errorf("requantized blk.3.ffn_up.weight is %s and differs from Q4_0 of the Q8_0 values", v.DType)
	}
}

// TestDequantize expands llama-quantize's Q4_K_M file: quantized tensors become the target type holding exactly
// ggml's dequantized values, F32 norms stay, and general.file_type says what the file is.
func TestDequantize(t *testing.T) {
	in := tinyGGUF(t, "q4_k_m")
	for _, to := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16} {
		var out bytes.Buffer
		if err := Dequantize(&out, in, to); err != nil {
			t.Fatal(err)
		}
		got := readQuantized(t, out.Bytes())
		for _, ti := range in.Tensors() {
			gv, err := got.Tensor(ti.Name)
			if err != nil {
				t.Fatal(err)
			}
			x := decodeTensor(t, in, ti.Name)
			wantType := to
			if !ti.DType.IsQuantized() {
				wantType = ti.DType
			}
			want := make([]byte, len(x)*wantType.BlockBytes())
			if err := tensor.FromFloat32(want, x, wantType); err != nil {
				t.Fatal(err)
			}
			if gv.DType != wantType || !bytes.Equal(gv.Data, want) {
				t.Errorf("to %s: %s is %s, want %s with the dequantized values", to, ti.Name, gv.DType, wantType)
			}
		}
		ft, err := got.Metadata.FileType()
		if want := map[tensor.DType]gguf.FileType{tensor.F32: 0, tensor.F16: 1, tensor.BF16: 32}[to]; err != nil ||
			ft != want {
			t.Errorf("to %s: general.file_type %v (%v), want %v", to, ft, err, want)
		}
	}
	if err := Dequantize(io.Discard, in, tensor.Q8_0); err == nil {
		t.Error("dequantizing to Q8_0 accepted")
	}
}

// syntheticMoE is a one-layer, two-expert model in memory: a 3-D expert tensor [2 experts, 32 rows, 256 columns],
// an attention matrix and a norm.
func syntheticMoE(t *testing.T) (*gguf.File, map[string][]float32) {
	t.Helper()
	md := &gguf.Metadata{}
	md.Set(gguf.KeyArchitecture, gguf.ValueOf("llama"))
	md.Set("llama.block_count", gguf.ValueOf(uint32(1)))
	md.Set("llama.attention.head_count", gguf.ValueOf(uint32(4)))
	md.Set("llama.expert_count", gguf.ValueOf(uint32(2)))
	md.Set(gguf.KeyFileType, gguf.ValueOf(uint32(0)))
	md.Set("split.count", gguf.ValueOf(uint16(1)))
	md.Set(gguf.KeyAlignment, gguf.ValueOf(uint32(64)))
	shapes := map[string]tensor.Shape{
		"blk.0.ffn_down_exps.weight": {2, 32, 256},
		"blk.0.attn_q.weight":        {64, 256},
		"blk.0.attn_norm.weight":     {256},
	}
	names := []string{"blk.0.attn_norm.weight", "blk.0.ffn_down_exps.weight", "blk.0.attn_q.weight"}
	values := map[string][]float32{}
	var views []tensor.View
	seed := uint32(1)
	for _, n := range names {
		e, _ := shapes[n].Elements()
		x := make([]float32, e)
		for i := range x {
			seed = seed*1664525 + 1013904223
			x[i] = float32(int32(seed)>>8) / (1 << 23)
		}
		values[n] = x
		b := make([]byte, 4*len(x))
		if err := tensor.FromFloat32(b, x, tensor.F32); err != nil {
			t.Fatal(err)
		}
		views = append(views, tensor.View{Name: n, DType: tensor.F32, Shape: shapes[n], Data: b})
	}
	decl := make([]gguf.TensorInfo, len(views))
	for i, v := range views {
		decl[i] = gguf.TensorInfo{Name: v.Name, DType: v.DType, Shape: v.Shape}
	}
	var buf bytes.Buffer
	w, err := gguf.NewWriter(&buf, md, decl)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range views {
		if err := w.WriteTensor(v.Name, v.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return f, values
}

// TestQuantizeImatrix: each expert slice is quantized with its own part of the importance matrix (llama-quant.cpp
// imatrix + i03*n_per_row), tensors are ordered by weight_name_comparer, and the quantize.imatrix.* keys follow
// general.quantization_version and general.file_type, replacing nothing else.
func TestQuantizeImatrix(t *testing.T) {
	in, values := syntheticMoE(t)
	imp := func(n int, scale float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = scale * float32(1+i%7)
		}
		return v
	}
	im := &Imatrix{Name: "model.imatrix", Datasets: []string{"calibration.txt"}, Chunks: 12, Entries: map[string][]float32{
		"blk.0.ffn_down_exps.weight": append(imp(256, 1), imp(256, 100)...),
		"blk.0.attn_q.weight":        imp(256, 3),
	}}
	var out bytes.Buffer
	if err := Quantize(&out, in, QuantizeOptions{Type: fileType(t, "Q4_K_M"), Imatrix: im}); err != nil {
		t.Fatal(err)
	}
	got := readQuantized(t, out.Bytes())
	var order []string
	for _, ti := range got.Tensors() {
		order = append(order, ti.Name)
	}
	if want := "blk.0.attn_norm.weight blk.0.attn_q.weight blk.0.ffn_down_exps.weight"; strings.Join(order, " ") != want {
		t.Errorf("order %v, want %s", order, want)
	}
	// ffn_down of layer 0 of 1: use_more_bits → Q6_K; attn_q stays Q4_K.
	for name, typ := range map[string]tensor.DType{"blk.0.ffn_down_exps.weight": tensor.Q6_K, "blk.0.attn_q.weight": tensor.Q4_K} {
		v, err := got.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		x, e := values[name], im.Entries[name]
		want := make([]byte, len(v.Data))
		per := len(want) / (len(e) / 256)
		for k := 0; k < len(e)/256; k++ {
			if err := quant.Encode(typ, want[k*per:(k+1)*per], x[k*len(x)/(len(e)/256):(k+1)*len(x)/(len(e)/256)],
				256, e[k*256:(k+1)*256]); err != nil {
				t.Fatal(err)
			}
		}
		if v.DType != typ || !bytes.Equal(v.Data, want) {
			t.Errorf("%s: %s, differs from %s with its importance slices", name, v.DType, typ)
		}
	}
	var keys []string
	for _, kv := range got.Metadata.KVs() {
		keys = append(keys, kv.Key)
	}
	want := "general.architecture llama.block_count llama.attention.head_count llama.expert_count " +
		"general.quantization_version general.file_type quantize.imatrix.file quantize.imatrix.dataset " +
		"quantize.imatrix.entries_count quantize.imatrix.chunks_count"
	if strings.Join(keys, " ") != want {
		t.Errorf("keys:\n %s\nwant\n %s", strings.Join(keys, " "), want)
	}
	if n, err := got.Metadata.Uint32(keyImatrixEntries); err != nil || n != 2 {
		t.Errorf("%s = %d (%v), want 2", keyImatrixEntries, n, err)
	}
	if got.Alignment != 32 {
		t.Errorf("alignment %d, want GGUF_DEFAULT_ALIGNMENT 32 whatever the input had", got.Alignment)
	}

	// Failures are found before anything is written.
	for _, tc := range []struct {
		name string
		im   *Imatrix
		opts QuantizeOptions
		want string
	}{
		{"short", &Imatrix{Entries: map[string][]float32{"blk.0.ffn_down_exps.weight": imp(256, 1)}},
			QuantizeOptions{Type: fileType(t, "Q4_K_M")}, "has 256 values, the tensor needs 512"},
		{"nan", &Imatrix{Entries: map[string][]float32{"x": {float32(math.NaN())}}},
			QuantizeOptions{Type: fileType(t, "Q4_K_M")}, "non-finite"},
		{"IQ2_XXS without", nil, QuantizeOptions{Type: fileType(t, "IQ2_XXS")}, "needs an importance matrix"},
		{"regex IQ1_S without", nil, QuantizeOptions{Type: fileType(t, "Q8_0"),
			TensorTypes: []quant.TensorTypeRule{mustRule(t, "attn_q=iq1_s")}}, "needs an importance matrix"},
	} {
		tc.opts.Imatrix = tc.im
		var sink bytes.Buffer
		err := Quantize(&sink, in, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) || sink.Len() != 0 {
			t.Errorf("%s: err = %v (wrote %d bytes), want %q before writing", tc.name, err, sink.Len(), tc.want)
		}
		if tc.name == "nan" && !errors.Is(err, errImatrixValue) {
			t.Errorf("non-finite importance: %v is not errImatrixValue", err)
		}
	}
}

func mustRule(t *testing.T, s string) quant.TensorTypeRule {
	r, err := quant.ParseTensorTypeRule(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// BenchmarkQuantize reports MB/s of F32 input (the whole tiny-llama-a-f32.gguf tensor data) for the types the
// issue compares with llama-quantize.
func BenchmarkQuantize(b *testing.B) {
	in := tinyGGUF(b, "f32")
	var size int64
	for _, t := range in.Tensors() {
		size += t.Size
	}
	for _, name := range []string{"Q8_0", "Q4_0", "Q4_K_M", "IQ4_XS"} {
		b.Run(name, func(b *testing.B) {
			opts := QuantizeOptions{Type: fileType(b, name)}
			b.SetBytes(size)
			for b.Loop() {
				if err := Quantize(io.Discard, in, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestQuantizeHFMatchesLlamaCpp: converting the Hugging Face checkpoint and quantizing in one pass gives the files
// that convert_hf_to_gguf (--outtype f32) followed by llama-quantize made.
func TestQuantizeHFMatchesLlamaCpp(t *testing.T) {
	m, err := OpenHF(testshared.Path(t, "models", "tiny-llama-a", "hf"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// The reference was converted from a folder named tiny-llama-a; the name is the one input depending on that.
	conv := GGUFOptions{Name: "Tiny Llama A"}
	for _, variant := range referenceTypes {
		t.Run(variant, func(t *testing.T) {
			opts := QuantizeOptions{Type: fileType(t, variant)}
			var out bytes.Buffer
			if err := QuantizeHF(&out, m, conv, opts); err != nil {
				t.Fatal(err)
			}
			ref := tinyGGUF(t, variant)
			want, err := os.ReadFile(ref.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("differs from llama-quantize's %s (%s)", variant, byteDiff(out.Bytes(), want))
			}
			plan, err := PlanQuantizeHF(m, conv, opts)
			if err != nil {
				t.Fatal(err)
			}
			if plan.OutputBytes > int64(len(want)) || len(plan.Tensors) != len(ref.Tensors()) {
				t.Errorf("plan: %d tensors, %d bytes of data, for a file of %d bytes", len(plan.Tensors),
					plan.OutputBytes, len(want))
			}
		})
	}
	// An F16 conversion rounds the weights first: the same as ToGGUF F16 followed by Quantize.
	var direct, twoStep bytes.Buffer
	opts := QuantizeOptions{Type: fileType(t, "Q4_0")}
	if err := QuantizeHF(&direct, m, GGUFOptions{Name: "Tiny Llama A", Type: tensor.F16}, opts); err != nil {
		t.Fatal(err)
	}
	var f16 bytes.Buffer
	if err := ToGGUF(&f16, m, GGUFOptions{Name: "Tiny Llama A", Type: tensor.F16}); err != nil {
		t.Fatal(err)
	}
	if err := Quantize(&twoStep, readQuantized(t, f16.Bytes()), opts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(direct.Bytes(), twoStep.Bytes()) {
		t.Errorf("one pass from an F16 conversion differs from two steps (%s)", byteDiff(direct.Bytes(), twoStep.Bytes()))
	}
}

func TestParseQuantType(t *testing.T) {
	for in, want := range map[string]gguf.FileType{"q4_k_m": 15, "Q4_K": 15, "q3_k": 12, "Q5_K": 17, "15": 15,
		"iq2_m": 29, "MXFP4_MOE": 38, "f32": 0, "0": 0, "bf16": 32} {
		if got, err := ParseQuantType(in); err != nil || got != want {
			t.Errorf("ParseQuantType(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"q9_k", "39", "NVFP4", "4", "-1", "", "Q4_1_SOME_F16"} {
		if ft, err := ParseQuantType(in); err == nil {
			t.Errorf("ParseQuantType(%q) = %v, want an error", in, ft)
		}
	}
}
