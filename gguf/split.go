package gguf

import (
	"fmt"
	"math"
	"regexp"
	"strconv"

	"github.com/lathe-ml/lathe/tensor"
)

// SplitName is the path of split no (0-based, as in split.no) of count: "PREFIX-00002-of-00005.gguf"
// (llama_split_path).
func SplitName(prefix string, no, count int) string {
	return fmt.Sprintf("%s-%05d-of-%05d.gguf", prefix, no+1, count)
}

var splitNameRE = regexp.MustCompile(`^(.*)-(\d{5})-of-(\d{5})\.gguf$`)

// ParseSplitName undoes SplitName; ok is false when path does not follow the pattern.
func ParseSplitName(path string) (prefix string, no, count int, ok bool) {
	m := splitNameRE.FindStringSubmatch(path)
	if m == nil {
		return "", 0, 0, false
	}
	n, _ := strconv.Atoi(m[2])
	c, _ := strconv.Atoi(m[3])
	if n < 1 || n > c {
		return "", 0, 0, false
	}
	return m[1], n - 1, c, true
}

// SplitLimits bounds each file of a split model; a zero field is no limit. As in gguf-split, MaxBytes counts the
// padded tensor data only, not the header, and a tensor larger than MaxBytes gets a file of its own.
type SplitLimits struct {
	MaxTensors int
	MaxBytes   int64
}

// WriteSplit writes md and the tensors as a set of files PREFIX-0000i-of-0000N.gguf that llama.cpp loads as one
// model and gguf-split --merge joins: the first file holds every key of md, every file has split.no (u16),
// split.count (u16) and split.tensors.count (i32), and tensors keep their order. It returns the paths written.
func WriteSplit(prefix string, md *Metadata, tensors []tensor.View, lim SplitLimits) ([]string, error) {
	if lim.MaxTensors < 0 || lim.MaxBytes < 0 {
		return nil, fmt.Errorf("gguf: negative split limit %+v", lim)
	}
	if len(tensors) > math.MaxInt32 {
		return nil, fmt.Errorf("gguf: %d tensors do not fit split.tensors.count (i32)", len(tensors))
	}
	align, err := alignmentOf(md)
	if err != nil {
		return nil, err
	}
	groups, err := planSplits(tensors, lim, align)
	if err != nil {
		return nil, err
	}
	if len(groups) > math.MaxUint16 {
		return nil, fmt.Errorf("gguf: %d split files do not fit split.count (u16)", len(groups))
	}
	paths := make([]string, len(groups))
	for i, g := range groups {
		var smd *Metadata
		if i == 0 {
			smd = md.Clone()
		} else {
			smd = &Metadata{}
		}
		// Set replaces keys a re-split input already has in place, as gguf_set_val_u16 does.
		smd.Set(KeySplitNo, ValueOf(uint16(i)))
		smd.Set(KeySplitCount, ValueOf(uint16(len(groups))))
		smd.Set(KeySplitTensorsCount, ValueOf(int32(len(tensors))))
		if v, ok := md.Get(KeyAlignment); ok && i > 0 {
			// gguf-split leaves this key out of later files; a non-default alignment would then not read back.
			smd.Set(KeyAlignment, v)
		}
		paths[i] = SplitName(prefix, i, len(groups))
		if err := WriteFile(paths[i], smd, g); err != nil {
			return paths[:i], err
		}
	}
	return paths, nil
}

// planSplits groups tensors in order: a new file starts when the current one would pass a limit (gguf-split's
// should_split), but never while it is empty.
func planSplits(tensors []tensor.View, lim SplitLimits, align int64) ([][]tensor.View, error) {
	groups := [][]tensor.View{nil}
	var size int64
	for _, t := range tensors {
		n, err := t.Shape.Bytes(t.DType)
		if err != nil {
			return nil, fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		padded, ok := padAdd(0, n, align)
		if !ok {
			return nil, fmt.Errorf("gguf: tensor %q: size overflows", t.Name)
		}
		cur := groups[len(groups)-1]
		if len(cur) > 0 && (lim.MaxTensors > 0 && len(cur) >= lim.MaxTensors ||
			lim.MaxBytes > 0 && size+padded > lim.MaxBytes) {
			groups = append(groups, nil)
			size = 0
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], t)
		size += padded
	}
	return groups, nil
}
