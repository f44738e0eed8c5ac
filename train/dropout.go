package train

import (
	"encoding/binary"
	"hash/fnv"
	"math"
)

// dropout is LoRA dropout (PEFT's lora_dropout, LoRAConfig.Dropout) during the training pass: the adapter's input
// is dropped, y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ, each kept value scaled by 1/(1−p) (torch.nn.Dropout's inverted
// scaling), the frozen product untouched. Every projection gets a fresh mask on every micro-batch, a function of
// (seed, step, micro-batch, layer, module) and the row, so that runs are deterministic whatever the thread count
// and a resumed run needs no extra checkpoint state.
type dropout struct {
	p           float32
	seed        uint64
	step, micro uint64
	// on is set during Step only: validation and the other forward-only passes run without dropout.
	on bool
	// buf holds one dropped input (n × the widest projection input), shared by all projections of a pass.
	buf []float32
	// masks holds, per projection site (layer·7 + module index; nil where not adapted), the keep bits of the
	// current micro-batch, each row starting a word: the forward pass draws them, the backward pass reads them
	// twice. At one bit per input value they are small beside the activations.
	masks [][]uint64
}

// key is the seed of the random streams of projection site's mask on the current micro-batch. Hashing the five
// numbers, rather than drawing from a generator shared by the run, is what lets a recomputed forward pass and a
// resumed run draw the same masks.
func (d *dropout) key(site int) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for _, v := range []uint64{d.seed, d.step, d.micro, uint64(site / len(targetNames)), uint64(site % len(targetNames))} {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	return h.Sum64()
}

// draw sets the mask of projection site for n rows of cols values. The bits are a counter-based stream:
// splitmix64's output function (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", OOPSLA
// 2014) of key + c·γ for the c-th pair of values, counted through the rows, each output giving two 32-bit draws; so
// a row's bits do not depend on how threads split the rows. A value is dropped when its draw is below p·2³², i.e.
// with probability p to within 2⁻³².
func (d *dropout) draw(site, n, cols int) {
	const gamma = 0x9e3779b97f4a7c15 // splitmix64's increment, 2⁶⁴/φ
	key, words, pairs := d.key(site), (cols+63)/64, uint64((cols+1)/2)
	threshold := uint32(min(math.Round(float64(d.p)*(1<<32)), math.MaxUint32))
	bits := d.masks[site]
	rowsParallel(n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			c := key + uint64(r)*pairs*gamma
			for w := range words {
				var word uint64
				m := min(64, cols-64*w)
				for b := 0; b < m; b += 2 {
					c += gamma
					z := (c ^ c>>30) * 0xbf58476d1ce4e5b9
					z = (z ^ z>>27) * 0x94d049bb133111eb
					z ^= z >> 31
					if uint32(z) >= threshold {
						word |= 1 << b
					}
					if uint32(z>>32) >= threshold {
						word |= 2 << b
					}
				}
				bits[r*words+w] = word &^ (^uint64(0) << m) // an odd last column's spare draw is not a value
			}
		}
	})
}

// apply sets dst = src ⊙ mask / (1−p) for n rows of cols values, with the mask last drawn for site, or with add
// adds that to dst (the backward pass's input gradient, in one pass over it). dst may be src when not adding.
func (d *dropout) apply(dst, src []float32, site, n, cols int, add bool) {
	words := (cols + 63) / 64
	factor := [2]float32{0, float32(1 / (1 - float64(d.p)))}
	bits := d.masks[site]
	rowsParallel(n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			s, t := src[r*cols:(r+1)*cols], dst[r*cols:(r+1)*cols]
			for w, word := range bits[r*words : (r+1)*words] {
				sw := s[64*w : min(64*w+64, cols)]
				tw := t[64*w : 64*w+len(sw)]
				if add {
					for k, v := range sw {
						tw[k] += v * factor[word>>k&1]
					}
				} else {
					for k, v := range sw {
						tw[k] = v * factor[word>>k&1]
					}
				}
			}
		}
	})
}

// SetDropoutStep chooses the LoRA dropout masks of the following Step calls: those of optimizer step step and
// micro-batch micro (Train sets them before every micro-batch). A LoRA without dropout ignores it.
func (l *LoRA) SetDropoutStep(step, micro int) {
	l.drop.step, l.drop.micro = uint64(step), uint64(micro)
}
