package modelfile

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/remote"
	"github.com/lathe-ml/lathe/safetensors"
)

// zstdMagic starts a zstd frame (RFC 8878 §3.1.1); compressed safetensors files cannot be read in ranges.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// openURL opens a model on a web server. Only headers are fetched now; tensor data is fetched when a view is asked
// for, one request per tensor.
func openURL(rawURL string, o remote.Options) (*Model, error) {
	if u, err := url.Parse(rawURL); err == nil && strings.HasSuffix(u.Path, ".index.json") {
		return openIndexURL(rawURL, u, o)
	}
	r, err := remote.Open(rawURL, o)
	if err != nil {
		return nil, err
	}
	magic := make([]byte, min(4, r.Size()))
	if _, err := r.ReadAt(magic, 0); err != nil {
		return nil, err
	}
	switch {
	case bytes.Equal(magic, ggufMagic):
		f, err := gguf.NewReader(r, r.Size())
		if err != nil {
			return nil, err
		}
		// gguf.Open follows a split set from its first file by name; over HTTP only that file would be read, and
		// a model missing most of its tensors must not pass for a whole one.
		if n, err := f.Metadata.Uint32(gguf.KeySplitCount); err == nil && n > 1 {
			return nil, fmt.Errorf("%s: file 1 of a %d-file split GGUF; split models can only be opened from local files (download them, or merge with gguf-split --merge)", rawURL, n)
		}
		m, err := fromGGUF(rawURL, f)
		if err != nil {
			return nil, err
		}
		m.FileBytes = r.Size()
		return m, nil
	case bytes.Equal(magic, zstdMagic):
		return nil, fmt.Errorf("%s: a zstd-compressed file cannot be read in parts; download it and give its path", rawURL)
	}
	f, err := safetensors.NewReader(r, r.Size())
	if err != nil {
		return nil, err
	}
	return fromSafetensors(rawURL, f, []*safetensors.File{f})
}

// openIndexURL opens a sharded checkpoint from the URL of its index; shard names resolve against it, as files beside
// the index.
func openIndexURL(rawURL string, u *url.URL, o remote.Options) (*Model, error) {
	index, err := remote.ReadAll(rawURL, o, safetensors.MaxHeaderSize)
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenIndexFunc(rawURL, index, func(shard string) (*safetensors.File, error) {
		r, err := remote.Open(u.ResolveReference(&url.URL{Path: shard}).String(), o)
		if err != nil {
			return nil, err
		}
		return safetensors.NewReader(r, r.Size())
	})
	if err != nil {
		return nil, err
	}
	return fromSafetensors(rawURL, set, set.Shards())
}
