"""The mid-size LayerNorm forward of fastln and of the peers, as the benchmark's kernel suite calls
them (fastln.benchmark.kernel_runner), for Nsight Compute: each call right after a 256 MB memset
(do_bench's L2 flush, which leaves L2 dirty), three calls each, inside cudaProfilerStart/Stop.
Why: at (2048, 4096) bf16 and fp16 fastln takes 18.7-18.9 us against Liger's 17.2-17.4, and at
(16384, 512) 18.9-19.0 against Quack's 17.5-18.6 (session 23); launch geometry sweeps found no rule
(journal.md, sessions 17 and 21), so the next step is where each kernel's time goes.

    python3 mid_fwd_ncu.py 2048 4096 bfloat16 --time      # the interleaved device timer, no ncu
    python3 mid_fwd_ncu.py 2048 4096 bfloat16 --profile   # events against the kernels' own time (CUPTI)
    python3 mid_fwd_ncu.py 2048 4096 bfloat16 --profile --sleep 100000  # a spin of that many GPU cycles
        # between the memset and the call (session 28: no change; a spin writes no dirty line back)
    python3 mid_fwd_ncu.py 2048 4096 bfloat16 --profile --clean  # a read of another 256 MB between
        # the memset and the call: the memset's dirty lines evicted (written back), L2 left clean
    python3 mid_fwd_ncu.py 16384 512 float16 --profile --plans fwd_block=128,fwd_nv=2+fwd_block=128
        # fastln under those launch-plan overrides too (cuda/launch_plan.h), each its own row
    ncu --profile-from-start off --cache-control none --clock-control none \\
        -k regex:"fwd_reg|layer_norm|cutlass|quack|Norm" --section SpeedOfLight --section Occupancy \\
        --section LaunchStats --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \\
        python3 mid_fwd_ncu.py 2048 4096 bfloat16
(run from the repository root with the peers on PYTHONPATH: bench/device_run.sh's peers stage).
"""
import sys

import torch

import fastln
from fastln import benchmark as B

M, N = int(sys.argv[1]), int(sys.argv[2])
dtype = getattr(torch, sys.argv[3] if len(sys.argv) > 3 and not sys.argv[3].startswith("-") else "bfloat16")
if ("--sleep" in sys.argv or "--clean" in sys.argv) and "--profile" not in sys.argv:
    sys.exit("--sleep CYCLES and --clean go with --profile")
plans = sys.argv[sys.argv.index("--plans") + 1].split(",") if "--plans" in sys.argv else []
gen = torch.Generator().manual_seed(0)
x = torch.randn(M, N, generator=gen).to("cuda", dtype)
w = (1 + 0.1 * torch.randn(N, generator=gen)).to("cuda", dtype)
b = (0.1 * torch.randn(N, generator=gen)).to("cuda", dtype)
runs = {}
for impl in ("fastln", "liger", "quack", "torch"):
    try:
        runs[impl] = B.kernel_runner(impl, "layer_norm", "fwd", x, x, w, b, x)
    except B.Skip as e:
        print(f"{impl}: skipped ({e})")
for spec in plans:  # the overrides set for the call alone (the plan is chosen at each launch)
    overrides = B.plan_overrides("fastln+" + spec)

    def under(f=B.kernel_runner("fastln", "layer_norm", "fwd", x, x, w, b, x), ov=overrides):
        fastln._C.cuda_plan_overrides(ov)
        f()
        fastln._C.cuda_plan_overrides({})  # the defaults again

    runs["fastln+" + spec] = under
for f in runs.values():  # compile (Triton, CuTe DSL) and warm up outside the profiled range
    f()
torch.cuda.synchronize()
if "--time" in sys.argv:
    for impl, t in B.device_times(runs).items():
        print(f"{impl:7s} {t['median_s'] * 1e6:7.2f} us (IQR {t['iqr_s'] * 1e6:.2f}, min {t['min_s'] * 1e6:.2f})")
    sys.exit()
cache = torch.empty(256 << 18, dtype=torch.int32, device="cuda")
if "--profile" in sys.argv:
    # do_bench's regime under torch.profiler (CUPTI: kernels not serialized, unlike ncu): per call,
    # the event-timed time, the kernels' own time, the gap from the memset's end to the first
    # kernel's start, and the span from there to the last kernel's end (medians of 60 calls).
    import statistics
    from torch.profiler import ProfilerActivity, profile
    spin = int(sys.argv[sys.argv.index("--sleep") + 1]) if "--sleep" in sys.argv else 0
    # float32: an int32 sum casts to int64 first (a 768 MB elementwise kernel that the parse below
    # counted as the call's: session 28's first --clean run; its events column stands)
    clean = torch.ones(256 << 18, dtype=torch.float32, device="cuda") if "--clean" in sys.argv else None
    print(f"{'impl':7s} {'events':>8s} {'kernels':>8s} {'gap':>7s} {'span':>8s}  (us, medians of 60 calls after a 256 MB memset"
          + (f" and a spin of {spin} cycles)" if spin else " and a 256 MB read)" if clean is not None else ")"))
    for impl, f in runs.items():
        evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(60)]
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for a, b in evs:
                cache.zero_()
                if spin:
                    torch.cuda._sleep(spin)
                if clean is not None:
                    clean.sum()
                a.record()
                f()
                b.record()
            torch.cuda.synchronize()
        kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                         if getattr(e.device_type, "name", "") == "CUDA")
        calls, cur = [], None
        for start, end, name in kernels:
            if "FillFunctor" in name:
                cur = {"fill_end": end, "k": []}
                calls.append(cur)
            elif ("spin_kernel" in name or "reduce_kernel" in name) and cur is not None:
                cur["fill_end"] = end  # --sleep, --clean: the gap counts from the spin's or the read's end
            elif cur is not None:
                cur["k"].append((start, end))
        # only what starts after the memset (or the spin, or the read) ends: --clean's read also
        # brought an event that starts before its kernel ends (session 29's --clean rows: gaps of
        # -103 us; their kernel column may hold that event's time, the same for every impl)
        for c in calls:
            c["k"] = [(s, e) for s, e in c["k"] if s >= c["fill_end"]]
        calls = [c for c in calls if c["k"]]
        med = statistics.median
        print(f"{impl:7s} {med(a.elapsed_time(b) for a, b in evs) * 1e3:8.2f} "
              f"{med(sum(e - s for s, e in c['k']) for c in calls):8.2f} "
              f"{med(c['k'][0][0] - c['fill_end'] for c in calls):7.2f} "
              f"{med(c['k'][-1][1] - c['k'][0][0] for c in calls):8.2f}  ({len(calls)} calls)")
    sys.exit()
torch.cuda.cudart().cudaProfilerStart()
for impl, f in runs.items():
    for _ in range(3):
        cache.zero_()
        f()
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStop()
print("profiled:", ", ".join(runs))
