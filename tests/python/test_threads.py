"""Thread safety: concurrent calls from several Python threads give the results of a
sequential run, bitwise (fastln is deterministic), forward and backward."""
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

import fastln

SHAPES = [((64, 512), (512,)), ((3, 40000), (40000,)), ((16, 7, 33), (7, 33)), ((1000, 8), (8,)),
          ((5, 1), (1,)), ((0, 16), (16,)), ((600, 1024), (1024,))]  # the last through the output cache
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _job(i):
    shape, nshape = SHAPES[i % len(SHAPES)]
    dtype = DTYPES[(i // len(SHAPES)) % len(DTYPES)]
    g = torch.Generator().manual_seed(i)
    x = torch.randn(shape, generator=g).to(dtype)
    w = (1 + torch.randn(nshape, generator=g)).to(dtype)
    b = torch.randn(nshape, generator=g).to(dtype)
    dy = torch.randn(shape, generator=g).to(dtype)
    return x, nshape, w, b, dy


def _run(args):
    x, nshape, w, b, dy = args
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    y = fastln.layer_norm(leaves[0], nshape, leaves[1], leaves[2], 1e-5)
    if y.numel() == 0:
        return [y.detach()]
    return [y.detach(), *torch.autograd.grad(y, leaves, dy)]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(s.view(torch.uint8), t.view(torch.uint8)) for s, t in zip(a, b))


def test_concurrent_calls_match_sequential():
    jobs = [_job(i) for i in range(48)]
    expected = [_run(j) for j in jobs]
    order = list(range(len(jobs))) * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: (i, _run(jobs[i])), order))
    bad = [i for i, r in results if not _same(r, expected[i])]
    assert not bad, f"jobs {sorted(set(bad))} differ when run concurrently"


def test_concurrent_module_shared():
    """One module shared by threads (its parameters read concurrently), forward and backward."""
    torch.manual_seed(0)
    m = fastln.LayerNorm(256)
    with torch.no_grad():
        m.weight.normal_()
        m.bias.normal_()
    xs = [torch.randn(32, 256) for _ in range(16)]
    expected = [m(x) for x in xs]
    barrier = threading.Barrier(4)

    def work(k):
        barrier.wait()
        out = []
        for _ in range(10):
            for i in range(k, len(xs), 4):
                out.append((i, m(xs[i])))
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        for res in pool.map(work, range(4)):
            for i, y in res:
                assert torch.equal(y, expected[i])
                assert y.requires_grad
