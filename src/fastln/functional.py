"""Functional API, drop-in for torch.nn.functional.

Each function takes one of three routes, decided before anything runs, and never retries:

- ``_C``'s eager entry to the op: the same dispatcher op as torch.ops.fastln (autograd,
  autocast and dispatch modes apply) without torch.ops' generic argument parsing, ~3 us of a
  ~20 us small call. The entry checks the argument types itself (in C++, where it costs
  nothing) and runs the op only for exactly the types it takes; otherwise it returns
  ``_C.ROUTE_OPS`` or ``_C.ROUTE_COMPOSITE`` without running anything.
- ``torch.ops.fastln`` (ROUTE_OPS) while torch.compile / torch.export trace (they see torch.ops
  only), when ``__torch_function__`` is in play (a tensor subclass or a TorchFunctionMode, which
  torch.ops honours), or for arguments of other types (torch.ops converts them, or fails in
  torch's words).
- The same computation in torch's own differentiable functions (``_composite``,
  ROUTE_COMPOSITE) under a torch.func transform (grad, vjp, jvp, jacrev, jacfwd, vmap),
  forward-mode AD, and ONNX export: fastln's autograd node is C++ and has no forward-mode
  formula or batching rule, and ONNX has no fastln operator, while torch's layer_norm and
  rms_norm have all three.
"""
import numbers
import operator
from typing import Any, Callable, Optional, Sequence, Tuple, Union, cast

import torch
import torch.autograd.forward_ad as _forward_ad
import torch.nn.functional as F
from torch import Tensor

from . import _C

_layer_norm: Callable[..., Tensor] = torch.ops.fastln.layer_norm.default
_layer_norm_me: Callable[..., Tensor] = torch.ops.fastln.layer_norm_memory_efficient.default
_rms_norm: Callable[..., Tensor] = torch.ops.fastln.rms_norm.default
_fused_add_layer_norm: Callable[..., Tuple[Tensor, Tensor]] = torch.ops.fastln.fused_add_layer_norm.default
_fused_add_rms_norm: Callable[..., Tuple[Tensor, Tensor]] = torch.ops.fastln.fused_add_rms_norm.default

_Shape = Union[int, Sequence[int]]

_is_compiling = torch.compiler.is_compiling
_has_torch_function = torch._C._has_torch_function
_peek_interpreter = torch._C._functorch.peek_interpreter_stack
_CInterpreter = torch._C._functorch.CInterpreter
OPS, COMPOSITE = _C.ROUTE_OPS, _C.ROUTE_COMPOSITE


def _traced_route() -> int:
    """The route while tracing or with __torch_function__ (the eager entry is not called).
    A torch.func transform is asked by the interpreter's type, not `is not None`: Dynamo wraps
    peek_interpreter_stack()'s None as an object, so `is not None` read True in every compiled
    region (torch 2.13) and took torch's ops instead of fastln's; isinstance sees the value."""
    if isinstance(_peek_interpreter(), _CInterpreter) or _forward_ad._current_level >= 0:
        return COMPOSITE
    if _is_compiling() and torch.onnx.is_in_onnx_export():
        return COMPOSITE
    return OPS


