"""``python -m fastln``: ``info`` (how this install was built and what it runs on), ``check``
(parity of every op against torch on every available device) and ``bench`` (the benchmark
suite, ``fastln.benchmark``)."""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

import fastln
from fastln import _build_info, _C

# ---------------------------------------------------------------------------------------------
# info


def _gpu() -> str:
    if torch.version.cuda is None:
        return "none (this torch is built without CUDA)"
    if not torch.cuda.is_available():
        return f"none visible (torch CUDA {torch.version.cuda})"
    names = []
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        names.append(f"cuda:{i} {torch.cuda.get_device_name(i)} (sm_{major}{minor})")
    return "; ".join(names) + f", torch CUDA {torch.version.cuda}"


def _cpu_name() -> str:
    from fastln.benchmark import cpu_model
    return f"{cpu_model()} ({platform.machine()})"


def info_rows() -> list[tuple[str, str]]:
    """The facts ``python -m fastln info`` prints, as (name, value) pairs."""
    forced = os.environ.get("FASTLN_ISA")
    isa = _C.isa() + (f" (FASTLN_ISA={forced})" if forced else "")
    if _C.cuda:
        cuda = (f"built for {_C.cuda_archs} with CUDA {_build_info.cuda_version or '?'} "
                f"({_build_info.cuda_archs_source or 'architectures as asked'})")
    else:
        cuda = "not built"
    decision = f"FASTLN_CUDA={_build_info.cuda_mode}: {_build_info.cuda_reason}"
    return [
        ("fastln", f"{fastln.__version__} ({os.path.dirname(fastln.__file__)})"),
        ("torch (built against)", _build_info.torch_version),
        ("torch (running)", torch.__version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("compiler", _C.compiler),
        ("CPU", _cpu_name()),
        ("CPU kernels in use", isa),
        ("CPU kernels available", ", ".join(_C.available_isas())),
        ("threads", f"{torch.get_num_threads()} (torch.get_num_threads)"),
        ("CUDA kernels", cuda),
        ("CUDA build decision", decision),
        ("GPU", _gpu()),
    ]


def cmd_info(args: argparse.Namespace) -> int:
    rows = info_rows()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


# ---------------------------------------------------------------------------------------------
# check

# Error allowed against a float64 reference (||out - ref|| / ||ref||), per storage dtype: a few
# units of its rounding. A case also passes within 1.5x of torch's own error in that dtype.
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}

NormFn = Callable[[Tensor, Sequence[int], Optional[Tensor], Optional[Tensor]], Tensor]


@dataclass(frozen=True)
class Op:
    name: str
    fastln: NormFn
    torch: NormFn
    has_bias: bool


def _ops() -> list[Op]:
    ops = [Op("layer_norm", lambda x, ns, w, b: fastln.layer_norm(x, ns, w, b),
              lambda x, ns, w, b: F.layer_norm(x, ns, w, b), True)]
    rms = getattr(fastln, "rms_norm", None)  # RMSNorm, where this build has it
    if rms is not None:
        ops.append(Op("rms_norm", lambda x, ns, w, b: rms(x, ns, w),
                      lambda x, ns, w, b: F.rms_norm(x, ns, w), False))
    return ops


@dataclass(frozen=True)
class Case:
    op: Op
    device: str
    dtype: torch.dtype
    param_dtype: Optional[torch.dtype]  # None: no weight and bias
    shape: tuple[int, ...]
    normalized: int  # trailing dims normalized over


@dataclass
class Result:
    case: Case
    err: float = 0.0  # fastln's worst relative error over the outputs compared
    worst: str = "-"
    torch_err: float = 0.0  # torch's own error in the same dtype for that output
    error: str = ""  # an exception, if fastln raised

    @property
    def tol(self) -> float:
        return max(RTOL[self.case.dtype], 1.5 * self.torch_err)

    @property
    def ok(self) -> bool:
        return not self.error and self.err <= self.tol


def _rel_err(out: Tensor, ref: Tensor) -> float:
    out, ref = out.double(), ref.double()
    if out.shape != ref.shape:
        return float("inf")
    if not ref.numel():
        return 0.0
    scale = max(ref.norm().item(), 1e-3 * ref.numel() ** 0.5)
    err = (out - ref).norm().item() / scale
    return err if err == err else float("inf")  # a NaN where the reference has none fails


def _cases(devices: Sequence[str]) -> list[Case]:
    shapes = [((7, 5), 1), ((3, 17, 64), 1), ((96, 1000), 1), ((4, 6000), 1), ((6, 8, 24), 2)]
    dtypes: list[tuple[torch.dtype, torch.dtype]] = [
        (torch.float32, torch.float32), (torch.float64, torch.float64),
        (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16),
        (torch.bfloat16, torch.float32),  # mixed: 16-bit activations, float32 parameters
    ]
    cases = []
    for op in _ops():
        for device in devices:
            for shape, nd in shapes:
                for dtype, pdtype in dtypes:
                    cases.append(Case(op, device, dtype, pdtype, shape, nd))
                cases.append(Case(op, device, torch.float32, None, shape, nd))
    return cases


def _outputs(fn: NormFn, case: Case, x: Tensor, w: Optional[Tensor], b: Optional[Tensor],
             dy: Tensor) -> dict[str, Tensor]:
    """Forward, a loss, and the gradient of every tensor argument of ``fn`` at (x, w, b)."""
    xl, wl, bl = (None if t is None else t.detach().requires_grad_() for t in (x, w, b))
    assert xl is not None
    y = fn(xl, x.shape[-case.normalized:], wl, bl)
    loss = (y.double() * dy).sum()
    named = [(n, t) for n, t in (("dx", xl), ("dw", wl), ("db", bl)) if t is not None]
    grads = torch.autograd.grad(loss, [t for _, t in named])
    return {"y": y.detach(), "loss": loss.detach(), **{n: g for (n, _), g in zip(named, grads)}}


