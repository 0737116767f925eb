"""Interop with the rest of torch: autocast, export, copy/pickle, torch.func, TorchScript."""
import copy
import io
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F

import fastln


def _pair(n=16, affine=True, seed=0):
    torch.manual_seed(seed)
    theirs = torch.nn.LayerNorm(n, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            theirs.weight.normal_()
            theirs.bias.normal_()
    ours = fastln.LayerNorm(n, elementwise_affine=affine)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


# ---- autocast ----

@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("through_linear", [False, True])
def test_autocast_cpu_bf16_like_nn_layernorm(in_dtype, through_linear):
    """Under CPU autocast torch has no cast policy for layer_norm: it runs in the input's
    dtype (float32 parameters with bf16 input: mixed mode). fastln does the same."""
    ours, theirs = _pair()
    lin = torch.nn.Linear(16, 16)
    x = torch.randn(8, 16).to(in_dtype)
    outs, grads = [], []
    for m in (ours, theirs):
        xx = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(lin(xx) if through_linear else xx)
        y.float().pow(2).sum().backward()
        outs.append(y)
        grads.append((xx.grad, m.weight.grad, m.bias.grad))
    assert outs[0].dtype == outs[1].dtype and outs[0].shape == outs[1].shape
    tol = dict(rtol=2e-2, atol=2e-2) if outs[1].dtype == torch.bfloat16 else {}
    torch.testing.assert_close(outs[0], outs[1], **tol)
    for g0, g1 in zip(*grads):
        assert g0.dtype == g1.dtype
        torch.testing.assert_close(g0, g1, rtol=5e-2, atol=5e-2)


@pytest.mark.cuda
def test_autocast_cuda_fp16_like_nn_layernorm():
    """Under CUDA autocast torch runs layer_norm in float32 (its fp32 cast policy)."""
    ours, theirs = (m.cuda() for m in _pair())
    x = torch.randn(8, 16, device="cuda", dtype=torch.float16)
    with torch.autocast("cuda", dtype=torch.float16):
        y0, y1 = ours(x), theirs(x)
    assert y0.dtype == y1.dtype
    torch.testing.assert_close(y0, y1)


# ---- torch.export ----

@pytest.mark.parametrize("dynamic", [False, True])
def test_export_and_run(dynamic):
    ours, theirs = _pair()
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), ours)
    x = torch.randn(4, 16)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    ep = torch.export.export(model, (x,), dynamic_shapes=shapes)
    assert "fastln.layer_norm" in ep.graph_module.code
    x2 = torch.randn(7, 16) if dynamic else torch.randn(4, 16)
    torch.testing.assert_close(ep.module()(x2), model(x2))
    # save / load round trip of the exported program
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.export.load(buf).module()(x2), model(x2))


# ---- copy and pickle ----

def test_deepcopy_module():
    ours, _ = _pair()
    x = torch.randn(3, 16)
    c = copy.deepcopy(ours)
    assert type(c) is fastln.LayerNorm and c.weight is not ours.weight
    assert torch.equal(c(x), ours(x))


def test_pickle_module_and_state_dict():
    ours, theirs = _pair()
    x = torch.randn(3, 16)
    c = pickle.loads(pickle.dumps(ours))
    assert type(c) is fastln.LayerNorm and torch.equal(c(x), ours(x))
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    c2 = torch.load(buf, weights_only=False)
    assert torch.equal(c2(x), ours(x))
    # checkpoints move both ways between torch.nn.LayerNorm and fastln.LayerNorm
    buf = io.BytesIO()
    torch.save(theirs.state_dict(), buf)
    buf.seek(0)
    fresh = fastln.LayerNorm(16)
    fresh.load_state_dict(torch.load(buf))
    torch.testing.assert_close(fresh(x), theirs(x))


# ---- torch.func ----

