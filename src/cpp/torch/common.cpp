#include "common.h"

#include <ATen/TensorUtils.h>

#include <cmath>

namespace fastln {
namespace {

bool is_reduced_float(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

void check_param(const char* op, const char* name, const at::Tensor& p, const at::Tensor& input,
                 at::IntArrayRef normalized_shape) {
  TORCH_CHECK(p.sizes() == normalized_shape, op, ": expected ", name,
              " of the shape of normalized_shape ", normalized_shape, ", but got ", name,
              " of shape ", p.sizes());
  TORCH_CHECK(p.device() == input.device(), op, ": expected ", name, " on the input's device ",
              input.device(), ", but got ", name, " on ", p.device());
  const auto t = p.scalar_type(), x = input.scalar_type();
  TORCH_CHECK(t == x || (is_reduced_float(x) && t == at::kFloat), op, ": expected ", name,
              " of dtype ", x, (is_reduced_float(x) ? " or Float" : ""), " (input is ", x,
              "), but got ", name, " of dtype ", t);
}

}  // namespace

NormShape check_norm_args(const char* op, const at::Tensor& input, at::IntArrayRef normalized_shape,
                          const std::optional<at::Tensor>& weight,
                          const std::optional<at::Tensor>& bias, double eps) {
  const auto x = input.scalar_type();
  TORCH_CHECK_NOT_IMPLEMENTED(
      x == at::kFloat || x == at::kDouble || x == at::kBFloat16 || x == at::kHalf, op,
      ": input of dtype ", x, " is not supported (float32, float64, bfloat16 or float16)");
  const int64_t ndim = static_cast<int64_t>(normalized_shape.size());
  TORCH_CHECK(ndim >= 1, op, ": normalized_shape must have at least one dimension, got ",
              normalized_shape);
  const int64_t axis = input.dim() - ndim;
  TORCH_CHECK(axis >= 0 && input.sizes().slice(axis) == normalized_shape, op,
              ": given normalized_shape=", normalized_shape, ", expected input with shape [*, ",
              c10::Join(", ", normalized_shape), "], but got input of size ", input.sizes());
  for (int64_t d : normalized_shape)
    TORCH_CHECK(d >= 0, op, ": normalized_shape must not be negative, got ", normalized_shape);
  TORCH_CHECK_VALUE(std::isfinite(eps), op, ": eps must be finite, got ", eps);
  const bool has_w = weight.has_value() && weight->defined();
  const bool has_b = bias.has_value() && bias->defined();
  if (has_w) check_param(op, "weight", *weight, input, normalized_shape);
  if (has_b) check_param(op, "bias", *bias, input, normalized_shape);
  TORCH_CHECK(!(has_w && has_b) || weight->scalar_type() == bias->scalar_type(), op,
              ": expected weight and bias of one dtype, but got weight of dtype ",
              weight->scalar_type(), " and bias of dtype ", bias->scalar_type());
  const int64_t N = c10::multiply_integers(normalized_shape);
  const int64_t M = c10::multiply_integers(input.sizes().slice(0, axis));
  return {M, N, axis};
}

void check_bwd_args(const char* op, const at::Tensor& grad_out, const at::Tensor& input,
                    const NormShape& s, const at::Tensor& mean, const at::Tensor& rstd) {
  TORCH_CHECK(grad_out.sizes() == input.sizes() && grad_out.scalar_type() == input.scalar_type() &&
                  grad_out.device() == input.device(),
              op, ": expected grad_out like input (", input.sizes(), ", ", input.scalar_type(),
              "), got ", grad_out.sizes(), ", ", grad_out.scalar_type(), " on ", grad_out.device());
  const auto acc = acc_dtype(input.scalar_type());
  for (const at::Tensor* t : {&mean, &rstd})  // RMSNorm has no mean (undefined)
    TORCH_CHECK(!t->defined() || t->numel() == s.M && t->scalar_type() == acc && t->device() == input.device(), op,
                ": expected ", (mean.defined() ? "mean and rstd" : "rstd"), " of ", s.M, " elements of dtype ", acc, ", got ",
                t->sizes(), " of dtype ", t->scalar_type());
}

at::ScalarType param_dtype(const at::Tensor& input, const at::Tensor& gamma, const at::Tensor& beta) {
  return gamma.defined() ? gamma.scalar_type()
         : beta.defined() ? beta.scalar_type()
                          : input.scalar_type();
}

void check_residual(const char* op, const at::Tensor& input, const at::Tensor& residual,
                    bool residual_in_fp32) {
  TORCH_CHECK(residual.sizes() == input.sizes(), op, ": expected residual of the input's shape ",
              input.sizes(), ", but got residual of shape ", residual.sizes());
  TORCH_CHECK(residual.device() == input.device(), op, ": expected residual on the input's device ",
              input.device(), ", but got residual on ", residual.device());
  const auto r = residual.scalar_type(), x = input.scalar_type();
  const bool fp32 = residual_in_fp32 && is_reduced_float(x);
  TORCH_CHECK(r == x || (fp32 && r == at::kFloat), op, ": expected residual of dtype ",
              x, (fp32 ? " or Float" : ""), " (input is ", x, "), but got residual of dtype ", r);
}

at::ScalarType acc_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

std::vector<int64_t> stat_shape(const at::Tensor& input, int64_t axis) {
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  std::fill(shape.begin() + axis, shape.end(), 1);
  return shape;
}

Rows as_rows(const at::Tensor& t, int64_t M, int64_t N) {
  const int64_t mn[2] = {M, N};
  if (auto st = at::detail::computeStride(t.sizes(), t.strides(), mn)) {
    if (N <= 1 || (*st)[1] == 1) return {t, M <= 1 ? N : (*st)[0]};
  }
  return {t.contiguous(), N};
}

at::Tensor contiguous_param(const std::optional<at::Tensor>& p) {
  return p.has_value() && p->defined() ? p->contiguous() : at::Tensor();
}

}  // namespace fastln
