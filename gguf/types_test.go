package gguf

import (
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// ggmlEnum is enum ggml_type of ggml include/ggml.h, one name per id; removed ids carry the name of their comment.
const ggmlEnum = `F32 F16 Q4_0 Q4_1 -Q4_2 -Q4_3 Q5_0 Q5_1 Q8_0 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ2_XXS IQ2_XS IQ3_XXS
IQ1_S IQ4_NL IQ3_S IQ2_S IQ4_XS I8 I16 I32 I64 F64 IQ1_M BF16 -Q4_0_4_4 -Q4_0_4_8 -Q4_0_8_8 TQ1_0 TQ2_0
-IQ4_NL_4_4 -IQ4_NL_4_8 -IQ4_NL_8_8 MXFP4 NVFP4 Q1_0 Q2_0`

func TestGGMLTypes(t *testing.T) {
	names := strings.Fields(ggmlEnum)
	if len(names) != 43 {
		t.Fatalf("enum has %d entries, GGML_TYPE_COUNT is 43", len(names))
	}
	seen := map[tensor.DType]bool{}
	for id, name := range names {
		dt, err := TypeFromGGML(uint32(id))
		if removed, ok := strings.CutPrefix(name, "-"); ok {
			if err == nil || !strings.Contains(err.Error(), "("+removed+") was removed") {
				t.Errorf("id %d: %v, want an error naming %s", id, err, removed)
			}
			continue
		}
		if err != nil || dt.String() != name {
			t.Errorf("id %d: %v %v, want %s", id, dt, err, name)
			continue
		}
		back, err := GGMLType(dt)
		if err != nil || back != uint32(id) {
			t.Errorf("GGMLType(%s) = %d, %v, want %d", dt, back, err, id)
		}
		seen[dt] = true
	}
	if _, err := TypeFromGGML(43); err == nil {
		t.Error("id 43 accepted")
	}
	// Every DType that is not a ggml type is one that only safetensors has.
	for _, dt := range tensor.DTypes() {
		if _, err := GGMLType(dt); (err == nil) != seen[dt] {
			t.Errorf("GGMLType(%s): %v", dt, err)
		}
	}
	if _, err := GGMLType(tensor.Invalid); err == nil {
		t.Error("GGMLType(Invalid) succeeded")
	}
}

func TestFileType(t *testing.T) {
	// llama_ftype of llama.h; removed ids are marked with "-".
	const llamaFtype = `0 F32|1 F16|2 Q4_0|3 Q4_1|-4 Q4_1_SOME_F16|-5 Q4_2|-6 Q4_3|7 Q8_0|8 Q5_0|9 Q5_1|10 Q2_K|11 Q3_K_S|
12 Q3_K_M|13 Q3_K_L|14 Q4_K_S|15 Q4_K_M|16 Q5_K_S|17 Q5_K_M|18 Q6_K|19 IQ2_XXS|20 IQ2_XS|21 Q2_K_S|22 IQ3_XS|
23 IQ3_XXS|24 IQ1_S|25 IQ4_NL|26 IQ3_S|27 IQ3_M|28 IQ2_S|29 IQ2_M|30 IQ4_XS|31 IQ1_M|32 BF16|-33 Q4_0_4_4|
-34 Q4_0_4_8|-35 Q4_0_8_8|36 TQ1_0|37 TQ2_0|38 MXFP4_MOE|39 NVFP4|40 Q1_0|41 Q2_0`
	for _, entry := range strings.Split(strings.ReplaceAll(llamaFtype, "\n", ""), "|") {
		idStr, name, _ := strings.Cut(entry, " ")
		removed := strings.HasPrefix(idStr, "-")
		var id uint32
		for _, c := range strings.TrimPrefix(idStr, "-") {
			id = id*10 + uint32(c-'0')
		}
		ft := FileType(id)
		parsed, err := ParseFileType(strings.ToLower(name))
		if removed {
			if err == nil || ft.String() != name+" (removed)" {
				t.Errorf("%d %s: parsed %v, %v; String %q", id, name, parsed, err, ft)
			}
			continue
		}
		if err != nil || parsed != ft || ft.String() != name {
			t.Errorf("%d %s: parsed %v, %v; String %q", id, name, parsed, err, ft)
		}
	}
	if s := (FileType(15) | FileTypeGuessed).String(); s != "Q4_K_M (guessed)" {
		t.Errorf("guessed: %q", s)
	}
	if _, err := ParseFileType("Q9_K"); err == nil {
		t.Error("unknown name accepted")
	}
}
