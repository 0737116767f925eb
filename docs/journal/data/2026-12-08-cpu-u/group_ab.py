# Interleaved A/B of the CPU forward's row grouping (FASTLN_FWD_GROUP=old|0|4, read per call), e2e
# fastln.layer_norm at 2 threads, one process; min and median of ~2 ms batches.
import os, sys, time, statistics, torch, fastln
torch.set_num_threads(2)
modes = sys.argv[1].split(",") if len(sys.argv) > 1 else ["old", "4"]
shapes = [(32768, 128), (5000, 256), (2000, 512), (1000, 1024), (100, 512), (500, 2048), (8192, 768)]
rounds = int(os.environ.get("ROUNDS", "40"))
def copy_bw():
    x = torch.empty(16 << 20); y = torch.empty_like(x); ts = []
    for _ in range(20):
        t = time.perf_counter(); y.copy_(x); ts.append(time.perf_counter() - t)
    return 2 * x.numel() * 4 / min(ts) / 1e9
print(f"copy {copy_bw():.1f} GB/s (max of 20), pressure: {open('/proc/pressure/cpu').readline().strip()}")
for dt in (torch.float32, torch.bfloat16):
    for M, N in shapes:
        x = torch.randn(M, N).to(dt); w = torch.randn(N).to(dt); b = torch.randn(N).to(dt)
        f = lambda: fastln.layer_norm(x, (N,), w, b)
        for m in modes:
            os.environ["FASTLN_FWD_GROUP"] = m; f()
        ref = None
        os.environ["FASTLN_FWD_GROUP"] = "old"; ref = f()
        t0 = time.perf_counter(); f(); one = time.perf_counter() - t0
        reps = max(1, int(0.002 / max(one, 1e-6)))
        ts = {m: [] for m in modes}
        for r in range(rounds):
            for k in range(len(modes)):
                m = modes[(r + k) % len(modes)]
                os.environ["FASTLN_FWD_GROUP"] = m
                f()
                t = time.perf_counter()
                for _ in range(reps): f()
                ts[m].append((time.perf_counter() - t) / reps)
        for m in modes:
            os.environ["FASTLN_FWD_GROUP"] = m
            assert torch.equal(f(), ref), (m, M, N, dt)
        base = ts[modes[0]]
        cells = "  ".join(f"{m}: min {min(v)*1e6:7.1f} med {statistics.median(v)*1e6:7.1f}" for m, v in ts.items())
        ratio = "  ".join(f"{m} {min(base)/min(v):.2f}x/{statistics.median(base)/statistics.median(v):.2f}x" for m, v in ts.items() if m != modes[0])
        print(f"{str(dt)[6:]:8s} ({M:5d},{N:5d})  {cells}   vs {modes[0]} (min/med): {ratio}", flush=True)
