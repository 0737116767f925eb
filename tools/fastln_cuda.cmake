# The CUDA decision of fastln's extension (included by CMakeLists.txt after it has asked the
# target environment's torch). In: FASTLN_CUDA (AUTO, ON or OFF), FASTLN_TORCH_VERSION,
# FASTLN_TORCH_CUDA (torch.version.cuda, '' for a CPU-only torch), _torch_gpu_cap (the visible
# GPU's compute capability as e.g. 90, '' when none is visible), FASTLN_CUDA_ARCHITECTURES.
# Out: FASTLN_CUDA_MODE (AUTO/ON/OFF, as asked), FASTLN_CUDA_BUILD (TRUE/FALSE),
# FASTLN_CUDA_TORCH_PACKAGE (TRUE: torch's CMake package accepts nvcc's toolkit, probed by
# tools/torch_cuda_probe, and the build uses it; FALSE: the build takes torch's headers and
# libraries directly, tools/fastln_torch.cmake),
# FASTLN_CUDA_REASON (why, one sentence), FASTLN_CUDA_VERSION (the toolkit built with, or ''),
# FASTLN_CUDA_ARCHS (CMake CUDA_ARCHITECTURES list) and FASTLN_CUDA_ARCHS_SOURCE (why those).
#
#   AUTO  build the kernels when torch has CUDA and a CUDA compiler (nvcc) of the same major
#         version is found and works; otherwise build without them, and say why.
#   ON    the same conditions are required: a configure error says which one fails.
#   OFF   never build them.
#
# nvcc: CMAKE_CUDA_COMPILER or CUDACXX when set, else nvcc in $CUDA_HOME/bin, $CUDA_PATH/bin,
# PATH, /usr/local/cuda/bin (where torch.utils.cpp_extension looks too).
# Architectures: FASTLN_CUDA_ARCHITECTURES (CMake or environment, CMake syntax: 90, 80;90,
# 90a-real) or TORCH_CUDA_ARCH_LIST (torch's syntax: "8.0 9.0+PTX") when set; else the visible
# GPU's alone (fastest build); else 80;90, and 100 where the toolkit knows sm_100.

function(_fastln_cuda_result build reason)
  set(FASTLN_CUDA_BUILD ${build} PARENT_SCOPE)
  set(FASTLN_CUDA_REASON "${reason}" PARENT_SCOPE)
endfunction()

# TORCH_CUDA_ARCH_LIST ("7.5;8.0 9.0a+PTX", commas too) -> CMake's list ("75-real;80-real;90a").
function(_fastln_torch_arch_list text out)
  string(REGEX REPLACE "[ ,]+" ";" items "${text}")
  set(archs)
  foreach(item IN LISTS items)
    if(item STREQUAL "")
      continue()
    endif()
    if(NOT item MATCHES "^([0-9]+)\\.([0-9]+)([a-z]?)(\\+PTX)?$")
      message(FATAL_ERROR "fastln: cannot read TORCH_CUDA_ARCH_LIST entry '${item}' (expected "
                          "e.g. 8.0, 9.0a or 9.0+PTX); or set FASTLN_CUDA_ARCHITECTURES (e.g. 90)")
    endif()
    if(CMAKE_MATCH_4)
      list(APPEND archs "${CMAKE_MATCH_1}${CMAKE_MATCH_2}${CMAKE_MATCH_3}")
    else()
      list(APPEND archs "${CMAKE_MATCH_1}${CMAKE_MATCH_2}${CMAKE_MATCH_3}-real")
    endif()
  endforeach()
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()

