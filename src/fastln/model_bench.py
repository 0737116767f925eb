"""Model-level benchmark: Hugging Face models with torch's norms against fastln's.

    python -m fastln bench --model bert,gpt2,llama,t5 [--device cpu|cuda] [--dtype ...] [--out DIR]

Each model is built from a config with random weights (nothing is downloaded): a realistic
hidden size with few layers (``--layers``), the base model without an LM head (its time per
layer is that of a deep model's). The same model object is timed with its own norms and with
``fastln.replace_norms`` applied, interleaved in one process (swap in, time a sample,
``fastln.restore_norms``, time a sample, the order alternating between rounds; where this build
has no ``restore_norms``, a deep copy carries the swapped norms instead). Modes:

- ``inference``: a forward under ``torch.inference_mode``;
- ``train``: forward, loss = mean of the last hidden state (in float32), backward
  (``model.zero_grad(set_to_none=True)`` after; no optimizer). Dropout is off (eval mode),
  so both variants compute the same thing.

Reported per (model, mode): minimum and median time of a step over the samples, speedup
(torch median / fastln median), and the share of the step spent in norm modules, measured in
separate passes with hooks around every norm module (forward: pre/post hooks; backward: full
backward pre/post hooks; CUDA synchronised in each hook). The share bounds the speedup a
faster norm can give: 1 / (1 - share) at the most. Also the count of norm modules and of
those ``replace_norms`` swapped (a warning when they differ), and the largest difference
between the two variants' outputs.

transformers is needed (``pip install transformers``); it is imported only here.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import importlib
import json
import math
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

import fastln
from fastln.benchmark import cpu_model

MODELS = ("bert", "gpt2", "llama", "t5", "gemma", "cohere", "nemotron")
DEFAULT_MODELS = ("bert", "gpt2", "llama", "t5")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("inference", "train")

# Config sizes per preset. "cpu": a realistic hidden size, 2 layers, a small vocabulary (the
# dense embedding gradient of a 32k x 2048 table would dominate a CPU step); "cuda": sizes of
# real models (BERT-large, GPT-2 medium, Llama-2-7B, T5-v1.1-large, Gemma-2B, Command R7B,
# Nemotron-Mini-4B) with 8 layers.
# "tiny": for tests. Keys are the config's own argument names; "layers" and "vocab" are mapped.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "bert": {
        "tiny": dict(hidden_size=64, num_attention_heads=2, intermediate_size=128, layers=2, vocab=128),
        "cpu": dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, layers=2, vocab=8192),
        "cuda": dict(hidden_size=1024, num_attention_heads=16, intermediate_size=4096, layers=8,
                     vocab=30522),
    },
    "gpt2": {
        "tiny": dict(n_embd=64, n_head=2, layers=2, vocab=128),
        "cpu": dict(n_embd=768, n_head=12, layers=2, vocab=8192),
        "cuda": dict(n_embd=1024, n_head=16, layers=8, vocab=50257),
    },
    "llama": {
        "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=2,
                     layers=2, vocab=128),
        "cpu": dict(hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=16,
                    layers=2, vocab=8192),
        "cuda": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                     layers=8, vocab=32000),
    },
    "t5": {
        "tiny": dict(d_model=64, d_kv=32, d_ff=128, num_heads=2, layers=2, vocab=128),
        "cpu": dict(d_model=768, d_kv=64, d_ff=2048, num_heads=12, layers=2, vocab=8192,
                    feed_forward_proj="gated-gelu"),
        "cuda": dict(d_model=1024, d_kv=64, d_ff=2816, num_heads=16, layers=6, vocab=32128,
                     feed_forward_proj="gated-gelu"),
    },
    "gemma": {
        "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1,
                     head_dim=32, layers=2, vocab=128),
        "cpu": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=8, num_key_value_heads=1,
                    head_dim=128, layers=2, vocab=8192),
        "cuda": dict(hidden_size=2048, intermediate_size=16384, num_attention_heads=8, num_key_value_heads=1,
                     head_dim=256, layers=8, vocab=256000),
    },
    "cohere": {  # CohereLayerNorm: a LayerNorm without bias, in float32
        "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1,
                     layers=2, vocab=128),
        "cpu": dict(hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=4,
                    layers=2, vocab=8192),
        "cuda": dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                     layers=8, vocab=256000),
    },
    "nemotron": {  # NemotronLayerNorm1P: layer_norm with weight + 1
        "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1,
                     head_dim=32, layers=2, vocab=128),
        "cpu": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_key_value_heads=4,
                    head_dim=64, layers=2, vocab=8192),
        "cuda": dict(hidden_size=3072, intermediate_size=9216, num_attention_heads=24, num_key_value_heads=8,
                     head_dim=128, layers=8, vocab=256000),
    },
}
# The causal LMs: config and model class names, and the positions they need.
_DECODERS = {"llama": ("LlamaConfig", "LlamaModel", 4096), "gemma": ("GemmaConfig", "GemmaModel", 8192),
             "cohere": ("CohereConfig", "CohereModel", 8192), "nemotron": ("NemotronConfig", "NemotronModel", 4096)}
# (batch, sequence) per preset; BERT's positions stop at 512, so 16 x 512 tokens on CUDA.
SHAPES = {"tiny": (2, 16), "cpu": (4, 128), "cuda": (8, 1024)}
BERT_CUDA_SHAPE = (16, 512)

_NORM_NAME = re.compile(r"(LayerNorm|RMSNorm)$")


class MissingTransformers(RuntimeError):
    pass


def _transformers() -> Any:
    try:
        return importlib.import_module("transformers")
    except ImportError as e:
        raise MissingTransformers(
            "the model benchmark needs Hugging Face transformers: pip install transformers") from e


# ---------------------------------------------------------------------------------------------
# models


@dataclass
class Built:
    model: nn.Module
    inputs: dict[str, Tensor]
    config: dict[str, Any]
    batch: int
    seq: int


def build(name: str, preset: str, device: torch.device, dtype: torch.dtype, *, layers: Optional[int] = None,
          batch: Optional[int] = None, seq: Optional[int] = None, seed: int = 0) -> Built:
    """The HF base model ``name`` with random weights (``preset``: tiny, cpu or cuda), in eval mode
    (dropout off), on ``device`` in ``dtype``, and its inputs."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    tf = _transformers()
    kw = dict(PRESETS[name][preset])
    n_layers = layers if layers is not None else kw.pop("layers")
    kw.pop("layers", None)
    vocab = kw.pop("vocab")
    b, s = BERT_CUDA_SHAPE if (name == "bert" and preset == "cuda") else SHAPES[preset]
    b, s = batch or b, seq or s
    if name == "bert":
        config = tf.BertConfig(vocab_size=vocab, num_hidden_layers=n_layers, max_position_embeddings=max(512, s),
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)
        cls = tf.BertModel
    elif name == "gpt2":
        config = tf.GPT2Config(vocab_size=vocab, n_layer=n_layers, n_positions=max(1024, s),
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                               bos_token_id=min(50256, vocab - 1), eos_token_id=min(50256, vocab - 1), **kw)
        cls = tf.GPT2Model
    elif name == "t5":
        config = tf.T5Config(vocab_size=vocab, num_layers=n_layers, num_decoder_layers=n_layers, dropout_rate=0.0,
                             **kw)
        cls = tf.T5Model
    else:
        config_cls, model_cls, positions = _DECODERS[name]
        config = getattr(tf, config_cls)(vocab_size=vocab, num_hidden_layers=n_layers,
                                         max_position_embeddings=max(positions, s), **kw)
        cls = getattr(tf, model_cls)
    torch.manual_seed(seed)
    with torch.device(device):
        model: nn.Module = cls(config)
    model.to(dtype=dtype).eval()
    model.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    inputs = {"input_ids": torch.randint(0, vocab, (b, s), generator=gen).to(device)}
    if name == "t5":  # encoder and decoder both over s tokens
        inputs["decoder_input_ids"] = torch.randint(0, vocab, (b, s), generator=gen).to(device)
    summary = {k: v for k, v in config.to_dict().items()
               if k in ("hidden_size", "n_embd", "d_model", "intermediate_size", "n_inner", "d_ff",
                        "num_attention_heads", "n_head", "num_heads", "num_key_value_heads", "head_dim",
                        "vocab_size", "feed_forward_proj", "_attn_implementation")}
    summary["layers"] = n_layers
    summary["class"] = cls.__name__
    summary["attn_implementation"] = getattr(config, "_attn_implementation", None)
    return Built(model, inputs, summary, b, s)


