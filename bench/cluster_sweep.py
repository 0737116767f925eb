"""Cluster size sweep of the CUDA LayerNorm (sm_90): each setting of FASTLN_CUDA_CLUSTER_FWD and
FASTLN_CUDA_CLUSTER_BWD (read once per process, so one subprocess per setting) times fastln's
forward and backward on rows of 2^27 elements, as bench/cuda_bench.py does. "auto" is the
dispatch's own choice; a size the configuration cannot take falls back as fwd_config/bwd_config
say (e.g. the backward's fallback where the column sums do not fit).

Usage: python3 bench/cluster_sweep.py [--ns 16384,32768,65536] [--settings auto,1,2,4,8]"""
import argparse
import json
import os
import subprocess
import sys

WORKER = r'''
import json, sys, torch, triton, fastln
COPY = 2970.0
for dt_name in sys.argv[2].split(","):
    dt = getattr(torch, dt_name)
    for spec in sys.argv[1].split(","):  # N (M = 2^27 / N) or MxN
        m, n = map(int, spec.split("x")) if "x" in spec else (max(1, round(2**27 / int(spec))), int(spec))
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(m, n, device="cuda", dtype=dt, generator=g)
        w = (1 + 0.1 * torch.randn(n, device="cuda", generator=g)).to(dt)
        b = (0.1 * torch.randn(n, device="cuda", generator=g)).to(dt)
        dy = torch.randn(m, n, device="cuda", dtype=dt, generator=g)
        fwd = lambda: torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5)
        _, mean, rstd = fwd()
        bwd = lambda: torch.ops.fastln.layer_norm_bwd(dy, x, (n,), mean, rstd, w, b, [True] * 3)
        tf = triton.testing.do_bench(fwd, warmup=20, rep=80, return_mode="median") * 1e3
        tb = triton.testing.do_bench(bwd, warmup=20, rep=80, return_mode="median") * 1e3
        nb = m * n * x.element_size()
        print(json.dumps({"dtype": dt_name, "M": m, "N": n, "fwd_us": tf, "bwd_us": tb,
                          "fwd_pct": 100 * 2 * nb / tf / 1e3 / COPY, "bwd_pct": 100 * 3 * nb / tb / 1e3 / COPY}), flush=True)
'''


def run_worker(env, ns, dtypes, label):
    """WORKER's rows (dicts) in a subprocess with environment env, or None if it failed."""
    out = subprocess.run([sys.executable, "-c", WORKER, ns, dtypes], env=env, capture_output=True, text=True,
                         cwd="/tmp")
    if out.returncode:
        print(f"{label}: failed\n{out.stderr[-2000:]}")
        return None
    return [json.loads(line) for line in out.stdout.splitlines()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="12288,16384,32768,65536")
    ap.add_argument("--dtypes", default="bfloat16,float16,float32")
    ap.add_argument("--settings", default="auto,1,2,4,8")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    res = {}
    for st in args.settings.split(","):
        env = dict(os.environ)
        for k in ("FASTLN_CUDA_CLUSTER_FWD", "FASTLN_CUDA_CLUSTER_BWD"):
            env.pop(k, None)
            if st != "auto":
                env[k] = st
        for r in run_worker(env, args.ns, args.dtypes, f"setting {st}") or []:
            res.setdefault((r["dtype"], r["N"]), {})[st] = r
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"dtype": k[0], "N": k[1], **v} for k, v in res.items()], f, indent=1)
    sts = args.settings.split(",")
    print(f"{'dtype':9} {'N':>6} | " + " ".join(f"{'fwd%'+s:>8}" for s in sts) + " | "
          + " ".join(f"{'bwd%'+s:>8}" for s in sts))
    for (dt, n), v in res.items():
        f = " ".join(f"{v[s]['fwd_pct']:8.1f}" if s in v else f"{'-':>8}" for s in sts)
        b = " ".join(f"{v[s]['bwd_pct']:8.1f}" if s in v else f"{'-':>8}" for s in sts)
        print(f"{dt:9} {n:6} | {f} | {b}")


if __name__ == "__main__":
    main()