# Configures tools/torch_cuda_probe with torch's package (prefix _torch_prefix of the caller) and
# the CUDA compiler found; out: "" when it succeeds, else the first lines of its CMake error.
function(_fastln_torch_cuda_probe out)
  set(_dir "${CMAKE_BINARY_DIR}/fastln_torch_cuda_probe")
  file(REMOVE_RECURSE "${_dir}")
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -S "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/torch_cuda_probe" -B "${_dir}"
            -G "${CMAKE_GENERATOR}" "-DCMAKE_MAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}"
            "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}" "-DCMAKE_CUDA_COMPILER=${CMAKE_CUDA_COMPILER}"
            "-DCMAKE_CUDA_ARCHITECTURES=OFF" "-DCMAKE_PREFIX_PATH=${_torch_prefix}"
    RESULT_VARIABLE _rc OUTPUT_VARIABLE _log ERROR_VARIABLE _log)
  file(WRITE "${_dir}/probe.log" "${_log}")
  if(_rc EQUAL 0)
    set(${out} "" PARENT_SCOPE)
    return()
  endif()
  # "CMake Error at FILE:LINE (message):" then the message's indented lines: the first error's text.
  set(_msg "")
  if(_log MATCHES "CMake Error[^\n]*\n(([ ]+[^\n]*\n)+)")
    string(REGEX REPLACE "[ \n]+" " " _msg "${CMAKE_MATCH_1}")
    string(STRIP "${_msg}" _msg)
  endif()
  if(_msg STREQUAL "")
    set(_msg "its configure failed")
  endif()
  set(${out} "${_msg}" PARENT_SCOPE)
endfunction()

