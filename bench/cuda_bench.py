"""fastln CUDA vs torch native (and torch.compile with --compile) on the issue's shapes.

Times with triton.testing.do_bench (median; it flushes L2 between runs). Bandwidth counts
forward: x read + y written; backward: x, dy read + dx written (params ignored), against the
H100 copy bandwidth 2970 GB/s. Writes JSON to --json and prints a table last.
"""
import argparse
import json
import math

import torch
import triton

import fastln

COPY_GBS = 2970.0
NS = [256, 512, 768, 1000, 1024, 2048, 4096, 5120, 8192, 12288, 16384, 32768, 65536]


def shapes(quick, ns=None, dtypes=None):
    out = []
    for dt in (torch.bfloat16, torch.float16, torch.float32):
        for n in ns or NS:
            m = max(1, round(2**27 / n))
            out.append((dt, m, n))
        if not ns:
            out.append((dt, 4096, 1024))
    if quick:
        out = [s for s in out if s[0] != torch.float16]
    if dtypes:
        out = [s for s in out if str(s[0]).split(".")[-1] in dtypes]
    return out


def bench(fn):
    return triton.testing.do_bench(fn, warmup=20, rep=80, return_mode="median") * 1e3  # us


def impls(use_compile):
    def fl_fwd(x, w, b):
        return torch.ops.fastln.layer_norm_fwd(x, (x.shape[-1],), w, b, 1e-5)

    def fl_bwd(dy, x, mean, rstd, w, b):
        return torch.ops.fastln.layer_norm_bwd(dy, x, (x.shape[-1],), mean, rstd, w, b, [True] * 3)

    def t_fwd(x, w, b):
        return torch.native_layer_norm(x, (x.shape[-1],), w, b, 1e-5)

    def t_bwd(dy, x, mean, rstd, w, b):
        return torch.ops.aten.native_layer_norm_backward(dy, x, (x.shape[-1],), mean, rstd, w, b, [True] * 3)

    d = {"fastln": (fl_fwd, fl_bwd), "torch": (t_fwd, t_bwd)}
    if use_compile:
        d["torch.compile"] = "compile"
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--ns", default=None, help="comma-separated row lengths (M = 2^27 / N) instead of the full list")
    ap.add_argument("--dtypes", default=None, help="comma-separated dtypes, e.g. bfloat16,float32")
    args = ap.parse_args()
    ns = [int(n) for n in args.ns.split(",")] if args.ns else None
    if args.dtypes and not set(args.dtypes.split(",")) <= {"bfloat16", "float16", "float32"}:
        ap.error(f"--dtypes: choose from bfloat16, float16, float32, got {args.dtypes}")
    rows = []
    for dt, m, n in shapes(args.quick, ns, args.dtypes.split(",") if args.dtypes else None):
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(m, n, device="cuda", dtype=dt, generator=g)
        w = (1 + 0.1 * torch.randn(n, device="cuda", generator=g)).to(dt)
        b = (0.1 * torch.randn(n, device="cuda", generator=g)).to(dt)
        dy = torch.randn(m, n, device="cuda", dtype=dt, generator=g)
        nbytes = m * n * x.element_size()
        rec = {"dtype": str(dt).split(".")[-1], "M": m, "N": n}
        for name, f in impls(args.compile).items():
            if f == "compile":
                xr = x.detach().requires_grad_()
                wr, br = w.detach().requires_grad_(), b.detach().requires_grad_()
                cf = torch.compile(torch.nn.functional.layer_norm)
                y = cf(xr, (n,), wr, br, 1e-5)
                tf = bench(lambda: cf(x, (n,), w, b, 1e-5))
                tb = bench(lambda: torch.autograd.grad(y, (xr, wr, br), dy, retain_graph=True))
            else:
                fwd, bwd = f
                _, mean, rstd = fwd(x, w, b)
                tf = bench(lambda: fwd(x, w, b))
                tb = bench(lambda: bwd(dy, x, mean, rstd, w, b))
            rec[name] = {"fwd_us": tf, "bwd_us": tb,
                         "fwd_pct": 100 * 2 * nbytes / (tf * 1e-6) / 1e9 / COPY_GBS,
                         "bwd_pct": 100 * 3 * nbytes / (tb * 1e-6) / 1e9 / COPY_GBS}
        rows.append(rec)
        print(json.dumps(rec), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "copy_gbs": COPY_GBS, "rows": rows}, f, indent=1)
    names = [k for k in rows[0] if k not in ("dtype", "M", "N")]
    print(f"{'dtype':9} {'shape':>14} " + " ".join(f"{n[:8]+' f/b us':>22}" for n in names)
          + "  fl fwd%  fl bwd%  x-torch f/b")
    gf, gb = [], []
    for r in rows:
        fl, tt = r["fastln"], r["torch"]
        gf.append(tt["fwd_us"] / fl["fwd_us"]); gb.append(tt["bwd_us"] / fl["bwd_us"])
        cols = " ".join(f"{r[n]['fwd_us']:10.1f} {r[n]['bwd_us']:10.1f}" for n in names)
        print(f"{r['dtype']:9} {str((r['M'], r['N'])):>14} {cols}  {fl['fwd_pct']:6.1f}  {fl['bwd_pct']:6.1f}"
              f"  {gf[-1]:.2f}/{gb[-1]:.2f}")
    geo = lambda v: math.exp(sum(map(math.log, v)) / len(v))  # noqa: E731
    print(f"geomean speedup vs torch native: fwd {geo(gf):.2f}x  bwd {geo(gb):.2f}x")


if __name__ == "__main__":
    main()
