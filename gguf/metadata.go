package gguf

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ValueType is enum gguf_type, the type tag of a metadata value (ggml include/gguf.h).
type ValueType uint32

const (
	TypeUint8 ValueType = iota
	TypeInt8
	TypeUint16
	TypeInt16
	TypeUint32
	TypeInt32
	TypeFloat32
	TypeBool
	TypeString
	TypeArray
	TypeUint64
	TypeInt64
	TypeFloat64
	numValueTypes
)

var valueTypeNames = [numValueTypes]string{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
	"u64", "i64", "f64"}

func (t ValueType) String() string {
	if t < numValueTypes {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("ValueType(%d)", uint32(t))
}

// size is the encoded size of a fixed-size value, 0 for strings and arrays.
func (t ValueType) size() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// Scalar lists the Go types a GGUF value or array element can have.
type Scalar interface {
	uint8 | int8 | uint16 | int16 | uint32 | int32 | float32 | bool | string | uint64 | int64 | float64
}

// Value is one metadata value: a scalar, or an array of scalars (ggml rejects arrays of arrays). The zero Value is
// invalid; make values with ValueOf and ArrayOf.
type Value struct {
	typ  ValueType // TypeArray for arrays
	elem ValueType // element type of an array
	v    any       // the scalar, or a slice of the element type
}

func typeOf[T Scalar]() ValueType {
	var z T
	switch any(z).(type) {
	case uint8:
		return TypeUint8
	case int8:
		return TypeInt8
	case uint16:
		return TypeUint16
	case int16:
		return TypeInt16
	case uint32:
		return TypeUint32
	case int32:
		return TypeInt32
	case float32:
		return TypeFloat32
	case bool:
		return TypeBool
	case string:
		return TypeString
	case uint64:
		return TypeUint64
	case int64:
		return TypeInt64
	default:
		return TypeFloat64
	}
}

// ValueOf makes a scalar value; its GGUF type follows from the Go type (uint32 → u32, string → string, ...).
func ValueOf[T Scalar](x T) Value { return Value{typ: typeOf[T](), v: x} }

// ArrayOf makes an array value. The slice is kept, not copied.
func ArrayOf[T Scalar](xs []T) Value {
	if xs == nil {
		xs = []T{}
	}
	return Value{typ: TypeArray, elem: typeOf[T](), v: xs}
}

// Type is the value's type tag; TypeArray for arrays.
func (v Value) Type() ValueType { return v.typ }

// ElemType is the element type of an array.
func (v Value) ElemType() ValueType { return v.elem }

// IsArray reports whether v is an array.
func (v Value) IsArray() bool { return v.typ == TypeArray }

// Any returns the Go value: a scalar such as uint32 or string, or a slice such as []string for arrays.
func (v Value) Any() any { return v.v }

// Len is the number of array elements, 1 for a scalar.
func (v Value) Len() int {
	if v.typ != TypeArray {
		return 1
	}
	switch s := v.v.(type) {
	case []uint8:
		return len(s)
	case []int8:
		return len(s)
	case []uint16:
		return len(s)
	case []int16:
		return len(s)
	case []uint32:
		return len(s)
	case []int32:
		return len(s)
	case []float32:
		return len(s)
	case []bool:
		return len(s)
	case []string:
		return len(s)
	case []uint64:
		return len(s)
	case []int64:
		return len(s)
	case []float64:
		return len(s)
	}
	return 0
}

// describe names the type for error messages: "u32" or "array of string".
func (v Value) describe() string {
	if v.v == nil {
		return "invalid value"
	}
	if v.typ == TypeArray {
		return "array of " + v.elem.String()
	}
	return v.typ.String()
}

// maxShown bounds how many array elements String prints; token lists have 100k entries.
const maxShown = 8

// String formats a scalar as Go would (strings quoted), and an array by its first elements and length.
func (v Value) String() string {
	if v.v == nil {
		return "<invalid>"
	}
	if v.typ != TypeArray {
		return formatScalar(v.v)
	}
	n := v.Len()
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < n && i < maxShown; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(formatScalar(index(v.v, i)))
	}
	if n > maxShown {
		fmt.Fprintf(&b, ", ... (%d %s)", n, v.elem)
	}
	b.WriteByte(']')
	return b.String()
}

