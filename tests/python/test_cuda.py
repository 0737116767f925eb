"""CUDA-only behaviour: CUDA graph capture of forward and backward, the memory-efficient
LayerNorm, and the statistics of empty rows as the CPU op gives them. Parity and determinism of
every op on CUDA are in test_ops_table (the op table's samples, and the sizes of the kernels'
plans: test_cuda_parity, test_cuda_determinism), more than 2^32 elements in test_huge."""

import contextlib
import re

import pytest
import torch
import torch.nn.functional as F

import fastln
import op_table
from conftest import assert_close_to_ref, ref_layer_norm, ref_rms_norm

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


# Long rows: on sm_90 each row is split over a thread-block cluster (cuda/launch_plan.cpp,
# fwd_config / bwd_config): forward above 16384 elements, backward where a row's column sums
# pass 64 KB. 36872 = 8 * 4609: slices of unequal size (e.g. bf16 backward, 8 CTAs of 577 and
# 570 vectors; fp32 forward, 4 CTAs of 2305 and 2304). 65544 = 8 * 8193: the fp32 forward over 8
# CTAs of unequal slices (2049 and 2048 vectors; staged_cluster keeps 36872 at 4). 96 rows: the
# persistent backward grid gives some clusters several rows.
CLUSTER_NS = [32768, 65536, 36872, 65544]
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


@pytest.mark.parametrize("n", CLUSTER_NS + [24576, 49152])  # 24576, 49152: the staged backward (below)
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
    """The fused residual add forward (and its backward) on long rows, against the float64
    reference (the op table's: test_ops_table), and the sum bitwise x + r."""
    from test_ops_table import _check_parity

    entry = op_table.BY_NAME[f"fused_add_{norm}_norm"]
    s = next(entry.samples("cpu", dtype, True, shapes=[((24, n), (n,))]))  # weight (and bias), offset 0
    _check_parity(entry, s, "cuda")
    x, r = (t.detach().cuda() for t in s.args[:2])
    _, total = entry(s.to("cuda"))
    assert torch.equal(total, x + r)


@pytest.mark.parametrize("n", [65536, 36872])
@pytest.mark.parametrize("dtype", CLUSTER_DTYPES)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "fused_add_layer_norm"])
def test_cluster_rows_bitwise_repeat(n, dtype, op):
    """Cluster reductions add in rank order: outputs and gradients bitwise equal run to run."""
    from test_ops_table import _assert_bitwise, _outputs_and_grads

    entry = op_table.BY_NAME[op]
    s = next(entry.samples("cpu", dtype, True, shapes=[((64, n), (n,))])).to("cuda")
    first = _outputs_and_grads(entry, s.clone())
    for rep in range(3):
        _assert_bitwise(first, _outputs_and_grads(entry, s.clone()), f"{op} run {rep}")


@contextlib.contextmanager
def plan_overrides(**overrides):
    """The CUDA launch plans' overrides (cuda/launch_plan.h, process-wide) for the block."""
    before = fastln._C.cuda_plan_overrides(overrides)
    try:
        yield
    finally:
        fastln._C.cuda_plan_overrides(before)


def _assert_override_keeps_bits(run, what, base=None, **overrides):
    """Runs `run` (which returns {key: [tensors]}) with the plans' defaults (or the overrides
    `base`) and with `overrides` added, and asserts the two runs' tensors equal bit for bit."""
    res = {}
    base = base or {}
    for name in ("default", "override"):
        with plan_overrides(**(base if name == "default" else {**base, **overrides})):
            res[name] = run()
        torch.cuda.synchronize()
    assert res["default"].keys() == res["override"].keys()
    for key, outs in res["default"].items():
        assert len(outs) == len(res["override"][key]), key
        for i, (a, b) in enumerate(zip(outs, res["override"][key])):
            assert torch.equal(a, b), f"{key} output {i}: {what} with {overrides}"


def _staged_outputs():
    out = {}
    for name in ("bfloat16", "float16", "float32"):
        dt = getattr(torch, name)
        # Rows split over 2 CTAs of 512 threads by both kernels (16-bit 32768 is one CTA a row: not
        # staged; fp32 65536 is staged over 8 CTAs, the register kernel's over 4).
        for n in (65536,) if name != "float32" else (32768,):
            g = torch.Generator(device="cuda").manual_seed(n)
            x = (torch.randn(300, n, device="cuda", generator=g) + 4).to(dt)
            w, b = (torch.randn(n, device="cuda", generator=g).to(dt) for _ in range(2))
            out[f"{name} {n} layer"] = list(torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5))
            out[f"{name} {n} rms"] = list(torch.ops.fastln.rms_norm_fwd(x, (n,), w, 1e-6))
    return out


