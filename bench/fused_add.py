"""Fused residual add + norm vs the unfused pair (x + r, then the norm).

    python bench/fused_add.py [--rows 8192] [--hidden 1024] [--threads N]

Prints the median time of a forward (inference mode) per variant and dtype.
"""
import argparse
import time

import torch
import torch.nn.functional as F

import fastln


def median_time(fn, reps=30):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    n = (a.hidden,)
    print(f"rows={a.rows} hidden={a.hidden} threads={torch.get_num_threads()} isa={fastln._C.isa()}")
    for dtype in (torch.float32, torch.bfloat16):
        x, r = torch.randn(a.rows, a.hidden, dtype=dtype), torch.randn(a.rows, a.hidden, dtype=dtype)
        w, b = torch.randn(a.hidden, dtype=dtype), torch.randn(a.hidden, dtype=dtype)
        variants = {
            "torch: x + r, F.layer_norm": lambda: F.layer_norm(x + r, n, w, b),
            "fastln: x + r, layer_norm": lambda: fastln.layer_norm(x + r, n, w, b),
            "fastln.fused_add_layer_norm": lambda: fastln.fused_add_layer_norm(x, r, n, w, b),
            "torch: x + r, F.rms_norm": lambda: F.rms_norm(x + r, n, w),
            "fastln.fused_add_rms_norm": lambda: fastln.fused_add_rms_norm(x, r, n, w),
        }
        with torch.inference_mode():
            for name, fn in variants.items():
                print(f"  {str(dtype)[6:]:9s} {name:32s} {median_time(fn) * 1e3:8.3f} ms")


if __name__ == "__main__":
    main()