func formatScalar(x any) string {
	switch x := x.(type) {
	case string:
		return strconv.Quote(x)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(x)
}

func index(slice any, i int) any {
	switch s := slice.(type) {
	case []uint8:
		return s[i]
	case []int8:
		return s[i]
	case []uint16:
		return s[i]
	case []int16:
		return s[i]
	case []uint32:
		return s[i]
	case []int32:
		return s[i]
	case []float32:
		return s[i]
	case []bool:
		return s[i]
	case []string:
		return s[i]
	case []uint64:
		return s[i]
	case []int64:
		return s[i]
	case []float64:
		return s[i]
	}
	return nil
}

// integer widens any integer scalar; neg is set for negative values, which are then held in i.
func (v Value) integer() (u uint64, i int64, neg, ok bool) {
	switch x := v.v.(type) {
	case uint8:
		return uint64(x), int64(x), false, true
	case uint16:
		return uint64(x), int64(x), false, true
	case uint32:
		return uint64(x), int64(x), false, true
	case uint64:
		return x, int64(x), false, true
	case int8:
		return uint64(x), int64(x), x < 0, true
	case int16:
		return uint64(x), int64(x), x < 0, true
	case int32:
		return uint64(x), int64(x), x < 0, true
	case int64:
		return uint64(x), x, x < 0, true
	}
	return 0, 0, false, false
}

// KV is one metadata entry.
type KV struct {
	Key   string
	Value Value
}

// Metadata is the ordered key-value section of a GGUF file. Order is kept as read or as set, so that a file
// written back from it has its keys in the same order. The zero value is empty and ready to use.
type Metadata struct {
	kvs   []KV
	index map[string]int
}

// Len is the number of keys.
func (m *Metadata) Len() int {
	if m == nil {
		return 0
	}
	return len(m.kvs)
}

// KVs returns the entries in order. The slice is a copy; the array values in it are shared.
func (m *Metadata) KVs() []KV {
	if m == nil {
		return nil
	}
	return append([]KV(nil), m.kvs...)
}

// Get returns the value of key.
func (m *Metadata) Get(key string) (Value, bool) {
	if m == nil {
		return Value{}, false
	}
	i, ok := m.index[key]
	if !ok {
		return Value{}, false
	}
	return m.kvs[i].Value, true
}

// Set replaces the value of key in place, or appends key at the end (as gguf_set_val does).
func (m *Metadata) Set(key string, v Value) {
	if i, ok := m.index[key]; ok {
		m.kvs[i].Value = v
		return
	}
	if m.index == nil {
		m.index = make(map[string]int)
	}
	m.index[key] = len(m.kvs)
	m.kvs = append(m.kvs, KV{key, v})
}

// Delete removes key, keeping the order of the others.
func (m *Metadata) Delete(key string) {
	i, ok := m.index[key]
	if !ok {
		return
	}
	m.kvs = append(m.kvs[:i], m.kvs[i+1:]...)
	delete(m.index, key)
	for j := i; j < len(m.kvs); j++ {
		m.index[m.kvs[j].Key] = j
	}
}

// Clone copies the key list; array values are shared.
func (m *Metadata) Clone() *Metadata {
	c := &Metadata{}
	for _, kv := range m.KVs() {
		c.Set(kv.Key, kv.Value)
	}
	return c
}

// ErrKeyNotFound is matched (errors.Is) by the KeyError for a missing key.
var ErrKeyNotFound = errors.New("key not found")

// KeyError says that a key is missing or does not hold what the caller asked for.
type KeyError struct {
	Key  string
	Want string // what the accessor accepts, e.g. "integer fitting u32"
	Got  string // the value's type (and value, when out of range); empty when the key is missing
}

func (e *KeyError) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("metadata key %q not found", e.Key)
	}
	return fmt.Sprintf("metadata key %q is %s, want %s", e.Key, e.Got, e.Want)
}

// Unwrap lets errors.Is(err, ErrKeyNotFound) test for a missing key.
func (e *KeyError) Unwrap() error {
	if e.Got == "" {
		return ErrKeyNotFound
	}
	return nil
}

func (m *Metadata) lookup(key, want string) (Value, error) {
	v, ok := m.Get(key)
	if !ok {
		return Value{}, &KeyError{Key: key, Want: want}
	}
	return v, nil
}

