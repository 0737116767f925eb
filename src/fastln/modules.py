"""Modules, drop-in for torch.nn: same constructor, parameters and state_dict keys."""
import torch
from torch import Tensor

from .functional import layer_norm


class LayerNorm(torch.nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` computed by fastln's kernels.

    A subclass, so ``isinstance(m, torch.nn.LayerNorm)`` holds and checkpoints load both ways.
    """

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles this branch alone: the op, scriptable
            return torch.ops.fastln.layer_norm(input, list(self.normalized_shape), self.weight,
                                               self.bias, self.eps)
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
