"""A digest of the LayerNorm backward's outputs (dX, dgamma, dbeta) for fixed inputs, one line a
case, so that two builds (bench/device_run.sh's PATCHES) can be held to the same bits: run it
after each build and diff the lines (journal.md, session 33).

    python3 bwd_bits.py [M,N ...]     # default: the bwd_lines shapes, bf16 and fp16, plans -1, 0, 1
"""
import hashlib
import sys

import torch

import fastln  # noqa: F401  (registers torch.ops.fastln)
from fastln import _C
from fastln.benchmark import plan_overrides

shapes = [tuple(int(v) for v in a.split(",")) for a in sys.argv[1:]] or [
    (6711, 20000), (6700, 20032), (6721, 19968), (7281, 18432), (4096, 32768), (2048, 65536), (7, 20000), (64, 4096)]
for m, n in shapes:
    for dtype in (torch.bfloat16, torch.float16):
        gen = torch.Generator().manual_seed(m * 131 + n)
        x, dy = (torch.randn(m, n, generator=gen).to("cuda", dtype) for _ in range(2))
        w, b = ((1 + 0.1 * torch.randn(n, generator=gen)).to("cuda", dtype) for _ in range(2))
        _, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5, 0.0)
        for lines in ("-1", "0", "1"):
            _C.cuda_plan_overrides(plan_overrides(f"fastln+bwd_lines={lines}"))
            outs = torch.ops.fastln.layer_norm_bwd(dy, x, (n,), mean, rstd, w, b, [True, True, True], 0.0)
            h = hashlib.sha256()
            for o in outs:
                h.update(o.float().cpu().numpy().tobytes())
            print(f"{m}x{n} {str(dtype)[6:]} bwd_lines={lines:>2s} {h.hexdigest()[:16]}")
        _C.cuda_plan_overrides({})
