package train

import "fmt"

// StepConfined is Step over windows that pack several samples, with attention confined to each sample:
// positions[b][t] is the rotary position of windows[b][t] (Stream.ConfinedWindows gives them), 0 at a sample's first
// token and one more than its predecessor's otherwise, and a token attends only to the earlier tokens of its own
// sample. Each sample's loss and gradient are then those of the sample in a window of its own; scored should leave
// out the predictions of samples' first tokens, which would be made from the previous sample. Positions counting
// 0, 1, … through a whole window give Step's result exactly.
func (l *LoRA) StepConfined(windows [][]int32, scored [][]bool, positions [][]int32) (float64, error) {
	B, T, err := l.check(windows)
	if err != nil {
		return 0, err
	}
	if len(positions) != B {
		return 0, fmt.Errorf("train: %d position lists for %d windows", len(positions), B)
	}
	pos := make([]int32, B*T)
	for b, p := range positions {
		if len(p) < T {
			return 0, fmt.Errorf("train: window %d has %d positions for %d tokens", b, len(p), T)
		}
		for t, v := range p[:T] {
			if v != 0 && (t == 0 || v != p[t-1]+1) {
				return 0, fmt.Errorf("train: window %d: position %d at token %d: expected 0 (a sample's start) or "+
					"one more than the previous token's", b, v, t)
			}
		}
		copy(pos[b*T:], p[:T])
	}
	l.pos = pos
	defer func() { l.pos = nil }()
	return l.Step(windows, scored)
}
