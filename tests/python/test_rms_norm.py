"""fastln.rms_norm / fastln.RMSNorm: what the op table (test_ops_table.py) does not cover: the
default eps, strided input, zero rows, the module, errors."""
import pytest
import torch
import torch.nn.functional as F

import fastln
from conftest import ref_rms_norm
from test_layer_norm import DTYPES, _strided_inputs, check_parity

F32_EPS = torch.finfo(torch.float32).eps
# f(x, normalized_shape, w, b, eps) forms for check_parity (b is always None)
RMS_FNS = (lambda x, ns, w, b, eps: fastln.rms_norm(x, ns, w, eps),
           lambda x, ns, w, b, eps: F.rms_norm(x, ns, w, eps),
           lambda x, ns, w, b, eps: ref_rms_norm(x, ns, w, eps))


@pytest.mark.parametrize("dtype", DTYPES)
def test_default_eps_is_torchs(dtype):
    """eps=None: finfo(float32).eps for 16-bit inputs (torch's opmath type), finfo(float64).eps
    for float64; visible on rows of tiny values."""
    x = torch.zeros(3, 8, dtype=dtype)
    x[0, 0], x[1, :] = 1e-4, 3e-3
    expected_eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    torch.testing.assert_close(fastln.rms_norm(x, (8,)), F.rms_norm(x, (8,)))
    torch.testing.assert_close(fastln.rms_norm(x, (8,)), fastln.rms_norm(x, (8,), eps=expected_eps))
    torch.testing.assert_close(fastln.RMSNorm(8, dtype=dtype)(x), torch.nn.RMSNorm(8, dtype=dtype)(x))


@pytest.mark.parametrize("kind", ["transposed", "sliced_rows", "expanded_rows", "noncontig_3d"])
def test_strided_input(kind):
    x = _strided_inputs(kind, torch.float32, "cpu")
    w, dy = torch.randn(64), torch.randn(x.shape)
    check_parity(x, (64,), w, None, dy, torch.float32, eps=1e-6, fns=RMS_FNS)


def test_empty_and_zero_rows():
    x = torch.zeros(0, 8, requires_grad=True)
    fastln.rms_norm(x, (8,)).sum().backward()
    assert x.grad.shape == (0, 8)
    z = torch.zeros(2, 8)
    torch.testing.assert_close(fastln.rms_norm(z, (8,)), F.rms_norm(z, (8,)))


@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"eps": 1e-3}])
def test_module_matches_torch(kwargs):
    torch.manual_seed(0)
    ours, theirs = fastln.RMSNorm((4, 16), **kwargs), torch.nn.RMSNorm((4, 16), **kwargs)
    assert isinstance(ours, torch.nn.RMSNorm)
    if ours.weight is not None:
        with torch.no_grad():
            ours.weight.normal_()
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == "fastln." + repr(theirs)  # the same, and says whose it is
    x = torch.randn(3, 4, 16, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    ours(x).square().sum().backward()
    theirs(x2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    if ours.weight is not None:
        torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)


def test_compile_fullgraph():
    torch._dynamo.reset()
    m = fastln.RMSNorm(32)
    f = torch.compile(lambda x: m(x * 2).sin().sum(), fullgraph=True, dynamic=True)
    ref = torch.nn.RMSNorm(32)
    for rows in (8, 13):
        x = torch.randn(rows, 32, requires_grad=True)
        x2 = x.detach().clone().requires_grad_()
        f(x).backward()
        ref(x2 * 2).sin().sum().backward()
        torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(m.weight.grad, ref.weight.grad)
    ep = torch.export.export(m, (torch.randn(4, 32),))
    assert any("fastln.rms_norm" in str(n.target) for n in ep.graph.nodes)


x = torch.randn(2, 4)
BAD = [
    (lambda: fastln.rms_norm(x, (5,)), RuntimeError, r"fastln.rms_norm: given normalized_shape=\[5\]"),
    (lambda: fastln.rms_norm(x, (4,), torch.ones(5)), RuntimeError, r"weight of shape \[5\]"),
    (lambda: fastln.rms_norm(x, (4,), torch.ones(4, dtype=torch.float64)), RuntimeError, r"weight of dtype Double"),
    (lambda: fastln.rms_norm(x.long(), (4,)), NotImplementedError, r"input of dtype Long"),
    (lambda: fastln.rms_norm(x, (4,), eps=float("nan")), ValueError, r"eps must be finite"),
    (lambda: fastln.rms_norm(x, (4,), torch.ones(4, device="meta")), RuntimeError, r"weight on the input's device"),
    (lambda: fastln.rms_norm("x", (4,)), TypeError, r"input"),
    (lambda: fastln.rms_norm(x, (4,), "w"), TypeError, r"weight"),
]


@pytest.mark.parametrize("call,error,pattern", BAD, ids=[c[2][:40] for c in BAD])
def test_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_bad_rstd():
    _, rstd = torch.ops.fastln.rms_norm_fwd(x, (4,), None, 1e-6)
    with pytest.raises(RuntimeError, match="expected rstd of 2 elements"):
        torch.ops.fastln.rms_norm_bwd(torch.randn(2, 4), x, (4,), rstd[:1], None, [True, False])
