package convert

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// Packed per-group datatypes (BitMoD, issue 5) in safetensors: lathe's own layout, specified in docs/bitmod.md.
// Every quantized weight W of shape [rows, cols] becomes
//
//	W.bitmod_codes   U8  [rows, cols·code_bits/8]  codes, LSB-first bit stream per row
//	W.bitmod_scales  F16 [rows, cols/group]         one scale per group (with id_in_scale, its low bits are the id)
//	W.bitmod_types   U8  [rows, ⌈cols/group·id_bits/8⌉]  type ids, LSB-first per row (absent with id_in_scale or one type)
//
// and __metadata__ names the layout version, group size, code width and the candidate datatypes with their values,
// so that the file decodes without a table compiled into the reader. Other tensors are copied unchanged.

// Metadata keys of the packed layout.
const (
	BitMoDVersionKey   = "lathe.bitmod.version"
	bitmodGroupKey     = "lathe.bitmod.group"
	bitmodCodeBitsKey  = "lathe.bitmod.code_bits"
	bitmodIDInScaleKey = "lathe.bitmod.id_in_scale"
	bitmodTypesKey     = "lathe.bitmod.types"
	bitmodSearchKey    = "lathe.bitmod.scale_search"
	bitmodVersion      = "1"
)

// Suffixes of the tensors a packed weight is stored as.
const (
	bitmodCodes  = ".bitmod_codes"
	bitmodScales = ".bitmod_scales"
	bitmodTypes  = ".bitmod_types"
)

// maxBitMoDElements bounds a decoded weight, so that a header cannot make the decoder allocate without limit: the
// codes tensor, whose bytes the file holds, must be at least 1/8 of the element count anyway.
const maxBitMoDElements = 1 << 34

// ParseBitMoDType returns the candidate set a quantize --type name stands for: bitmod4 and bitmod3 are the paper's
// sets with signed scales (the same values, one id bit less), bitmod4-paper and bitmod3-paper its four-type sets
// as published, bitmod4nl adds the IQ4_NL codebook and INT4.
func ParseBitMoDType(name string) ([]quant.Datatype, bool) {
	switch strings.ToLower(name) {
	case "bitmod4":
		return quant.BitMoD4S, true
	case "bitmod3":
		return quant.BitMoD3S, true
	case "bitmod4nl":
		return quant.BitMoD4NL, true
	case "bitmod4-paper":
		return quant.BitMoD4, true
	case "bitmod3-paper":
		return quant.BitMoD3, true
	}
	return nil, false
}

// BitMoDOptions configures WriteBitMoD.
type BitMoDOptions struct {
	Types []quant.Datatype
	// Group, ScaleSearch and IDInScale are quant.GroupOptions'.
	Group       int
	ScaleSearch int
	IDInScale   bool
	// Imatrix, if set, weights the error that selects each group's type.
	Imatrix *Imatrix
	// FakeQuant, if F32, F16 or BF16, writes the dequantized values in that type, loadable by any tool, instead of
	// packed storage.
	FakeQuant tensor.DType
	Progress  func(done, total int)
}

// BitMoDTensor reports one quantized tensor.
type BitMoDTensor struct {
	Name  string       `json:"name"`
	Shape tensor.Shape `json:"shape"`
	// Error is Σ (x − dequant)², weighted by the importance matrix when there is one.
	Error float64 `json:"error"`
	// TypeCounts is how many groups chose each candidate type, in the order of the set.
	TypeCounts []int `json:"type_counts"`
}

// BitMoDReport describes what WriteBitMoD wrote.
type BitMoDReport struct {
	Types     []string       `json:"types"`
	Group     int            `json:"group"`
	BPW       float64        `json:"bpw"` // of the quantized tensors: codes, scales and type ids
	Weighted  bool           `json:"weighted"`
	Tensors   []BitMoDTensor `json:"tensors"`
	Error     float64        `json:"error"`
	Elements  int64          `json:"elements"` // of the quantized tensors
	Unchanged []string       `json:"unchanged"`
}

