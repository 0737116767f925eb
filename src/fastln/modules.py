"""Modules, drop-in for torch.nn: same constructor, parameters and state_dict keys."""
from typing import Any

import torch
from torch import Tensor

from .functional import layer_norm, rms_norm


def _init_for_offset(module: torch.nn.Module, weight_offset: float) -> None:
    if weight_offset != 0 and getattr(module, "weight", None) is None:
        raise ValueError(f"fastln.{type(module).__name__}: weight_offset={weight_offset} needs a weight "
                         f"(elementwise_affine=True)")
    setattr(module, "weight_offset", float(weight_offset))
    _reset_offset_weight(module)


def _reset_offset_weight(module: torch.nn.Module) -> None:
    # A zero-centred weight starts at 1 - weight_offset, so that the scale starts at 1 as torch's.
    weight, offset = getattr(module, "weight", None), getattr(module, "weight_offset", 0.0)
    if offset != 0 and weight is not None:
        with torch.no_grad():
            weight.fill_(1.0 - offset)


class LayerNorm(torch.nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` computed by fastln's kernels.

    A subclass, so ``isinstance(m, torch.nn.LayerNorm)`` holds and checkpoints load both ways.
    Keyword-only: ``memory_efficient=True`` (see :func:`fastln.layer_norm`), and
    ``weight_offset``: the output is scaled by ``weight_offset + weight`` (the weight then
    starts at ``1 - weight_offset``: zero-centred for 1).
    """

    memory_efficient: bool = False  # class defaults: modules swapped in by replace_norms
    weight_offset: float = 0.0

    def __init__(self, *args: Any, memory_efficient: bool = False, weight_offset: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memory_efficient = memory_efficient
        _init_for_offset(self, weight_offset)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset_offset_weight(self)

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles this branch alone: the op, scriptable
            y: Tensor = torch.ops.fastln.layer_norm(input, list(self.normalized_shape), self.weight,
                                                    self.bias, self.eps, weight_offset=self.weight_offset)
            return y
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps,
                          memory_efficient=self.memory_efficient, weight_offset=self.weight_offset)

    def _get_name(self) -> str:
        return "fastln.LayerNorm"

    def extra_repr(self) -> str:
        return super().extra_repr() + (", memory_efficient=True" if self.memory_efficient else "") + (
            f", weight_offset={self.weight_offset}" if self.weight_offset else "")


class RMSNorm(torch.nn.RMSNorm):
    """:class:`torch.nn.RMSNorm` computed by fastln's kernels (a subclass, same state_dict).
    ``weight_offset`` (keyword-only): as :class:`LayerNorm`'s."""

    weight_offset: float = 0.0

    def __init__(self, *args: Any, weight_offset: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _init_for_offset(self, weight_offset)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset_offset_weight(self)

    def forward(self, input: Tensor) -> Tensor:
        return rms_norm(input, self.normalized_shape, self.weight, self.eps, weight_offset=self.weight_offset)

    def _get_name(self) -> str:
        return "fastln.RMSNorm"

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", weight_offset={self.weight_offset}" if self.weight_offset else "")
