"""Device time of each CUDA kernel in fastln's LayerNorm backward (torch.profiler).

Splits a backward call into its kernels (the row kernel and the dgamma/dbeta partial
reduction), which the end-to-end benchmark (bench/cuda_bench.py) cannot. Shapes as
DTYPE:MxN; by default M = 2^27 / N for a few N. Prints one line per shape: the mean time per
call of each kernel, and the time a backward at 85% of copy bandwidth would take.

    python3 bench/cuda_kernel_times.py bfloat16:8192x16384 float32:4096x1024

The reduction runs without programmatic dependent launch here (FASTLN_CUDA_PDL=0): launched
early, it would sit on the SMs waiting for the row kernel, and the profile would count the wait.
"""
import argparse
import os

import torch
from torch.profiler import ProfilerActivity, profile

os.environ["FASTLN_CUDA_PDL"] = "0"  # read once, at fastln's first backward
import fastln  # noqa: E402, F401  (registers torch.ops.fastln)

COPY_GBS = 2970.0
DEFAULT = [f"bfloat16:{2**27 // n}x{n}" for n in (4096, 8192, 12288, 16384, 32768, 65536)] + [
    f"float32:{2**27 // n}x{n}" for n in (8192, 65536)]


def kernel_times(dt, m, n, calls=10):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(m, n, device="cuda", dtype=dt, generator=g)
    w, b = torch.randn(n, device="cuda", dtype=dt, generator=g), torch.randn(n, device="cuda", dtype=dt, generator=g)
    dy = torch.randn(m, n, device="cuda", dtype=dt, generator=g)
    _, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5)

    def bwd():
        return torch.ops.fastln.layer_norm_bwd(dy, x, (n,), mean, rstd, w, b, [True] * 3)

    for _ in range(5):
        bwd()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            bwd()
        torch.cuda.synchronize()
    times = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            name = e.name.split("<")[0].split("::")[-1]
            times[name] = times.get(name, 0.0) + e.device_time / calls
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shapes", nargs="*", default=DEFAULT, help="DTYPE:MxN, e.g. bfloat16:8192x16384")
    for spec in ap.parse_args().shapes:
        name, mn = spec.split(":")
        m, n = map(int, mn.split("x"))
        dt = getattr(torch, name)
        t = kernel_times(dt, m, n)
        at85 = 3 * m * n * dt.itemsize / (0.85 * COPY_GBS * 1e3)  # us
        print(f"{name:9} {m:>7}x{n:<6} at 85%: {at85:7.1f} us  "
              + "  ".join(f"{k}: {v:.1f} us" for k, v in t.items()), flush=True)


if __name__ == "__main__":
    main()
