"""Modules, drop-in for torch.nn: same constructor, parameters and state_dict keys."""
from typing import Any, Optional

import torch
from torch import Tensor

from .functional import layer_norm, rms_norm


class LayerNorm(torch.nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` computed by fastln's kernels.

    A subclass, so ``isinstance(m, torch.nn.LayerNorm)`` holds and checkpoints load both ways.
    ``memory_efficient=True`` (keyword-only): see :func:`fastln.layer_norm`.
    """

    memory_efficient: bool = False  # class default: modules swapped in by replace_norms

    def __init__(self, *args: Any, memory_efficient: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memory_efficient = memory_efficient

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles this branch alone: the op, scriptable
            y: Tensor = torch.ops.fastln.layer_norm(input, list(self.normalized_shape), self.weight,
                                                    self.bias, self.eps)
            return y
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps,
                          memory_efficient=self.memory_efficient)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", memory_efficient=True" if self.memory_efficient else "")


class RMSNorm(torch.nn.RMSNorm):
    """:class:`torch.nn.RMSNorm` computed by fastln's kernels (a subclass, same state_dict)."""

    def forward(self, input: Tensor) -> Tensor:
        return rms_norm(input, self.normalized_shape, self.weight, self.eps)


def replace_norms(model: torch.nn.Module) -> int:
    """Makes every :class:`torch.nn.LayerNorm` and :class:`torch.nn.RMSNorm` in ``model``
    (exactly those classes, not subclasses) a fastln module, in place; returns how many.

    The module objects stay the same (their class is switched to the fastln subclass, which
    adds no state): parameters, their devices and dtypes, eps, affine flags, hooks, and any
    optimizer already holding the parameters are all kept.
    """
    swaps = {torch.nn.LayerNorm: LayerNorm, torch.nn.RMSNorm: RMSNorm}
    count = 0
    for m in model.modules():
        new = swaps.get(type(m))
        if new is not None:
            m.__class__ = new
            count += 1
    return count
