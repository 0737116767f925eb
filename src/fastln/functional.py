"""Functional API, drop-in for torch.nn.functional."""
import numbers
import operator
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

_layer_norm = torch.ops.fastln.layer_norm.default


def _check_types(op: str, input: object, normalized_shape: object, eps: object = 1e-5,
                 **params: object) -> None:
    # torch.ops reports a wrong argument type as RuntimeError; torch's functions raise TypeError.
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    if isinstance(normalized_shape, (str, bytes)) or not isinstance(normalized_shape, Sequence):
        raise TypeError(f"{op}: argument 'normalized_shape' must be an int or a sequence of ints, "
                        f"not {type(normalized_shape).__name__}")
    for i, d in enumerate(normalized_shape):
        if isinstance(d, torch.SymInt):
            continue
        try:
            d = operator.index(d)
        except TypeError:
            raise TypeError(f"{op}: argument 'normalized_shape' must be a sequence of ints, but found "
                            f"element of type {type(d).__name__} at pos {i}") from None
        if not -2**63 <= d < 2**63:
            raise TypeError(f"{op}: argument 'normalized_shape' has element {d} at pos {i}, "
                            f"out of the range of int64")
    for name, p in params.items():
        if p is not None and not isinstance(p, Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor or None, not {type(p).__name__}")
    # (bool is an int; torch accepts a 0-dim tensor too)
    if not isinstance(eps, (numbers.Real, Tensor)):
        raise TypeError(f"{op}: argument 'eps' must be a float, not {type(eps).__name__}")
    # Sparse and nested tensors would meet the dispatcher's generic "could not run" message.
    for name, t in [("input", input), *params.items()]:
        if isinstance(t, Tensor) and (t.layout != torch.strided or t.is_nested):
            kind = "nested" if t.is_nested else str(t.layout)
            raise NotImplementedError(f"{op}: argument '{name}' is a {kind} tensor; only strided "
                                      f"(dense) tensors are supported")


def layer_norm(input: Tensor, normalized_shape: Union[int, Sequence[int]],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               eps: float = 1e-5) -> Tensor:
    """Layer normalization over the trailing ``normalized_shape`` dims of ``input``.

    Same semantics as :func:`torch.nn.functional.layer_norm`; differentiable in input,
    weight and bias.
    """
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    _check_types("fastln.layer_norm", input, normalized_shape, weight=weight, bias=bias, eps=eps)
    return _layer_norm(input, normalized_shape, weight, bias, eps)
