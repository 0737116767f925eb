"""fastln.fused_add_layer_norm / fused_add_rms_norm: bitwise the unfused fastln pair, the float32
residual stream, errors (parity, opcheck, compile, gradcheck: test_ops_table.py)."""
import pytest
import torch

import fastln
from conftest import DEVICES

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def test_residual_fp32_stream_and_grad_only_at_residual_out():
    x = torch.randn(4, 16, dtype=torch.bfloat16, requires_grad=True)
    r = torch.randn(4, 16, dtype=torch.float32, requires_grad=True)
    y, s = fastln.fused_add_layer_norm(x, r, 16, residual_in_fp32=True)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    s.sum().backward()  # only the residual stream is used
    assert torch.equal(x.grad, torch.ones_like(x)) and torch.equal(r.grad, torch.ones_like(r))


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
