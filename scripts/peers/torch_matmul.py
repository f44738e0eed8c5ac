# The PyTorch peer of `lathe bench` (docs/kernels.md, docs/BENCHMARKS.md, issue 9): torch.matmul on the same shapes,
# the best rate over about a second per shape, in GFLOP/s.
#
#   OPENBLAS_CORETYPE=SkylakeX LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \
#     python3 scripts/peers/torch_matmul.py THREADS
#
# A transposed operand is a transposed view (torch.randn(k, m).t()), as a model's weights are used. Debian's
# python3-torch runs the reference BLAS unless LD_LIBRARY_PATH points at OpenBLAS, and OpenBLAS 0.3.21 takes this
# VM for a Prescott unless OPENBLAS_CORETYPE says otherwise.
#
# With --serve it is the peer half of scripts/peers/pairs (go run ./scripts/peers/pairs): it reads lines
# "TA TB M N K SECONDS" (TA, TB are 0 or 1) and answers each with "CALLS ELAPSED FASTEST" (seconds) after
# calling torch.matmul on that shape for about SECONDS, so the two libraries can be timed in alternating windows
# of a fraction of a second, closer together than this VM's speed drifts.
import sys, time, torch
threads = int(sys.argv[1])
torch.set_num_threads(threads)

def operands(ta, tb, m, n, k):
    a = torch.randn(k, m).t() if ta else torch.randn(m, k)
    b = torch.randn(n, k).t() if tb else torch.randn(k, n)
    return a, b, torch.empty(m, n)

if "--serve" in sys.argv[2:]:
    cache = {}
    for line in sys.stdin:
        ta, tb, m, n, k, seconds = line.split()
        key = (ta == "1", tb == "1", int(m), int(n), int(k))
        if key not in cache:
            cache[key] = operands(*key)
            torch.matmul(cache[key][0], cache[key][1], out=cache[key][2])
        a, b, c = cache[key]
        calls, fastest, t0 = 0, float("inf"), time.perf_counter()
        t, t_end = t0, t0 + float(seconds)
        while t < t_end:
            torch.matmul(a, b, out=c)
            calls += 1
            t, t_call = time.perf_counter(), t
            fastest = min(fastest, t - t_call)
        print(calls, t - t0, fastest, flush=True)
    sys.exit(0)

shapes = [
 ("square 256", False, False, 256, 256, 256),
 ("square 512", False, False, 512, 512, 512),
 ("square 1024", False, False, 1024, 1024, 1024),
 ("square 2048", False, False, 2048, 2048, 2048),
 ("fwd q/o  X·Wᵀ", False, True, 512, 576, 576),
 ("fwd up   X·Wᵀ", False, True, 512, 1536, 576),
 ("fwd down X·Wᵀ", False, True, 512, 576, 1536),
 ("dX up    dY·W", False, False, 512, 576, 1536),
 ("dX down  dY·W", False, False, 512, 1536, 576),
 ("dW up    dYᵀ·X", True, False, 1536, 576, 512),
 ("dW down  dYᵀ·X", True, False, 576, 1536, 512),
 ("svd panel A·V", False, False, 4096, 64, 4096),
 ("svd update", False, False, 4096, 4096, 64),
 ("svd gram Vᵀ·A", True, False, 64, 4096, 4096),
]
for name, ta, tb, m, n, k in shapes:
    a, b, c = operands(ta, tb, m, n, k)
    torch.matmul(a, b, out=c)
    best = 0.0
    t_end = time.time() + 1.0
    while time.time() < t_end:
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        dt = time.perf_counter() - t0
        best = max(best, 2*m*n*k/dt/1e9)
    print(f"{name:16s} {m:5d}×{n:5d}×{k:5d} {'T' if ta else 'N'}{'T' if tb else 'N'}  {best:7.1f} GFLOP/s (torch, {threads} thr)")
