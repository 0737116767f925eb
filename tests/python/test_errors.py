"""Bad input: a clear error of the type torch raises, naming the argument. Never a crash.

One row per way each argument can be wrong. docs/errors.md is this table in prose: keep the
two in step (test_docs_table_lists_every_row checks that every row id appears there)."""
import os
import re

import pytest
import torch

import fastln
from conftest import ref_layer_norm

ln = fastln.layer_norm
x = torch.randn(2, 4)
xb = x.bfloat16()
ones = torch.ones(4)
nan, inf = float("nan"), float("inf")

# (id, call, error type, message pattern: names the argument)
ROWS = [
    # ---- input ----
    ("input-not-tensor", lambda: ln([[1.0, 2.0]], (2,)), TypeError, r"argument 'input' must be a Tensor, not list"),
    ("input-none", lambda: ln(None, (4,)), TypeError, r"argument 'input' must be a Tensor, not NoneType"),
    ("input-int", lambda: ln(x.long(), (4,)), NotImplementedError, r"input of dtype Long is not supported"),
    ("input-uint8", lambda: ln(x.to(torch.uint8), (4,)), NotImplementedError, r"input of dtype Byte"),
    ("input-bool", lambda: ln(x.bool(), (4,)), NotImplementedError, r"input of dtype Bool"),
    ("input-complex", lambda: ln(x.to(torch.complex64), (4,)), NotImplementedError, r"input of dtype ComplexFloat"),
    ("input-float8", lambda: ln(x.to(torch.float8_e4m3fn), (4,)), NotImplementedError, r"input of dtype Float8_e4m3fn"),
    ("input-sparse", lambda: ln(x.to_sparse(), (4,)), NotImplementedError, r"argument 'input' is a torch.sparse_coo tensor"),
    ("input-nested", lambda: ln(torch.nested.nested_tensor([torch.randn(2, 4), torch.randn(3, 4)]), (4,)),
     NotImplementedError, r"argument 'input' is a nested tensor"),
    ("input-0-dim", lambda: ln(torch.tensor(1.0), (1,)), RuntimeError, r"normalized_shape=\[1\].*input of size \[\]"),
    ("input-trailing-dims", lambda: ln(x, (5,)), RuntimeError, r"normalized_shape=\[5\].*input of size \[2, 4\]"),
    ("input-meta-params-cpu", lambda: ln(x.to("meta"), (4,), ones), RuntimeError,
     r"expected weight on the input's device meta, but got weight on cpu"),
    # ---- normalized_shape ----
    ("shape-empty", lambda: ln(x, ()), RuntimeError, r"normalized_shape must have at least one dimension"),
    ("shape-longer-than-input", lambda: ln(x, (2, 2, 4)), RuntimeError, r"normalized_shape=\[2, 2, 4\].*input of size \[2, 4\]"),
    ("shape-mismatch", lambda: ln(x, (2, 3)), RuntimeError, r"normalized_shape=\[2, 3\]"),
    ("shape-negative", lambda: ln(x, (-4,)), RuntimeError, r"normalized_shape=\[-4\]"),
    ("shape-none", lambda: ln(x, None), TypeError, r"argument 'normalized_shape' must be an int or a sequence of ints, not NoneType"),
    ("shape-str", lambda: ln(x, "4"), TypeError, r"argument 'normalized_shape' .* not str"),
    ("shape-tensor", lambda: ln(x, torch.tensor([4])), TypeError, r"argument 'normalized_shape' .* not Tensor"),
    ("shape-float-element", lambda: ln(x, (4.0,)), TypeError, r"argument 'normalized_shape' .* element of type float at pos 0"),
    ("shape-nested-element", lambda: ln(x, ((4,),)), TypeError, r"argument 'normalized_shape' .* element of type tuple"),
    ("shape-int64-overflow", lambda: ln(x, (2**64,)), TypeError, r"argument 'normalized_shape' .* out of the range of int64"),
    ("shape-huge", lambda: ln(x, (2**63 - 1,)), RuntimeError, r"normalized_shape=\[9223372036854775807\]"),
    # ---- weight ----
    ("weight-not-tensor", lambda: ln(x, (4,), [1.0] * 4), TypeError, r"argument 'weight' must be a Tensor or None, not list"),
    ("weight-str", lambda: ln(x, (4,), "w"), TypeError, r"argument 'weight' must be a Tensor or None, not str"),
    ("weight-shape", lambda: ln(x, (4,), torch.ones(5)), RuntimeError, r"weight of shape \[5\]"),
    ("weight-extra-dim", lambda: ln(x, (4,), torch.ones(1, 4)), RuntimeError, r"weight of shape \[1, 4\]"),
    ("weight-0-dim", lambda: ln(x, (4,), torch.tensor(1.0)), RuntimeError, r"weight of shape \[\]"),
    ("weight-dtype-double", lambda: ln(x, (4,), ones.double()), RuntimeError, r"weight of dtype Double"),
    ("weight-dtype-float-for-double", lambda: ln(x.double(), (4,), ones), RuntimeError,
     r"expected weight of dtype Double .* got weight of dtype Float"),
    ("weight-dtype-bf16-for-float", lambda: ln(x, (4,), ones.bfloat16()), RuntimeError, r"weight of dtype BFloat16"),
    ("weight-dtype-half-for-bf16", lambda: ln(xb, (4,), ones.half()), RuntimeError,
     r"expected weight of dtype BFloat16 or Float .* got weight of dtype Half"),
    ("weight-dtype-int", lambda: ln(x, (4,), ones.long()), RuntimeError, r"weight of dtype Long"),
    ("weight-requires-grad-dtype", lambda: ln(x.detach().requires_grad_(), (4,), ones.double().requires_grad_()),
     RuntimeError, r"weight of dtype Double"),
    ("weight-device", lambda: ln(x, (4,), torch.ones(4, device="meta")), RuntimeError,
     r"expected weight on the input's device cpu, but got weight on meta"),
    ("weight-sparse", lambda: ln(x, (4,), ones.to_sparse()), NotImplementedError, r"argument 'weight' is a torch.sparse_coo tensor"),
    # ---- bias ----
    ("bias-not-tensor", lambda: ln(x, (4,), None, 1.0), TypeError, r"argument 'bias' must be a Tensor or None, not float"),
    ("bias-shape", lambda: ln(x, (4,), None, torch.ones(3)), RuntimeError, r"bias of shape \[3\]"),
    ("bias-dtype", lambda: ln(x.double(), (4,), None, ones), RuntimeError, r"bias of dtype Float"),
    ("bias-requires-grad-dtype", lambda: ln(x, (4,), None, ones.half().requires_grad_()), RuntimeError, r"bias of dtype Half"),
    ("bias-device", lambda: ln(x, (4,), None, torch.ones(4, device="meta")), RuntimeError,
     r"expected bias on the input's device cpu, but got bias on meta"),
    ("weight-bias-dtypes-differ", lambda: ln(xb, (4,), ones, ones.bfloat16()), RuntimeError,
     r"expected weight and bias of one dtype, but got weight of dtype Float and bias of dtype BFloat16"),
    # ---- eps ----
    ("eps-nan", lambda: ln(x, (4,), eps=nan), ValueError, r"eps must be finite, got nan"),
    ("eps-inf", lambda: ln(x, (4,), eps=inf), ValueError, r"eps must be finite, got inf"),
    ("eps-minus-inf", lambda: ln(x, (4,), eps=-inf), ValueError, r"eps must be finite, got -inf"),
    ("eps-str", lambda: ln(x, (4,), eps="1e-5"), TypeError, r"argument 'eps' must be a float, not str"),
    ("eps-none", lambda: ln(x, (4,), eps=None), TypeError, r"argument 'eps' must be a float, not NoneType"),
    # ---- call ----
    ("unknown-keyword", lambda: ln(x, (4,), epsilon=1e-5), TypeError, r"unexpected keyword argument 'epsilon'"),
    ("module-input-shape", lambda: fastln.LayerNorm(8)(x), RuntimeError, r"normalized_shape=\[8\].*input of size \[2, 4\]"),
    ("module-input-dtype", lambda: fastln.LayerNorm(4)(x.double()), RuntimeError, r"weight of dtype Float"),
]

