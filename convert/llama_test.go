package convert

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
)

// TestPermuteRows checks the rotary permutation against its definition, w.reshape(n_head, 2, half, cols)
// .swapaxes(1, 2).reshape(rows, cols), element by element, and that inverse undoes it.
func TestPermuteRows(t *testing.T) {
	const heads, half, cols = 3, 4, 5
	rows := heads * 2 * half
	src := make([]byte, rows*cols)
	for i := range src {
		src[i] = byte(i)
	}
	got := make([]byte, len(src))
	permuteRows(got, src, 2*half, cols, false)
	for h := range heads {
		for i := range half {
			for j := range 2 {
				// After swapaxes(1, 2) index [h, i, j] reads the input at [h, j, i].
				out := ((h*half+i)*2 + j) * cols
				in := ((h*2+j)*half + i) * cols
				if !bytes.Equal(got[out:out+cols], src[in:in+cols]) {
					t.Fatalf("row [h=%d i=%d j=%d] = %v, want input row %d", h, i, j, got[out:out+cols], in/cols)
				}
			}
		}
	}
	back := make([]byte, len(src))
	permuteRows(back, got, 2*half, cols, true)
	if !bytes.Equal(back, src) {
		t.Error("inverse permutation does not restore the input")
	}
}

func TestTensorNames(t *testing.T) {
	for hf, want := range map[string]string{
		"model.embed_tokens.weight":                      "token_embd.weight",
		"lm_head.weight":                                 "output.weight",
		"model.norm.weight":                              "output_norm.weight",
		"model.layers.0.input_layernorm.weight":          "blk.0.attn_norm.weight",
		"model.layers.1.self_attn.q_proj.weight":         "blk.1.attn_q.weight",
		"model.layers.1.self_attn.k_proj.bias":           "blk.1.attn_k.bias",
		"model.layers.1.self_attn.o_proj.weight":         "blk.1.attn_output.weight",
		"model.layers.0.post_attention_layernorm.weight": "blk.0.ffn_norm.weight",
		"model.layers.0.mlp.down_proj.weight":            "blk.0.ffn_down.weight",
	} {
		got, err := hfToGGUF(hf, 2)
		if err != nil || got != want {
			t.Errorf("hfToGGUF(%q) = %q, %v; want %q", hf, got, err, want)
		}
		back, err := ggufToHF(want)
		if err != nil || back != hf {
			t.Errorf("ggufToHF(%q) = %q, %v; want %q", want, back, err, hf)
		}
	}
	for _, bad := range []string{"model.layers.2.mlp.up_proj.weight", "model.layers.01.mlp.up_proj.weight",
		"model.layers.0.mlp.experts.0.weight", "model.embed_tokens", "vision_tower.weight"} {
		if _, err := hfToGGUF(bad, 2); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("hfToGGUF(%q): %v, want an error naming it", bad, err)
		}
	}
}

// TestPlanGGUF lists the reference model's tensors in llama.cpp's order with the right types and permutations.
func TestPlanGGUF(t *testing.T) {
	m := openTinyHF(t)
	plan, err := PlanGGUF(m, GGUFOptions{Type: tensor.F16})
	if err != nil {
		t.Fatal(err)
	}
	ref := openGGUF(t, filepath.Join(tinyLlama(t), "gguf", "tiny-llama-a-f16.gguf"))
	want := ref.Tensors()
	if len(plan) != len(want) {
		t.Fatalf("%d entries, want %d", len(plan), len(want))
	}
	for i, e := range plan {
		w := want[i]
		heads := int64(0)
		switch {
		case strings.HasSuffix(e.Name, "attn_q.weight"):
			heads = 8
		case strings.HasSuffix(e.Name, "attn_k.weight"):
			heads = 4
		}
		if e.Name != w.Name || e.To != w.DType || !e.Shape.Equal(w.Shape) || e.From != tensor.F32 ||
			e.PermuteHeads != heads {
			t.Errorf("entry %d = %+v, want %s %s %v heads %d", i, e, w.Name, w.DType, w.Shape, heads)
		}
	}
}