def _shape(normalized_shape: _Shape) -> Sequence[int]:
    return (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape


def _check_types(op: str, input: object, normalized_shape: object, **params: object) -> None:
    # torch.ops reports a wrong argument type as RuntimeError; torch's functions raise TypeError.
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    if isinstance(normalized_shape, (str, bytes)) or not isinstance(normalized_shape, Sequence):
        raise TypeError(f"{op}: argument 'normalized_shape' must be an int or a sequence of ints, "
                        f"not {type(normalized_shape).__name__}")
    for name, p in params.items():
        if p is not None and not isinstance(p, Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor or None, not {type(p).__name__}")


def _diagnose(op: str, input: Tensor, normalized_shape: Sequence[Any], eps: object, weight_offset: object,
              **params: Optional[Tensor]) -> Optional[Exception]:
    """After torch.ops failed: the error torch's function would raise for what the dispatcher
    reports in its own words (argument types, layouts), or None to keep the op's error.
    Off the fast path, so a good call pays nothing for it."""
    for i, d in enumerate(normalized_shape):
        if isinstance(d, torch.SymInt):
            continue
        try:
            d = operator.index(d)
        except TypeError:
            return TypeError(f"{op}: argument 'normalized_shape' must be a sequence of ints, but "
                             f"found element of type {type(d).__name__} at pos {i}")
        if not -2**63 <= d < 2**63:
            return TypeError(f"{op}: argument 'normalized_shape' has element {d} at pos {i}, out "
                             f"of the range of int64")
    for name, v in (("eps", eps), ("weight_offset", weight_offset)):
        if name == "eps" and v is None and "rms" in op:
            continue
        if not isinstance(v, (numbers.Real, Tensor)):  # bool is a Real to torch.ops too
            return TypeError(f"{op}: argument '{name}' must be a float, not {type(v).__name__}")
    for name, t in [("input", input), *params.items()]:
        if t is not None and (t.layout != torch.strided or t.is_nested):
            kind = "nested" if t.is_nested else str(t.layout)
            return NotImplementedError(f"{op}: argument '{name}' is a {kind} tensor; only strided "
                                       f"(dense) tensors are supported")
    return None


def _call_ops(op_name: str, op: Callable[..., Any], args: Tuple[Any, ...], eps: object, weight_offset: object,
              tensors: dict[str, Optional[Tensor]]) -> Any:
    """torch.ops' route: argument types checked first (torch's TypeError); where the dispatcher
    words a failure otherwise, the error torch's function would raise (the op ran once and
    failed: nothing is retried)."""
    input, normalized_shape = args[0], args[2] if "residual" in tensors else args[1]
    _check_types(op_name, input, normalized_shape, **tensors)
    try:
        return op(*args, weight_offset=weight_offset)
    except (RuntimeError, NotImplementedError):
        err = _diagnose(op_name, input, normalized_shape, eps, weight_offset, **tensors)
        if err is None:
            raise
        raise err from None


# ---- The composite route: torch's own ops, the fastln ops' semantics ----

def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_args(op: str, x: Tensor, normalized_shape: Sequence[Any], weight: Optional[Tensor],
                bias: Optional[Tensor], eps: object, residual: Optional[Tensor] = None,
                residual_in_fp32: bool = False) -> None:
    """The op's own argument checks (check_norm_args, check_residual), for the composite route,
    which would otherwise compute what the op refuses. Not while tracing (ONNX export), where
    torch.ops' fake kernels do not check either."""
    if _is_compiling() or isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        return  # a wrong eps: torch's function raises its own error
    _C.check_args(op, x, [operator.index(d) for d in normalized_shape], weight, bias, float(eps), residual,
                  bool(residual_in_fp32))


def _norm_composite(rms: bool, x: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor],
                    bias: Optional[Tensor], eps: Optional[float], weight_offset: float, check: bool = True) -> Tensor:
    """fastln's norm in torch's functions. With a weight offset: the normalized input times
    weight_offset + weight, formed in the accumulation dtype, rounded once to the input's."""
    if check:
        _check_args(f"fastln.{'rms_norm' if rms else 'layer_norm'}", x, normalized_shape, weight, bias,
                    _rms_eps(x, eps) if rms else eps)
    if weight_offset == 0 and (weight is None or weight.dtype == x.dtype):
        return F.rms_norm(x, normalized_shape, weight, eps) if rms else F.layer_norm(
            x, normalized_shape, weight, bias, 1e-5 if eps is None else eps)
    if weight is None and weight_offset != 0:
        raise ValueError(f"fastln.{'rms_norm' if rms else 'layer_norm'}: weight_offset={weight_offset} "
                         f"needs a weight (the output is scaled by weight_offset + weight)")
    acc = _acc(x.dtype)
    xa = x.to(acc)
    xhat = F.rms_norm(xa, normalized_shape, None, eps) if rms else F.layer_norm(
        xa, normalized_shape, None, None, 1e-5 if eps is None else eps)
    y = xhat if weight is None else xhat * (weight.to(acc) + weight_offset)
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(x.dtype)


def _rms_eps(x: Tensor, eps: Optional[float]) -> float:
    return eps if eps is not None else torch.finfo(_acc(x.dtype)).eps


def _fused_composite(rms: bool, input: Tensor, residual: Tensor, normalized_shape: Sequence[int],
                     weight: Optional[Tensor], bias: Optional[Tensor], eps: Optional[float],
                     residual_in_fp32: bool, weight_offset: float) -> Tuple[Tensor, Tensor]:
    _check_args(f"fastln.fused_add_{'rms' if rms else 'layer'}_norm", input, normalized_shape, weight, bias,
                _rms_eps(input, eps) if rms else eps, residual, residual_in_fp32)
    if residual_in_fp32 and input.dtype in (torch.bfloat16, torch.float16):
        s = input.float() + residual.float()
        weight = None if weight is None else weight.float()
        bias = None if bias is None else bias.float()
    else:
        s = input + residual
    y = _norm_composite(rms, s, normalized_shape, weight, bias, _rms_eps(s, eps) if rms else eps, weight_offset,
                        check=False)
    return y.to(input.dtype), s


# ---- The public functions ----

def layer_norm(input: Tensor, normalized_shape: _Shape, weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5, *, memory_efficient: bool = False,
               weight_offset: float = 0.0) -> Tensor:
    """Layer normalization over the trailing ``normalized_shape`` dims of ``input``.

    Same semantics as :func:`torch.nn.functional.layer_norm`; differentiable in input,
    weight and bias (twice: double backward is supported), and under torch.func.

    ``weight_offset``: the output is ``xhat * (weight_offset + weight) + bias``, the sum formed
    in float32 (float64 for float64 inputs): a zero-centred weight, as Gemma's ``1 + weight``.

    ``memory_efficient=True`` keeps the output instead of the input for backward and
    recovers ``x - mean = (y - bias) / weight / rstd`` from it: no extra activation memory
    when the output is kept anyway (e.g. by the next layer). Backward raises if the weight has
    an element equal to 0, and loses precision roughly as ``1 / |weight|`` for small weights
    (see docs/features.md). Double backward needs ``memory_efficient=False``.
    """
    if _is_compiling() or _has_torch_function((input, weight, bias)):
        route = _traced_route()
    else:
        out = _C.layer_norm(input, normalized_shape, weight, bias, eps, memory_efficient, weight_offset)
        if not isinstance(out, int):
            return out
        route = out
    normalized_shape = _shape(normalized_shape)
    if route == COMPOSITE:
        return _norm_composite(False, input, normalized_shape, weight, bias, eps, weight_offset)
    return cast(Tensor, _call_ops("fastln.layer_norm", _layer_norm_me if memory_efficient else _layer_norm,
                     (input, normalized_shape, weight, bias, eps), eps, weight_offset,
                     {"weight": weight, "bias": bias}))


def rms_norm(input: Tensor, normalized_shape: _Shape, weight: Optional[Tensor] = None,
             eps: Optional[float] = None, *, weight_offset: float = 0.0) -> Tensor:
    """Root-mean-square normalization over the trailing ``normalized_shape`` dims of ``input``.

    Same semantics as :func:`torch.nn.functional.rms_norm`: ``eps=None`` is the machine
    epsilon of the computation type, ``torch.finfo(torch.float32).eps`` for float32, bfloat16
    and float16 inputs and ``torch.finfo(torch.float64).eps`` for float64.
    ``weight_offset``: as :func:`layer_norm` (Gemma's ``x * rstd * (1 + weight)``).
    """
    if _is_compiling() or _has_torch_function((input, weight)):
        route = _traced_route()
    else:
        out = _C.rms_norm(input, normalized_shape, weight, eps, weight_offset)
        if not isinstance(out, int):
            return out
        route = out
    normalized_shape = _shape(normalized_shape)
    if route == COMPOSITE:
        return _norm_composite(True, input, normalized_shape, weight, None, eps, weight_offset)
    return cast(Tensor, _call_ops("fastln.rms_norm", _rms_norm, (input, normalized_shape, weight, eps), eps,
                                  weight_offset, {"weight": weight}))


def fused_add_layer_norm(input: Tensor, residual: Tensor, normalized_shape: _Shape,
                         weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                         eps: float = 1e-5, *, residual_in_fp32: bool = False,
                         weight_offset: float = 0.0) -> Tuple[Tensor, Tensor]:
    """``(layer_norm(input + residual), input + residual)`` in one pass over memory.

    Gradients reach ``input`` and ``residual``; those arriving at both outputs add up. With
    ``residual_in_fp32=True`` and a 16-bit input, the sum is formed, returned and normalized in
    float32 (the residual may then be float32 too); the output keeps the input's dtype.
    """
    if _is_compiling() or _has_torch_function((input, residual, weight, bias)):
        route = _traced_route()
    else:
        out = _C.fused_add_layer_norm(input, residual, normalized_shape, weight, bias, eps, residual_in_fp32,
                                      weight_offset)
        if not isinstance(out, int):
            return out
        route = out
    normalized_shape = _shape(normalized_shape)
    if route == COMPOSITE:
        return _fused_composite(False, input, residual, normalized_shape, weight, bias, eps, residual_in_fp32,
                                weight_offset)
    return cast(Tuple[Tensor, Tensor], _call_ops("fastln.fused_add_layer_norm", _fused_add_layer_norm,
                     (input, residual, normalized_shape, weight, bias, eps, residual_in_fp32), eps, weight_offset,
                     {"residual": residual, "weight": weight, "bias": bias}))


def fused_add_rms_norm(input: Tensor, residual: Tensor, normalized_shape: _Shape,
                       weight: Optional[Tensor] = None, eps: Optional[float] = None, *,
                       residual_in_fp32: bool = False, weight_offset: float = 0.0) -> Tuple[Tensor, Tensor]:
    """``(rms_norm(input + residual), input + residual)``: as :func:`fused_add_layer_norm`."""
    if _is_compiling() or _has_torch_function((input, residual, weight)):
        route = _traced_route()
    else:
        out = _C.fused_add_rms_norm(input, residual, normalized_shape, weight, None, eps, residual_in_fp32,
                                    weight_offset)
        if not isinstance(out, int):
            return out
        route = out
    normalized_shape = _shape(normalized_shape)
    if route == COMPOSITE:
        return _fused_composite(True, input, residual, normalized_shape, weight, None, eps, residual_in_fp32,
                                weight_offset)
    return cast(Tuple[Tensor, Tensor], _call_ops("fastln.fused_add_rms_norm", _fused_add_rms_norm,
                     (input, residual, normalized_shape, weight, eps, residual_in_fp32), eps, weight_offset,
                     {"residual": residual, "weight": weight}))