# The backward op, called directly (autograd always passes consistent arguments).
_, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, (4,), None, None, 1e-5)
bwd = torch.ops.fastln.layer_norm_bwd
mask = [True, True, True]
BWD_ROWS = [
    ("bwd-grad-out-shape", lambda: bwd(torch.randn(3, 4), x, (4,), mean, rstd, ones, ones, mask), RuntimeError,
     r"expected grad_out like input \(\[2, 4\], Float\), got \[3, 4\], Float"),
    ("bwd-grad-out-dtype", lambda: bwd(x.double(), x, (4,), mean, rstd, ones, ones, mask), RuntimeError,
     r"expected grad_out like input .* got \[2, 4\], Double"),
    ("bwd-grad-out-device", lambda: bwd(x.to("meta"), x, (4,), mean, rstd, ones, ones, mask), RuntimeError, r"grad_out"),
    ("bwd-mean-numel", lambda: bwd(x, x, (4,), mean[:1], rstd, None, None, mask), RuntimeError,
     r"expected mean and rstd of 2 elements"),
    ("bwd-rstd-dtype", lambda: bwd(x, x, (4,), mean, rstd.double(), None, None, mask), RuntimeError,
     r"expected mean and rstd of 2 elements of dtype Float, got \[2, 1\] of dtype Double"),
    ("bwd-weight-shape", lambda: bwd(x, x, (4,), mean, rstd, torch.ones(3), None, mask), RuntimeError, r"weight of shape \[3\]"),
    ("bwd-input-dtype", lambda: bwd(x.long(), x.long(), (4,), mean, rstd, None, None, mask), NotImplementedError,
     r"input of dtype Long"),
]

