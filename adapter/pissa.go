package adapter

import (
	"fmt"
	"slices"
)

// ConvertMutated writes to dir a plain LoRA against the original base for an adapter trained from an initialization
// that changed the base (PiSSA, OLoRA, CorDA, LoRA-GA: the base was replaced by W_res = W − s₀·B₀·A₀, so the trained
// adapter alone is not an update of W). initial is the adapter as initialized, before training. The result's update
// is ΔW = s·B·A − s₀·B₀·A₀ at rank r + r₀ (2r), the conversion PEFT performs with
// path_initial_model_for_weight_conversion (subtract_mutated_init; formats-quant.md §5.1,
// spectral-prune-merge.md §3.2). PEFT writes A' = [A; A₀], B' = [B | −B₀] and doubles lora_alpha (√2 under rsLoRA),
// and cannot convert rsLoRA with rank or alpha patterns; here each adapter's scale is folded into B' (Combine's exact
// linear combination with weights 1 and −1, scale 1), which gives the same ΔW for every scaling rule.
func ConvertMutated(dir string, trained, initial *Adapter) error {
	names := func(a *Adapter) []string {
		var n []string
		for _, m := range a.Modules {
			n = append(n, m.Name)
		}
		return n
	}
	if tn, in := names(trained), names(initial); !slices.Equal(tn, in) {
		return fmt.Errorf("convert: %s has modules %v, its initialization %s has %v: not the same adapter", trained.Path, tn, initial.Path, in)
	}
	for i := range trained.Modules {
		t, n := &trained.Modules[i], &initial.Modules[i]
		if !t.A.Shape.Equal(n.A.Shape) || !t.B.Shape.Equal(n.B.Shape) {
			return fmt.Errorf("convert: module %s: factors %v·%v in %s, %v·%v in its initialization %s",
				t.Name, t.B.Shape, t.A.Shape, trained.Path, n.B.Shape, n.A.Shape, initial.Path)
		}
	}
	return Combine(dir, []*Adapter{trained, initial}, CombineOptions{Method: CombineLinear, Weights: []float64{1, -1}})
}
