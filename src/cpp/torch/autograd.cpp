// Autograd and the composite entry points of the fastln ops (schemas: op_decls.h).
//
// fastln::layer_norm and fastln::rms_norm are what users call (through fastln.layer_norm and
// fastln.rms_norm). One C++ autograd node (NormBackward) serves both, the memory-efficient
// layer_norm and the fused residual adds: forward runs the *_fwd op, backward the *_bwd op;
// the device kernels live in cpu.cpp and cuda/. Autograd is in C++ so that a small call costs
// no more than torch's own.
//
// Double backward: when backward runs with grad mode on (create_graph=True), the gradients
// are computed with differentiable ATen ops instead of the *_bwd kernel, so autograd records
// them (composite_backward below). First-order backward always uses the kernel.
#include <ATen/FuncTorchTLS.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include <cfloat>
#include <cstring>
#include <string>

#include "op_decls.h"

namespace fastln {
namespace {

using torch::autograd::variable_list;

OptTensor opt(const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// What the norm ops compute, whichever op the user called.
struct NormOutputs {
  at::Tensor y, mean, rstd;  // mean undefined for RMSNorm
};

NormOutputs call_fwd(bool rms, const at::Tensor& input, c10::SymIntArrayRef ns, const OptTensor& weight,
                     const OptTensor& bias, double eps, double weight_offset) {
  if (rms) {
    auto [y, rstd] = op::rms_norm_fwd().call(input, ns, weight, eps, weight_offset);
    return {y, at::Tensor(), rstd};
  }
  auto [y, mean, rstd] = op::layer_norm_fwd().call(input, ns, weight, bias, eps, weight_offset);
  return {y, mean, rstd};
}

Tensor3 call_bwd(bool rms, const at::Tensor& grad_out, const at::Tensor& input, c10::SymIntArrayRef ns,
            const at::Tensor& mean, const at::Tensor& rstd, const OptTensor& weight, const OptTensor& bias,
            std::array<bool, 3> mask, double weight_offset) {
  if (rms) {
    auto [dx, dw] = op::rms_norm_bwd().call(grad_out, input, ns, rstd, weight, {mask[0], mask[1]}, weight_offset);
    return {dx, dw, at::Tensor()};
  }
  return op::layer_norm_bwd().call(grad_out, input, ns, mean, rstd, weight, bias, mask, weight_offset);
}

// x - mean recovered from the output y = (x - mean) * rstd * (weight_offset + weight) + bias
// (memory-efficient backward). An op of its own, so that its check of the weight runs on real
// data only.
at::Tensor call_recover(const at::Tensor& y, c10::SymIntArrayRef ns, const at::Tensor& rstd,
                        const OptTensor& weight, const OptTensor& bias, double weight_offset) {
  return op::recover_centered_input().call(y, ns, rstd, weight, bias, weight_offset);
}

Tensor4 call_add_fwd(const at::Tensor& input, const at::Tensor& residual, c10::SymIntArrayRef ns,
                     const OptTensor& weight, const OptTensor& bias, double eps, bool rms, bool residual_in_fp32,
                     double weight_offset) {
  return op::add_norm_fwd().call(input, residual, ns, weight, bias, eps, rms, residual_in_fp32, weight_offset);
}

std::vector<int64_t> dim_range(int64_t begin, int64_t end) {
  std::vector<int64_t> d;
  for (int64_t i = begin; i < end; ++i) d.push_back(i);
  return d;
}

// The backward formulas in differentiable ATen ops, on the accumulation dtype; mean and rstd
// are recomputed from the input so that their dependence on it is recorded too.
Tensor3 composite_backward(bool rms, const at::Tensor& grad_out, const at::Tensor& input, int64_t axis,
                      const at::Tensor& weight, double weight_offset, double eps, std::array<bool, 3> mask) {
  const auto acc = acc_dtype(input.scalar_type());
  const auto norm_dims = dim_range(axis, input.dim()), lead_dims = dim_range(0, axis);
  const at::Tensor x = input.to(acc), dy = grad_out.to(acc);
  const at::Tensor xc = rms ? x : x - x.mean(norm_dims, true);
  const at::Tensor rstd = (xc * xc).mean(norm_dims, true).add(eps).rsqrt();
  const at::Tensor xhat = xc * rstd;
  const at::Tensor g = weight.defined() ? dy * (weight.to(acc) + weight_offset) : dy;
  // sum over the leading dims (sum over an empty dim list would sum everything)
  auto lead_sum = [&](const at::Tensor& t) { return axis == 0 ? t : t.sum(lead_dims); };
  at::Tensor dx, dw, db;
  if (mask[0]) {
    at::Tensor inner = g - xhat * (g * xhat).mean(norm_dims, true);
    if (!rms) inner = inner - g.mean(norm_dims, true);
    dx = (rstd * inner).to(input.scalar_type());
  }
  const auto pdtype = weight.defined() ? weight.scalar_type() : input.scalar_type();
  if (mask[1]) dw = lead_sum(dy * xhat).to(pdtype);
  if (mask[2]) db = lead_sum(dy).to(pdtype);
  return {dx, dw, db};
}

// A new autograd node: torch >= 2.12 holds nodes in c10::intrusive_ptr (pytorch#181782),
// earlier versions in std::shared_ptr with torch's iterative deleter (deep graphs).
template <class N>
auto new_node() {
  if constexpr (std::is_base_of_v<c10::intrusive_ptr_target, torch::autograd::Node>)
    return c10::make_intrusive<N>();
  else
    return std::shared_ptr<N>(new N(), [](N* n) { deleteNode(n); });  // found by ADL at instantiation
}

// The autograd node of every fastln norm, written out as torch's generated nodes are
// (NativeLayerNormBackward0): a training call costs ~14 us less than through a
// torch::autograd::Function's CppNode (its context's hash maps, input and output metadata,
// generic output wrapping), 12% of a (100, 512) call (docs/cpu.md, per-call overhead).
// Gradient slots: (input, weight, bias); with add_, the fused residual add whose outputs are
// (norm(input + residual), input + residual), (input, residual, weight, bias).
// Traceable: apply calls only dispatcher ops (with fake kernels), so compiled autograd traces
// it with the saved tensors swapped for its proxies (compiled_args, apply_with_saved).
struct NormBackward final : torch::autograd::TraceableFunction {
  // x_: what was normalized: the input, or the output with memory_efficient_ (x - mean is
  // recovered from it), or input + residual (an output) with add_.
  torch::autograd::SavedVariable x_, mean_, rstd_, weight_, bias_;
  int64_t axis_ = 0;
  double eps_ = 0, weight_offset_ = 0;
  bool rms_ = false, memory_efficient_ = false, add_ = false;
  at::ScalarType input_dtype_ = at::kFloat, residual_dtype_ = at::kFloat;  // add_: of the gradients

  std::string name() const override { return "fastln::NormBackward"; }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto* v : {&x_, &mean_, &rstd_, &weight_, &bias_}) v->reset_data();
  }
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(x_, memory_efficient_ || add_);
    for (const auto* v : {&mean_, &rstd_, &weight_, &bias_}) args.collect(*v, false);
    args.collect(axis_);
    args.collect(eps_);
    args.collect(weight_offset_);
    args.collect(rms_);
    args.collect(memory_efficient_);
    args.collect(add_);
    args.collect(input_dtype_);
    args.collect(residual_dtype_);
  }
  variable_list apply_with_saved(const variable_list& grads,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    for (auto* v : {&x_, &mean_, &rstd_, &weight_, &bias_}) saved.before(*v);
    variable_list out = apply(variable_list(grads));
    for (auto* v : {&x_, &mean_, &rstd_, &weight_, &bias_}) saved.after(*v);
    return out;
  }
  variable_list apply(variable_list&& grads) override;
};

