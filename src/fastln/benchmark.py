"""fastln's one benchmark harness: every suite, CPU and CUDA, from declarative definitions.

    python -m fastln bench [--quick] [--device cpu|cuda] [--suites NAME,...] [--out DIR]
    python -m fastln bench --list                      # the suites, as data
    python -m fastln bench --plot FILE.json ... [--out DIR]   # the plots of results files
    python -m fastln bench --readme [--check]          # README/docs tables from bench/results

A suite (``SUITES``) is data: ops x shapes x dtypes x modes x implementations, a level
("user": the public functions as a user calls them, autograd included; "kernel": the forward
and backward ops alone, ``torch.ops.fastln.*_fwd/_bwd`` against aten's) and a timer. Peers are
taken where importable (torch.compile; on CUDA Liger-Kernel and Quack) and listed as skipped
otherwise. One run writes one results file per device (``DIR/cpu.json``, ``DIR/cuda_h100.json``:
the card's name in it), suites run replace that suite's rows in an existing file (``--fresh``:
start over), so ``bench/results/`` keeps one current result per device and suite. The copy
bandwidth is measured in the run (a device-to-device ``copy_`` on CUDA, a 64 MB ``copy_`` on the
CPU) and every row's "% of copy" is against it.

Timers. CPU ("interleaved"): every implementation on the same tensors, interleaved batch by
batch in one process (order rotating), each batch ~2 ms, medians, IQR and minima. Large outputs
(>= 32 MB) are measured twice: end to end ("e2e": each call allocates its output, which glibc
maps fresh: page faults) and "warm" (glibc told to keep freed memory: the kernel time); see
docs/cpu.md. CUDA ("device"): ``triton.testing.do_bench`` medians where Triton is importable
(L2 flushed before every call), else CUDA events after a 256 MB memset, the same way; the
implementations interleaved, five rounds of each in turn, the median of the rounds' medians. "host":
back-to-back calls in a loop, synchronised once per batch, so host overhead counts (decode-size
calls; the CPU-against-CUDA suite), the implementations interleaved batch by batch as on the CPU.

Bytes counted per call (``BYTES``, in units of the input's size): forward x read + y written (2),
backward x and dy read + dx written (3), forward+backward 5; the fused adds also read the
residual and write the sum (forward 4, forward+backward 7). Parameters are not counted.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

import fastln
from fastln import _C

Shape = tuple[int, int]
Runner = Callable[[], object]
Row = dict[str, Any]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A case's dtype is the input's, the parameters of the same dtype, or "INPUT+PARAMS": 16-bit
# activations with float32 weight and bias (a 16-bit model whose norms keep float32 weights, as
# Megatron's and Transformer Engine's mixed-precision norms take them; under torch's autocast the
# residual stream, and so a norm's input, is float32 instead).
MIXED = ("bfloat16+float32", "float16+float32")


def dtypes_of(dt: str) -> tuple[torch.dtype, torch.dtype]:
    """(input dtype, parameter dtype) of a case's dtype name; KeyError if unknown."""
    x, _, p = dt.partition("+")
    return DTYPES[x], DTYPES[p or x]


LARGE_BYTES = 32 << 20
EPS = 1e-5

# ---------------------------------------------------------------------------------------------
# Suites, as data


def rows_of(elements: int, ns: Iterable[int]) -> tuple[Shape, ...]:
    """(M, N) with M * N near ``elements`` for each N."""
    return tuple((max(1, round(elements / n)), n) for n in ns)


CPU_GRID: tuple[Shape, ...] = ((100, 512), (1000, 1024), (5000, 256), (8192, 768), (2048, 4096),
                               (256, 16384), (32768, 128))
CPU_QUICK: tuple[Shape, ...] = ((100, 512), (1000, 1024), (2048, 4096), (32768, 128))
CUDA_NS = (256, 512, 768, 1000, 1024, 1536, 2048, 2560, 3072, 4096, 5120, 6144, 7168, 8192, 10240, 12288,
           16384, 20000, 24576, 32768, 49152, 65536)
CUDA_MID: tuple[Shape, ...] = ((4096, 1024), (2048, 4096), (8192, 2048), (512, 8192), (16384, 512))
CUDA_GRID: tuple[Shape, ...] = rows_of(2**27, CUDA_NS) + CUDA_MID
CUDA_QUICK: tuple[Shape, ...] = rows_of(2**27, (1024, 4096, 16384, 65536)) + ((4096, 1024),)
DECODE: tuple[Shape, ...] = ((1, 4096), (16, 4096), (128, 8192), (4096, 1024))
# CPU against CUDA, one call as a user makes it, from one row to 2^26 elements.
SIDE_BY_SIDE: tuple[Shape, ...] = tuple((m, n) for n in (1024, 4096) for m in (1, 8, 64, 512, 4096, 16384)
                                        if m * n <= 2**26)

BYTES = {("layer_norm", "fwd"): 2, ("layer_norm", "bwd"): 3, ("layer_norm", "fwd+bwd"): 5,
         ("rms_norm", "fwd"): 2, ("rms_norm", "bwd"): 3, ("rms_norm", "fwd+bwd"): 5,
         ("fused_add_layer_norm", "fwd"): 4, ("fused_add_layer_norm", "fwd+bwd"): 7,
         ("fused_add_rms_norm", "fwd"): 4, ("fused_add_rms_norm", "fwd+bwd"): 7}


@dataclass(frozen=True)
class Suite:
    """ops x shapes x dtypes x modes x impls on one device, timed one way."""
    name: str
    device: str  # "cpu", "cuda", or "cpu+cuda" (the same calls on both)
    level: str  # "user" (public functions, autograd) or "kernel" (the fwd / bwd ops alone)
    ops: tuple[str, ...]
    shapes: tuple[Shape, ...]
    dtypes: tuple[str, ...]
    modes: tuple[str, ...]  # user: fwd, fwd+bwd; kernel: fwd, bwd
    impls: tuple[str, ...]  # "torch" is the reference of speedups
    timer: str  # "interleaved" (CPU), "device" (CUDA kernel time), "host" (calls in a loop), "profile"
    about: str
    quick_shapes: tuple[Shape, ...] = ()  # --quick runs these (none: the suite is left out)
    phases: tuple[str, ...] = ("e2e",)  # CPU: "warm" too for large outputs
    threads: Optional[int] = None  # torch.set_num_threads for the suite (restored after)
    default: bool = True  # part of a plain run (else only by --suites)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PEERS_USER = ("torch", "compile", "liger", "quack")
OFFSET = "fastln-offset"  # fastln with weight_offset=1 (Gemma's 1 + w), beside plain fastln
SUITES: tuple[Suite, ...] = (
    Suite("user", "cpu", "user", ("layer_norm",), CPU_GRID, ("float32", "bfloat16"), ("fwd", "fwd+bwd"),
          ("fastln", "torch", "compile", "baseline"), "interleaved",
          "LayerNorm as a user calls it: fastln.layer_norm against F.layer_norm, torch.compile and the "
          "textbook formula in primitive ops; e2e and, for outputs >= 32 MB, warm",
          CPU_QUICK, phases=("e2e", "warm")),
    Suite("ops", "cpu", "user", ("rms_norm", "fused_add_layer_norm", "fused_add_rms_norm"),
          ((1000, 1024), (8192, 768), (2048, 4096)), ("float32", "bfloat16"), ("fwd", "fwd+bwd"),
          ("fastln", "torch", "compile"), "interleaved",
          "RMSNorm and the fused residual adds as a user calls them; torch: F.rms_norm, and x + r then the norm",
          ((1000, 1024),)),
    Suite("kernel", "cpu", "kernel", ("layer_norm", "rms_norm"), CPU_GRID[1:], ("float32", "bfloat16"),
          ("fwd", "bwd"), ("fastln", "torch"), "interleaved",
          "the forward and backward ops alone (no autograd, no Python wrapper) against aten's",
          ((1000, 1024),)),
    Suite("calls", "cpu", "user", ("layer_norm", "rms_norm"), ((1, 512), (100, 512), (1, 4096)), ("float32",),
          ("fwd", "fwd+bwd"), ("fastln", "torch"), "interleaved",
          "per-call cost of small eager calls, one thread (read min_s: a busy machine only inflates it)",
          ((1, 512),), threads=1),
    Suite("isa", "cpu", "user", ("layer_norm",), ((1000, 1024), (5000, 256), (256, 16384)), ("float32", "bfloat16"),
          ("fwd", "fwd+bwd"), ("fastln@*",), "interleaved",
          "fastln's kernel builds (every ISA this CPU runs: base, avx2, avx512, avx512bf16) against each "
          "other, one thread", threads=1, default=False),
    Suite("kernel", "cuda", "kernel", ("layer_norm",), CUDA_GRID, ("bfloat16", "float16", "float32"),
          ("fwd", "bwd"), ("fastln", "torch", "liger", "quack"), "device",
          "LayerNorm forward and backward (dX, dgamma, dbeta) alone at M*N ~ 2^27 and mid sizes, "
          "against aten, Liger's and Quack's kernels", CUDA_QUICK),
    Suite("ops", "cuda", "kernel", ("rms_norm", "fused_add_layer_norm", "fused_add_rms_norm"),
          rows_of(2**27, (1024, 4096, 16384)) + ((4096, 4096),), ("bfloat16", "float32"), ("fwd", "bwd"),
          ("fastln", OFFSET, "torch"), "device",
          "RMSNorm and the fused residual adds alone; torch: aten's fused RMSNorm kernels, x + r then the norm; "
          "fastln-offset: fastln with weight_offset=1",
          ((4096, 4096),)),
    Suite("user", "cuda", "user", ("layer_norm", "rms_norm"),
          rows_of(2**27, (1024, 2048, 4096, 8192, 16384)) + CUDA_MID + ((4096, 4096),), ("bfloat16", "float32"),
          ("fwd", "fwd+bwd"), ("fastln",) + PEERS_USER, "device",
          "LayerNorm and RMSNorm through autograd, as a user calls them, against F.*, torch.compile, "
          "Liger and Quack", ((4096, 1024), (4096, 4096))),
    Suite("offset", "cuda", "user", ("rms_norm", "layer_norm"), ((16, 4096), (4096, 4096), (32768, 4096)),
          ("bfloat16",), ("fwd", "fwd+bwd"), ("fastln", OFFSET, "torch", "torch-offset", "quack", "quack-offset"), "device",
          "the weight offset (Gemma's 1 + w) as a user calls it: fastln, torch and Quack without and with it "
          "(fastln and Quack: weight_offset=1; torch: its norm of the weight + 1 formed first)", ((4096, 4096),)),
    Suite("mixed", "cuda", "user", ("rms_norm", "layer_norm"), ((4096, 1024), (2048, 4096), (4096, 4096), (32768, 4096)),
          ("bfloat16+float32",), ("fwd", "fwd+bwd"), ("fastln", OFFSET) + PEERS_USER + ("quack-offset",), "device",
          "mixed precision: bf16 activations with float32 weight and bias, through autograd, against F.*, "
          "torch.compile, Liger and Quack where they take it (F.rms_norm runs its unfused path on mixed dtypes); "
          "fastln-offset: weight_offset=1",
          ((4096, 4096),)),
    Suite("calls", "cuda", "user", ("layer_norm", "rms_norm"), DECODE, ("bfloat16",), ("fwd", "fwd+bwd"),
          ("fastln", OFFSET, "torch"), "host",
          "decode and small-batch eager calls: time per call in a loop of back-to-back calls (host overhead "
          "counts); fastln-offset: fastln with weight_offset=1", DECODE[:2]),
    Suite("bwd_kernels", "cuda", "kernel", ("layer_norm", "rms_norm"),
          rows_of(2**27, (4096, 8192, 12288, 16384, 32768, 65536)) + ((4096, 1024),), ("bfloat16", "float32"),
          ("bwd",), ("fastln+pdl=0",), "profile",
          "the backward's device time per kernel (row kernel, dgamma/dbeta reduction) by torch.profiler, the "
          "reduction launched after the row kernel (plan override pdl=0: launched early, it would wait on the SMs "
          "and the profile would count the wait)", default=False),
    Suite("plans", "cuda", "kernel", ("layer_norm",), rows_of(2**27, (12288, 16384, 32768, 65536)),
          ("bfloat16", "float16", "float32"), ("fwd", "bwd"), ("fastln",), "device",
          "launch-plan A/B: fastln's own plans against the overrides given by --plans (cluster sizes, staged "
          "kernels, rows an iteration, PDL: fastln._C.cuda_plan_overrides), interleaved in one process",
          default=False),
    Suite("devices", "cpu+cuda", "user", ("layer_norm",), SIDE_BY_SIDE, ("float32",), ("fwd", "fwd+bwd"),
          ("fastln", "torch"), "host",
          "the same calls on the CPU and on the GPU, per size: where each device wins, for fastln and for torch",
          SIDE_BY_SIDE[:4]),
)


