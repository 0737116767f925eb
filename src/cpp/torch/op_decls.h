// Every fastln op once: its schema (TORCH_LIBRARY defines the library from kSchemas, in
// library.cpp) and, beside it, the C++ type of the typed handle through which the glue calls
// it (autograd.cpp, module.cpp, autocast.cpp): change an op here and the compiler finds every
// caller. Python's view of the same ops: fake kernels in src/fastln/_ops.py.
#pragma once

#include "common.h"

namespace fastln {

// The schemas, one an op (a build without CUDA gives each the same CUDA stub: library.cpp).
inline constexpr const char* kSchemas[] = {
    // weight_offset (every op): the weight counts as weight_offset + weight (zero-centred gamma,
    // as Gemma's 1 + weight), the sum formed in the accumulation type; it needs a weight.
    "layer_norm(Tensor input, SymInt[] normalized_shape, Tensor? weight=None, "
    "Tensor? bias=None, float eps=1e-05, *, float weight_offset=0.0) -> Tensor",
    // Returns (output, mean, rstd); mean and rstd have the input's leading dims, then ones.
    "layer_norm_fwd(Tensor input, SymInt[] normalized_shape, Tensor? weight, Tensor? bias, "
    "float eps, float weight_offset=0.0) -> (Tensor, Tensor, Tensor)",
    // Returns (grad_input, grad_weight, grad_bias); those not asked for in output_mask are empty.
    "layer_norm_bwd(Tensor grad_out, Tensor input, SymInt[] normalized_shape, Tensor mean, "
    "Tensor rstd, Tensor? weight, Tensor? bias, bool[3] output_mask, float weight_offset=0.0) "
    "-> (Tensor, Tensor, Tensor)",
    // layer_norm that saves its output, not its input, for backward.
    "layer_norm_memory_efficient(Tensor input, SymInt[] normalized_shape, "
    "Tensor? weight=None, Tensor? bias=None, float eps=1e-05, *, float weight_offset=0.0) -> Tensor",
    // (output - bias) / (weight_offset + weight) / rstd, in the output's dtype: the input minus its mean.
    "recover_centered_input(Tensor output, SymInt[] normalized_shape, Tensor rstd, "
    "Tensor? weight, Tensor? bias, float weight_offset=0.0) -> Tensor",
    // eps=None: torch.finfo of the computation type (float32 for 16-bit inputs).
    "rms_norm(Tensor input, SymInt[] normalized_shape, Tensor? weight=None, "
    "float? eps=None, *, float weight_offset=0.0) -> Tensor",
    // Returns (output, rstd); rstd as layer_norm_fwd's.
    "rms_norm_fwd(Tensor input, SymInt[] normalized_shape, Tensor? weight, float eps, "
    "float weight_offset=0.0) -> (Tensor, Tensor)",
    "rms_norm_bwd(Tensor grad_out, Tensor input, SymInt[] normalized_shape, Tensor rstd, "
    "Tensor? weight, bool[2] output_mask, float weight_offset=0.0) -> (Tensor, Tensor)",
    // Residual add fused with the norm: (norm(input + residual), input + residual).
    "fused_add_layer_norm(Tensor input, Tensor residual, SymInt[] normalized_shape, "
    "Tensor? weight=None, Tensor? bias=None, float eps=1e-05, bool residual_in_fp32=False, *, "
    "float weight_offset=0.0) -> (Tensor, Tensor)",
    "fused_add_rms_norm(Tensor input, Tensor residual, SymInt[] normalized_shape, "
    "Tensor? weight=None, float? eps=None, bool residual_in_fp32=False, *, "
    "float weight_offset=0.0) -> (Tensor, Tensor)",
    // Returns (output, input + residual, mean, rstd); rms: mean is zeros, bias must be None.
    "add_norm_fwd(Tensor input, Tensor residual, SymInt[] normalized_shape, Tensor? weight, "
    "Tensor? bias, float eps, bool rms, bool residual_in_fp32, float weight_offset=0.0) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
};


// Typed handles: op::layer_norm().call(...), resolved once.
namespace op {
#define FASTLN_OP_HANDLE(name, ...)                                                   \
  inline const c10::TypedOperatorHandle<__VA_ARGS__>& name() {                        \
    static const auto handle = find_op<__VA_ARGS__>("fastln::" #name);                \
    return handle;                                                                    \
  }
using Shape = c10::SymIntArrayRef;
FASTLN_OP_HANDLE(layer_norm, at::Tensor(const at::Tensor&, Shape, const OptTensor&, const OptTensor&, double, double))
FASTLN_OP_HANDLE(layer_norm_memory_efficient,
                 at::Tensor(const at::Tensor&, Shape, const OptTensor&, const OptTensor&, double, double))
FASTLN_OP_HANDLE(layer_norm_fwd, Tensor3(const at::Tensor&, Shape, const OptTensor&, const OptTensor&, double, double))
FASTLN_OP_HANDLE(layer_norm_bwd, Tensor3(const at::Tensor&, const at::Tensor&, Shape, const at::Tensor&,
                                         const at::Tensor&, const OptTensor&, const OptTensor&, std::array<bool, 3>,
                                         double))
FASTLN_OP_HANDLE(recover_centered_input,
                 at::Tensor(const at::Tensor&, Shape, const at::Tensor&, const OptTensor&, const OptTensor&, double))
FASTLN_OP_HANDLE(rms_norm, at::Tensor(const at::Tensor&, Shape, const OptTensor&, std::optional<double>, double))
FASTLN_OP_HANDLE(rms_norm_fwd, Tensor2(const at::Tensor&, Shape, const OptTensor&, double, double))
FASTLN_OP_HANDLE(rms_norm_bwd, Tensor2(const at::Tensor&, const at::Tensor&, Shape, const at::Tensor&,
                                       const OptTensor&, std::array<bool, 2>, double))
FASTLN_OP_HANDLE(fused_add_layer_norm, Tensor2(const at::Tensor&, const at::Tensor&, Shape, const OptTensor&,
                                               const OptTensor&, double, bool, double))
FASTLN_OP_HANDLE(fused_add_rms_norm, Tensor2(const at::Tensor&, const at::Tensor&, Shape, const OptTensor&,
                                             std::optional<double>, bool, double))
FASTLN_OP_HANDLE(add_norm_fwd, Tensor4(const at::Tensor&, const at::Tensor&, Shape, const OptTensor&,
                                       const OptTensor&, double, bool, bool, double))
#undef FASTLN_OP_HANDLE
}  // namespace op

}  // namespace fastln