variable_list NormBackward::apply(variable_list&& grads) {
  std::lock_guard<std::mutex> lock(mutex_);
  const at::Tensor x = memory_efficient_ || add_ ? x_.unpack(getptr()) : x_.unpack(), mean = mean_.unpack(),
                   rstd = rstd_.unpack(), weight = weight_.unpack(), bias = bias_.unpack();
  const int p = add_ ? 2 : 1;  // the weight's slot
  const bool need_x = task_should_compute_output(0), need_r = add_ && task_should_compute_output(1);
  const std::array<bool, 3> mask = {need_x || need_r, task_should_compute_output(p),
                                    task_should_compute_output(p + 1)};
  // With residual_in_fp32, x (the sum) is float32: the kernels then take float32 parameters
  // and a float32 gradient (16-bit dy arrives).
  auto param = [&](const at::Tensor& t) {
    return add_ && t.defined() && x.scalar_type() == at::kFloat ? t.to(at::kFloat) : t;
  };
  const at::Tensor w = param(weight), b = param(bias);
  const at::Tensor dy = grads[0].defined() ? grads[0].to(x.scalar_type()) : at::zeros_like(x);
  const auto ns = x.sym_sizes().slice(axis_);
  at::Tensor dx, dw, db;
  if (at::GradMode::is_enabled()) {  // create_graph=True: record the backward
    TORCH_CHECK(!memory_efficient_,
                "fastln.layer_norm: double backward (create_graph=True) is not supported with "
                "memory_efficient=True, which does not keep the input; use "
                "memory_efficient=False");
    std::tie(dx, dw, db) = composite_backward(rms_, dy, x, axis_, w, weight_offset_, eps_, mask);
  } else {
    // Straight to the kernel: through the autograd key, the *_bwd ops would meet torch's
    // boxed autograd fallback, 8 us of a 45 us small backward.
    at::AutoDispatchBelowADInplaceOrView guard;
    if (memory_efficient_) {  // the kernel on x - mean, with a mean of zero
      const at::Tensor xc = call_recover(x, ns, rstd, opt(w), opt(b), weight_offset_);
      std::tie(dx, dw, db) =
          call_bwd(rms_, dy, xc, ns, at::zeros_like(rstd), rstd, opt(w), opt(b), mask, weight_offset_);
    } else {
      std::tie(dx, dw, db) = call_bwd(rms_, dy, x, ns, mean, rstd, opt(w), opt(b), mask, weight_offset_);
    }
  }
  if (mask[1] && add_) dw = dw.to(weight.scalar_type());
  if (mask[2] && add_) db = db.to(bias.scalar_type());
  if (!add_) return {need_x ? dx : at::Tensor(), mask[1] ? dw : at::Tensor(), mask[2] ? db : at::Tensor()};
  // The sum's gradient: the norm's, plus what arrived at the sum itself (residual_out).
  if (mask[0] && grads[1].defined()) dx = dx + grads[1];
  return {need_x ? dx.to(input_dtype_) : at::Tensor(), need_r ? dx.to(residual_dtype_) : at::Tensor(),
          mask[1] ? dw : at::Tensor(), mask[2] ? db : at::Tensor()};
}