def suites_for(device: str, names: Optional[Sequence[str]] = None, quick: bool = False) -> list[Suite]:
    """The suites a run on ``device`` ("cpu" or "cuda") takes: by name, else the default ones
    (under --quick those with quick shapes). "cpu+cuda" suites belong to CUDA runs."""
    mine = [s for s in SUITES if s.device == device or (device == "cuda" and s.device == "cpu+cuda")]
    if names:
        unknown = sorted(set(names) - {s.name for s in mine})
        if unknown:
            raise ValueError(f"no suite {unknown[0]!r} on {device}; choose from "
                             f"{', '.join(sorted({s.name for s in mine}))}")
        return [s for s in mine if s.name in names]
    return [s for s in mine if s.default and (s.quick_shapes or not quick)]


# ---------------------------------------------------------------------------------------------
# Implementations: (impl, op, level, mode) -> a runner over one case's tensors


class Skip(Exception):
    """This implementation cannot run this case (missing package, API, dtype or device)."""


def baseline(x: Tensor, shape: Sequence[int], w: Tensor, b: Tensor, eps: float = EPS) -> Tensor:
    """The textbook formula from torch primitive ops (computed in float32)."""
    xf = x.float()
    d = xf - xf.mean(-1, keepdim=True)
    y = d * torch.rsqrt((d * d).mean(-1, keepdim=True) + eps) * w.float() + b.float()
    return y.to(x.dtype)


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as e:  # ImportError, or a package that fails on import (no GPU, ...)
        raise Skip(f"{name} not importable ({type(e).__name__})") from None


def _attr(module: str, *names: str) -> Any:
    mod = _import(module)
    for n in names:
        if hasattr(mod, n):
            return getattr(mod, n)
    raise Skip(f"{module} has none of {', '.join(names)}")


def _compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process (its counters survive torch._dynamo.reset)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """torch.compile of ``fn`` for one case. Dynamo counts the specializations of a function's code
    (each shape, dtype and requires_grad) and past ``recompile_limit`` (8) runs new ones eagerly,
    silently: a suite of more cases timed torch eager under the name "compile" (the user and mixed
    suites, from an op's ninth case in a process on; until session 35). A cell's runners hold one
    compiled function, made before its rounds, so Dynamo's caches can start empty for each case."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def _torch_add_ln(x: Tensor, r: Tensor, ns: Sequence[int], w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    s = x + r
    return F.layer_norm(s, ns, w, b, EPS), s


def _torch_add_rms(x: Tensor, r: Tensor, ns: Sequence[int], w: Tensor) -> tuple[Tensor, Tensor]:
    s = x + r
    return F.rms_norm(s, ns, w, EPS), s


def user_fn(impl: str, op: str) -> Callable[..., Any]:
    """A function (x, r, w, b) -> output(s) as a user calls it."""
    if impl == OFFSET or impl == "fastln" or impl.startswith(("fastln@", "fastln+")):
        c = 1.0 if impl == OFFSET else 0.0  # OFFSET: Gemma's 1 + w, the same calls with weight_offset=1
        return {"layer_norm": lambda x, r, w, b: fastln.layer_norm(x, (x.shape[-1],), w, b, EPS, weight_offset=c),
                "rms_norm": lambda x, r, w, b: fastln.rms_norm(x, (x.shape[-1],), w, EPS, weight_offset=c),
                "fused_add_layer_norm": lambda x, r, w, b: fastln.fused_add_layer_norm(
                    x, r, (x.shape[-1],), w, b, EPS, weight_offset=c),
                "fused_add_rms_norm": lambda x, r, w, b: fastln.fused_add_rms_norm(
                    x, r, (x.shape[-1],), w, EPS, weight_offset=c),
                }[op]
    if impl in ("torch", "compile"):
        plain: dict[str, Callable[..., Any]] = {
            "layer_norm": lambda x, r, w, b: F.layer_norm(x, (x.shape[-1],), w, b, EPS),
            "rms_norm": lambda x, r, w, b: F.rms_norm(x, (x.shape[-1],), w, EPS),
            "fused_add_layer_norm": lambda x, r, w, b: _torch_add_ln(x, r, (x.shape[-1],), w, b),
            "fused_add_rms_norm": lambda x, r, w, b: _torch_add_rms(x, r, (x.shape[-1],), w)}
        return plain[op] if impl == "torch" else _compiled(plain[op])
    if impl == "baseline":
        if op != "layer_norm":
            raise Skip("the textbook baseline is LayerNorm's")
        return lambda x, r, w, b: baseline(x, (x.shape[-1],), w, b)
    if impl == "liger":
        if op == "layer_norm":
            f = _attr("liger_kernel.transformers.functional", "liger_layer_norm")
            return lambda x, r, w, b: f(x, w, b, EPS)
        if op == "rms_norm":
            g = _attr("liger_kernel.transformers.functional", "liger_rms_norm")
            return lambda x, r, w, b: g(x, w, EPS)
        raise Skip(f"no Liger {op}")
    if impl == "torch-offset":  # what a user writes for Gemma's 1 + w with torch's own norm
        if op == "layer_norm":
            return lambda x, r, w, b: F.layer_norm(x, (x.shape[-1],), w + 1.0, b, EPS)
        if op == "rms_norm":
            return lambda x, r, w, b: F.rms_norm(x, (x.shape[-1],), w + 1.0, EPS)
        raise Skip(f"no torch-offset {op}")
    if impl == "quack-offset":
        if op == "rms_norm":
            qo = _attr("quack.rmsnorm", "rmsnorm")
            return lambda x, r, w, b: qo(x, w, eps=EPS, weight_offset=1.0)
        raise Skip(f"Quack has no autograd {op} with a weight offset")
    if impl == "quack":
        if op == "rms_norm":
            q = _attr("quack.rmsnorm", "rmsnorm")
            return lambda x, r, w, b: q(x, w, eps=EPS)
        raise Skip(f"Quack has no autograd {op} (its LayerNorm kernels: the kernel suite)")
    raise Skip(f"unknown implementation {impl}")


def kernel_runner(impl: str, op: str, mode: str, x: Tensor, r: Tensor, w: Tensor, b: Tensor,
                  dy: Tensor) -> Runner:
    """The forward or backward op alone; the backward's saved statistics computed once here."""
    ns, fl, aten = [x.shape[-1]], torch.ops.fastln, torch.ops.aten
    if op.startswith("fused_add") and mode == "bwd":
        raise Skip("the fused adds' backward is the norm's")
    if impl == OFFSET or impl == "fastln" or impl.startswith(("fastln@", "fastln+")):
        c = 1.0 if impl == OFFSET else 0.0  # the ops' weight_offset (OFFSET: Gemma's 1 + w)
        if op == "layer_norm":
            if mode == "fwd":
                return lambda: fl.layer_norm_fwd(x, ns, w, b, EPS, c)
            _, mean, rstd = fl.layer_norm_fwd(x, ns, w, b, EPS, c)
            return lambda: fl.layer_norm_bwd(dy, x, ns, mean, rstd, w, b, [True] * 3, c)
        if op == "rms_norm":
            if mode == "fwd":
                return lambda: fl.rms_norm_fwd(x, ns, w, EPS, c)
            _, rstd = fl.rms_norm_fwd(x, ns, w, EPS, c)
            return lambda: fl.rms_norm_bwd(dy, x, ns, rstd, w, [True, True], c)
        rms = op == "fused_add_rms_norm"
        return lambda: fl.add_norm_fwd(x, r, ns, w, None if rms else b, EPS, rms, False, c)
    if impl == "torch":
        if op == "layer_norm":
            if mode == "fwd":
                return lambda: aten.native_layer_norm(x, ns, w, b, EPS)
            _, mean, rstd = aten.native_layer_norm(x, ns, w, b, EPS)
            return lambda: aten.native_layer_norm_backward(dy, x, ns, mean, rstd, w, b, [True] * 3)
        if op == "rms_norm":
            if mode == "fwd":
                return lambda: aten._fused_rms_norm(x, ns, w, EPS)
            _, rstd = aten._fused_rms_norm(x, ns, w, EPS)
            return lambda: aten._fused_rms_norm_backward(dy, x, ns, rstd, w, [True, True])
        if op == "fused_add_rms_norm":
            return lambda: aten._fused_rms_norm(x + r, ns, w, EPS)
        return lambda: aten.native_layer_norm(x + r, ns, w, b, EPS)
    if impl == "liger" and op == "layer_norm":  # ../shared/peers/device-peers.md's calls
        lf = _attr("liger_kernel.ops.layer_norm", "layer_norm_forward")
        if mode == "fwd":
            return lambda: lf(x, w, b, EPS)
        lb = _attr("liger_kernel.ops.layer_norm", "layer_norm_backward")
        out = lf(x, w, b, EPS)  # (Y, X, Mean, RSTD, ...): the tail's length differs between versions
        mean, rstd = out[2], out[3]
        return lambda: lb(dy, x, w, b, mean, rstd)
    if impl == "quack" and op == "layer_norm":  # fp32 parameters required
        qf = _attr("quack.rmsnorm", "layernorm_fwd")
        w32, b32 = w.float(), b.float()
        if mode == "fwd":
            return lambda: qf(x, w32, b32, EPS, return_rstd=True, return_mean=True)
        qb = _attr("quack.rmsnorm", "layernorm_bwd")
        _, rstd, mean = qf(x, w32, b32, EPS, return_rstd=True, return_mean=True)[:3]
        return lambda: qb(x, w32, dy, rstd, mean, has_bias=True)
    raise Skip(f"no {impl} kernel for {op}")