def run_case(case: Case, gen: torch.Generator) -> Result:
    """Inputs drawn in float64 and rounded to the case's dtypes; fastln and torch both compared
    to torch in float64 on those same rounded inputs."""
    ns = case.shape[-case.normalized:]
    dev = torch.device(case.device)
    x = (torch.randn(case.shape, generator=gen, dtype=torch.float64) * 2 + 0.5).to(dev, case.dtype)
    dy = torch.randn(case.shape, generator=gen, dtype=torch.float64).to(dev)
    w = b = None
    if case.param_dtype is not None:
        w = (1 + 0.5 * torch.randn(ns, generator=gen, dtype=torch.float64)).to(dev, case.param_dtype)
        if case.op.has_bias:
            b = (0.5 * torch.randn(ns, generator=gen, dtype=torch.float64)).to(dev, case.param_dtype)

    def double(t: Optional[Tensor]) -> Optional[Tensor]:
        return None if t is None else t.double()

    ref = _outputs(case.op.torch, case, x.double(), double(w), double(b), dy)
    result = Result(case)
    try:
        ours = _outputs(case.op.fastln, case, x, w, b, dy)
    except Exception as e:  # reported in the table, and a failure
        result.error = f"{type(e).__name__}: {e}".splitlines()[0][:120]
        return result
    try:
        theirs: Optional[dict[str, Tensor]] = _outputs(case.op.torch, case, x, w, b, dy)
    except Exception:  # torch itself cannot do this case
        theirs = None
    worst = -1.0
    for key, r in ref.items():
        candidate = Result(case, _rel_err(ours[key], r), key,
                           _rel_err(theirs[key], r) if theirs is not None else 0.0)
        if candidate.err / candidate.tol > worst:  # the output closest to failing (> 1: fails)
            worst, result = candidate.err / candidate.tol, candidate
    return result


def _dtype_name(case: Case) -> str:
    name = str(case.dtype).removeprefix("torch.")
    if case.param_dtype is None:
        return f"{name}, no affine"
    if case.param_dtype != case.dtype:
        return f"{name}, {str(case.param_dtype).removeprefix('torch.')} params"
    return name


def available_devices() -> list[str]:
    devices = ["cpu"]
    if _C.cuda and torch.cuda.is_available():
        devices.append("cuda")
    return devices


def cmd_check(args: argparse.Namespace) -> int:
    devices = available_devices()
    if args.device:
        if args.device not in devices:
            why = ("fastln is built without CUDA kernels" if not _C.cuda
                   else "no CUDA device is visible")
            print(f"fastln check: device {args.device!r} is not available: {why}", file=sys.stderr)
            return 2
        devices = [args.device]
    elif torch.cuda.is_available() and not _C.cuda:
        print("note: a GPU is present but fastln is built without CUDA kernels: checking CPU only")

    gen = torch.Generator().manual_seed(args.seed)
    header = f"{'op':<11} {'device':<6} {'dtype':<26} {'shape':<15} {'worst':<5} " \
             f"{'max err':>9} {'torch err':>9} {'tol':>8}  result"
    print(header)
    print("-" * len(header))
    failed = 0
    start = time.perf_counter()
    cases = _cases(devices)
    for case in cases:
        r = run_case(case, gen)
        shape = "x".join(map(str, case.shape)) + (f"/{case.normalized}d" if case.normalized > 1 else "")
        status = "ok" if r.ok else ("FAIL " + r.error if r.error else "FAIL")
        print(f"{case.op.name:<11} {case.device:<6} {_dtype_name(case):<26} {shape:<15} "
              f"{r.worst:<5} {r.err:>9.2e} {r.torch_err:>9.2e} {r.tol:>8.1e}  {status}", flush=True)
        failed += not r.ok
    total = len(cases)
    took = time.perf_counter() - start
    print(f"\n{total - failed}/{total} cases passed on {', '.join(devices)} in {took:.1f} s "
          "(errors: ||out - ref|| / ||ref|| against float64, worst of y, loss and gradients)")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# bench


def cmd_bench(argv: Sequence[str]) -> int:
    if any(a == "--model" or a.startswith("--model=") for a in argv):  # HF models: fastln.model_bench
        from fastln import model_bench
        return model_bench.main(list(argv))
    try:
        benchmark = importlib.import_module("fastln.benchmark")
    except ModuleNotFoundError as e:
        if e.name != "fastln.benchmark":
            raise
        print("fastln bench: this build of fastln has no benchmark suite (fastln.benchmark is "
              "missing)", file=sys.stderr)
        return 2
    rc: int = benchmark.main(list(argv))
    return rc


# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastln",
                                description="fastln: build facts, a parity check, benchmarks.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{info,check,bench}")
    sub.add_parser("info", help="versions, compiler, CPU kernel path, threads, CUDA build and GPU")
    check = sub.add_parser("check", help="parity of every op against torch (forward, loss, gradients)")
    check.add_argument("--device", choices=["cpu", "cuda"], help="only this device (default: all available)")
    check.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    sub.add_parser("bench", add_help=False,
                   help="the benchmark suite: bench [--quick] [--device cpu|cuda] [--out DIR]; "
                        "bench --model bert,gpt2,llama,t5: whole HF models (fastln.model_bench)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "bench":  # its options belong to fastln.benchmark
        return cmd_bench(args_list[1:])
    args = _parser().parse_args(args_list)
    if args.command == "info":
        return cmd_info(args)
    return cmd_check(args)