// eps=None for rms_norm: as torch, the machine epsilon of the computation type (float for
// 16-bit inputs, whose opmath type it is).
double rms_eps(const at::Tensor& input, std::optional<double> eps) {
  return eps.value_or(input.scalar_type() == at::kDouble ? DBL_EPSILON : FLT_EPSILON);
}

const at::Tensor& or_undefined(const OptTensor& t) {
  static const at::Tensor undefined;
  return t.has_value() ? *t : undefined;
}

// The gradient edges of a call's inputs, or none when no input requires grad (or grad mode is
// off): then the forward runs alone, as building the graph node costs ~2 us, a fifth of a small
// call (docs/cpu.md, per-call overhead). torch.func's gradient transforms and forward-mode AD
// have no formula here and fail clearly when torch.ops.fastln is called directly under them
// (vmap passes the check); fastln.functional sends such calls to torch's own functions.
torch::autograd::edge_list grad_edges(const char* op, std::initializer_list<const at::Tensor*> inputs) {
  if (const auto& functorch = at::functorch::functorchTLSAccessor()) functorch->checkSupportsCppAutogradFunction();
  bool grad = false;
  for (const at::Tensor* t : inputs) {
    TORCH_CHECK_NOT_IMPLEMENTED(!t->defined() || !t->_fw_grad(0).defined(), op,
                                ": forward-mode AD is not supported (jvp is not implemented)");
    grad |= t->defined() && t->requires_grad();
  }
  torch::autograd::edge_list edges;
  if (grad && at::GradMode::is_enabled())
    for (const at::Tensor* t : inputs)
      edges.push_back(t->defined() ? torch::autograd::impl::gradient_edge(*t) : torch::autograd::Edge());
  return edges;
}

