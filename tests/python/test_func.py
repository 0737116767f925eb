"""torch.func transforms and forward-mode AD give torch's results for every public op; an error
raised inside an op propagates once (the op is never run twice); the weight offset."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import forward_ad
from torch.func import grad, jacfwd, jacrev, jvp, vjp, vmap

import fastln
from conftest import DEVICES

N = 6


def _args(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, N, generator=g, dtype=dtype)
    r = torch.randn(3, N, generator=g, dtype=dtype)
    w = torch.randn(N, generator=g, dtype=dtype)
    b = torch.randn(N, generator=g, dtype=dtype)
    return x, r, w, b


def _torch_ref(op, x, r, w, b, offset=0.0):
    """The same computation in torch's functions (float64)."""
    ww = w + offset
    if op == "layer_norm":
        return F.layer_norm(x, (N,), ww, b, 1e-5)
    if op == "rms_norm":
        return F.rms_norm(x, (N,), ww, 1e-6)
    s = x + r
    if op == "fused_add_layer_norm":
        return F.layer_norm(s, (N,), ww, b, 1e-5), s
    return F.rms_norm(s, (N,), ww, 1e-6), s


def _fastln(op, x, r, w, b, offset=0.0):
    if op == "layer_norm":
        return fastln.layer_norm(x, (N,), w, b, 1e-5, weight_offset=offset)
    if op == "rms_norm":
        return fastln.rms_norm(x, (N,), w, 1e-6, weight_offset=offset)
    if op == "fused_add_layer_norm":
        return fastln.fused_add_layer_norm(x, r, (N,), w, b, 1e-5, weight_offset=offset)
    return fastln.fused_add_rms_norm(x, r, (N,), w, 1e-6, weight_offset=offset)


OPS = ["layer_norm", "rms_norm", "fused_add_layer_norm", "fused_add_rms_norm"]


def _scalar(f):
    """A scalar function of (x, r, w, b) from an op, its outputs weighted unevenly."""
    def loss(x, r, w, b):
        out = f(x, r, w, b)
        outs = out if isinstance(out, tuple) else (out,)
        return sum((o * torch.linspace(-1, 2, o.numel(), dtype=o.dtype).view_as(o)).sin().sum() for o in outs)
    return loss


