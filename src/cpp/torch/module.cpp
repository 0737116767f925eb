// The Python extension fastln._C. Importing it registers the torch ops (TORCH_LIBRARY in
// library.cpp). The functions here report how fastln was built and which CPU path runs, and give
// fastln.functional an eager fast path to the ops.
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 with torch's Tensor casters
#include <torch/version.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "op_decls.h"
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

// The eager entries of fastln.functional: the same dispatcher ops as torch.ops.fastln
// (autograd, autocast and dispatch modes all apply), without torch.ops' generic parsing of
// Python arguments against the schema, ~3 us of a ~20 us small call (docs/cpu.md). Each entry
// first decides whether it may take the call, and only then runs the op once:
// - arguments of exactly the types below (tensors or None, normalized_shape an int or a
//   tuple/list of ints within int64, eps and weight_offset floats, flags bools): the op runs;
//   every error raised from here on is the op's own;
// - a torch.func transform active, or a tangent on an input (forward-mode AD), whatever the
//   other arguments' types: kComposite is returned, and fastln.functional computes with
//   torch's differentiable functions, after check_args (below);
// - anything else: kOps is returned, and fastln.functional calls torch.ops (which converts,
//   or fails in torch's words).
using fastln::OptTensor;
using fastln::Tensor2;

enum Route : int { kOps = 1, kComposite = 2 };

bool tensor_arg(py::handle h, OptTensor& out) {
  if (h.is_none()) return out = std::nullopt, true;
  if (!THPVariable_Check(h.ptr())) return false;
  out = THPVariable_Unpack(h.ptr());
  return true;
}
bool shape_arg(py::handle h, std::vector<int64_t>& out) {
  auto as_int = [&](PyObject* o) {
    if (!PyLong_CheckExact(o)) return false;  // bool, numpy ints, SymInt: torch.ops' conversions
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow) return false;
    out.push_back(v);
    return true;
  };
  PyObject* o = h.ptr();
  if (PyLong_CheckExact(o)) return as_int(o);
  if (!PyTuple_Check(o) && !PyList_Check(o)) return false;  // torch.Size is a tuple
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
  PyObject** items = PySequence_Fast_ITEMS(o);
  for (Py_ssize_t i = 0; i < n; ++i)
    if (!as_int(items[i])) return false;
  return true;
}
bool float_arg(py::handle h, double& v) {
  if (!PyFloat_CheckExact(h.ptr())) return false;
  v = PyFloat_AS_DOUBLE(h.ptr());
  return true;
}
bool opt_float_arg(py::handle h, std::optional<double>& v) {
  if (h.is_none()) return v = std::nullopt, true;
  double d;
  return float_arg(h, d) && (v = d, true);
}
bool bool_arg(py::handle h, bool& v) {
  if (h.ptr() != Py_True && h.ptr() != Py_False) return false;
  v = h.ptr() == Py_True;
  return true;
}
// A torch.func transform on the stack, or a forward-mode tangent on an input: fastln's C++
// autograd node has neither batching rules nor a jvp.
bool transformed(std::initializer_list<const OptTensor*> tensors) {
  // functorch includes its front-mode key while any transform is on its stack
  if (c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode)) return true;
  for (const OptTensor* t : tensors)
    if (t->has_value() && (*t)->defined() && (*t)->_fw_grad(/*level=*/0).defined()) return true;
  return false;
}

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
void check_strided(const char* op, std::initializer_list<std::pair<const char*, const OptTensor*>> tensors) {
  for (const auto& [name, t] : tensors)
    if (t->has_value() && (*t)->defined() && ((*t)->layout() != at::kStrided || (*t)->is_nested()))
      TORCH_CHECK_NOT_IMPLEMENTED(false, op, ": argument '", name, "' is a ",
                                  (*t)->is_nested() ? std::string("nested") : layout_name((*t)->layout()),
                                  " tensor; only strided (dense) tensors are supported");
}

py::object layer_norm(py::handle input_, py::handle shape_, py::handle weight_, py::handle bias_, py::handle eps_,
                      py::handle memory_efficient_, py::handle weight_offset_) {
  OptTensor input, weight, bias;
  std::vector<int64_t> shape;
  double eps, weight_offset;
  bool memory_efficient;
  if (!tensor_arg(input_, input) || !input || !tensor_arg(weight_, weight) || !tensor_arg(bias_, bias))
    return py::int_(int(kOps));
  if (transformed({&input, &weight, &bias})) return py::int_(int(kComposite));
  if (!shape_arg(shape_, shape) || !float_arg(eps_, eps) || !bool_arg(memory_efficient_, memory_efficient) ||
      !float_arg(weight_offset_, weight_offset))
    return py::int_(int(kOps));
  check_strided("fastln.layer_norm", {{"input", &input}, {"weight", &weight}, {"bias", &bias}});
  at::Tensor y;
  {
    py::gil_scoped_release no_gil;
    const auto& op = memory_efficient ? fastln::op::layer_norm_memory_efficient() : fastln::op::layer_norm();
    y = op.call(*input, c10::fromIntArrayRefSlow(shape), weight, bias, eps, weight_offset);
  }
  return py::cast(std::move(y));
}