// bitmodQuantizable says whether a tensor gets per-group types: 2-D float weights whose rows are whole groups,
// except the token embedding and the output projection, which BitMoD leaves in high precision (§7.1: it quantizes
// the linear layers of the blocks). Names may be Hugging Face's or GGUF's.
func bitmodQuantizable(name string, shape tensor.Shape, dt tensor.DType, group int) bool {
	if len(shape) != 2 || !dt.IsFloat() || shape[1]%int64(group) != 0 || !strings.HasSuffix(name, ".weight") {
		return false
	}
	if name == "output.weight" || name == "token_embd.weight" {
		return false
	}
	for _, s := range []string{"embed_tokens.", "lm_head.", "embed_out."} {
		if strings.Contains(name, s) {
			return false
		}
	}
	return true
}

// BitMoDCandidate is a per-group datatype configuration offered to a budgeted plan (BudgetOptions.BitMoD).
type BitMoDCandidate struct {
	Name        string
	Types       []quant.Datatype
	Group       int
	ScaleSearch int
	IDInScale   bool
}

func (c BitMoDCandidate) layout() bitmodLayout {
	return newBitmodLayout(c.Types, c.Group, c.IDInScale)
}

func newBitmodLayout(types []quant.Datatype, group int, idInScale bool) bitmodLayout {
	if group == 0 {
		group = quant.BitMoDGroup
	}
	return bitmodLayout{types: types, group: group, codeBits: quant.CodeBits(types), idBits: quant.TypeIDBits(types),
		idInScale: idInScale}
}

// bytes is the packed size of a [rows, cols] weight: its codes, fp16 scales and type ids.
func (l bitmodLayout) bytes(rows, cols int64) int64 {
	codes, scales, types := l.parts(rows, cols)
	n := codes[0]*codes[1] + 2*scales[0]*scales[1]
	if types != nil {
		n += types[0] * types[1]
	}
	return n
}

// bitmodLayout is the decoded __metadata__ of a packed file.
type bitmodLayout struct {
	types     []quant.Datatype
	group     int
	codeBits  int
	idBits    int
	idInScale bool
}

type bitmodTypeJSON struct {
	Name   string    `json:"name"`
	Values []float32 `json:"values"`
}

func (l bitmodLayout) metadata(search int) map[string]string {
	ts := make([]bitmodTypeJSON, len(l.types))
	for i, t := range l.types {
		ts[i] = bitmodTypeJSON{t.Name, t.Values}
	}
	js, _ := json.Marshal(ts) // names and finite float32s always marshal
	return map[string]string{
		BitMoDVersionKey: bitmodVersion, bitmodGroupKey: strconv.Itoa(l.group), bitmodCodeBitsKey: strconv.Itoa(l.codeBits),
		bitmodIDInScaleKey: strconv.FormatBool(l.idInScale), bitmodTypesKey: string(js), bitmodSearchKey: strconv.Itoa(search),
	}
}

// parts are the shapes of the tensors a [rows, cols] weight is stored as.
func (l bitmodLayout) parts(rows, cols int64) (codes, scales, types tensor.Shape) {
	perRow := cols / int64(l.group)
	codes, scales = tensor.Shape{rows, cols * int64(l.codeBits) / 8}, tensor.Shape{rows, perRow}
	if !l.idInScale && l.idBits > 0 {
		types = tensor.Shape{rows, (perRow*int64(l.idBits) + 7) / 8}
	}
	return
}

