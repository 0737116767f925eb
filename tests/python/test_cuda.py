"""CUDA-only behaviour: CUDA graph capture of forward and backward, the memory-efficient
LayerNorm, and the statistics of empty rows as the CPU op gives them. Parity on CUDA is in
test_layer_norm / test_rms_norm / test_fused_add (DEVICES), determinism in test_determinism,
more than 2^32 elements in test_huge."""
import pytest
import torch
import torch.nn.functional as F

import fastln
from conftest import assert_close_to_ref, ref_layer_norm

pytestmark = pytest.mark.cuda

# op(x, r, w, b) -> outputs; r is the residual of the fused adds, unused by the others.
OPS = {
    "layer_norm": lambda x, r, w, b: (fastln.layer_norm(x, x.shape[-1:], w, b),),
    "rms_norm": lambda x, r, w, b: (fastln.rms_norm(x, x.shape[-1:], w),),
    "fused_add_layer_norm": lambda x, r, w, b: fastln.fused_add_layer_norm(x, r, x.shape[-1:], w, b),
    "fused_add_rms_norm": lambda x, r, w, b: fastln.fused_add_rms_norm(x, r, x.shape[-1:], w),
    "fused_add_layer_norm_fp32": lambda x, r, w, b: fastln.fused_add_layer_norm(
        x, r.float(), x.shape[-1:], w, b, residual_in_fp32=True),
}


def _inputs(m, n, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x, r, dy = (torch.randn(m, n, device="cuda", generator=g).to(dtype) for _ in range(3))
    w, b = (torch.randn(n, device="cuda", generator=g).to(dtype) for _ in range(2))
    return x, r, w, b, dy


def _step(op, leaves, dy):
    outs = OPS[op](*leaves)
    grads = torch.autograd.grad(outs, leaves, [dy.to(o.dtype) for o in outs], allow_unused=True)
    return [*outs, *(g for g in grads if g is not None)]


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("dtype,m,n", [(torch.float32, 64, 1024), (torch.bfloat16, 300, 4096),
                                       (torch.bfloat16, 33, 1001), (torch.float16, 5000, 128)])
def test_graph_capture_matches_eager(op, dtype, m, n):
    """Forward and backward captured in one CUDA graph, replayed on new data: bitwise what eager
    gives on that data (no host sync, no allocation outside the graph's pool)."""
    *tensors, dy = _inputs(m, n, dtype, seed=0)
    leaves = [t.clone().requires_grad_() for t in tensors]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up, as torch.cuda.graph asks
        for _ in range(2):
            _step(op, leaves, dy)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _step(op, leaves, dy)

    *fresh, fresh_dy = _inputs(m, n, dtype, seed=1)
    with torch.no_grad():
        for t, v in zip(leaves + [dy], fresh + [fresh_dy]):
            t.copy_(v)
    graph.replay()
    eager = _step(op, [t.detach().clone().requires_grad_() for t in fresh], fresh_dy)
    torch.cuda.synchronize()
    assert len(captured) == len(eager)
    for i, (c, e) in enumerate(zip(captured, eager)):
        assert torch.equal(c, e), f"{op}: result {i} differs between graph replay and eager"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_memory_efficient(dtype):
    x, _, w, b, dy = _inputs(37, 768, dtype, seed=2)
    w = w.abs() + 0.5  # no zero weight: the input is recovered from the output
    ours = [t.clone().requires_grad_() for t in (x, w, b)]
    y = fastln.layer_norm(*ours[:1], (768,), *ours[1:], memory_efficient=True)
    grads = torch.autograd.grad(y, ours, dy)
    ref = [t.double().requires_grad_() for t in (x, w, b)]
    y_ref = ref_layer_norm(ref[0], (768,), ref[1], ref[2])
    ref_grads = torch.autograd.grad(y_ref, ref, dy.double())
    for name, o, r in zip(["output", "grad_input", "grad_weight", "grad_bias"], [y, *grads], [y_ref, *ref_grads]):
        assert_close_to_ref(o, r, None, dtype, name)


def test_empty_rows_statistics_as_cpu():
    """N = 0: mean 0 and rstd 1/sqrt(eps) on both devices (the CPU kernel's answer)."""
    fwds = [lambda x: torch.ops.fastln.layer_norm_fwd(x, (0,), None, None, 1e-5),
            lambda x: torch.ops.fastln.rms_norm_fwd(x, (0,), None, 1e-5)]
    x = torch.zeros(3, 0)
    for fwd in fwds:
        for a, c in zip(fwd(x), fwd(x.cuda())):
            assert a.shape == c.shape and torch.equal(a, c.cpu())


def test_current_stream_and_device_guard():
    """The kernels run on the current stream: work on a side stream, read after a sync."""
    x, _, w, b, _ = _inputs(512, 2048, torch.bfloat16, seed=3)
    expected = F.layer_norm(x.float(), (2048,), w.float(), b.float()).bfloat16()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = fastln.layer_norm(x, (2048,), w, b)
    side.synchronize()
    torch.testing.assert_close(y, expected, rtol=1e-2, atol=2e-2)
