"""Functional API, drop-in for torch.nn.functional."""
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

_layer_norm = torch.ops.fastln.layer_norm.default


def layer_norm(input: Tensor, normalized_shape: Union[int, Sequence[int]],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               eps: float = 1e-5) -> Tensor:
    """Layer normalization over the trailing ``normalized_shape`` dims of ``input``.

    Same semantics as :func:`torch.nn.functional.layer_norm`; differentiable in input,
    weight and bias.
    """
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    return _layer_norm(input, normalized_shape, weight, bias, eps)