// WriteBitMoD quantizes in with per-group datatypes and writes safetensors to w: the packed layout, or with
// FakeQuant the dequantized values. Tensors are quantized one at a time (rows in parallel), so memory holds one
// tensor and its codes.
func WriteBitMoD(w io.Writer, in safetensors.Set, opts BitMoDOptions) (*BitMoDReport, error) {
	l := newBitmodLayout(opts.Types, opts.Group, opts.IDInScale)
	group := l.group
	switch opts.FakeQuant {
	case tensor.Invalid, tensor.F32, tensor.F16, tensor.BF16:
	default:
		return nil, fmt.Errorf("bitmod: fake-quant type %s; want f32, f16 or bf16", opts.FakeQuant)
	}
	if len(l.types) == 0 {
		return nil, errors.New("bitmod: no candidate datatypes")
	}
	if group*l.codeBits%8 != 0 {
		return nil, fmt.Errorf("bitmod: groups of %d %d-bit codes are not whole bytes", group, l.codeBits)
	}
	if _, ok := in.Metadata()[BitMoDVersionKey]; ok {
		return nil, errors.New("bitmod: the input is already packed; decode it first")
	}
	metadata := in.Metadata()
	if metadata == nil {
		metadata = map[string]string{}
	}
	packed := opts.FakeQuant == tensor.Invalid
	if packed {
		maps.Copy(metadata, l.metadata(opts.ScaleSearch))
	}
	metadata["format"] = "pt"
	r := &BitMoDReport{Group: group, BPW: quant.GroupBPW(l.types, group, l.idInScale), Weighted: opts.Imatrix != nil}
	for _, t := range l.types {
		r.Types = append(r.Types, t.Name)
	}
	var decls []safetensors.TensorInfo
	infos := in.Tensors()
	for _, t := range infos {
		switch {
		case !bitmodQuantizable(t.Name, t.Shape, t.DType, group):
			decls = append(decls, safetensors.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape})
			r.Unchanged = append(r.Unchanged, t.Name)
		case !packed:
			decls = append(decls, safetensors.TensorInfo{Name: t.Name, DType: opts.FakeQuant, Shape: t.Shape})
		default:
			codes, scales, types := l.parts(t.Shape[0], t.Shape[1])
			decls = append(decls, safetensors.TensorInfo{Name: t.Name + bitmodCodes, DType: tensor.U8, Shape: codes},
				safetensors.TensorInfo{Name: t.Name + bitmodScales, DType: tensor.F16, Shape: scales})
			if types != nil {
				decls = append(decls, safetensors.TensorInfo{Name: t.Name + bitmodTypes, DType: tensor.U8, Shape: types})
			}
		}
	}
	sw, err := safetensors.NewWriter(w, decls, metadata, safetensors.KeepOrder())
	if err != nil {
		return nil, fmt.Errorf("bitmod: %w", err)
	}
	for i, t := range infos {
		if opts.Progress != nil {
			opts.Progress(i, len(infos))
		}
		v, err := in.Tensor(t.Name)
		if err != nil {
			return nil, err
		}
		if !bitmodQuantizable(t.Name, t.Shape, t.DType, group) {
			if err := sw.WriteTensor(t.Name, v.Data); err != nil {
				return nil, err
			}
			continue
		}
		n, err := t.Shape.Elements()
		if err != nil {
			return nil, fmt.Errorf("bitmod: tensor %q: %w", t.Name, err)
		}
		x := make([]float32, n)
		if err := tensor.ToFloat32(x, v.Data, t.DType); err != nil {
			return nil, fmt.Errorf("bitmod: tensor %q: %w", t.Name, err)
		}
		cols := int(t.Shape[1])
		var imp []float32
		if opts.Imatrix != nil {
			imp, _ = opts.Imatrix.Lookup(t.Name)
			if imp != nil && len(imp) != cols {
				return nil, fmt.Errorf("bitmod: tensor %q: importance matrix has %d columns, the tensor %d", t.Name, len(imp), cols)
			}
		}
		g, err := quant.QuantizeGroups(x, cols, l.types, quant.GroupOptions{Group: group, Importance: imp,
			ScaleSearch: opts.ScaleSearch, IDInScale: l.idInScale})
		if err != nil {
			return nil, fmt.Errorf("bitmod: tensor %q: %w", t.Name, err)
		}
		y := make([]float32, len(x))
		if err := g.Dequantize(y); err != nil {
			return nil, fmt.Errorf("bitmod: tensor %q: %w", t.Name, err)
		}
		bt := BitMoDTensor{Name: t.Name, Shape: t.Shape, Error: weightedSSE(x, y, imp), TypeCounts: make([]int, len(l.types))}
		for _, id := range g.TypeIDs {
			bt.TypeCounts[id]++
		}
		r.Tensors = append(r.Tensors, bt)
		r.Error += bt.Error
		r.Elements += int64(len(x))
		if !packed {
			size, err := t.Shape.Bytes(opts.FakeQuant)
			if err != nil {
				return nil, fmt.Errorf("bitmod: tensor %q: %w", t.Name, err)
			}
			out := make([]byte, size)
			if err := tensor.FromFloat32(out, y, opts.FakeQuant); err != nil {
				return nil, fmt.Errorf("bitmod: tensor %q: %w", t.Name, err)
			}
			if err := sw.WriteTensor(t.Name, out); err != nil {
				return nil, err
			}
			continue
		}
		if err := l.writePacked(sw, t.Name, g); err != nil {
			return nil, err
		}
	}
	if opts.Progress != nil {
		opts.Progress(len(infos), len(infos))
	}
	return r, sw.Close()
}

