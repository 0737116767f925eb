"""torch.compile of fastln.layer_norm against torch.compile of F.layer_norm and eager fastln (CPU, float32,
2 threads, minima of 60 interleaved batches), and the op the compiled graph holds. Run once with each
version of src/fastln/functional.py (journal.md, session 19)."""
import sys, time, torch, torch.nn.functional as F, fastln
torch.set_num_threads(2)
seen = []
def rec(gm, ex):
    seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function"); return gm.forward
x0 = torch.randn(8, 64); w0, b0 = torch.randn(64), torch.randn(64)
torch.compile(lambda x: fastln.layer_norm(x, (64,), w0, b0), backend=rec)(x0)
print("graph:", seen)
for M, N in ((4096, 1024), (1024, 4096)):
    x, w, b = torch.randn(M, N), torch.randn(N), torch.randn(N)
    torch._dynamo.reset()
    fns = {"fastln compiled": torch.compile(lambda x: fastln.layer_norm(x, (N,), w, b)),
           "F compiled": torch.compile(lambda x: F.layer_norm(x, (N,), w, b)),
           "fastln eager": lambda x: fastln.layer_norm(x, (N,), w, b)}
    for f in fns.values(): f(x); f(x)
    best = {k: 1e9 for k in fns}
    for _ in range(60):
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(10): f(x)
            best[k] = min(best[k], (time.perf_counter() - t) / 10)
    print((M, N), "; ".join(f"{k} {v*1e6:.0f} us" for k, v in best.items()))
a = torch.empty(64 << 20, dtype=torch.uint8); bb = torch.empty_like(a); bb.copy_(a)
t = time.perf_counter()
for _ in range(10): bb.copy_(a)
print("copy %.1f GB/s" % (2 * 64 * 2**20 * 10 / (time.perf_counter() - t) / 1e9))
