"""Benchmark suite: fastln vs torch eager, torch.compile and the textbook baseline.

    python -m fastln.benchmark [--quick] [--device cpu|cuda] [--out DIR]

Every implementation runs on the same tensors, interleaved sample by sample in one process
(so machine noise hits them alike); each sample times a batch of calls sized to ~2 ms.
Reports median, IQR and iteration count per (dtype, shape, mode, implementation), achieved
GB/s (forward: x read + y written; forward+backward adds dy and x read, dx written) and the
ratio torch eager / impl. Writes results.json, results.md and, when matplotlib is present,
PNG plots of time and GB/s vs hidden size.

Large outputs (>= 32 MB) are measured twice: end to end (each call allocates its output,
which the allocator maps fresh: page faults) and "warm" (glibc told to keep freed memory,
so outputs reuse faulted pages: the kernel time). See docs/cpu.md.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

import fastln
from fastln import _C

GRID = [(100, 512), (1000, 1024), (5000, 256), (8192, 768), (2048, 4096), (256, 16384),
        (32768, 128)]
QUICK_GRID = [(100, 512), (1000, 1024), (2048, 4096), (32768, 128)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LARGE_BYTES = 32 << 20


def baseline(x: Tensor, shape: Sequence[int], w: Tensor, b: Tensor, eps: float = 1e-5) -> Tensor:
    """The textbook formula from torch primitive ops (computed in float32)."""
    xf = x.float()
    d = xf - xf.mean(-1, keepdim=True)
    y = d * torch.rsqrt((d * d).mean(-1, keepdim=True) + eps) * w.float() + b.float()
    return y.to(x.dtype)


def implementations(compile_: bool) -> dict[str, Callable[..., Tensor]]:
    impls: dict[str, Callable[..., Tensor]] = {"fastln": fastln.layer_norm, "torch": F.layer_norm, "baseline": baseline}
    if compile_:
        impls["compile"] = torch.compile(F.layer_norm, dynamic=False)
    return impls


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def keep_freed_memory() -> bool:
    """glibc: serve large allocations from the heap and never trim it, so a freed output's
    pages are reused (already faulted) by the next call. Process-wide; benchmark only."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 40))


class Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled, self.t0 = total, 0, enabled, time.time()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        frac = self.done / max(self.total, 1)
        bar = "#" * int(30 * frac)
        eta = (time.time() - self.t0) / frac * (1 - frac)
        sys.stderr.write(f"\r[{bar:<30}] {self.done}/{self.total} eta {eta:4.0f}s {label:<36}")
        sys.stderr.flush()
        if self.done == self.total:
            sys.stderr.write("\n")


def make_runner(fn: Callable[..., Tensor], x: Tensor, shape: Sequence[int], w: Tensor, b: Tensor, dy: Tensor,
                backward: bool) -> Callable[[], object]:
    if not backward:
        return lambda: fn(x, shape, w, b)
    leaves = (x, w, b)
    return lambda: torch.autograd.grad(fn(x, shape, w, b), leaves, dy)


def measure(runners: dict[str, Callable[[], object]], sync: Callable[[], None],
            budget_s: float) -> dict[str, dict[str, float]]:
    """Interleaved timing: each round times one batch of each runner, in turn, the order
    rotating from round to round. Each batch follows one untimed call of its own runner.
    Both because a runner pays for the memory the one before it freed (glibc gives a large
    freed block back to the kernel, and the next output is page-faulted afresh): in a fixed
    order, fastln, timed right after the allocation-heavy baseline, looked 2-10x slower than
    torch at (1000,1024) and (8192,768) float32."""
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit: a collection of the whole heap lands in one runner's batch
    try:
        return _measure(runners, sync, budget_s)
    finally:
        if gc_was_enabled:
            gc.enable()


def _measure(runners: dict[str, Callable[[], object]], sync: Callable[[], None],
             budget_s: float) -> dict[str, dict[str, float]]:
    batch: dict[str, int] = {}
    for name, run in runners.items():  # warm up (and compile), then size the batch
        for _ in range(3):
            run()
        sync()
        t = time.perf_counter()
        run()
        sync()
        batch[name] = max(1, int(2e-3 / max(time.perf_counter() - t, 1e-7)))
    samples: dict[str, list[float]] = {n: [] for n in runners}
    t_end = time.perf_counter() + budget_s
    order = list(runners.items())
    while True:
        order = order[1:] + order[:1]  # each runner follows each other one equally often
        for name, run in order:
            run()
            sync()
            t = time.perf_counter()
            for _ in range(batch[name]):
                run()
            sync()
            samples[name].append((time.perf_counter() - t) / batch[name])
        n = len(next(iter(samples.values())))
        if n >= 7 and (time.perf_counter() > t_end or n >= 200):
            break
    out: dict[str, dict[str, float]] = {}
    for name, s in samples.items():
        q = statistics.quantiles(s, n=4)
        out[name] = {"median_s": statistics.median(s), "iqr_s": q[2] - q[0],
                     "samples": len(s), "iters": len(s) * batch[name]}
    return out


