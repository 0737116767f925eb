// Torch glue shared by the CPU and CUDA ops: argument checks, shapes, views.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "../kernels/layer_norm.h"

namespace fastln {

using OptTensor = std::optional<at::Tensor>;
using Tensor2 = std::tuple<at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The typed handle of a registered op, e.g. find_op<Sig>("fastln::layer_norm_fwd").
template <class Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// M rows of N elements: the input seen as (M, N), N = prod(normalized_shape).
struct NormShape {
  int64_t M, N;
  int64_t axis;  // first normalized dimension of the input
};

// Checks every argument of a norm op the way torch does (same error types), naming the
// argument and the op, and returns its shape. `op` is e.g. "fastln.layer_norm".
NormShape check_norm_args(const char* op, const at::Tensor& input, at::IntArrayRef normalized_shape,
                          const std::optional<at::Tensor>& weight,
                          const std::optional<at::Tensor>& bias, double eps);

// Checks a backward's grad_out (like input), mean and rstd (M elements of acc_dtype; mean
// may be undefined: RMSNorm).
void check_bwd_args(const char* op, const at::Tensor& grad_out, const at::Tensor& input,
                    const NormShape& s, const at::Tensor& mean, const at::Tensor& rstd);

// The dtype of the parameters (and their gradients): gamma's, else beta's, else the input's.
at::ScalarType param_dtype(const at::Tensor& input, const at::Tensor& gamma, const at::Tensor& beta);

// The residual of a fused residual add: the input's shape and device, and its dtype (or
// float32 for a 16-bit input with residual_in_fp32).
void check_residual(const char* op, const at::Tensor& input, const at::Tensor& residual,
                    bool residual_in_fp32);

// The dtype of mean and rstd: float, or double for double input.
at::ScalarType acc_dtype(at::ScalarType input);

// Shape of mean and rstd: the input's leading dims, then ones (as torch.native_layer_norm).
std::vector<int64_t> stat_shape(const at::Tensor& input, int64_t axis);

// t as M rows of N with contiguous elements: t itself when its strides allow (sliced rows,
// expanded rows), else a contiguous copy. ld is the row stride in elements.
struct Rows {
  at::Tensor t;
  int64_t ld;
};
Rows as_rows(const at::Tensor& t, int64_t M, int64_t N);

// A defined parameter made contiguous, or an undefined tensor.
at::Tensor contiguous_param(const std::optional<at::Tensor>& p);

// Kernel element type of a torch scalar type.
template <class S> struct KernelType { using type = S; };
template <> struct KernelType<at::BFloat16> { using type = bf16; };
template <> struct KernelType<at::Half> { using type = fp16; };

// Calls f.template operator()<T, P>() with T the kernel type of `input` and P that of the
// parameters (T, or float in mixed mode).
template <class F>
void dispatch_types(at::ScalarType input, at::ScalarType param, F&& f) {
  switch (input) {
    case at::kFloat: return f.template operator()<float, float>();
    case at::kDouble: return f.template operator()<double, double>();
    case at::kBFloat16:
      return param == at::kFloat ? f.template operator()<bf16, float>()
                                 : f.template operator()<bf16, bf16>();
    case at::kHalf:
      return param == at::kFloat ? f.template operator()<fp16, float>()
                                 : f.template operator()<fp16, fp16>();
    default: TORCH_CHECK(false, "fastln: unexpected dtype ", input);  // checked before
  }
}

template <class T>
T* ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<T*>(t.data_ptr()) : nullptr;
}

}  // namespace fastln
