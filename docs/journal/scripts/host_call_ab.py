"""Host time of tiny eager calls on the CPU, fastln against torch, interleaved: minima of 40
batches of 200 calls, one thread; (1, 64) float32, forward and forward + backward (session 20).
Run: python docs/journal/scripts/host_call_ab.py"""
import time, torch, torch.nn.functional as F, fastln
torch.set_num_threads(1)
x = torch.randn(1, 64); w = torch.randn(64); b = torch.randn(64)
xg = x.clone().requires_grad_(); wg = w.clone().requires_grad_(); bg = b.clone().requires_grad_()
def fwd_t(): F.layer_norm(x, (64,), w, b)
def fwd_f(): fastln.layer_norm(x, (64,), w, b)
def tr_t(): F.layer_norm(xg, (64,), wg, bg).sum().backward()
def tr_f(): fastln.layer_norm(xg, (64,), wg, bg).sum().backward()
def rfwd_t(): F.rms_norm(x, (64,), w)
def rfwd_f(): fastln.rms_norm(x, (64,), w)
def rtr_t(): F.rms_norm(xg, (64,), wg).sum().backward()
def rtr_f(): fastln.rms_norm(xg, (64,), wg).sum().backward()
fs = dict(fwd_t=fwd_t, fwd_f=fwd_f, tr_t=tr_t, tr_f=tr_f, rfwd_t=rfwd_t, rfwd_f=rfwd_f, rtr_t=rtr_t, rtr_f=rtr_f)
best = {k: 1e9 for k in fs}
for r in range(40):
    for k, f in fs.items():
        t0 = time.perf_counter()
        for _ in range(200): f()
        best[k] = min(best[k], (time.perf_counter() - t0) / 200 * 1e6)
for k in fs: print(k, round(best[k], 2), "us")
