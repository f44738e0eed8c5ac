package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
)

// FuzzHeader feeds arbitrary files to the reader. A file is either refused with a *FormatError or accepted, and an
// accepted file must satisfy the format's invariants and survive a rewrite in both layouts.
func FuzzHeader(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Offset < 0 || fe.Offset > int64(len(data)) {
				t.Fatalf("not a FormatError within the file: %v", err)
			}
			return
		}
		next := 8 + r.HeaderSize()
		for _, info := range r.Tensors() {
			size, err := info.Shape.Bytes(info.DType)
			if info.Offset != next || err != nil || size != info.Size {
				t.Fatalf("tensor %+v: expected offset %d, size %d (%v)", info, next, size, err)
			}
			v, err := r.Tensor(info.Name)
			if err != nil || !bytes.Equal(v.Data, data[info.Offset:info.Offset+info.Size]) {
				t.Fatalf("tensor %q: %v", info.Name, err)
			}
			sec, err := r.Section(info.Name)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(sec); err != nil || !bytes.Equal(got, v.Data) {
				t.Fatalf("section %q: %v", info.Name, err)
			}
			next += info.Size
		}
		if next != int64(len(data)) {
			t.Fatalf("tensors end at %d of %d", next, len(data))
		}
		for _, opts := range [][]Option{nil, {KeepOrder()}} {
			out := rewrite(t, r, opts...)
			back, err := NewReader(bytes.NewReader(out), int64(len(out)))
			if err != nil {
				t.Fatalf("rewrite does not read back: %v", err)
			}
			sameTensors(t, "rewrite", r, back)
		}
	})
}

// fuzzSeeds are the attack files, a file with metadata and sub-byte types, and the headers (and the whole files,
// when small) of the real files in ../shared.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	for _, a := range attacks {
		seeds = append(seeds, []byte(a.file))
	}
	seeds = append(seeds, []byte(file(`{"__metadata__":{"a":"b"},"x":{"dtype":"F4","shape":[2,1],"data_offsets":[0,1]},"y":{"dtype":"BF16","shape":[],"data_offsets":[1,3]}}`, "abc")))
	shared, ok := testshared.Dir()
	if !ok {
		return seeds
	}
	golden := 0
	filepath.WalkDir(shared, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".safetensors") {
			return err
		}
		if strings.Contains(p, "golden") {
			if golden++; golden > 4 {
				return nil
			}
		}
		raw, err := os.ReadFile(p)
		if err != nil || len(raw) < 8 {
			return err
		}
		n := binary.LittleEndian.Uint64(raw)
		if n <= uint64(len(raw)-8) {
			seeds = append(seeds, raw[:8+n]) // the real header, without its data
		}
		if len(raw) <= 32<<10 {
			seeds = append(seeds, raw) // a whole small file
		}
		return nil
	})
	return seeds
}
