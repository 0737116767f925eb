"""Swapping the norms of a model for fastln's, and back: ``replace_norms`` / ``restore_norms``.

A norm class is recognised exactly, never by its name:

- torch's ``nn.LayerNorm`` and ``nn.RMSNorm`` become :class:`fastln.LayerNorm` /
  :class:`fastln.RMSNorm`;
- any other class is looked up in a registry of what known classes compute (:class:`NormSpec`):
  by the class itself (:func:`register_norm`), or by the *code* of its ``forward`` (and the
  ``_norm`` it calls): Hugging Face transformers copies one norm into every model file
  (``LlamaRMSNorm``, ``Qwen2RMSNorm``, ``MistralRMSNorm``, ... 140 copies in transformers 5.25),
  so a fingerprint of the code, comments, docstrings and annotations left out, recognises every
  copy and nothing else. Nothing here imports transformers or timm.

A swapped module keeps its object, parameters, buffers, hooks and state_dict; only its class
changes, to a subclass of its own class (``isinstance`` still holds) whose ``forward`` calls
fastln's kernel. Where the original would compute in another dtype than the kernel (a weight
whose dtype differs from the input's, a float64 input of a class that computes in float32),
the original ``forward`` runs instead, decided before the call.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import re
import textwrap
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union

import torch
from torch import Tensor, nn

from .functional import layer_norm, rms_norm
from .modules import LayerNorm, RMSNorm

_FLOAT = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_HALF = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class NormSpec:
    """What a norm class computes, in fastln's terms.

    ``kind``: ``"layer"`` (mean and variance) or ``"rms"``. ``eps``: the attribute holding
    epsilon, or a number. ``weight`` / ``bias``: attributes (absent or None: no weight / bias).
    ``weight_offset``: the output is scaled by ``weight_offset + weight`` (Gemma: 1).
    ``normalized_shape``: the attribute holding it, or None for the last dimension.
    ``channels_first``: a norm over dim 1 of (N, C, ...) inputs: a predicate of the module
    (the input is normalized as ``x.movedim(1, -1)``, a strided view, copied by the kernel).
    ``float32_compute``: the original computes in float32 whatever the input (float64 inputs
    then take the original forward). ``mixed``: the original returns the input's dtype for a
    float32 weight with a 16-bit input, rounding once (the kernel's mixed mode); otherwise the
    kernel runs only when the weight has the input's dtype. ``swappable``: a predicate of the
    module (a flag that changes what it computes). ``offset_first``: ``weight_offset`` is added
    to the weight as a tensor op in the weight's dtype before the norm (``weight + 1.0``:
    Nemotron, VideoPrism; a 16-bit weight's ``1 + w`` rounds as the original's), not in float32
    by the kernels (Gemma). ``autocast_cast``: under CUDA autocast the input and the parameters
    are cast to autocast's dtype, and the norm runs with autocast off (Nemotron's
    ``_cast_if_autocast_enabled``). ``name``: shown in ``repr``.
    """
    kind: str
    name: str
    eps: Union[str, float] = "eps"
    weight: Optional[str] = "weight"
    bias: Optional[str] = None
    weight_offset: float = 0.0
    normalized_shape: Optional[str] = None
    channels_first: Optional[Callable[[nn.Module], bool]] = None
    float32_compute: bool = False
    mixed: bool = False
    swappable: Optional[Callable[[nn.Module], bool]] = field(default=None, compare=False)
    offset_first: bool = False
    autocast_cast: bool = False


# ---- Recognising a class by its code ----

def _canonical(fn: Callable[..., Any]) -> str:
    """The code of a function without comments, docstrings, annotations or layout."""
    return _canonical_tree(ast.parse(textwrap.dedent(inspect.getsource(fn))))


def _canonical_tree(tree: ast.AST) -> str:
    """The code as ast.unparse writes it back, without docstrings and annotations: the same
    text on every Python version (ast.dump's is not: 3.12 added fields)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        elif isinstance(node, ast.arg):
            node.annotation = None
    return ast.unparse(tree)


def _digest(bases: List[str], methods: List[str]) -> str:
    return hashlib.sha256("\n".join(bases + methods).encode()).hexdigest()[:16]


def fingerprint(cls: type) -> Optional[str]:
    """The code fingerprint of a norm class: its ``forward`` and ``_norm`` as written, and the
    bases of the class that defines ``forward`` (what ``super().forward`` means). None when the
    source is not available. Users registering a class by its code use this."""
    owner = next((c for c in cls.__mro__ if "forward" in vars(c)), None)
    if owner is None:
        return None
    methods = []
    try:
        for name in ("forward", "_norm"):
            fn = getattr(cls, name, None)
            if inspect.isfunction(fn):
                methods.append(_canonical(fn))
    except (OSError, TypeError, SyntaxError):  # no source (a zipped or compiled module)
        return None
    return _digest([f"{b.__module__}.{b.__qualname__}" for b in owner.__bases__], methods)


def _is_channels_first(m: nn.Module) -> bool:
    return getattr(m, "data_format", None) == "channels_first"


def _not_fast_norm(m: nn.Module) -> bool:
    return not getattr(m, "_fast_norm", False)  # timm's fast_norm casts to the autocast dtype


_LLAMA = NormSpec("rms", "hf-llama", eps="variance_epsilon", float32_compute=True)
_RMS_CAST_AFTER = NormSpec("rms", "hf-olmo2", eps="variance_epsilon", float32_compute=True, mixed=True)
_GEMMA = NormSpec("rms", "hf-gemma", eps="eps", weight_offset=1.0, float32_compute=True, mixed=True)
_GEMMA3N = NormSpec("rms", "hf-gemma3n", eps="variance_epsilon", float32_compute=True, mixed=True)
_T5 = NormSpec("rms", "hf-t5", eps="variance_epsilon", float32_compute=True)  # its variance in float32
_OLMO = NormSpec("layer", "hf-olmo", eps=1e-5, weight=None, normalized_shape="normalized_shape",
                 float32_compute=True)
_CONVNEXT = NormSpec("layer", "hf-convnext", bias="bias", normalized_shape="normalized_shape",
                     channels_first=_is_channels_first)
_UNWEIGHTED = {eps: NormSpec("rms", "hf-unweighted", eps=eps, weight=None, float32_compute=True)
               for eps in ("eps", "variance_epsilon")}


def _one_dim_weight(m: nn.Module) -> bool:
    w = getattr(m, "weight", None)
    return isinstance(w, Tensor) and w.dim() == 1  # not Cohere's QK norm: (heads, head_dim)


def _no_groups(m: nn.Module) -> bool:
    return getattr(m, "group_size", None) is None


def _has_weight(m: nn.Module) -> bool:
    return getattr(m, "weight", None) is not None  # weight + 1.0 without one: the original raises


_NEMOTRON = NormSpec("layer", "hf-nemotron", bias="bias", normalized_shape="normalized_shape", weight_offset=1.0,
                     offset_first=True, autocast_cast=True, swappable=_has_weight)
_TIMM = NormSpec("layer", "timm", bias="bias", normalized_shape="normalized_shape", swappable=_not_fast_norm)
def _always(m: nn.Module) -> bool:
    return True


_TIMM_2D = NormSpec("layer", "layer-2d", bias="bias", normalized_shape="normalized_shape",
                    channels_first=_always, swappable=_not_fast_norm)

# The fingerprints of the known forms (tests/python/test_models.py checks them against the
# real libraries; the same on Python 3.10-3.13 and for transformers 5.17 and 5.25).
_BY_CODE: Dict[str, NormSpec] = {
    # LlamaRMSNorm and its copies (144 classes in transformers 5.25: Mistral, Qwen2, Qwen3,
    # Phi-3, Granite, ...): weight * (x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype)
    "088aec1ea38674b1": _LLAMA,
    # Olmo2, GptOss, FlexOlmo, ...: (weight * x.float() * rsqrt(...)).to(x.dtype)
    "21fd551efcdc357b": _RMS_CAST_AFTER,
    # Helium, NemotronH, ...: (weight.float() * x.float() * rsqrt(...)).to(x.dtype)
    "15e8699431417b9d": _RMS_CAST_AFTER,
    # Gemma, Gemma2, Gemma3, Qwen3.5, ...: (_norm(x.float()) * (1 + weight.float())).type_as(x)
    "0df4dd035ec83ef5": _GEMMA,
    # Gemma3n, Gemma4, ...: (_norm(x.float()) [* weight.float()]).type_as(x), weight if with_scale
    "b3cab3c50e2c4bf2": _GEMMA3N,
    # FalconMamba, Llama4 (weightless): _norm(x.float()).type_as(x)
    "28b1740933f0c2b8": NormSpec("rms", "hf-weightless", eps="variance_epsilon", weight=None,
                                 float32_compute=True),
    # T5LayerNorm, MT5, LongT5, Pix2Struct, Idefics, ...: weight * (x * rsqrt(mean(x.float()^2) + eps))
    # (to the weight's dtype first when it is 16-bit)
    "1f075b4850de13b7": _T5,
    # OlmoLayerNorm: layer_norm(x.float(), no weight, eps=1e-5).to(x.dtype)
    "7b930ec98e4314e3": _OLMO,
    # Llama4TextRMSNorm: _norm(x.float()).type_as(x) * weight, hf-llama's computation (5.25; 5.17's
    # epsilon attribute is eps)
    "0a17ed7764ff813f": _LLAMA,
    "00c35b922db2e63d": replace(_LLAMA, eps="eps"),
    # Qwen4ExpTextRMSNorm: Gemma's (1 + weight.float()), or over groups of group_size (left alone)
    "28c5ad456b4870c6": replace(_GEMMA, swappable=_no_groups),
    # MoshiRMSNorm, KyutaiSpeechToTextRMSNorm: (_norm(x.float()) * weight.float()).type_as(x)
    "869bf5c268b730f7": NormSpec("rms", "hf-moshi", eps="eps", float32_compute=True, mixed=True),
    # DeepseekV4UnweightedRMSNorm, Glm5NextTextUnweightedRMSNorm: x * rsqrt(mean(x.float()²) + eps).to(x.dtype)
    # (5.25: variance_epsilon; 5.17: eps)
    "6b144379b58f8cab": _UNWEIGHTED["variance_epsilon"],
    "2bc0bd21b2ddf1e1": _UNWEIGHTED["eps"],
    # CohereLayerNorm and its copies (Cohere2, Cohere2Moe, CohereCompass): no bias, float32, the
    # weight's product rounded once; a 2-D weight (QK norm over head_dim, a weight per head) is left alone
    "e8bbb98ca41cab45": NormSpec("layer", "hf-cohere", eps="variance_epsilon", float32_compute=True, mixed=True,
                                 swappable=_one_dim_weight),
    # SqueezeBertLayerNorm: nn.LayerNorm over dim 1 of (N, C, W) (permute, norm, permute back)
    "1665f1030f577879": NormSpec("layer", "hf-squeezebert", bias="bias", normalized_shape="normalized_shape",
                                 channels_first=_always),
    # VitDetLayerNorm: a layer norm over dim 1 of NCHW in the input's dtype, by hand
    "a928ecc9f2a7af7a": NormSpec("layer", "hf-vitdet", bias="bias", normalized_shape="normalized_shape",
                                 channels_first=_always),
    # DebertaLayerNorm (DeBERTa v1): x̂ in float32 rounded to x's dtype, then weight * x̂ + bias
    # (two roundings in 16-bit, as hf-llama's)
    "e4f68ba52ac117d9": NormSpec("layer", "hf-deberta", eps="variance_epsilon", bias="bias", float32_compute=True),
    # ErgoRMSNorm: F.rms_norm(x.float(), weight.float()).to(x.dtype) (transformers 5.25)
    "f0ae9e0d0c5229d0": NormSpec("rms", "hf-ergo", eps="eps", float32_compute=True, mixed=True),
    # NemotronLayerNorm1P: layer_norm(x, weight + 1.0, bias), cast to autocast's dtype under CUDA
    # autocast and run with autocast off (transformers 5.25; 5.17 maps an mps device to "cpu")
    "42093733db03d1c1": _NEMOTRON,
    "c4d5cd54e2d71c45": _NEMOTRON,
    # VideoPrismLayerNorm: layer_norm(x, weight + 1.0, bias)
    "7dd98928cb676986": NormSpec("layer", "hf-videoprism", bias="bias", normalized_shape="normalized_shape",
                                 weight_offset=1.0, offset_first=True, swappable=_has_weight),
    # ConvNextLayerNorm and its copies (nn.LayerNorm subclasses): channels_last or channels_first
    "6860a0dc0aee8ad4": _CONVNEXT,
    # EomtLayerNorm2d and its copies: layer_norm over the channels of NCHW
    "d6f317ccbbb6b5c2": _TIMM_2D,
    # timm 1.0's timm.layers.LayerNorm and LayerNorm2d (swapped while fast_norm is off)
    "b5f93d9cb55b381c": _TIMM,
    "97671e0691ba0524": _TIMM_2D,
}
_BY_CLASS: Dict[type, NormSpec] = {}


def register_norm(cls: type, spec: NormSpec) -> None:
    """Registers what ``cls`` computes, so that :func:`replace_norms` swaps its modules.
    Exactly this class (not its subclasses); a registration wins over a code fingerprint."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_norm: cls must be an nn.Module subclass, not {cls!r}")
    if spec.kind not in ("layer", "rms"):
        raise ValueError(f"register_norm: spec.kind must be 'layer' or 'rms', not {spec.kind!r}")
    if spec.kind == "rms" and spec.bias is not None:
        raise ValueError("register_norm: an 'rms' norm has no bias")
    _BY_CLASS[cls] = spec
    _spec_cache.pop(cls, None)


_spec_cache: Dict[type, Optional[NormSpec]] = {}


def spec_of(cls: type) -> Optional[NormSpec]:
    """The registered or recognised semantics of a class, or None."""
    if cls in _BY_CLASS:
        return _BY_CLASS[cls]
    if cls not in _spec_cache:
        fp = fingerprint(cls) if issubclass(cls, nn.Module) else None
        _spec_cache[cls] = None if fp is None else _BY_CODE.get(fp)
    return _spec_cache[cls]


# ---- The swapped classes ----

def _eps(m: nn.Module, spec: NormSpec) -> Any:
    return getattr(m, spec.eps) if isinstance(spec.eps, str) else spec.eps


def _param(m: nn.Module, name: Optional[str]) -> Optional[Tensor]:
    return None if name is None else getattr(m, name, None)


def _cast_dtype(t: Tensor, device: str, cast: Optional[torch.dtype]) -> torch.dtype:
    """t's dtype once autocast's cast (``torch.amp.autocast_mode._cast``) is applied: floating
    tensors on ``device`` other than float64 take ``cast``."""
    if cast is not None and t.is_floating_point() and t.device.type == device and t.dtype != torch.float64:
        return cast
    return t.dtype


class _Swapped(nn.Module):
    """Mixed in before the original class: forward through fastln's kernels."""

    _fastln_spec: NormSpec
    _fastln_original: Type[nn.Module]

    def forward(self, x: Tensor) -> Tensor:
        spec = self._fastln_spec
        if spec.swappable is not None and not spec.swappable(self):  # a setting changed since the swap
            return self._fastln_original.forward(self, x)  # type: ignore[no-any-return]
        w, b = _param(self, spec.weight), _param(self, spec.bias)
        # Nemotron: while CUDA's autocast is on (torch.is_autocast_enabled() with no device), the
        # original casts x, weight + 1 and the bias on x's device to that device's autocast dtype.
        dev = x.device.type
        cast = torch.get_autocast_dtype(dev) if spec.autocast_cast and torch.is_autocast_enabled("cuda") else None
        dt, wdt, bdt = (None if t is None else _cast_dtype(t, dev, cast) for t in (x, w, b))
        if not (dt in _FLOAT and (dt != torch.float64 or not spec.float32_compute)
                and (wdt is None or wdt == dt or (spec.mixed and dt in _HALF and wdt == torch.float32))
                and (bdt is None or wdt is None or bdt == wdt)):
            return self._fastln_original.forward(self, x)  # type: ignore[no-any-return]
        offset = spec.weight_offset if w is not None else 0.0
        if w is not None and spec.offset_first and offset:
            w, offset = w + offset, 0.0
        if cast is not None:
            x = x.to(_cast_dtype(x, dev, cast))
            w, b = (None if t is None else t.to(_cast_dtype(t, dev, cast)) for t in (w, b))
        channels_first = spec.channels_first is not None and spec.channels_first(self)
        if channels_first:
            x = x.movedim(1, -1)
        shape = getattr(self, spec.normalized_shape) if spec.normalized_shape else x.shape[-1:]
        eps = _eps(self, spec)
        # Autocast off on x's device where the original turns it off (Nemotron) or computes in
        # float32 and returns x's dtype whatever autocast says (Cohere, Olmo: CUDA autocast would
        # run fastln's layer_norm in float32 and return float32; rms_norm has no autocast policy).
        # Not on meta tensors: no autocast there (transformers' maybe_autocast skips it; torch's
        # query raises).
        off = (spec.autocast_cast or (spec.float32_compute and spec.kind == "layer")) and dev != "meta" \
            and torch.is_autocast_enabled(dev)
        with torch.autocast(dev, enabled=False) if off else contextlib.nullcontext():
            if spec.kind == "rms":
                y = rms_norm(x, shape, w, eps, weight_offset=offset)
            else:
                y = layer_norm(x, shape, w, b, eps, weight_offset=offset)
        return y.movedim(-1, 1) if channels_first else y

    def _get_name(self) -> str:
        return f"fastln[{self._fastln_spec.name}]:{self._fastln_original.__name__}"

    def __reduce_ex__(self, protocol: Any) -> Tuple[Any, ...]:
        # Pickled (torch.save of a whole model, deepcopy) as its original class and spec: the
        # swapped class is made again where it is loaded.
        return (_rebuild_swapped, (self._fastln_original, self._fastln_spec), self.__dict__.copy())


def _rebuild_swapped(cls: type, spec: NormSpec) -> nn.Module:
    swapped = _swapped_class(cls, spec)
    return swapped.__new__(swapped)


_swapped_classes: Dict[type, Type[nn.Module]] = {}


def _swapped_class(cls: type, spec: NormSpec) -> Type[nn.Module]:
    key = _swapped_classes.get(cls)
    if key is None or key._fastln_spec != spec:  # type: ignore[attr-defined]
        key = type(f"Fastln{cls.__name__}", (_Swapped, cls),
                   {"_fastln_spec": spec, "_fastln_original": cls, "__module__": __name__})
        _swapped_classes[cls] = key
    return key


_TORCH_SWAPS: Dict[type, type] = {nn.LayerNorm: LayerNorm, nn.RMSNorm: RMSNorm}
_LOOKS_LIKE_A_NORM = re.compile(r"(RMS|Rms|Layer|Simple)Norm(\d[dD])?$")


def _looks_like_a_norm(m: nn.Module) -> bool:
    # a leaf: wav2vec2's EncoderStableLayerNorm and the like are layers, not norms
    cls = type(m)
    return issubclass(cls, (nn.LayerNorm, nn.RMSNorm)) or (
        bool(_LOOKS_LIKE_A_NORM.search(cls.__name__)) and next(m.children(), None) is None)


def _listed(counts: Counter[str]) -> str:
    return ", ".join(f"{n} ({k})" for n, k in sorted(counts.items()))


def replace_norms(model: nn.Module, *, warn: bool = True) -> int:
    """Makes every recognised norm in ``model`` compute with fastln's kernels, in place;
    returns how many modules were swapped (already swapped ones are not counted again).

    Recognised: torch's ``nn.LayerNorm`` and ``nn.RMSNorm`` (exactly those classes), classes
    registered with :func:`register_norm`, and the known forms of Hugging Face transformers
    and timm (module docstring; README, "Swapping a model's norms"). A module whose class looks
    like a norm but is not recognised is left alone, with a warning naming its class
    (``warn=False`` silences it).

    The module objects stay the same: parameters, their devices and dtypes, hooks, and any
    optimizer already holding the parameters are all kept. :func:`restore_norms` undoes it.
    """
    count = 0
    unknown: Counter[str] = Counter()
    unswappable: Counter[str] = Counter()  # recognised classes whose instance's settings fastln does not compute
    for m in model.modules():
        cls = type(m)
        if "forward" in vars(m) and _looks_like_a_norm(m):  # its own forward (kernels' kernelize), not its class's
            unknown[f"{cls.__module__}.{cls.__qualname__} (instance forward)"] += 1
            continue
        if cls in _TORCH_SWAPS:
            m.__class__ = _TORCH_SWAPS[cls]
            object.__setattr__(m, "_fastln_swapped", True)  # restore_norms: this one was torch's
            count += 1
            continue
        if isinstance(m, (_Swapped, LayerNorm, RMSNorm)):
            continue
        spec = spec_of(cls)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if spec is not None and (spec.swappable is None or spec.swappable(m)):
            m.__class__ = _swapped_class(cls, spec)
            count += 1
        elif spec is not None:
            unswappable[name] += 1
        elif _looks_like_a_norm(m):
            unknown[name] += 1
    if warn and unknown:
        warnings.warn(f"fastln.replace_norms left alone modules that look like norms but whose "
                      f"computation it does not recognise: {_listed(unknown)}. fastln.register_norm(cls, "
                      f"NormSpec(...)) swaps a class whose semantics you know.", stacklevel=2)
    if warn and unswappable:
        warnings.warn(f"fastln.replace_norms left alone modules of known norm classes whose settings it "
                      f"does not compute (a weight per head, grouped statistics, timm's fast_norm, no "
                      f"weight where the code adds 1 to it): {_listed(unswappable)}.", stacklevel=2)
    return count


def restore_norms(model: nn.Module) -> int:
    """Returns every module swapped by :func:`replace_norms` to its original class; returns
    how many. Modules created as fastln.LayerNorm / fastln.RMSNorm (not swapped) stay."""
    count = 0
    for m in model.modules():
        cls = type(m)
        if isinstance(m, _Swapped):
            m.__class__ = cls._fastln_original  # type: ignore[attr-defined]
        elif cls in (LayerNorm, RMSNorm) and vars(m).pop("_fastln_swapped", False):
            m.__class__ = nn.LayerNorm if cls is LayerNorm else nn.RMSNorm
        else:
            continue
        count += 1
    return count
