"""Small CUDA workload for compute-sanitizer (memcheck, racecheck): every kernel path once."""
import torch

import fastln

torch.manual_seed(0)
for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
    for m, n in [(7, 256), (33, 1000), (5, 768), (3, 4096), (2, 12288), (2, 32768), (2, 65536), (9, 17), (4, 4099)]:
        x = torch.randn(m, n, device="cuda", dtype=dt, requires_grad=True)
        w = torch.randn(n, device="cuda", dtype=dt, requires_grad=True)
        b = torch.randn(n, device="cuda", dtype=dt, requires_grad=True)
        y = fastln.layer_norm(x, (n,), w, b)
        y.backward(torch.randn_like(y))
        ref = torch.nn.functional.layer_norm(x.double(), (n,), w.double(), b.double())
        err = ((y.double() - ref).norm() / ref.norm()).item()
        assert err < 2e-2, (dt, m, n, err)
torch.cuda.synchronize()
print("sanitize workload ok")