def norm_modules(model: nn.Module) -> list[nn.Module]:
    """Every normalization module: torch's LayerNorm and RMSNorm (and subclasses, fastln's
    included) and any class named ``...LayerNorm`` or ``...RMSNorm`` (LlamaRMSNorm, T5LayerNorm,
    GemmaRMSNorm, ...)."""
    return [m for m in model.modules()
            if isinstance(m, (nn.LayerNorm, nn.RMSNorm)) or _NORM_NAME.search(type(m).__name__)]


def _is_fastln(m: nn.Module) -> bool:
    return type(m).__module__.split(".")[0] == "fastln"


def _output(out: Any) -> Tensor:
    t = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    assert isinstance(t, Tensor)
    return t


# ---------------------------------------------------------------------------------------------
# the two variants of one model


def _count(swapped: object) -> int:
    """replace_norms's answer as a count (an int, or a collection of the modules swapped)."""
    if isinstance(swapped, int):
        return swapped
    if isinstance(swapped, (list, tuple, dict, set)):
        return len(swapped)
    raise TypeError(f"fastln.replace_norms returned {type(swapped).__name__}, not a count")


class Variants:
    """The model with torch's norms ("torch") and with fastln's ("fastln"). In place with
    ``fastln.restore_norms`` where it exists; otherwise a deep copy holds the swapped norms."""

    def __init__(self, model: nn.Module):
        self.base = model
        self.norms = len(norm_modules(model))
        restore = getattr(fastln, "restore_norms", None)
        self._restore: Optional[Callable[[nn.Module], Any]] = restore
        if restore is not None:
            self.strategy = "in place (replace_norms / restore_norms)"
            self.fast = model
            self.swapped = _count(fastln.replace_norms(model))
            restore(model)
        else:
            self.strategy = "deep copy (this fastln has no restore_norms)"
            self.fast = copy.deepcopy(model)
            self.swapped = _count(fastln.replace_norms(self.fast))
        self._state = "torch"

    def get(self, variant: str) -> nn.Module:
        if self._restore is None:
            return self.fast if variant == "fastln" else self.base
        if variant != self._state:
            if variant == "fastln":
                n = _count(fastln.replace_norms(self.base))
                if n != self.swapped:
                    raise RuntimeError(f"replace_norms swapped {n} norms, {self.swapped} the first time")
            else:
                self._restore(self.base)
                left = [type(m).__name__ for m in self.base.modules() if _is_fastln(m)]
                if left:
                    raise RuntimeError(f"restore_norms left fastln modules: {left[:3]}")
            self._state = variant
        return self.base


