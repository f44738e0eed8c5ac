package train

import (
	"fmt"
	"math"
)

// Schedule names a learning-rate schedule of Hugging Face transformers' get_scheduler.
type Schedule string

// The schedules; the empty Schedule is Constant.
const (
	// Constant keeps the learning rate, after a linear warmup when WarmupSteps > 0 (transformers'
	// get_constant_schedule_with_warmup; without warmup it is get_constant_schedule).
	Constant Schedule = "constant"
	// Linear warms up linearly, then decays linearly to 0 (get_linear_schedule_with_warmup).
	Linear Schedule = "linear"
	// Cosine warms up linearly, then follows half a cosine down to 0 (get_cosine_schedule_with_warmup,
	// num_cycles 0.5).
	Cosine Schedule = "cosine"
)

// ParseSchedule accepts "constant", "linear" or "cosine"; "" is Constant.
func ParseSchedule(s string) (Schedule, error) {
	switch Schedule(s) {
	case "", Constant:
		return Constant, nil
	case Linear, Cosine:
		return Schedule(s), nil
	}
	return "", fmt.Errorf("train: unknown learning-rate schedule %q (want constant, linear or cosine)", s)
}

// Factor is the multiplier of the base learning rate for the optimizer step numbered step (1-based) of total
// steps with warmup warmup steps. It is transformers' lr_lambda(current_step) with current_step = step-1, because
// the Trainer calls scheduler.step() after each optimizer.step(): the first step of a warmup runs at factor 0,
// and a linear or cosine schedule reaches 0 one step after the last.
func (s Schedule) Factor(step, total, warmup int) float64 {
	cur := step - 1
	if cur < warmup {
		return float64(cur) / float64(max(1, warmup))
	}
	progress := float64(cur-warmup) / float64(max(1, total-warmup))
	switch s {
	case Linear:
		return max(0, float64(total-cur)/float64(max(1, total-warmup)))
	case Cosine:
		return max(0, 0.5*(1+math.Cos(math.Pi*progress)))
	}
	return 1
}