# The fused add's forward op, called directly: RMSNorm takes no bias (the CPU op used to add it).
add_fwd = torch.ops.fastln.add_norm_fwd
OP_ROWS = [
    ("add-norm-rms-bias", lambda: add_fwd(x, x, (4,), ones, ones, 1e-5, True, False), RuntimeError,
     r"fastln.fused_add_rms_norm: RMSNorm has no bias"),
    ("add-norm-rms-bias-meta", lambda: add_fwd(x.to("meta"), x.to("meta"), (4,), ones.to("meta"), ones.to("meta"),
                                               1e-5, True, False), RuntimeError, r"RMSNorm has no bias"),
]

ALL = ROWS + BWD_ROWS + OP_ROWS


@pytest.mark.parametrize("call,error,pattern", [r[1:] for r in ALL], ids=[r[0] for r in ALL])
def test_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        call()
    assert "fastln" in str(info.value) or error is TypeError and "unexpected keyword" in str(info.value)


def test_row_ids_unique():
    ids = [r[0] for r in ALL]
    assert len(ids) == len(set(ids))


def test_docs_table_lists_every_row():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "errors.md")
    with open(path) as f:
        doc = f.read()
    missing = [r[0] for r in ALL if f"`{r[0]}`" not in doc]
    assert not missing, f"docs/errors.md lacks rows {missing}"


# ---- legal inputs at the edges: torch's answer, not an error ----

def test_negative_finite_eps_is_legal():
    """As in torch (whose OpInfo samples use eps=-0.5): NaN where var + eps < 0."""
    g = torch.Generator().manual_seed(0)
    xx = torch.empty(6, 10).uniform_(-9, 9, generator=g)
    xx[0] = 0.1 * xx[0]  # var < 0.5: NaN row
    ours, theirs = ln(xx, (10,), eps=-0.5), torch.nn.functional.layer_norm(xx, (10,), eps=-0.5)
    assert torch.equal(ours.isnan(), theirs.isnan()) and ours[0].isnan().all()
    torch.testing.assert_close(ours[1:], theirs[1:])


@pytest.mark.parametrize("eps", [1, 0, torch.tensor(1e-3), True])
def test_eps_int_tensor_bool(eps):
    torch.testing.assert_close(ln(x, (4,), eps=eps), torch.nn.functional.layer_norm(x, (4,), eps=float(eps)))


@pytest.mark.parametrize("shape,nshape", [((2, 0), (0,)), ((0, 4), (4,)), ((0, 0), (0,)), ((3, 0, 5), (0, 5))])
def test_empty_tensors(shape, nshape):
    xx = torch.randn(shape, requires_grad=True)
    w = torch.ones(nshape, requires_grad=True)
    y = ln(xx, nshape, w, w)
    assert y.shape == xx.shape
    y.sum().backward()
    assert xx.grad.shape == xx.shape and w.grad.shape == w.shape
    assert (w.grad == 0).all()


@pytest.mark.parametrize("nshape", [[4], torch.Size([4]), (torch.tensor(4).item(),), 4])
def test_normalized_shape_kinds(nshape):
    import numpy as np
    torch.testing.assert_close(ln(x, nshape), ln(x, (np.int64(4),)))


def test_meta_input_gives_shapes():
    y = ln(x.to("meta"), (4,), ones.to("meta"), ones.to("meta"))
    assert y.device.type == "meta" and y.shape == x.shape


def test_nonfinite_input_propagates_like_torch():
    xx = torch.tensor([[1.0, nan, 2.0, 3.0], [1.0, inf, 2.0, 3.0], [-inf, inf, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    ours, theirs = ln(xx, (4,)), torch.nn.functional.layer_norm(xx, (4,))
    assert torch.equal(ours.isnan(), theirs.isnan()), (ours, theirs)
    torch.testing.assert_close(ours[3], theirs[3])


def test_variance_overflow_is_not_silently_zero():
    xx = torch.tensor([[1e38, -1e38, 3e38, 0.0]])
    ours = ln(xx, (4,))
    ref = ref_layer_norm(xx.double(), (4,))
    # torch's answer (NaN) or the right one, never a finite wrong one
    assert ours.isnan().all() or torch.allclose(ours.double(), ref, rtol=1e-5)