// A NormBackward for a call with these gradient edges; the caller sets the outputs' history and
// saves x_.
auto norm_node(torch::autograd::edge_list edges, const at::Tensor& mean, const at::Tensor& rstd,
               const at::Tensor& weight, const at::Tensor& bias, int64_t axis, double eps,
               double weight_offset, bool rms) {
  auto node = new_node<NormBackward>();
  node->set_next_edges(std::move(edges));
  using torch::autograd::SavedVariable;
  node->mean_ = SavedVariable(mean, false);
  node->rstd_ = SavedVariable(rstd, false);
  node->weight_ = SavedVariable(weight, false);
  node->bias_ = SavedVariable(bias, false);
  node->axis_ = axis;
  node->eps_ = eps;
  node->weight_offset_ = weight_offset;
  node->rms_ = rms;
  return node;
}

// weight_offset is added to the weight: without a weight it would mean nothing, so it is refused.
void check_offset(const char* op, const at::Tensor& weight, double weight_offset) {
  TORCH_CHECK_VALUE(weight_offset == 0 || weight.defined(), op, ": weight_offset=", weight_offset,
                    " needs a weight (the output is scaled by weight_offset + weight)");
}

at::Tensor norm_autograd(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                         const OptTensor& weight, const OptTensor& bias, double eps, double weight_offset,
                         bool rms, bool memory_efficient) {
  const char* op = rms ? "fastln.rms_norm" : "fastln.layer_norm";
  const at::Tensor &w = or_undefined(weight), &b = or_undefined(bias);
  check_offset(op, w, weight_offset);
  const auto forward = [&] {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_fwd(rms, input, normalized_shape, weight, bias, eps, weight_offset);
  };
  auto edges = grad_edges(op, {&input, &w, &b});
  const NormOutputs out = forward();
  if (edges.empty()) return out.y;
  auto node = norm_node(std::move(edges), out.mean, out.rstd, w, b,
                        input.dim() - static_cast<int64_t>(normalized_shape.size()), eps, weight_offset, rms);
  torch::autograd::set_history(out.y, node);
  node->x_ = torch::autograd::SavedVariable(memory_efficient ? out.y : input, memory_efficient);
  node->memory_efficient_ = memory_efficient;
  return out.y;
}
at::Tensor layer_norm_autograd(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                               const OptTensor& weight, const OptTensor& bias, double eps, double weight_offset) {
  return norm_autograd(input, normalized_shape, weight, bias, eps, weight_offset, false, false);
}
at::Tensor layer_norm_me_autograd(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                  const OptTensor& weight, const OptTensor& bias, double eps, double weight_offset) {
  return norm_autograd(input, normalized_shape, weight, bias, eps, weight_offset, false, true);
}
at::Tensor rms_norm_autograd(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                             const OptTensor& weight, std::optional<double> eps, double weight_offset) {
  return norm_autograd(input, normalized_shape, weight, OptTensor(), rms_eps(input, eps), weight_offset, true,
                       false);
}

Tensor2 fused_add_norm_autograd(const at::Tensor& input, const at::Tensor& residual,
                                c10::SymIntArrayRef normalized_shape, const OptTensor& weight,
                                const OptTensor& bias, double eps, bool rms, bool residual_in_fp32,
                                double weight_offset) {
  const char* op = rms ? "fastln.fused_add_rms_norm" : "fastln.fused_add_layer_norm";
  const at::Tensor &w = or_undefined(weight), &b = or_undefined(bias);
  check_offset(op, w, weight_offset);
  const auto forward = [&] {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_add_fwd(input, residual, normalized_shape, weight, bias, eps, rms, residual_in_fp32, weight_offset);
  };
  auto edges = grad_edges(op, {&input, &residual, &w, &b});
  auto [y, sum, mean, rstd] = forward();
  if (edges.empty()) return {y, sum};
  auto node = norm_node(std::move(edges), mean, rstd, w, b,
                        input.dim() - static_cast<int64_t>(normalized_shape.size()), eps, weight_offset, rms);
  torch::autograd::set_history(y, node);
  torch::autograd::set_history(sum, node);
  node->x_ = torch::autograd::SavedVariable(sum, true);
  node->add_ = true;
  node->input_dtype_ = input.scalar_type();
  node->residual_dtype_ = residual.scalar_type();
  return {y, sum};
}
Tensor2 fused_add_layer_norm_autograd(const at::Tensor& input, const at::Tensor& residual,
                                 c10::SymIntArrayRef normalized_shape, const OptTensor& weight,
                                 const OptTensor& bias, double eps, bool residual_in_fp32, double weight_offset) {
  return fused_add_norm_autograd(input, residual, normalized_shape, weight, bias, eps, false,
                                 residual_in_fp32, weight_offset);
}
Tensor2 fused_add_rms_norm_autograd(const at::Tensor& input, const at::Tensor& residual,
                               c10::SymIntArrayRef normalized_shape, const OptTensor& weight,
                               std::optional<double> eps, bool residual_in_fp32, double weight_offset) {
  return fused_add_norm_autograd(input, residual, normalized_shape, weight, OptTensor(),
                                 rms_eps(input, eps), true, residual_in_fp32, weight_offset);
}

