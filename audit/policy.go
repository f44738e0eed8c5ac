package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ParsePolicy reads a rules file (lathe check --rules): one JSON object whose keys are the json names of Policy's
// fields. Keys left out keep NoPolicy's values. An unknown key (a misspelt limit would silently check nothing), a
// negative α, ‖ΔW‖/‖W‖ or size limit, an empty α range, or anything after the object is an error naming the file.
func ParsePolicy(name string, data []byte) (Policy, error) {
	p := NoPolicy()
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return p, fmt.Errorf("%s: expected a JSON object of policy limits", name)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) && syn.Offset > 0 {
			// Offset counts the bytes read up to and including the offending one.
			return NoPolicy(), fmt.Errorf("%s: byte %d: %w", name, syn.Offset-1, err)
		}
		return NoPolicy(), fmt.Errorf("%s: %w", name, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return NoPolicy(), fmt.Errorf("%s: byte %d: data after the JSON object", name, dec.InputOffset())
	}
	for _, f := range []struct {
		key string
		v   float64
	}{{"alpha_min", p.AlphaMin}, {"alpha_max", p.AlphaMax}, {"max_delta_norm", p.MaxDeltaNormRatio},
		{"max_size", float64(p.MaxBytes)}} {
		if f.v < 0 {
			return NoPolicy(), fmt.Errorf("%s: %s is %g: want a positive limit, or 0 for none", name, f.key, f.v)
		}
	}
	if p.AlphaMin > 0 && p.AlphaMax > 0 && p.AlphaMin > p.AlphaMax {
		return NoPolicy(), fmt.Errorf("%s: alpha range [%g, %g] is empty", name, p.AlphaMin, p.AlphaMax)
	}
	return p, nil
}
