// CPU kernels of the fastln ops: allocation and threading around src/cpp/kernels.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "norm_ops.h"
#include "output_cache.h"

namespace fastln {
namespace {

// Smallest task: about 16K elements, below which waking a thread costs more than it saves.
// (at::parallel_for still splits larger ranges evenly across the threads.)
int64_t grain_rows(int64_t N) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1)); }

// LayerNorm and RMSNorm share this glue; `norm` picks the kernel's variant. For kRms, the
// bias is absent and mean is written as zeros (returned, but not part of the rms_norm ops).
// With a residual (of the input's shape and dtype), input + residual is normalized and
// returned in *sum_out.
std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_fwd_cpu(
    const char* op, Norm norm, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, double eps,
    double weight_offset, const at::Tensor& residual, at::Tensor* sum_out) {
  const auto s = check_norm_args(op, input, C10_AS_INTARRAYREF_SLOW(normalized_shape), weight,
                                 bias, eps);
  const Rows X = as_rows(input, s.M, s.N);
  Rows R{at::Tensor(), 0};
  at::Tensor S;
  if (residual.defined()) {
    R = as_rows(residual, s.M, s.N);
    S = *sum_out = empty_output(input.sizes(), input.options());
  }
  const at::Tensor gamma = contiguous_param(weight), beta = contiguous_param(bias);
  at::Tensor Y = empty_output(input.sizes(), input.options());
  at::Tensor mean = at::empty(stat_shape(input, s.axis), input.options().dtype(acc_dtype(input.scalar_type())));
  at::Tensor rstd = at::empty_like(mean);
  dispatch_types(input.scalar_type(), param_dtype(input, gamma, beta), [&]<class T, class P>() {
    const ForwardArgs<T, P> a{ptr<const T>(X.t), X.ld,           ptr<const P>(gamma),
                              ptr<const P>(beta), ptr<T>(Y),      ptr<acc_t<T>>(mean),
                              ptr<acc_t<T>>(rstd), s.N,           eps,
                              norm,               ptr<const T>(R.t), R.ld,
                              ptr<T>(S),          stream_output(s.M, s.N, sizeof(T)),
                              weight_offset};
    at::parallel_for(0, s.M, grain_rows(s.N), [&](int64_t b, int64_t e) { forward(a, b, e); });
  });
  return {Y, mean, rstd};
}

// mean is undefined for kRms.
std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_bwd_cpu(
    const char* op, Norm norm, const at::Tensor& grad_out, const at::Tensor& input,
    c10::SymIntArrayRef normalized_shape, const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    double weight_offset, std::array<bool, 3> output_mask) {
  const auto ns = C10_AS_INTARRAYREF_SLOW(normalized_shape);
  const auto s = check_norm_args(op, input, ns, weight, bias, 0.0);
  check_bwd_args(op, grad_out, input, s, mean, rstd);
  const auto acc = acc_dtype(input.scalar_type());

  const Rows X = as_rows(input, s.M, s.N), dY = as_rows(grad_out, s.M, s.N);
  const at::Tensor gamma = contiguous_param(weight);
  const at::Tensor mean_c = norm == Norm::kRms ? at::Tensor() : mean.contiguous(), rstd_c = rstd.contiguous();
  const auto pdtype = param_dtype(input, gamma, contiguous_param(bias));
  const auto opts = input.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor dX = output_mask[0] ? empty_output(input.sizes(), opts) : at::empty({0}, opts);
  at::Tensor dgamma = output_mask[1] ? at::empty(ns, opts.dtype(pdtype)) : at::empty({0}, opts.dtype(pdtype));
  at::Tensor dbeta = output_mask[2] ? at::empty(ns, opts.dtype(pdtype)) : at::empty({0}, opts.dtype(pdtype));
  const bool params = output_mask[1] || output_mask[2];
  const BlockPlan plan = plan_blocks(s.M, s.N);
  at::Tensor partial = params ? empty_output({plan.nblocks, 2, s.N}, opts.dtype(acc)) : at::Tensor();

  dispatch_types(input.scalar_type(), pdtype, [&]<class T, class P>() {
    const BackwardArgs<T, P> a{ptr<const T>(dY.t),         dY.ld,
                               ptr<const T>(X.t),          X.ld,
                               ptr<const acc_t<T>>(mean_c), ptr<const acc_t<T>>(rstd_c),
                               ptr<const P>(gamma),        output_mask[0] ? ptr<T>(dX) : nullptr,
                               ptr<acc_t<T>>(partial),     s.M,
                               s.N,                        norm,
                               stream_output(s.M, s.N, sizeof(T)), weight_offset};
    if (output_mask[0] || params)
      at::parallel_for(0, plan.nblocks, 1, [&](int64_t b, int64_t e) { backward_blocks(a, plan, b, e); });
    if (params)
      at::parallel_for(0, s.N, 4096, [&](int64_t b, int64_t e) {
        reduce_partials<T, P>(ptr<acc_t<T>>(partial), plan.nblocks, s.N,
                              output_mask[1] ? ptr<P>(dgamma) : nullptr,
                              output_mask[2] ? ptr<P>(dbeta) : nullptr, b, e);
      });
  });
  return {dX, dgamma, dbeta};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastln, CPU, m) { NormOps<norm_fwd_cpu, norm_bwd_cpu>::register_impls(m); }

}  // namespace fastln