def test_vmap_matches_loop():
    x = torch.randn(3, 4, 16)
    w, b = torch.randn(16), torch.randn(16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the batching fallback's performance warning
        out = torch.func.vmap(lambda t: fastln.layer_norm(t, (16,), w, b))(x)
        out1 = torch.func.vmap(lambda t: fastln.layer_norm(t, (16,), w, b), in_dims=1)(x)
    torch.testing.assert_close(out, torch.stack([fastln.layer_norm(t, (16,), w, b) for t in x]))
    torch.testing.assert_close(out1, torch.stack([fastln.layer_norm(x[:, i], (16,), w, b) for i in range(4)]))


@pytest.mark.parametrize("transform", ["grad", "jacrev", "jacfwd", "vjp"])
def test_func_transforms_fail_clearly(transform):
    """fastln's autograd is a C++ autograd Function, which functorch's gradient transforms
    do not support: they fail with torch's clear message, never a wrong answer.
    (torch.autograd.grad / .backward() and torch.compile are the supported ways.)"""
    x = torch.randn(16)
    f = lambda t: fastln.layer_norm(t, (16,)).pow(3).sum()  # noqa: E731
    g = lambda t: fastln.layer_norm(t, (16,))  # noqa: E731
    call = {"grad": lambda: torch.func.grad(f)(x), "jacrev": lambda: torch.func.jacrev(g)(x),
            "jacfwd": lambda: torch.func.jacfwd(g)(x), "vjp": lambda: torch.func.vjp(g, x)[1](x)}[transform]
    try:
        out = call()
    except RuntimeError as e:
        assert "C++ torch::autograd::Function with functorch transforms" in str(e) or "fastln" in str(e)
    else:  # if a later torch supports it, it must be right
        ref = {"grad": lambda: torch.func.grad(lambda t: F.layer_norm(t, (16,)).pow(3).sum())(x),
               "jacrev": lambda: torch.func.jacrev(lambda t: F.layer_norm(t, (16,)))(x),
               "jacfwd": lambda: torch.func.jacfwd(lambda t: F.layer_norm(t, (16,)))(x),
               "vjp": lambda: torch.func.vjp(lambda t: F.layer_norm(t, (16,)), x)[1](x)}[transform]()
        torch.testing.assert_close(out, ref)


# ---- TorchScript ----

def test_jit_trace_module():
    ours, theirs = _pair()
    x = torch.randn(5, 16)
    traced = torch.jit.trace(ours, (x,))
    torch.testing.assert_close(traced(x), theirs(x))


def test_jit_script_op_directly():
    """The op itself is scriptable (torch.ops.fastln.layer_norm)."""
    @torch.jit.script
    def f(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastln.layer_norm(x, [16], w, b, 1e-5)

    ours, theirs = _pair()
    x = torch.randn(5, 16)
    torch.testing.assert_close(f(x, theirs.weight, theirs.bias), theirs(x))


@pytest.mark.parametrize("affine", [True, False])
def test_jit_script_module_and_save_load(affine):
    ours, theirs = _pair(affine=affine)
    x = torch.randn(5, 16)
    scripted = torch.jit.script(ours)
    torch.testing.assert_close(scripted(x), theirs(x))
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(x), theirs(x))


def test_jit_script_functional_fails_clearly():
    """fastln.layer_norm (with its Python type checks) is not scriptable: TorchScript says
    so at script time, pointing at the source; torch.ops.fastln.layer_norm is the way."""
    with pytest.raises(Exception, match="functional.py|layer_norm"):
        torch.jit.script(fastln.layer_norm)


# ---- double backward ----

def test_double_backward_matches_torch_or_raises():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, dtype=torch.float64, generator=g)
    w = torch.randn(8, dtype=torch.float64, generator=g)
    b = torch.randn(8, dtype=torch.float64, generator=g)

    def gradgrad(fn):
        xx, ww, bb = (t.clone().requires_grad_() for t in (x, w, b))
        y = fn(xx, (8,), ww, bb)
        gx, gw = torch.autograd.grad(y.pow(2).sum(), (xx, ww), create_graph=True)
        return torch.autograd.grad((gx * gx).sum() + gw.sum(), (xx, ww), allow_unused=True)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "may lead to silently incorrect" warning fails
        try:
            ours = gradgrad(fastln.layer_norm)
        except (RuntimeError, NotImplementedError) as e:
            assert "fastln" in str(e), f"unclear error: {e}"  # a clear refusal is fine
            return
    for o, t in zip(ours, gradgrad(F.layer_norm)):
        torch.testing.assert_close(o, t)


# ---- the eager fast path (fastln._C's direct entry) and torch.ops agree on everything ----

