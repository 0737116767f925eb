"""fastln.layer_norm / fastln.LayerNorm with torch, against a float64 reference: what the op table
(test_ops_table.py) does not cover: strided tensors, far-from-zero and constant rows, empty
normalized shapes, NaN and Inf, eps values, partial requires_grad, the module; and the parity
helpers other files use (make_inputs, check_parity)."""
import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

import fastln
from conftest import DEVICES, assert_close_to_ref, ref_layer_norm

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def make_inputs(shape, nshape, dtype, device, affine, param_dtype=None, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) + offset).to(device, dtype)
    pd = param_dtype or dtype
    w = (1 + 0.5 * torch.randn(nshape, generator=g, dtype=torch.float64)).to(device, pd) if affine in ("both", "weight") else None
    b = torch.randn(nshape, generator=g, dtype=torch.float64).to(device, pd) if affine in ("both", "bias") else None
    dy = torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)
    return x, w, b, dy


def forward_backward(fn, x, nshape, w, b, dy, eps=1e-5):
    leaves = [t for t in (x, w, b) if t is not None]
    leaves = [t.detach().requires_grad_() for t in leaves]
    it = iter(leaves)
    xx = next(it)
    ww = next(it) if w is not None else None
    bb = next(it) if b is not None else None
    y = fn(xx, nshape, ww, bb, eps)
    grads = torch.autograd.grad(y, leaves, dy)
    return [y.detach(), *grads]


def check_parity(x, nshape, w, b, dy, dtype, eps=1e-5, torch_fails=False,
                 fns=(fastln.layer_norm, F.layer_norm, ref_layer_norm)):
    """fns: ours, torch's and the reference, each called as f(x, normalized_shape, w, b, eps)."""
    ours_fn, torch_fn, ref_fn = fns
    ours = forward_backward(ours_fn, x, nshape, w, b, dy, eps)
    theirs = [None] * len(ours) if torch_fails else forward_backward(torch_fn, x, nshape, w, b, dy, eps)
    up = lambda t: None if t is None else t.double()  # noqa: E731
    ref = forward_backward(ref_fn, up(x), nshape, up(w), up(b), up(dy), eps)
    names = ["output", "grad_input"] + (["grad_weight"] if w is not None else []) + (["grad_bias"] if b is not None else [])
    for name, o, t, r in zip(names, ours, theirs, ref):
        assert_close_to_ref(o, r, t, dtype, name)


def _strided_inputs(kind, dtype, device):
    g = torch.Generator().manual_seed(3)
    if kind == "transposed":
        x = torch.randn(64, 24, generator=g).t()
    elif kind == "sliced_rows":
        x = torch.randn(24, 100, generator=g)[:, 10:74]
    elif kind == "every_other_row":
        x = torch.randn(48, 64, generator=g)[::2]
    elif kind == "storage_offset":
        x = torch.randn(30, 64, generator=g)[6:]
    elif kind == "expanded_rows":
        x = torch.randn(1, 64, generator=g).expand(24, 64)
    elif kind == "channels_last":
        x = torch.randn(2, 3, 4, 64, generator=g).to(memory_format=torch.channels_last)
    elif kind == "noncontig_3d":
        x = torch.randn(4, 64, 6, generator=g).transpose(1, 2)
    return x.to(device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["transposed", "sliced_rows", "every_other_row", "storage_offset",
                                  "expanded_rows", "channels_last", "noncontig_3d"])
