"""fastln: fast, exact LayerNorm for PyTorch, as native torch ops with autograd.

Drop-in for torch's: ``fastln.layer_norm`` is ``torch.nn.functional.layer_norm`` and
``fastln.LayerNorm`` is ``torch.nn.LayerNorm`` (a subclass with the same state_dict).
"""
import sys

import torch

from . import _build_info


def _check_torch_version() -> None:
    # A different torch major.minor has a different C++ ABI: say so instead of failing on an
    # undefined symbol when the extension loads.
    built, running = _build_info.torch_version, torch.__version__
    if built.split(".")[:2] != running.split(".")[:2]:
        raise ImportError(
            f"fastln was built against torch {built}, but torch {running} is installed. "
            f"Reinstall fastln under this torch (pip install --no-cache-dir --force-reinstall fastln "
            f"or from its source: pip install .), or install torch {'.'.join(built.split('.')[:2])}."
        )


_check_torch_version()

from . import _C  # noqa: E402  (registers torch.ops.fastln)
from ._C import empty_output_cache, output_cache_stats  # noqa: E402  (docs/cpu.md, output cache)
from . import _ops  # noqa: E402,F401  (fake kernels for torch.compile / export)

if "torch.distributed.tensor" in sys.modules:  # DTensor in use: its sharding rules for our ops
    from . import distributed  # noqa: E402,F401
from .functional import fused_add_layer_norm, fused_add_rms_norm, layer_norm, rms_norm  # noqa: E402
from .modules import LayerNorm, RMSNorm  # noqa: E402
from .swap import NormSpec, register_norm, replace_norms, restore_norms  # noqa: E402

__version__: str = _build_info.version

__all__ = ["LayerNorm", "NormSpec", "RMSNorm", "empty_output_cache", "fused_add_layer_norm",
           "fused_add_rms_norm", "layer_norm", "output_cache_stats", "register_norm", "replace_norms",
           "restore_norms", "rms_norm", "__version__"]
