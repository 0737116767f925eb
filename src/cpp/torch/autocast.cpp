// Autocast kernels of the fastln ops: the cast policy torch gives its own layer_norm.
//
// CUDA autocast runs layer_norm in float32 (ATen's AT_FORALL_FP32 list): inputs, weight and
// bias are cast to float32, so the output is float32, as nn.LayerNorm's under autocast.
// CPU autocast has no policy for layer_norm (it runs in the input's dtype, mixed-precision
// parameters included), so AutocastCPU keeps the global fallthrough.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "op_decls.h"

namespace fastln {
namespace {

at::Tensor layer_norm_autocast_cuda(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                    const std::optional<at::Tensor>& weight,
                                    const std::optional<at::Tensor>& bias, double eps,
                                    double weight_offset) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCUDA);
  constexpr auto cuda = c10::DeviceType::CUDA;
  return op::layer_norm().call(at::autocast::cached_cast(at::kFloat, input, cuda), normalized_shape,
                 at::autocast::cached_cast(at::kFloat, weight, cuda),
                 at::autocast::cached_cast(at::kFloat, bias, cuda), eps, weight_offset);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastln, AutocastCUDA, m) { m.impl("layer_norm", &layer_norm_autocast_cuda); }

}  // namespace fastln
