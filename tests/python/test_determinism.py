"""Determinism across torch.set_num_threads(1..4) on the CPU (repeated runs of every op, on the
CPU and CUDA: test_ops_table.py) (the backward's column sums use a fixed row-block
plan that depends on the shape alone, never on the thread count)."""
import pytest
import torch

import fastln

SHAPES = [  # (input shape, normalized_shape): one row, few rows, many rows, 3-D, wide rows
    ((1, 4099), (4099,)), ((7, 300), (300,)), ((4096, 256), (256,)), ((8, 33, 96), (33, 96)),
    ((3, 70000), (70000,)), ((20000, 3), (3,)),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _run(x, nshape, w, b, dy):
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    y = fastln.layer_norm(leaves[0], nshape, leaves[1], leaves[2], 1e-5)
    return [y.detach(), *torch.autograd.grad(y, leaves, dy)]


def _inputs(shape, nshape, dtype, device, param_dtype=None):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * 3 + 1).to(device, dtype)
    pd = param_dtype or dtype
    w = (1 + torch.randn(nshape, generator=g)).to(device, pd)
    b = torch.randn(nshape, generator=g).to(device, pd)
    dy = torch.randn(shape, generator=g).to(device, dtype)
    return x, w, b, dy


def _assert_bitwise(a, b, what):
    for i, (s, t) in enumerate(zip(a, b)):
        # view as integers: NaN payloads and -0.0 count too
        assert s.dtype == t.dtype and s.shape == t.shape, what
        assert torch.equal(s.view(-1).view(torch.uint8), t.view(-1).view(torch.uint8)), f"{what}: result {i} differs"


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,nshape", SHAPES)
def test_cpu_threads_bitwise(shape, nshape, dtype, restore_threads):
    x, w, b, dy = _inputs(shape, nshape, dtype, "cpu")
    torch.set_num_threads(1)
    first = _run(x, nshape, w, b, dy)
    _assert_bitwise(first, _run(x, nshape, w, b, dy), "repeat, 1 thread")
    for n in (2, 3, 4):
        torch.set_num_threads(n)
        for rep in range(2):
            _assert_bitwise(first, _run(x, nshape, w, b, dy), f"{n} threads, run {rep}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_threads_bitwise_mixed(dtype, restore_threads):
    x, w, b, dy = _inputs((2048, 384), (384,), dtype, "cpu", param_dtype=torch.float32)
    torch.set_num_threads(1)
    first = _run(x, (384,), w, b, dy)
    for n in (2, 3, 4):
        torch.set_num_threads(n)
        _assert_bitwise(first, _run(x, (384,), w, b, dy), f"{n} threads")
