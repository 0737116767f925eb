"""The op table: one entry per fastln op, as torch's OpInfo and pytorch/extension-cpp's
sample-input factories do. test_ops_table.py drives every check (opcheck, torch.compile,
gradcheck, determinism, parity with the reference, CUDA parity, errors) over every entry and
sample; other files take their op lists from here.

An entry holds:
  fn       the fastln call (the public function; the op itself for the internal ops)
  op       the torch.ops.fastln overload behind it
  ref      the same computation in torch's own functions, f(sample) -> outputs; run on the
           float64 copy of a sample (Sample.double()) it is the reference
  samples  samples(device, dtype, requires_grad) -> Samples: shapes with N = 1, N not a multiple
           of a vector, no / one / three leading dims and zero rows, with and without weight and
           bias, weight_offset 0 and 1, 16-bit input with float32 parameters, residual_in_fp32,
           eps None for the RMSNorms
"""
import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch
import torch.nn.functional as F

import conftest
import fastln

SIXTEEN = (torch.bfloat16, torch.float16)
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]

# (input shape, normalized_shape): N = 1, N not a multiple of a vector (7, 17, 257, 4099),
# no leading dim, one, three, zero rows, normalized over several dims, many rows (column sums).
SHAPES = [
    ((1, 1), (1,)), ((5, 1), (1,)), ((3, 7), (7,)), ((16,), (16,)), ((4, 17), (17,)), ((2, 3, 64), (64,)),
    ((33, 100), (100,)), ((8, 257), (257,)), ((2, 3, 4, 40), (40,)), ((6, 4, 8), (4, 8)),
    ((2, 3, 5, 7), (3, 5, 7)), ((0, 16), (16,)), ((100, 512), (512,)), ((3, 1000), (1000,)),
    ((2, 4099), (4099,)), ((4, 20000), (20000,)),
]
# The few small shapes of the costly checks (opcheck, compile, gradcheck): N = 1, an odd N,
# a 3-D input normalized over two dims, no rows.
SMALL_SHAPES = [((1, 1), (1,)), ((3, 7), (7,)), ((2, 3, 4, 5), (4, 5)), ((0, 16), (16,))]


@dataclasses.dataclass
class Sample:
    """args/kwargs of one call of an entry's fn (and, but for `memory_efficient`, of its op)."""
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    desc: str
    dtype: torch.dtype  # the input's dtype (the tolerance; eps=None resolves by it)
    meta: Dict[str, Any] = dataclasses.field(default_factory=dict)  # for the reference, not the call

    def tensors(self) -> List[torch.Tensor]:
        return [a for a in self.args if isinstance(a, torch.Tensor)]

    def leaves(self) -> List[torch.Tensor]:
        return [t for t in self.tensors() if t.requires_grad]

    def map(self, f: Callable[[torch.Tensor], torch.Tensor]) -> "Sample":
        """The sample with every tensor argument t replaced by f(t) (leaves stay leaves)."""
        def g(a):
            if not isinstance(a, torch.Tensor):
                return a
            return f(a.detach()).requires_grad_(a.requires_grad)
        return Sample(tuple(g(a) for a in self.args), dict(self.kwargs), self.desc, self.dtype, self.meta)

    def double(self) -> "Sample":
        return self.map(lambda t: t.double() if t.is_floating_point() else t)

    def to(self, device) -> "Sample":
        return self.map(lambda t: t.to(device))

    def clone(self) -> "Sample":
        return self.map(lambda t: t.clone())


@dataclasses.dataclass
class OpEntry:
    name: str
    fn: Callable[..., Any]
    op: Any  # torch._ops.OpOverload
    ref: Callable[[Sample], Any]
    samples: Callable[..., Iterator[Sample]]
    differentiable: bool = True   # fn has a backward (the public functions)
    double_backward: bool = True
    public: bool = True

    def __call__(self, s: Sample) -> Tuple[torch.Tensor, ...]:
        out = self.fn(*s.args, **s.kwargs)
        return out if isinstance(out, tuple) else (out,)

    def op_args(self, s: Sample) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        """(args, kwargs) of the op overload for the sample."""
        return s.args, {k: v for k, v in s.kwargs.items() if k != "memory_efficient"}

    def __repr__(self):
        return self.name


# ---- sample construction ----

