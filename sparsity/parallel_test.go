package sparsity

import (
	"errors"
	"testing"
)

// TestInOrder: results arrive in the given order whatever the workers, and the first error stops the run.
func TestInOrder(t *testing.T) {
	order := []int{4, 2, 0, 1, 3, 5, 7, 6}
	var got []int
	err := inOrder(order, 3, 2, func(i int) (int, error) { return i * i, nil }, func(i, r int) error {
		if r != i*i {
			t.Errorf("result of %d is %d", i, r)
		}
		got = append(got, i)
		return nil
	})
	if err != nil || len(got) != len(order) {
		t.Fatalf("err %v, got %v", err, got)
	}
	for k := range order {
		if got[k] != order[k] {
			t.Fatalf("order %v, want %v", got, order)
		}
	}
	boom := errors.New("boom")
	used := 0
	err = inOrder(order, 2, 0, func(i int) (int, error) {
		if i == 0 {
			return 0, boom
		}
		return i, nil
	}, func(int, int) error { used++; return nil })
	if !errors.Is(err, boom) || used != 2 {
		t.Errorf("err %v after %d results; want boom after 2 (4 and 2 come before 0)", err, used)
	}
}