def test_staged_forward_matches_register_kernel():
    """Long rows' forward on sm_90 stages each CTA's slice in shared memory, loaded by the TMA unit
    into buffers used in turn (fwd_staged_kernel); its threads add in fwd_reg_kernel's order, so
    output, mean and rstd are the register kernel's bit for bit (the override fwd_staged=False
    runs that one). 300 rows: every cluster of the persistent grid takes several, so each buffer is
    refilled. Rows whose slices differ between the two add in another order (fp32 65536: 8 staged
    CTAs, 4 register ones; N = 36872: 512 against 320 threads): test_long_rows_parity judges them."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("thread-block clusters need sm_90")
    _assert_override_keeps_bits(_staged_outputs, "the forward differs", fwd_staged=False)


def _hoist_outputs():
    out = {}
    # One-CTA rows of 4 vectors a thread (the plans' choice at these N; test_forward_hoist_keeps_bits
    # forces 1 and 2), several rows a CTA (bf16 256 and fp16 1024: 999 rows leave the last CTA part
    # empty), with and without weight and bias, the weight offset, the residual adds.
    for name, m, n in (("bfloat16", 300, 4096), ("float16", 1000, 2048), ("float32", 257, 1024),
                       ("float32", 64, 4096), ("bfloat16", 130, 8192), ("bfloat16", 999, 256),
                       ("float16", 999, 1024)):
        dt = getattr(torch, name)
        g = torch.Generator(device="cuda").manual_seed(n)
        x = (torch.randn(m, n, device="cuda", generator=g) + 3).to(dt)
        w, b = (torch.randn(n, device="cuda", generator=g).to(dt) for _ in range(2))
        for key, (wt, bt) in {"both": (w, b), "none": (None, None), "fp32": (w.float(), b.float())}.items():
            out[f"{name} {m}x{n} layer {key}"] = list(torch.ops.fastln.layer_norm_fwd(x, (n,), wt, bt, 1e-5))
            out[f"{name} {m}x{n} rms {key}"] = list(torch.ops.fastln.rms_norm_fwd(x, (n,), wt, 1e-6))
        out[f"{name} {m}x{n} layer offset"] = list(torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5, 1.0))
        out[f"{name} {m}x{n} rms offset"] = list(torch.ops.fastln.rms_norm_fwd(x, (n,), w, 1e-6, 1.0))
        r = torch.randn(m, n, device="cuda", generator=g).to(dt)  # the fused residual adds
        out[f"{name} {m}x{n} add layer"] = list(fastln.fused_add_layer_norm(x, r, (n,), w, b))
        out[f"{name} {m}x{n} add rms"] = list(fastln.fused_add_rms_norm(x, r, (n,), w, 1e-6))
    return out


def test_forward_hoist_keeps_bits():
    """HOIST loads a one-CTA row's parameters before its stores (fwd_reg_kernel; by default for
    16-bit rows and parameters without the residual add, fwd_hoist=1 everywhere, 0 nowhere): only
    the order of loads and stores changes, so every output, mean and rstd is the same bit for bit."""
    _assert_override_keeps_bits(_hoist_outputs, "the forward differs", fwd_hoist=0)
    _assert_override_keeps_bits(_hoist_outputs, "the forward differs", fwd_hoist=1)
    for nv in (1, 2):  # 1 and 2 vectors a thread: rows a CTA of > 128 vectors, and bf16 999x256's short rows
        _assert_override_keeps_bits(_hoist_outputs, "the forward differs", base={"fwd_nv": nv, "fwd_hoist": 0},
                                    fwd_hoist=1)


def _persist_outputs():
    out = _staged_outputs()
    # fp32 49152: clusters of 4 either way, the persistent grid on 120 of 132 SMs (so the
    # heuristics take a cluster a row there)
    g = torch.Generator(device="cuda").manual_seed(49152)
    x = torch.randn(300, 49152, device="cuda", generator=g) + 4
    w, b = (torch.randn(49152, device="cuda", generator=g) for _ in range(2))
    out["float32 49152 layer"] = list(torch.ops.fastln.layer_norm_fwd(x, (49152,), w, b, 1e-5))
    out["float32 49152 rms"] = list(torch.ops.fastln.rms_norm_fwd(x, (49152,), w, 1e-6))
    return out


def test_forward_one_row_a_cluster_keeps_bits():
    """fwd_persist=0 launches the staged forward a cluster a row (M * CL CTAs, one buffer, the
    parameters read at the stores: fwd_staged_kernel ONE_ROW), fwd_persist=1 the persistent grid;
    the heuristics (-1) take one or the other. Where both take the same cluster size (these rows: 2
    CTAs, and 4 at fp32 49152), the slices and the order of addition are the same, so every output,
    mean and rstd is the same bit for bit."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("thread-block clusters need sm_90")
    _assert_override_keeps_bits(_persist_outputs, "the forward differs", base={"fwd_persist": 1}, fwd_persist=0)


