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
                                       (torch.bfloat16, 33, 1001), (torch.float16, 5000, 128),
                                       (torch.bfloat16, 40, 65536)])  # the last: clusters
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


# Long rows: on sm_90 each row is split over a thread-block cluster (cuda/layer_norm.cu,
# fwd_config / bwd_config): forward above 16384 elements, backward where a row's column sums
# pass 64 KB. 36872 = 8 * 4609: slices of unequal size (e.g. bf16 backward, 8 CTAs of 577 and
# 570 vectors). 96 rows: the persistent backward grid gives some clusters several rows.
CLUSTER_NS = [32768, 65536, 36872]
CLUSTER_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


# Rows one CTA holds with its column sums in shared memory (backward), of every configuration
# between: 16-bit 10000 and 12288 (4 vectors a thread, CTAs built for 2 a SM; 10000 leaves
# threads without a vector), 16384 (512 threads; on sm_90 a cluster of 2, two rows an
# iteration); fp32 the same N in clusters of 2.
ONE_CTA_NS = [10000, 12288, 16384]


@pytest.mark.parametrize("n", ONE_CTA_NS + CLUSTER_NS)
@pytest.mark.parametrize("dtype", CLUSTER_DTYPES)
@pytest.mark.parametrize("norm,affine", [("layer", "both"), ("layer", "none"), ("rms", "weight"), ("rms", "none")])
def test_long_rows_parity(n, dtype, norm, affine):
    """Output and every gradient against torch and the float64 reference (rows far from zero for
    LayerNorm: the shift by the row's first element, read by every CTA of a cluster)."""
    from test_layer_norm import check_parity, make_inputs
    from test_rms_norm import RMS_FNS

    offset = 4.0 if norm == "layer" else 0.0
    x, w, b, dy = make_inputs((96, n), (n,), dtype, "cuda", affine, seed=n % 97, offset=offset)
    if norm == "layer":
        check_parity(x, (n,), w, b, dy, dtype)
    else:
        check_parity(x, (n,), w, None, dy, dtype, eps=1e-6, fns=RMS_FNS)


@pytest.mark.parametrize("n", CLUSTER_NS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cluster_rows_mixed_params(n, dtype):
    """16-bit input, float32 weight and bias (torch's CUDA kernel rejects them: the float64
    reference judges)."""
    from test_layer_norm import check_parity, make_inputs

    x, w, b, dy = make_inputs((24, n), (n,), dtype, "cuda", "both", param_dtype=torch.float32)
    check_parity(x, (n,), w, b, dy, dtype, torch_fails=True)


@pytest.mark.parametrize("n", CLUSTER_NS)
@pytest.mark.parametrize("dtype", CLUSTER_DTYPES)
@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_cluster_rows_fused_add(n, dtype, norm):
    """The fused residual add forward (and its backward) on long rows, against torch's x + r
    then the norm, and the float64 reference."""
    from test_fused_add import ours, run, unfused

    g = torch.Generator().manual_seed(5)
    x, r, dy, ds = (torch.randn(24, n, generator=g, dtype=torch.float64).cuda() for _ in range(4))
    w = (1 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)).cuda()
    b = torch.randn(n, generator=g, dtype=torch.float64).cuda() if norm == "layer" else None
    lo = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    args = (lo(x), lo(r), (n,), lo(w), lo(b), lo(dy), lo(ds), 1e-5)
    out = run(ours(norm, False), *args)
    theirs = run(unfused(norm, False), *args)
    ref = run(unfused(norm, False), x, r, (n,), w, b, dy, ds, 1e-5)
    names = ["output", "residual_out", "grad_input", "grad_residual", "grad_weight", "grad_bias"]
    for name, o, t, rf in zip(names, out, theirs, ref):
        assert_close_to_ref(o, rf, t, o.dtype, name)
    y, s = fastln.fused_add_layer_norm(*args[:5]) if norm == "layer" else fastln.fused_add_rms_norm(*args[:4])
    assert torch.equal(s, args[0] + args[1])


@pytest.mark.parametrize("n", [65536, 36872])
@pytest.mark.parametrize("dtype", CLUSTER_DTYPES)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "fused_add_layer_norm"])
def test_cluster_rows_bitwise_repeat(n, dtype, op):
    """Cluster reductions add in rank order: outputs and gradients bitwise equal run to run."""
    from test_determinism import _assert_bitwise, _inputs, _run

    x, w, b, dy = _inputs((64, n), (n,), dtype, "cuda")
    first = _run(x, (n,), w, b, dy, op)
    for rep in range(3):
        _assert_bitwise(first, _run(x, (n,), w, b, dy, op), f"{op} run {rep}")


