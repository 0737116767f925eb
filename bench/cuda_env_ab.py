"""A/B of the CUDA LayerNorm forward and backward under environment knobs read once per process (e.g.
FASTLN_CUDA_BWD_ROWS, FASTLN_CUDA_PARTIAL_CLUSTER): one subprocess per setting and round,
settings interleaved over rounds so that drift shows as spread. Times fastln's forward and backward
on rows of 2^27 elements (M = 2^27 / N) or on given MxN shapes with bench/cluster_sweep.py's worker (as bench/cuda_bench.py:
do_bench median, L2 flushed); % of the 2970 GB/s copy bandwidth counting x read and y written (forward), x
and dy read and dx written (backward).

Usage: python3 bench/cuda_env_ab.py --settings "FASTLN_CUDA_BWD_ROWS=1,auto" --ns 16384,32768 \
           --dtypes bfloat16,float16 --rounds 3 [--json out.json]
("auto": no knob set; "A=1+B=2": two variables in one setting.)"""
import argparse
import json
import os
import statistics

from cluster_sweep import run_worker  # times fastln's forward and backward on each shape


def env_for(setting):
    env = dict(os.environ)
    if setting != "auto":
        for kv in setting.split("+"):
            k, v = kv.split("=")
            env[k] = v
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default="FASTLN_CUDA_BWD_ROWS=1,auto")
    ap.add_argument("--ns", default="12288,16384,32768,65536", help="N (M = 2^27 / N) or MxN, comma-separated")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sts = args.settings.split(",")
    res = {}  # (dtype, N) -> setting -> [pct per round]
    for rnd in range(args.rounds):
        for st in sts:
            for r in run_worker(env_for(st), args.ns, args.dtypes, f"setting {st} round {rnd}") or []:
                res.setdefault((r["dtype"], r["M"], r["N"]), {}).setdefault(st, []).append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"dtype": k[0], "M": k[1], "N": k[2], **v} for k, v in res.items()], f, indent=1)
    for what in ("fwd", "bwd"):
        print(f"{what} % of copy bandwidth: median over rounds [min-max]; us median")
        print(f"{'dtype':9} {'shape':>14} | " + " | ".join(f"{s:>34}" for s in sts))
        for (dt, m, n), v in res.items():
            cells = []
            for s in sts:
                rs = v.get(s, [])
                if not rs:
                    cells.append(f"{'-':>34}")
                    continue
                p = [r[f"{what}_pct"] for r in rs]
                us = statistics.median(r[f"{what}_us"] for r in rs)
                cells.append(f"{statistics.median(p):6.1f} [{min(p):5.1f}-{max(p):5.1f}] {us:8.1f} us".rjust(34))
            print(f"{dt:9} {str((m, n)):>14} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