def test_staged_forward_rows_alone_keep_bits():
    """The heuristics choose the staged forward's grid by M (fp32 49152: a cluster a row for 300
    rows, the persistent grid for one), never its cluster size: a row's output, mean and rstd are
    what the row alone gives."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("thread-block clusters need sm_90")
    for n in (49152, 65536):
        g = torch.Generator(device="cuda").manual_seed(n)
        x = torch.randn(300, n, device="cuda", generator=g) + 4
        w, b = (torch.randn(n, device="cuda", generator=g) for _ in range(2))
        many = torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5)
        for i in (0, 137, 299):
            alone = torch.ops.fastln.layer_norm_fwd(x[i:i + 1], (n,), w, b, 1e-5)
            for k, (a, o) in enumerate(zip(many, alone)):
                assert torch.equal(a[i:i + 1], o), f"N = {n}, row {i}: output {k} differs from the row alone"


# Rows the staged forward takes (on sm_90), a cluster a row under fwd_persist=0: fp32 at the
# config's cluster where the persistent grid doubles it (65536: 4 against 8 CTAs), 16-bit 49152
# (3 vectors a thread for some), rows that are not a multiple of the slices (36872, 65544).
@pytest.mark.parametrize("dtype,n", [(torch.float32, 20000), (torch.float32, 49152), (torch.float32, 65536),
                                     (torch.float32, 36872), (torch.bfloat16, 49152), (torch.float16, 65544)])
@pytest.mark.parametrize("norm,affine", [("layer", "both"), ("layer", "none"), ("rms", "weight")])
def test_forward_one_row_a_cluster_parity(dtype, n, norm, affine):
    from test_layer_norm import check_parity, make_inputs
    from test_rms_norm import RMS_FNS

    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("thread-block clusters need sm_90")
    x, w, b, dy = make_inputs((150, n), (n,), dtype, "cuda", affine, seed=n % 97, offset=4.0 if norm == "layer" else 0.0)
    with plan_overrides(fwd_persist=0):
        if norm == "layer":
            check_parity(x, (n,), w, b, dy, dtype)
        else:
            check_parity(x, (n,), w, None, dy, dtype, eps=1e-6, fns=RMS_FNS)


def _pdl_outputs():
    out = {}
    masks = ([True] * 3, [True, True, False], [False, False, True])
    for name, m, n in (("bfloat16", 301, 65536), ("float16", 4096, 1024), ("float32", 700, 8192),
                       ("bfloat16", 3000, 256), ("float16", 2000, 12288)):
        dt = getattr(torch, name)
        g = torch.Generator(device="cuda").manual_seed(n)
        x, dy = ((torch.randn(m, n, device="cuda", generator=g) + 2).to(dt) for _ in range(2))
        w, b = (torch.randn(n, device="cuda", generator=g).to(dt) for _ in range(2))
        _, mean, rstd = torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5)
        for mask in masks:
            grads = torch.ops.fastln.layer_norm_bwd(dy, x, (n,), mean, rstd, w, b, mask)
            out[f"{name} {m}x{n} {mask}"] = [t for t in grads if t is not None]
        out[f"{name} {m}x{n} rms"] = list(torch.ops.fastln.rms_norm_bwd(dy, x, (n,), rstd, w, [True] * 2))
    return out


def test_early_partial_reduction_matches_serial():
    """On sm_90 the dgamma/dbeta reduction is launched while the backward's row kernel still runs
    (programmatic dependent launch) and waits on the device for the partials; the override
    pdl=False launches it after that kernel. Both must give the same bits: a reduction that did
    not wait would read partials not yet written. Rows over clusters (bf16 65536, fp16 12288), a
    small problem (4096 x 1024), the staged fp32 backward (8192), several rows a CTA (256); with
    dgamma or dbeta alone, and RMSNorm."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("programmatic dependent launch needs sm_90")
    _assert_override_keeps_bits(_pdl_outputs, "the backward differs", pdl=False)