// Uint64 reads a non-negative integer of any width. Readers should accept any integer type for counts: the GGUF
// spec says "by convention uint64" while llama.cpp's converter writes u32.
func (m *Metadata) Uint64(key string) (uint64, error) {
	return m.unsigned(key, math.MaxUint64, "non-negative integer")
}

// Uint32 reads an integer of any width whose value fits in a u32.
func (m *Metadata) Uint32(key string) (uint32, error) {
	u, err := m.unsigned(key, math.MaxUint32, "integer fitting u32")
	return uint32(u), err
}

func (m *Metadata) unsigned(key string, max uint64, want string) (uint64, error) {
	v, err := m.lookup(key, want)
	if err != nil {
		return 0, err
	}
	u, i, neg, ok := v.integer()
	if !ok {
		return 0, &KeyError{key, want, v.describe()}
	}
	if neg {
		return 0, &KeyError{key, want, fmt.Sprintf("%s %d", v.typ, i)}
	}
	if u > max {
		return 0, &KeyError{key, want, fmt.Sprintf("%s %d", v.typ, u)}
	}
	return u, nil
}

// Int reads an integer of any width whose value fits in an int64.
func (m *Metadata) Int(key string) (int64, error) {
	const want = "integer fitting i64"
	v, err := m.lookup(key, want)
	if err != nil {
		return 0, err
	}
	u, i, neg, ok := v.integer()
	if !ok {
		return 0, &KeyError{key, want, v.describe()}
	}
	if !neg && u > math.MaxInt64 {
		return 0, &KeyError{key, want, fmt.Sprintf("%s %d", v.typ, u)}
	}
	return i, nil
}

// Float64 reads an f32 or f64.
func (m *Metadata) Float64(key string) (float64, error) {
	const want = "f32 or f64"
	v, err := m.lookup(key, want)
	if err != nil {
		return 0, err
	}
	switch x := v.v.(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	return 0, &KeyError{key, want, v.describe()}
}

// Float32 reads an f32, or an f64 rounded to float32.
func (m *Metadata) Float32(key string) (float32, error) {
	f, err := m.Float64(key)
	return float32(f), err
}

// Bool reads a bool.
func (m *Metadata) Bool(key string) (bool, error) {
	v, err := m.lookup(key, "bool")
	if err != nil {
		return false, err
	}
	b, ok := v.v.(bool)
	if !ok {
		return false, &KeyError{key, "bool", v.describe()}
	}
	return b, nil
}

// String reads a string.
func (m *Metadata) String(key string) (string, error) {
	v, err := m.lookup(key, "string")
	if err != nil {
		return "", err
	}
	s, ok := v.v.(string)
	if !ok {
		return "", &KeyError{key, "string", v.describe()}
	}
	return s, nil
}

// Array reads an array of any element type.
func (m *Metadata) Array(key string) (Value, error) {
	v, err := m.lookup(key, "array")
	if err != nil {
		return Value{}, err
	}
	if v.typ != TypeArray {
		return Value{}, &KeyError{key, "array", v.describe()}
	}
	return v, nil
}

// Strings reads an array of strings, such as tokenizer.ggml.tokens.
func (m *Metadata) Strings(key string) ([]string, error) { return Values[string](m, key) }

// FileType reads general.file_type.
func (m *Metadata) FileType() (FileType, error) {
	u, err := m.Uint32(KeyFileType)
	return FileType(u), err
}

// Values reads an array whose elements have exactly the Go type T, e.g. Values[float32](md, "tokenizer.ggml.scores").
// The slice is shared with the metadata.
func Values[T Scalar](m *Metadata, key string) ([]T, error) {
	want := "array of " + typeOf[T]().String()
	v, err := m.lookup(key, want)
	if err != nil {
		return nil, err
	}
	s, ok := v.v.([]T)
	if !ok {
		return nil, &KeyError{key, want, v.describe()}
	}
	return s, nil
}

// Well-known keys (ggml docs/gguf.md; split keys from llama.cpp's gguf-split).
const (
	KeyArchitecture      = "general.architecture"
	KeyAlignment         = "general.alignment"
	KeyFileType          = "general.file_type"
	KeySplitNo           = "split.no"
	KeySplitCount        = "split.count"
	KeySplitTensorsCount = "split.tensors.count"
)