// TestQ8_0MatchesLlamaQuantize: HF → Q8_0 quantizes every 2-D weight (token_embd and output included) with ggml's
// reference quantizer, so each tensor equals the one llama-quantize made from the F32 GGUF.
func TestQ8_0MatchesLlamaQuantize(t *testing.T) {
	m := openTinyHF(t)
	f := readGGUF(t, toGGUFBytes(t, m, GGUFOptions{Type: tensor.Q8_0, Name: tinyName}))
	ref := openGGUF(t, filepath.Join(tinyLlama(t), "gguf", "tiny-llama-a-q8_0.gguf"))
	if ft, _ := f.Metadata.FileType(); ft != 7 {
		t.Errorf("general.file_type = %d, want 7 (MOSTLY_Q8_0)", ft)
	}
	for _, ti := range f.Tensors() {
		g, _ := f.Tensor(ti.Name)
		w, err := ref.Tensor(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if g.DType != w.DType || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("%s: %s differs from llama-quantize's %s", ti.Name, g.DType, w.DType)
		}
	}
}

// TestBF16TiedAuto: auto picks BF16 for BF16 weights (file type 32), norms stay F32, a tied model has no
// output.weight and comes back with tie_word_embeddings; BF16 → HF → GGUF is exact.
func TestBF16TiedAuto(t *testing.T) {
	cfg := defaultConfig()
	cfg["tie_word_embeddings"] = true
	dir := writeSynth(t, "tied-bf16", synthModel{config: cfg, dtype: tensor.BF16, tied: true,
		files: map[string]string{"tokenizer.model": string(spmModel(41).Marshal())}})
	m, err := OpenHF(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	first := toGGUFBytes(t, m, GGUFOptions{})
	f := readGGUF(t, first)
	if ft, _ := f.Metadata.FileType(); ft != 32 {
		t.Errorf("file type %d, want 32 (MOSTLY_BF16)", ft)
	}
	for _, ti := range f.Tensors() {
		want := tensor.BF16
		if len(ti.Shape) == 1 {
			want = tensor.F32
		}
		if ti.DType != want || ti.Name == "output.weight" {
			t.Errorf("%s is %s", ti.Name, ti.DType)
		}
	}
	hf := toHFDir(t, f, HFOptions{})
	cfgBack, err := readJSONObject(filepath.Join(hf, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if tied, _ := cfgBack.bool("tie_word_embeddings"); !tied {
		t.Error("tie_word_embeddings is not true")
	}
	if dt, _ := cfgBack.string("torch_dtype"); dt != "bfloat16" {
		t.Errorf("torch_dtype %q", dt)
	}
	m2, err := OpenHF(hf)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if second := toGGUFBytes(t, m2, GGUFOptions{Name: "Tied Bf16"}); !bytes.Equal(first, second) {
		t.Error("BF16 GGUF → HF → GGUF changed the file")
		diffGGUF(t, readGGUF(t, second), f)
	}
}

// TestRopeScaling: linear and yarn scaling become rope.scaling.* keys (before freq_base, as upstream writes them);
// llama3 scaling becomes the rope_freqs.weight tensor, first in the file, which ToHF turns back into rope_scaling.
func TestRopeScaling(t *testing.T) {
	t.Run("yarn", func(t *testing.T) {
		cfg := defaultConfig()
		cfg["rope_scaling"] = map[string]any{"rope_type": "yarn", "factor": 4.0,
			"original_max_position_embeddings": 32, "beta_fast": 32.0}
		dir := writeSynth(t, "yarn", synthModel{config: cfg,
			files: map[string]string{"tokenizer.model": string(spmModel(41).Marshal())}})
		m, err := OpenHF(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		f := readGGUF(t, toGGUFBytes(t, m, GGUFOptions{}))
		var keys []string
		for _, kv := range f.Metadata.KVs() {
			if strings.HasPrefix(kv.Key, "llama.rope") {
				keys = append(keys, kv.Key)
			}
		}
		want := []string{"llama.rope.scaling.type", "llama.rope.scaling.factor",
			"llama.rope.scaling.original_context_length", "llama.rope.scaling.yarn_beta_fast", "llama.rope.freq_base",
			"llama.rope.dimension_count"}
		if strings.Join(keys, ",") != strings.Join(want, ",") {
			t.Errorf("rope keys %v, want %v", keys, want)
		}
		if v, _ := f.Metadata.Uint32("llama.rope.scaling.original_context_length"); v != 32 {
			t.Errorf("original_context_length %d", v)
		}
		hf := toHFDir(t, f, HFOptions{})
		back, _ := readJSONObject(filepath.Join(hf, "config.json"))
		rs := back.object("rope_scaling")
		if typ, _ := rs.string("rope_type"); typ != "yarn" {
			t.Errorf("rope_scaling %v", rs)
		}
	})
	t.Run("llama3", func(t *testing.T) {
		cfg := defaultConfig()
		cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"] = 256, 2, 1 // head_dim 128
		cfg["rope_theta"] = 500000.0
		cfg["rope_scaling"] = map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
			"high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
		dir := writeSynth(t, "llama3", synthModel{config: cfg,
			files: map[string]string{"tokenizer.model": string(spmModel(41).Marshal())}})
		m, err := OpenHF(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		first := toGGUFBytes(t, m, GGUFOptions{})
		f := readGGUF(t, first)
		ti := f.Tensors()[0]
		if ti.Name != ropeFreqsName || ti.DType != tensor.F32 || !ti.Shape.Equal(tensor.Shape{64}) {
			t.Fatalf("first tensor %s %s %v, want %s F32 [64]", ti.Name, ti.DType, ti.Shape, ropeFreqsName)
		}
		v, _ := f.Tensor(ropeFreqsName)
		freqs, _ := v.Float32s()
		// Wavelength 2π·500000^(i/64) against 8192/4 and 8192/1: short wavelengths keep factor 1, long ones get
		// the full factor 8, those between a smooth blend.
		for i, got := range freqs {
			wavelen := 2 * math.Pi * math.Pow(500000, float64(2*i)/128)
			switch {
			case wavelen < 2048 && got != 1, wavelen > 8192 && got != 8:
				t.Errorf("freq %d (wavelength %.0f) = %g", i, wavelen, got)
			case wavelen >= 2048 && wavelen <= 8192 && (got <= 1 || got >= 8):
				t.Errorf("freq %d (wavelength %.0f) = %g, want a blend in (1, 8)", i, wavelen, got)
			}
		}
		hf := toHFDir(t, f, HFOptions{})
		m2, err := OpenHF(hf)
		if err != nil {
			t.Fatal(err)
		}
		defer m2.Close()
		if second := toGGUFBytes(t, m2, GGUFOptions{Name: "Llama3"}); !bytes.Equal(first, second) {
			t.Error("llama3 rope GGUF → HF → GGUF changed the file")
			diffGGUF(t, readGGUF(t, second), f)
		}
	})
}

// TestConversionErrors: bad inputs give errors naming the file or field and what was expected.
func TestConversionErrors(t *testing.T) {
	spm := map[string]string{"tokenizer.model": string(spmModel(41).Marshal())}
	for _, tc := range []struct {
		name   string
		edit   func(cfg map[string]any) synthModel
		file   string // overwritten after writing
		body   string
		inOpen bool
		want   string
	}{
		{name: "no config", file: "config.json", body: "", inOpen: true, want: "config.json"},
		{name: "bad json", file: "config.json", body: `{"hidden_size": 64,,}`, inOpen: true, want: "offset"},
		{name: "arch", edit: func(c map[string]any) synthModel {
			c["architectures"] = []string{"GPT2LMHeadModel"}
			return synthModel{config: c, files: spm}
		}, inOpen: true, want: `"GPT2LMHeadModel" is not supported`},
		{name: "moe", edit: func(c map[string]any) synthModel {
			c["num_local_experts"] = 8
			return synthModel{config: c, files: spm}
		}, want: "mixture-of-experts"},
		{name: "missing hidden", edit: func(c map[string]any) synthModel {
			delete(c, "hidden_size")
			return synthModel{config: c, files: spm}
		}, want: `"hidden_size" is missing`},
		{name: "heads", edit: func(c map[string]any) synthModel {
			c["num_key_value_heads"] = 3
			return synthModel{config: c, files: spm}
		}, want: "num_key_value_heads 3"},
		{name: "no tokenizer", edit: func(c map[string]any) synthModel {
			return synthModel{config: c}
		}, want: "no tokenizer.model or tokenizer.json"},
		{name: "bad tokenizer.model", edit: func(c map[string]any) synthModel {
			return synthModel{config: c, files: map[string]string{"tokenizer.model": "\x0a\xff\xff"}}
		}, want: "tokenizer.model: offset"},
		{name: "integer weights", edit: func(c map[string]any) synthModel {
			return synthModel{config: c, files: spm, dtype: tensor.I8}
		}, want: "only floating-point"},
		{name: "unmapped tensor", edit: func(c map[string]any) synthModel {
			c["num_hidden_layers"] = 1
			return synthModel{config: c, files: spm}
		}, want: `"model.layers.1.`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultConfig()
			s := synthModel{config: cfg, files: spm}
			if tc.edit != nil {
				s = tc.edit(cfg)
			}
			if tc.name == "unmapped tensor" {
				// Weights for two layers under a config that declares one.
				cfg["num_hidden_layers"] = 2
			}
			dir := writeSynth(t, "bad", s)
			if tc.name == "unmapped tensor" {
				cfg["num_hidden_layers"] = 1
				writeJSON(t, filepath.Join(dir, "config.json"), cfg)
			}
			if tc.file != "" {
				p := filepath.Join(dir, tc.file)
				if tc.body == "" {
					os.Remove(p)
				} else if err := os.WriteFile(p, []byte(tc.body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m, err := OpenHF(dir)
			if !tc.inOpen {
				if err != nil {
					t.Fatalf("OpenHF: %v", err)
				}
				defer m.Close()
				err = ToGGUF(&bytes.Buffer{}, m, GGUFOptions{})
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestToHFErrors: GGUF files lathe cannot turn into a Hugging Face llama are refused with the reason.
func TestToHFErrors(t *testing.T) {
	ref := openGGUF(t, filepath.Join(tinyLlama(t), "gguf", "tiny-llama-a-f32.gguf"))
	write := func(edit func(md *gguf.Metadata) *gguf.Metadata, rename map[string]string) *gguf.File {
		md := edit(ref.Metadata.Clone())
		var views []tensor.View
		for _, ti := range ref.Tensors() {
			v, _ := ref.Tensor(ti.Name)
			if n, ok := rename[ti.Name]; ok {
				v.Name = n
			}
			views = append(views, v)
		}
		path := filepath.Join(t.TempDir(), "x.gguf")
		if err := gguf.WriteFile(path, md, views); err != nil {
			t.Fatal(err)
		}
		return openGGUF(t, path)
	}
	for _, tc := range []struct {
		name   string
		edit   func(md *gguf.Metadata) *gguf.Metadata
		rename map[string]string
		opts   HFOptions
		want   string
	}{
		{"arch", func(md *gguf.Metadata) *gguf.Metadata {
			md.Set(gguf.KeyArchitecture, gguf.ValueOf("gemma"))
			return md
		}, nil, HFOptions{}, `"gemma" is not supported`},
		{"no heads", func(md *gguf.Metadata) *gguf.Metadata {
			md.Delete("llama.attention.head_count")
			return md
		}, nil, HFOptions{}, "llama.attention.head_count"},
		{"tensor", func(md *gguf.Metadata) *gguf.Metadata { return md },
			map[string]string{"blk.0.ffn_up.weight": "blk.0.ffn_up_exps.weight"}, HFOptions{}, "ffn_up_exps"},
		{"type", func(md *gguf.Metadata) *gguf.Metadata { return md }, nil, HFOptions{Type: tensor.Q8_0},
			"not supported"},
		{"tokenizer", func(md *gguf.Metadata) *gguf.Metadata {
			md.Set(keyTokModel, gguf.ValueOf("rwkv"))
			return md
		}, nil, HFOptions{}, `"rwkv"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := write(tc.edit, tc.rename)
			dir := filepath.Join(t.TempDir(), "out")
			err := ToHF(dir, f, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if _, statErr := os.Stat(dir); !errors.Is(statErr, os.ErrNotExist) {
				t.Error("the output directory was created although the conversion was refused")
			}
		})
	}
}
