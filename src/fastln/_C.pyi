# Stub of the compiled extension fastln._C (src/cpp/torch/module.cpp). Importing it registers
# the torch ops torch.ops.fastln.*; these attributes report how it was built.

from typing import Optional, Sequence, Tuple

from torch import Tensor


torch_version: str
"""TORCH_VERSION of the torch headers it was compiled against."""
compiler: str
"""The compiler and its version, e.g. ``gcc 12.2.0``."""
cuda: bool
"""Whether the CUDA kernels are built in (FASTLN_CUDA=ON)."""
cuda_archs: str
"""The CUDA architectures compiled for ('' without CUDA)."""

def isa() -> str:
    """The CPU kernel build in use: 'base', 'avx2', 'avx512' or 'avx512bf16'."""

def available_isas() -> list[str]:
    """The CPU kernel builds this CPU can run, lowest first."""

def set_isa(name: str) -> None:
    """Use the given CPU kernel build (lowered to the best this CPU supports)."""

def output_cache_stats() -> dict[str, int]:
    """The CPU output cache: cached_bytes (idle, kept for reuse), limit_bytes, hits, misses."""

def empty_output_cache() -> int:
    """Return the CPU output cache's idle blocks to the system; returns the bytes."""

# The eager fast path of fastln.functional: the torch.ops.fastln ops of the same names, called
# without torch.ops' argument parsing. Strict argument types (no conversions).
def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor],
               bias: Optional[Tensor], eps: float, memory_efficient: bool) -> Tensor: ...
def rms_norm(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor],
             eps: Optional[float]) -> Tensor: ...
def fused_add_layer_norm(input: Tensor, residual: Tensor, normalized_shape: Sequence[int],
                         weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                         residual_in_fp32: bool) -> Tuple[Tensor, Tensor]: ...
def fused_add_rms_norm(input: Tensor, residual: Tensor, normalized_shape: Sequence[int],
                       weight: Optional[Tensor], eps: Optional[float],
                       residual_in_fp32: bool) -> Tuple[Tensor, Tensor]: ...
