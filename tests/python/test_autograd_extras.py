"""Double backward, replace_norms and the memory-efficient backward."""
import pytest
import torch
import torch.nn.functional as F

import fastln
from conftest import assert_close_to_ref, ref_layer_norm
from test_layer_norm import make_inputs


# ---- the autograd node (hand-written, so its graph semantics are tested as torch's) ----

_NODE_CALLS = {
    "layer_norm": lambda x, w, b: fastln.layer_norm(x, (16,), w, b),
    "rms_norm": lambda x, w, b: fastln.rms_norm(x, (16,), w),
    "layer_norm_memory_efficient": lambda x, w, b: fastln.layer_norm(x, (16,), w, b, memory_efficient=True),
    # both outputs used: the sum's own gradient joins the norm's
    "fused_add_layer_norm": lambda x, w, b: sum(fastln.fused_add_layer_norm(x, x * 0.5, (16,), w, b)),
    "fused_add_rms_norm": lambda x, w, b: sum(fastln.fused_add_rms_norm(x, x * 0.5, (16,), w)),
}
_TORCH_CALLS = {
    "layer_norm": lambda x, w, b: F.layer_norm(x, (16,), w, b),
    "rms_norm": lambda x, w, b: F.rms_norm(x, (16,), w),
    "layer_norm_memory_efficient": lambda x, w, b: F.layer_norm(x, (16,), w, b),
    "fused_add_layer_norm": lambda x, w, b: F.layer_norm(x * 1.5, (16,), w, b) + x * 1.5,
    "fused_add_rms_norm": lambda x, w, b: F.rms_norm(x * 1.5, (16,), w) + x * 1.5,
}


@pytest.mark.parametrize("name", sorted(_NODE_CALLS))
@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, False),
                                   (False, False, True), (False, True, True)])
def test_node_gradients_for_each_requires_grad_subset(name, needs):
    """Only the inputs that require grad get one (the node's output mask), equal to torch's."""
    torch.manual_seed(0)
    base = [torch.randn(5, 16, dtype=torch.float64), torch.rand(16, dtype=torch.float64) + 0.5,
            torch.randn(16, dtype=torch.float64)]
    dy = torch.randn(5, 16, dtype=torch.float64)
    grads = []
    for call in (_NODE_CALLS[name], _TORCH_CALLS[name]):
        ts = [t.clone().requires_grad_(n) for t, n in zip(base, needs)]
        y = call(*ts)
        if not y.requires_grad:  # rms_norm with only the (unused) bias requiring grad
            grads.append(None)
            continue
        leaves = [t for t in ts if t.requires_grad]
        grads.append(torch.autograd.grad(y, leaves, dy, allow_unused=True))
    if grads[0] is None or grads[1] is None:
        assert grads[0] is None and grads[1] is None
        return
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", sorted(_NODE_CALLS))
def test_node_frees_saved_tensors_and_honours_retain_graph(name):
    x, w, b = (torch.randn(*s, requires_grad=True) for s in ((4, 16), (16,), (16,)))
    y = _NODE_CALLS[name](x, w, b)
    first = torch.autograd.grad(y.sum(), (x, w), retain_graph=True)
    second = torch.autograd.grad(y.sum(), (x, w))
    for a, c in zip(first, second):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="second time"):
        torch.autograd.grad(y.sum(), (x, w))


def test_node_detects_inplace_change_of_saved_tensors():
    """Saved tensors carry their version: changing one before backward is torch's error, not a
    wrong gradient (the input for layer_norm, the output for memory_efficient=True, the sum for
    the fused add)."""
    x = torch.randn(4, 16, requires_grad=True)
    h = x * 2
    y = fastln.layer_norm(h, (16,))
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    w = torch.rand(16) + 0.5
    y = fastln.layer_norm(x * 2, (16,), w, memory_efficient=True)
    z = y * 1  # a consumer, so that y's own grad_fn stays ours
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()
    y, s = fastln.fused_add_layer_norm(x * 2, x * 3, (16,))  # the sum is saved
    z = s * 1
    s.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_node_deep_graph_is_freed_without_recursion():
    """A chain of 20000 norms: the graph is freed iteratively (as torch's nodes are), no stack
    overflow."""
    x = torch.randn(1, 8, requires_grad=True)
    y = x
    for _ in range(20000):
        y = fastln.layer_norm(y, (8,))
    del y  # frees the whole chain


def test_node_hooks_and_name():
    x = torch.randn(3, 16, requires_grad=True)
    y = fastln.layer_norm(x, (16,))
    assert "NormBackward" in y.grad_fn.name()
    seen = []
    y.grad_fn.register_hook(lambda grads_in, grads_out: seen.append(grads_in[0].shape))
    y.grad_fn.register_prehook(lambda grads_out: (grads_out[0] * 2,))
    y.backward(torch.ones_like(y))
    assert seen == [torch.Size([3, 16])]
    x2 = x.detach().clone().requires_grad_()
    F.layer_norm(x2, (16,)).backward(2 * torch.ones_like(y))
    torch.testing.assert_close(x.grad, x2.grad)


# ---- double backward ----