def run_grid(device: str, grid: Sequence[tuple[int, int]], dtypes: dict[str, torch.dtype], compile_: bool,
             budget_s: float, phases: Sequence[str], progress: Progress) -> list[dict[str, Any]]:
    impls = implementations(compile_)
    sync: Callable[[], None] = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(0)
    for phase in phases:
        if phase == "warm" and device == "cpu":
            keep_freed_memory()
        for dname, dtype in dtypes.items():
            for M, N in grid:
                es = torch.empty((), dtype=dtype).element_size()
                large = M * N * es >= LARGE_BYTES
                for backward in (False, True):
                    label = f"{phase} {dname} ({M},{N}) {'fwd+bwd' if backward else 'fwd'}"
                    if phase == "warm" and not large:
                        continue
                    x = torch.randn(M, N, generator=gen).to(device, dtype).requires_grad_(backward)
                    w = torch.randn(N, generator=gen).to(device, dtype).requires_grad_(backward)
                    b = torch.randn(N, generator=gen).to(device, dtype).requires_grad_(backward)
                    dy = torch.randn(M, N, generator=gen).to(device, dtype)
                    runners = {n: make_runner(f, x, (N,), w, b, dy, backward) for n, f in impls.items()}
                    # The baseline on its own: its temporaries (several of the input's size per
                    # call) slowed the runner after it by up to 20 ms a call (docs/cpu.md).
                    slow = {"baseline": runners.pop("baseline")}
                    res = {**measure(runners, sync, budget_s), **measure(slow, sync, budget_s / 2)}
                    nbytes = M * N * es * (5 if backward else 2)
                    t_torch = res["torch"]["median_s"]
                    for name, r in res.items():
                        rows.append({"phase": phase, "dtype": dname, "M": M, "N": N,
                                     "mode": "fwd+bwd" if backward else "fwd", "impl": name, **r,
                                     "gbps": nbytes / r["median_s"] / 1e9,
                                     "speedup_vs_torch": t_torch / r["median_s"]})
                    progress.step(label)
    return rows


def copy_bandwidth(device: str) -> float:
    x = torch.randn(64 << 18, device=device)  # 64 MB
    y = torch.empty_like(x)
    sync: Callable[[], None] = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ts: list[float] = []
    for _ in range(20):
        sync()
        t = time.perf_counter()
        y.copy_(x)
        sync()
        ts.append(time.perf_counter() - t)
    return 2 * x.numel() * 4 / statistics.median(ts) / 1e9


def geomean(v: Sequence[float]) -> float:
    return math.exp(sum(math.log(a) for a in v) / len(v)) if v else float("nan")


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode in ("fwd", "fwd+bwd"):
        r = [x["speedup_vs_torch"] for x in rows
             if x["impl"] == "fastln" and x["mode"] == mode and x["phase"] == "e2e"]
        out[mode] = {"geomean_speedup_vs_torch": geomean(r), "min_speedup_vs_torch": min(r, default=float("nan"))}
    return out


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    impls = [i for i in ("fastln", "torch", "compile", "baseline") if any(r["impl"] == i for r in rows)]
    lines = [f"torch {meta['torch']}, {meta['cpu']}, fastln ISA {meta['isa']}, "
             f"{meta['threads']} threads, {meta['date']}. Median time per call (IQR); "
             f"speedup = torch eager time / fastln time. Copy bandwidth {meta['copy_gbps']:.1f} GB/s.",
             "", "| phase | dtype | shape | mode | " + " | ".join(impls) + " | fastln GB/s | speedup |",
             "|" + "---|" * (len(impls) + 6)]
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["phase"], r["dtype"], r["M"], r["N"], r["mode"])
    groups: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(key(r), {})[r["impl"]] = r
    for (phase, dt, M, N, mode), g in groups.items():
        cells = [f"{g[i]['median_s'] * 1e6:.1f}us (±{g[i]['iqr_s'] * 1e6:.1f})" for i in impls]
        f = g["fastln"]
        lines.append(f"| {phase} | {dt} | ({M},{N}) | {mode} | " + " | ".join(cells) +
                     f" | {f['gbps']:.1f} | {f['speedup_vs_torch']:.2f}x |")
    s = meta["summary"]
    lines += ["", f"Geometric mean speedup vs torch eager (e2e): forward "
              f"{s['fwd']['geomean_speedup_vs_torch']:.2f}x (min {s['fwd']['min_speedup_vs_torch']:.2f}x), "
              f"forward+backward {s['fwd+bwd']['geomean_speedup_vs_torch']:.2f}x "
              f"(min {s['fwd+bwd']['min_speedup_vs_torch']:.2f}x)."]
    return "\n".join(lines) + "\n"


