"""fastln.fused_add_layer_norm / fused_add_rms_norm against torch's unfused composition."""
import pytest
import torch
import torch.nn.functional as F

import fastln
from conftest import DEVICES, assert_close_to_ref, ref_layer_norm, ref_rms_norm

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def unfused(norm, fp32):
    """torch's composition (or, on float64 inputs, the reference): (norm(x + r), x + r)."""
    def f(x, r, ns, w, b, eps):
        dtype = x.dtype
        if fp32 and x.dtype != torch.float64:
            x, r = x.float(), r.float()
            w, b = (None if p is None else p.float() for p in (w, b))
        s = x + r
        ref = x.dtype == torch.float64
        if norm == "layer":
            y = (ref_layer_norm if ref else F.layer_norm)(s, ns, w, b, eps)
        else:
            y = (ref_rms_norm if ref else F.rms_norm)(s, ns, w, eps)
        return y.to(dtype) if not ref else y, s
    return f


def ours(norm, fp32):
    def f(x, r, ns, w, b, eps):
        if norm == "layer":
            return fastln.fused_add_layer_norm(x, r, ns, w, b, eps, residual_in_fp32=fp32)
        return fastln.fused_add_rms_norm(x, r, ns, w, eps, residual_in_fp32=fp32)
    return f


def run(fn, x, r, ns, w, b, dy, ds, eps):
    leaves = [t.detach().requires_grad_() for t in (x, r, w, b) if t is not None]
    it = iter(leaves)
    xx, rr = next(it), next(it)
    ww = next(it) if w is not None else None
    bb = next(it) if b is not None else None
    y, s = fn(xx, rr, ns, ww, bb, eps)
    grads = torch.autograd.grad((y, s), leaves, (dy, ds.to(s.dtype)))
    return [y.detach(), s.detach(), *grads]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fp32", [False, True])
@pytest.mark.parametrize("shape,ns", [((3, 7), (7,)), ((2, 5, 300), (300,)), ((4, 3, 8), (3, 8)), ((9, 2048), (2048,))])
def test_parity(device, norm, dtype, fp32, shape, ns):
    g = torch.Generator().manual_seed(1)
    x, r, dy, ds = (torch.randn(shape, generator=g, dtype=torch.float64).to(device) for _ in range(4))
    w = (1 + 0.5 * torch.randn(ns, generator=g, dtype=torch.float64)).to(device)
    b = torch.randn(ns, generator=g, dtype=torch.float64).to(device) if norm == "layer" else None
    lo = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    args = (lo(x), lo(r), ns, lo(w), lo(b), lo(dy), lo(ds), 1e-5)
    out = run(ours(norm, fp32), *args)
    theirs = run(unfused(norm, fp32), *args)
    ref = run(unfused(norm, fp32), x, r, ns, w, b, dy, ds, 1e-5)
    names = ["output", "residual_out", "grad_input", "grad_residual", "grad_weight", "grad_bias"]
    for name, o, t, rf in zip(names, out, theirs, ref):
        assert o.dtype == t.dtype, name
        assert_close_to_ref(o, rf, t, o.dtype, name)


def test_residual_fp32_stream_and_grad_only_at_residual_out():
    x = torch.randn(4, 16, dtype=torch.bfloat16, requires_grad=True)
    r = torch.randn(4, 16, dtype=torch.float32, requires_grad=True)
    y, s = fastln.fused_add_layer_norm(x, r, 16, residual_in_fp32=True)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    s.sum().backward()  # only the residual stream is used
    assert torch.equal(x.grad, torch.ones_like(x)) and torch.equal(r.grad, torch.ones_like(r))


