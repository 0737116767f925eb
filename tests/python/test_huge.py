"""Huge tensors: one row of more than 2^20 elements, and more than 2^31 elements in total on
the CPU, 2^32 on CUDA (64-bit indexing, no int overflow).

The long-row tests are cheap and always run. The huge tests need ~9 GB of memory (CPU) and
~35 GB of GPU memory (CUDA), and a few tens of seconds: opt-in with FASTLN_TEST_HUGE=1, e.g.
    FASTLN_TEST_HUGE=1 pytest tests/python/test_huge.py
"""
import os

import pytest
import torch
import torch.nn.functional as F

import fastln
from conftest import assert_close_to_ref, ref_layer_norm, ref_rms_norm

huge = pytest.mark.skipif(os.environ.get("FASTLN_TEST_HUGE") != "1",
                          reason="needs ~9 GB of memory (CUDA: ~35 GB): set FASTLN_TEST_HUGE=1")


def _fwd_bwd(fn, x, nshape, w, b, dy):
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    y = fn(leaves[0], nshape, leaves[1], leaves[2], 1e-5)
    return [y.detach(), *torch.autograd.grad(y, leaves, dy)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,nshape", [((2, 2**20 + 37), (2**20 + 37,)), ((1, 3, 2**19 + 1), (3, 2**19 + 1))])
def test_long_rows(shape, nshape, dtype):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(shape, generator=g) * 2 + 5).to(dtype)
    w = (1 + 0.5 * torch.randn(nshape, generator=g)).to(dtype)
    b = torch.randn(nshape, generator=g).to(dtype)
    dy = torch.randn(shape, generator=g).to(dtype)
    ours = _fwd_bwd(fastln.layer_norm, x, nshape, w, b, dy)
    theirs = _fwd_bwd(F.layer_norm, x, nshape, w, b, dy)
    ref = _fwd_bwd(ref_layer_norm, x.double(), nshape, w.double(), b.double(), dy.double())
    for name, o, t, r in zip(["output", "grad_input", "grad_weight", "grad_bias"], ours, theirs, ref):
        assert_close_to_ref(o, r, t, dtype, name)