def _assert_knob_keeps_bits(tmp_path, script, knob, what):
    """Runs `script` (which saves {key: [tensors]} to argv[1]) in a fresh process with the
    environment knob set to 0 and to 1 (read once a process), and asserts the two runs' tensors
    equal bit for bit."""
    import os
    import subprocess
    import sys

    res = {}
    for value in ("0", "1"):
        path = tmp_path / f"{knob}{value}.pt"
        subprocess.run([sys.executable, "-c", script, str(path)], env=dict(os.environ, **{knob: value}), check=True)
        res[value] = torch.load(path)
    assert res["0"].keys() == res["1"].keys()
    for key, outs in res["0"].items():
        assert len(outs) == len(res["1"][key]), key
        for i, (a, b) in enumerate(zip(outs, res["1"][key])):
            assert torch.equal(a, b), f"{key} output {i}: {what} with {knob}=0 and 1"


_STAGED_SCRIPT = r"""
import sys, torch, fastln
out = {}
for name in ("bfloat16", "float16", "float32"):
    dt = getattr(torch, name)
    # Rows split over 2 CTAs of 512 threads by both kernels (16-bit 32768 is one CTA a row: not
    # staged; fp32 65536 is staged over 8 CTAs, the register kernel's over 4).
    for n in (65536,) if name != "float32" else (32768,):
        g = torch.Generator(device="cuda").manual_seed(n)
        x = (torch.randn(300, n, device="cuda", generator=g) + 4).to(dt)
        w, b = (torch.randn(n, device="cuda", generator=g).to(dt) for _ in range(2))
        out[f"{name} {n} layer"] = torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5)
        out[f"{name} {n} rms"] = torch.ops.fastln.rms_norm_fwd(x, (n,), w, 1e-6)
torch.save({k: [t.cpu() for t in v] for k, v in out.items()}, sys.argv[1])
"""


def test_staged_forward_matches_register_kernel(tmp_path):
    """Long rows' forward on sm_90 stages each CTA's slice in shared memory, loaded by the TMA unit
    into buffers used in turn (fwd_staged_kernel); its threads add in fwd_reg_kernel's order, so
    output, mean and rstd are the register kernel's bit for bit (FASTLN_CUDA_FWD_STAGED=0 runs
    that one). 300 rows: every cluster of the persistent grid takes several, so each buffer is
    refilled. Rows whose slices differ between the two add in another order (fp32 65536: 8 staged
    CTAs, 4 register ones; N = 36872: 512 against 320 threads): test_long_rows_parity judges them."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("thread-block clusters need sm_90")
    _assert_knob_keeps_bits(tmp_path, _STAGED_SCRIPT, "FASTLN_CUDA_FWD_STAGED", "the forward differs")


_PDL_SCRIPT = r"""
import sys, torch, fastln
out = {}
masks = ([True] * 3, [True, True, False], [False, False, True])
for name, m, n in (("bfloat16", 301, 65536), ("float16", 4096, 1024), ("float32", 700, 8192), ("bfloat16", 3000, 256),
                   ("float16", 2000, 12288)):
    dt = getattr(torch, name)
    g = torch.Generator(device="cuda").manual_seed(n)
    x, dy = ((torch.randn(m, n, device="cuda", generator=g) + 2).to(dt) for _ in range(2))
    w, b = (torch.randn(n, device="cuda", generator=g).to(dt) for _ in range(2))
    _, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5)
    for mask in masks:
        grads = torch.ops.fastln.layer_norm_bwd(dy, x, (n,), mean, rstd, w, b, mask)
        out[f"{name} {m}x{n} {mask}"] = [t for t in grads if t is not None]
    out[f"{name} {m}x{n} rms"] = torch.ops.fastln.rms_norm_bwd(dy, x, (n,), rstd, w, [True] * 2)
