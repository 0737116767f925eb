"""The (4096, 1024) forward kernels as do_bench sees them: each right after a 256 MB memset (do_bench's
L2 flush, which leaves L2 full of dirty lines), for ncu to time without touching the caches.

fastln, the best Triton shape of docs/journal/scripts/small_fwd_triton.py (float32: 4 rows a 128-thread program;
bfloat16: 2 rows a 64-thread program) and torch.compile, float32 and bfloat16. First prints each
one's host + GPU time a call (2000 back-to-back calls), then runs each 3 times after a memset inside
cudaProfilerStart/Stop. The host times mean something only without ncu (which intercepts every
call): run it once alone for them. docs/journal/cuda.md, Session 11, has what it showed.

Usage (H100): ncu --profile-from-start off --cache-control none --clock-control none \
    --kernel-name regex:"fwd_reg|ln_rows|triton_per" \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum python3 docs/journal/scripts/small_fwd_dirty_l2.py
"""
import time

import torch
import triton

import fastln  # noqa: F401
from small_fwd_triton import ln_rows

M, N = 4096, 1024


def main():
    cache = torch.empty(int(256e6 // 4), dtype=torch.int, device="cuda")
    fs = {}
    for dt, rows, nw in ((torch.float32, 4, 4), (torch.bfloat16, 2, 2)):
        x = torch.randn(M, N, device="cuda", dtype=dt)
        w = (1 + 0.1 * torch.randn(N, device="cuda")).to(dt)
        b = (0.1 * torch.randn(N, device="cuda")).to(dt)
        y = torch.empty_like(x)
        mean = torch.empty(M, device="cuda")
        rstd = torch.empty(M, device="cuda")
        cf = torch.compile(torch.nn.functional.layer_norm)
        cf(x, (N,), w, b, 1e-5)
        grid = (triton.cdiv(M, rows),)
        d = str(dt).split(".")[-1]
        fs[f"fastln {d}"] = lambda x=x, w=w, b=b: torch.ops.fastln.layer_norm_fwd(x, (N,), w, b, 1e-5)
        fs[f"triton {d}"] = lambda x=x, w=w, b=b, y=y, mean=mean, rstd=rstd, grid=grid, rows=rows, nw=nw: ln_rows[
            grid](x, y, w, b, mean, rstd, M, 1e-5, N=N, ROWS=rows, PERSIST=False, STAGES=1, num_warps=nw)
        fs[f"compile {d}"] = lambda x=x, w=w, b=b, cf=cf: cf(x, (N,), w, b, 1e-5)
    for f in fs.values():
        f()
    torch.cuda.synchronize()
    for k, f in fs.items():
        t0 = time.perf_counter()
        for _ in range(2000):
            f()
        torch.cuda.synchronize()
        print(f"host + GPU a call, {k}: {(time.perf_counter() - t0) / 2000 * 1e6:.1f} us", flush=True)
    torch.cuda.cudart().cudaProfilerStart()
    for f in fs.values():
        for _ in range(3):
            cache.zero_()
            f()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    main()
