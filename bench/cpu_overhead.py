"""Where a CPU call's time goes, fastln against torch, in one process: per-call overhead
(whole calls on tiny inputs) and the kernels alone (the fwd/bwd ops, no autograd).
Minimum over interleaved batches, which a busy machine only inflates (docs/cpu.md).

    python bench/cpu_overhead.py [--threads 1]
"""
import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F

import fastln


def best(fns: dict[str, Callable[[], object]], batch: int, rounds: int = 11) -> dict[str, float]:
    out = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            f()
            t = time.perf_counter()
            for _ in range(batch):
                f()
            out[k] = min(out[k], (time.perf_counter() - t) / batch)
    return out


def row(label: str, r: dict[str, float]) -> None:
    a, b = r["fastln"], r["torch"]
    print(f"{label:42s} fastln {a * 1e6:9.1f} us   torch {b * 1e6:9.1f} us   x{b / a:5.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    for M, N in [(1, 512), (100, 512)]:
        x, dy = torch.randn(M, N), torch.randn(M, N)
        w, b = torch.randn(N), torch.randn(N)
        row(f"call, inference ({M},{N})", best({"fastln": lambda: fastln.layer_norm(x, (N,), w, b),
                                                 "torch": lambda: F.layer_norm(x, (N,), w, b)}, 300))
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        row(f"call, forward + autograd.grad ({M},{N})", best({
            "fastln": lambda: torch.autograd.grad(fastln.layer_norm(leaves[0], (N,), *leaves[1:]), leaves, dy),
            "torch": lambda: torch.autograd.grad(F.layer_norm(leaves[0], (N,), *leaves[1:]), leaves, dy)}, 100))

    mask = [True, True, True]
    for dt in (torch.float32, torch.bfloat16):
        for M, N in [(1000, 1024), (5000, 256), (8192, 768), (2048, 4096), (256, 16384), (32768, 128)]:
            x, dy = torch.randn(M, N).to(dt), torch.randn(M, N).to(dt)
            w, b = torch.randn(N).to(dt), torch.randn(N).to(dt)
            _, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, [N], w, b, 1e-5)
            _, tmean, trstd = torch.ops.aten.native_layer_norm(x, [N], w, b, 1e-5)
            batch = max(2, min(100, 3_000_000 // (M * N)))
            name = f"{str(dt).split('.')[-1]} ({M},{N})"
            row(f"kernel fwd {name}", best({
                "fastln": lambda: torch.ops.fastln.layer_norm_fwd(x, [N], w, b, 1e-5),
                "torch": lambda: torch.ops.aten.native_layer_norm(x, [N], w, b, 1e-5)}, batch, 9))
            row(f"kernel bwd {name}", best({
                "fastln": lambda: torch.ops.fastln.layer_norm_bwd(dy, x, [N], mean, rstd, w, b, mask),
                "torch": lambda: torch.ops.aten.native_layer_norm_backward(dy, x, [N], tmean, trstd, w, b, mask)},
                batch, 9))


if __name__ == "__main__":
    main()
