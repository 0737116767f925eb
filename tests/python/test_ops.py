"""The ops as torch sees them: opcheck, torch.compile, export, ISA paths."""
import pytest
import torch
import torch.nn.functional as F

import fastln
from conftest import DEVICES


def _samples(device):
    g = torch.Generator().manual_seed(0)
    for shape, nshape in [((8, 32), (32,)), ((2, 3, 4, 5), (4, 5)), ((0, 16), (16,))]:
        for affine in (True, False):
            for dtype in (torch.float32, torch.bfloat16):
                x = torch.randn(shape, generator=g).to(device, dtype)
                w = torch.randn(nshape, generator=g).to(device, dtype) if affine else None
                b = torch.randn(nshape, generator=g).to(device, dtype) if affine else None
                yield x, nshape, w, b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_layer_norm(device, requires_grad):
    for x, nshape, w, b in _samples(device):
        args = [t.requires_grad_(requires_grad) if t is not None else None for t in (x, w, b)]
        torch.library.opcheck(torch.ops.fastln.layer_norm.default, (args[0], nshape, args[1], args[2], 1e-5))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_fwd_bwd(device):
    for x, nshape, w, b in _samples(device):
        torch.library.opcheck(torch.ops.fastln.layer_norm_fwd.default, (x, nshape, w, b, 1e-5))
        _, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, nshape, w, b, 1e-5)
        dy = torch.randn_like(x)
        for mask in ([True, True, True], [True, False, False], [False, True, True]):
            torch.library.opcheck(torch.ops.fastln.layer_norm_bwd.default,
                                  (dy, x, nshape, mean, rstd, w, b, mask))


def test_stats_match_torch_layout():
    x = torch.randn(2, 3, 4, 5)
    y, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, (4, 5), None, None, 1e-5)
    _, tmean, trstd = torch.native_layer_norm(x, (4, 5), None, None, 1e-5)
    assert mean.shape == tmean.shape == (2, 3, 1, 1)
    torch.testing.assert_close(mean, tmean)
    torch.testing.assert_close(rstd, trstd)


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_forward_backward(dynamic):
    torch._dynamo.reset()

    def f(x, w, b):
        return fastln.layer_norm(x * 2, (32,), w, b).sin().sum()

    def f_ref(x, w, b):
        return F.layer_norm(x * 2, (32,), w, b).sin().sum()

    compiled = torch.compile(f, fullgraph=True, dynamic=dynamic)
    for rows in (8, 13):
        x, w, b = torch.randn(rows, 32), torch.randn(32), torch.randn(32)
        ours = [t.clone().requires_grad_() for t in (x, w, b)]
        theirs = [t.clone().requires_grad_() for t in (x, w, b)]
        compiled(*ours).backward()
        f_ref(*theirs).backward()
        for o, t in zip(ours, theirs):
            torch.testing.assert_close(o.grad, t.grad)


def test_compile_module_and_export():
    m = fastln.LayerNorm(16)
    x = torch.randn(4, 16)
    torch.testing.assert_close(torch.compile(m, fullgraph=True)(x), m(x))
    ep = torch.export.export(m, (x,))
    assert any("fastln" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x), m(x))


@pytest.mark.parametrize("isa", fastln._C.available_isas())
def test_every_isa_matches_torch(isa):
    """Every CPU kernel build this CPU runs; the Catch2 suite checks them against float64."""
    before = fastln._C.isa()
    try:
        fastln._C.set_isa(isa)
        assert fastln._C.isa() == isa
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            x = torch.randn(37, 1000).to(dtype).requires_grad_()
            w, b = torch.randn(1000, dtype=dtype, requires_grad=True), torch.randn(1000, dtype=dtype, requires_grad=True)
            dy = torch.randn(37, 1000).to(dtype)
            ours = [fastln.layer_norm(x, (1000,), w, b)]
            ours += torch.autograd.grad(ours[0], (x, w, b), dy)
            x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
            ref = [F.layer_norm(x64, (1000,), w64, b64)]
            ref += torch.autograd.grad(ref[0], (x64, w64, b64), dy.double())
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            for o, r in zip(ours, ref):
                assert ((o.double() - r).norm() / r.norm()).item() < tol
    finally:
        fastln._C.set_isa(before)


def test_set_isa_rejects_unknown_name():
    with pytest.raises(ValueError, match="isa must be one of"):
        fastln._C.set_isa("sse9")