def test_gradcheck_and_gradgradcheck():
    g = torch.Generator().manual_seed(2)
    x, r = (torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w, b = (torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    for f in (lambda x, r, w, b: fastln.fused_add_layer_norm(x, r, 6, w, b),
              lambda x, r, w, b: fastln.fused_add_rms_norm(x, r, 6, w, 1e-5)):
        assert torch.autograd.gradcheck(f, (x, r, w, b))
        assert torch.autograd.gradgradcheck(f, (x, r, w, b))


def test_opcheck_and_compile():
    torch._dynamo.reset()
    x, r = torch.randn(8, 32), torch.randn(8, 32)
    w, b = torch.randn(32), torch.randn(32)
    for rg in (False, True):
        a = [t.clone().requires_grad_(rg) for t in (x, r, w, b)]
        torch.library.opcheck(torch.ops.fastln.fused_add_layer_norm.default, (*a[:2], (32,), a[2], a[3], 1e-5, False))
        torch.library.opcheck(torch.ops.fastln.fused_add_rms_norm.default, (*a[:2], (32,), a[2], None, True))
    torch.library.opcheck(torch.ops.fastln.add_norm_fwd.default, (x.bfloat16(), r, (32,), w, b, 1e-5, False, True))

    def f(x, r, w, b):
        y, s = fastln.fused_add_layer_norm(x, r, (32,), w, b)
        return (y.sin() + s).sum()

    def f_ref(x, r, w, b):
        s = x + r
        return (F.layer_norm(s, (32,), w, b).sin() + s).sum()

    a = [t.clone().requires_grad_() for t in (x, r, w, b)]
    a2 = [t.clone().requires_grad_() for t in (x, r, w, b)]
    torch.compile(f, fullgraph=True)(*a).backward()
    f_ref(*a2).backward()
    for p, q in zip(a, a2):
        torch.testing.assert_close(p.grad, q.grad)


x = torch.randn(2, 4)
BAD = [
    (lambda: fastln.fused_add_layer_norm(x, torch.randn(2, 5), 4), RuntimeError, r"residual of the input's shape"),
    (lambda: fastln.fused_add_layer_norm(x, x.double(), 4), RuntimeError, r"residual of dtype Float .*got residual of dtype Double"),
    (lambda: fastln.fused_add_layer_norm(x.bfloat16(), x, 4), RuntimeError, r"residual of dtype BFloat16"),
    (lambda: fastln.fused_add_rms_norm(x, x, 5), RuntimeError, r"fastln.fused_add_rms_norm: given normalized_shape"),
    (lambda: fastln.fused_add_layer_norm(x, "r", 4), TypeError, r"residual"),
    (lambda: fastln.fused_add_layer_norm(x, x.to("meta"), 4), RuntimeError, r"residual on the input's device"),
]


@pytest.mark.parametrize("call,error,pattern", BAD, ids=[c[2][:40] for c in BAD])
def test_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1000, 1001])  # CUDA: 16-byte vectors, and the fallback path
def test_bitwise_equal_to_fastln_unfused(device, dtype, n):
    """The fused pass rounds x + r to the dtype first, exactly as x + r does."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(37, n, generator=g).to(device, dtype)
    r = torch.randn(n, 37, generator=g).to(device, dtype).t()  # strided residual
    w, b = (torch.randn(n, generator=g).to(device, dtype) for _ in range(2))
    y, s = fastln.fused_add_layer_norm(x, r, n, w, b)
    assert torch.equal(s, x + r)
    assert torch.equal(y, fastln.layer_norm(x + r, n, w, b))
    y, s = fastln.fused_add_rms_norm(x, r, n, w)
    assert torch.equal(s, x + r)
    assert torch.equal(y, fastln.rms_norm(x + r, n, w))


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtype_params(device):
    """16-bit input and residual, float32 weight and bias: as the unfused fastln pair."""
    g = torch.Generator().manual_seed(4)
    x, r = (torch.randn(9, 64, generator=g).to(device, torch.bfloat16).requires_grad_() for _ in range(2))
    w, b = (torch.randn(64, generator=g).to(device).requires_grad_() for _ in range(2))
    y, s = fastln.fused_add_layer_norm(x, r, 64, w, b)
    y2 = fastln.layer_norm(x + r, 64, w, b)
    assert y.dtype == torch.bfloat16 and torch.equal(y, y2)
    g1 = torch.autograd.grad(y.float().sum(), (x, r, w, b))
    g2 = torch.autograd.grad(y2.float().sum(), (x, r, w, b))
    for a, c in zip(g1, g2):
        assert a.dtype == c.dtype
        torch.testing.assert_close(a, c)
