"""Functional API, drop-in for torch.nn.functional."""
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

_layer_norm: Callable[..., Tensor] = torch.ops.fastln.layer_norm.default


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


def layer_norm(input: Tensor, normalized_shape: Union[int, Sequence[int]],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               eps: float = 1e-5) -> Tensor:
    """Layer normalization over the trailing ``normalized_shape`` dims of ``input``.

    Same semantics as :func:`torch.nn.functional.layer_norm`; differentiable in input,
    weight and bias.
    """
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    _check_types("fastln.layer_norm", input, normalized_shape, weight=weight, bias=bias)
    return _layer_norm(input, normalized_shape, weight, bias, eps)
