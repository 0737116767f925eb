"""The ops as torch sees them: the module under torch.compile and export, ISA paths. (opcheck and
torch.compile of every op over its samples: test_ops_table.py.)"""
import pytest
import torch
import torch.nn.functional as F

import fastln


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
