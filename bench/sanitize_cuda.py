"""Small CUDA workload for compute-sanitizer (memcheck, racecheck): every kernel path once, for
every op (LayerNorm, RMSNorm with and without a weight offset, on 16-bit input with float32
weights too, the fused residual adds, with and without the offset, residual_in_fp32) and dtype.

Paths by shape: register forward with several rows per warp (256, 768) or one row per CTA
(4096), register backward with column sums in registers (256) or shared memory (4096), rows
split over a thread-block cluster on sm_90 (32768, 65536 forward and backward; 36872: slices
of unequal size; 65544: the fp32 forward's over 8 CTAs), fallback backward (float64 32768: the sums do not fit in shared memory),
scalar fallback (17, 4099: N not a multiple of the vector width; and every float64 row of odd
N). The cluster backward is persistent: 100 rows of 65536 give some clusters two rows. fp32
backward rows of 1024 and more are staged in shared memory (one CTA a row: 4096, 8192; clusters:
32768, 65536, 36872): 400 rows of 8192 give each CTA of an H100 three, so its three buffers each
take a row and the exchange's four slots are reused in the clusters of 65536. The staged forward
(cluster rows without the residual add) takes fp32 65536 in clusters of 8 CTAs, one a SM (at most
16 on an H100's 132 SMs): 100 rows give each at least 6, so its three buffers and four slots are
reused too. 16-bit backward rows of 49152 are staged too (clusters of 8; 70 rows: 30 clusters, some
with three rows). 16-bit backward rows of 20000 take the LINES kernel (bf16 and fp16, by default):
9 rows pair 0 with 2, 1 with 3, ... and leave row 8 alone.

Arguments: op names (keys of ops()) to run those alone, e.g. a new case under a short device call;
KEY=VALUE launch-plan overrides (fastln._C.cuda_plan_overrides, as the benchmark's --plans), e.g.
fwd_hoist=1: a variant's kernels under the sanitizer before a rule takes them."""
import sys

import torch
import torch.nn.functional as F

import fastln
from fastln import _C
from fastln.benchmark import plan_overrides

torch.manual_seed(0)
SHAPES = [(7, 256), (5, 768), (3, 4096), (400, 8192), (2, 32768), (100, 65536), (3, 36872), (2, 65544), (9, 17),
          (4, 4099), (70, 49152), (9, 20000)]


def ops(ns, fp32):
    """name -> (fastln call(x, r, w, b) -> outputs, float32 reference of the first output)."""
    return {
        "layer_norm": (lambda x, r, w, b: [fastln.layer_norm(x, ns, w, b)],
                       lambda x, r, w, b: F.layer_norm(x, ns, w, b)),
        "rms_norm": (lambda x, r, w, b: [fastln.rms_norm(x, ns, w, 1e-5)],
                     lambda x, r, w, b: F.rms_norm(x, ns, w, 1e-5)),
        # Gemma's weight offset: the kernels read the weight as 1 + w (PlusOne)
        "rms_norm_offset": (lambda x, r, w, b: [fastln.rms_norm(x, ns, w, 1e-5, weight_offset=1.0)],
                            lambda x, r, w, b: F.rms_norm(x, ns, 1 + w, 1e-5)),
        # 16-bit input, float32 weight kept by the model: PlusOne<float> parameters
        "rms_norm_offset_fp32_weight": (
            lambda x, r, w, b: [fastln.rms_norm(x, ns, w.float() if fp32 else w, 1e-5, weight_offset=1.0)],
            lambda x, r, w, b: F.rms_norm(x, ns, 1 + w, 1e-5)),
        # LayerNorm's offset of 1: PlusOne weight, the bias read as it is
        "layer_norm_offset": (lambda x, r, w, b: [fastln.layer_norm(x, ns, w, b, weight_offset=1.0)],
                              lambda x, r, w, b: F.layer_norm(x, ns, 1 + w, b)),
        "fused_add_layer_norm": (lambda x, r, w, b: list(fastln.fused_add_layer_norm(x, r, ns, w, b)),
                                 lambda x, r, w, b: F.layer_norm(x + r, ns, w, b)),
        "fused_add_layer_norm_offset_fp32_weight": (
            lambda x, r, w, b: list(fastln.fused_add_layer_norm(
                x, r, ns, w.float() if fp32 else w, b.float() if fp32 else b, weight_offset=1.0)),
            lambda x, r, w, b: F.layer_norm(x + r, ns, 1 + w, b)),
        # 16-bit input: residual_in_fp32 with a float32 residual
        "fused_add_rms_norm": (lambda x, r, w, b: list(fastln.fused_add_rms_norm(
                                   x, r.float() if fp32 else r, ns, w, 1e-5, residual_in_fp32=fp32)),
                               lambda x, r, w, b: F.rms_norm(x + r, ns, w, 1e-5)),
    }


names = [a for a in sys.argv[1:] if "=" not in a]
plans = plan_overrides("+".join(["fastln"] + [a for a in sys.argv[1:] if "=" in a]))
unknown = set(names) - set(ops((1,), False))
if unknown:
    sys.exit(f"sanitize_cuda.py: no op {sorted(unknown)}; choose from {sorted(ops((1,), False))}")
_C.cuda_plan_overrides(plans)  # refuses an unknown key (KeyError)
if plans:
    print(f"plan overrides: {plans}")
for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
    for m, n in SHAPES:
        x, w, b = (torch.randn(*s, device="cuda", dtype=dt) for s in ((m, n), (n,), (n,)))
        r = torch.randn(n, m, device="cuda", dtype=dt).t()  # strided residual
        dy = torch.randn(m, n, device="cuda", dtype=dt)
        for name, (ours, ref_fn) in ops((n,), dt in (torch.bfloat16, torch.float16)).items():
            if names and name not in names:
                continue
            leaves = [t.clone().requires_grad_() for t in (x, r, w, b)]
            outs = ours(*leaves)
            torch.autograd.grad(outs, leaves, [dy.to(o.dtype) for o in outs], allow_unused=True)
            ref = ref_fn(*(t.float() for t in (x, r, w, b)))
            err = ((outs[0].float() - ref).norm() / ref.norm()).item()
            assert err < 2e-2, (name, dt, m, n, err)
torch.cuda.synchronize()
print("sanitize workload ok")