def test_plan_overrides_round_trip():
    """_C.cuda_plan_overrides sets the keys it names (the others to their defaults), returns those
    in force before, and refuses unknown keys."""
    defaults = fastln._C.cuda_plan_overrides()
    assert defaults == {"cluster_fwd": 0, "cluster_bwd": 0, "partial_cluster": 0, "fwd_staged": True,
                        "bwd_staged": -1, "bwd_two_rows": True, "pdl": True, "fwd_nv": 0, "fwd_block": 0,
                        "fwd_hoist": -1, "fwd_persist": -1, "bwd_staged_nv": 0, "slice_align": 2,
                        "bwd_lines": -1}
    # the benchmark's --plans parser casts these keys to bool: the same as the extension's bools
    from fastln import benchmark as B

    assert {k for k, v in defaults.items() if isinstance(v, bool)} == set(B.PLAN_BOOLS)
    with plan_overrides(cluster_bwd=2, pdl=False):
        assert fastln._C.cuda_plan_overrides() == {**defaults, "cluster_bwd": 2, "pdl": False}
    assert fastln._C.cuda_plan_overrides() == defaults
    with pytest.raises(KeyError):
        fastln._C.cuda_plan_overrides({"cluster": 2})
    assert fastln._C.cuda_plan_overrides() == defaults
    for bad in (0, 3, 16):  # the slices' multiple: a power of two up to 8 (launch_plan.h, slice_vectors)
        with pytest.raises(ValueError, match="slice_align"):
            fastln._C.cuda_plan_overrides({"slice_align": bad})
        assert fastln._C.cuda_plan_overrides() == defaults
    for bad in (-2, 2):
        with pytest.raises(ValueError, match="bwd_lines"):
            fastln._C.cuda_plan_overrides({"bwd_lines": bad})
        assert fastln._C.cuda_plan_overrides() == defaults


# 16-bit rows whose backward clusters take two rows an iteration (cuda/launch_plan.cpp, bwd_config
# and bwd_reg_launch: clusters of 2, 4 and 8 at 16384, 32768 and 65536). 301 rows: odd (the
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


# The forward's geometry overrides (fwd_nv: vectors a thread, of one-CTA rows and of short rows where
# a row keeps <= 32 threads; fwd_block: the CTA of several short rows), which the benchmark sweeps:
# every value a plan may take must stay correct.
@pytest.mark.parametrize("overrides", [{"fwd_nv": 1}, {"fwd_nv": 2}, {"fwd_nv": 8}, {"fwd_nv": 16},
                                       {"fwd_block": 32}, {"fwd_block": 64}, {"fwd_block": 128},
                                       {"fwd_block": 512}, {"fwd_nv": 2, "fwd_block": 128}])
@pytest.mark.parametrize("dtype,m,n", [(torch.bfloat16, 300, 4096), (torch.float32, 257, 1024),
                                       (torch.float16, 1000, 1024), (torch.bfloat16, 999, 256),
                                       (torch.float32, 64, 8192), (torch.float16, 701, 512),
                                       (torch.bfloat16, 300, 128)])
@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_forward_geometry_overrides_parity(overrides, dtype, m, n, norm):
    from test_layer_norm import check_parity, make_inputs
    from test_rms_norm import RMS_FNS

    x, w, b, dy = make_inputs((m, n), (n,), dtype, "cuda", "both", seed=n % 97, offset=4.0 if norm == "layer" else 0.0)
    with plan_overrides(**overrides):
        if norm == "layer":
            check_parity(x, (n,), w, b, dy, dtype)
        else:
            check_parity(x, (n,), w, None, dy, dtype, eps=1e-6, fns=RMS_FNS)


# Rows whose backward is staged in shared memory on sm_90 (cuda/launch_plan.cpp,
# bwd_staged_launch): fp32, one CTA a row at 1024 and 8192 (the first capped to 16 warps a SM for
# this M), clusters of 2 at 12288 and 8 at 65536; 16-bit rows where the register kernel would keep
# at most 12 warps a SM, or 15 over clusters of 8 (bwd_reg_launch): 24576 in clusters of 2, 40960,
# 49152 and 57344 of 8, 4 vectors a thread. M gives every CTA (cluster)
# of an H100 several rows, so each of the three buffers and four exchange slots is reused.
STAGED_BWD_CASES = [(4000, 1024, torch.float32), (1000, 8192, torch.float32), (500, 12288, torch.float32),
                    (301, 65536, torch.float32), (500, 24576, torch.bfloat16), (301, 49152, torch.bfloat16),
                    (500, 24576, torch.float16), (301, 49152, torch.float16),
                    (301, 40960, torch.bfloat16), (300, 57344, torch.float16)]  # staged over 8 since session 27