// writePacked writes the parts of one weight in the order WriteBitMoD declared them.
func (l bitmodLayout) writePacked(sw *safetensors.Writer, name string, g *quant.Groups) error {
	rows := len(g.Codes) / g.NPerRow
	perRow := g.NPerRow / g.Group
	codes := make([]byte, len(g.Codes)*l.codeBits/8)
	rowBytes := g.NPerRow * l.codeBits / 8
	for r := range rows {
		packBits(codes[r*rowBytes:(r+1)*rowBytes], g.Codes[r*g.NPerRow:(r+1)*g.NPerRow], l.codeBits)
	}
	scales := make([]byte, 2*len(g.Scales))
	for i, s := range g.Scales {
		binary.LittleEndian.PutUint16(scales[2*i:], s)
	}
	if err := sw.WriteTensor(name+bitmodCodes, codes); err != nil {
		return err
	}
	if err := sw.WriteTensor(name+bitmodScales, scales); err != nil {
		return err
	}
	if l.idInScale || l.idBits == 0 {
		return nil
	}
	idRow := (perRow*l.idBits + 7) / 8
	ids := make([]byte, rows*idRow)
	for r := range rows {
		packBits(ids[r*idRow:(r+1)*idRow], g.TypeIDs[r*perRow:(r+1)*perRow], l.idBits)
	}
	return sw.WriteTensor(name+bitmodTypes, ids)
}

// packBits writes each value's low n bits to dst as one little-endian bit stream.
func packBits(dst []byte, vals []uint8, n int) {
	clear(dst)
	for i, v := range vals {
		for b := range n {
			if v>>b&1 != 0 {
				bit := i*n + b
				dst[bit/8] |= 1 << (bit % 8)
			}
		}
	}
}

// unpackBits is packBits reversed.
func unpackBits(dst []uint8, src []byte, n int) {
	for i := range dst {
		var v uint8
		for b := range n {
			bit := i*n + b
			v |= (src[bit/8] >> (bit % 8) & 1) << b
		}
		dst[i] = v
	}
}

// IsBitMoD says whether a safetensors set holds packed per-group datatypes.
func IsBitMoD(set safetensors.Set) bool {
	_, ok := set.Metadata()[BitMoDVersionKey]
	return ok
}