# ---------------------------------------------------------------------------------------------
# timing


def _sync_fn(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _step_fn(model: nn.Module, inputs: dict[str, Tensor], mode: str) -> Callable[[], None]:
    if mode == "inference":
        def infer() -> None:
            with torch.inference_mode():
                model(**inputs)
        return infer

    def train() -> None:
        loss = _output(model(**inputs)).float().mean()
        torch.autograd.backward(loss)
        model.zero_grad(set_to_none=True)
    return train


@dataclass
class Timing:
    samples_s: dict[str, list[float]] = field(default_factory=dict)
    iters_per_sample: dict[str, int] = field(default_factory=dict)


def time_interleaved(variants: Variants, inputs: dict[str, Tensor], mode: str, sync: Callable[[], None],
                     budget_s: float, min_rounds: int, max_rounds: int, target_sample_s: float) -> Timing:
    """Rounds of one sample per variant (the order alternating); each sample follows an untimed
    step of its own variant and times ``k`` steps (``k`` sized to ``target_sample_s``)."""
    names = ["torch", "fastln"]
    timing = Timing({n: [] for n in names}, {})
    for n in names:  # warm up, then size the samples
        step = _step_fn(variants.get(n), inputs, mode)
        for _ in range(2):
            step()
        sync()
        t = time.perf_counter()
        step()
        sync()
        timing.iters_per_sample[n] = max(1, round(target_sample_s / max(time.perf_counter() - t, 1e-6)))
    k = min(timing.iters_per_sample.values())  # the same for both
    timing.iters_per_sample = {n: k for n in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        t_end = time.perf_counter() + budget_s
        for r in range(max_rounds):
            order = names if r % 2 == 0 else names[::-1]
            for n in order:
                step = _step_fn(variants.get(n), inputs, mode)
                step()
                sync()
                t = time.perf_counter()
                for _ in range(k):
                    step()
                sync()
                timing.samples_s[n].append((time.perf_counter() - t) / k)
            if r + 1 >= min_rounds and time.perf_counter() > t_end:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return timing


class NormTimer:
    """Wall time inside norm modules, from hooks (CUDA synchronised at each): forward between
    the forward pre-hook and hook, backward between the full backward pre-hook and hook."""

    def __init__(self, modules: Sequence[nn.Module], sync: Callable[[], None], backward: bool):
        self.sync, self.fwd_s, self.bwd_s = sync, 0.0, 0.0
        self._t0: dict[int, float] = {}
        self._b0: dict[int, float] = {}
        self.handles: list[Any] = []
        for m in modules:
            self.handles.append(m.register_forward_pre_hook(self._fwd_pre))
            self.handles.append(m.register_forward_hook(self._fwd_post))
            if backward:
                self.handles.append(m.register_full_backward_pre_hook(self._bwd_pre))
                self.handles.append(m.register_full_backward_hook(self._bwd_post))

    def _now(self) -> float:
        self.sync()
        return time.perf_counter()

    def _fwd_pre(self, m: nn.Module, args: Any) -> None:
        self._t0[id(m)] = self._now()

    def _fwd_post(self, m: nn.Module, args: Any, out: Any) -> None:
        self.fwd_s += self._now() - self._t0.pop(id(m))

    def _bwd_pre(self, m: nn.Module, grad_out: Any) -> None:
        self._b0[id(m)] = self._now()

    def _bwd_post(self, m: nn.Module, grad_in: Any, grad_out: Any) -> None:
        t0 = self._b0.pop(id(m), None)
        if t0 is not None:
            self.bwd_s += self._now() - t0

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def norm_share(model: nn.Module, inputs: dict[str, Tensor], mode: str, sync: Callable[[], None],
               passes: int) -> dict[str, float]:
    """Share of a step spent in norm modules: the median over ``passes`` hooked steps."""
    step = _step_fn(model, inputs, mode)
    timer = NormTimer(norm_modules(model), sync, backward=mode == "train")
    shares, norm_s, total_s = [], [], []
    try:
        step()
        for _ in range(passes):
            timer.fwd_s = timer.bwd_s = 0.0
            sync()
            t = time.perf_counter()
            step()
            sync()
            total = time.perf_counter() - t
            norm = timer.fwd_s + timer.bwd_s
            shares.append(norm / total)
            norm_s.append(norm)
            total_s.append(total)
    finally:
        timer.remove()
    return {"norm_share": statistics.median(shares), "norm_ms": 1e3 * statistics.median(norm_s),
            "hooked_step_ms": 1e3 * statistics.median(total_s)}


def output_difference(variants: Variants, inputs: dict[str, Tensor]) -> float:
    """Largest |fastln - torch| of the last hidden state, relative to torch's largest |value|."""
    outs = {}
    for n in ("torch", "fastln"):
        with torch.inference_mode():
            outs[n] = _output(variants.get(n)(**inputs)).float()
    ref = outs["torch"]
    return float((outs["fastln"] - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class Row:
    model: str
    device: str
    dtype: str
    mode: str
    torch_ms: float  # median
    fastln_ms: float
    torch_min_ms: float
    fastln_min_ms: float
    speedup: float  # torch median / fastln median
    speedup_min: float  # torch min / fastln min
    torch_iqr_ms: float
    fastln_iqr_ms: float
    samples: int
    iters_per_sample: int
    norm_share_torch: float
    norm_share_fastln: float
    norm_ms_torch: float
    norm_ms_fastln: float
    norms: int
    swapped: int
    max_rel_diff: float


def _iqr(v: Sequence[float]) -> float:
    if len(v) < 2:
        return 0.0
    q = statistics.quantiles(v, n=4)
    return q[2] - q[0]


def bench_model(name: str, device: torch.device, dtype: torch.dtype, preset: str, *, modes: Sequence[str] = MODES,
                budget_s: float = 10.0, min_rounds: int = 5, max_rounds: int = 200, target_sample_s: float = 0.05,
                share_passes: int = 5, layers: Optional[int] = None, batch: Optional[int] = None,
                seq: Optional[int] = None, log: Callable[[str], None] = lambda s: None) -> tuple[list[Row], dict[str, Any]]:
    t0 = time.perf_counter()
    built = build(name, preset, device, dtype, layers=layers, batch=batch, seq=seq)
    variants = Variants(built.model)
    sync = _sync_fn(device)
    info: dict[str, Any] = {"model": name, "config": built.config, "batch": built.batch, "seq": built.seq,
                            "params": sum(p.numel() for p in built.model.parameters()),
                            "norms": variants.norms, "swapped": variants.swapped, "strategy": variants.strategy,
                            "norm_classes": sorted({type(m).__name__ for m in norm_modules(built.model)})}
    if variants.swapped != variants.norms:
        msg = (f"{name}: replace_norms swapped {variants.swapped} of {variants.norms} norm modules "
               f"({', '.join(info['norm_classes'])}); the fastln column runs torch's for the rest")
        warnings.warn(msg, stacklevel=2)
        info["warning"] = msg
    diff = output_difference(variants, built.inputs)
    log(f"{name}: {info['params'] / 1e6:.1f}M parameters, {built.batch}x{built.seq} tokens, "
        f"{variants.swapped}/{variants.norms} norms swapped, max rel diff {diff:.2e}")
    rows = []
    for mode in modes:
        timing = time_interleaved(variants, built.inputs, mode, sync, budget_s, min_rounds, max_rounds,
                                  target_sample_s)
        shares = {n: norm_share(variants.get(n), built.inputs, mode, sync, share_passes) for n in ("torch", "fastln")}
        s = timing.samples_s
        med = {n: statistics.median(v) for n, v in s.items()}
        mins = {n: min(v) for n, v in s.items()}
        rows.append(Row(name, str(device), str(dtype).removeprefix("torch."), mode,
                        1e3 * med["torch"], 1e3 * med["fastln"], 1e3 * mins["torch"], 1e3 * mins["fastln"],
                        med["torch"] / med["fastln"], mins["torch"] / mins["fastln"],
                        1e3 * _iqr(s["torch"]), 1e3 * _iqr(s["fastln"]), len(s["torch"]),
                        timing.iters_per_sample["torch"],
                        shares["torch"]["norm_share"], shares["fastln"]["norm_share"],
                        shares["torch"]["norm_ms"], shares["fastln"]["norm_ms"],
                        variants.norms, variants.swapped, diff))
        log(f"{name} {mode}: torch {rows[-1].torch_ms:.2f} ms, fastln {rows[-1].fastln_ms:.2f} ms")
    variants.get("torch")
    info["seconds"] = time.perf_counter() - t0
    del variants, built
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, info


def table(rows: Sequence[Row]) -> str:
    w = max([len("model")] + [len(r.model) for r in rows])
    head = (f"{'model':<{w}} {'device':<6} {'dtype':<8} {'mode':<9} {'torch ms':>9} {'fastln ms':>9} "
            f"{'speedup':>7} {'(min)':>6} {'norm% torch':>11} {'norm% fastln':>12} {'swapped':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.model:<{w}} {r.device:<6} {r.dtype:<8} {r.mode:<9} {r.torch_ms:>9.2f} {r.fastln_ms:>9.2f} "
                     f"{r.speedup:>6.3f}x {r.speedup_min:>5.3f}x {100 * r.norm_share_torch:>10.1f}% "
                     f"{100 * r.norm_share_fastln:>11.1f}% {f'{r.swapped}/{r.norms}':>9}")
    return "\n".join(lines)


def _names(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model {unknown[0] if unknown else text!r}; choose from {', '.join(MODELS)} "
            f"(comma-separated, or all)")
    return names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastln bench --model",
                                description="Model-level benchmark: HF models (random weights) with torch's "
                                            "norms vs fastln.replace_norms, interleaved.")
    p.add_argument("--model", type=_names, required=True, metavar="NAME[,NAME...]",
                   help=f"{', '.join(MODELS)}, a comma-separated list, or all")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="default: cuda where a GPU is visible and fastln has CUDA kernels, else cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--mode", choices=(*MODES, "both"), default="both")
    p.add_argument("--tiny", action="store_true", help="tiny configs (tests): a few seconds in all")
    p.add_argument("--layers", type=int, default=None, help="layers (encoder and decoder each for t5)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None)
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of interleaved timing per model and mode (default: cuda 8, cpu 5, tiny 0.2)")
    p.add_argument("--min-rounds", type=int, default=None, help="at least this many samples each (default 7)")
    p.add_argument("--out", default="bench/results", help="directory of the JSON (default bench/results)")
    p.add_argument("--json", default=None, help="JSON path (default OUT/models_DEVICE_DTYPE.json)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # argparse's usage errors: exit 2
        return int(e.code) if isinstance(e.code, int) else 2
    from fastln import _C

    cuda_ok = bool(_C.cuda) and torch.cuda.is_available()
    dev_name = args.device if args.device != "auto" else ("cuda" if cuda_ok else "cpu")
    if dev_name == "cuda" and not cuda_ok:
        why = "fastln is built without CUDA kernels (FASTLN_CUDA=OFF)" if not _C.cuda else "no CUDA device is visible"
        print(f"fastln bench --model: device cuda is not available: {why}", file=sys.stderr)
        return 2
    device = torch.device(dev_name)
    dtype_name = args.dtype or ("bfloat16" if dev_name == "cuda" else "float32")
    dtype = DTYPES[dtype_name]
    try:
        _transformers()
    except MissingTransformers as e:
        print(f"fastln bench --model: {e}", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, device, dtype_name, dtype)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, device: torch.device, dtype_name: str, dtype: torch.dtype) -> int:
    dev_name = device.type
    preset = "tiny" if args.tiny else dev_name
    budget = args.budget if args.budget is not None else (0.2 if args.tiny else 8.0 if dev_name == "cuda" else 5.0)
    min_rounds = args.min_rounds if args.min_rounds is not None else (3 if args.tiny else 7)
    modes = MODES if args.mode == "both" else (args.mode,)
    log: Callable[[str], None] = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    pressure = None
    try:
        pressure = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        pass
    meta: dict[str, Any] = {
        "torch": torch.__version__, "fastln": fastln.__version__, "device": dev_name, "dtype": dtype_name,
        "gpu": torch.cuda.get_device_name(device) if dev_name == "cuda" else None,
        "cpu": cpu_model(), "threads": torch.get_num_threads(), "preset": preset, "budget_s": budget,
        "min_rounds": min_rounds, "has_restore_norms": hasattr(fastln, "restore_norms"),
        "cpu_pressure_before": pressure,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "transformers": _transformers().__version__,
        "method": "interleaved rounds, one sample of k steps per variant per round (order alternating); "
                  "speedup = torch median / fastln median; norm share from hooked passes",
    }
    rows: list[Row] = []
    models: list[dict[str, Any]] = []
    for name in args.model:
        r, info = bench_model(name, device, dtype, preset, modes=modes, budget_s=budget, min_rounds=min_rounds,
                              target_sample_s=0.01 if args.tiny else 0.05,
                              share_passes=5 if dev_name == "cuda" and not args.tiny else 3,
                              layers=args.layers, batch=args.batch, seq=args.seq, log=log)
        rows += r
        models.append(info)
    text = table(rows)
    print(text)
    for info in models:
        if "warning" in info:
            print(f"warning: {info['warning']}")
    print("speedup: torch median / fastln median (min: of minima); norm%: share of the step in norm modules "
          "(hooked passes); at most 1/(1 - share) can be gained")
    # a --tiny run (a smoke test) never replaces the results file of a real run
    name = f"models_{dev_name}_{dtype_name}{'_tiny' if args.tiny else ''}.json"
    path = Path(args.json) if args.json else Path(args.out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "models": models, "results": [asdict(r) for r in rows]}, indent=1,
                               default=_json_default))
    print(f"wrote {path}")
    return 0


def _json_default(o: object) -> object:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


if __name__ == "__main__":
    raise SystemExit(main())
