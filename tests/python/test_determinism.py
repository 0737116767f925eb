"""Bitwise reproducibility: output and every gradient are identical run to run and whatever
the number of threads (fixed row blocks, fixed-order reduction of the partial sums)."""
import pytest
import torch

import fastln


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(1000, 1024), (4099, 33), (37, 16384), (3, 5, 7)])
def test_bitwise_identical_across_thread_counts(dtype, shape, restore_threads):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g).to(dtype) * 3 + 1
    N = shape[-1]
    w = torch.randn(N, generator=g).to(dtype)
    b = torch.randn(N, generator=g).to(dtype)
    dy = torch.randn(shape, generator=g).to(dtype)

    def run():
        leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
        y = fastln.layer_norm(leaves[0], (N,), leaves[1], leaves[2])
        return [y.detach(), *torch.autograd.grad(y, leaves, dy)]

    results = {}
    for threads in (1, 2, 3, 4):
        torch.set_num_threads(threads)
        results[threads] = [run(), run()]
    ref = results[1][0]
    for threads, runs in results.items():
        for out in runs:
            for name, a, r in zip(("y", "dx", "dgamma", "dbeta"), out, ref):
                assert torch.equal(bits(a), bits(r)), f"{name} differs with {threads} threads"


def bits(t):
    """The tensor's bit patterns (so NaNs and signed zeros compare too)."""
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