# The overrides of cuda/launch_plan.h that are bools (test_cuda.py checks these against the
# extension's own defaults): "pdl=0" -> False, where _C's bool caster needs a bool.
PLAN_BOOLS = ("fwd_staged", "bwd_two_rows", "pdl")


def plan_overrides(impl: str) -> dict[str, Any]:
    """``fastln+cluster_fwd=2+pdl=0`` -> {"cluster_fwd": 2, "pdl": False}: CUDA launch-plan
    overrides (fastln._C.cuda_plan_overrides; cuda/launch_plan.h names the keys)."""
    out: dict[str, Any] = {}
    for kv in impl.split("+")[1:]:
        k, _, v = kv.partition("=")
        if not v.lstrip("-").isdigit():
            raise ValueError(f"plan override {kv!r}: expected KEY=INTEGER")
        out[k] = bool(int(v)) if k in PLAN_BOOLS else int(v)
    return out


def make_runner(suite: Suite, impl: str, op: str, mode: str, x: Tensor, r: Tensor, w: Tensor, b: Tensor,
                dy: Tensor, default_plans: bool = False) -> Runner:
    """One call of ``impl`` on this case; raises Skip where it cannot run. ``default_plans``:
    plain fastln resets the plan overrides before each call (variants run beside it)."""
    overrides = plan_overrides(impl) if impl.startswith("fastln+") else None
    set_overrides: Callable[..., Any] = getattr(_C, "cuda_plan_overrides", None) or (lambda o=None: {})
    if overrides is not None:
        if x.device.type != "cuda" or not hasattr(_C, "cuda_plan_overrides"):
            raise Skip("launch-plan overrides are CUDA's (fastln._C.cuda_plan_overrides)")
        set_overrides(overrides)  # the backward's statistics are computed under the same plans
    if suite.level == "kernel":
        try:  # the backward's statistics come from a forward call: a refusal there is a Skip too
            run = kernel_runner(impl, op, mode, x, r, w, b, dy)
        except Skip:
            raise
        except Exception as e:  # noqa: BLE001 - as the first call below
            raise Skip(f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}") from None
    else:
        fn = user_fn(impl, op)
        if mode == "fwd":
            def run() -> object:
                return fn(x, r, w, b)
        else:
            leaves = tuple(t.detach().requires_grad_() for t in (x, r, w, b))
            xl, rl, wl, bl = leaves
            used = (xl, wl, bl) if op == "layer_norm" else (xl, wl) if op == "rms_norm" else \
                (xl, rl, wl, bl) if op == "fused_add_layer_norm" else (xl, rl, wl)

            def run() -> object:
                out = fn(xl, rl, wl, bl)
                outs = list(out) if isinstance(out, (tuple, list)) else [out]
                return torch.autograd.grad(outs, used, [dy] * len(outs))
    if impl.startswith("fastln@"):
        isa, inner = impl.split("@", 1)[1], run

        def run() -> object:
            _C.set_isa(isa)
            return inner()
    elif overrides is not None or (default_plans and impl == "fastln" and x.device.type == "cuda"):
        ov, inner2 = overrides or {}, run  # each of fastln's runners sets its plans before a call

        def run() -> object:
            set_overrides(ov)
            return inner2()
    graphs = _compiled_graphs() if impl == "compile" else 0
    try:
        run()  # a first call: anything this case cannot do raises here
    except Skip:
        raise
    except Exception as e:  # noqa: BLE001 - a peer's or torch's own refusal (dtype, device)
        raise Skip(f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}") from None
    if impl == "compile" and _compiled_graphs() == graphs:  # Dynamo fell back to eager, silently
        raise Skip("torch.compile compiled no graph for this case (its calls would be torch eager)")
    return run


def expand_impls(suite: Suite) -> list[str]:
    out: list[str] = []
    for impl in suite.impls:
        if impl == "fastln@*":
            out += [f"fastln@{isa}" for isa in _C.available_isas()]
        else:
            out.append(impl)
    return out


# ---------------------------------------------------------------------------------------------
# Timers


def keep_freed_memory() -> bool:
    """glibc: serve large allocations from the heap and never trim it, so a freed output's
    pages are reused (already faulted) by the next call. Process-wide; benchmark only."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 40))


def _stats(samples: list[float], batch: int, method: Literal["exclusive", "inclusive"] = "exclusive") -> dict[str, float]:
    """Median, IQR and minimum; "inclusive" quartiles for a few samples (the device timer's five
    rounds), whose exclusive quartiles sit near the extremes."""
    q = statistics.quantiles(samples, n=4, method=method) if len(samples) > 1 else [samples[0]] * 3
    return {"median_s": statistics.median(samples), "iqr_s": q[2] - q[0], "min_s": min(samples),
            "samples": len(samples), "iters": len(samples) * batch}


def measure(runners: dict[str, Runner], sync: Callable[[], None], budget_s: float) -> dict[str, dict[str, float]]:
    """Interleaved timing: each round times one batch of each runner, in turn, the order
    rotating from round to round. Each batch follows one untimed call of its own runner.
    Both because a runner pays for the memory the one before it freed (glibc gives a large
    freed block back to the kernel, and the next output is page-faulted afresh): in a fixed
    order, fastln, timed right after the allocation-heavy baseline, looked 2-10x slower than
    torch at (1000,1024) and (8192,768) float32. GC off while timing, as timeit."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _measure(runners, sync, budget_s)
    finally:
        if gc_was_enabled:
            gc.enable()


def _measure(runners: dict[str, Runner], sync: Callable[[], None], budget_s: float) -> dict[str, dict[str, float]]:
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
    return {name: _stats(s, batch[name]) for name, s in samples.items()}


def device_time(fn: Runner, warmup_ms: float = 20, rep_ms: float = 80) -> dict[str, float]:
    """A CUDA call's device time: triton.testing.do_bench's median where Triton is importable
    (it flushes L2 before every call), else the same with CUDA events after a 256 MB memset."""
    try:
        import triton.testing as tt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        tt = None
    if tt is not None:
        q = tt.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.25, 0.5, 0.75])
        med = float(q[1]) * 1e-3
        return {"median_s": med, "iqr_s": (float(q[2]) - float(q[0])) * 1e-3, "min_s": float("nan"),
                "samples": 0, "iters": 0}
    cache = torch.empty(256 << 18, dtype=torch.int32, device="cuda")
    fn()
    torch.cuda.synchronize()
    event: Callable[..., Any] = torch.cuda.Event
    start, end = event(enable_timing=True), event(enable_timing=True)
    start.record()
    for _ in range(5):
        cache.zero_()
        fn()
    end.record()
    torch.cuda.synchronize()
    est_ms = max(start.elapsed_time(end) / 5, 1e-3)
    n_warm, n_rep = max(1, int(warmup_ms / est_ms)), max(7, int(rep_ms / est_ms))
    for _ in range(n_warm):
        fn()
    ev = [(event(enable_timing=True), event(enable_timing=True)) for _ in range(n_rep)]
    for s, e in ev:
        cache.zero_()
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return _stats([s.elapsed_time(e) * 1e-3 for s, e in ev], 1)