// parseBitMoDLayout reads and checks the layout keys of __metadata__.
func parseBitMoDLayout(md map[string]string) (bitmodLayout, error) {
	var l bitmodLayout
	if v := md[BitMoDVersionKey]; v != bitmodVersion {
		return l, fmt.Errorf("__metadata__ %s = %q; this lathe reads version %s", BitMoDVersionKey, v, bitmodVersion)
	}
	for _, k := range []struct {
		key    string
		dst    *int
		lo, hi int
	}{{bitmodGroupKey, &l.group, 1, 1 << 20}, {bitmodCodeBitsKey, &l.codeBits, 1, 8}} {
		v, err := strconv.Atoi(md[k.key])
		if err != nil || v < k.lo || v > k.hi {
			return l, fmt.Errorf("__metadata__ %s = %q; want an integer in [%d, %d]", k.key, md[k.key], k.lo, k.hi)
		}
		*k.dst = v
	}
	if l.group*l.codeBits%8 != 0 {
		return l, fmt.Errorf("__metadata__: groups of %d %d-bit codes are not whole bytes", l.group, l.codeBits)
	}
	var err error
	if l.idInScale, err = strconv.ParseBool(md[bitmodIDInScaleKey]); err != nil {
		return l, fmt.Errorf("__metadata__ %s = %q; want true or false", bitmodIDInScaleKey, md[bitmodIDInScaleKey])
	}
	var ts []bitmodTypeJSON
	if err := json.Unmarshal([]byte(md[bitmodTypesKey]), &ts); err != nil {
		return l, fmt.Errorf("__metadata__ %s: want a JSON list of {\"name\", \"values\"}: %w", bitmodTypesKey, err)
	}
	for _, t := range ts {
		l.types = append(l.types, quant.Datatype{Name: t.Name, Values: t.Values})
	}
	if err := quant.ValidateGroupLayout(l.group, l.group, l.group, l.types); err != nil {
		return l, fmt.Errorf("__metadata__ %s: %w", bitmodTypesKey, err)
	}
	if b := quant.CodeBits(l.types); b > l.codeBits {
		return l, fmt.Errorf("__metadata__ %s: datatypes need %d-bit codes, %s = %d", bitmodTypesKey, b, bitmodCodeBitsKey, l.codeBits)
	}
	l.idBits = quant.TypeIDBits(l.types)
	if l.idInScale && l.idBits > 4 {
		return l, fmt.Errorf("__metadata__: %d type id bits do not fit in a scale", l.idBits)
	}
	return l, nil
}

// DecodeBitMoD returns a packed set decoded: every packed weight as an F32 tensor of its own name, bit for bit the
// values fake quantization gives, and every other tensor as it is, all held in memory; the __metadata__ loses the
// layout keys. It returns nil for a set that is not packed. Errors name the tensor and what was expected.
func DecodeBitMoD(set safetensors.Set) (*safetensors.Model, error) {
	md := set.Metadata()
	if _, ok := md[BitMoDVersionKey]; !ok {
		return nil, nil
	}
	l, err := parseBitMoDLayout(md)
	if err != nil {
		return nil, fmt.Errorf("bitmod: %w", err)
	}
	infos := set.Tensors()
	byName := map[string]safetensors.TensorInfo{}
	for _, t := range infos {
		byName[t.Name] = t
	}
	var decls []safetensors.TensorInfo
	used := map[string]bool{}
	for _, t := range infos {
		base, ok := strings.CutSuffix(t.Name, bitmodCodes)
		switch {
		case ok:
			if _, clash := byName[base]; clash {
				return nil, fmt.Errorf("bitmod: tensor %q is stored both packed and plain", base)
			}
			shape, err := l.weightShape(base, byName)
			if err != nil {
				return nil, fmt.Errorf("bitmod: %w", err)
			}
			decls = append(decls, safetensors.TensorInfo{Name: base, DType: tensor.F32, Shape: shape})
			used[base+bitmodScales], used[base+bitmodTypes] = true, true
		case strings.HasSuffix(t.Name, bitmodScales) || strings.HasSuffix(t.Name, bitmodTypes):
		default:
			decls = append(decls, safetensors.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape})
		}
	}
	for _, t := range infos {
		if (strings.HasSuffix(t.Name, bitmodScales) || strings.HasSuffix(t.Name, bitmodTypes)) && !used[t.Name] {
			return nil, fmt.Errorf("bitmod: tensor %q has no %s beside it", t.Name, bitmodCodes)
		}
	}
	for k := range md {
		if strings.HasPrefix(k, "lathe.bitmod.") {
			delete(md, k)
		}
	}
	var buf bytes.Buffer
	sw, err := safetensors.NewWriter(&buf, decls, md, safetensors.KeepOrder())
	if err != nil {
		return nil, fmt.Errorf("bitmod: %w", err)
	}
	for _, d := range decls {
		if _, packed := byName[d.Name+bitmodCodes]; !packed {
			v, err := set.Tensor(d.Name)
			if err != nil {
				return nil, err
			}
			if err := sw.WriteTensor(d.Name, v.Data); err != nil {
				return nil, err
			}
			continue
		}
		y, err := l.decode(set, d.Name, d.Shape)
		if err != nil {
			return nil, fmt.Errorf("bitmod: tensor %q: %w", d.Name, err)
		}
		out := make([]byte, 4*len(y))
		for i, v := range y {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		if err := sw.WriteTensor(d.Name, out); err != nil {
			return nil, err
		}
	}
	if err := sw.Close(); err != nil {
		return nil, err
	}
	const name = "bitmod-decoded.safetensors"
	f, err := safetensors.NewReader(namedReader{bytes.NewReader(buf.Bytes()), name}, int64(buf.Len()))
	if err != nil {
		return nil, fmt.Errorf("bitmod: decoded set: %w", err)
	}
	index, _ := json.Marshal(map[string]any{"weight_map": weightMap(decls, name)})
	return safetensors.OpenIndexFunc(name, index, func(string) (*safetensors.File, error) { return f, nil })
}

