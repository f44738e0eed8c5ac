package parallel

import (
	"errors"
	"sync/atomic"
	"testing"
)

func TestForVisitsEveryIndexOnce(t *testing.T) {
	for _, workers := range []int{0, 1, 2, 7} {
		const n = 1000
		var seen [n]atomic.Int32
		For(n, workers, func(i int) { seen[i].Add(1) })
		for i := range seen {
			if seen[i].Load() != 1 {
				t.Fatalf("workers %d: index %d visited %d times", workers, i, seen[i].Load())
			}
		}
	}
}

func TestForWorkerIndexesAreInRange(t *testing.T) {
	var bad atomic.Bool
	ForWorker(100, 3, func(w, _ int) {
		if w < 0 || w >= 3 {
			bad.Store(true)
		}
	})
	if bad.Load() {
		t.Error("worker index out of range")
	}
}

func TestForEachStopsAtTheFirstError(t *testing.T) {
	boom := errors.New("boom")
	var ran atomic.Int32
	err := ForEach(10000, 2, nil, func(_, i int) error {
		ran.Add(1)
		if i == 10 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if ran.Load() == 10000 {
		t.Error("work went on after the error")
	}
	last := 0
	if err := ForEach(50, 1, func(done, total int) { last = done }, func(_, _ int) error { return nil }); err != nil || last != 50 {
		t.Errorf("progress ended at %d, err %v", last, err)
	}
}
