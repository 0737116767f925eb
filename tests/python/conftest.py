"""Shared helpers: devices, per-dtype tolerances, the float64 reference."""
import pytest
import torch

import fastln  # noqa: F401  (registers the ops)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

# Relative error allowed against a float64 reference, per dtype: a few units of rounding
# of the storage type (outputs and gradients are stored in it).
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def ref_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """The textbook formula from primitive torch ops: run on float64 inputs, it is the
    reference (gradients through autograd)."""
    dims = tuple(range(-len(normalized_shape), 0))
    d = x - x.mean(dims, keepdim=True)
    y = d / torch.sqrt((d * d).mean(dims, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def ref_rms_norm(x, normalized_shape, weight=None, eps=None):
    """RMSNorm's formula from primitive torch ops (the float64 reference, as ref_layer_norm)."""
    dims = tuple(range(-len(normalized_shape), 0))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x / torch.sqrt((x * x).mean(dims, keepdim=True) + eps)
    return y if weight is None else y * weight


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||; NaN and Inf must sit where the reference has them."""
    out, ref = out.double(), ref.double()
    nan = ref.isnan()
    assert torch.equal(out.isnan(), nan), "NaN pattern differs from the reference"
    if nan.any():  # (masking copies: only where there is something to mask)
        out, ref = out[~nan], ref[~nan]
    inf = ref.isinf()
    if inf.any():
        assert torch.equal(out[inf], ref[inf]), "Inf differs from the reference"
        out, ref = out[~inf], ref[~inf]
    # Test data are O(1): below an average of 1e-3 per element, the error counts as absolute
    # (a true zero computed as 1e-16 by the float64 reference is no error).
    scale = max(ref.norm().item(), 1e-3 * ref.numel() ** 0.5)
    return (out - ref).norm().item() / scale if ref.numel() else 0.0


def assert_close_to_ref(out: torch.Tensor, ref: torch.Tensor, theirs: torch.Tensor, dtype: torch.dtype,
                        what: str = ""):
    """out within the dtype's tolerance of the float64 ref, and no worse than torch's own
    result (theirs) in the same dtype, with a little slack."""
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    if theirs is None:  # torch itself cannot compute this case
        ours, torchs = rel_err(out, ref), 0.0
    else:
        assert out.dtype == theirs.dtype, f"{what}: dtype {out.dtype} != torch's {theirs.dtype}"
        ours, torchs = rel_err(out, ref), rel_err(theirs, ref)
    assert ours <= max(RTOL[dtype], 1.5 * torchs), f"{what}: rel err {ours:.3g} (torch {torchs:.3g})"