// namedReader names the in-memory decoded file, as the index of a one-shard set must.
type namedReader struct {
	*bytes.Reader
	name string
}

func (r namedReader) Name() string { return r.name }

func weightMap(decls []safetensors.TensorInfo, shard string) map[string]string {
	m := make(map[string]string, len(decls))
	for _, d := range decls {
		m[d.Name] = shard
	}
	return m
}

// weightShape checks the parts of a packed weight against each other and returns the weight's shape.
func (l bitmodLayout) weightShape(base string, byName map[string]safetensors.TensorInfo) (tensor.Shape, error) {
	codes, scales := byName[base+bitmodCodes], byName[base+bitmodScales]
	if codes.DType != tensor.U8 || len(codes.Shape) != 2 {
		return nil, fmt.Errorf("tensor %q is %s %v; want U8 of 2 dimensions", codes.Name, codes.DType, codes.Shape)
	}
	if scales.Name == "" {
		return nil, fmt.Errorf("tensor %q has no %s beside it", codes.Name, base+bitmodScales)
	}
	rows, groups := codes.Shape[0], scales.Shape
	if scales.DType != tensor.F16 || len(groups) != 2 || groups[0] != rows {
		return nil, fmt.Errorf("tensor %q is %s %v; want F16 [%d, groups]", scales.Name, scales.DType, groups, rows)
	}
	cols := groups[1] * int64(l.group)
	if groups[1] > maxBitMoDElements/int64(l.group) || cols <= 0 || rows > maxBitMoDElements/cols {
		return nil, fmt.Errorf("tensor %q: %v groups of %d are more elements than lathe decodes (%d)",
			scales.Name, groups, l.group, int64(maxBitMoDElements))
	}
	wantCodes, _, wantTypes := l.parts(rows, cols)
	if !codes.Shape.Equal(wantCodes) {
		return nil, fmt.Errorf("tensor %q has shape %v; %d rows of %d %d-bit codes need %v",
			codes.Name, codes.Shape, rows, cols, l.codeBits, wantCodes)
	}
	types, ok := byName[base+bitmodTypes]
	switch {
	case wantTypes == nil && ok:
		return nil, fmt.Errorf("tensor %q is present, but type ids are %s", types.Name, map[bool]string{true: "in the scales", false: "not needed: one type"}[l.idInScale])
	case wantTypes != nil && !ok:
		return nil, fmt.Errorf("tensor %q has no %s beside it", codes.Name, base+bitmodTypes)
	case wantTypes != nil && (types.DType != tensor.U8 || !types.Shape.Equal(wantTypes)):
		return nil, fmt.Errorf("tensor %q is %s %v; want U8 %v", types.Name, types.DType, types.Shape, wantTypes)
	}
	return tensor.Shape{rows, cols}, nil
}

