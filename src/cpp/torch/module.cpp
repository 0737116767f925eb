// The Python extension fastln._C. Importing it registers the torch ops (TORCH_LIBRARY in
// ops.cpp). The functions here report how fastln was built and which CPU path runs, and give
// fastln.functional an eager fast path to the ops.
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 with torch's Tensor casters
#include <torch/version.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "output_cache.h"

namespace py = pybind11;

namespace {

fastln::Isa isa_from_name(const std::string& name) {
  std::string names;
  for (auto isa : fastln::kIsas) {
    if (name == fastln::isa_name(isa)) return isa;
    names += std::string(names.empty() ? "'" : ", '") + fastln::isa_name(isa) + "'";
  }
  throw py::value_error("isa must be one of " + names + ", got '" + name + "'");
}

// The eager fast path of fastln.functional: the same dispatcher ops as torch.ops.fastln
// (autograd, autocast, dispatch modes all apply), without torch.ops' generic parsing of Python
// arguments against the schema, ~3 us of a ~20 us small call (docs/cpu.md). Typed signatures:
// fastln.functional calls these only with arguments of the exact types below (checked first), so
// every error raised here is the op's own.
using fastln::find_op;
using fastln::OptTensor;
using fastln::Tensor2;

// torch's Python name of a layout (c10 prints torch.sparse_coo as "Sparse").
std::string layout_name(at::Layout layout) {
  switch (layout) {
    case at::kSparse: return "torch.sparse_coo";
    case at::kSparseCsr: return "torch.sparse_csr";
    case at::kSparseCsc: return "torch.sparse_csc";
    case at::kSparseBsr: return "torch.sparse_bsr";
    case at::kSparseBsc: return "torch.sparse_bsc";
    default: return c10::str(layout);
  }
}

// Sparse and nested tensors would reach the dispatcher's "could not run" message: say which
// argument, as fastln.functional's torch.ops route does (NotImplementedError, as torch).
void check_strided(const char* op, std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
  for (const auto& [name, t] : tensors)
    if (t->defined() && (t->layout() != at::kStrided || t->is_nested()))
      TORCH_CHECK_NOT_IMPLEMENTED(false, op, ": argument '", name, "' is a ",
                                  t->is_nested() ? std::string("nested") : layout_name(t->layout()),
                                  " tensor; only strided (dense) tensors are supported");
}
const at::Tensor& get(const OptTensor& t) {
  static const at::Tensor undefined;
  return t.has_value() ? *t : undefined;
}

at::Tensor layer_norm(const at::Tensor& input, const std::vector<int64_t>& normalized_shape,
                      const OptTensor& weight, const OptTensor& bias, double eps, bool memory_efficient,
                      double weight_offset) {
  using Sig = at::Tensor(const at::Tensor&, c10::SymIntArrayRef, const OptTensor&, const OptTensor&, double, double);
  static const auto op = find_op<Sig>("fastln::layer_norm");
  static const auto op_me = find_op<Sig>("fastln::layer_norm_memory_efficient");
  check_strided("fastln.layer_norm", {{"input", &input}, {"weight", &get(weight)}, {"bias", &get(bias)}});
  py::gil_scoped_release no_gil;
  return (memory_efficient ? op_me : op).call(input, c10::fromIntArrayRefSlow(normalized_shape),
                                              weight, bias, eps, weight_offset);
}

at::Tensor rms_norm(const at::Tensor& input, const std::vector<int64_t>& normalized_shape,
                    const OptTensor& weight, std::optional<double> eps, double weight_offset) {
  static const auto op = find_op<at::Tensor(const at::Tensor&, c10::SymIntArrayRef, const OptTensor&,
                                            std::optional<double>, double)>("fastln::rms_norm");
  check_strided("fastln.rms_norm", {{"input", &input}, {"weight", &get(weight)}});
  py::gil_scoped_release no_gil;
  return op.call(input, c10::fromIntArrayRefSlow(normalized_shape), weight, eps, weight_offset);
}

Tensor2 fused_add_layer_norm(const at::Tensor& input, const at::Tensor& residual,
                        const std::vector<int64_t>& normalized_shape, const OptTensor& weight,
                        const OptTensor& bias, double eps, bool residual_in_fp32, double weight_offset) {
  static const auto op = find_op<Tensor2(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                                    const OptTensor&, const OptTensor&, double, bool, double)>(
      "fastln::fused_add_layer_norm");
  check_strided("fastln.fused_add_layer_norm",
                {{"input", &input}, {"residual", &residual}, {"weight", &get(weight)}, {"bias", &get(bias)}});
  py::gil_scoped_release no_gil;
  return op.call(input, residual, c10::fromIntArrayRefSlow(normalized_shape), weight, bias, eps,
                 residual_in_fp32, weight_offset);
}

Tensor2 fused_add_rms_norm(const at::Tensor& input, const at::Tensor& residual,
                      const std::vector<int64_t>& normalized_shape, const OptTensor& weight,
                      std::optional<double> eps, bool residual_in_fp32, double weight_offset) {
  static const auto op = find_op<Tensor2(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                                    const OptTensor&, std::optional<double>, bool, double)>(
      "fastln::fused_add_rms_norm");
  check_strided("fastln.fused_add_rms_norm", {{"input", &input}, {"residual", &residual}, {"weight", &get(weight)}});
  py::gil_scoped_release no_gil;
  return op.call(input, residual, c10::fromIntArrayRefSlow(normalized_shape), weight, eps,
                 residual_in_fp32, weight_offset);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastln native extension: registers torch.ops.fastln and reports build facts";
  // The ops' errors reach Python as torch.ops raises them (c10::NotImplementedError as
  // NotImplementedError, c10::ValueError as ValueError, a hook's Python exception as itself),
  // not as pybind11's RuntimeError.
  py::register_local_exception_translator([](std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const py::builtin_exception&) {
      throw;  // pybind11's own (argument conversion, py::value_error): its translation
    } catch (const py::error_already_set&) {
      throw;
    } catch (...) {  // c10 errors, and Python errors raised in hooks inside the op: torch's
      torch::translate_exception_to_python(std::current_exception());
    }
  });
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
        "The CPU kernel build in use: 'base', 'avx2', 'avx512' or 'avx512bf16'.");
  m.def("available_isas", [] {
    std::vector<std::string> out;
    for (auto isa : fastln::kIsas)
      if (isa <= fastln::best_isa()) out.emplace_back(fastln::isa_name(isa));
    return out;
  }, "The CPU kernel builds this CPU can run, lowest first.");
  m.def("set_isa", [](const std::string& name) { fastln::set_isa(isa_from_name(name)); },
        "Use the given CPU kernel build (lowered to the best this CPU supports).");
  m.def("output_cache_stats", [] {
    const auto s = fastln::output_cache_stats();
    py::dict d;
    d["cached_bytes"] = s.cached_bytes, d["limit_bytes"] = s.limit_bytes;
    d["hits"] = s.hits, d["misses"] = s.misses;
    return d;
  }, "The CPU output cache: idle bytes kept, its limit, allocations served from it and not.");
  m.def("empty_output_cache", &fastln::empty_output_cache,
        "Return the CPU output cache's idle blocks to the system; returns the bytes.");
  // eps and the flags without conversion: True is no eps, as for torch.ops.
  const auto eps = py::arg("eps").noconvert(), offset = py::arg("weight_offset").noconvert();
  m.def("layer_norm", &layer_norm, "torch.ops.fastln.layer_norm (or _memory_efficient), eager",
        py::arg("input"), py::arg("normalized_shape"), py::arg("weight"), py::arg("bias"), eps,
        py::arg("memory_efficient").noconvert(), offset);
  m.def("rms_norm", &rms_norm, "torch.ops.fastln.rms_norm, eager", py::arg("input"),
        py::arg("normalized_shape"), py::arg("weight"), eps, offset);
  m.def("fused_add_layer_norm", &fused_add_layer_norm, "torch.ops.fastln.fused_add_layer_norm, eager",
        py::arg("input"), py::arg("residual"), py::arg("normalized_shape"), py::arg("weight"),
        py::arg("bias"), eps, py::arg("residual_in_fp32").noconvert(), offset);
  m.def("fused_add_rms_norm", &fused_add_rms_norm, "torch.ops.fastln.fused_add_rms_norm, eager",
        py::arg("input"), py::arg("residual"), py::arg("normalized_shape"), py::arg("weight"), eps,
        py::arg("residual_in_fp32").noconvert(), offset);
}
