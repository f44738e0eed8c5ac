// Command pairs compares lathe's Sgemm with PyTorch's torch.matmul on the shapes of `lathe bench`, in
// alternating windows of a fraction of a second: on a shared VM whose speed drifts by a third within minutes,
// only rates measured this close together can be divided. For each shape it runs -rounds pairs of windows (the
// order swapped every round), divides the two mean rates of each pair, and prints the median ratio with its
// quartiles; then the medians of the two rates, of lathe's rate over the FMA peak probed after each pair and of
// each side's mean rate over its fastest call in the window, and the two fastest calls' ratio.
//
//	go run ./scripts/peers/pairs [-threads 2] [-window 300ms] [-rounds 15] [-shapes REGEXP]
//
// The peer is scripts/peers/torch_matmul.py --serve, started with OPENBLAS_CORETYPE=SkylakeX and
// LD_LIBRARY_PATH pointing at Debian's OpenBLAS unless the environment sets them (docs/kernels.md says why).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"time"

	"github.com/lathe-ml/lathe/internal/kernels"
)

func main() {
	threads := flag.Int("threads", 2, "threads for both libraries")
	window := flag.Duration("window", 300*time.Millisecond, "length of one timing window")
	rounds := flag.Int("rounds", 15, "pairs of windows per shape")
	shapes := flag.String("shapes", "", "only the shapes whose name matches this regular expression")
	python := flag.String("python", "/usr/bin/python3", "Python with torch")
	flag.Parse()
	if err := run(*threads, *window, *rounds, *shapes, *python); err != nil {
		fmt.Fprintln(os.Stderr, "pairs:", err)
		os.Exit(1)
	}
}

func run(threads int, window time.Duration, rounds int, pattern, python string) error {
	if rounds < 1 || window <= 0 || threads < 1 {
		return fmt.Errorf("-rounds, -window and -threads must be positive")
	}
	only, err := regexp.Compile(pattern)
	if err != nil {
		return err
	}
	peer, err := startPeer(python, threads)
	if err != nil {
		return err
	}
	defer peer.close()
	kernels.SetThreads(threads)
	fmt.Printf("%d threads, %d pairs of %v windows per shape, %s\n", threads, rounds, window,
		time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("%-16s %-18s %12s %7s %12s  %-32s %s\n", "shape", "m×n×k", "lathe", "of peak", "PyTorch",
		"lathe/PyTorch median [quartiles]", "mean/fastest lathe, PyTorch; fastest/fastest")
	for _, s := range kernels.BenchShapes {
		if !only.MatchString(s.Name) {
			continue
		}
		lathe := latheCaller(s)
		var lr, pr, effs, ratios, lsteady, psteady []float64
		var lbest, pbest float64
		for r := range rounds {
			var l, p timing
			if r%2 == 0 {
				l = lathe(window)
				settle()
				if p, err = peer.run(s, window); err != nil {
					return err
				}
			} else {
				if p, err = peer.run(s, window); err != nil {
					return err
				}
				settle()
				l = lathe(window)
			}
			settle()
			if peak := kernels.FMAPeak(threads, window/3); peak > 0 {
				effs = append(effs, l.mean/peak)
			}
			settle()
			lr, pr, ratios = append(lr, l.mean), append(pr, p.mean), append(ratios, l.mean/p.mean)
			lsteady, psteady = append(lsteady, l.mean/l.fastest), append(psteady, p.mean/p.fastest)
			lbest, pbest = max(lbest, l.fastest), max(pbest, p.fastest)
		}
		q1, q2, q3 := quartiles(ratios)
		_, lm, _ := quartiles(lr)
		_, pm, _ := quartiles(pr)
		eff := "-"
		if len(effs) > 0 {
			_, e, _ := quartiles(effs)
			eff = fmt.Sprintf("%.0f %%", 100*e)
		}
		_, ls, _ := quartiles(lsteady)
		_, ps, _ := quartiles(psteady)
		fmt.Printf("%-16s %-18s %12s %7s %12s  %-32s %.2f, %.2f; %.3f\n", s.Name,
			fmt.Sprintf("%d×%d×%d %s", s.M, s.N, s.K, s.Op()),
			fmt.Sprintf("%.1f GF/s", lm), eff, fmt.Sprintf("%.1f GF/s", pm),
			fmt.Sprintf("%.3f [%.3f, %.3f]", q2, q1, q3), ls, ps, lbest/pbest)
	}
	return nil
}

// settle lets the side that just ran park its threads (OpenMP workers spin for a while after a region) before
// the other side's window starts.
func settle() { time.Sleep(50 * time.Millisecond) }

// timing is one window's mean rate and its fastest call's rate, in GFLOP/s.
type timing struct{ mean, fastest float64 }

// latheCaller returns a function that calls Sgemm on s for about the given time.
func latheCaller(s kernels.BenchShape) func(time.Duration) timing {
	call := s.Caller()
	call()
	return func(d time.Duration) timing {
		calls, fastest, t0 := 0, time.Duration(1<<62), time.Now()
		for t := t0; t.Sub(t0) < d; {
			call()
			calls++
			now := time.Now()
			fastest, t = min(fastest, now.Sub(t)), now
		}
		el := time.Since(t0).Seconds()
		return timing{gflops(s, calls, el), gflops(s, 1, fastest.Seconds())}
	}
}

func gflops(s kernels.BenchShape, calls int, seconds float64) float64 {
	return s.Flops() * float64(calls) / seconds / 1e9
}

type peer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startPeer(python string, threads int) (*peer, error) {
	_, self, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(self), "..", "torch_matmul.py")
	cmd := exec.Command(python, script, fmt.Sprint(threads), "--serve")
	cmd.Env = os.Environ()
	for k, v := range map[string]string{
		"OPENBLAS_CORETYPE": "SkylakeX",
		"LD_LIBRARY_PATH":   "/usr/lib/x86_64-linux-gnu/openblas-openmp",
	} {
		if _, set := os.LookupEnv(k); !set {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s %s: %w", python, script, err)
	}
	return &peer{cmd: cmd, in: in, out: bufio.NewScanner(out)}, nil
}

// run has the peer call s for about d.
func (p *peer) run(s kernels.BenchShape, d time.Duration) (timing, error) {
	b := func(t bool) int {
		if t {
			return 1
		}
		return 0
	}
	if _, err := fmt.Fprintf(p.in, "%d %d %d %d %d %g\n", b(s.TransA), b(s.TransB), s.M, s.N, s.K,
		d.Seconds()); err != nil {
		return timing{}, fmt.Errorf("peer: %w", err)
	}
	if !p.out.Scan() {
		return timing{}, fmt.Errorf("peer stopped answering (%v)", p.out.Err())
	}
	var calls int
	var seconds, fastest float64
	if _, err := fmt.Sscan(p.out.Text(), &calls, &seconds, &fastest); err != nil {
		return timing{}, fmt.Errorf("peer answered %q: %w", p.out.Text(), err)
	}
	return timing{gflops(s, calls, seconds), gflops(s, 1, fastest)}, nil
}

func (p *peer) close() {
	p.in.Close()
	p.cmd.Wait()
}

func quartiles(x []float64) (q1, q2, q3 float64) {
	x = slices.Sorted(slices.Values(x))
	at := func(f float64) float64 { return x[int(f*float64(len(x)-1)+0.5)] }
	return at(0.25), at(0.5), at(0.75)
}