DEVICE_ROUNDS = 5


def device_times(runners: dict[str, Runner], rounds: int = DEVICE_ROUNDS, warmup_ms: float = 20, rep_ms: float = 80,
                 one: Callable[[Runner, float, float], dict[str, float]] = device_time) -> dict[str, dict[str, float]]:
    """Each runner's device time, interleaved: ``rounds`` rounds, each timing every runner in turn
    (the order rotating) for rep_ms / rounds by ``one``; a runner's median, IQR and minimum are those
    of its rounds' medians. Timed one after another, 100 ms each, cells of the same build moved by
    more than the gaps they decide (Liger fp16 (4096, 1024) 12.2 then 25.7 µs, fastln bf16 (4096,
    1024) 11.0 then 11.7; sessions 22-23): a stall now spoils a round, not a cell."""
    meds: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners.items())
    for i in range(rounds):
        order = order[1:] + order[:1]
        for name, fn in order:
            meds[name].append(one(fn, warmup_ms if i == 0 else warmup_ms / rounds, rep_ms / rounds)["median_s"])
    return {name: _stats(m, 1, "inclusive") for name, m in meds.items()}


def kernel_times(fn: Runner, calls: int = 10) -> dict[str, Any]:
    """Device time a call of each CUDA kernel ``fn`` launches (torch.profiler), and their sum
    as the row's time."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    times: dict[str, float] = {}
    for e in prof.events():
        if getattr(e.device_type, "name", "") == "CUDA":
            name = e.name.split("<")[0].split("::")[-1]
            times[name] = times.get(name, 0.0) + e.device_time * 1e-6 / calls
    total = sum(times.values())
    return {"median_s": total, "iqr_s": None, "min_s": None, "samples": calls, "iters": calls, "kernels": times}


def copy_bandwidth(device: str) -> tuple[float, str]:
    """GB/s of a large copy (read + write counted) on ``device``, and how it was measured."""
    if device == "cuda":
        x = torch.randn(256 << 20, device="cuda")  # 1 GiB
        y = torch.empty_like(x)
        t = device_time(lambda: y.copy_(x))["median_s"]
        return 2 * x.numel() * 4 / t / 1e9, "device-to-device copy_ of 1 GiB, do_bench as the suites"
    x = torch.randn(64 << 18)  # 64 MB
    y = torch.empty_like(x)
    ts: list[float] = []
    for _ in range(20):
        t0 = time.perf_counter()
        y.copy_(x)
        ts.append(time.perf_counter() - t0)
    return 2 * x.numel() * 4 / statistics.median(ts) / 1e9, "torch copy_ of 64 MB (memcpy-like), median of 20"


# ---------------------------------------------------------------------------------------------
# Running suites


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_key(device: str, name: Optional[str] = None) -> str:
    """The results file's name: "cpu", or "cuda_<card>" (cuda_h100, cuda_h200, ...); ``name``: the
    card's (a results file's meta), else this machine's."""
    if device != "cuda":
        return "cpu"
    name = name or torch.cuda.get_device_name()
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name)
    return "cuda_" + (m.group(1) if m else re.sub(r"\W+", "_", name)).lower()


class Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled, self.t0 = total, 0, enabled, time.time()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        frac = self.done / max(self.total, 1)
        eta = (time.time() - self.t0) / frac * (1 - frac)
        sys.stderr.write(f"\r[{'#' * int(30 * frac):<30}] {self.done}/{self.total} eta {eta:4.0f}s {label[:44]:<44}")
        sys.stderr.flush()
        if self.done == self.total:
            sys.stderr.write("\n")


@dataclass
class Plan:
    """A suite as this run takes it: its shapes and dtypes after --quick / --shapes / --dtypes."""
    suite: Suite
    shapes: tuple[Shape, ...]
    dtypes: tuple[str, ...]
    impls: list[str]
    budget_s: float
    skipped: dict[str, str] = field(default_factory=dict)

    def cases(self) -> list[tuple[str, str, str, Shape, str]]:
        """(device, phase, dtype, shape, op) in order; modes are run inside a case."""
        devices = ("cuda", "cpu") if self.suite.device == "cpu+cuda" else (self.suite.device,)
        out = []
        for phase in self.suite.phases:
            for dt in self.dtypes:
                for shape in self.shapes:
                    large = shape[0] * shape[1] * dtypes_of(dt)[0].itemsize >= LARGE_BYTES
                    if phase == "warm" and not large:
                        continue
                    for dev in devices:
                        for op in self.suite.ops:
                            out.append((dev, phase, dt, shape, op))
        return out


class Deadline(Exception):
    """--deadline passed: the run stops before its next case."""


def run_plan(plan: Plan, progress: Progress, copy_gbps: dict[str, float], rows: list[Row],
             deadline: Optional[float] = None) -> None:
    """Appends the plan's rows to ``rows`` case by case (an interrupted run keeps those done);
    ``deadline``: a time.monotonic() after which no case starts."""
    suite = plan.suite
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    if suite.threads:
        torch.set_num_threads(suite.threads)
    isa = _C.isa()
    try:
        for dev, phase, dt, (M, N), op in plan.cases():
            if deadline is not None and time.monotonic() > deadline:
                raise Deadline
            if phase == "warm":
                keep_freed_memory()
            dtype, pdtype = dtypes_of(dt)
            sync: Callable[[], None] = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
            x, r, dy = (torch.randn(M, N, generator=gen).to(dev, dtype) for _ in range(3))
            w = (1 + 0.1 * torch.randn(N, generator=gen)).to(dev, pdtype)
            b = (0.1 * torch.randn(N, generator=gen)).to(dev, pdtype)
            for mode in suite.modes:
                if (op, mode) not in BYTES:
                    progress.step("")
                    continue
                runners: dict[str, Runner] = {}
                for impl in plan.impls:
                    try:
                        runners[impl] = make_runner(suite, impl, op, mode, x, r, w, b, dy,
                                                    any(i.startswith("fastln+") for i in plan.impls))
                    except Skip as e:
                        plan.skipped.setdefault(f"{impl} {op} {mode} {dt}", str(e))
                if suite.timer == "device":
                    res = device_times(runners) if runners else {}
                elif suite.timer == "profile":
                    res = {k: kernel_times(f) for k, f in runners.items()}
                elif suite.timer == "host":
                    # interleaved, as on the CPU: timed one after another, a 10 µs call read 10 µs
                    # in one cell and 16 in the next (the host's state drifts; session 23)
                    res = measure(runners, sync, plan.budget_s * len(runners)) if runners else {}
                else:
                    # The textbook baseline on its own: its temporaries (several of the input's size
                    # a call) slowed the runner after it by up to 20 ms a call (docs/cpu.md).
                    alone = {k: runners.pop(k) for k in ("baseline",) if k in runners}
                    res = measure(runners, sync, plan.budget_s) if runners else {}
                    if alone:
                        res.update(measure(alone, sync, plan.budget_s / 2))
                nbytes = M * N * dtype.itemsize * BYTES[(op, mode)]
                t_ref = res["torch"]["median_s"] if "torch" in res else float("nan")
                for impl, t in res.items():
                    gbps = nbytes / t["median_s"] / 1e9
                    rows.append({"suite": suite.name, "device": dev, "level": suite.level, "op": op, "impl": impl,
                                 "dtype": dt, "M": M, "N": N, "mode": mode, "phase": phase, **t,
                                 "gbps": gbps, "pct_copy": 100 * gbps / copy_gbps[dev],
                                 "speedup_vs_torch": t_ref / t["median_s"]})
                progress.step(f"{suite.name} {dev} {op} {dt} ({M},{N}) {mode}")
    finally:
        torch.set_num_threads(threads)
        if isa != _C.isa():
            _C.set_isa(isa)
        if hasattr(_C, "cuda_plan_overrides"):
            _C.cuda_plan_overrides({})  # the defaults again


def geomean(v: Sequence[float]) -> float:
    v = [a for a in v if a == a]
    return math.exp(sum(math.log(a) for a in v) / len(v)) if v else float("nan")


