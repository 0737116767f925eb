// The fastln op library: TORCH_LIBRARY defines every op from its schema (op_decls.h). The
// kernels are registered where they are written: autograd and composite kernels in
// autograd.cpp, the CPU ones in cpu.cpp, the CUDA ones in cuda/ops_cuda.cpp.
#include <torch/library.h>

#include <cstring>
#include <string>

#include "op_decls.h"

namespace fastln {

TORCH_LIBRARY(fastln, m) {
  for (const char* schema : kSchemas) m.def(schema);
}

#ifndef FASTLN_WITH_CUDA
// Without this, a CUDA tensor would meet the dispatcher's generic "could not run" message. One
// boxed kernel serves every op (any signature), registered for each op of this library only:
// a CUDA fallback for the whole key would catch other libraries' ops too.
void no_cuda(const c10::OperatorHandle& op, torch::jit::Stack*) {
  TORCH_CHECK(false, op.schema().name(), ": fastln was built without CUDA kernels "
              "(`python -m fastln info` says why): reinstall it where torch has CUDA and a matching nvcc "
              "is found (FASTLN_CUDA=AUTO, the default), or with FASTLN_CUDA=ON to be told what is missing");
}
TORCH_LIBRARY_IMPL(fastln, CUDA, m) {
  for (const char* schema : kSchemas) {
    const std::string name(schema, std::strchr(schema, '('));
    m.impl(name.c_str(), torch::CppFunction::makeFromBoxedFunction<&no_cuda>());
  }
}
#endif

}  // namespace fastln
