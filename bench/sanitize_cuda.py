"""Small CUDA workload for compute-sanitizer (memcheck, racecheck): every kernel path once, for
every op (LayerNorm, RMSNorm, the fused residual adds, residual_in_fp32) and dtype."""
import torch
import torch.nn.functional as F

import fastln

torch.manual_seed(0)
SHAPES = [(7, 256), (33, 1000), (5, 768), (3, 4096), (2, 12288), (2, 32768), (2, 65536), (9, 17), (4, 4099)]


def ops(n, dt):
    """name -> (fastln call(x, r, w, b), float64 reference(x, r, w, b)) returning the output."""
    ns = (n,)
    return {
        "layer_norm": (lambda x, r, w, b: [fastln.layer_norm(x, ns, w, b)],
                       lambda x, r, w, b: F.layer_norm(x, ns, w, b)),
        "rms_norm": (lambda x, r, w, b: [fastln.rms_norm(x, ns, w, 1e-5)],
                     lambda x, r, w, b: F.rms_norm(x, ns, w, 1e-5)),
        "fused_add_layer_norm": (lambda x, r, w, b: list(fastln.fused_add_layer_norm(x, r, ns, w, b)),
                                 lambda x, r, w, b: F.layer_norm(x + r, ns, w, b)),
        "fused_add_rms_norm": (lambda x, r, w, b: list(fastln.fused_add_rms_norm(x, r.float() if dt != torch.float64 else r,
                                                                                 ns, w, 1e-5, residual_in_fp32=True)),
                               lambda x, r, w, b: F.rms_norm(x + r, ns, w, 1e-5)),
    }


for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
    for m, n in SHAPES:
        for name, (ours, ref_fn) in ops(n, dt).items():
            x, w, b = (torch.randn(*s, device="cuda", dtype=dt, requires_grad=True) for s in ((m, n), (n,), (n,)))
            r = torch.randn(n, m, device="cuda", dtype=dt).t().requires_grad_()  # strided residual
            outs = ours(x, r, w, b)
            leaves = [t for t in (x, r, w, b) if t.requires_grad]
            grads = torch.autograd.grad(outs, leaves, [torch.randn_like(o) for o in outs], allow_unused=True)
            ref = ref_fn(*(t.detach().double() for t in (x, r, w, b)))
            err = ((outs[0].double() - ref).norm() / ref.norm()).item()
            assert err < 2e-2, (name, dt, m, n, err)
torch.cuda.synchronize()
print("sanitize workload ok")