# > 2^31 elements on the CPU: M rows of N, N odd and > 2^16 so that rows straddle every 2^k
# boundary. On CUDA, >= 2^32 elements (bf16: 8.6 GB a tensor; ~35 GB of GPU memory at the
# peak), N = 1024 for the 16-byte-vector kernels and N = 1031 for the fallback ones.
M_HUGE, N_HUGE = 32771, 65537
assert M_HUGE * N_HUGE > 2**31
HUGE_CASES = [
    ("cpu", M_HUGE, N_HUGE),
    pytest.param("cuda", 2**22 + 5, 1024, marks=pytest.mark.cuda),
    pytest.param("cuda", 2**32 // 1031 + 5, 1031, marks=pytest.mark.cuda),
]


def _fill_rows(M, N, dtype, device="cpu"):
    """x[i, j] = sin(j) * (1 + i % 7) + (i % 13): rows differ in mean and scale, and depend on
    i % 91 alone; no RNG, one gather (fast)."""
    c = torch.arange(91, dtype=torch.float32)[:, None]
    rows = (torch.sin(torch.arange(N, dtype=torch.float32)) * (1 + c % 7) + c % 13).to(device, dtype)
    return rows.index_select(0, torch.arange(M, device=device) % 91)


def _check_rows(y, x, rows, w=None, b=None):
    for i in rows:
        xi, yi = x[i].cpu(), y[i].cpu()
        wc, bc = (None if p is None else p.cpu() for p in (w, b))
        r = ref_layer_norm(xi.double(), (x.shape[1],), None if wc is None else wc.double(),
                           None if bc is None else bc.double())
        t = F.layer_norm(xi, (x.shape[1],), wc, bc)
        assert_close_to_ref(yi, r, t, x.dtype, f"row {i}")


def _huge_rows(M, N):
    """Rows to check: the ends, the middle, and those holding elements 2^31 and 2^32."""
    return sorted({0, 1, M // 2, M - 2, M - 1, min(M - 1, 2**31 // N), min(M - 1, 2**32 // N)})


@huge
@pytest.mark.parametrize("device,M,N", HUGE_CASES)
def test_more_than_2_31_elements_forward_backward(device, M, N):
    assert M * N > (2**32 if device == "cuda" else 2**31)
    x = _fill_rows(M, N, torch.bfloat16, device)
    w = (1 + 0.1 * torch.cos(torch.arange(N, dtype=torch.float32))).to(device, torch.bfloat16)
    b = (0.1 * torch.arange(N, dtype=torch.float32) / N).to(device, torch.bfloat16)
    y, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, (N,), w, b, 1e-5)  # as large as x
    assert y.shape == x.shape
    rows = _huge_rows(M, N)
    _check_rows(y, x, rows, w, b)
    # every row was written: its mean over the normalized part is ~ mean(b)
    assert torch.isfinite(mean).all() and torch.isfinite(rstd).all()
    del y

    # backward: grad_out expanded from one row (stride 0 rows, no memory); dX is as large as x.
    g = torch.Generator().manual_seed(0)
    dy_row = torch.randn(N, generator=g).to(device, torch.bfloat16)
    dy = dy_row.expand(M, N)
    dx, dw, db = torch.ops.fastln.layer_norm_bwd(dy, x, (N,), mean, rstd, w, b, [True, True, True])
    assert dx.shape == x.shape and dw.shape == (N,) and db.shape == (N,)
    wc, bc, dyc = w.cpu(), b.cpu(), dy_row.cpu()
    for i in rows:
        xi = x[i].cpu().double().requires_grad_()
        ri = ref_layer_norm(xi, (N,), wc.double(), bc.double())
        (gi,) = torch.autograd.grad(ri, xi, dyc.double())
        xt = x[i].cpu().clone().requires_grad_()
        (tgi,) = torch.autograd.grad(F.layer_norm(xt, (N,), wc, bc), xt, dyc)
        assert_close_to_ref(dx[i].cpu(), gi, tgi, torch.bfloat16, f"grad_input row {i}")
    del dx
    # dbeta = column sums of dY = M * dy_row exactly in float (then rounded to bf16)
    assert_close_to_ref(db.cpu(), dyc.double() * M, None, torch.bfloat16, "grad_bias")
    # dgamma = sum_i dy * xhat_i; row i depends on i % 91 alone (see _fill_rows), so the
    # float64 reference sums 91 distinct rows, each times its count.
    counts = torch.bincount(torch.arange(M) % 91, minlength=91).double()
    acc = torch.zeros(N, dtype=torch.float64)
    for c in range(91):
        xc = x[c].cpu().double()
        acc += counts[c] * (xc - xc.mean()) / torch.sqrt(xc.var(unbiased=False) + 1e-5)
    assert_close_to_ref(dw.cpu(), dyc.double() * acc, None, torch.bfloat16, "grad_weight")

    if device == "cuda":  # the fused residual add + RMSNorm, residual rows of stride 0
        r_row = (0.5 * torch.cos(torch.arange(N, dtype=torch.float32))).to(device, torch.bfloat16)
        y, s = fastln.fused_add_rms_norm(x, r_row.expand(M, N), (N,), w, 1e-5)
        for i in rows:
            si = x[i].cpu() + r_row.cpu()
            assert torch.equal(s[i].cpu(), si), f"residual_out row {i}"
            r = ref_rms_norm(si.double(), (N,), wc.double(), 1e-5)
            t = F.rms_norm(si, (N,), wc, 1e-5)
            assert_close_to_ref(y[i].cpu(), r, t, torch.bfloat16, f"fused rms row {i}")


@huge
def test_more_than_2_31_elements_expanded_input():
    """A stride-0 (expanded) input of > 2^31 logical elements: read cheaply, 4.3 GB written."""
    M, N = M_HUGE, N_HUGE
    row = torch.sin(torch.arange(N, dtype=torch.float32)).to(torch.bfloat16) + 3
    x = row.expand(M, N)
    y = fastln.layer_norm(x, (N,))
    expected = F.layer_norm(row, (N,))
    # all rows equal the one-row result, the last ones (past element 2^31) included
    for s in range(0, M, 4096):
        assert torch.equal(y[s:s + 4096], expected.expand(min(4096, M - s), N)), f"rows {s}.."