@pytest.mark.parametrize("m,n,dtype", STAGED_BWD_CASES, ids=str)
@pytest.mark.parametrize("norm,affine", [("layer", "both"), ("layer", "none"), ("rms", "weight"), ("rms", "none")])
def test_staged_backward(m, n, dtype, norm, affine):
    """Parity against torch and the float64 reference; gradients bitwise equal run to run; a
    row's grad_input bitwise what the row alone gives (its sums are its own, pipelined or not)."""
    _check_staged_backward(m, n, dtype, norm, affine)


# The 16-bit staged backward takes 4 vectors a thread (bwd_staged_nv's rule; test_staged_backward
# runs it); bwd_staged_nv=2 keeps the kernel of 2 in twice the threads. Both, at the rows it takes
# by default and, forced (bwd_staged=1), at 20000 and 65536.
@pytest.mark.parametrize("m,n,dtype", [c for c in STAGED_BWD_CASES if c[2] != torch.float32]
                         + [(301, 20000, torch.bfloat16), (301, 65536, torch.float16)], ids=str)
@pytest.mark.parametrize("norm,affine", [("layer", "both"), ("layer", "none"), ("rms", "weight")])
def test_staged_backward_vectors_a_thread(m, n, dtype, norm, affine):
    """As test_staged_backward under bwd_staged_nv=2 (and at the forced rows, 4); dgamma and dbeta
    are the same bits with 2 and 4 vectors a thread (the same slices and rows a CTA: each column's
    sum in the same order)."""
    from test_layer_norm import forward_backward, make_inputs
    from test_rms_norm import RMS_FNS

    x, w, b, dy = make_inputs((m, n), (n,), dtype, "cuda", affine, seed=n % 97, offset=4.0 if norm == "layer" else 0.0)
    fn, eps = (fastln.layer_norm, 1e-5) if norm == "layer" else (RMS_FNS[0], 1e-6)
    forced = {} if n in (24576, 40960, 49152, 57344) else {"bwd_staged": 1}
    grads = {}
    for nv in (2, 4):
        with plan_overrides(**forced, bwd_staged_nv=nv):
            if nv == 2 or forced:
                _check_staged_backward(m, n, dtype, norm, affine)
            grads[nv] = forward_backward(fn, x, (n,), w, b, dy, eps)
    for i in range(2, len(grads[2])):  # dgamma, dbeta
        assert torch.equal(grads[2][i], grads[4][i]), f"parameter gradient {i - 2} differs"


def _at_lead(t, lead):
    """t's values in a fresh buffer, lead elements from its start (its storage_offset)."""
    buf = torch.empty(lead + t.numel(), dtype=t.dtype, device=t.device)
    out = buf[lead:].view(t.shape)
    out.copy_(t)
    return out