@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("op", OPS)
def test_grad_vjp_jacrev_jacfwd_jvp(op, offset):
    args = _args()
    ours = _scalar(lambda *a: _fastln(op, *a, offset))
    ref = _scalar(lambda *a: _torch_ref(op, *a, offset))
    argnums = (0, 1, 2, 3)
    for got, want in zip(grad(ours, argnums)(*args), grad(ref, argnums)(*args)):
        torch.testing.assert_close(got, want)
    (_, pull), (_, pull_ref) = vjp(ours, *args), vjp(ref, *args)
    one = torch.tensor(1.0, dtype=torch.float64)
    for got, want in zip(pull(one), pull_ref(one)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(jacrev(ours, argnums=0)(*args), jacrev(ref, argnums=0)(*args))
    torch.testing.assert_close(jacfwd(ours, argnums=2)(*args), jacfwd(ref, argnums=2)(*args))
    tangents = tuple(torch.randn_like(a) for a in args)
    torch.testing.assert_close(jvp(ours, args, tangents), jvp(ref, args, tangents))


@pytest.mark.parametrize("op", OPS)
def test_vmap_and_per_sample_grads(op):
    x, r, w, b = _args()
    got = vmap(lambda xi, ri: _fastln(op, xi, ri, w, b))(x, r)
    want = _torch_ref(op, x, r, w, b)
    torch.testing.assert_close(got, want)
    # per-sample gradients of the weight (Opacus-style): vmap(grad)
    per_sample = vmap(grad(_scalar(lambda xi, ri, wi, bi: _fastln(op, xi, ri, wi, bi)), argnums=2),
                      in_dims=(0, 0, None, None))(x, r, w, b)
    per_sample_ref = vmap(grad(_scalar(lambda xi, ri, wi, bi: _torch_ref(op, xi, ri, wi, bi)), argnums=2),
                          in_dims=(0, 0, None, None))(x, r, w, b)
    torch.testing.assert_close(per_sample, per_sample_ref)


@pytest.mark.parametrize("op", OPS)
def test_forward_mode_ad(op):
    x, r, w, b = _args()
    tx = torch.randn_like(x)
    with forward_ad.dual_level():
        out = _fastln(op, forward_ad.make_dual(x, tx), r, w, b)
        out_ref = _torch_ref(op, forward_ad.make_dual(x, tx), r, w, b)
        outs = out if isinstance(out, tuple) else (out,)
        refs = out_ref if isinstance(out_ref, tuple) else (out_ref,)
        for o, o_ref in zip(outs, refs):
            torch.testing.assert_close(forward_ad.unpack_dual(o).tangent, forward_ad.unpack_dual(o_ref).tangent)


def test_modules_under_torch_func():
    m = fastln.LayerNorm(N)
    x = torch.randn(4, N)
    params = dict(m.named_parameters())
    g = grad(lambda p, x: torch.func.functional_call(m, p, (x,)).square().sum())(params, x)
    ref = torch.nn.LayerNorm(N)
    g_ref = grad(lambda p, x: torch.func.functional_call(ref, p, (x,)).square().sum())(dict(ref.named_parameters()), x)
    for k in g:
        torch.testing.assert_close(g[k], g_ref[k])


def test_an_error_inside_the_op_propagates_once():
    """A saved-tensor hook raising inside the op (as gradient checkpointing's early stop does):
    the error reaches the caller, and the op is not run a second time."""
    calls = []

    class Stop(RuntimeError):
        pass

    def pack(t):
        calls.append(1)
        raise Stop("from the pack hook")

    x = torch.randn(3, N, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with pytest.raises(Stop):
            fastln.layer_norm(x, (N,))
    assert len(calls) == 1


def test_no_catch_in_the_fast_path():
    # The fast path must not catch anything: its source has no try statement.
    import inspect

    import fastln.functional as fn
    for f in (fn.layer_norm, fn.rms_norm, fn.fused_add_layer_norm, fn.fused_add_rms_norm, fn._traced_route):
        assert "try:" not in inspect.getsource(f), f


# ---- the weight offset (its parity, opcheck and gradcheck over every op: test_ops_table.py) ----

def test_weight_offset_zero_is_bitwise_the_plain_op():
    x, w, b = torch.randn(7, 33), torch.randn(33), torch.randn(33)
    assert torch.equal(fastln.layer_norm(x, (33,), w, b, weight_offset=0.0), fastln.layer_norm(x, (33,), w, b))
    # and an offset of 1 on w - 1 is the plain op on w, to rounding
    torch.testing.assert_close(fastln.rms_norm(x, (33,), w - 1, weight_offset=1.0), fastln.rms_norm(x, (33,), w))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "fused_add_layer_norm", "fused_add_rms_norm"])
@pytest.mark.parametrize("n", [64, 1000, 4096, 20000])
def test_weight_offset_on_16bit_weights_is_the_float32_weight(device, dtype, op, n):
    """An offset on a 16-bit weight w is, bit for bit, the call with the float32 weight
    (offset + w.float()) and no offset (the kernels' mixed mode): the output, the input's
    gradients, and the weight's and bias's gradients once rounded to the weight's dtype. So the
    offset's sum is the float add of torch's, and dgamma is the float sum rounded once; CUDA's
    kernels that read the offset themselves (PlusOne parameters, cuda/layer_norm_cuda.h) keep this."""
    g = torch.Generator().manual_seed(n)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    m = 37
    x = (rnd(m, n) + (2.0 if op == "layer_norm" else 0.0)).to(device, dtype)
    r = rnd(m, n).to(device, dtype)
    w, b = (0.5 * rnd(n)).to(device, dtype), rnd(n).to(device, dtype)
    dys = [rnd(m, n).to(device, dtype) for _ in range(2)]

    def run(weight, bias, offset):
        xx, ww = x.clone().requires_grad_(), weight.clone().requires_grad_()
        if op == "layer_norm":
            bb = bias.clone().requires_grad_()
            leaves = [xx, ww, bb]
            outs = (fastln.layer_norm(xx, (n,), ww, bb, 1e-5, weight_offset=offset),)
        elif op == "rms_norm":
            leaves = [xx, ww]
            outs = (fastln.rms_norm(xx, (n,), ww, 1e-6, weight_offset=offset),)
        elif op == "fused_add_layer_norm":
            rr, bb = r.clone().requires_grad_(), bias.clone().requires_grad_()
            leaves = [xx, rr, ww, bb]
            outs = fastln.fused_add_layer_norm(xx, rr, (n,), ww, bb, 1e-5, weight_offset=offset)
        else:
            rr = r.clone().requires_grad_()
            leaves = [xx, rr, ww]
            outs = fastln.fused_add_rms_norm(xx, rr, (n,), ww, 1e-6, weight_offset=offset)
        grads = torch.autograd.grad(outs, leaves, dys[:len(outs)])
        return [o.detach() for o in outs] + list(grads)

    for offset in (1.0, -0.5):
        ours = run(w, b, offset)
        plain = run(offset + w.float(), b.float(), 0.0)
        assert len(ours) == len(plain)
        for i, (a, c) in enumerate(zip(ours, plain)):
            assert torch.equal(a, c.to(a.dtype)), f"{op} {dtype} {n} offset {offset}: result {i}"


