package convert

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// The general.name / basename / finetune / version / size_label heuristics of gguf-py's metadata.py
// (Metadata.get_model_id_components, id_to_title) and utility.py (size_label). lathe applies them to config.json's
// _name_or_path and the directory name; the model card (README.md YAML front matter) is not read.

// modelID holds the parts get_model_id_components finds in a model id such as "org/Llama-2-7b-chat".
type modelID struct {
	name, org, basename, finetune, version, sizeLabel string
}

var (
	reVersion    = regexp.MustCompile(`(?i)^(v|iter)?\d+([.]\d+)*$`)
	reQuantType  = regexp.MustCompile(`(?i)^(i?q\d(_\w)*|b?fp?(16|32))$`)
	reSizeLabel  = regexp.MustCompile(`(?i)^((a|\d+x)?\d+([._]\d+)?[kmbt]\d?|small|mini|medium|large|x?xl)$`)
	reActive     = regexp.MustCompile(`(?i)^a\d+([._]\d+)?[kmbt]\d?$`)
	reFinetune   = regexp.MustCompile(`(?i)^(chat|instruct|vision|lora)$`)
	reTitleGuard = regexp.MustCompile(`^(v\d+(?:\.\d+)*|\d.*)`)
)

// parseModelID is get_model_id_components; totalParams > 0 tells size labels from context lengths.
func parseModelID(id string, totalParams int64) modelID {
	if strings.Contains(id, " ") {
		return modelID{name: id}
	}
	var out modelID
	full := id
	if org, rest, ok := strings.Cut(id, "/"); ok {
		full = rest
		if org != "" && org[0] != '.' {
			out.org = org
		}
	}
	out.name = full
	var parts []string
	for _, p := range strings.Split(full, "-") {
		if p != "" {
			parts = append(parts, p)
		}
	}
	const (
		tBasename = 1 << iota
		tSize
		tFinetune
		tVersion
		tType
	)
	types := make([]int, len(parts))
	for i, part := range parts {
		switch {
		case reVersion.MatchString(part):
			types[i] |= tVersion
		case reQuantType.MatchString(part):
			types[i] |= tType
			parts[i] = strings.ToUpper(part)
		case i > 0 && reSizeLabel.MatchString(part):
			part = normalizeSizeLabel(part)
			if totalParams != 0 {
				if label, ok := sizeLabelParams(part); ok {
					activeFollows := false
					if i+1 < len(parts) {
						next := normalizeSizeLabel(parts[i+1])
						if n, ok := sizeLabelParams(next[1:]); ok && reActive.MatchString(next) {
							activeFollows = math.Abs(n-math.Abs(float64(totalParams))) <= float64(7*abs64(totalParams)/8)
						}
					}
					tp := float64(totalParams)
					if !activeFollows && (totalParams < 0 && label < float64(abs64(totalParams)/8) ||
						totalParams > 0 && math.Abs(label-tp) > float64(7*totalParams/8)) {
						types[i] |= tFinetune // most likely a context length
						part = part[:len(part)-1] + strings.ToLower(part[len(part)-1:])
					}
				}
			}
			if types[i] == 0 {
				types[i] |= tSize
			}
			parts[i] = part
		case i > 0 && reFinetune.MatchString(part):
			if totalParams < 0 && strings.EqualFold(part, "lora") {
				types[i] |= tType
			} else {
				types[i] |= tFinetune
			}
		}
	}
	// Word-only size labels ("small") yield to a numeric one.
	numeric := false
	for i, p := range parts {
		if types[i]&tSize != 0 && strings.IndexFunc(p, unicode.IsDigit) >= 0 {
			numeric = true
		}
	}
	if numeric {
		for i, p := range parts {
			if types[i]&tSize != 0 && strings.IndexFunc(p, func(r rune) bool { return !unicode.IsLetter(r) }) < 0 {
				types[i] &^= tSize
			}
		}
	}
	atStart := true
	for i, p := range parts {
		if atStart && (types[i] == 0 && unicode.IsLetter([]rune(p)[0]) || types[i]&tVersion != 0) {
			types[i] |= tBasename
			continue
		}
		atStart = false
		if types[i] == 0 {
			types[i] |= tFinetune
		}
	}
	for i := len(parts) - 1; i >= 0; i-- {
		if types[i]&tBasename == 0 || types[i] == tBasename {
			break
		}
		types[i] &^= tBasename
	}
	join := func(want, exclude int, dedup bool) string {
		var sel []string
		seen := map[string]bool{}
		for i, p := range parts {
			if types[i]&want != 0 && types[i]&exclude == 0 && !(dedup && seen[p]) {
				sel = append(sel, p)
				seen[p] = true
			}
		}
		return strings.Join(sel, "-")
	}
	out.basename = join(tBasename, 0, false)
	out.sizeLabel = join(tSize, 0, true)
	out.finetune = join(tFinetune, 0, false)
	out.version = join(tVersion, tBasename, false)
	if out.sizeLabel == "" && out.finetune == "" && out.version == "" {
		out.basename = ""
	}
	return out
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// normalizeSizeLabel: "7b1" → "7.1B"-style fixes, "_" → ".", and an upper-case unit after a digit.
func normalizeSizeLabel(label string) string {
	label = strings.ReplaceAll(label, "_", ".")
	if n := len(label); n >= 2 && isDecimal(label[n-1]) {
		label = label[:n-2] + "." + label[n-1:] + label[n-2:n-1]
	}
	if n := len(label); n > 1 && isDecimal(label[n-2]) && strings.ContainsAny(label[n-1:], "kmbt") {
		label = label[:n-1] + strings.ToUpper(label[n-1:])
	}
	return label
}

func isDecimal(c byte) bool { return c >= '0' && c <= '9' }

// sizeLabelParams is get_size_label_params: "7B" → 7e9; ok is false where Python's float() would fail.
func sizeLabelParams(label string) (float64, bool) {
	if label == "" {
		return 0, false
	}
	v, err := strconv.ParseFloat(label[:len(label)-1], 64)
	if err != nil || strings.ContainsAny(label[:len(label)-1], "xXnNiI_") {
		return 0, false
	}
	return v * math.Pow(1000, float64(strings.Index(" KMBT", label[len(label)-1:]))), true
}

// idToTitle is Metadata.id_to_title: dashes become spaces and all-lower-case words are title-cased, except
// version numbers and words starting with a digit.
func idToTitle(s string) string {
	words := strings.Fields(strings.ReplaceAll(strings.TrimSpace(s), "-", " "))
	for i, w := range words {
		if isLowerWord(w) && !reTitleGuard.MatchString(w) {
			words[i] = pyTitle(w)
		}
	}
	return strings.Join(words, " ")
}

// isLowerWord is Python's str.islower: some cased letter and no upper-case one.
func isLowerWord(w string) bool {
	cased := false
	for _, r := range w {
		if unicode.IsUpper(r) || unicode.IsTitle(r) {
			return false
		}
		if unicode.IsLower(r) {
			cased = true
		}
	}
	return cased
}

// pyTitle is Python's str.title: a letter after a non-letter is upper-cased, other letters lower-cased.
func pyTitle(w string) string {
	var b strings.Builder
	prevCased := false
	for _, r := range w {
		if prevCased {
			b.WriteRune(unicode.ToLower(r))
		} else {
			b.WriteRune(unicode.ToTitle(r))
		}
		prevCased = unicode.IsLetter(r)
	}
	return b.String()
}

// sizeLabel is utility.size_label for a dense model: the parameter count rounded to at least two significant
// digits with a K/M/B/T suffix ("5.2M", "135M", "7.2B").
func sizeLabel(total int64) string {
	n := float64(abs64(total))
	scaled, suffix := n*1e-3, "K"
	switch {
	case n >= 1e12:
		scaled, suffix = n*1e-12, "T"
	case n >= 1e9:
		scaled, suffix = n*1e-9, "B"
	case n >= 1e6:
		scaled, suffix = n*1e-6, "M"
	}
	// fix = max(min_digits - len(str(round(scaled)).lstrip('0')), 0), with Python's round-half-even.
	digits := len(strings.TrimLeft(strconv.FormatFloat(math.RoundToEven(scaled), 'f', 0, 64), "0"))
	fix := max(2-digits, 0)
	return fmt.Sprintf("%.*f%s", fix, scaled, suffix)
}