def _check_staged_backward(m, n, dtype, norm, affine, lead=0):
    from test_layer_norm import check_parity, forward_backward, make_inputs
    from test_rms_norm import RMS_FNS

    offset = 4.0 if norm == "layer" else 0.0
    x, w, b, dy = make_inputs((m, n), (n,), dtype, "cuda", affine, seed=n % 97, offset=offset)
    if lead:  # x and dy start lead elements into their buffers (16-byte vectors kept)
        x, dy = _at_lead(x, lead), _at_lead(dy, lead)
    fns, eps = ((fastln.layer_norm, F.layer_norm, ref_layer_norm), 1e-5) if norm == "layer" else (RMS_FNS, 1e-6)
    check_parity(x, (n,), w, b, dy, dtype, eps=eps, fns=fns)
    first = forward_backward(fns[0], x, (n,), w, b, dy, eps)
    again = forward_backward(fns[0], x, (n,), w, b, dy, eps)
    for i, (f, a) in enumerate(zip(first, again)):
        assert torch.equal(f, a), f"output {i} differs between runs"
    for i in (0, 1, m // 2, m - 1):
        alone = forward_backward(fns[0], x[i:i + 1], (n,), w, b, dy[i:i + 1], eps)[1]
        assert torch.equal(first[1][i:i + 1], alone), f"grad_input of row {i}"


# slice_align: the backward's cluster slices rounded up to 2 vectors (32-byte sectors; the default since
# session 29, which every other backward test here runs), to 8 (128-byte lines), or not rounded (1).
# N = 20000: 16-bit over 4 CTAs of 625 vectors (the register kernel, two rows an iteration), fp32
# staged over 8 of 625; 24576 (16-bit staged over 2, slices of 1536: the multiple changes nothing);
# and 16-bit 20000 forced over 8 CTAs of 313 vectors (rounded to 320 at 8, the last CTA's 260).
@pytest.mark.parametrize("m,n,dtype,forced", [(301, 20000, torch.bfloat16, {}), (300, 20000, torch.float16, {}),
                                              (301, 20000, torch.float32, {}), (500, 24576, torch.bfloat16, {}),
                                              (301, 20000, torch.bfloat16, {"cluster_bwd": 8})], ids=str)
@pytest.mark.parametrize("align", [1, 8])
@pytest.mark.parametrize("norm,affine", [("layer", "both"), ("rms", "weight")])
def test_slice_align_backward(m, n, dtype, forced, align, norm, affine):
    """Under slice_align: parity against torch and the float64 reference, gradients bitwise equal
    run to run, a row's grad_input bitwise what the row alone gives (_check_staged_backward)."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("cluster slices need sm_90")
    with plan_overrides(**forced, slice_align=align):
        _check_staged_backward(m, n, dtype, norm, affine)


# bwd_lines: the register backward's cluster slots shifted onto x's 128-byte lines (each
# iteration by the slice's start in its line, 0-7 vectors), rows paired by parity (cuda/backward.cuh,
# bwd_reg_kernel). 16-bit N = 20000 over 4 CTAs (slices of 626, two rows an iteration: starts 0,
# 2, 4, 6 vectors into a line, odd rows 4 more), 20032 (rows of whole lines), x and dy 8 or 24
# elements into their buffers (odd shifts), 7 rows (one iteration with a row past the end), over 8
# CTAs (slices of 314), and without dX (the column sums alone: not taken, no barrier a row).
@pytest.mark.parametrize("m,n,dtype,forced,lead", [
    (301, 20000, torch.bfloat16, {}, 0), (300, 20000, torch.float16, {}, 0), (301, 20032, torch.bfloat16, {}, 0),
    (301, 20000, torch.bfloat16, {}, 8), (7, 20000, torch.float16, {}, 24),
    (301, 20000, torch.bfloat16, {"cluster_bwd": 8}, 8)], ids=str)
@pytest.mark.parametrize("norm,affine", [("layer", "both"), ("rms", "weight")])
def test_bwd_lines_backward(m, n, dtype, forced, lead, norm, affine):
    """Under bwd_lines: parity against torch and the float64 reference, gradients bitwise equal
    run to run, a row's grad_input bitwise what the row alone gives at the same address (its
    pair's shift is its own here: two rows are a whole number of lines at 20000 and 20032; at
    e.g. 20008 they are not, and a row's sums follow its pair's first row)."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("cluster slices need sm_90")
    with plan_overrides(**forced, bwd_lines=1):
        _check_staged_backward(m, n, dtype, norm, affine, lead)


@pytest.mark.parametrize("dtype,n,offset,default,forced", [
    (torch.bfloat16, 20000, 0.0, True, True), (torch.float16, 20000, 0.0, True, True),
    (torch.float16, 19968, 0.0, False, True), (torch.bfloat16, 20008, 0.0, False, True),
    (torch.bfloat16, 20000, 1.0, False, True),
    (torch.bfloat16, 16384, 0.0, False, False)], ids=str)
