# The `torch` target of a build without the CUDA kernels, made from torch's installed layout (its
# headers and its c10, torch_cpu and torch libraries), as torch.utils.cpp_extension builds CPU
# extensions. torch's own CMake package (find_package(Torch)) requires the CUDA toolkit whenever
# torch was built with CUDA, PyPI's default torch on Linux, even for a CPU-only extension: without
# the toolkit it stopped the build ("Your installed Caffe2 version uses CUDA but I cannot find the
# CUDA libraries"). The CUDA kernels need the toolkit anyway, and their build uses the package.
function(fastln_torch_cpu_target torch_cmake_prefix)
  get_filename_component(_dir "${torch_cmake_prefix}" DIRECTORY)  # <torch>/share
  get_filename_component(_dir "${_dir}" DIRECTORY)                # <torch>
  set(_libs "")
  foreach(_lib c10 torch_cpu torch)
    find_library(FASTLN_TORCH_LIB_${_lib} ${_lib} PATHS "${_dir}/lib" NO_DEFAULT_PATH REQUIRED)
    list(APPEND _libs "${FASTLN_TORCH_LIB_${_lib}}")
  endforeach()
  # torch_cpu's compile definitions (USE_DISTRIBUTED, ...), as torch's package would give them.
  set(_defs "")
  set(_targets "${_dir}/share/cmake/Caffe2/Caffe2Targets.cmake")
  if(EXISTS "${_targets}")
    file(READ "${_targets}" _text)
    if(_text MATCHES "add_library\\(torch_cpu SHARED IMPORTED\\)[^)]*INTERFACE_COMPILE_DEFINITIONS \"([^\"]*)\"")
      set(_defs "${CMAKE_MATCH_1}")
    endif()
  endif()
  add_library(torch INTERFACE IMPORTED)
  set_target_properties(torch PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_dir}/include;${_dir}/include/torch/csrc/api/include"
    INTERFACE_LINK_LIBRARIES "${_libs}"
    INTERFACE_COMPILE_DEFINITIONS "${_defs}")
  set(TORCH_INSTALL_PREFIX "${_dir}" PARENT_SCOPE)
  message(STATUS "fastln: torch's headers and libraries from ${_dir} (definitions: ${_defs})")
endfunction()
