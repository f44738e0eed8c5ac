# The PyTorch peer of `lathe bench` (docs/kernels.md, docs/BENCHMARKS.md, issue 9): torch.matmul on the same shapes,
# the best rate over about a second per shape, in GFLOP/s.
#
#   OPENBLAS_CORETYPE=SkylakeX LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \
#     python3 scripts/peers/torch_matmul.py THREADS
#
# A transposed operand is a transposed view (torch.randn(k, m).t()), as a model's weights are used. Debian's
# python3-torch runs the reference BLAS unless LD_LIBRARY_PATH points at OpenBLAS, and OpenBLAS 0.3.21 takes this
# VM for a Prescott unless OPENBLAS_CORETYPE says otherwise.
import sys, time, torch
threads = int(sys.argv[1])
torch.set_num_threads(threads)
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
    a = torch.randn(k, m).t() if ta else torch.randn(m, k)
    b = torch.randn(n, k).t() if tb else torch.randn(k, n)
    c = torch.empty(m, n)
    torch.matmul(a, b, out=c)
    best = 0.0
    t_end = time.time() + 1.0
    while time.time() < t_end:
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        dt = time.perf_counter() - t0
        best = max(best, 2*m*n*k/dt/1e9)
    print(f"{name:16s} {m:5d}×{n:5d}×{k:5d} {'T' if ta else 'N'}{'T' if tb else 'N'}  {best:7.1f} GFLOP/s (torch, {threads} thr)")
