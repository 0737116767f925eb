"""The CPU output cache (src/cpp/torch/output_cache.cpp): outputs of 1 MB and more reuse the
blocks of freed outputs instead of page-faulting fresh memory. Reuse must never change a result
or hand out memory a live tensor holds, and the storage must behave like torch's own."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import fastln

from conftest import assert_close_to_ref, ref_layer_norm

M, N = 512, 1024  # 2 MB of float32: through the cache


def _leaves(*ts, dtype=None):
    return [t.to(dtype or t.dtype).requires_grad_() for t in ts]


def _x(seed, dtype=torch.float32):
    return torch.randn(M, N, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_freed_output_is_reused_and_fully_overwritten():
    y = fastln.layer_norm(_x(0), (N,))
    ptr = y.data_ptr()
    del y
    hits = fastln.output_cache_stats()["hits"]
    x = _x(1)
    y = fastln.layer_norm(x, (N,))
    assert y.data_ptr() == ptr
    assert fastln.output_cache_stats()["hits"] == hits + 1
    torch.testing.assert_close(y, F.layer_norm(x, (N,)))


def test_smaller_output_reuses_a_larger_block():
    y = fastln.layer_norm(_x(0), (N,))
    ptr = y.data_ptr()
    del y
    x = _x(1)[: M - M // 8]  # 7/8 of the size: fits the freed block
    y = fastln.layer_norm(x, (N,))
    assert y.data_ptr() == ptr
    torch.testing.assert_close(y, F.layer_norm(x, (N,)))
    del y
    y = fastln.layer_norm(_x(2)[: M // 2], (N,))  # half: a block of its own
    assert y.data_ptr() != ptr


def test_live_outputs_never_share_memory():
    ys = [fastln.layer_norm(_x(i), (N,)) for i in range(4)]
    assert len({y.data_ptr() for y in ys}) == 4
    for i, y in enumerate(ys):
        torch.testing.assert_close(y, F.layer_norm(_x(i), (N,)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_outputs_through_the_cache(dtype):
    w = torch.randn(N, dtype=dtype)
    b = torch.randn(N, dtype=dtype)
    for seed in range(3):  # later rounds reuse dx and the partial sums of earlier ones
        x = _x(seed, dtype)
        dy = _x(seed + 10, dtype)
        got, theirs, ref = (
            torch.autograd.grad(fn(leaves[0], (N,), *leaves[1:]), leaves, dy.to(leaves[0].dtype))
            for fn, leaves in [(fastln.layer_norm, _leaves(x, w, b)), (F.layer_norm, _leaves(x, w, b)),
                               (ref_layer_norm, _leaves(x, w, b, dtype=torch.float64))])
        for what, o, t, r in zip(("dx", "dgamma", "dbeta"), got, theirs, ref):
            assert_close_to_ref(o, r, t, dtype, what)


def test_storage_resizes_and_shares_like_torchs():
    x = _x(2)
    y = fastln.layer_norm(x, (N,))
    before = y.clone()
    y.resize_(2 * M, N)  # grows through the cache's allocate, keeping the old contents
    assert torch.equal(y[:M], before)
    y.share_memory_()
    assert y.is_shared() and torch.equal(y[:M], before)
    a = y.numpy()  # a view of the same memory, not a copy (the grown half is uninitialized)
    assert a.ctypes.data == y.data_ptr() and torch.equal(torch.from_numpy(a[:M]), before)


def test_empty_output_cache_returns_idle_blocks():
    y = fastln.layer_norm(_x(3), (N,))
    del y
    cached = fastln.output_cache_stats()["cached_bytes"]
    assert cached >= M * N * 4
    assert fastln.empty_output_cache() == cached
    assert fastln.output_cache_stats()["cached_bytes"] == 0
    torch.testing.assert_close(fastln.layer_norm(_x(3), (N,)), F.layer_norm(_x(3), (N,)))


def _run(code, **env):
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


CHURN = f"""
import torch, fastln
xs = [torch.randn({M}, {N}), torch.randn({M}, 4 * {N})]  # 2 MB and 8 MB outputs
for x in xs * 3:
    fastln.layer_norm(x, (x.shape[1],))
s = fastln.output_cache_stats()
print(s["cached_bytes"], s["limit_bytes"], s["hits"])
"""


def test_limit_bounds_idle_memory():
    cached, limit, hits = map(int, _run(CHURN, FASTLN_CPU_CACHE_MB="5").split())
    # The 2 MB block is kept and reused; the 8 MB ones, over the limit alone, are not kept.
    assert (cached, limit, hits) == (2 << 20, 5 << 20, 2)


def test_zero_limit_turns_the_cache_off():
    cached, limit, hits = map(int, _run(CHURN, FASTLN_CPU_CACHE_MB="0").split())
    assert (cached, limit, hits) == (0, 0, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_allocates():
    y = fastln.layer_norm(_x(4), (N,))
    del y  # a cached block, inherited by the child
    pid = os.fork()
    if pid == 0:
        torch.set_num_threads(1)  # OpenMP cannot run a parallel region in a forked child (torch's too)
        ok = torch.allclose(fastln.layer_norm(_x(5), (N,)), F.layer_norm(_x(5), (N,)), atol=1e-5)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