torch.save({k: [t.cpu() for t in v] for k, v in out.items()}, sys.argv[1])
"""


def test_early_partial_reduction_matches_serial(tmp_path):
    """On sm_90 the dgamma/dbeta reduction is launched while the backward's row kernel still runs
    (programmatic dependent launch) and waits on the device for the partials; FASTLN_CUDA_PDL=0
    launches it after that kernel. Both must give the same bits: a reduction that did not wait
    would read partials not yet written. Rows over clusters (bf16 65536, fp16 12288), a small
    problem (4096 x 1024), the staged fp32 backward (8192), several rows a CTA (256); with dgamma
    or dbeta alone, and RMSNorm."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("programmatic dependent launch needs sm_90")
    _assert_knob_keeps_bits(tmp_path, _PDL_SCRIPT, "FASTLN_CUDA_PDL", "the backward differs")


# 16-bit rows whose backward clusters take two rows an iteration (cuda/layer_norm.cu, bwd_config
# and bwd_launch_plan: clusters of 2, 4 and 8 at 16384, 32768 and 65536). 301 rows: odd (the
# last iteration has one row), and more than one iteration for some clusters on an H100.
TWO_ROW_NS = [16384, 32768, 65536]


@pytest.mark.parametrize("n", TWO_ROW_NS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("norm,affine", [("layer", "both"), ("layer", "none"), ("rms", "weight"), ("rms", "none")])
def test_two_rows_an_iteration(n, dtype, norm, affine):
    """Parity against torch and the float64 reference; gradients bitwise equal run to run; each
    row's grad_input bitwise what the row alone gives (the other row of its iteration, or none,
    changes only the column sums' order)."""
    from test_layer_norm import check_parity, forward_backward, make_inputs
    from test_rms_norm import RMS_FNS

    m = 301
    offset = 4.0 if norm == "layer" else 0.0
    x, w, b, dy = make_inputs((m, n), (n,), dtype, "cuda", affine, seed=n % 89, offset=offset)
    fns, eps = ((fastln.layer_norm, F.layer_norm, ref_layer_norm), 1e-5) if norm == "layer" else (RMS_FNS, 1e-6)
    check_parity(x, (n,), w, b, dy, dtype, eps=eps, fns=fns)
    first = forward_backward(fns[0], x, (n,), w, b, dy, eps)
    again = forward_backward(fns[0], x, (n,), w, b, dy, eps)
    for i, (f, a) in enumerate(zip(first, again)):
        assert torch.equal(f, a), f"output {i} differs between runs"
    for i in (0, 1, m - 2, m - 1):
        alone = forward_backward(fns[0], x[i:i + 1], (n,), w, b, dy[i:i + 1], eps)[1]
        assert torch.equal(first[1][i:i + 1], alone), f"grad_input of row {i}"


# fp32 rows whose backward is staged in shared memory on sm_90 (cuda/layer_norm.cu,
# bwd_staged_plan): one CTA a row at 1024 and 8192 (the first capped to 16 warps a SM for this M),
# clusters of 2 at 12288 and 8 at 65536. M gives every CTA (cluster) of an H100 seven rows or
# more, so each of the three buffers and four exchange slots is reused.
STAGED_BWD_SHAPES = [(4000, 1024), (1000, 8192), (500, 12288), (301, 65536)]


@pytest.mark.parametrize("m,n", STAGED_BWD_SHAPES)
@pytest.mark.parametrize("norm,affine", [("layer", "both"), ("layer", "none"), ("rms", "weight"), ("rms", "none")])
def test_staged_backward(m, n, norm, affine):
    """Parity against torch and the float64 reference; gradients bitwise equal run to run; a
    row's grad_input bitwise what the row alone gives (its sums are its own, pipelined or not)."""
    from test_layer_norm import check_parity, forward_backward, make_inputs
    from test_rms_norm import RMS_FNS

    offset = 4.0 if norm == "layer" else 0.0
    x, w, b, dy = make_inputs((m, n), (n,), torch.float32, "cuda", affine, seed=n % 97, offset=offset)
    fns, eps = ((fastln.layer_norm, F.layer_norm, ref_layer_norm), 1e-5) if norm == "layer" else (RMS_FNS, 1e-6)
    check_parity(x, (n,), w, b, dy, torch.float32, eps=eps, fns=fns)
    first = forward_backward(fns[0], x, (n,), w, b, dy, eps)
    again = forward_backward(fns[0], x, (n,), w, b, dy, eps)
    for i, (f, a) in enumerate(zip(first, again)):
        assert torch.equal(f, a), f"output {i} differs between runs"
    for i in (0, 1, m // 2, m - 1):
        alone = forward_backward(fns[0], x[i:i + 1], (n,), w, b, dy[i:i + 1], eps)[1]
        assert torch.equal(first[1][i:i + 1], alone), f"grad_input of row {i}"
