package train

import (
	"fmt"

	"github.com/lathe-ml/lathe/tensor"
)

// KVCache holds the keys and values of the positions a sequence has seen, per layer, so that each new token
// attends to them without recomputing them.
type KVCache struct {
	k, v  [][]float32 // per layer: size rows of kvDim values
	kvDim int
	n     int
	size  int
	half  bool // values are kept rounded to F16
}

// NewKVCache makes a cache for up to size positions of the model's CacheType.
func (m *Model) NewKVCache(size int) *KVCache {
	c := m.Config
	kv := &KVCache{kvDim: c.HeadsKV * c.HeadDim, size: size, half: m.CacheType == tensor.F16}
	for range c.Layers {
		kv.k = append(kv.k, make([]float32, size*kv.kvDim))
		kv.v = append(kv.v, make([]float32, size*kv.kvDim))
	}
	return kv
}

// Len is the number of positions held.
func (c *KVCache) Len() int { return c.n }

// Size is the capacity in positions.
func (c *KVCache) Size() int { return c.size }

// Reset empties the cache for a new sequence.
func (c *KVCache) Reset() { c.n = 0 }

// SetCacheType chooses how new KV caches store keys and values: F16, llama.cpp's default and lathe's, or F32.
// llama.cpp's numbers are reproduced with F16.
func (m *Model) SetCacheType(t tensor.DType) error {
	if t != tensor.F16 && t != tensor.F32 {
		return fmt.Errorf("train: KV cache type %s is not supported (F16 or F32)", t)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.CacheType = t
	return nil
}
