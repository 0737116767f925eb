// The fastln op library: schemas, autograd, and the composite entry point.
//
// fastln::layer_norm is what users call (through fastln.layer_norm). Its autograd kernel
// runs layer_norm_fwd, saves (input, mean, rstd) and calls layer_norm_bwd in backward; the
// device kernels live in cpu.cpp and cuda/. Autograd is in C++ so that a small call costs
// no more than torch's own F.layer_norm.
#include <torch/autograd.h>
#include <torch/library.h>

#include "common.h"

namespace fastln {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_fwd(const at::Tensor& input,
                                                        c10::SymIntArrayRef normalized_shape,
                                                        const std::optional<at::Tensor>& weight,
                                                        const std::optional<at::Tensor>& bias,
                                                        double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastln::layer_norm_fwd", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, c10::SymIntArrayRef, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, double)>();
  return op.call(input, normalized_shape, weight, bias, eps);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_bwd(
    const at::Tensor& grad_out, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const at::Tensor& mean, const at::Tensor& rstd, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, std::array<bool, 3> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastln::layer_norm_bwd", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                           const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, std::array<bool, 3>)>();
  return op.call(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask);
}

std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

class LayerNormFunction : public torch::autograd::Function<LayerNormFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            c10::SymIntArrayRef normalized_shape,
                            const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, mean, rstd] = call_fwd(input, normalized_shape, weight, bias, eps);
    ctx->save_for_backward({input, mean, rstd, weight.value_or(at::Tensor()), bias.value_or(at::Tensor())});
    ctx->saved_data["axis"] = input.dim() - static_cast<int64_t>(normalized_shape.size());
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &mean = saved[1], &rstd = saved[2];
    const at::Tensor &weight = saved[3], &bias = saved[4];
    const int64_t axis = ctx->saved_data["axis"].toInt();
    // needs_input_grad counts only the tensors given: input, then weight and bias if defined.
    const std::array<bool, 3> mask = {
        ctx->needs_input_grad(0), weight.defined() && ctx->needs_input_grad(1),
        bias.defined() && ctx->needs_input_grad(1 + weight.defined())};
    auto [dx, dgamma, dbeta] = call_bwd(grad_outputs[0], input, input.sym_sizes().slice(axis), mean,
                                        rstd, opt(weight), opt(bias), mask);
    return {mask[0] ? dx : at::Tensor(), at::Tensor(), mask[1] ? dgamma : at::Tensor(),
            mask[2] ? dbeta : at::Tensor(), at::Tensor()};
  }
};

at::Tensor layer_norm_autograd(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                               const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& bias, double eps) {
  return LayerNormFunction::apply(input, normalized_shape, weight, bias, eps);
}

// Below autograd (inference mode, tracing): the forward alone.
at::Tensor layer_norm_composite(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& bias, double eps) {
  return std::get<0>(call_fwd(input, normalized_shape, weight, bias, eps));
}

}  // namespace

TORCH_LIBRARY(fastln, m) {
  m.def("layer_norm(Tensor input, SymInt[] normalized_shape, Tensor? weight=None, "
        "Tensor? bias=None, float eps=1e-05) -> Tensor");
  // Returns (output, mean, rstd); mean and rstd have the input's leading dims, then ones.
  m.def("layer_norm_fwd(Tensor input, SymInt[] normalized_shape, Tensor? weight, Tensor? bias, "
        "float eps) -> (Tensor, Tensor, Tensor)");
  // Returns (grad_input, grad_weight, grad_bias); those not asked for in output_mask are empty.
  m.def("layer_norm_bwd(Tensor grad_out, Tensor input, SymInt[] normalized_shape, Tensor mean, "
        "Tensor rstd, Tensor? weight, Tensor? bias, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastln, Autograd, m) { m.impl("layer_norm", &layer_norm_autograd); }
TORCH_LIBRARY_IMPL(fastln, CompositeExplicitAutograd, m) { m.impl("layer_norm", &layer_norm_composite); }

#ifndef FASTLN_WITH_CUDA
// Without this, a CUDA tensor would meet the dispatcher's generic "could not run" message.
[[noreturn]] void no_cuda() {
  TORCH_CHECK(false, "fastln was built without CUDA kernels (FASTLN_CUDA=OFF): rebuild with "
                     "FASTLN_CUDA=ON to use CUDA tensors");
}
TORCH_LIBRARY_IMPL(fastln, CUDA, m) {
  m.impl("layer_norm_fwd", [](const at::Tensor&, c10::SymIntArrayRef, const std::optional<at::Tensor>&,
                              const std::optional<at::Tensor>&, double)
                               -> std::tuple<at::Tensor, at::Tensor, at::Tensor> { no_cuda(); });
  m.impl("layer_norm_bwd",
         [](const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef, const at::Tensor&,
            const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
            std::array<bool, 3>) -> std::tuple<at::Tensor, at::Tensor, at::Tensor> { no_cuda(); });
}
#endif

}  // namespace fastln