def test_bwd_lines_launches_its_kernel(dtype, n, offset, default, forced):
    """bwd_lines launches the LINES instantiation where the plan takes it, and not under 0 (the
    kernels' names as the profiler reads them: bwd_reg_kernel<..., ROWS, LINES>). By default
    (-1) where some slice starts inside a 128-byte line (20000: slices of 626 vectors over 4 CTAs,
    rows of 312.5 lines), not where they all start on one (19968: 624 vectors, rows of 312
    lines), nor where the two rows of an iteration would start at different places in their
    lines (20008: two rows of 625.25 lines; a row's bits would follow its pair's shift), nor for
    the weight offset (its bits are the float32 weight's: the mixed kernels have no LINES); under 1 wherever the threads hold the slice and 7 vectors (20000: 640 slots for
    626), not where they hold it exactly (16384: 2 CTAs of 256 threads, 4 vectors each, slices
    of 1024)."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("cluster slices need sm_90")
    from test_layer_norm import make_inputs

    x, w, b, dy = make_inputs((301, n), (n,), dtype, "cuda", "both", seed=5, offset=4.0)
    xx = x.clone().requires_grad_()
    out = fastln.layer_norm(xx, (n,), w.requires_grad_(), b.requires_grad_(), 1e-5, weight_offset=offset)
    bwd = lambda: torch.autograd.grad(out, [xx, w, b], dy, retain_graph=True)  # noqa: E731
    for lines, want in ((-1, default), (0, False), (1, forced)):
        with plan_overrides(bwd_lines=lines):
            bwd()  # warm
            names = [m.group(1) for k in _cuda_launches(bwd) if (m := re.search(r"bwd_reg_kernel<.*, 2, (\w+)>\(", k))]
        assert names == ["true" if want else "false"], f"bwd_lines={lines}: {names}"


def test_bwd_lines_parameters_alone():
    """bwd_lines with x's gradient not wanted (weight and bias only): the plan never takes LINES
    without dX (no barrier would order the shifted slots' column sums from one iteration to the
    next), asked or not: the plain kernel launches (the profiler's names) and gives the same
    dgamma and dbeta."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("cluster slices need sm_90")
    from test_layer_norm import make_inputs

    n = 20000
    x, w, b, dy = make_inputs((301, n), (n,), torch.bfloat16, "cuda", "both", seed=3, offset=4.0)
    mean, rstd = torch.ops.fastln.layer_norm_fwd(x, (n,), w, b, 1e-5)[1:]
    bwd = lambda: torch.ops.fastln.layer_norm_bwd(dy, x, (n,), mean, rstd, w, b, [False, True, True])  # noqa: E731
    outs = []
    for lines in (0, 1):
        with plan_overrides(bwd_lines=lines):
            outs.append(bwd())
            names = [m.group(1) for k in _cuda_launches(bwd) if (m := re.search(r"bwd_reg_kernel<.*, 2, (\w+)>\(", k))]
        assert names == ["false"], f"bwd_lines={lines}: {names}"  # the plain two-row kernel, asked or not
    for k in (1, 2):
        assert torch.equal(outs[0][k], outs[1][k]), f"output {k}"


# Zero-centred gamma (weight_offset): y = xhat * (weight_offset + weight) + bias, the sum formed
# in float32 (float64 for float64 inputs), in every CUDA kernel that reads the weight. N: several
# rows a CTA (64), one CTA a row (4096), rows that sm_90 splits over clusters (20000: fp32
# forward and backward staged, 16-bit backward over 4 CTAs two rows an iteration; 65536: every
# dtype), and the fallback kernels (1001: no 16-byte vectors). Rows: an odd count, ~2M elements.
OFFSET_NS = [64, 4096, 20000, 65536, 1001]
# (input dtype, parameter dtype): mixed is 16-bit input with float32 weight and bias.
OFFSET_DTYPES = [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16), (torch.float32, torch.float32),
                 (torch.bfloat16, torch.float32), (torch.float16, torch.float32), (torch.float64, torch.float64)]
OFFSET_OPS = ["layer_norm", "rms_norm", "fused_add_layer_norm", "fused_add_rms_norm", "fused_add_layer_norm_fp32"]


def _offset_fns(op, offset):
    """(ours, reference) for op, each f(x, r, w, b) -> outputs (r: the fused adds' residual; the
    residual_in_fp32 variant takes it in float32). offset None: ours without the keyword. The
    reference, for float64 leaves, is the textbook formula with the weight offset + w."""
    kw = {} if offset is None else {"weight_offset": offset}
    eff = lambda w: None if w is None else (offset or 0.0) + w  # noqa: E731
    ns = lambda x: x.shape[-1:]  # noqa: E731
    if op == "layer_norm":
        return (lambda x, r, w, b: (fastln.layer_norm(x, ns(x), w, b, 1e-5, **kw),),
                lambda x, r, w, b: (ref_layer_norm(x, ns(x), eff(w), b, 1e-5),))
    if op == "rms_norm":
        return (lambda x, r, w, b: (fastln.rms_norm(x, ns(x), w, 1e-6, **kw),),
                lambda x, r, w, b: (ref_rms_norm(x, ns(x), eff(w), 1e-6),))
    if op.startswith("fused_add_layer_norm"):
        fp32 = op.endswith("_fp32")
        return (lambda x, r, w, b: fastln.fused_add_layer_norm(x, r, ns(x), w, b, 1e-5, residual_in_fp32=fp32, **kw),
                lambda x, r, w, b: (ref_layer_norm(x + r, ns(x), eff(w), b, 1e-5), x + r))
    assert op == "fused_add_rms_norm"
    return (lambda x, r, w, b: fastln.fused_add_rms_norm(x, r, ns(x), w, 1e-6, **kw),
            lambda x, r, w, b: (ref_rms_norm(x + r, ns(x), eff(w), 1e-6), x + r))


