"""DTensor sharding rules for the fastln ops (tensor / sequence parallelism).

Imported by ``import fastln`` when torch.distributed.tensor is already loaded; otherwise
``import fastln.distributed`` (torch.distributed.tensor takes seconds to import, so fastln
does not import it for everyone).

A norm is row-wise: any dimension before the normalized ones may be sharded, with weight and
bias replicated. Outputs, mean, rstd and grad_input keep the input's sharding; grad_weight and
grad_bias are partial sums (each rank holds its rows' share), which DTensor reduces when they
are redistributed, exactly as for aten.native_layer_norm_backward. With these rules
``SequenceParallel`` works on fastln.LayerNorm / fastln.RMSNorm as on torch's modules, and the
fused residual add (add_norm_fwd) keeps a sequence-sharded input sharded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch

if TYPE_CHECKING:
    from torch.distributed.tensor import Placement

    # (output placements, input placements) candidates, one per sharding strategy.
    _Strategies = list[tuple[list[Placement], list[Optional[Placement]]]]

try:
    from torch.distributed.tensor import Partial, Replicate, Shard
    from torch.distributed.tensor.experimental import register_sharding
except ImportError:  # torch without distributed support
    register_sharding = None  # type: ignore[assignment]


def _opt(t: object, placement: Placement) -> Optional[Placement]:
    return None if t is None else placement


def _row_dims(input: Any, normalized_shape: Sequence[int]) -> range:
    return range(input.ndim - len(normalized_shape))


def _fwd_rules(n_stats: int, n_params: int) -> Callable[..., _Strategies]:
    def rules(input: Any, normalized_shape: Sequence[int], *rest: Any) -> _Strategies:
        # rest: the parameters (weight, bias / weight), then eps and weight_offset
        params = [_opt(p, Replicate()) for p in rest[:n_params]]
        scalars: list[Optional[Placement]] = [None] * (len(rest) - n_params)
        out: _Strategies = [([Replicate()] * (1 + n_stats), [Replicate(), None, *params, *scalars])]
        for d in _row_dims(input, normalized_shape):
            out.append(([Shard(d)] * (1 + n_stats), [Shard(d), None, *params, *scalars]))
        return out
    return rules


def _bwd_rules(n_stats: int, n_params: int) -> Callable[..., _Strategies]:
    def rules(grad_out: Any, input: Any, normalized_shape: Sequence[int], *rest: Any) -> _Strategies:
        # rest: the stats (mean, rstd / rstd), the parameters, then output_mask and weight_offset
        params = [_opt(p, Replicate()) for p in rest[n_stats:n_stats + n_params]]
        scalars: list[Optional[Placement]] = [None] * (len(rest) - n_stats - n_params)
        n_grads = 1 + n_params
        out: _Strategies = [([Replicate()] * n_grads,
                             [Replicate(), Replicate(), None] + [Replicate()] * n_stats + params + scalars)]
        for d in _row_dims(input, normalized_shape):
            out.append(([Shard(d)] + [Partial()] * (n_grads - 1),
                        [Shard(d), Shard(d), None] + [Shard(d)] * n_stats + params + scalars))
        return out
    return rules


def _add_fwd_rules(input: Any, residual: Any, normalized_shape: Sequence[int], weight: Any, bias: Any,
                   *scalars: Any) -> _Strategies:
    # scalars: eps, rms, residual_in_fp32, weight_offset
    params = [_opt(weight, Replicate()), _opt(bias, Replicate())]
    none = [None] * len(scalars)
    out: _Strategies = [([Replicate()] * 4, [Replicate(), Replicate(), None, *params, *none])]
    for d in _row_dims(input, normalized_shape):
        out.append(([Shard(d)] * 4, [Shard(d), Shard(d), None, *params, *none]))
    return out


if register_sharding is not None:
    ops = torch.ops.fastln
    register_sharding(ops.layer_norm_fwd.default)(_fwd_rules(2, 2))
    register_sharding(ops.rms_norm_fwd.default)(_fwd_rules(1, 1))
    register_sharding(ops.layer_norm_bwd.default)(_bwd_rules(2, 2))
    register_sharding(ops.rms_norm_bwd.default)(_bwd_rules(1, 1))
    register_sharding(ops.add_norm_fwd.default)(_add_fwd_rules)