py::object rms_norm(py::handle input_, py::handle shape_, py::handle weight_, py::handle eps_,
                    py::handle weight_offset_) {
  OptTensor input, weight;
  std::vector<int64_t> shape;
  std::optional<double> eps;
  double weight_offset;
  if (!tensor_arg(input_, input) || !input || !tensor_arg(weight_, weight)) return py::int_(int(kOps));
  if (transformed({&input, &weight})) return py::int_(int(kComposite));
  if (!shape_arg(shape_, shape) || !opt_float_arg(eps_, eps) || !float_arg(weight_offset_, weight_offset))
    return py::int_(int(kOps));
  check_strided("fastln.rms_norm", {{"input", &input}, {"weight", &weight}});
  at::Tensor y;
  {
    py::gil_scoped_release no_gil;
    y = fastln::op::rms_norm().call(*input, c10::fromIntArrayRefSlow(shape), weight, eps, weight_offset);
  }
  return py::cast(std::move(y));
}

// The ops' own argument checks (shapes, dtypes, devices, eps), for fastln.functional's
// composite route, which computes with torch's functions: the errors the op would raise.
void check_args(const std::string& op, const at::Tensor& input, const std::vector<int64_t>& normalized_shape,
                const OptTensor& weight, const OptTensor& bias, double eps, const OptTensor& residual,
                bool residual_in_fp32) {
  fastln::check_norm_args(op.c_str(), input, normalized_shape, weight, bias, eps);
  if (residual.has_value() && residual->defined())
    fastln::check_residual(op.c_str(), input, *residual, residual_in_fp32);
}

// fused_add_layer_norm (bias given) and fused_add_rms_norm (no bias argument, eps optional).
template <bool kRms>
py::object fused_add_norm(py::handle input_, py::handle residual_, py::handle shape_, py::handle weight_,
                          py::handle bias_, py::handle eps_, py::handle residual_in_fp32_, py::handle weight_offset_) {
  OptTensor input, residual, weight, bias;
  std::vector<int64_t> shape;
  std::optional<double> eps;
  double eps_value = 0, weight_offset;
  bool residual_in_fp32;
  if (!tensor_arg(input_, input) || !input || !tensor_arg(residual_, residual) || !residual ||
      !tensor_arg(weight_, weight) || (!kRms && !tensor_arg(bias_, bias)))
    return py::int_(int(kOps));
  if (transformed({&input, &residual, &weight, &bias})) return py::int_(int(kComposite));
  const bool eps_ok = kRms ? opt_float_arg(eps_, eps) : float_arg(eps_, eps_value);
  if (!shape_arg(shape_, shape) || !eps_ok || !bool_arg(residual_in_fp32_, residual_in_fp32) ||
      !float_arg(weight_offset_, weight_offset))
    return py::int_(int(kOps));
  const char* name = kRms ? "fastln.fused_add_rms_norm" : "fastln.fused_add_layer_norm";
  check_strided(name, {{"input", &input}, {"residual", &residual}, {"weight", &weight}, {"bias", &bias}});
  Tensor2 out;
  {
    py::gil_scoped_release no_gil;
    if constexpr (kRms)
      out = fastln::op::fused_add_rms_norm().call(*input, *residual, c10::fromIntArrayRefSlow(shape), weight, eps,
                                                  residual_in_fp32, weight_offset);
    else
      out = fastln::op::fused_add_layer_norm().call(*input, *residual, c10::fromIntArrayRefSlow(shape), weight,
                                                    bias, eps_value, residual_in_fp32, weight_offset);
  }
  return py::make_tuple(std::get<0>(out), std::get<1>(out));
}

}  // namespace

#ifdef FASTLN_WITH_CUDA
namespace fastln {
void def_cuda_plan_overrides(pybind11::module_& m);
}
#endif

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
  fastln::def_cuda_plan_overrides(m);  // cuda/ops_cuda.cpp
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
  // The eager entries (above): the op's result, or kOps / kComposite for fastln.functional.
  m.attr("ROUTE_OPS") = int(kOps);
  m.attr("ROUTE_COMPOSITE") = int(kComposite);
  m.def("layer_norm", &layer_norm, "torch.ops.fastln.layer_norm (or _memory_efficient), eager");
  m.def("rms_norm", &rms_norm, "torch.ops.fastln.rms_norm, eager");
  m.def("fused_add_layer_norm", &fused_add_norm<false>, "torch.ops.fastln.fused_add_layer_norm, eager");
  m.def("check_args", &check_args, "The ops' argument checks, for the composite route");
  m.def("fused_add_rms_norm", &fused_add_norm<true>, "torch.ops.fastln.fused_add_rms_norm, eager "
        "(bias: None)");
}