def _offset_inputs(op, m, n, dtype, pdtype, affine, seed):
    """x, r, w, b (a zero-centred weight: offset 1 makes it 1 + 0.5 randn, as make_inputs') and
    the outputs' upstream gradients, made in float64 and rounded to their dtypes."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    layer = "layer" in op
    x = (rnd(m, n) + (2.0 if layer else 0.0)).to("cuda", dtype)  # rows off zero: the mean's shift
    fused = op.startswith("fused")
    r = rnd(m, n).to("cuda", torch.float32 if op.endswith("_fp32") else dtype) if fused else None
    w = (0.5 * rnd(n)).to("cuda", pdtype) if affine in ("both", "weight") else None
    b = rnd(n).to("cuda", pdtype) if affine == "both" and layer else None
    dys = [rnd(m, n).to("cuda", dtype) for _ in range(2 if fused else 1)]
    return x, r, w, b, dys


def _offset_run(fn, x, r, w, b, dys):
    """(names, values): the outputs, then the gradients of those of x, r, w, b that are set."""
    leaves = {k: t.detach().requires_grad_() for k, t in zip("xrwb", (x, r, w, b)) if t is not None}
    outs = fn(*(leaves.get(k) for k in "xrwb"))
    grads = torch.autograd.grad(outs, list(leaves.values()), [d.to(o.dtype) for d, o in zip(dys, outs)])
    names = ["output", "residual_out"][:len(outs)] + [f"grad_{k}" for k in leaves]
    return names, [o.detach() for o in outs] + list(grads)


@pytest.mark.parametrize("n", OFFSET_NS)
@pytest.mark.parametrize("dtype,pdtype", OFFSET_DTYPES)
@pytest.mark.parametrize("op", OFFSET_OPS[:4])
def test_weight_offset_bits(op, dtype, pdtype, n):
    """Bit for bit, forward and backward: weight_offset=0 is the call without it (weights of -0.0
    stay -0.0); an offset without a weight is refused (ValueError); and, where the weight is
    float32 or float64 (the sum rounds as torch's; 16-bit input too), offset 1 with weight w is weight
    1 + w with no offset (the launcher forms that sum, or, for RMSNorm's offset of 1, the kernels:
    cuda/ops_cuda.cpp)."""
    m = (1 << 20) // n + 1
    x, r, w, b, dys = _offset_inputs(op, m, n, dtype, pdtype, "both", seed=7)
    w[::3] = -0.0
    plain, _ = _offset_fns(op, None)
    with pytest.raises(ValueError, match="weight_offset"):
        _offset_run(_offset_fns(op, 1.0)[0], x, r, None, b, dys)
    cases = [("offset 0", _offset_fns(op, 0.0)[0], w, w)]
    if pdtype in (torch.float32, torch.float64):
        cases.append(("offset 1", _offset_fns(op, 1.0)[0], w, 1.0 + w))
    for what, fn, weight, plain_weight in cases:
        names, a = _offset_run(fn, x, r, weight, b, dys)
        _, c = _offset_run(plain, x, r, plain_weight, b, dys)
        assert len(a) == len(c)
        for name, u, v in zip(names, a, c):
            assert torch.equal(u, v), f"{op} {what}: {name} differs"


def _cuda_launches(fn):
    """The kernels (and memsets, copies) fn() puts on the GPU, by name, in order."""
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


@pytest.mark.parametrize("dtype,pdtype", OFFSET_DTYPES[:5], ids=str)
@pytest.mark.parametrize("op", OFFSET_OPS[:4])
def test_weight_offset_one_costs_no_launch(op, dtype, pdtype):
    """weight_offset=1 with a weight of the input's dtype (Gemma) or float32 on 16-bit input (mixed
    precision), and LayerNorm's bias, runs in the norm kernels themselves (PlusOne parameters):
    forward and backward launch what the same call with the weight 1 + w and no offset launches,
    and no offset_params_kernel."""
    x, r, w, b, dys = _offset_inputs(op, 4096, 4096, dtype, pdtype, "both", seed=3)
    ours, plain = _offset_fns(op, 1.0)[0], _offset_fns(op, None)[0]
    w1 = (1.0 + w.float()).to(pdtype)
    for fn, weight in ((ours, w), (plain, w1)):
        _offset_run(fn, x, r, weight, b, dys)  # warm: the first call's allocations and plans
    got = _cuda_launches(lambda: _offset_run(ours, x, r, w, b, dys))
    want = _cuda_launches(lambda: _offset_run(plain, x, r, w1, b, dys))
    assert not any("offset_params" in k for k in got), got
    assert any("PlusOne" in k for k in got), got
    assert len(got) == len(want), (got, want)
