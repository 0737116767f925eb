"""A launch-plan A/B from a results file of `python -m fastln bench --plans ...`: per case, each
fastln+VARIANT's median over fastln's (below 1: the variant is faster), with the best peer's time.

python docs/journal/scripts/plan_ab.py RESULTS.json [--mode fwd]"""
import argparse
import json
import math
from collections import defaultdict

PEERS = ("torch", "compile", "liger", "quack")

ap = argparse.ArgumentParser()
ap.add_argument("results")
ap.add_argument("--mode", default=None, help="only this mode (fwd, bwd, fwd+bwd)")
a = ap.parse_args()
rows = json.load(open(a.results))["results"]
cases = defaultdict(dict)
for r in rows:
    if a.mode and r["mode"] != a.mode:
        continue
    cases[(r["suite"], r["op"], r["mode"], r["dtype"], r["M"], r["N"])][r["impl"]] = r["median_s"] * 1e6
variants = sorted({i for c in cases.values() for i in c if i.startswith("fastln+")})
ratios = defaultdict(list)
print(f"{'suite op mode dtype shape':52} {'fastln':>8} " + " ".join(f"{v:>22}" for v in variants) + "   best peer")
for key, t in sorted(cases.items()):
    if "fastln" not in t or not any(v in t for v in variants):
        continue
    peer = min(((t[p], p) for p in PEERS if p in t), default=(math.nan, "-"))
    cells = []
    for v in variants:
        q = t.get(v, math.nan) / t["fastln"]
        ratios[v].append(q)
        cells.append(f"{t.get(v, math.nan):8.2f} ({q:5.3f})")
    s, op, mode, dt, m, n = key
    print(f"{f'{s} {op} {mode} {dt} ({m},{n})':52} {t['fastln']:8.2f} " + " ".join(f"{c:>22}" for c in cells)
          + f"   {peer[0]:8.2f} {peer[1]}")
for v, q in ratios.items():
    q = [x for x in q if x == x]
    print(f"{v}: geomean {math.exp(sum(map(math.log, q)) / len(q)):.4f} over {len(q)} cases, "
          f"min {min(q):.3f}, max {max(q):.3f}")