def test_weight_offset_errors():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="weight_offset"):
        fastln.layer_norm(x, (4,), None, None, weight_offset=1.0)
    with pytest.raises(TypeError, match="weight_offset"):
        fastln.rms_norm(x, (4,), torch.ones(4), weight_offset="1")


def test_weight_offset_modules():
    m = fastln.RMSNorm(8, weight_offset=1.0)
    assert torch.equal(m.weight, torch.zeros(8))  # zero-centred: the scale starts at 1
    x = torch.randn(3, 8)
    torch.testing.assert_close(m(x), torch.nn.RMSNorm(8)(x))
    assert "weight_offset=1.0" in repr(m)
    ln = fastln.LayerNorm(8, weight_offset=1.0)
    torch.testing.assert_close(ln(x), torch.nn.LayerNorm(8)(x))


@pytest.mark.parametrize("kwargs", [{"weight_offset": 1}, {"eps": 0}, {"shape": [np.int64(N)]},
                                    {"eps": np.float64(1e-6)}])
def test_transforms_with_arguments_of_other_types(kwargs):
    """Arguments the eager entry does not take as they are (an int offset or eps, numpy scalars)
    go through torch.ops eagerly; under a transform they still take torch's functions."""
    x, _, w, _ = _args()
    shape = kwargs.pop("shape", N)
    ours = grad(lambda x: fastln.rms_norm(x, shape, w, **kwargs).sin().sum())(x)
    offset, eps = float(kwargs.get("weight_offset", 0)), float(kwargs.get("eps", 1e-6)) if "eps" in kwargs else None
    ref = grad(lambda x: F.rms_norm(x, (N,), w + offset, eps).sin().sum())(x)
    torch.testing.assert_close(ours, ref)
    eager = fastln.rms_norm(x, shape, w, **kwargs)  # and eagerly, through torch.ops
    torch.testing.assert_close(eager, F.rms_norm(x, (N,), w + offset, eps))


def test_composite_route_keeps_the_ops_dtype_rules():
    x = torch.randn(3, N)
    with pytest.raises(RuntimeError, match="weight"):
        grad(lambda x: fastln.rms_norm(x, N, torch.ones(N, dtype=torch.bfloat16)).sum())(x)
    with pytest.raises(RuntimeError, match="residual"):
        grad(lambda x: fastln.fused_add_rms_norm(x.bfloat16(), x, N)[0].float().sum())(x)


def test_module_weight_offset_reset_and_no_weight():
    m = fastln.LayerNorm(8, weight_offset=1.0)
    with torch.no_grad():
        m.weight.fill_(3.0)
    m.reset_parameters()
    assert torch.equal(m.weight, torch.zeros(8))  # reset to 1 - offset: the scale starts at 1 again
    with pytest.raises(ValueError, match="weight_offset"):
        fastln.RMSNorm(8, elementwise_affine=False, weight_offset=1.0)