// Below autograd (inference mode, tracing): the forward alone.
Tensor2 fused_add_layer_norm_composite(const at::Tensor& input, const at::Tensor& residual,
                                  c10::SymIntArrayRef normalized_shape, const OptTensor& weight,
                                  const OptTensor& bias, double eps, bool residual_in_fp32, double weight_offset) {
  check_offset("fastln.fused_add_layer_norm", or_undefined(weight), weight_offset);
  auto [y, sum, mean, rstd] = call_add_fwd(input, residual, normalized_shape, weight, bias, eps, false,
                                           residual_in_fp32, weight_offset);
  return {y, sum};
}
Tensor2 fused_add_rms_norm_composite(const at::Tensor& input, const at::Tensor& residual,
                                c10::SymIntArrayRef normalized_shape, const OptTensor& weight,
                                std::optional<double> eps, bool residual_in_fp32, double weight_offset) {
  check_offset("fastln.fused_add_rms_norm", or_undefined(weight), weight_offset);
  auto [y, sum, mean, rstd] = call_add_fwd(input, residual, normalized_shape, weight, {},
                                           rms_eps(input, eps), true, residual_in_fp32, weight_offset);
  return {y, sum};
}
at::Tensor layer_norm_composite(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                const OptTensor& weight, const OptTensor& bias, double eps, double weight_offset) {
  check_offset("fastln.layer_norm", or_undefined(weight), weight_offset);
  return call_fwd(false, input, normalized_shape, weight, bias, eps, weight_offset).y;
}
at::Tensor rms_norm_composite(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                              const OptTensor& weight, std::optional<double> eps, double weight_offset) {
  check_offset("fastln.rms_norm", or_undefined(weight), weight_offset);
  return call_fwd(true, input, normalized_shape, weight, {}, rms_eps(input, eps), weight_offset).y;
}

at::Tensor recover_centered_input(const at::Tensor& y, c10::SymIntArrayRef normalized_shape,
                                  const at::Tensor& rstd, const OptTensor& weight, const OptTensor& bias,
                                  double weight_offset) {
  const auto acc = acc_dtype(y.scalar_type());
  at::Tensor yhat = y.to(acc);
  if (bias.has_value() && bias->defined()) yhat = yhat - bias->to(acc);
  if (weight.has_value() && weight->defined()) {
    const at::Tensor w = weight->to(acc) + weight_offset;
    TORCH_CHECK(!(w == 0).any().item<bool>(),
                "fastln.layer_norm(memory_efficient=True): the weight has elements equal to 0, "
                "so the normalized input cannot be recovered from the output in backward; use "
                "memory_efficient=False for this layer");
    yhat = yhat / w;
  }
  // rows with rstd = inf (eps <= 0, constant row) have x - mean = 0
  return (yhat / rstd).nan_to_num(0.0, 0.0, 0.0).to(y.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(fastln, Autograd, m) {
  m.impl("fused_add_layer_norm", &fused_add_layer_norm_autograd);
  m.impl("fused_add_rms_norm", &fused_add_rms_norm_autograd);
  m.impl("layer_norm", &layer_norm_autograd);
  m.impl("layer_norm_memory_efficient", &layer_norm_me_autograd);
  m.impl("rms_norm", &rms_norm_autograd);
}
TORCH_LIBRARY_IMPL(fastln, CompositeExplicitAutograd, m) {
  m.impl("layer_norm", &layer_norm_composite);
  m.impl("layer_norm_memory_efficient", &layer_norm_composite);
  m.impl("rms_norm", &rms_norm_composite);
  m.impl("recover_centered_input", &recover_centered_input);
  m.impl("fused_add_layer_norm", &fused_add_layer_norm_composite);
  m.impl("fused_add_rms_norm", &fused_add_rms_norm_composite);
}

}  // namespace fastln