macro(fastln_decide_cuda)
  string(TOUPPER "${FASTLN_CUDA}" FASTLN_CUDA_MODE)
  if(FASTLN_CUDA_MODE STREQUAL "AUTO")
  elseif(FASTLN_CUDA)
    set(FASTLN_CUDA_MODE ON)
  else()
    set(FASTLN_CUDA_MODE OFF)
  endif()
  set(FASTLN_CUDA_VERSION "")
  set(FASTLN_CUDA_TORCH_PACKAGE TRUE)
  set(FASTLN_CUDA_ARCHS "")
  set(FASTLN_CUDA_ARCHS_SOURCE "")
  set(_nvcc "")

  if(FASTLN_CUDA_MODE STREQUAL "OFF")
    _fastln_cuda_result(FALSE "FASTLN_CUDA=OFF")
  elseif(FASTLN_TORCH_CUDA STREQUAL "")
    _fastln_cuda_result(FALSE "torch ${FASTLN_TORCH_VERSION} is built without CUDA (torch.version.cuda is None)")
  else()
    # The CUDA compiler.
    if(CMAKE_CUDA_COMPILER)
      set(_nvcc "${CMAKE_CUDA_COMPILER}")
    elseif(NOT "$ENV{CUDACXX}" STREQUAL "")
      set(_nvcc "$ENV{CUDACXX}")
    else()
      unset(_nvcc)
      find_program(_nvcc nvcc HINTS "$ENV{CUDA_HOME}/bin" "$ENV{CUDA_PATH}/bin"
                   PATHS /usr/local/cuda/bin NO_CACHE)
    endif()
    if(NOT _nvcc)
      _fastln_cuda_result(FALSE "torch ${FASTLN_TORCH_VERSION} has CUDA ${FASTLN_TORCH_CUDA}, but no CUDA compiler was found (nvcc: set CUDA_HOME or CUDACXX, or put it on PATH)")
    else()
      execute_process(COMMAND "${_nvcc}" --version OUTPUT_VARIABLE _out RESULT_VARIABLE _rc ERROR_QUIET)
      string(REGEX MATCH "release ([0-9]+)\\.([0-9]+)" _m "${_out}")
      set(_nvcc_major "${CMAKE_MATCH_1}")
      set(FASTLN_CUDA_VERSION "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")
      string(REGEX MATCH "^[0-9]+" _torch_major "${FASTLN_TORCH_CUDA}")
      if(NOT _rc EQUAL 0 OR NOT _m)
        set(FASTLN_CUDA_VERSION "")
        _fastln_cuda_result(FALSE "${_nvcc} --version did not run or name a release")
      elseif(NOT _nvcc_major STREQUAL _torch_major)
        _fastln_cuda_result(FALSE "nvcc ${FASTLN_CUDA_VERSION} (${_nvcc}) does not match torch ${FASTLN_TORCH_VERSION}'s CUDA ${FASTLN_TORCH_CUDA} (the major versions must agree)")
      else()
        # Does it compile with this host compiler? (A separate small project; no error here.)
        include(CheckLanguage)
        if(NOT CMAKE_CUDA_COMPILER)
          set(ENV{CUDACXX} "${_nvcc}")
        endif()
        check_language(CUDA)
        if(NOT CMAKE_CUDA_COMPILER)
          _fastln_cuda_result(FALSE "nvcc ${FASTLN_CUDA_VERSION} (${_nvcc}) failed CMake's CUDA compiler check with this host compiler (CMakeFiles/CheckCUDA/CMakeOutput.log)")
        else()
          _fastln_torch_cuda_probe(_probe_error)
          set(_why "torch ${FASTLN_TORCH_VERSION} has CUDA ${FASTLN_TORCH_CUDA} and nvcc ${FASTLN_CUDA_VERSION} (${_nvcc}) matches it")
          if(_probe_error)
            set(FASTLN_CUDA_TORCH_PACKAGE FALSE)
            _fastln_cuda_result(TRUE "${_why}; torch's CMake package cannot use that toolkit (${_probe_error}; log: ${CMAKE_BINARY_DIR}/fastln_torch_cuda_probe/probe.log), so the build takes torch's headers and libraries directly")
          else()
            _fastln_cuda_result(TRUE "${_why}")
          endif()
        endif()
      endif()
    endif()
  endif()

  if(FASTLN_CUDA_MODE STREQUAL "ON" AND NOT FASTLN_CUDA_BUILD)
    message(FATAL_ERROR "fastln: FASTLN_CUDA=ON, but the CUDA kernels cannot be built: "
                        "${FASTLN_CUDA_REASON}. Install a CUDA build of torch and a CUDA toolkit "
                        "of the same major version, or build with FASTLN_CUDA=AUTO or OFF.")
  endif()

  if(FASTLN_CUDA_BUILD)
    execute_process(COMMAND "${_nvcc}" --list-gpu-arch OUTPUT_VARIABLE _known ERROR_QUIET)
    if(NOT FASTLN_CUDA_ARCHITECTURES STREQUAL "")
      set(FASTLN_CUDA_ARCHS "${FASTLN_CUDA_ARCHITECTURES}")
      set(FASTLN_CUDA_ARCHS_SOURCE "FASTLN_CUDA_ARCHITECTURES")
    elseif(NOT "$ENV{FASTLN_CUDA_ARCHITECTURES}" STREQUAL "")
      set(FASTLN_CUDA_ARCHS "$ENV{FASTLN_CUDA_ARCHITECTURES}")
      set(FASTLN_CUDA_ARCHS_SOURCE "FASTLN_CUDA_ARCHITECTURES in the environment")
    elseif(NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
      _fastln_torch_arch_list("$ENV{TORCH_CUDA_ARCH_LIST}" FASTLN_CUDA_ARCHS)
      set(FASTLN_CUDA_ARCHS_SOURCE "TORCH_CUDA_ARCH_LIST=$ENV{TORCH_CUDA_ARCH_LIST}")
    elseif(NOT _torch_gpu_cap STREQUAL "" AND _known MATCHES "compute_${_torch_gpu_cap}")
      set(FASTLN_CUDA_ARCHS "${_torch_gpu_cap}")
      set(FASTLN_CUDA_ARCHS_SOURCE "the visible GPU's: torch.cuda.get_device_capability() is sm_${_torch_gpu_cap}")
    else()
      set(FASTLN_CUDA_ARCHS 80 90)
      if(_known MATCHES "compute_100")
        list(APPEND FASTLN_CUDA_ARCHS 100)
      endif()
      if(_torch_gpu_cap STREQUAL "")
        set(FASTLN_CUDA_ARCHS_SOURCE "the default: no GPU visible, no TORCH_CUDA_ARCH_LIST or FASTLN_CUDA_ARCHITECTURES")
      else()
        set(FASTLN_CUDA_ARCHS_SOURCE "the default: nvcc ${FASTLN_CUDA_VERSION} cannot build for the visible GPU's sm_${_torch_gpu_cap}")
      endif()
    endif()
    string(REPLACE ";" "," _archs "${FASTLN_CUDA_ARCHS}")
    message(STATUS "fastln: CUDA kernels: ON (FASTLN_CUDA=${FASTLN_CUDA_MODE}: ${FASTLN_CUDA_REASON}); "
                   "architectures ${_archs} (${FASTLN_CUDA_ARCHS_SOURCE})")
  else()
    message(STATUS "fastln: CUDA kernels: OFF (FASTLN_CUDA=${FASTLN_CUDA_MODE}: ${FASTLN_CUDA_REASON})")
  endif()
endmacro()