def plots(rows: list[dict[str, Any]], out: Path, device: str) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no PNG plots ({out}/{device}.md and {device}.json "
              "are written). For the plots: pip install 'fastln[bench]' (or pip install "
              "matplotlib), then run the benchmark again.", file=sys.stderr)
        return []
    written = []
    dtypes = [dt for dt in DTYPES if any(r["dtype"] == dt for r in rows)]
    for metric, ylabel in (("median_s", "time per call (us)"), ("gbps", "GB/s")):
        fig, axes = plt.subplots(len(dtypes), 2, figsize=(10, 3.5 * len(dtypes)), squeeze=False)
        for i, dt in enumerate(dtypes):
            for j, mode in enumerate(("fwd", "fwd+bwd")):
                ax = axes[i][j]
                for impl in ("fastln", "torch", "compile", "baseline"):
                    pts = sorted((r["N"], r[metric] * (1e6 if metric == "median_s" else 1), r["M"])
                                 for r in rows if r["impl"] == impl and r["dtype"] == dt
                                 and r["mode"] == mode and r["phase"] == "e2e")
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=impl)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(f"{dt} {mode}", fontsize=9)
                ax.set_xlabel("hidden size N (M varies with N: see table)", fontsize=8)
                ax.set_ylabel(ylabel, fontsize=8)
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{device}_{'time' if metric == 'median_s' else 'gbps'}.png"
        fig.savefig(path, dpi=70)
        plt.close(fig)
        written.append(str(path))
    return written


def _shapes(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(sh) != 2 or min(sh) < 1 for sh in shapes):
        raise argparse.ArgumentTypeError(f"expected shapes like 100x512,2048x4096, got {text!r}")
    return [(sh[0], sh[1]) for sh in shapes]


def _dtypes(text: str) -> dict[str, torch.dtype]:
    names = text.split(",")
    unknown = [n for n in names if n not in DTYPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown dtype {unknown[0]!r}; choose from {', '.join(DTYPES)}")
    return {n: DTYPES[n] for n in names}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastln bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer shapes, shorter runs, no torch.compile")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--out", default="bench/results", help="directory for JSON, markdown and PNG")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--budget", type=float, default=None, help="seconds per measurement")
    p.add_argument("--shapes", type=_shapes, default=None, metavar="MxN,...",
                   help="these shapes instead of the grid, e.g. 100x512,2048x4096")
    p.add_argument("--dtypes", type=_dtypes, default=None, metavar="NAME,...",
                   help=f"a subset of {','.join(DTYPES)}")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    grid = args.shapes or (QUICK_GRID if args.quick else GRID)
    dtypes = args.dtypes or DTYPES
    compile_ = not (args.quick or args.no_compile)
    budget = args.budget if args.budget is not None else (0.15 if args.quick else 0.6)
    phases = ("e2e",) if args.device == "cuda" else ("e2e", "warm")
    n_large = sum(1 for M, N in grid for dt in dtypes.values()
                  if M * N * torch.empty((), dtype=dt).element_size() >= LARGE_BYTES)
    total = len(grid) * len(dtypes) * 2 + (2 * n_large if "warm" in phases else 0)
    progress = Progress(total, not args.no_progress)
    torch.manual_seed(0)
    copy = copy_bandwidth(args.device)
    rows = run_grid(args.device, grid, dtypes, compile_, budget, phases, progress)
    meta: dict[str, Any] = {"torch": torch.__version__, "fastln": fastln.__version__, "device": args.device,
            "cpu": cpu_model(), "isa": _C.isa(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "copy_gbps": copy, "quick": args.quick, "budget_s": budget,
            "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE")}
    meta["summary"] = summary(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(meta, rows)
    (out / f"{args.device}.md").write_text(md)
    meta["plots"] = plots(rows, out, args.device)
    (out / f"{args.device}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
