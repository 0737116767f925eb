"""Per-call cost of fastln.functional's routing, eager and small: fastln.layer_norm / rms_norm
against the same _C entry called bare, against the previous fastln.layer_norm (Python checks,
then try/except around the entry, rebuilt here over today's entry) and F.layer_norm,
interleaved in one process; minima of batches.

    python bench/call_overhead.py [--rows 1] [--cols 64] [--calls 2000] [--rounds 30]
"""
import argparse
import time

import torch
import torch.nn.functional as F

import fastln
from fastln import _C
from fastln.functional import _has_torch_function, _is_compiling


def _old_eager(entry, args, tensors):  # fastln.functional._eager before 2026-12-06
    if _is_compiling() or _has_torch_function(tensors):
        return None
    try:
        return entry(*args)
    except (TypeError, RuntimeError, ValueError, NotImplementedError):
        return None


def old_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, memory_efficient=False):
    """fastln.layer_norm's eager path before 2026-12-06 (the entry then raised on bad types)."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    out = _old_eager(_C.layer_norm, (input, normalized_shape, weight, bias, eps, memory_efficient, 0.0),
                     (input, weight, bias))
    if out is not None:
        return out
    raise AssertionError("not reached in this benchmark")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--cols", type=int, default=64)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(1)
    x, w, b = torch.randn(a.rows, a.cols), torch.randn(a.cols), torch.randn(a.cols)
    n = (a.cols,)
    cases = {
        "_C entry, bare": lambda: _C.layer_norm(x, n, w, b, 1e-5, False, 0.0),
        "previous fastln.layer_norm": lambda: old_layer_norm(x, n, w, b),
        "fastln.layer_norm": lambda: fastln.layer_norm(x, n, w, b),
        "fastln.rms_norm": lambda: fastln.rms_norm(x, n, w),
        "F.layer_norm": lambda: F.layer_norm(x, n, w, b),
    }
    best = {k: float("inf") for k in cases}
    with torch.inference_mode():
        for _ in range(a.rounds):
            for k, f in cases.items():
                t0 = time.perf_counter()
                for _ in range(a.calls):
                    f()
                best[k] = min(best[k], (time.perf_counter() - t0) / a.calls)
    print(f"({a.rows}, {a.cols}) float32, inference, 1 thread, min over {a.rounds} batches of {a.calls} calls")
    for k, t in best.items():
        print(f"  {k:24s} {t * 1e6:7.3f} us")


if __name__ == "__main__":
    main()