def _profiled_ops(fn):
    with torch.autograd.profiler.profile() as prof:
        fn()
    return {e.name for e in prof.function_events}


def test_first_order_backward_uses_kernel_and_create_graph_matches():
    x, w, b, dy = make_inputs((6, 40), (40,), torch.float32, "cpu", "both")
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    fast = []
    names = _profiled_ops(lambda: fast.extend(torch.autograd.grad(fastln.layer_norm(x, (40,), w, b), (x, w, b), dy)))
    assert "fastln::layer_norm_bwd" in names
    graph = []
    names = _profiled_ops(lambda: graph.extend(torch.autograd.grad(fastln.layer_norm(x, (40,), w, b), (x, w, b), dy,
                                                                   create_graph=True)))
    assert "fastln::layer_norm_bwd" not in names
    assert graph[0].requires_grad and graph[1].requires_grad  # grad_bias = sum(dy): a constant
    for a, c in zip(fast, graph):
        torch.testing.assert_close(a, c)


def test_double_backward_16bit_matches_torch():
    """The create_graph path computes in float32 for 16-bit inputs."""
    x, w, b, dy = make_inputs((5, 64), (64,), torch.bfloat16, "cpu", "both")
    res = []
    for fn in (fastln.layer_norm, F.layer_norm):
        xx = x.detach().float().requires_grad_()
        (gx,) = torch.autograd.grad(fn(xx, (64,), w.float(), b.float()), xx, dy.float(), create_graph=True)
        res.append(torch.autograd.grad(gx.square().sum(), xx)[0])
    torch.testing.assert_close(res[0], res[1], rtol=1e-4, atol=1e-4)


# ---- replace_norms ----

def test_replace_norms_transformer():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = torch.nn.Sequential(layer, torch.nn.RMSNorm(32, eps=1e-6), torch.nn.LayerNorm(32, bias=False))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm)):
                m.weight.normal_()
    ref = __import__("copy").deepcopy(model)
    params_before = [id(p) for p in model.parameters()]
    assert fastln.replace_norms(model) == 4
    assert fastln.replace_norms(model) == 0  # already fastln
    assert type(layer.norm1) is fastln.LayerNorm and type(model[1]) is fastln.RMSNorm
    assert model[1].eps == 1e-6 and model[2].bias is None
    assert [id(p) for p in model.parameters()] == params_before
    x = torch.randn(3, 10, 32)
    out, out_ref = model(x), ref(x)
    torch.testing.assert_close(out, out_ref)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{n}: {m}")


def test_replace_norms_keeps_dtype_and_skips_subclasses():
    class MyNorm(torch.nn.LayerNorm):
        pass
    model = torch.nn.ModuleList([torch.nn.LayerNorm(8, dtype=torch.float64, elementwise_affine=False), MyNorm(8)])
    assert fastln.replace_norms(model) == 1
    assert type(model[1]) is MyNorm and model[0].weight is None
    y = model[0](torch.randn(2, 8, dtype=torch.float64))
    assert y.dtype == torch.float64


# ---- memory-efficient backward ----


def test_memory_efficient_saves_output_not_input():
    x = torch.randn(8, 64, requires_grad=True)
    w, b = torch.randn(64, requires_grad=True), torch.randn(64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = fastln.layer_norm(x, (64,), w, b, memory_efficient=True)
    assert any(t is y or (t.data_ptr() == y.data_ptr()) for t in saved)
    assert not any(t.data_ptr() == x.data_ptr() for t in saved)


def test_memory_efficient_small_and_zero_weight():
    """Precision degrades as 1/|weight| (x - mean is recovered by dividing by it); a weight
    element equal to 0 raises in backward."""
    x, w, b, dy = make_inputs((16, 128), (128,), torch.float32, "cpu", "both")
    w = w.clone()
    w[:4] = 1e-3
    xs = [x.detach().requires_grad_() for _ in range(2)]
    ref_x = x.double().requires_grad_()
    ref = torch.autograd.grad(ref_layer_norm(ref_x, (128,), w.double(), b.double()), ref_x, dy.double())[0]
    for xx, me in zip(xs, (False, True)):
        (g,) = torch.autograd.grad(fastln.layer_norm(xx, (128,), w, b, memory_efficient=me), xx, dy)
        assert_close_to_ref(g, ref, None, torch.float32 if not me else torch.bfloat16, "grad_input")
    w[5] = 0.0
    xx = x.detach().requires_grad_()
    y = fastln.layer_norm(xx, (128,), w, b, memory_efficient=True)
    with pytest.raises(RuntimeError, match="weight has elements equal to 0"):
        y.backward(dy)


def test_memory_efficient_module_compile_and_double_backward_error():
    torch._dynamo.reset()
    m = fastln.LayerNorm(32, memory_efficient=True)
    assert "memory_efficient=True" in repr(m)
    x = torch.randn(4, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    torch.compile(m, fullgraph=True)(x).sin().sum().backward()
    torch.nn.functional.layer_norm(x2, (32,), m.weight, m.bias).sin().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    y = m(x)
    with pytest.raises(RuntimeError, match="double backward.*memory_efficient=True"):
        torch.autograd.grad(y.sum(), x, create_graph=True)
