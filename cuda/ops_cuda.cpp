// CUDA implementations of the fastln device ops (NormOps, src/cpp/torch/norm_ops.h): checks,
// allocation, the input's device and current stream, then the torch-free launchers of
// launch.cu. LayerNorm, RMSNorm and the fused residual add share norm_fwd_cuda /
// norm_bwd_cuda, as the CPU ops share norm_fwd_cpu / norm_bwd_cpu.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <type_traits>

#include "../src/cpp/torch/norm_ops.h"
#include "launch_plan.h"
#include "layer_norm_cuda.h"

namespace fastln {
namespace {

bool aligned16(const at::Tensor& t) {
  return !t.defined() || (reinterpret_cast<uintptr_t>(t.data_ptr()) & 15) == 0;
}

// Every row tensor allows 16-byte vectors of T: row strides and base pointers.
template <class T>
bool vectorizable(int64_t N, std::initializer_list<Rows> rows, std::initializer_list<at::Tensor> dense) {
  constexpr int VEC = 16 / sizeof(T);
  bool ok = N % VEC == 0;
  for (const Rows& r : rows) ok = ok && r.ld % VEC == 0 && aligned16(r.t);
  for (const at::Tensor& t : dense) ok = ok && aligned16(t);
  return ok;
}

void check_row_length(const char* op, int64_t N) {
  TORCH_CHECK(N < (int64_t(1) << 31), op, ": normalized size ", N,
              " is too large for the CUDA kernels");
}

// A weight offset reaches the kernels as parameters of the accumulation type (float, or double
// for double): weight_offset + weight, and the bias, formed by one small kernel
// (launch_offset_params, cuda/params.cuh) with the float add the CPU kernels make in registers,
// so the results are those of an in-kernel add. 16-bit inputs then take the kernels' mixed mode
// (float parameters); the backward writes dgamma and dbeta in the parameters' own dtype. In the
// norm kernels, the add cost registers and spills in 178 of 984 builds (docs/journal.md,
// 2026-12-06): they stay as they were.
bool offset_applies(const OptTensor& weight, double weight_offset) {
  return weight_offset != 0 && weight.has_value() && weight->defined();
}
// An offset of exactly 1 (Gemma) is read by the kernels themselves, without that kernel and its
// buffer: the kernels of PlusOne<W> parameters (launch.cu), for a weight of the input's dtype
// (float, bf16, fp16) or a float32 weight on 16-bit input (mixed precision); LayerNorm's bias
// (of the weight's dtype: check_norm_args) is read as it is.
bool plus_one_applies(const at::Tensor& input, const OptTensor& weight, double weight_offset) {
  const at::ScalarType x = input.scalar_type();
  if (weight_offset != 1.0 || !offset_applies(weight, weight_offset)) return false;
  const at::ScalarType w = weight->scalar_type();
  return x == at::kFloat ? w == x : (x == at::kBFloat16 || x == at::kHalf) && (w == x || w == at::kFloat);
}
// dispatch_types, or (T, PlusOne<W>) where plus_one (W: the weight's type, param).
template <class F>
void dispatch_kernel_types(at::ScalarType input, at::ScalarType param, bool plus_one, F&& f) {
  if (!plus_one) return dispatch_types(input, param, f);
  using cuda_impl::PlusOne;
  const bool mixed = param == at::kFloat && input != at::kFloat;
  switch (input) {
    case at::kFloat: return f.template operator()<float, PlusOne<float>>();
    case at::kBFloat16:
      return mixed ? f.template operator()<bf16, PlusOne<float>>() : f.template operator()<bf16, PlusOne<bf16>>();
    case at::kHalf:
      return mixed ? f.template operator()<fp16, PlusOne<float>>() : f.template operator()<fp16, PlusOne<fp16>>();
    default: TORCH_CHECK(false, "fastln: no PlusOne kernels for ", input);  // plus_one_applies
  }
}
// Row 0: weight_offset + weight; row 1 (with a bias): the bias; in the accumulation type of input.
at::Tensor offset_params(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                         double weight_offset) {
  const at::ScalarType acc = acc_dtype(input.scalar_type());
  at::Tensor out = at::empty({bias.defined() ? 2 : 1, weight.numel()}, weight.options().dtype(acc));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = weight.numel();
  const auto run = [&]<class P, class A>() {
    const cudaError_t err = cuda_impl::launch_offset_params<P, A>(
        ptr<const P>(weight), ptr<const P>(bias), A(weight_offset), ptr<A>(out), bias.defined() ? ptr<A>(out) + n : nullptr,
        n, stream);
    C10_CUDA_CHECK(err);
  };
  switch (weight.scalar_type()) {  // the types check_norm_args allows beside input
    case at::kDouble: run.template operator()<double, double>(); break;
    case at::kFloat: run.template operator()<float, float>(); break;
    case at::kBFloat16: run.template operator()<bf16, float>(); break;
    case at::kHalf: run.template operator()<fp16, float>(); break;
    default: TORCH_CHECK(false, "fastln: unexpected weight dtype ", weight.scalar_type());
  }
  return out;
}

Tensor3 norm_fwd_cuda(const char* op, Norm norm, const at::Tensor& input,
                      c10::SymIntArrayRef normalized_shape, const OptTensor& weight,
                      const OptTensor& bias, double eps, double weight_offset,
                      const at::Tensor& residual, at::Tensor* sum_out) {
  const auto s = check_norm_args(op, input, C10_AS_INTARRAYREF_SLOW(normalized_shape), weight,
                                 bias, eps);
  const c10::cuda::CUDAGuard guard(input.device());
  const auto opts = input.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor Y = at::empty(input.sizes(), opts);
  at::Tensor S = residual.defined() ? (*sum_out = at::empty(input.sizes(), opts)) : at::Tensor();
  at::Tensor mean = at::empty(stat_shape(input, s.axis), opts.dtype(acc_dtype(input.scalar_type())));
  at::Tensor rstd = at::empty_like(mean);
  if (s.M == 0) return {Y, mean, rstd};
  if (s.N == 0) {  // as the CPU kernel: mean 0, variance 0
    mean.zero_();
    rstd.fill_(1.0 / std::sqrt(eps));
    return {Y, mean, rstd};
  }
  check_row_length(op, s.N);
  const Rows X = as_rows(input, s.M, s.N);
  const Rows R = residual.defined() ? as_rows(residual, s.M, s.N) : Rows{at::Tensor(), 0};
  at::Tensor gamma = contiguous_param(weight), beta = contiguous_param(bias);
  const bool plus_one = plus_one_applies(input, weight, weight_offset);
  if (!plus_one && offset_applies(weight, weight_offset)) {  // the kernels read gamma and beta as flat rows
    const at::Tensor acc = offset_params(input, gamma, beta, weight_offset);
    gamma = acc[0];
    beta = beta.defined() ? acc[1] : at::Tensor();
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_kernel_types(input.scalar_type(), param_dtype(input, gamma, beta), plus_one, [&]<class T, class P>() {
    const bool vec_ok = vectorizable<T>(s.N, {X, R}, {gamma, beta, Y, S});
    const cuda_impl::FwdParams<T, P> p{
        {ptr<const T>(X.t), X.ld, ptr<const P>(gamma), ptr<const P>(beta), ptr<T>(Y),
         ptr<acc_t<T>>(mean), ptr<acc_t<T>>(rstd), s.N, eps, norm, ptr<const T>(R.t), R.ld,
         ptr<T>(S)},
        s.M};
    const cudaError_t err = cuda_impl::launch_fwd<T, P>(p, vec_ok, stream);
    C10_CUDA_CHECK(err);
  });
  return {Y, mean, rstd};
}

// The backward of kernel parameters `gamma` (the weight, or weight_offset + weight in the
// accumulation type, or the weight read as 1 + weight where plus_one), dgamma and dbeta made in
// `pdtype` (the parameters' dtype).
Tensor3 bwd_impl(Norm norm, const at::Tensor& grad_out, const at::Tensor& input, at::IntArrayRef ns,
                 const NormShape& s, const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& gamma,
                 at::ScalarType pdtype, bool plus_one, std::array<bool, 3> output_mask, const char* op) {
  const auto opts = input.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor dX = output_mask[0] ? at::empty(input.sizes(), opts) : at::empty({0}, opts);
  at::Tensor dgamma = output_mask[1] ? at::empty(ns, opts.dtype(pdtype)) : at::empty({0}, opts.dtype(pdtype));
  at::Tensor dbeta = output_mask[2] ? at::empty(ns, opts.dtype(pdtype)) : at::empty({0}, opts.dtype(pdtype));
  const bool params = output_mask[1] || output_mask[2];
  if (s.N == 0 || (!output_mask[0] && !params)) return {dX, dgamma, dbeta};
  if (s.M == 0) {
    if (output_mask[1]) dgamma.zero_();
    if (output_mask[2]) dbeta.zero_();
    return {dX, dgamma, dbeta};
  }
  check_row_length(op, s.N);
  const Rows X = as_rows(input, s.M, s.N), dY = as_rows(grad_out, s.M, s.N);
  const at::Tensor mean_c = norm == Norm::kRms ? at::Tensor() : mean.contiguous();
  const at::Tensor rstd_c = rstd.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int device = input.get_device();
  const at::ScalarType kernel_pdtype = gamma.defined() ? gamma.scalar_type() : pdtype;
  dispatch_kernel_types(input.scalar_type(), kernel_pdtype, plus_one, [&]<class T, class P>() {
    const bool vec_ok = vectorizable<T>(s.N, {X, dY}, {gamma, dX});
    cuda_impl::BwdParams<T, P> p{
        {ptr<const T>(dY.t), dY.ld, ptr<const T>(X.t), X.ld, ptr<const acc_t<T>>(mean_c),
         ptr<const acc_t<T>>(rstd_c), ptr<const P>(gamma), output_mask[0] ? ptr<T>(dX) : nullptr,
         nullptr, s.M, s.N, norm}};
    // fp32 (fp64 for double) partial column sums, one [2][N] row per CTA, summed in order.
    at::Tensor partial;
    int64_t nparts = 0;
    if (params) {
      nparts = cuda_impl::bwd_num_partials<T, P>(p, vec_ok, device);
      partial = at::empty({nparts, 2, s.N}, opts.dtype(acc_dtype(input.scalar_type())));
      p.partial = ptr<acc_t<T>>(partial);
    }
    const auto launch = [&]<class Q>() {
      return cuda_impl::launch_bwd<T, P, Q>(p, vec_ok, nparts, output_mask[1] ? ptr<Q>(dgamma) : nullptr,
                                            output_mask[2] ? ptr<Q>(dbeta) : nullptr, stream);
    };
    cudaError_t err;
    if constexpr (sizeof(T) == 2 && std::is_same_v<P, float>) {  // float kernel parameters, 16-bit gradients?
      err = pdtype == at::kFloat ? launch.template operator()<float>() : launch.template operator()<T>();
    } else if constexpr (cuda_impl::kPlusOne<P>) {  // the weight's dtype
      err = launch.template operator()<decltype(P::v)>();
    } else {
      err = launch.template operator()<P>();
    }
    C10_CUDA_CHECK(err);
  });
  return {dX, dgamma, dbeta};
}

Tensor3 norm_bwd_cuda(const char* op, Norm norm, const at::Tensor& grad_out,
                      const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                      const at::Tensor& mean, const at::Tensor& rstd, const OptTensor& weight,
                      const OptTensor& bias, double weight_offset,
                      std::array<bool, 3> output_mask) {
  const auto ns = C10_AS_INTARRAYREF_SLOW(normalized_shape);
  const auto s = check_norm_args(op, input, ns, weight, bias, 0.0);
  check_bwd_args(op, grad_out, input, s, mean, rstd);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor gamma = contiguous_param(weight);
  const auto pdtype = param_dtype(input, gamma, contiguous_param(bias));
  const bool plus_one = plus_one_applies(input, weight, weight_offset);
  const at::Tensor kernel_gamma = !plus_one && offset_applies(weight, weight_offset)
                                      ? offset_params(input, gamma, at::Tensor(), weight_offset)[0]
                                      : gamma;
  return bwd_impl(norm, grad_out, input, ns, s, mean, rstd, kernel_gamma, pdtype, plus_one, output_mask, op);
}

// PlanOverrides::slice_align: the cluster slices' vectors a multiple of 1, 2, 4 or 8
// (launch_plan.h, slice_vectors; more could change a CTA's threads).
int slice_align_arg(int a) {
  if (a != 1 && a != 2 && a != 4 && a != 8)
    throw pybind11::value_error("cuda_plan_overrides: slice_align must be 1, 2, 4 or 8, got " + std::to_string(a));
  return a;
}

// PlanOverrides::bwd_lines: -1 (heuristics), 0 or 1.
int bwd_lines_arg(int v) {
  if (v < -1 || v > 1)
    throw pybind11::value_error("cuda_plan_overrides: bwd_lines must be -1, 0 or 1, got " + std::to_string(v));
  return v;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastln, CUDA, m) { NormOps<norm_fwd_cuda, norm_bwd_cuda>::register_impls(m); }

// _C.cuda_plan_overrides(overrides=None): the launch plans' overrides (cuda/launch_plan.h) for
// tests and benchmarks, in place of environment knobs. Returns those in force before the call as
// a dict of every key; a dict sets the keys it names, the others to their defaults.
void def_cuda_plan_overrides(pybind11::module_& m) {
  namespace py = pybind11;
  m.def(
      "cuda_plan_overrides",
      [](const py::object& set) {
        const cuda_impl::PlanOverrides before = cuda_impl::plan_overrides();
        py::dict d;
        d["cluster_fwd"] = before.cluster_fwd, d["cluster_bwd"] = before.cluster_bwd;
        d["partial_cluster"] = before.partial_cluster, d["fwd_staged"] = before.fwd_staged;
        d["bwd_staged"] = before.bwd_staged, d["bwd_two_rows"] = before.bwd_two_rows, d["pdl"] = before.pdl;
        d["fwd_nv"] = before.fwd_nv, d["fwd_block"] = before.fwd_block, d["fwd_hoist"] = before.fwd_hoist;
        d["fwd_persist"] = before.fwd_persist, d["bwd_staged_nv"] = before.bwd_staged_nv;
        d["slice_align"] = before.slice_align, d["bwd_lines"] = before.bwd_lines;
        if (!set.is_none()) {
          cuda_impl::PlanOverrides ov;
          for (const auto& [key, value] : py::cast<py::dict>(set)) {
            const std::string k = py::cast<std::string>(key);
            if (k == "cluster_fwd") ov.cluster_fwd = py::cast<int>(value);
            else if (k == "cluster_bwd") ov.cluster_bwd = py::cast<int>(value);
            else if (k == "partial_cluster") ov.partial_cluster = py::cast<int>(value);
            else if (k == "fwd_staged") ov.fwd_staged = py::cast<bool>(value);
            else if (k == "bwd_staged") ov.bwd_staged = py::cast<int>(value);
            else if (k == "bwd_two_rows") ov.bwd_two_rows = py::cast<bool>(value);
            else if (k == "pdl") ov.pdl = py::cast<bool>(value);
            else if (k == "fwd_nv") ov.fwd_nv = py::cast<int>(value);
            else if (k == "fwd_block") ov.fwd_block = py::cast<int>(value);
            else if (k == "fwd_hoist") ov.fwd_hoist = py::cast<int>(value);
            else if (k == "fwd_persist") ov.fwd_persist = py::cast<int>(value);
            else if (k == "bwd_staged_nv") ov.bwd_staged_nv = py::cast<int>(value);
            else if (k == "slice_align") ov.slice_align = slice_align_arg(py::cast<int>(value));
            else if (k == "bwd_lines") ov.bwd_lines = bwd_lines_arg(py::cast<int>(value));
            else throw py::key_error("cuda_plan_overrides: no override " + k);
          }
          cuda_impl::set_plan_overrides(ov);
        }
        return d;
      },
      py::arg("overrides") = py::none(),
      "The CUDA launch plans' overrides, process-wide, for experiments and tests (cuda/launch_plan.h: "
      "cluster_fwd, cluster_bwd, partial_cluster, fwd_staged, bwd_staged, bwd_two_rows, pdl, fwd_nv, fwd_block, fwd_hoist, fwd_persist, bwd_staged_nv, slice_align, bwd_lines). Returns "
      "those in force before; a dict sets the keys it names and the others to their defaults.");
}

}  // namespace fastln
