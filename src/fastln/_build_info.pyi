# Types of _build_info.py, which CMake writes from _build_info.py.in at build time.
version: str
torch_version: str
cuda: bool
