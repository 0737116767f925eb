"""The 16-bit LayerNorm backward row kernel under Nsight Compute, one shape a process: three
warm-up calls, then the profiled one (journal.md, session 19: N = 49152 runs at 79.7 % of copy
against 85-87 % at 40960, 57344 and 65536 with the same kernel family).

    ncu --clock-control none -k regex:bwd_reg_kernel --launch-skip 3 --launch-count 1 \\
        --section SpeedOfLight --section WarpStateStats ... python3 bwd16_ncu.py 2731 49152

Arguments: M N [DTYPE] [KEY=VALUE ...], the KEY=VALUE launch-plan overrides of the benchmark's
--plans (e.g. bwd_lines=0: a plan against its override in two processes; bench/device_run.sh's
ncu stage).
"""
import sys

import torch

import fastln  # noqa: F401  (registers torch.ops.fastln)
from fastln import _C
from fastln.benchmark import plan_overrides

args = [a for a in sys.argv[1:] if "=" not in a]
m, n = int(args[0]), int(args[1])
dtype = getattr(torch, args[2]) if len(args) > 2 else torch.bfloat16
_C.cuda_plan_overrides(plan_overrides("+".join(["fastln"] + [a for a in sys.argv[1:] if "=" in a])))
x = torch.randn(m, n, device="cuda", dtype=dtype)
w, b = torch.randn(n, device="cuda", dtype=dtype), torch.randn(n, device="cuda", dtype=dtype)
dy = torch.randn_like(x)
_, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5, 0.0)
for _ in range(4):
    torch.ops.fastln.layer_norm_bwd(dy, x, (n,), mean, rstd, w, b, [True, True, True], 0.0)
torch.cuda.synchronize()
