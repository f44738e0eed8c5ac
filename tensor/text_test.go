package tensor

import (
	"encoding/json"
	"testing"
)

func TestDTypeTextRoundTrip(t *testing.T) {
	for _, d := range DTypes() {
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if want := `"` + d.String() + `"`; string(b) != want {
			t.Errorf("%v marshals as %s, want %s", d, b, want)
		}
		var back DType
		if err := json.Unmarshal(b, &back); err != nil || back != d {
			t.Errorf("%s reads back as %v (%v)", b, back, err)
		}
	}
	var d DType
	if err := json.Unmarshal([]byte(`"Q9_9"`), &d); err == nil {
		t.Error("unknown type name accepted")
	}
}
