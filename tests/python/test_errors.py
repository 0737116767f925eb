"""Bad input: a clear error of the type torch raises, naming the argument. Never a crash."""
import pytest
import torch

import fastln

x = torch.randn(2, 4)
CASES = [  # (call, error type, message pattern)
    (lambda: fastln.layer_norm(x, (5,)), RuntimeError, r"normalized_shape=\[5\].*input of size \[2, 4\]"),
    (lambda: fastln.layer_norm(x, (2, 2, 4)), RuntimeError, r"normalized_shape=\[2, 2, 4\]"),
    (lambda: fastln.layer_norm(x, ()), RuntimeError, r"normalized_shape must have at least one"),
    (lambda: fastln.layer_norm(x, (4,), torch.ones(5)), RuntimeError, r"weight of shape \[5\]"),
    (lambda: fastln.layer_norm(x, (4,), None, torch.ones(3)), RuntimeError, r"bias of shape \[3\]"),
    (lambda: fastln.layer_norm(x, (4,), torch.ones(4, dtype=torch.float64)), RuntimeError, r"weight of dtype Double"),
    (lambda: fastln.layer_norm(x.double(), (4,), None, torch.ones(4)), RuntimeError, r"bias of dtype Float"),
    (lambda: fastln.layer_norm(x.bfloat16(), (4,), torch.ones(4), torch.ones(4, dtype=torch.bfloat16)), RuntimeError,
     r"weight and bias of one dtype"),
    (lambda: fastln.layer_norm(x.long(), (4,)), NotImplementedError, r"input of dtype Long"),
    (lambda: fastln.layer_norm(x.bool(), (4,)), NotImplementedError, r"input of dtype Bool"),
    (lambda: fastln.layer_norm(x.to(torch.complex64), (4,)), NotImplementedError, r"input of dtype ComplexFloat"),
    (lambda: fastln.layer_norm(x, (4,), torch.ones(4, device="meta")), RuntimeError, r"weight on the input's device"),
    (lambda: fastln.layer_norm(x, (4,), eps=float("nan")), ValueError, r"eps must be finite"),
    (lambda: fastln.layer_norm(x, (4,), eps=float("inf")), ValueError, r"eps must be finite"),
    (lambda: fastln.layer_norm("x", (4,)), TypeError, r"input"),
    (lambda: fastln.layer_norm(x, (4,), "w"), TypeError, r"weight"),
    (lambda: fastln.layer_norm(x, "4"), TypeError, r"normalized_shape"),
]


@pytest.mark.parametrize("call,error,pattern", CASES, ids=[c[2][:40] for c in CASES])
def test_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_bad_grad_out_shape():
    _, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, (4,), None, None, 1e-5)
    with pytest.raises(RuntimeError, match="expected grad_out like input"):
        torch.ops.fastln.layer_norm_bwd(torch.randn(3, 4), x, (4,), mean, rstd, None, None, [True, False, False])
    with pytest.raises(RuntimeError, match="expected mean and rstd of 2 elements"):
        torch.ops.fastln.layer_norm_bwd(torch.randn(2, 4), x, (4,), mean[:1], rstd, None, None, [True, False, False])


@pytest.mark.skipif(fastln._C.cuda, reason="built with CUDA kernels")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_without_cuda_build():
    with pytest.raises(RuntimeError, match="built without CUDA"):
        fastln.layer_norm(x.cuda(), (4,))
