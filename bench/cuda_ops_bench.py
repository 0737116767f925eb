"""RMSNorm and the fused residual adds on CUDA vs torch, with LayerNorm beside them, on a few
shapes. torch: aten's fused RMSNorm kernels, and `x + r` then the norm for the fused adds.

    python3 bench/cuda_ops_bench.py [--json out.json]

Timing and bandwidth as bench/cuda_bench.py (median, L2 flushed; bytes of x read and written
counted once per pass: forward 2, backward 3, fused add forward 4 (x, r read; y, s written)).
"""
import argparse
import json

import torch

import fastln  # noqa: F401  (registers the ops)
from cuda_bench import COPY_GBS, bench

SHAPES = [(torch.bfloat16, 131072, 1024), (torch.bfloat16, 32768, 4096), (torch.bfloat16, 8192, 16384),
          (torch.float32, 32768, 4096)]


def cases(x, r, w, b, dy):
    """name -> (fastln call, torch call, bytes moved in units of x's size)."""
    ns, ops, aten, eps = (x.shape[-1],), torch.ops.fastln, torch.ops.aten, 1e-5
    _, mean, rstd = ops.layer_norm_fwd(x, ns, w, b, eps)
    _, rms_rstd = ops.rms_norm_fwd(x, ns, w, eps)
    _, aten_rms_rstd = aten._fused_rms_norm(x, ns, w, eps)
    return {
        "layer_norm fwd": (lambda: ops.layer_norm_fwd(x, ns, w, b, eps),
                           lambda: aten.native_layer_norm(x, ns, w, b, eps), 2),
        "layer_norm bwd": (lambda: ops.layer_norm_bwd(dy, x, ns, mean, rstd, w, b, [True] * 3),
                           lambda: aten.native_layer_norm_backward(dy, x, ns, mean, rstd, w, b, [True] * 3), 3),
        "rms_norm fwd": (lambda: ops.rms_norm_fwd(x, ns, w, eps), lambda: aten._fused_rms_norm(x, ns, w, eps), 2),
        "rms_norm bwd": (lambda: ops.rms_norm_bwd(dy, x, ns, rms_rstd, w, [True, True]),
                         lambda: aten._fused_rms_norm_backward(dy, x, ns, aten_rms_rstd, w, [True, True]), 3),
        "fused_add_rms_norm fwd": (lambda: ops.add_norm_fwd(x, r, ns, w, None, eps, True, False),
                                   lambda: aten._fused_rms_norm(x + r, ns, w, eps), 4),
        "fused_add_layer_norm fwd": (lambda: ops.add_norm_fwd(x, r, ns, w, b, eps, False, False),
                                     lambda: aten.native_layer_norm(x + r, ns, w, b, eps), 4),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    print(f"{'case':26} {'dtype':9} {'shape':>14} {'fastln us':>10} {'%bw':>6} {'torch us':>10} {'speedup':>8}")
    for dt, m, n in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        x, r, dy = (torch.randn(m, n, device="cuda", dtype=dt, generator=g) for _ in range(3))
        w, b = (torch.randn(n, device="cuda", generator=g).to(dt) for _ in range(2))
        nbytes = x.numel() * x.element_size()
        for name, (ours, theirs, passes) in cases(x, r, w, b, dy).items():
            t_ours, t_theirs = bench(ours), bench(theirs)
            rec = {"case": name, "dtype": str(dt).split(".")[-1], "M": m, "N": n, "fastln_us": t_ours,
                   "torch_us": t_theirs, "fastln_pct": 100 * passes * nbytes / (t_ours * 1e-6) / 1e9 / COPY_GBS}
            rows.append(rec)
            print(f"{name:26} {rec['dtype']:9} {str((m, n)):>14} {t_ours:10.1f} {rec['fastln_pct']:6.1f} "
                  f"{t_theirs:10.1f} {t_theirs / t_ours:7.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
