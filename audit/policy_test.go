package audit

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// docsRules is the rules file docs/check.md shows for a CI setup.
func docsRules(t testing.TB) string {
	b, err := os.ReadFile("../docs/check.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "```json\n")
	block, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatal("docs/check.md has no ```json block of rules")
	}
	return block
}

// TestParsePolicy: the documented example gives its limits, keys left out keep NoPolicy's, and every malformed file
// is refused with its name and the fault.
func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy("adapter-rules.json", []byte(docsRules(t)))
	want := Policy{MaxIntrudersPerLayer: 2, MaxIntrudersTotal: 20, AlphaMin: 2, AlphaMax: 6, MaxDeltaNormRatio: 0.5,
		MaxBytes: 104857600}
	if err != nil || p != want {
		t.Errorf("docs/check.md's rules: %+v, %v; want %+v", p, err, want)
	}
	want = NoPolicy()
	want.MaxBytes = 1000
	if p, err := ParsePolicy("r.json", []byte(" {\"max_size\": 1000}\n")); err != nil || p != want {
		t.Errorf("max_size alone: %+v, %v; want %+v", p, err, want)
	}
	for _, c := range []struct{ in, want string }{
		{``, "expected a JSON object"},
		{`null`, "expected a JSON object"},
		{`[{"max_size": 1}]`, "expected a JSON object"},
		{`{"max_sise": 1000}`, `unknown field "max_sise"`},
		{`{"max_size": "1M"}`, "max_size"},
		{`{"max_size": 1.5}`, "max_size"},
		{`{"max_intruders": 1e99}`, "max_intruders"},
		{`{"alpha_min": 2,}`, "byte 16"},
		{`{"alpha_min": 2`, "unexpected EOF"},
		{`{"alpha_min": 2} {}`, "byte 18: data after the JSON object"},
		{`{"alpha_min": 2} x`, "data after the JSON object"},
		{`{"alpha_max": -1}`, "alpha_max is -1"},
		{`{"max_delta_norm": -0.5}`, "max_delta_norm is -0.5"},
		{`{"max_size": -10}`, "max_size is -10"},
		{`{"alpha_min": 5, "alpha_max": 3}`, "alpha range [5, 3] is empty"},
	} {
		p, err := ParsePolicy("r.json", []byte(c.in))
		if err == nil || !strings.HasPrefix(err.Error(), "r.json: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParsePolicy(%q): error %v, want one naming r.json and %q", c.in, err, c.want)
		}
		if p != NoPolicy() {
			t.Errorf("ParsePolicy(%q) failed but returned %+v, not NoPolicy()", c.in, p)
		}
	}
}

// FuzzParsePolicy: any bytes give an error or a policy that ParsePolicy accepts again unchanged once written back
// as JSON, with no negative limit besides the intruder counts' "no limit".
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(docsRules(f)))
	for _, s := range []string{`{}`, `{"max_size": 1000}`, `{"max_intruders": -1, "alpha_min": 1.5e0}`,
		`{"alpha_min": 5, "alpha_max": 3}`, `{"max_sise": 1}`, `{"max_size": 1} {}`, `{"alpha_max": -1}`,
		`{"max_delta_norm": null, "max_size": 9223372036854775807}`, "\ufeff{}", `{"max_intruders": 1e99}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy("r.json", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "r.json: ") {
				t.Errorf("error %q does not name the file", err)
			}
			return
		}
		if p.AlphaMin < 0 || p.AlphaMax < 0 || p.MaxDeltaNormRatio < 0 || p.MaxBytes < 0 {
			t.Errorf("accepted a negative limit: %+v", p)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if q, err := ParsePolicy("again.json", b); err != nil || q != p {
			t.Errorf("%s: parsed again as %+v, %v; want %+v", b, q, err, p)
		}
	})
}
