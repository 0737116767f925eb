# The `torch` target made from torch's installed layout (its headers and its c10, torch_cpu and
# torch libraries; with CUDA also c10_cuda and torch_cuda), as torch.utils.cpp_extension builds
# extensions. torch's own CMake package (find_package(Torch)) requires a complete CUDA toolkit
# whenever torch was built with CUDA, PyPI's default torch on Linux: for a CPU-only extension too
# (without the toolkit it stopped the build: "Your installed Caffe2 version uses CUDA but I cannot
# find the CUDA libraries"), and for the CUDA kernels where nvcc's toolkit lacks what the package
# looks for (tools/torch_cuda_probe), though the kernels need only nvcc and the CUDA runtime. The
# CUDA kernels take the package wherever it works (fastln_cuda.cmake: FASTLN_CUDA_TORCH_PACKAGE).
function(fastln_torch_target torch_cmake_prefix with_cuda)
  get_filename_component(_dir "${torch_cmake_prefix}" DIRECTORY)  # <torch>/share
  get_filename_component(_dir "${_dir}" DIRECTORY)                # <torch>
  set(_names c10 torch_cpu torch)
  set(_targets_with_defs torch_cpu)
  if(with_cuda)
    list(APPEND _names c10_cuda torch_cuda)
    list(APPEND _targets_with_defs torch_cuda)
  endif()
  set(_libs "")
  foreach(_lib IN LISTS _names)
    find_library(FASTLN_TORCH_LIB_${_lib} ${_lib} PATHS "${_dir}/lib" NO_DEFAULT_PATH REQUIRED)
    list(APPEND _libs "${FASTLN_TORCH_LIB_${_lib}}")
  endforeach()
  # torch_cpu's (and torch_cuda's) compile definitions (USE_DISTRIBUTED, USE_C10D_NCCL, ...), as
  # torch's package would give them.
  set(_defs "")
  set(_targets "${_dir}/share/cmake/Caffe2/Caffe2Targets.cmake")
  if(EXISTS "${_targets}")
    file(READ "${_targets}" _text)
    foreach(_t IN LISTS _targets_with_defs)
      if(_text MATCHES "add_library\\(${_t} SHARED IMPORTED\\)[^)]*INTERFACE_COMPILE_DEFINITIONS \"([^\"]*)\"")
        list(APPEND _defs ${CMAKE_MATCH_1})
      endif()
    endforeach()
  endif()
  add_library(torch INTERFACE IMPORTED)
  set_target_properties(torch PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_dir}/include;${_dir}/include/torch/csrc/api/include"
    INTERFACE_LINK_LIBRARIES "${_libs}"
    INTERFACE_COMPILE_DEFINITIONS "${_defs}")
  set(TORCH_INSTALL_PREFIX "${_dir}" PARENT_SCOPE)
  message(STATUS "fastln: torch's headers and libraries from ${_dir} (${_names}; definitions: ${_defs})")
endfunction()
