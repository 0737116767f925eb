"""Fake (meta) kernels of the fastln ops: shapes and dtypes for torch.compile and export."""
from typing import Optional, Sequence

import torch
from torch import Tensor


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _stat_shape(input: Tensor, normalized_shape: Sequence[int]) -> list[int]:
    axis = input.dim() - len(normalized_shape)
    return list(input.shape[:axis]) + [1] * len(normalized_shape)


def _check_devices(op: str, input: Tensor, **tensors: Optional[Tensor]) -> None:
    # Also reached by real tensors: a meta weight beside a CPU input dispatches here.
    for name, t in tensors.items():
        if t is not None and t.device != input.device:
            raise RuntimeError(f"{op}: expected {name} on the input's device {input.device}, "
                               f"but got {name} on {t.device}")


@torch.library.register_fake("fastln::layer_norm_memory_efficient")
@torch.library.register_fake("fastln::layer_norm")
def _layer_norm_fake(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor] = None,
                     bias: Optional[Tensor] = None, eps: float = 1e-5, *, weight_offset: float = 0.0) -> Tensor:
    _check_devices("fastln.layer_norm", input, weight=weight, bias=bias)
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastln::layer_norm_fwd")
def _layer_norm_fwd_fake(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor],
                         bias: Optional[Tensor], eps: float, weight_offset: float = 0.0
                         ) -> tuple[Tensor, Tensor, Tensor]:
    _check_devices("fastln.layer_norm", input, weight=weight, bias=bias)
    stat = _stat(input, normalized_shape)
    return (torch.empty_like(input, memory_format=torch.contiguous_format), stat,
            torch.empty_like(stat))


def _stat(input: Tensor, normalized_shape: Sequence[int]) -> Tensor:
    return input.new_empty(_stat_shape(input, normalized_shape), dtype=_acc_dtype(input.dtype))


@torch.library.register_fake("fastln::layer_norm_bwd")
def _layer_norm_bwd_fake(grad_out: Tensor, input: Tensor, normalized_shape: Sequence[int],
                         mean: Tensor, rstd: Tensor, weight: Optional[Tensor],
                         bias: Optional[Tensor], output_mask: Sequence[bool], weight_offset: float = 0.0
                         ) -> tuple[Tensor, ...]:
    _check_devices("fastln.layer_norm_bwd", input, grad_out=grad_out, mean=mean, rstd=rstd,
                   weight=weight, bias=bias)
    return _grads(input, normalized_shape, weight, bias, output_mask)


def _grads(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor],
           bias: Optional[Tensor], output_mask: Sequence[bool]) -> tuple[Tensor, ...]:
    param = weight if weight is not None else bias
    pdtype = param.dtype if param is not None else input.dtype

    def grad(i: int, dtype: torch.dtype, shape: Sequence[int]) -> Tensor:
        return input.new_empty(shape if output_mask[i] else (0,), dtype=dtype)

    return (grad(0, input.dtype, input.shape),
            *(grad(i, pdtype, normalized_shape) for i in range(1, len(output_mask))))


@torch.library.register_fake("fastln::rms_norm")
def _rms_norm_fake(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor] = None,
                   eps: Optional[float] = None, *, weight_offset: float = 0.0) -> Tensor:
    _check_devices("fastln.rms_norm", input, weight=weight)
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastln::rms_norm_fwd")
def _rms_norm_fwd_fake(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor],
                       eps: float, weight_offset: float = 0.0) -> tuple[Tensor, Tensor]:
    _check_devices("fastln.rms_norm", input, weight=weight)
    return torch.empty_like(input, memory_format=torch.contiguous_format), _stat(input, normalized_shape)


@torch.library.register_fake("fastln::rms_norm_bwd")
def _rms_norm_bwd_fake(grad_out: Tensor, input: Tensor, normalized_shape: Sequence[int],
                       rstd: Tensor, weight: Optional[Tensor], output_mask: Sequence[bool],
                       weight_offset: float = 0.0) -> tuple[Tensor, ...]:
    _check_devices("fastln.rms_norm_bwd", input, grad_out=grad_out, rstd=rstd, weight=weight)
    return _grads(input, normalized_shape, weight, None, output_mask)


@torch.library.register_fake("fastln::recover_centered_input")
def _recover_fake(output: Tensor, normalized_shape: Sequence[int], rstd: Tensor,
                  weight: Optional[Tensor], bias: Optional[Tensor], weight_offset: float = 0.0) -> Tensor:
    return torch.empty_like(output, memory_format=torch.contiguous_format)


def _sum_dtype(input: Tensor, residual_in_fp32: bool) -> torch.dtype:
    return torch.float32 if residual_in_fp32 and input.dtype in (torch.bfloat16, torch.float16) else input.dtype


@torch.library.register_fake("fastln::add_norm_fwd")
def _add_norm_fwd_fake(input: Tensor, residual: Tensor, normalized_shape: Sequence[int],
                       weight: Optional[Tensor], bias: Optional[Tensor], eps: float, rms: bool,
                       residual_in_fp32: bool, weight_offset: float = 0.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_devices("fastln.fused_add_norm", input, residual=residual, weight=weight, bias=bias)
    if rms and bias is not None:  # the op's own check (norm_ops.h), while tracing too
        raise RuntimeError("fastln.fused_add_rms_norm: RMSNorm has no bias; add_norm_fwd with rms=True takes bias=None")
    stat = _stat(input, normalized_shape)
    return (torch.empty_like(input, memory_format=torch.contiguous_format),
            torch.empty_like(input, dtype=_sum_dtype(input, residual_in_fp32), memory_format=torch.contiguous_format),
            stat, torch.empty_like(stat))


@torch.library.register_fake("fastln::fused_add_layer_norm")
def _fused_add_layer_norm_fake(input: Tensor, residual: Tensor, normalized_shape: Sequence[int],
                               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                               eps: float = 1e-5, residual_in_fp32: bool = False, *,
                               weight_offset: float = 0.0) -> tuple[Tensor, Tensor]:
    y, s, _, _ = _add_norm_fwd_fake(input, residual, normalized_shape, weight, bias, eps, False, residual_in_fp32)
    return y, s


@torch.library.register_fake("fastln::fused_add_rms_norm")
def _fused_add_rms_norm_fake(input: Tensor, residual: Tensor, normalized_shape: Sequence[int],
                             weight: Optional[Tensor] = None, eps: Optional[float] = None,
                             residual_in_fp32: bool = False, *, weight_offset: float = 0.0) -> tuple[Tensor, Tensor]:
    y, s, _, _ = _add_norm_fwd_fake(input, residual, normalized_shape, weight, None, 0.0, True, residual_in_fp32)
    return y, s
