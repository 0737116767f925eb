// The Python extension fastln._C. Importing it registers the torch ops (TORCH_LIBRARY in
// ops.cpp); the functions here only report how fastln was built and which CPU path runs.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/version.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "../kernels/layer_norm.h"

namespace py = pybind11;

namespace {

fastln::Isa isa_from_name(const std::string& name) {
  for (auto isa : {fastln::Isa::kBase, fastln::Isa::kAvx2, fastln::Isa::kAvx512})
    if (name == fastln::isa_name(isa)) return isa;
  throw py::value_error("isa must be one of 'base', 'avx2', 'avx512', got '" + name + "'");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastln native extension: registers torch.ops.fastln and reports build facts";
  m.attr("torch_version") = TORCH_VERSION;
#if defined(__clang__)
  m.attr("compiler") = "clang " __clang_version__;
#elif defined(__GNUC__)
  m.attr("compiler") = "gcc " __VERSION__;
#else
  m.attr("compiler") = "unknown";
#endif
#ifdef FASTLN_WITH_CUDA
  m.attr("cuda") = true;
  m.attr("cuda_archs") = FASTLN_CUDA_ARCHS;
#else
  m.attr("cuda") = false;
  m.attr("cuda_archs") = "";
#endif
  m.def("isa", [] { return std::string(fastln::isa_name(fastln::active_isa())); },
        "The CPU kernel build in use: 'base', 'avx2' or 'avx512'.");
  m.def("available_isas", [] {
    std::vector<std::string> out;
    for (auto isa : {fastln::Isa::kBase, fastln::Isa::kAvx2, fastln::Isa::kAvx512})
      if (isa <= fastln::best_isa()) out.emplace_back(fastln::isa_name(isa));
    return out;
  }, "The CPU kernel builds this CPU can run, lowest first.");
  m.def("set_isa", [](const std::string& name) { fastln::set_isa(isa_from_name(name)); },
        "Use the given CPU kernel build (lowered to the best this CPU supports).");
}