def summary(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """Per suite (device) and mode: fastln's geomean and minimum speedup over torch (e2e rows)."""
    values: dict[str, list[float]] = {}
    for r in rows:
        if r["impl"] == "fastln" and r.get("phase", "e2e") == "e2e":
            dev = f" {r['device']}" if r.get("device") not in (None, "cpu", "cuda") or r.get("suite") == "devices" else ""
            values.setdefault(f"{r['suite']}{dev} {r['mode']}", []).append(r["speedup_vs_torch"])
    return {k: {"geomean_speedup_vs_torch": geomean(v), "min_speedup_vs_torch": min(v)} for k, v in values.items()}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


def _case(r: Row) -> tuple[Any, ...]:
    return r["suite"], r.get("device"), r.get("phase", "e2e"), r["dtype"], r["M"], r["N"], r["op"]


def merge(old: Optional[dict[str, Any]], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s cases (suite, dtype, shape, op) replace the same cases of ``old`` (same device);
    other cases stay, so a suite run in parts (--dtypes, --shapes: one device call each) adds up."""
    if not old or old.get("schema") != 2:
        return new
    ran = {_case(r) for r in new["results"]}
    rows = [r for r in old["results"] if _case(r) not in ran] + new["results"]
    suites = dict(old["meta"]["suites"])
    for name, m in new["meta"]["suites"].items():
        was = suites.get(name)
        if was:  # shapes, dtypes and impls of both runs, in order; the newer run's other fields;
            # each run's own date, command and copy bandwidth in "parts"
            m = {**m, "shapes": _union(was["shapes"], m["shapes"]), "dtypes": _union(was["dtypes"], m["dtypes"]),
                 "impls": _union(was["impls"], m["impls"]), "skipped": {**was.get("skipped", {}), **m["skipped"]},
                 "parts": _parts(was.get("parts", [_part(was, old["results"], name)]),
                                 _part(m, new["results"], name))}
        suites[name] = m
    meta = {**old["meta"], **{k: v for k, v in new["meta"].items() if k != "suites"}, "suites": suites}
    meta["summary"] = summary(rows)
    return {"schema": 2, "meta": meta, "results": rows}


def _part(suite_meta: dict[str, Any], rows: Sequence[Row], suite: str) -> dict[str, Any]:
    """One run's provenance within a merged suite. A run its deadline stopped also keeps the
    (dtype, shape) cases it reached ("cases"): the cases it did not reach keep an older part's rows."""
    keys = ("date", "command", "copy_gbps", "dtypes", "shapes", "commit", "interrupted")
    part: dict[str, Any] = {k: suite_meta[k] for k in keys if k in suite_meta}
    if "interrupted" in suite_meta:
        part["cases"] = sorted({(r["dtype"], r["M"], r["N"]) for r in rows if r["suite"] == suite})
    return part


def _parts(old: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts of a suite once ``new`` has run: an older part whose (dtype, shape) cases the
    parts after it ran again, together, no longer holds rows of the file, and is dropped."""
    def cases(p: dict[str, Any]) -> set[tuple[Any, ...]]:
        if "cases" in p:  # a run stopped before its last cases
            return {(d, (m, n)) for d, m, n in p["cases"]}
        return {(d, tuple(s)) for d in p.get("dtypes", []) for s in p.get("shapes", [])}
    kept, covered = [new], cases(new)
    for p in reversed(old):
        if not (cases(p) and cases(p) <= covered):
            kept.append(p)
        covered |= cases(p)
    return kept[::-1]


def _union(a: Sequence[Any], b: Sequence[Any]) -> list[Any]:
    return list(a) + [v for v in b if v not in a]


def run(device: str, plans: Sequence[Plan], progress: Progress, deadline_s: Optional[float] = None,
        command: str = "") -> dict[str, Any]:
    """Every plan on ``device``; the copy bandwidth measured first, per device used. deadline_s:
    no case starts after that many seconds (the rows done are kept, the suite says so)."""
    deadline = time.monotonic() + deadline_s if deadline_s is not None else None
    torch.manual_seed(0)
    devices = {"cpu", device} | ({"cuda", "cpu"} if any(p.suite.device == "cpu+cuda" for p in plans) else set())
    copies = {d: copy_bandwidth(d) for d in sorted(devices) if d in ("cpu", "cuda")}
    copy_gbps = {d: c[0] for d, c in copies.items()}
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    run_meta = {"date": date, "torch": torch.__version__, "fastln": fastln.__version__,
                "copy_gbps": copy_gbps[device], "copy_method": copies[device][1]}
    rows: list[Row] = []
    suites: dict[str, Any] = {}
    interrupted = None
    for plan in plans:
        try:
            run_plan(plan, progress, copy_gbps, rows, deadline)
        except KeyboardInterrupt:  # Ctrl-C, or `timeout -s INT`: keep the cases done
            interrupted = f"interrupted in suite {plan.suite.name}"
        except Deadline:
            interrupted = f"stopped by --deadline {deadline_s:g} s in suite {plan.suite.name}"
        if interrupted and not any(r["suite"] == plan.suite.name for r in rows):
            break  # nothing of this suite to describe
        timer = plan.suite.timer
        if timer == "device":
            timer += " (triton do_bench" if importlib.util.find_spec("triton") else " (CUDA events"
            timer += f", {DEVICE_ROUNDS} interleaved rounds)"
        elif timer == "host":
            timer += " (interleaved batches)"
        suites[plan.suite.name] = {"definition": plan.suite.as_dict(), "shapes": [list(s) for s in plan.shapes],
                                   "dtypes": list(plan.dtypes), "impls": plan.impls, "budget_s": plan.budget_s,
                                   "timer": timer, "skipped": plan.skipped, **run_meta,
                                   "copy_gbps_by_device": copy_gbps, **({"command": command} if command else {}),
                                   **({"interrupted": interrupted} if interrupted else {})}
        if interrupted:
            break
    meta: dict[str, Any] = {
        "device": device, "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_model(),
        "cpu": cpu_model(), "isa": _C.isa(), "threads": torch.get_num_threads(), **run_meta,
        "cuda": torch.version.cuda, "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE"), "suites": suites}
    meta["summary"] = summary(rows)
    return {"schema": 2, "meta": meta, "results": rows}


# ---------------------------------------------------------------------------------------------
# Tables (README and docs blocks are generated from results files: see render / update_blocks)


def _us(t: float) -> str:
    us = t * 1e6
    return f"{us:.0f}" if us >= 100 else f"{us:.1f}"


def _sel(rows: Iterable[Row], **kw: Any) -> list[Row]:
    return [r for r in rows if all(r.get(k, "e2e" if k == "phase" else None) == v for k, v in kw.items())]


def _shapes_in(rows: Iterable[Row]) -> list[Shape]:
    seen: dict[Shape, None] = {}
    for r in rows:
        seen.setdefault((r["M"], r["N"]), None)
    return list(seen)


def _ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    return sorted(vals, key=lambda v: (order.index(v) if v in order else len(order), v))


def full_table(data: dict[str, Any]) -> str:
    """Every row of every suite: the ``<key>.md`` file a run writes."""
    meta, rows = data["meta"], data["results"]
    out = [f"{meta.get('device_name', meta['device'])}, torch {meta['torch']}, fastln {meta.get('fastln', '?')}, "
           f"{meta.get('date', '?')}. Median time per call (IQR); speedup = torch time / fastln time; "
           f"% of the copy bandwidth measured in the run ({meta['copy_gbps']:.1f} GB/s: "
           f"{meta.get('copy_method', '?')})."]
    for name, s in meta["suites"].items():
        srows = [r for r in rows if r["suite"] == name]
        if not srows:
            continue
        impls = _ordered((r["impl"] for r in srows), ("fastln", "torch", "compile", "liger", "quack", "baseline"))
        out += ["", f"### {name}: {s['definition']['about']}", f"Timer: {s.get('timer', '?')}; {s.get('date', '')}.",
                "", "| device | phase | op | dtype | shape | mode | " + " | ".join(impls) +
                " | fastln GB/s | % copy | speedup |", "|" + "---|" * (len(impls) + 9)]
        groups: dict[tuple[Any, ...], dict[str, Row]] = {}
        for r in srows:
            k = (r.get("device", meta["device"]), r.get("phase", "e2e"), r["op"], r["dtype"], r["M"], r["N"], r["mode"])
            groups.setdefault(k, {})[r["impl"]] = r
        for (dev, ph, op, dt, M, N, mode), g in groups.items():
            cells = [f"{_us(g[i]['median_s'])} (±{_us(g[i]['iqr_s'])})" if i in g and g[i].get("iqr_s") is not None
                     else (_us(g[i]["median_s"]) if i in g else "–") for i in impls]
            f = g.get("fastln") or next(iter(g.values()))
            out.append(f"| {dev} | {ph} | {op} | {dt} | ({M},{N}) | {mode} | " + " | ".join(cells) +
                       f" | {f['gbps']:.1f} | {f['pct_copy']:.1f} | " +
                       (f"{f['speedup_vs_torch']:.2f}x |" if f["speedup_vs_torch"] == f["speedup_vs_torch"] else "– |"))
        if s.get("skipped"):
            out += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in sorted(s["skipped"].items())[:20])]
    out += ["", "Geometric mean speedup of fastln over torch: " + "; ".join(
        f"{k} {v['geomean_speedup_vs_torch']:.2f}x (min {v['min_speedup_vs_torch']:.2f}x)"
        for k, v in meta.get("summary", {}).items()) + "."]
    return "\n".join(out) + "\n"


def view_user(data: dict[str, Any], suite: str = "user", op: str = "layer_norm") -> str:
    """fastln / torch per shape and mode, as the README's CPU table."""
    rows = _sel(data["results"], suite=suite, op=op, phase="e2e")
    modes = _ordered((r["mode"] for r in rows), ("fwd", "fwd+bwd", "bwd"))
    lines = ["| dtype | shape | " + " | ".join(f"{m}: fastln / torch (µs) | speedup" for m in modes) + " |",
             "|---|---|" + "---|---|" * len(modes)]
    for dt in _ordered((r["dtype"] for r in rows), list(DTYPES) + list(MIXED)):
        for M, N in _shapes_in(_sel(rows, dtype=dt)):
            cells = []
            for m in modes:
                g = {r["impl"]: r for r in _sel(rows, dtype=dt, M=M, N=N, mode=m)}
                f, t = g.get("fastln"), g.get("torch")
                cells.append(f"{_us(f['median_s'])} / {_us(t['median_s'])} | {f['speedup_vs_torch']:.2f}x"
                             if f and t else "– | –")
            lines.append(f"| {dt} | ({M}, {N}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def view_summary(data: dict[str, Any], suite: str = "user") -> str:
    """One sentence: fastln's geomean speedups over torch eager (e2e) and torch.compile."""
    parts = []
    for mode in ("fwd", "fwd+bwd", "bwd"):
        v = [r["speedup_vs_torch"] for r in _sel(data["results"], suite=suite, impl="fastln", mode=mode, phase="e2e")]
        if v:
            parts.append(f"{'forward' if mode == 'fwd' else 'backward' if mode == 'bwd' else 'forward+backward'} "
                         f"{geomean(v):.2f}x (min {min(v):.2f}x)")
    vs_compile = []
    for mode in ("fwd", "fwd+bwd"):
        f = {(r["dtype"], r["M"], r["N"]): r["median_s"] for r in
             _sel(data["results"], suite=suite, impl="fastln", mode=mode, phase="e2e")}
        c = {(r["dtype"], r["M"], r["N"]): r["median_s"] for r in
             _sel(data["results"], suite=suite, impl="compile", mode=mode, phase="e2e")}
        if c:
            vs_compile.append(f"{geomean([c[k] / f[k] for k in c if k in f]):.2f}x")
    text = f"Geometric mean speedup of fastln over torch eager: **{', '.join(parts)}**"
    if vs_compile:
        text += f"; over torch.compile {' / '.join(vs_compile)}"
    return text + "."


SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}  # dtype names in tables


def view_bandwidth(data: dict[str, Any], suite: str = "kernel", op: str = "layer_norm") -> str:
    """% of copy bandwidth per N (rows of the suite's largest M*N) and dtype, forward / backward,
    with bf16 times and torch's; smaller shapes in µs below. The README's CUDA table."""
    rows = _sel(data["results"], suite=suite, op=op)
    big = max((r["M"] * r["N"] for r in rows), default=0)
    dts = _ordered((r["dtype"] for r in rows), ("bfloat16", "float16", "float32"))
    first = dts[0] if dts else "bfloat16"
    lines = ["| N | " + " | ".join(f"{SHORT.get(d, d)} fwd / bwd %copy" for d in dts) +
             f" | {SHORT.get(first, first)} µs fwd / bwd (torch) |", "|---|" + "---|" * (len(dts) + 1)]

    def get(dt: str, M: int, N: int, mode: str, impl: str = "fastln") -> Optional[Row]:
        g = _sel(rows, dtype=dt, M=M, N=N, mode=mode, impl=impl)
        return g[0] if g else None

    shapes = _shapes_in(rows)
    for M, N in sorted((s for s in shapes if s[0] * s[1] > big // 2), key=lambda s: s[1]):
        cells = []
        for dt in dts:
            f, b = get(dt, M, N, "fwd"), get(dt, M, N, "bwd")
            cells.append(f"{f['pct_copy']:.1f} / {b['pct_copy']:.1f}" if f and b else "–")
        f, b, tf, tb = (get(first, M, N, m, i) for i, m in
                        (("fastln", "fwd"), ("fastln", "bwd"), ("torch", "fwd"), ("torch", "bwd")))
        us = (f"{_us(f['median_s'])} / {_us(b['median_s'])} ({_us(tf['median_s'])} / {_us(tb['median_s'])})"
              if f and b and tf and tb else "–")
        lines.append(f"| {N} | " + " | ".join(cells) + f" | {us} |")
    for M, N in (s for s in shapes if s[0] * s[1] <= big // 2):
        cells = []
        for dt in dts:
            f, b = get(dt, M, N, "fwd"), get(dt, M, N, "bwd")
            cells.append(f"{_us(f['median_s'])} / {_us(b['median_s'])} µs" if f and b else "–")
        tf, tb = get(first, M, N, "fwd", "torch"), get(first, M, N, "bwd", "torch")
        lines.append(f"| ({M}, {N}) | " + " | ".join(cells) +
                     (f" | torch {_us(tf['median_s'])} / {_us(tb['median_s'])} µs |" if tf and tb else " | – |"))
    geo = []
    for mode in ("fwd", "bwd"):
        v = [r["speedup_vs_torch"] for r in _sel(rows, impl="fastln", mode=mode)]
        geo.append(f"{geomean(v):.2f}x {'forward' if mode == 'fwd' else 'backward'}")
    n = len({(r["dtype"], r["M"], r["N"]) for r in rows})
    return "\n".join(lines) + f"\n\nGeometric mean over torch ({n} shapes): {', '.join(geo)}."


def view_ranges(data: dict[str, Any], suite: str = "kernel", op: str = "layer_norm") -> str:
    """fastln's range of % of copy per mode over the largest problems, and the lowest cells."""
    rows = _sel(data["results"], suite=suite, op=op, impl="fastln")
    big = max((r["M"] * r["N"] for r in rows), default=0)
    rows = [r for r in rows if 2 * r["M"] * r["N"] > big]
    parts, low = [], []
    for mode in _ordered((r["mode"] for r in rows), ("fwd", "bwd", "fwd+bwd")):
        v = sorted(_sel(rows, mode=mode), key=lambda r: r["pct_copy"])
        name = {"fwd": "forward", "bwd": "backward"}.get(mode, mode)
        parts.append(f"{name} {v[0]['pct_copy']:.1f}–{v[-1]['pct_copy']:.1f} %")
        low.append(f"{name} " + ", ".join(f"{r['dtype']} {r['N']} {r['pct_copy']:.1f} %" for r in v[:4]))
    size = f"2^{round(math.log2(big))}" if big else "0"
    return (f"fastln at M·N ≈ {size}: {', '.join(parts)} of copy bandwidth; lowest: "
            + "; ".join(low) + ".")


# Issue 25's bars for the kernel suite at M·N ≈ 2^27: % of copy a mode must reach, the geomean
# over torch it must reach, and "behind" meaning slower than the best of the run by more than
# do_bench's run-to-run spread (~0.5 %).
TARGET_PCT = {"fwd": 92.0, "bwd": 88.0}
TARGET_GEOMEAN = {"fwd": 1.6, "bwd": 2.0}
LEVEL = 0.995


def view_targets(data: dict[str, Any], suite: str = "kernel", op: str = "layer_norm") -> str:
    """Which cells of a results file miss issue 25's targets, and by how much: % of copy at the
    large size, geomean over torch, and every shape where a peer of the same run is faster."""
    rows = _sel(data["results"], suite=suite, op=op)
    mine = _sel(rows, impl="fastln")
    big = max((r["M"] * r["N"] for r in mine), default=0)
    names = {"fwd": "Forward", "bwd": "Backward", "fwd+bwd": "Forward + backward"}
    dts = _ordered((r["dtype"] for r in mine), ("bfloat16", "float16", "float32"))
    lines = []
    for mode, bar in TARGET_PCT.items() if suite == "kernel" else ():  # the bars are the kernels'
        if not _sel(mine, mode=mode):
            continue
        miss = []
        for dt in dts:
            low = [r for r in _sel(mine, mode=mode, dtype=dt) if 2 * r["M"] * r["N"] > big and r["pct_copy"] < bar]
            if low:
                miss.append(f"{SHORT.get(dt, dt)} " + ", ".join(f"{r['N']} ({r['pct_copy']:.1f})"
                                                              for r in sorted(low, key=lambda r: r["N"])))
        lines.append(f"- **{names[mode]} ≥ {bar:g} % of copy** at M·N ≈ 2^{round(math.log2(big)) if big else 0}: "
                     + ("met at every N." if not miss else "missed at N (%): " + "; ".join(miss) + "."))
    # the peers of the run (not fastln's own variants: plan overrides, the offset)
    peers = [i for i in _ordered((r["impl"] for r in rows), ("torch", "compile", "liger", "quack"))
             if not i.startswith("fastln")]
    if suite == "kernel":
        geo, bounds = [], []
        for mode, bar in TARGET_GEOMEAN.items():
            cells = _sel(mine, mode=mode)
            g = geomean([r["speedup_vs_torch"] for r in cells])
            name = "forward" if mode == "fwd" else "backward"
            geo.append(f"{g:.2f}x {name} ({'met' if g >= bar else 'target'} {bar:g}x)")
            if g < bar and cells:
                # What the bar asks beside what any kernel gives: the fastest implementation of each
                # cell in this run, and every large cell at 100 % of copy (a kernel's ceiling).
                fastest = geomean([r["speedup_vs_torch"] * r["median_s"] / min(
                    p["median_s"] for p in _sel(rows, mode=mode, dtype=r["dtype"], M=r["M"], N=r["N"])
                    if p["impl"] == "fastln" or p["impl"] in peers) for r in cells])
                at_copy = geomean([r["speedup_vs_torch"] * (100 / r["pct_copy"] if 2 * r["M"] * r["N"] > big else 1)
                                   for r in cells])
                bounds.append(f"{name}: the fastest implementation of each cell would give {fastest:.2f}x, "
                              f"every cell at M·N ≈ 2^{round(math.log2(big)) if big else 0} at 100 % of copy "
                              f"{at_copy:.2f}x")
        lines.append(f"- **Geomean over torch** ({len(_shapes_in(mine))} shapes × dtypes: "
                     f"{len({(r['dtype'], r['M'], r['N']) for r in mine})} cells): " + ", ".join(geo) + "."
                     + (f" Bounds ({'; '.join(bounds)})." if bounds else ""))
    for mode in _ordered((r["mode"] for r in mine), ("fwd", "bwd", "fwd+bwd")):
        behind = []
        for r in _sel(mine, mode=mode):
            cand = [(p["median_s"], p["impl"], p.get("iqr_s") or 0.0)
                    for p in _sel(rows, mode=mode, dtype=r["dtype"], M=r["M"], N=r["N"]) if p["impl"] in peers]
            if cand and min(cand)[0] / r["median_s"] < LEVEL:
                t, who, iqr = min(cand)
                shape = str(r["N"]) if 2 * r["M"] * r["N"] > big else f"({r['M']}, {r['N']})"
                # a gap no wider than either cell's IQR is not told apart from the run's spread
                noise = r["median_s"] - t <= max(iqr, r.get("iqr_s") or 0.0)
                behind.append(f"{SHORT.get(r['dtype'], r['dtype'])} {shape} {t / r['median_s']:.2f}x {who}"
                              + (" (within the IQR)" if noise else ""))
        lines.append(f"- **{names[mode]} at least as fast as the best of {', '.join(peers)}**: "
                     + ("met at every shape." if not behind else
                        f"behind at {len(behind)} cells (fastln's speed relative to the fastest; N alone: M·N ≈ 2^"
                        f"{round(math.log2(big)) if big else 0}): " + "; ".join(behind) + "."))
    return "\n".join(lines)


def view_kernel(data: dict[str, Any], suite: str = "kernel", op: str = "layer_norm") -> str:
    """Every shape: fastln's times and % of copy, torch's times, and the best peer of the same run."""
    rows = _sel(data["results"], suite=suite, op=op)
    peers = [i for i in _ordered((r["impl"] for r in rows), ("torch", "compile", "liger", "quack"))
             if not i.startswith("fastln")]  # not fastln's own variants (plan overrides, offset)
    with_peers = any(p != "torch" for p in peers)  # the best of torch and the peers, where peers ran
    lines = ["| dtype | M×N | fwd µs | fwd %copy | bwd µs | bwd %copy | torch fwd / bwd µs |" +
             (" best of torch and peers fwd / bwd | fastln vs it fwd / bwd |" if with_peers else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if with_peers else "")]
    for dt in _ordered((r["dtype"] for r in rows), ("bfloat16", "float16", "float32")):
        for M, N in _shapes_in(_sel(rows, dtype=dt)):
            g = {(r["impl"], r["mode"]): r for r in _sel(rows, dtype=dt, M=M, N=N)}
            f, b = g.get(("fastln", "fwd")), g.get(("fastln", "bwd"))
            tf, tb = g.get(("torch", "fwd")), g.get(("torch", "bwd"))
            if not (f and b):
                continue
            best = []
            for mode, mine in (("fwd", f), ("bwd", b)):
                cand = [(g[(p, mode)]["median_s"], p) for p in peers if (p, mode) in g]
                best.append(min(cand) if cand else None)
            peer_cell = " / ".join(f"{_us(c[0])} ({c[1]})" if c else "–" for c in best)
            ratio = " / ".join(f"{c[0] / m['median_s']:.2f}x" if c else "–" for c, m in zip(best, (f, b)))
            torch_cell = f"{_us(tf['median_s'])} / {_us(tb['median_s'])}" if tf and tb else "–"
            lines.append(f"| {dt} | {M}×{N} | {_us(f['median_s'])} | {f['pct_copy']:.1f} | {_us(b['median_s'])} | "
                         f"{b['pct_copy']:.1f} | {torch_cell} |" + (f" {peer_cell} | {ratio} |" if with_peers else ""))
    return "\n".join(lines)


def view_peers(data: dict[str, Any], suite: str = "kernel", op: str = "layer_norm", dtype: str = "bfloat16",
               ns: str = "1024+4096+16384+65536") -> str:
    """fastln and each peer of the same run, forward / backward µs, at rows of N in ``ns`` (M*N the
    suite's large size) and the mid sizes: the README's short comparison."""
    rows = _sel(data["results"], suite=suite, op=op, dtype=dtype)
    impls = _ordered((r["impl"] for r in rows), ("fastln", "torch", "compile", "liger", "quack"))
    impls = [i for i in impls if i == "fastln" or not i.startswith("fastln")]
    shapes = _shapes_in(rows)
    big = max((m * n for m, n in shapes), default=0)
    keep = [sh for sh in shapes if (sh[1] in {int(n) for n in ns.split("+")} and sh[0] * sh[1] > big // 2)
            or sh[0] * sh[1] <= big // 8]
    modes = _ordered((r["mode"] for r in rows), ("fwd", "bwd", "fwd+bwd"))
    lines = [f"| {dtype} (M, N) | " + " | ".join(f"{i} {' / '.join(modes)}" for i in impls) + " |",
             "|---|" + "---|" * len(impls)]
    for M, N in keep:
        g = {(r["impl"], r["mode"]): r for r in _sel(rows, M=M, N=N)}
        cells = []
        for i in impls:
            ts = [g[(i, m)]["median_s"] if (i, m) in g else None for m in modes]
            best = [min((g[(j, m)]["median_s"] for j in impls if (j, m) in g), default=None) for m in modes]
            cells.append(" / ".join("–" if t is None else (f"**{_us(t)}**" if t == b else _us(t))
                                    for t, b in zip(ts, best)))
        lines.append(f"| ({M}, {N}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nBold: the fastest of the run at that shape and mode."


def view_run(data: dict[str, Any], suite: str) -> str:
    """Where a suite's numbers come from: date, device, torch, commit, command, timer, copy."""
    meta = data["meta"]
    s = meta["suites"][suite]
    bits = [f"{meta.get('device_name', meta['device'])}", f"torch {s.get('torch', meta['torch'])}"]
    if s.get("commit"):
        bits.append(f"fastln at {s['commit']}")
    bits.append(f"run of {s.get('date', '?')[:10]}")
    text = ", ".join(bits) + f"; timer: {s.get('timer', '?')}; copy bandwidth {s.get('copy_gbps', meta['copy_gbps']):.1f} GB/s"
    if s.get("copy_method"):
        text += f" ({s['copy_method']})"
    parts = s.get("parts", [])
    if len(parts) > 1:  # a suite run in parts: each part's date, dtypes, copy and command
        text += "; run in parts: " + "; ".join(
            f"{p.get('date', '?')[:16].replace('T', ' ')} ({', '.join(p.get('dtypes', []))}; copy "
            f"{p.get('copy_gbps', 0):.0f} GB/s" + (f"; {p['interrupted']}, {len(p.get('cases', []))} cases reached"
                                                   if p.get("interrupted") else "") + ")"
            + (f" `{p['command']}`" if p.get("command") else "") for p in parts)
    elif s.get("command"):
        text += f"; command: `{s['command']}`" + (f" ({s['interrupted']})" if s.get("interrupted") else "")
    if s.get("converted"):
        text += f" (converted {s['converted']}; today `python -m fastln bench"
        text += (" --device cuda" if meta["device"] == "cuda" else "") + f" --suites {suite}`)"
    return text + "."


VIEWS: dict[str, Callable[..., str]] = {"user": view_user, "summary": view_summary, "bandwidth": view_bandwidth,
                                        "kernel": view_kernel, "run": view_run, "ranges": view_ranges,
                                        "peers": view_peers, "targets": view_targets}
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w.:+-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def render(name: str, results_dir: Path) -> str:
    """A block's contents from its name: ``FILE:VIEW[:SUITE[:OP]]``, FILE a results file's stem
    in ``results_dir`` (cpu, cuda_h100), VIEW one of ``VIEWS``."""
    parts = name.split(":")
    view = VIEWS[parts[1]]
    path = Path(results_dir) / f"{parts[0]}.json"
    if not path.exists() and re.fullmatch(r"cuda_\w+", parts[0]):
        # A card not yet run (the H200): the block says so until a run is merged (how, in the
        # run line's block).
        if parts[1] != "run":
            return "Not measured yet.\n"
        return (f"Not measured yet: no `{path.name}` (a `python -m fastln bench --device cuda` run on "
                f"that card, merged with `--merge`, writes it).\n")
    return view(load(path), *parts[2:]).rstrip("\n") + "\n"


def update_blocks(path: Path, results_dir: Path, check: bool = False) -> list[str]:
    """Rewrite every ``<!-- table:NAME -->...<!-- /table -->`` block of ``path`` from the
    results files; returns the names of blocks that were out of date (not written if check)."""
    text = Path(path).read_text()
    stale: list[str] = []

    def sub(m: re.Match[str]) -> str:
        body = render(m.group("name"), results_dir)
        if body != m.group("body"):
            stale.append(m.group("name"))
        return m.group(1) + body + m.group(4)

    new = BLOCK.sub(sub, text)
    if stale and not check:
        Path(path).write_text(new)
    return stale


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


# ---------------------------------------------------------------------------------------------
# Plots


def plots(data: dict[str, Any], out: Path, key: str) -> list[str]:
    """PNG plots of a results file: per suite, time and % of copy against N (one panel per
    dtype and mode, a line per implementation); for the CPU-against-CUDA suite, where each
    device wins. Returns the paths written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no PNG plots ({out}/{key}.md and {key}.json are written). "
              "For the plots: pip install 'fastln[bench]' (or pip install matplotlib), then run the "
              "benchmark again (or python -m fastln bench --plot FILE).", file=sys.stderr)
        return []
    rows = data["results"]
    written: list[str] = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        srows = [r for r in rows if r["suite"] == suite and r.get("phase", "e2e") == "e2e"]
        if suite == "devices":
            written += _plot_devices(plt, srows, out, key)
            continue
        panels = sorted({(r["op"], r["dtype"]) for r in srows})
        modes = _ordered((r["mode"] for r in srows), ("fwd", "bwd", "fwd+bwd"))
        for metric, label in (("median_s", "time per call (µs)"), ("pct_copy", "% of copy bandwidth")):
            fig, axes = plt.subplots(len(panels), len(modes), figsize=(5 * len(modes), 3.2 * len(panels)),
                                     squeeze=False)
            for i, (op, dt) in enumerate(panels):
                for j, mode in enumerate(modes):
                    ax = axes[i][j]
                    if not any(r["op"] == op and r["dtype"] == dt and r["mode"] == mode for r in srows):
                        ax.set_axis_off()  # e.g. a mode of one op only (ops: the fused adds' bwd)
                        ax.set_title(f"{suite}: {op} {dt} {mode}: not measured", fontsize=9)
                        continue
                    for impl in _ordered((r["impl"] for r in srows), ("fastln", "torch", "compile", "liger", "quack")):
                        pts = sorted((r["N"], r[metric] * (1e6 if metric == "median_s" else 1), r["M"] * r["N"])
                                     for r in srows
                                     if r["impl"] == impl and r["op"] == op and r["dtype"] == dt and r["mode"] == mode)
                        if not pts:
                            continue
                        # a line through the largest problems (M*N alike), other shapes as crosses
                        big = max(p[2] for p in pts)
                        line = [p for p in pts if 2 * p[2] > big]
                        rest = [p for p in pts if 2 * p[2] <= big]
                        if len(line) < 4:  # no common problem size (the CPU grid): one line through all
                            line, rest = pts, []
                        (h,) = ax.plot([p[0] for p in line], [p[1] for p in line], "o-", label=impl, markersize=3)
                        if rest:
                            ax.plot([p[0] for p in rest], [p[1] for p in rest], "x", color=h.get_color(), markersize=5)
                    ax.set_xscale("log", base=2)
                    if metric == "median_s":
                        ax.set_yscale("log")
                    ax.set_title(f"{suite}: {op} {dt} {mode}", fontsize=9)
                    ax.set_xlabel("N (M varies: see the table; crosses: smaller problems)", fontsize=8)
                    ax.set_ylabel(label, fontsize=8)
                    ax.legend(fontsize=7)
            fig.tight_layout()
            path = out / f"{key}_{suite}_{'time' if metric == 'median_s' else 'copy'}.png"
            fig.savefig(path, dpi=70)
            plt.close(fig)
            written.append(str(path))
    return written


def _plot_devices(plt: Any, rows: list[Row], out: Path, key: str) -> list[str]:
    """CPU time / GPU time per size (M*N), for fastln and for torch: above 1 the GPU wins."""
    modes = _ordered((r["mode"] for r in rows), ("fwd", "fwd+bwd"))
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 3.8), squeeze=False)
    for j, mode in enumerate(modes):
        ax = axes[0][j]
        for impl in ("fastln", "torch"):
            for N in sorted({r["N"] for r in rows}):
                t = {(r["device"], r["M"]): r["median_s"] for r in rows
                     if r["impl"] == impl and r["mode"] == mode and r["N"] == N}
                ms = sorted(m for d, m in t if d == "cpu" and ("cuda", m) in t)
                if ms:
                    ax.plot([m * N for m in ms], [t[("cpu", m)] / t[("cuda", m)] for m in ms], "o-",
                            label=f"{impl}, N={N}", markersize=3)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"CPU time / GPU time, {mode} (> 1: the GPU wins)", fontsize=9)
        ax.set_xlabel("elements M·N", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"{key}_devices.png"
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return [str(path)]


# ---------------------------------------------------------------------------------------------
# Command line


def _shapes(text: str) -> tuple[Shape, ...]:
    try:
        shapes = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(sh) != 2 or min(sh) < 1 for sh in shapes):
        raise argparse.ArgumentTypeError(f"expected shapes like 100x512,2048x4096, got {text!r}")
    return tuple((sh[0], sh[1]) for sh in shapes)


def _dtypes(text: str) -> tuple[str, ...]:
    names = text.split(",")
    unknown = [n for n in names if n not in DTYPES and n not in MIXED]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown dtype {unknown[0]!r}; choose from "
                                         f"{', '.join(list(DTYPES) + list(MIXED))}")
    return tuple(names)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastln bench", description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the suites' quick shapes, short runs, no torch.compile")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--suites", default=None, metavar="NAME,...", help="these suites of the device (see --list)")
    p.add_argument("--out", default="bench/results", help="directory of the results file, its table and plots")
    p.add_argument("--fresh", action="store_true", help="replace the results file instead of merging suites into it")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--budget", type=float, default=None, help="seconds per measurement (interleaved and host timers)")
    p.add_argument("--shapes", type=_shapes, default=None, metavar="MxN,...",
                   help="these shapes instead of the suites' (alone: the main 'user' suite only)")
    p.add_argument("--dtypes", type=_dtypes, default=None, metavar="NAME,...",
                   help=f"of {','.join(DTYPES)}, or {','.join(MIXED)} (float32 parameters on 16-bit input)")
    p.add_argument("--plans", default=None, metavar="K=V+K=V,...",
                   help="CUDA: fastln under these launch-plan overrides beside its own plans, e.g. "
                        "'cluster_fwd=2+cluster_bwd=2,cluster_fwd=4' (alone: the 'plans' suite)")
    p.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="start no case after this many seconds; the results keep the cases done (a device "
                        "call's time limit)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--list", action="store_true", help="print the suites (as data) and exit")
    p.add_argument("--plot", nargs="+", metavar="FILE", help="draw the plots of these results files into --out")
    p.add_argument("--merge", nargs="+", metavar="FILE",
                   help="merge these results files (runs brought back from a device, in order) into --out's "
                        "file of their device; its table and plots are rewritten")
    p.add_argument("--readme", action="store_true",
                   help="rewrite the generated table blocks of README.md and docs/*.md from bench/results")
    p.add_argument("--check", action="store_true", help="with --readme: only report blocks out of date (exit 1)")
    p.add_argument("--root", default=".", help="with --readme: the repository root")
    return p


def make_plans(args: argparse.Namespace) -> list[Plan]:
    plans_arg = getattr(args, "plans", None)
    names = args.suites.split(",") if args.suites else (["user"] if args.shapes else ["plans"] if plans_arg else None)
    variants = [f"fastln+{v}" for v in plans_arg.split(",")] if plans_arg else []
    known = set(_C.cuda_plan_overrides()) if hasattr(_C, "cuda_plan_overrides") else None
    for v in variants:
        unknown = set(plan_overrides(v)) - known if known is not None else set()  # ValueError if malformed
        if unknown:
            raise ValueError(f"no plan override {sorted(unknown)[0]!r}; choose from {', '.join(sorted(known or ()))}")
    plans = []
    for s in suites_for(args.device, names, args.quick):
        shapes = args.shapes or (s.quick_shapes if args.quick and s.quick_shapes else s.shapes)
        dtypes = tuple(args.dtypes or s.dtypes)
        impls = [i for i in expand_impls(s) if not (i == "compile" and (args.quick or args.no_compile))] + variants
        budget = args.budget if args.budget is not None else (0.15 if args.quick else 0.6)
        plans.append(Plan(s, tuple(shapes), dtypes, impls, budget))
    return plans


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        for s in SUITES:
            print(json.dumps(s.as_dict()))
        return 0
    if args.readme:
        root = Path(args.root)
        stale = []
        for path in doc_files(root):
            stale += [f"{path.relative_to(root)}: {n}" for n in update_blocks(path, root / "bench" / "results", args.check)]
        print("\n".join(stale) if stale else "generated tables up to date")
        return 1 if stale and args.check else 0
    out = Path(args.out)
    if args.merge:
        return merge_files([Path(f) for f in args.merge], out)
    if args.plot:
        out.mkdir(parents=True, exist_ok=True)
        for f in args.plot:
            print("\n".join(plots(load(Path(f)), out, Path(f).stem)))
        return 0
    if args.device == "cuda" and not (torch.cuda.is_available() and _C.cuda):
        print("fastln bench: no CUDA device, or fastln built without CUDA kernels", file=sys.stderr)
        return 2
    try:
        plans = make_plans(args)
    except ValueError as e:
        print(f"fastln bench: {e}", file=sys.stderr)
        return 2
    progress = Progress(sum(len(p.cases()) * len(p.suite.modes) for p in plans), not args.no_progress)
    data = run(args.device, plans, progress, args.deadline,
               "python -m fastln bench " + " ".join(argv if argv is not None else sys.argv[1:]))
    for p in plans:
        if p.suite.name in data["meta"]["suites"]:  # not a suite that --deadline left out
            data["meta"]["suites"][p.suite.name]["quick"] = args.quick
    return write_results(data, out, device_key(args.device), fresh=args.fresh)


def write_results(data: dict[str, Any], out: Path, key: str, fresh: bool = False, echo: bool = True) -> int:
    """``data`` merged into ``out/<key>.json`` (unless fresh), with its table and plots beside it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{key}.json"
    if not fresh and path.exists():
        try:
            data = merge(load(path), data)
        except (ValueError, KeyError) as e:  # keep this run's results beside the file it could not join
            side = path.with_name(f"{key}.unmerged.json")
            side.write_text(json.dumps(data, indent=1) + "\n")
            print(f"fastln bench: cannot merge into {path} ({type(e).__name__}: {e}); this run's results are in "
                  f"{side} (--fresh replaces the file)", file=sys.stderr)
            return 1
    data["meta"]["plots"] = plots(data, out, key)
    path.write_text(json.dumps(data, indent=1) + "\n")
    md = full_table(data)
    (out / f"{key}.md").write_text(md)
    if echo:
        print(md)
    return 0


def merge_files(files: Sequence[Path], out: Path) -> int:
    """Each file, in order, merged into the results file of its device (its meta's card) in ``out``."""
    for f in files:
        try:
            data = load(f)
        except (OSError, ValueError) as e:
            print(f"fastln bench: cannot read {f}: {e}", file=sys.stderr)
            return 1
        meta = data.get("meta", {}) if data.get("schema") == 2 else {}
        if meta.get("device") not in ("cpu", "cuda") or (meta["device"] == "cuda" and not meta.get("device_name")):
            print(f"fastln bench: {f} is not a results file of schema 2 naming its device (and card)", file=sys.stderr)
            return 1  # the files before it are merged already: each merge stands alone
        key = device_key(meta["device"], meta.get("device_name"))
        rc = write_results(data, out, key, echo=False)
        if rc:
            return rc
        print(f"merged {f} into {out / key}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