_CALLS = {
    "layer_norm": lambda x, w, b: fastln.layer_norm(x, (16,), w, b),
    "rms_norm": lambda x, w, b: fastln.rms_norm(x, (16,), w),
    "fused_add_layer_norm": lambda x, w, b: fastln.fused_add_layer_norm(x, x * 0.5, (16,), w, b)[0],
    "fused_add_rms_norm": lambda x, w, b: fastln.fused_add_rms_norm(x, x * 0.5, (16,), w)[0],
}


class _Logged(torch.Tensor):
    """A tensor subclass with __torch_function__: it must see the fastln op itself."""
    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("name", sorted(_CALLS))
def test_torch_function_subclass_and_mode_see_the_op(name):
    from torch.overrides import TorchFunctionMode
    x, w, b = torch.randn(4, 16), torch.randn(16), torch.randn(16)
    _Logged.seen = []
    out = _CALLS[name](x.as_subclass(_Logged), w, b)
    assert any(name in s for s in _Logged.seen), _Logged.seen
    torch.testing.assert_close(out.as_subclass(torch.Tensor), _CALLS[name](x, w, b), rtol=0, atol=0)

    seen = []

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Mode():
        _CALLS[name](x, w, b)
    assert any(f"fastln.{name}" in s for s in seen), seen


@pytest.mark.parametrize("name", sorted(_CALLS))
def test_inference_skips_the_graph_and_training_records_it(name):
    x, w, b = torch.randn(4, 16), torch.randn(16, requires_grad=True), torch.randn(16, requires_grad=True)
    with torch.no_grad():
        y0 = _CALLS[name](x, w, b)
    assert y0.grad_fn is None and not y0.requires_grad
    with torch.inference_mode():
        y1 = _CALLS[name](x, w, b)
    y2 = _CALLS[name](x, w.detach(), b.detach())
    assert y2.grad_fn is None
    y3 = _CALLS[name](x, w, b)
    assert y3.grad_fn is not None
    for y in (y1, y2, y3):
        torch.testing.assert_close(y.detach(), y0, rtol=0, atol=0)


def test_forward_mode_ad_keeps_the_tangent():
    """A dual input takes torch's differentiable ops (fastln.functional's composite route): the
    tangent is torch's, never lost in the no-graph inference path (tests/python/test_func.py
    covers every op)."""
    import torch.autograd.forward_ad as fwAD
    x, t = torch.randn(3, 16), torch.randn(3, 16)
    with fwAD.dual_level():
        got = fwAD.unpack_dual(fastln.layer_norm(fwAD.make_dual(x, t), (16,))).tangent
        want = fwAD.unpack_dual(torch.nn.functional.layer_norm(fwAD.make_dual(x, t), (16,))).tangent
    torch.testing.assert_close(got, want)
    # torch.ops itself still refuses clearly (its autograd node is C++, without a jvp)
    with fwAD.dual_level():
        with pytest.raises(NotImplementedError, match="jvp is not implemented"):
            torch.ops.fastln.layer_norm(fwAD.make_dual(x, t), (16,))


_TRAINING_CALLS = {**_CALLS, "layer_norm_memory_efficient":
                   lambda x, w, b: fastln.layer_norm(x, (16,), w, b, memory_efficient=True)}


@pytest.mark.parametrize("name", sorted(_TRAINING_CALLS))
def test_compiled_autograd_traces_the_node(name):
    """torch's compiled autograd traces fastln's backward into its graph (the autograd
    functions are marked traceable: their backward calls only dispatcher ops), with no graph
    break (fullgraph), and gets the eager backward's gradients."""
    from torch._dynamo import compiled_autograd
    torch.manual_seed(0)
    x, w, b = (torch.randn(s, requires_grad=True) for s in ((4, 16), (16,), (16,)))
    dy = torch.randn(4, 16)
    uses_bias = "layer" in name

    def grads(compiled):
        for t in (x, w, b):
            t.grad = None
        y = _TRAINING_CALLS[name](x, w, b)
        if compiled:
            with compiled_autograd._enable(torch.compile(backend="eager", fullgraph=True)):
                y.backward(dy)
        else:
            y.backward(dy)
        return [t.grad for t in ((x, w, b) if uses_bias else (x, w))]

    eager = grads(False)
    for g, e in zip(grads(True), eager):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
