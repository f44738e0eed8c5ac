package adapter

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// TestLEGOWithAllUnitsIsCat (§8.7 invariance): the shared rank-8 LoRA (scale 2) and its rank-4 resize (scale 1)
// have 12 units per module; CombineLEGO with k = 12, or any larger k, writes the same files as Combine's exact
// linear ("cat") combination with weights 1, byte for byte.
func TestLEGOWithAllUnitsIsCat(t *testing.T) {
	lora := openAdapter(t, filepath.Join(sharedModel(t), "lora-shakespeare-a"))
	small := filepath.Join(t.TempDir(), "r4")
	if _, err := Resize(small, lora, 4); err != nil {
		t.Fatal(err)
	}
	inputs := []*Adapter{lora, openAdapter(t, small)}
	cat := filepath.Join(t.TempDir(), "cat")
	if err := Combine(cat, inputs, CombineOptions{Method: CombineLinear}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{12, 100} {
		dir := filepath.Join(t.TempDir(), "lego")
		if err := CombineLEGO(dir, inputs, k, 7); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{WeightsName, ConfigName} {
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(filepath.Join(cat, name))
			if !bytes.Equal(got, want) {
				t.Errorf("k = %d: %s differs from the cat combination's", k, name)
			}
		}
	}
}

// TestLEGOClusters: units that are the same rank-one update written differently (b·aᵀ = (−b/2)·(−2a)ᵀ) fall in one
// cluster, whose reweighted centroid is their sum: two adapters holding u, v and u', v' merge at k = 2 into exactly
// 2·(u + v), at k = 1 into one rank; equal seeds give equal files.
func TestLEGOClusters(t *testing.T) {
	// adapter 1: units u = [1,1]ᵀ[1,2,0] and v = [0,3]ᵀ[0,0,1]; adapter 2: the same updates, rescaled and negated.
	a1 := writePEFT(t, `{"r": 2, "lora_alpha": 2}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{2, 3}, 1, 2, 0, 0, 0, 1),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 2}, 1, 0, 1, 3))
	a2 := writePEFT(t, `{"r": 2, "lora_alpha": 4}`, // scale 2
		f32("base_model.model.l.lora_A.weight", tensor.Shape{2, 3}, 0, 0, 4, -2, -4, 0),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 2}, 0, -0.25, 0.375, -0.25))
	inputs := []*Adapter{openAdapter(t, a1), openAdapter(t, a2)}
	want := []float64{2, 4, 0, 2, 4, 6}
	var first []byte
	for _, seed := range []uint64{1, 2, 1} {
		dir := filepath.Join(t.TempDir(), "lego")
		if err := CombineLEGO(dir, inputs, 2, seed); err != nil {
			t.Fatal(err)
		}
		out := openAdapter(t, dir)
		m := &out.Modules[0]
		if m.Rank != 2 {
			t.Fatalf("seed %d: rank %d, want 2", seed, m.Rank)
		}
		equalMatrixTol(t, "k = 2", delta(t, m), want, 1e-6)
		data, _ := os.ReadFile(filepath.Join(dir, WeightsName))
		if seed == 1 {
			if first != nil && !bytes.Equal(first, data) {
				t.Error("equal seeds gave different files")
			}
			first = data
		}
	}
	dir := filepath.Join(t.TempDir(), "one")
	if err := CombineLEGO(dir, inputs, 1, 1); err != nil {
		t.Fatal(err)
	}
	if r := openAdapter(t, dir).Modules[0].Rank; r != 1 {
		t.Errorf("k = 1: rank %d", r)
	}
	if err := CombineLEGO(filepath.Join(t.TempDir(), "x"), inputs, 0, 1); err == nil {
		t.Error("k = 0: no error")
	}
	dora := doraOracle(t)
	defer dora.Close()
	if err := CombineLEGO(filepath.Join(t.TempDir(), "x"), []*Adapter{dora}, 1, 1); err == nil {
		t.Error("DoRA: no error")
	}
}

func equalMatrixTol(t *testing.T, what string, got *spectral.Matrix, want []float64, tol float64) {
	t.Helper()
	for i, w := range want {
		if math.Abs(got.Data[i]-w) > tol {
			t.Fatalf("%s: ΔW = %v, want %v", what, got.Data, want)
		}
	}
}

// TestLEGOReduces: with k = 8 < 12 units per module, LoRA-LEGO's update cannot beat the best rank-8 approximation of
// the cat sum (Eckart–Young: Combine's svd method at rank 8); both errors are logged.
func TestLEGOReduces(t *testing.T) {
	lora := openAdapter(t, filepath.Join(sharedModel(t), "lora-shakespeare-a"))
	small := filepath.Join(t.TempDir(), "r4")
	if _, err := Resize(small, lora, 4); err != nil {
		t.Fatal(err)
	}
	inputs := []*Adapter{lora, openAdapter(t, small)}
	dirs := map[string]string{"cat": "", "svd": "", "lego": ""}
	for name := range dirs {
		dirs[name] = filepath.Join(t.TempDir(), name)
	}
	if err := Combine(dirs["cat"], inputs, CombineOptions{Method: CombineLinear}); err != nil {
		t.Fatal(err)
	}
	if err := Combine(dirs["svd"], inputs, CombineOptions{Method: CombineSVD, Rank: 8}); err != nil {
		t.Fatal(err)
	}
	if err := CombineLEGO(dirs["lego"], inputs, 8, 1); err != nil {
		t.Fatal(err)
	}
	cat, svd, lego := openAdapter(t, dirs["cat"]), openAdapter(t, dirs["svd"]), openAdapter(t, dirs["lego"])
	var eLego, eSVD, total float64
	for i := range cat.Modules {
		m := &cat.Modules[i]
		want := delta(t, m)
		dl, n := frobDiff(t, delta(t, moduleByName(t, lego, m.Name)), want)
		ds, _ := frobDiff(t, delta(t, moduleByName(t, svd, m.Name)), want)
		if r := moduleByName(t, lego, m.Name).Rank; r > 8 {
			t.Errorf("%s: LEGO rank %d > 8", m.Name, r)
		}
		if dl < ds*(1-1e-6) {
			t.Errorf("%s: LEGO error %g below the rank-8 optimum %g", m.Name, dl, ds)
		}
		eLego, eSVD, total = eLego+dl*dl, eSVD+ds*ds, total+n*n
	}
	t.Logf("k = 8 of 12 units: relative Frobenius error of ΔW: LEGO %.3g, optimal rank-8 SVD %.3g", math.Sqrt(eLego/total), math.Sqrt(eSVD/total))
}
