# Types of _build_info.py, which CMake writes from _build_info.py.in at build time.
version: str
torch_version: str
cuda: bool
cuda_mode: str
cuda_reason: str
cuda_version: str
torch_cuda_version: str
cuda_archs: str
cuda_archs_source: str