def test_strided_input(device, dtype, kind):
    x = _strided_inputs(kind, dtype, device)
    g = torch.Generator().manual_seed(4)
    w = torch.randn(64, generator=g).to(device, dtype)
    b = torch.randn(64, generator=g).to(device, dtype)
    dy = torch.randn(x.shape, generator=g).to(device, dtype)
    check_parity(x, (64,), w, b, dy, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_params_and_grad_out(device):
    x = torch.randn(16, 64, device=device)
    w = torch.randn(1, device=device).expand(64)  # stride 0
    b = torch.randn(128, device=device)[::2]
    dy = torch.randn(64, 16, device=device).t()
    check_parity(x, (64,), w, b, dy, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_far_from_zero(device, dtype):
    """Values around 1e4 with std 1: a one-pass E[x^2] - E[x]^2 would lose the variance."""
    if dtype in (torch.bfloat16, torch.float16):
        pytest.skip("1e4 + N(0,1) is not representable in 16 bits")
    x, w, b, dy = make_inputs((64, 1024), (1024,), dtype, device, "both", offset=1e4)
    check_parity(x, (1024,), w, b, dy, dtype)
    _, _, rstd = torch.ops.fastln.layer_norm_fwd(x, (1024,), None, None, 1e-5)
    rstd_ref = 1 / (x.double().var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    torch.testing.assert_close(rstd.double(), rstd_ref, rtol=1e-4, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,nshape", [((0, 8), (8,)), ((3, 0, 8), (8,)), ((0,), (0,)), ((4, 0), (0,))])
def test_empty(device, shape, nshape):
    x = torch.randn(shape, device=device, requires_grad=True)
    w = torch.randn(nshape, device=device, requires_grad=True)
    b = torch.randn(nshape, device=device, requires_grad=True)
    y = fastln.layer_norm(x, nshape, w, b)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inf_propagate_like_torch(device, dtype):
    x = torch.randn(6, 40, device=device).to(dtype)
    x[1, 3] = float("nan")
    x[3, 0] = float("inf")
    x[4, 39] = -float("inf")
    w, b = torch.randn(40, device=device).to(dtype), torch.randn(40, device=device).to(dtype)
    ours, theirs = fastln.layer_norm(x, (40,), w, b), F.layer_norm(x, (40,), w, b)
    assert torch.equal(ours.isnan(), theirs.isnan())
    assert torch.isfinite(ours[[0, 2, 5]]).all()


@pytest.mark.parametrize("device", DEVICES)
def test_constant_rows(device):
    x = torch.full((4, 33), 2.5, device=device)
    b = torch.arange(33.0, device=device)
    y = fastln.layer_norm(x, (33,), torch.randn(33, device=device), b)
    assert torch.equal(y, b.expand(4, 33))


@pytest.mark.parametrize("eps", [1e-5, 1e-2, 0.0, -0.5])
def test_eps_values(eps):
    x, w, b, dy = make_inputs((8, 50), (50,), torch.float64, "cpu", "both")
    x = x * 3  # var well above |eps|, so a negative eps stays finite
    check_parity(x, (50,), w, b, dy, torch.float64, eps=eps)


def test_partial_requires_grad():
    """Only what needs a gradient gets one; the others stay None."""
    x, w, b, dy = make_inputs((5, 9), (9,), torch.float32, "cpu", "both")
    for rx, rw, rb in itertools.product([False, True], repeat=3):
        if not (rx or rw or rb):
            continue
        xx, ww, bb = (t.detach().requires_grad_(r) for t, r in ((x, rx), (w, rw), (b, rb)))
        fastln.layer_norm(xx, (9,), ww, bb).backward(dy)
        xr, wr, br = (t.detach().requires_grad_(r) for t, r in ((x, rx), (w, rw), (b, rb)))
        F.layer_norm(xr, (9,), wr, br).backward(dy)
        for o, t in ((xx, xr), (ww, wr), (bb, br)):
            assert (o.grad is None) == (t.grad is None)
            if o.grad is not None:
                torch.testing.assert_close(o.grad, t.grad)


def test_int_normalized_shape_and_inference_mode():
    x = torch.randn(3, 10)
    with torch.inference_mode():
        y = fastln.layer_norm(x, 10)
    torch.testing.assert_close(y, F.layer_norm(x, (10,)))


# ---- the module ----

@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-3}])
def test_module_matches_torch(kwargs):
    torch.manual_seed(0)
    ours, theirs = fastln.LayerNorm((4, 16), **kwargs), torch.nn.LayerNorm((4, 16), **kwargs)
    assert isinstance(ours, torch.nn.LayerNorm)
    if ours.weight is not None:
        with torch.no_grad():
            ours.weight.normal_()
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(3, 4, 16)
    torch.testing.assert_close(ours(x), theirs(x))
    assert repr(ours) == "fastln." + repr(theirs)  # the same, and says whose it is


def test_state_dict_round_trip_both_ways():
    torch.manual_seed(1)
    a = torch.nn.LayerNorm(32)
    with torch.no_grad():
        a.weight.normal_(), a.bias.normal_()
    b = fastln.LayerNorm(32)
    b.load_state_dict(a.state_dict())
    c = torch.nn.LayerNorm(32)
    c.load_state_dict(b.state_dict())
    for t in (b, c):
        assert torch.equal(t.weight, a.weight) and torch.equal(t.bias, a.bias)
    m = copy.deepcopy(b)
    assert type(m) is fastln.LayerNorm and torch.equal(m.weight, b.weight)


def test_module_device_dtype_kwargs():
    m = fastln.LayerNorm(8, device="cpu", dtype=torch.float64)
    assert m.weight.dtype == torch.float64
    assert m(torch.randn(2, 8, dtype=torch.float64)).dtype == torch.float64