// decode unpacks one weight into float32 values.
func (l bitmodLayout) decode(set safetensors.Set, base string, shape tensor.Shape) ([]float32, error) {
	rows, cols := int(shape[0]), int(shape[1])
	perRow := cols / l.group
	g := &quant.Groups{Types: l.types, Group: l.group, NPerRow: cols, IDInScale: l.idInScale,
		Codes: make([]uint8, rows*cols), TypeIDs: make([]uint8, rows*perRow), Scales: make([]uint16, rows*perRow)}
	codes, err := set.Tensor(base + bitmodCodes)
	if err != nil {
		return nil, err
	}
	rowBytes := cols * l.codeBits / 8
	for r := range rows {
		unpackBits(g.Codes[r*cols:(r+1)*cols], codes.Data[r*rowBytes:(r+1)*rowBytes], l.codeBits)
	}
	scales, err := set.Tensor(base + bitmodScales)
	if err != nil {
		return nil, err
	}
	for i := range g.Scales {
		g.Scales[i] = binary.LittleEndian.Uint16(scales.Data[2*i:])
	}
	switch {
	case l.idInScale:
		mask := uint16(1)<<l.idBits - 1
		for i, s := range g.Scales {
			g.TypeIDs[i] = uint8(s & mask)
		}
	case l.idBits > 0:
		ids, err := set.Tensor(base + bitmodTypes)
		if err != nil {
			return nil, err
		}
		idRow := (perRow*l.idBits + 7) / 8
		for r := range rows {
			unpackBits(g.TypeIDs[r*perRow:(r+1)*perRow], ids.Data[r*idRow:(r+1)*idRow], l.idBits)
		}
	}
	y := make([]float32, rows*cols)
	return y, g.Dequantize(y)
}

// WriteBitMoDDir writes a Hugging Face model directory at out: the weights of m through WriteBitMoD as
// model.safetensors, and every other regular file of m.Dir (config, tokenizer) copied, so that the result opens
// wherever m does. Each file is written atomically.
func WriteBitMoDDir(out string, m *HFModel, opts BitMoDOptions) (*BitMoDReport, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(m.Dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.Contains(name, ".safetensors") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(m.Dir, name))
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(filepath.Join(out, name), data); err != nil {
			return nil, err
		}
	}
	f, err := atomicfile.Create(filepath.Join(out, "model.safetensors"))
	if err != nil {
		return nil, err
	}
	defer f.Abort()
	bw := bufio.NewWriterSize(f, 1<<20)
	r, err := WriteBitMoD(bw, m.Weights, opts)
	if err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return r, f.Commit()
}

// decodedIfBitMoD returns w decoded when it holds packed per-group datatypes, closing w, and w itself otherwise:
// OpenHF calls it so that every reader of a Hugging Face directory (the runtime, conversion to GGUF, quantization)
// sees the F32 weights a packed checkpoint stands for.
func decodedIfBitMoD(w *safetensors.Model) (*safetensors.Model, error) {
	dec, err := DecodeBitMoD(w)
	if dec == nil && err == nil {
		return w, nil
	}
	w.Close()
	return dec, err
}

// BitMoDParts are the names of the tensors a packed weight is stored as; types is absent when ids are in the
// scales or there is one type.
func BitMoDParts(name string) (codes, scales, types string) {
	return name + bitmodCodes, name + bitmodScales, name + bitmodTypes
}
