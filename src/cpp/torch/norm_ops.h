// The device ops of the fastln library (layer_norm_fwd/bwd, rms_norm_fwd/bwd, add_norm_fwd),
// written once over a device's two glue functions: cpu.cpp and cuda/ops_cuda.cpp each register
// NormOps<their norm_fwd, their norm_bwd> for their dispatch key, so LayerNorm, RMSNorm and
// the fused residual add mean the same on every device.
#pragma once

#include <torch/library.h>

#include "common.h"

namespace fastln {


// (y, mean, rstd) of `norm` over the input's last dims; for kRms the bias is absent and mean is
// written as zeros. The weight counts as weight_offset + weight (ForwardArgs). With `residual`
// defined (the input's shape and dtype), input + residual, rounded to the input's dtype, is
// normalized and returned in *sum_out.
using NormFwdFn = Tensor3 (*)(const char* op, Norm norm, const at::Tensor& input,
                              c10::SymIntArrayRef normalized_shape, const OptTensor& weight,
                              const OptTensor& bias, double eps, double weight_offset,
                              const at::Tensor& residual, at::Tensor* sum_out);
// (dx, dweight, dbias), those not in output_mask empty; mean is undefined for kRms.
using NormBwdFn = Tensor3 (*)(const char* op, Norm norm, const at::Tensor& grad_out,
                              const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                              const at::Tensor& mean, const at::Tensor& rstd,
                              const OptTensor& weight, const OptTensor& bias,
                              double weight_offset, std::array<bool, 3> output_mask);

template <NormFwdFn Fwd, NormBwdFn Bwd>
struct NormOps {
  static Tensor3 layer_norm_fwd(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                const OptTensor& weight, const OptTensor& bias, double eps,
                                double weight_offset) {
    return Fwd("fastln.layer_norm", Norm::kLayer, input, normalized_shape, weight, bias, eps,
               weight_offset, {}, nullptr);
  }

  static Tensor3 layer_norm_bwd(const at::Tensor& grad_out, const at::Tensor& input,
                                c10::SymIntArrayRef normalized_shape, const at::Tensor& mean,
                                const at::Tensor& rstd, const OptTensor& weight,
                                const OptTensor& bias, std::array<bool, 3> output_mask,
                                double weight_offset) {
    return Bwd("fastln.layer_norm_bwd", Norm::kLayer, grad_out, input, normalized_shape, mean,
               rstd, weight, bias, weight_offset, output_mask);
  }

  static Tensor2 rms_norm_fwd(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                              const OptTensor& weight, double eps, double weight_offset) {
    auto [y, mean, rstd] = Fwd("fastln.rms_norm", Norm::kRms, input, normalized_shape, weight, {},
                               eps, weight_offset, {}, nullptr);
    return {y, rstd};
  }

  static Tensor2 rms_norm_bwd(const at::Tensor& grad_out, const at::Tensor& input,
                              c10::SymIntArrayRef normalized_shape, const at::Tensor& rstd,
                              const OptTensor& weight, std::array<bool, 2> output_mask,
                              double weight_offset) {
    auto [dx, dgamma, dbeta] = Bwd("fastln.rms_norm_bwd", Norm::kRms, grad_out, input,
                                   normalized_shape, {}, rstd, weight, {}, weight_offset,
                                   {output_mask[0], output_mask[1], false});
    return {dx, dgamma};
  }

  // Residual add + LayerNorm / RMSNorm: (output, input + residual, mean, rstd). With
  // residual_in_fp32 and a 16-bit input, the sum is formed, kept and normalized in float32.
  static Tensor4 add_norm_fwd(const at::Tensor& input, const at::Tensor& residual,
                              c10::SymIntArrayRef normalized_shape, const OptTensor& weight,
                              const OptTensor& bias, double eps, bool rms, bool residual_in_fp32,
                              double weight_offset) {
    const char* op = rms ? "fastln.fused_add_rms_norm" : "fastln.fused_add_layer_norm";
    TORCH_CHECK(!(rms && bias.has_value() && bias->defined()), op,
                ": RMSNorm has no bias; add_norm_fwd with rms=True takes bias=None");
    check_residual(op, input, residual, residual_in_fp32);
    const auto x = input.scalar_type();
    if (residual_in_fp32 && (x == at::kBFloat16 || x == at::kHalf)) {
      auto f32 = [](const OptTensor& p) -> OptTensor {
        return p.has_value() && p->defined() ? OptTensor(p->to(at::kFloat)) : p;
      };
      auto [y, sum, mean, rstd] = add_norm_fwd(input.to(at::kFloat), residual.to(at::kFloat),
                                               normalized_shape, f32(weight), f32(bias), eps, rms,
                                               false, weight_offset);
      return {y.to(x), sum, mean, rstd};
    }
    at::Tensor sum;
    auto [y, mean, rstd] = Fwd(op, rms ? Norm::kRms : Norm::kLayer, input, normalized_shape,
                               weight, bias, eps, weight_offset, residual, &sum);
    return {y, sum, mean, rstd};
  }

  static void register_impls(torch::Library& m) {
    m.impl("layer_norm_fwd", TORCH_FN(layer_norm_fwd));
    m.impl("layer_norm_bwd", TORCH_FN(layer_norm_bwd));
    m.impl("rms_norm_fwd", TORCH_FN(rms_norm_fwd));
    m.impl("rms_norm_bwd", TORCH_FN(rms_norm_bwd));
    m.impl("add_norm_fwd", TORCH_FN(add_norm_fwd));
  }
};

}  // namespace fastln
