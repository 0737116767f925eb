# Stub of the compiled extension fastln._C (src/cpp/torch/module.cpp). Importing it registers
# the torch ops torch.ops.fastln.*; these attributes report how it was built.

from typing import Optional, Tuple, Union

from torch import Tensor


torch_version: str
"""TORCH_VERSION of the torch headers it was compiled against."""
compiler: str
"""The compiler and its version, e.g. ``gcc 12.2.0``."""
cuda: bool
"""Whether the CUDA kernels are built in (FASTLN_CUDA=AUTO found CUDA, or ON)."""
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

# The eager entries of fastln.functional (src/cpp/torch/module.cpp): the torch.ops.fastln ops of
# the same names, for arguments of exactly the types torch.ops would take without conversion
# (tensors or None, int shapes, float eps and weight_offset, bool flags); for anything else they
# run nothing and return ROUTE_OPS, or ROUTE_COMPOSITE under a torch.func transform or with a
# forward-mode tangent.
ROUTE_OPS: int
ROUTE_COMPOSITE: int

def check_args(op: str, input: Tensor, normalized_shape: list[int], weight: Optional[Tensor],
               bias: Optional[Tensor], eps: float, residual: Optional[Tensor],
               residual_in_fp32: bool) -> None:
    """The ops' argument checks (shapes, dtypes, devices, eps), raising the ops' errors."""

def layer_norm(input: object, normalized_shape: object, weight: object, bias: object, eps: object,
               memory_efficient: object, weight_offset: object) -> Union[Tensor, int]: ...
def rms_norm(input: object, normalized_shape: object, weight: object, eps: object,
             weight_offset: object) -> Union[Tensor, int]: ...
def fused_add_layer_norm(input: object, residual: object, normalized_shape: object, weight: object,
                         bias: object, eps: object, residual_in_fp32: object,
                         weight_offset: object) -> Union[Tuple[Tensor, Tensor], int]: ...
def fused_add_rms_norm(input: object, residual: object, normalized_shape: object, weight: object,
                       bias: None, eps: object, residual_in_fp32: object,
                       weight_offset: object) -> Union[Tuple[Tensor, Tensor], int]: ...
