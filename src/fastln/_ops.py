"""Fake (meta) kernels of the fastln ops: shapes and dtypes for torch.compile and export."""
from typing import Optional, Sequence

import torch
from torch import Tensor


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _stat_shape(input: Tensor, normalized_shape: Sequence[int]) -> list:
    axis = input.dim() - len(normalized_shape)
    return list(input.shape[:axis]) + [1] * len(normalized_shape)


@torch.library.register_fake("fastln::layer_norm")
def _layer_norm_fake(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor] = None,
                     bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastln::layer_norm_fwd")
def _layer_norm_fwd_fake(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor],
                         bias: Optional[Tensor], eps: float):
    stat = input.new_empty(_stat_shape(input, normalized_shape), dtype=_acc_dtype(input.dtype))
    return (torch.empty_like(input, memory_format=torch.contiguous_format), stat,
            torch.empty_like(stat))


@torch.library.register_fake("fastln::layer_norm_bwd")
def _layer_norm_bwd_fake(grad_out: Tensor, input: Tensor, normalized_shape: Sequence[int],
                         mean: Tensor, rstd: Tensor, weight: Optional[Tensor],
                         bias: Optional[Tensor], output_mask: Sequence[bool]):
    param = weight if weight is not None else bias
    pdtype = param.dtype if param is not None else input.dtype

    def grad(i: int, like: Tensor, dtype: torch.dtype, shape) -> Tensor:
        return like.new_empty(shape if output_mask[i] else (0,), dtype=dtype)

    return (grad(0, input, input.dtype, input.shape), grad(1, input, pdtype, normalized_shape),
            grad(2, input, pdtype, normalized_shape))