def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rnd(g, shape, device, dtype, scale=1.0, shift=0.0, requires_grad=False):
    t = (shift + scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(device, dtype)
    return t.requires_grad_(requires_grad)


def _weight(g, ns, device, dtype, offset, requires_grad, memory_efficient=False):
    """A weight whose effective scale (offset + weight) is 1 + 0.5 randn; one kept away from 0
    for the memory-efficient backward (it divides by it)."""
    if memory_efficient:
        eff = 0.75 + 0.5 * torch.rand(ns, generator=g, dtype=torch.float64)
    else:
        eff = 1 + 0.5 * torch.randn(ns, generator=g, dtype=torch.float64)
    return (eff - offset).to(device, dtype).requires_grad_(requires_grad)


# (weight, bias, weight_offset) variants: every affine option, offset 1 with a weight
LN_VARIANTS = [(True, True, 0.0), (True, False, 0.0), (False, True, 0.0), (False, False, 0.0),
               (True, True, 1.0), (True, False, 1.0)]
RMS_VARIANTS = [(True, False, 0.0), (False, False, 0.0), (True, False, 1.0)]


def _pdtypes(dtype):
    """Parameter dtypes for an input dtype: its own, and float32 for 16-bit input (mixed)."""
    return [dtype, torch.float32] if dtype in SIXTEEN else [dtype]


def _rms_eps(i, ns):
    # N = 1: grad_input = rstd * g * eps / (x^2 + eps) is rounding noise for a small eps (in
    # torch too): a large eps keeps the comparison meaningful. Otherwise eps None and 1e-6.
    if ns == (1,):
        return 0.5
    return None if i % 2 == 0 else 1e-6


def norm_samples(rms: bool, fused: bool, memory_efficient: bool = False):
    """The sample factory of the four public functions (and memory_efficient=True)."""
    variants = RMS_VARIANTS if rms else LN_VARIANTS

    def samples(device, dtype, requires_grad=False, shapes=None, small=False):
        shapes = shapes or (SMALL_SHAPES if small else SHAPES)
        fp32_options = [False, True] if fused and dtype in SIXTEEN else [False]
        pds = _pdtypes(dtype)
        # The variants, parameter dtypes and residual_in_fp32 cycled over the shapes: each shape
        # twice, every variant with each parameter dtype; the small set: each shape and each
        # variant once.
        if small:
            combos = [(j % len(shapes), variants[j % len(variants)], pds[j % len(pds)],
                       fp32_options[(j // 2) % len(fp32_options)]) for j in range(max(len(shapes), len(variants)))]
        else:
            n = max(2 * len(shapes), len(variants) * len(pds) * len(fp32_options))
            combos = [((j // 2) % len(shapes), variants[j % len(variants)], pds[(j // len(variants)) % len(pds)],
                       fp32_options[(j // 2) % len(fp32_options)]) for j in range(n)]
        for k, (i, (has_w, has_b, offset), pdtype, fp32) in enumerate(combos):
            shape, ns = shapes[i]
            g = _gen(1000 * i + k)
            layer_shift = 0.0 if rms else 2.0  # rows off zero: the mean's shift matters
            x = _rnd(g, shape, device, dtype, shift=layer_shift, requires_grad=requires_grad)
            w = _weight(g, ns, device, pdtype, offset, requires_grad, memory_efficient) if has_w else None
            b = _rnd(g, ns, device, pdtype, requires_grad=requires_grad) if has_b else None
            eps = _rms_eps(k, ns) if rms else 1e-5
            kwargs: Dict[str, Any] = {"weight_offset": offset}
            if memory_efficient:
                kwargs["memory_efficient"] = True
            args: Tuple[Any, ...]
            if fused:
                r = _rnd(g, shape, device, torch.float32 if fp32 else dtype, requires_grad=requires_grad)
                kwargs["residual_in_fp32"] = fp32
                args = (x, r, ns, w, eps) if rms else (x, r, ns, w, b, eps)
            else:
                args = (x, ns, w, eps) if rms else (x, ns, w, b, eps)
            desc = (f"{tuple(shape)}/{ns} w={has_w} b={has_b} off={offset} p={str(pdtype)[6:]} eps={eps}"
                    + (f" fp32={fp32}" if fused else ""))
            yield Sample(args, kwargs, desc, dtype, {"k": k})
    return samples


# ---- references in torch's functions ----

def _eff(w, offset):
    return None if w is None else w + offset


def _rms_ref_eps(eps, dtype):
    """eps None: torch's default for the input dtype (float32's for 16-bit)."""
    if eps is not None:
        return eps
    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def _up(dtype, *ts):
    """16-bit inputs with float32 parameters: torch computes in float32 (then rounds back)."""
    if dtype in SIXTEEN and any(t is not None and t.dtype == torch.float32 for t in ts):
        return [None if t is None else t.float() for t in ts], True
    return list(ts), False


def _norm(rms, exact):
    """The norm of the reference: torch's function, or (exact, for float64) the textbook formula
    from primitive torch ops (conftest), f(x, normalized_shape, weight, bias, eps)."""
    if rms:
        f = conftest.ref_rms_norm if exact else F.rms_norm
        return lambda x, ns, w, b, eps: f(x, ns, w, eps)
    return conftest.ref_layer_norm if exact else F.layer_norm


def ref_layer_norm(s: Sample, exact=False):
    x, ns, w, b, eps = s.args
    (x2, w2, b2), up = _up(x.dtype, x, w, b)
    y = _norm(False, exact)(x2, ns, _eff(w2, s.kwargs["weight_offset"]), b2, eps)
    return (y.to(x.dtype) if up else y,)


def ref_rms_norm(s: Sample, exact=False):
    x, ns, w, eps = s.args
    (x2, w2), up = _up(x.dtype, x, w)
    y = _norm(True, exact)(x2, ns, _eff(w2, s.kwargs["weight_offset"]), None, _rms_ref_eps(eps, s.dtype))
    return (y.to(x.dtype) if up else y,)


def _ref_fused(rms):
    def ref(s: Sample, exact=False):
        if rms:
            x, r, ns, w, eps = s.args
            b, eps = None, _rms_ref_eps(eps, s.dtype)
        else:
            x, r, ns, w, b, eps = s.args
        fp32 = s.kwargs["residual_in_fp32"] and x.dtype in SIXTEEN
        xs, rs = (x.float(), r.float()) if fp32 else (x, r)
        total = xs + rs
        (t2, w2, b2), up = _up(total.dtype, total, w, b)
        y = _norm(rms, exact)(t2, ns, _eff(w2, s.kwargs["weight_offset"]), b2, eps)
        return y.to(x.dtype), total
    return ref


# ---- the internal ops: their own samples, built from the public ones' ----

def _stats_dims(ns):
    return tuple(range(-len(ns), 0))


def _layer_stats(x, ns, eps):
    """mean and rstd as the fwd op returns them (float32 for 16-bit input), from float64."""
    xd = x.detach().double()
    dims = _stats_dims(ns)
    mean = xd.mean(dims, keepdim=True)
    rstd = 1 / torch.sqrt(((xd - mean) ** 2).mean(dims, keepdim=True) + eps)
    sdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return mean.to(sdtype), rstd.to(sdtype)


def _rms_rstd(x, ns, eps):
    """rstd as the fwd op returns it (float32 for 16-bit input), from float64."""
    xd = x.detach().double()
    rstd = 1 / torch.sqrt((xd * xd).mean(_stats_dims(ns), keepdim=True) + eps)
    return rstd.to(torch.float64 if x.dtype == torch.float64 else torch.float32)


def _internal(base, build):
    """Samples of an internal op: build(sample of the public op) -> Sample (no autograd)."""
    def samples(device, dtype, requires_grad=False, shapes=None, small=False):
        for s in base(device, dtype, False, shapes, small):
            out = build(s)
            if out is not None:
                yield out
    return samples


def _ln_fwd_sample(s):
    x, ns, w, b, eps = s.args
    return Sample((x, ns, w, b, eps, s.kwargs["weight_offset"]), {}, s.desc, s.dtype)


def _ln_bwd_samples(s):
    x, ns, w, b, eps = s.args
    mean, rstd = _layer_stats(x, ns, eps)
    dy = _rnd(_gen(7), x.shape, x.device, x.dtype)
    masks = [[True, w is not None, b is not None], [True, False, False], [False, w is not None, b is not None]]
    mask = masks[s.meta["k"] % 3] if any(masks[s.meta["k"] % 3]) else masks[0]
    return Sample((dy, x, ns, mean, rstd, w, b, mask, s.kwargs["weight_offset"]), {}, s.desc + f" mask={mask}",
                  s.dtype, {"eps": eps})


def _rms_fwd_sample(s):
    x, ns, w, eps = s.args
    return Sample((x, ns, w, _rms_ref_eps(eps, s.dtype), s.kwargs["weight_offset"]), {}, s.desc, s.dtype)


def _rms_bwd_sample(s):
    x, ns, w, eps = s.args
    rstd = _rms_rstd(x, ns, _rms_ref_eps(eps, s.dtype))
    dy = _rnd(_gen(8), x.shape, x.device, x.dtype)
    masks = [[True, w is not None], [True, False], [False, w is not None]]
    mask = masks[s.meta["k"] % 3] if any(masks[s.meta["k"] % 3]) else masks[0]
    return Sample((dy, x, ns, rstd, w, mask, s.kwargs["weight_offset"]), {}, s.desc + f" mask={mask}", s.dtype,
                  {"eps": _rms_ref_eps(eps, s.dtype)})


def _add_norm_sample(rms):
    def build(s):
        if rms:
            x, r, ns, w, eps = s.args
            b, eps = None, _rms_ref_eps(eps, s.dtype)
        else:
            x, r, ns, w, b, eps = s.args
        return Sample((x, r, ns, w, b, eps, rms, s.kwargs["residual_in_fp32"], s.kwargs["weight_offset"]), {},
                      s.desc + f" rms={rms}", s.dtype)
    return build


def _recover_sample(s):
    x, ns, w, b, eps = s.args
    if w is None and s.kwargs["weight_offset"] == 0:
        w_eff = None
    else:
        w_eff = _eff(w, s.kwargs["weight_offset"])
        if w_eff is not None and (w_eff.double().abs() < 0.25).any():
            return None  # x - mean is y / weight: a small weight is a precision loss of its own
    y = F.layer_norm(x.detach().double(), ns, None if w_eff is None else w_eff.double(),
                     None if b is None else b.double(), eps).to(x.dtype)
    _, rstd = _layer_stats(x, ns, eps)
    return Sample((y, ns, rstd, w, b, s.kwargs["weight_offset"]), {}, s.desc, s.dtype, {"x": x})


def _sdtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def ref_layer_norm_fwd(s, exact=False):
    x, ns, w, b, eps, offset = s.args
    (x2, w2, b2), up = _up(x.dtype, x, w, b)
    if exact:
        y = conftest.ref_layer_norm(x2, ns, _eff(w2, offset), b2, eps)
        mean, rstd = _layer_stats(x2, ns, eps)
    else:
        y, mean, rstd = torch.native_layer_norm(x2, ns, _eff(w2, offset), b2, eps)
    return y.to(x.dtype), mean.to(_sdtype(x)), rstd.to(_sdtype(x))


def _grads_of_norm(rms, exact, dy, x, ns, w, b, eps, offset, mask):
    """The input's, weight's and bias's gradients of the norm by autograd (masked: None)."""
    (dy2, x2, w2, b2), up = _up(x.dtype, dy, x, w, b)
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (x2, w2, b2)]
    y = _norm(rms, exact)(leaves[0], ns, _eff(leaves[1], offset), leaves[2], eps)
    used = [t for t in leaves if t is not None]
    grads = dict(zip(map(id, used), torch.autograd.grad(y, used, dy2)))
    out = [None if t is None else grads[id(t)] for t in leaves]
    out[0] = out[0].to(x.dtype)
    return [g if m else None for g, m in zip(out, mask)]


def ref_layer_norm_bwd(s, exact=False):
    dy, x, ns, mean, rstd, w, b, mask, offset = s.args
    if exact:
        return tuple(_grads_of_norm(False, True, dy, x, ns, w, b, s.meta["eps"], offset, mask))
    (dy2, x2, w2, b2), up = _up(x.dtype, dy, x, w, b)
    mean, rstd = mean.to(x2.dtype), rstd.to(x2.dtype)
    gx, gw, gb = torch.ops.aten.native_layer_norm_backward(dy2, x2, ns, mean, rstd, _eff(w2, offset), b2, mask)
    return (gx.to(x.dtype) if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None)


def ref_rms_norm_fwd(s, exact=False):
    x, ns, w, eps, offset = s.args
    (x2, w2), up = _up(x.dtype, x, w)
    y = _norm(True, exact)(x2, ns, _eff(w2, offset), None, eps)
    return y.to(x.dtype), _rms_rstd(x, ns, eps)


def ref_rms_norm_bwd(s, exact=False):
    dy, x, ns, rstd, w, mask, offset = s.args
    return tuple(_grads_of_norm(True, exact, dy, x, ns, w, None, s.meta["eps"], offset, mask + [False])[:2])


def ref_add_norm_fwd(s, exact=False):
    x, r, ns, w, b, eps, rms, fp32, offset = s.args
    pub = Sample((x, r, ns, w, eps) if rms else (x, r, ns, w, b, eps),
                 {"residual_in_fp32": fp32, "weight_offset": offset}, s.desc, s.dtype)
    y, total = _ref_fused(rms)(pub, exact)
    if rms:
        rstd = _rms_rstd(total, ns, eps)
        return y, total, torch.zeros_like(rstd), rstd  # no mean: zeros
    mean, rstd = _layer_stats(total, ns, eps)
    return y, total, mean, rstd


def ref_recover_centered_input(s, exact=False):
    x = s.meta["x"]
    ns = s.args[1]
    xd = x.double() if x.dtype != torch.float64 else x
    mean = xd.mean(_stats_dims(ns), keepdim=True)
    return ((xd - mean).to(x.dtype),)


# ---- the table ----

_ops = torch.ops.fastln


def _me(*args, **kwargs):
    return fastln.layer_norm(*args, **kwargs)


PUBLIC = [
    OpEntry("layer_norm", fastln.layer_norm, _ops.layer_norm.default, ref_layer_norm, norm_samples(False, False)),
    OpEntry("layer_norm_memory_efficient", _me, _ops.layer_norm_memory_efficient.default, ref_layer_norm,
            norm_samples(False, False, memory_efficient=True), double_backward=False),
    OpEntry("rms_norm", fastln.rms_norm, _ops.rms_norm.default, ref_rms_norm, norm_samples(True, False)),
    OpEntry("fused_add_layer_norm", fastln.fused_add_layer_norm, _ops.fused_add_layer_norm.default,
            _ref_fused(False), norm_samples(False, True)),
    OpEntry("fused_add_rms_norm", fastln.fused_add_rms_norm, _ops.fused_add_rms_norm.default,
            _ref_fused(True), norm_samples(True, True)),
]

_ln, _rms = norm_samples(False, False), norm_samples(True, False)
_fln, _frms = norm_samples(False, True), norm_samples(True, True)


def _both(a, b):
    def samples(*args, **kwargs):
        yield from a(*args, **kwargs)
        yield from b(*args, **kwargs)
    return samples


INTERNAL = [
    OpEntry("layer_norm_fwd", _ops.layer_norm_fwd, _ops.layer_norm_fwd.default, ref_layer_norm_fwd,
            _internal(_ln, _ln_fwd_sample), differentiable=False, public=False),
    OpEntry("layer_norm_bwd", _ops.layer_norm_bwd, _ops.layer_norm_bwd.default, ref_layer_norm_bwd,
            _internal(_ln, _ln_bwd_samples), differentiable=False, public=False),
    OpEntry("rms_norm_fwd", _ops.rms_norm_fwd, _ops.rms_norm_fwd.default, ref_rms_norm_fwd,
            _internal(_rms, _rms_fwd_sample), differentiable=False, public=False),
    OpEntry("rms_norm_bwd", _ops.rms_norm_bwd, _ops.rms_norm_bwd.default, ref_rms_norm_bwd,
            _internal(_rms, _rms_bwd_sample), differentiable=False, public=False),
    OpEntry("add_norm_fwd", _ops.add_norm_fwd, _ops.add_norm_fwd.default, ref_add_norm_fwd,
            _both(_internal(_fln, _add_norm_sample(False)), _internal(_frms, _add_norm_sample(True))),
            differentiable=False, public=False),
    OpEntry("recover_centered_input", _ops.recover_centered_input, _ops.recover_centered_input.default, ref_recover_centered_input,
            _internal(_ln, _recover_sample), differentiable=False, public=False),
]

ALL = PUBLIC + INTERNAL
BY_NAME = {e.name: e for e in ALL}


def first_sample(name: str, device="cpu", dtype=torch.float32) -> Sample:
    """One well-formed sample of an entry (a 3-D input, weight and bias where the op takes them)."""
    for s in BY_NAME[name].samples(device, dtype, False, shapes=[((2, 3, 4), (4,))]):
        return s
    raise AssertionError(name)
