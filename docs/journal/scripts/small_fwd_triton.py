"""The (4096, 1024) forward against Triton layer norms of several shapes, in one process (H100).

fastln, torch.compile and `ln_rows` (a Triton layer norm written here: ROWS rows a program, num_warps
warps, optionally a persistent grid of per_sm programs a SM with a pipelined row loop) at
(4096, 1024), float32 and bfloat16, timed as bench/cuda_bench.py then timed (do_bench median, L2
flushed). Prints the best Triton shapes, then fastln, torch.compile and the four best interleaved
over 5 rounds (medians). Writes JSON to argv[1]. docs/journal/cuda.md, Session 11, has what it showed.

Usage: python3 docs/journal/scripts/small_fwd_triton.py out.json   (needs a CUDA build of fastln and Triton)
"""
import json
import sys

import torch
import triton
import triton.language as tl

import fastln  # noqa: F401


@triton.jit
def ln_rows(X, Y, W, B, Mean, Rstd, M, eps, N: tl.constexpr, ROWS: tl.constexpr, PERSIST: tl.constexpr,
            STAGES: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, N)[None, :]
    w = tl.load(W + cols).to(tl.float32)
    b = tl.load(B + cols).to(tl.float32)
    nblocks = tl.cdiv(M, ROWS)
    step = nprog if PERSIST else nblocks
    for blk in tl.range(pid, nblocks, step, num_stages=STAGES):
        rows = blk * ROWS + tl.arange(0, ROWS)[:, None]
        mask = rows < M
        x = tl.load(X + rows * N + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, 1) / N
        d = x - mean[:, None]
        var = tl.sum(d * d, 1) / N
        rstd = 1.0 / tl.sqrt(var + eps)
        y = d * rstd[:, None] * w + b
        tl.store(Y + rows * N + cols, y.to(Y.dtype.element_ty), mask=mask)
        r1 = blk * ROWS + tl.arange(0, ROWS)
        tl.store(Mean + r1, mean, mask=r1 < M)
        tl.store(Rstd + r1, rstd, mask=r1 < M)


def bench(fn):
    return triton.testing.do_bench(fn, warmup=20, rep=80, return_mode="median") * 1e3


def main():
    out = []
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for dt in (torch.float32, torch.bfloat16):
        m, n = 4096, 1024
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(m, n, device="cuda", dtype=dt, generator=g)
        w = (1 + 0.1 * torch.randn(n, device="cuda", generator=g)).to(dt)
        b = (0.1 * torch.randn(n, device="cuda", generator=g)).to(dt)
        y = torch.empty_like(x)
        mean = torch.empty(m, device="cuda")
        rstd = torch.empty(m, device="cuda")
        ref = torch.nn.functional.layer_norm(x.double(), (n,), w.double(), b.double(), 1e-5)
        cf = torch.compile(torch.nn.functional.layer_norm)
        cf(x, (n,), w, b, 1e-5)
        fl = lambda: torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5)  # noqa: E731
        tc = lambda: cf(x, (n,), w, b, 1e-5)  # noqa: E731
        configs = []
        for rows in (1, 2, 4, 8, 16):
            for nw in (1, 2, 4, 8, 16):
                if rows * n // (nw * 32) > 128 or rows * n // (nw * 32) < 4:
                    continue
                configs.append((rows, nw, False, 1, 0))
        for rows in (1, 2, 4):
            for nw in (2, 4):
                for per in (2, 4, 8):
                    for st in (1, 2):
                        configs.append((rows, nw, True, st, per))
        res = {}
        for cfg in configs:
            rows, nw, pers, st, per = cfg
            grid = (min(triton.cdiv(m, rows), per * sms),) if pers else (triton.cdiv(m, rows),)
            f = lambda: ln_rows[grid](x, y, w, b, mean, rstd, m, 1e-5, N=n, ROWS=rows, PERSIST=pers,  # noqa: E731
                                      STAGES=st, num_warps=nw)
            try:
                f()
            except Exception as e:  # noqa: BLE001
                print("skip", cfg, str(e)[:80])
                continue
            err = (y.double() - ref).abs().max().item()
            res[cfg] = (bench(f), err)
        # interleave the references with the best few
        best = sorted(res, key=lambda k: res[k][0])[:4]
        ab = {"fastln": [], "compile": []}
        for k in best:
            ab[str(k)] = []
        for _ in range(5):
            ab["fastln"].append(bench(fl))
            ab["compile"].append(bench(tc))
            for k in best:
                rows, nw, pers, st, per = k
                grid = (min(triton.cdiv(m, rows), per * sms),) if pers else (triton.cdiv(m, rows),)
                ab[str(k)].append(bench(lambda: ln_rows[grid](x, y, w, b, mean, rstd, m, 1e-5, N=n, ROWS=rows,
                                                              PERSIST=pers, STAGES=st, num_warps=nw)))
        med = {k: sorted(v)[2] for k, v in ab.items()}
        rec = {"dtype": str(dt), "sweep": {str(k): v for k, v in res.items()}, "ab_median": med}
        out.append(rec)
        print(dt)
        for k in sorted(res, key=lambda k: res[k][0])[:12]:
            print(f"  rows={k[0]} warps={k[1]} persist={k[2]} stages={k[3]} per_sm={k[4]}: "
                  f"{res[k][0]:.2f} us err {res[k][1]:.1e}")
        for k, v in med.items():
            print(f"  AB {k}: {v:.2f} us")
    json.dump(out, open(sys.argv[1], "w"), indent=1)


if __name__ == "__main__":
    main()
