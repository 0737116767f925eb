"""fastln kernel builds (those of base, avx2, avx512, avx512bf16 this CPU runs) against each other:
1 thread, interleaved in one process, medians of 15 repeats. python bench/isa_compare.py"""
import statistics
import time

import torch

import fastln
from fastln import _C


def main() -> None:
    torch.set_num_threads(1)
    isas = _C.available_isas()
    for dt in (torch.float32, torch.bfloat16):
        for M, N in [(1000, 1024), (5000, 256), (256, 16384)]:
            x, dy = torch.randn(M, N).to(dt), torch.randn(M, N).to(dt)
            w, b = torch.randn(N).to(dt), torch.randn(N).to(dt)
            leaves = [t.clone().requires_grad_() for t in (x, w, b)]
            runs = {"fwd": lambda: fastln.layer_norm(x, (N,), w, b),
                    "fwd+bwd": lambda: torch.autograd.grad(
                        fastln.layer_norm(leaves[0], (N,), leaves[1], leaves[2]), leaves, dy)}
            samples = {(i, m): [] for i in isas for m in runs}
            for _ in range(15):
                for isa in isas:
                    _C.set_isa(isa)
                    for mode, run in runs.items():
                        t0 = time.perf_counter()
                        run()
                        samples[(isa, mode)].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
            cells = [f"{m} " + " ".join(f"{i} {med[(i, m)]:.0f}us" for i in isas) +
                     f" (base/{isas[-1]} {med[('base', m)] / med[(isas[-1], m)]:.2f}x)" for m in runs]
            print(f"{str(dt)[6:]} ({M},{N}): " + "; ".join(cells), flush=True)
    _C.set_isa(isas[-1])


if __name__ == "__main__":
    main()
