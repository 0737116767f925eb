"""Functional API, drop-in for torch.nn.functional."""
import numbers
import operator
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _C

_layer_norm: Callable[..., Tensor] = torch.ops.fastln.layer_norm.default
_layer_norm_me: Callable[..., Tensor] = torch.ops.fastln.layer_norm_memory_efficient.default
_rms_norm: Callable[..., Tensor] = torch.ops.fastln.rms_norm.default
_fused_add_layer_norm: Callable[..., Tuple[Tensor, Tensor]] = torch.ops.fastln.fused_add_layer_norm.default
_fused_add_rms_norm: Callable[..., Tuple[Tensor, Tensor]] = torch.ops.fastln.fused_add_rms_norm.default


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


_is_compiling = torch.compiler.is_compiling
_has_torch_function = torch._C._has_torch_function


def _eager(entry: Callable[..., Any], args: Tuple[Any, ...], tensors: Tuple[Optional[Tensor], ...]) -> Any:
    """``entry(*args)``: _C's direct entry to an op, the same dispatcher op as torch.ops.fastln
    (autograd, autocast and dispatch modes apply) without torch.ops' generic argument parsing,
    ~3 us of a ~20 us small call. None where torch.ops must take the call: while
    torch.compile/export traces (it sees torch.ops only), when __torch_function__ is in play (a
    tensor subclass or a TorchFunctionMode, which torch.ops honours), or when the entry failed
    (its typed arguments are strict; torch.ops then fails again, in torch's words)."""
    if _is_compiling() or _has_torch_function(tensors):
        return None
    try:
        return entry(*args)
    except (TypeError, RuntimeError, ValueError, NotImplementedError):
        return None


def _shape(normalized_shape: Union[int, Sequence[int]]) -> Sequence[int]:
    return (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape


def _diagnose(op: str, input: Tensor, normalized_shape: Sequence[Any], eps: object,
              **params: Optional[Tensor]) -> Optional[Exception]:
    """After the op failed: the error torch's function would raise for what the dispatcher
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
    if isinstance(eps, bool) or not isinstance(eps, (numbers.Real, Tensor)):
        return TypeError(f"{op}: argument 'eps' must be a float, not {type(eps).__name__}")
    for name, t in [("input", input), *params.items()]:
        if t is not None and (t.layout != torch.strided or t.is_nested):
            kind = "nested" if t.is_nested else str(t.layout)
            return NotImplementedError(f"{op}: argument '{name}' is a {kind} tensor; only strided "
                                       f"(dense) tensors are supported")
    return None


def layer_norm(input: Tensor, normalized_shape: Union[int, Sequence[int]],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               eps: float = 1e-5, *, memory_efficient: bool = False) -> Tensor:
    """Layer normalization over the trailing ``normalized_shape`` dims of ``input``.

    Same semantics as :func:`torch.nn.functional.layer_norm`; differentiable in input,
    weight and bias (twice: double backward is supported).

    ``memory_efficient=True`` keeps the output instead of the input for backward and
    recovers ``x - mean = (y - bias) / weight / rstd`` from it: no extra activation memory
    when the output is kept anyway (e.g. by the next layer). Backward raises if the weight has
    an element equal to 0, and loses precision roughly as ``1 / |weight|`` for small weights
    (see docs/features.md). Double backward needs ``memory_efficient=False``.
    """
    normalized_shape = _shape(normalized_shape)
    out: Optional[Tensor] = _eager(_C.layer_norm, (input, normalized_shape, weight, bias, eps, memory_efficient),
                                   (input, weight, bias))
    if out is not None:
        return out
    _check_types("fastln.layer_norm", input, normalized_shape, weight=weight, bias=bias)
    try:
        return (_layer_norm_me if memory_efficient else _layer_norm)(input, normalized_shape, weight, bias, eps)
    except (RuntimeError, NotImplementedError):
        err = _diagnose("fastln.layer_norm", input, normalized_shape, eps, weight=weight, bias=bias)
        if err is None:
            raise
        raise err from None


def rms_norm(input: Tensor, normalized_shape: Union[int, Sequence[int]],
             weight: Optional[Tensor] = None, eps: Optional[float] = None) -> Tensor:
    """Root-mean-square normalization over the trailing ``normalized_shape`` dims of ``input``.

    Same semantics as :func:`torch.nn.functional.rms_norm`: ``eps=None`` is the machine
    epsilon of the computation type, ``torch.finfo(torch.float32).eps`` for float32, bfloat16
    and float16 inputs and ``torch.finfo(torch.float64).eps`` for float64.
    """
    normalized_shape = _shape(normalized_shape)
    out: Optional[Tensor] = _eager(_C.rms_norm, (input, normalized_shape, weight, eps), (input, weight))
    if out is not None:
        return out
    _check_types("fastln.rms_norm", input, normalized_shape, weight=weight)
    return _rms_norm(input, normalized_shape, weight, eps)


def fused_add_layer_norm(input: Tensor, residual: Tensor, normalized_shape: Union[int, Sequence[int]],
                         weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                         eps: float = 1e-5, *, residual_in_fp32: bool = False) -> Tuple[Tensor, Tensor]:
    """``(layer_norm(input + residual), input + residual)`` in one pass over memory.

    Gradients reach ``input`` and ``residual``; those arriving at both outputs add up. With
    ``residual_in_fp32=True`` and a 16-bit input, the sum is formed, returned and normalized in
    float32 (the residual may then be float32 too); the output keeps the input's dtype.
    """
    normalized_shape = _shape(normalized_shape)
    out: Optional[Tuple[Tensor, Tensor]] = _eager(
        _C.fused_add_layer_norm, (input, residual, normalized_shape, weight, bias, eps, residual_in_fp32),
        (input, residual, weight, bias))
    if out is not None:
        return out
    _check_types("fastln.fused_add_layer_norm", input, normalized_shape, residual=residual, weight=weight, bias=bias)
    return _fused_add_layer_norm(input, residual, normalized_shape, weight, bias, eps, residual_in_fp32)


def fused_add_rms_norm(input: Tensor, residual: Tensor, normalized_shape: Union[int, Sequence[int]],
                       weight: Optional[Tensor] = None, eps: Optional[float] = None, *,
                       residual_in_fp32: bool = False) -> Tuple[Tensor, Tensor]:
    """``(rms_norm(input + residual), input + residual)``: as :func:`fused_add_layer_norm`."""
    normalized_shape = _shape(normalized_shape)
    out: Optional[Tuple[Tensor, Tensor]] = _eager(
        _C.fused_add_rms_norm, (input, residual, normalized_shape, weight, eps, residual_in_fp32),
        (input, residual, weight))
    if out is not None:
        return out
    _check_types("fastln.fused_add_rms_norm", input, normalized_shape, residual=residual, weight=weight)
    return _fused_add_rms_norm(input, residual, normalized_shape, weight, eps, residual_in_fp32)
