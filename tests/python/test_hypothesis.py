"""Property-based parity with torch: random shapes, dtypes, strides, eps and affine options.

Output and gradients are checked against a float64 reference, and must be no worse than
torch's own F.layer_norm in the same dtype (conftest.assert_close_to_ref).

Profiles (FASTLN_HYPOTHESIS_PROFILE):
  ci        (default) derandomized, so every run checks the same examples; fast.
  thorough  many more random examples; opt-in, e.g.
            FASTLN_HYPOTHESIS_PROFILE=thorough pytest tests/python/test_hypothesis.py
"""
import os

import pytest
import torch
import torch.nn.functional as F

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastln  # noqa: E402
from conftest import RTOL, assert_close_to_ref, ref_layer_norm, rel_err  # noqa: E402

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               print_blob=True)
settings.register_profile("ci", max_examples=60, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=3000, **_common)
PROFILE = os.environ.get("FASTLN_HYPOTHESIS_PROFILE", "ci")

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
LAYOUTS = ["contiguous", "transposed", "sliced", "expanded", "offset"]


def _materialize(shape, layout, g, dtype):
    """A float64 tensor of `shape` with the given memory layout (values ~ N(0, 1))."""
    def randn(*s):
        return torch.randn(s, generator=g, dtype=torch.float64)

    if layout == "contiguous" or len(shape) == 0:
        return randn(*shape).to(dtype)
    if layout == "transposed":  # reverse the dims of a contiguous tensor, then view back
        return randn(*reversed(shape)).to(dtype).permute(*reversed(range(len(shape))))
    if layout == "sliced":  # every dim sliced out of a larger tensor, last with a step
        big = randn(*[d + 3 for d in shape[:-1]], 2 * shape[-1] + 1).to(dtype)
        idx = tuple(slice(1, 1 + d) for d in shape[:-1]) + (slice(1, 1 + 2 * shape[-1], 2),)
        return big[idx]
    if layout == "expanded":  # the first dim expanded from 1 (stride 0)
        return randn(1, *shape[1:]).to(dtype).expand(*shape)
    if layout == "offset":  # a view at a storage offset, contiguous otherwise
        n = 1
        for d in shape:
            n *= d
        return randn(n + 7).to(dtype)[7:].view(shape)
    raise AssertionError(layout)


def _prod(dims):
    p = 1
    for d in dims:
        p *= d
    return p


