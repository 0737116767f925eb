# One process: fastln forward (and fused add) e2e at 2 threads, interleaved with F.layer_norm,
# per case the min and median of ~2 ms batches; JSON on stdout.
import json, os, sys, time, statistics, torch, torch.nn.functional as F, fastln
torch.set_num_threads(2)
shapes = [(32768, 128), (5000, 256), (2000, 512), (8192, 768), (1000, 1024), (500, 2048), (100, 512), (256, 4096)]
out = {}
for dt in (torch.bfloat16, torch.float16, torch.float32):
    for M, N in shapes:
        x = torch.randn(M, N).to(dt); r = torch.randn(M, N).to(dt); w = torch.randn(N).to(dt); b = torch.randn(N).to(dt)
        fns = {"fastln": lambda: fastln.layer_norm(x, (N,), w, b), "torch": lambda: F.layer_norm(x, (N,), w, b),
               "add": lambda: fastln.fused_add_layer_norm(x, r, (N,), w, b)}
        for f in fns.values(): f()
        t0 = time.perf_counter(); fns["fastln"](); one = time.perf_counter() - t0
        reps = max(1, int(0.002 / max(one, 1e-6)))
        ts = {k: [] for k in fns}
        names = list(fns)
        for rd in range(int(os.environ.get("ROUNDS", "25"))):
            for k in range(len(names)):
                n = names[(rd + k) % len(names)]; f = fns[n]; f()
                t = time.perf_counter()
                for _ in range(reps): f()
                ts[n].append((time.perf_counter() - t) / reps)
        out[f"{str(dt)[6:]} ({M},{N})"] = {k: [min(v), statistics.median(v)] for k, v in ts.items()}
print(json.dumps(out))