@st.composite
def cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    nshape = tuple(draw(st.lists(st.integers(1, 40), min_size=1, max_size=3)))
    if draw(st.integers(0, 7)) == 0:  # now and then a long row (vector bodies and tails)
        nshape = nshape[:-1] + (draw(st.sampled_from([255, 1000, 1031, 4099])),)
    lead = tuple(draw(st.lists(st.sampled_from([0, 1, 1, 2, 3, 5, 8]), min_size=0, max_size=3)))
    n = 1
    for d in nshape:
        n *= d
    while lead and n * max(1, _prod(lead)) > 20000:  # keep an example cheap
        lead = lead[1:]
    shape = lead + nshape
    layout = draw(st.sampled_from(LAYOUTS))
    affine = draw(st.sampled_from(["both", "weight", "bias", "none"]))
    mixed = dtype in (torch.bfloat16, torch.float16) and affine != "none" and draw(st.booleans())
    eps = draw(st.sampled_from([1e-5, 1e-6, 1e-12, 0.0, 1e-3, 0.5, 1.0]))
    offset = draw(st.sampled_from([0.0, 0.0, 1.0, -3.0, 10.0]))
    scale = draw(st.sampled_from([1.0, 1.0, 0.01, 100.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    return dtype, shape, nshape, layout, affine, mixed, eps, offset, scale, seed


def _fwd_bwd(fn, x, nshape, w, b, dy, eps):
    leaves = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
    it = iter(leaves)
    xx = next(it)
    ww = next(it) if w is not None else None
    bb = next(it) if b is not None else None
    y = fn(xx, nshape, ww, bb, eps)
    if y.numel() == 0:
        return [y.detach(), *[torch.zeros_like(t) for t in leaves]]
    return [y.detach(), *torch.autograd.grad(y, leaves, dy)]


@settings(settings.get_profile(PROFILE))
@given(cases())
def test_parity_property(case):
    dtype, shape, nshape, layout, affine, mixed, eps, offset, scale, seed = case
    g = torch.Generator().manual_seed(seed)
    x = (_materialize(shape, layout, g, torch.float64) * scale + offset).to(dtype)
    pd = torch.float32 if mixed else dtype
    w = (1 + 0.5 * torch.randn(nshape, generator=g, dtype=torch.float64)).to(pd) if affine in ("both", "weight") else None
    b = torch.randn(nshape, generator=g, dtype=torch.float64).to(pd) if affine in ("both", "bias") else None
    dy = _materialize(shape, layout, g, torch.float64).to(dtype)

    ours = _fwd_bwd(fastln.layer_norm, x, nshape, w, b, dy, eps)
    try:
        theirs = _fwd_bwd(F.layer_norm, x, nshape, w, b, dy, eps)
    except RuntimeError:
        # torch 2.13's CPU backward rejects some mixed-dtype combinations (float32 bias
        # without weight): nothing to compare with but the reference.
        assert mixed
        theirs = [None] * len(ours)
    up = lambda t: None if t is None else t.double()  # noqa: E731
    ref = _fwd_bwd(_shifted_ref, up(x), nshape, up(w), up(b), up(dy), eps)

    names = ["output", "grad_input"] + (["grad_weight"] if w is not None else []) + (["grad_bias"] if b is not None else [])
    scales = _grad_scales(x, nshape, w, dy, eps)
    for name, o, t, r in zip(names, ours, theirs, ref):
        expect_dtype = x.dtype if name in ("output", "grad_input") else pd
        assert o.dtype == expect_dtype, f"{name}: dtype {o.dtype}, expected {expect_dtype}"
        assert o.shape == r.shape, f"{name}: shape {tuple(o.shape)} != {tuple(r.shape)}"
        if not o.numel():
            continue
        what = f"{name} ({layout}, {shape}, eps={eps})"
        # The right answer in a 16-bit dtype is +-inf where the exact one overflows it (a
        # constant row with a tiny eps: rstd = 1e6).
        r = torch.where(r.abs() > torch.finfo(o.dtype).max, r.to(o.dtype).to(r.dtype), r)
        if t is not None:
            try:
                rel_err(t, r)
            except AssertionError:  # torch's own answer has NaN/Inf where the true one has none
                t = None
        try:
            assert_close_to_ref(o, r, t, dtype, what)
        except AssertionError:
            # A gradient that is small by cancellation (N = 2: dx ~ eps; rows of opposite
            # sign: dbeta ~ 0) is measured against the size of the terms that cancel, the
            # conditioning of the computation, instead of its own size.
            if name not in scales or not torch.equal(o.isnan(), r.isnan()):
                raise
            ok = ~r.isnan()
            err = (o.double()[ok] - r[ok]).norm().item() / max(scales[name], 1e-30)
            assert err <= RTOL[dtype], f"{what}: error {err:.3g} of the terms' size"


def _shifted_ref(x, nshape, w, b, eps):
    """The float64 reference of x minus each row's first element (LayerNorm is shift-invariant;
    c is a constant, so the gradients are unchanged): a constant row then gives exactly
    d = 0, whose answer with eps = 0 is 0/0 = NaN, as torch's and fastln's, where the textbook
    formula's rounded mean would make up +-1."""
    k = len(nshape)
    c = x.detach().flatten(-k)[..., :1]
    return ref_layer_norm(x - c.reshape(c.shape[:-1] + (1,) * k), nshape, w, b, eps)


def _grad_scales(x, nshape, w, dy, eps):
    """Norms of the summed magnitudes of each gradient's terms, in float64."""
    dims = tuple(range(-len(nshape), 0))
    lead = tuple(range(x.dim() - len(nshape)))
    xd, dyd = x.double(), dy.double()
    # x - mean carries rounding of the size of |x| (a constant row: d is noise), so the
    # terms' size counts |x| + |mean|, not |x - mean|.
    xhat_abs = xd.abs() + xd.mean(dims, keepdim=True).abs()
    rstd = torch.rsqrt(xd.var(dims, unbiased=False, keepdim=True) + eps) if x.numel() else xd
    wdy = dyd.abs() * (w.double().abs() if w is not None else 1)
    terms = wdy * rstd * (1 + xhat_abs * rstd)
    return {"grad_input": terms.norm().item(),
            "grad_weight": (dyd.abs() * xhat_abs * rstd).sum(lead).norm().item() if lead else
            (dyd.abs() * xhat_abs * rstd).norm().item(),
            "grad_bias": dyd.abs().sum(lead).norm().item() if lead else dyd.abs().norm().item()}
