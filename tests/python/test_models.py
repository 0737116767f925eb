"""fastln.replace_norms on real models: Hugging Face transformers (random weights from small
configs, nothing downloaded), against the same models unswapped.

Per family: the count of swapped modules equals the count of norm modules; outputs and every
parameter's gradient match the original's (float32: within float32 rounding; bfloat16: mean
error against the float32 model no worse than the original bfloat16 model's); gradient
checkpointing (reentrant and not) and selective activation checkpointing; torch.compile
(fullgraph) and torch.export; save_pretrained / from_pretrained then swap again; restore_norms;
ONNX export through onnxruntime.
"""
import copy
import functools
import warnings

import pytest
import torch

import fastln
from fastln.swap import spec_of

transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install '.[test]')")

V = 96  # vocabulary


def _cfg(name):
    T = transformers
    lm = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=V, max_position_embeddings=64)
    if name == "llama":
        return T.LlamaForCausalLM(T.LlamaConfig(**lm)), "LlamaRMSNorm"
    if name == "qwen2":
        return T.Qwen2ForCausalLM(T.Qwen2Config(**lm)), "Qwen2RMSNorm"
    if name == "mistral":
        return T.MistralForCausalLM(T.MistralConfig(**lm)), "MistralRMSNorm"
    if name == "gemma":
        return T.GemmaForCausalLM(T.GemmaConfig(**lm, head_dim=16)), "GemmaRMSNorm"
    if name == "olmo2":
        return T.Olmo2ForCausalLM(T.Olmo2Config(**lm)), "Olmo2RMSNorm"
    if name == "cohere":
        return T.CohereForCausalLM(T.CohereConfig(**lm)), "CohereLayerNorm"
    if name == "nemotron":
        return T.NemotronForCausalLM(T.NemotronConfig(**lm, head_dim=16)), "NemotronLayerNorm1P"
    if name == "olmo":
        return T.OlmoForCausalLM(T.OlmoConfig(**lm)), "OlmoLayerNorm"
    if name == "t5":
        return T.T5Model(T.T5Config(d_model=64, d_ff=96, num_layers=2, num_heads=4, d_kv=16, vocab_size=V,
                                    dropout_rate=0.0)), "T5LayerNorm"
    if name == "bert":
        return T.BertModel(T.BertConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, vocab_size=V, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)), "LayerNorm"
    if name == "deberta":
        return T.DebertaModel(T.DebertaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                              num_attention_heads=4, vocab_size=V, hidden_dropout_prob=0.0,
                                              attention_probs_dropout_prob=0.0)), "DebertaLayerNorm"
    if name == "gpt2":
        return T.GPT2Model(T.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=V, resid_pdrop=0.0,
                                        embd_pdrop=0.0, attn_pdrop=0.0)), "LayerNorm"
    if name == "convnext":
        return T.ConvNextModel(T.ConvNextConfig(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2,
                                                image_size=32)), "ConvNextLayerNorm"
    raise ValueError(name)


FAMILIES = ["llama", "qwen2", "mistral", "gemma", "olmo2", "olmo", "nemotron", "cohere", "t5", "bert", "deberta",
            "gpt2", "convnext"]


def _model(name, seed=0):
    torch.manual_seed(seed)
    model, norm_cls = _cfg(name)
    # Norm weights away from their init (ones / zeros), so that a wrong offset or a missing weight shows.
    with torch.no_grad():
        for mod in model.modules():
            if type(mod).__name__ == norm_cls or isinstance(mod, torch.nn.LayerNorm):
                for p in mod.parameters(recurse=False):
                    p.normal_(0.2 if p.dim() else 0.0, 0.5)
    return model.eval(), norm_cls


def _inputs(name, seed=1):
    g = torch.Generator().manual_seed(seed)
    if name == "convnext":
        return {"pixel_values": torch.randn(2, 3, 32, 32, generator=g)}
    ids = torch.randint(0, V, (2, 12), generator=g)
    if name == "t5":
        return {"input_ids": ids, "decoder_input_ids": ids}
    if name in ("bert", "deberta", "gpt2"):
        return {"input_ids": ids}
    return {"input_ids": ids, "use_cache": False}  # causal LMs: no KV cache object in the outputs (export)


def _out(model, inputs):
    out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _run(model, inputs):
    """The output and every parameter's gradient of a scalar loss."""
    model.zero_grad(set_to_none=True)
    y = _out(model, inputs)
    (y.float() * torch.linspace(-1, 1, y.shape[-1])).square().mean().backward()
    return y.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _count_norms(model, norm_cls):
    """How many modules are exactly of the model's norm class (named norm_cls) or torch's."""
    return sum(1 for m in model.modules() if (type(m).__name__ == norm_cls and type(m).__module__ != "fastln.modules")
               or type(m) in (torch.nn.LayerNorm, torch.nn.RMSNorm))


def _assert_close_run(a, b, rtol=1e-5, atol=1e-5):
    (ya, ga), (yb, gb) = a, b
    torch.testing.assert_close(ya, yb, rtol=rtol, atol=atol)
    assert ga.keys() == gb.keys()
    # each gradient to its own scale, but not below a thousandth of the largest (some are zero
    # in exact arithmetic, e.g. attention key biases, and only rounding noise in float)
    top = max(g.abs().max().item() for g in ga.values())
    for k in ga:
        scale = max(ga[k].abs().max().item(), 1e-3 * top)
        torch.testing.assert_close(ga[k], gb[k], rtol=rtol, atol=atol * scale, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("name", FAMILIES)
def test_swap_matches_the_original_float32(name):
    model, norm_cls = _model(name)
    inputs = _inputs(name)
    ref = _run(model, inputs)
    n_norms = _count_norms(model, norm_cls)
    assert n_norms > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every norm of these models is recognised
        assert fastln.replace_norms(model) == n_norms
    assert _count_norms(model, norm_cls) == 0
    _assert_close_run(_run(model, inputs), ref)
    assert fastln.replace_norms(model) == 0  # already swapped
    assert fastln.restore_norms(model) == n_norms
    assert _count_norms(model, norm_cls) == n_norms
    y, _ = _run(model, inputs)
    assert torch.equal(y, ref[0])  # the original computation again, bit for bit


def test_pickle_and_deepcopy_of_a_swapped_model(tmp_path):
    model, _ = _model("gemma")
    inputs = _inputs("gemma")
    n = fastln.replace_norms(model)
    ref = _out(model, inputs).detach()
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    for other in (loaded, copy.deepcopy(model)):
        assert sum(1 for m in other.modules() if type(m).__module__ == "fastln.swap") == n
        torch.testing.assert_close(_out(other, inputs), ref, rtol=0, atol=0)
        assert fastln.restore_norms(other) == n


def test_repr_says_fastln():
    model, _ = _model("llama")
    before = repr(model)
    fastln.replace_norms(model)
    after = repr(model)
    assert "fastln[hf-llama]:LlamaRMSNorm((64,), eps=1e-06)" in after and "fastln" not in before
    bert, _ = _model("bert")
    fastln.replace_norms(bert)
    assert "fastln.LayerNorm((64,)" in repr(bert)


@pytest.mark.parametrize("name", ["llama", "gemma", "t5", "bert"])
def test_bfloat16_error_no_worse_than_the_original(name):
    model32, _ = _model(name)
    inputs = _inputs(name)
    y32, g32 = _run(model32, inputs)
    orig = copy.deepcopy(model32).to(torch.bfloat16)
    swapped = copy.deepcopy(orig)
    fastln.replace_norms(swapped)
    yo, go = _run(orig, inputs)
    ys, gs = _run(swapped, inputs)

    def err(a, b):
        return (a.double() - b.double()).abs().mean().item()

    # The swapped norms round once where the originals may round twice: their error is at most
    # the original's (5% slack: the rest of the model's rounding differs after the first norm).
    assert err(ys, y32) <= 1.05 * err(yo, y32)
    total_o = sum(err(go[k], g32[k]) / (g32[k].abs().mean().item() + 1e-12) for k in g32)
    total_s = sum(err(gs[k], g32[k]) / (g32[k].abs().mean().item() + 1e-12) for k in g32)
    assert total_s <= 1.05 * total_o


@pytest.mark.parametrize("name,cls_path", [
    ("llama", "transformers.models.llama.modeling_llama.LlamaRMSNorm"),
    ("t5", "transformers.models.t5.modeling_t5.T5LayerNorm"),
    ("gemma", "transformers.models.gemma.modeling_gemma.GemmaRMSNorm"),
    ("olmo2", "transformers.models.olmo2.modeling_olmo2.Olmo2RMSNorm"),
    ("nemotron", "transformers.models.nemotron.modeling_nemotron.NemotronLayerNorm1P"),
    ("videoprism", "transformers.models.videoprism.modeling_videoprism.VideoPrismLayerNorm"),
])
def test_bfloat16_norm_error_no_worse_than_the_original(name, cls_path):
    """The promise at the norm itself, without the slack of a whole model: fastln's swapped
    norm in bfloat16 is at least as close to the float32 norm as the original bfloat16 norm
    (mean absolute error over 64 rows of 512, several seeds)."""
    import importlib
    mod, cls_name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(mod), cls_name)
    for seed in range(3):
        torch.manual_seed(seed)
        norm32 = cls(512)
        with torch.no_grad():
            norm32.weight.normal_(0.2, 0.5)
        x = 3 * torch.randn(64, 512)
        ref = norm32(x).double()
        orig = copy.deepcopy(norm32).to(torch.bfloat16)
        swapped = copy.deepcopy(orig)
        assert fastln.replace_norms(swapped) == 1
        xb = x.bfloat16()
        err_orig = (orig(xb).double() - ref).abs().mean().item()
        err_swapped = (swapped(xb).double() - ref).abs().mean().item()
        # Llama and T5 round twice (x̂ to bf16, then the product): fastln's single rounding is
        # clearly closer. Gemma and Olmo2 round once, as fastln: equal up to the float32 noise
        # of the statistics (reduction order), far below a rounding step of bf16.
        assert err_swapped <= err_orig * (1 + 1e-3), (seed, err_swapped, err_orig)


@pytest.mark.parametrize("name", ["llama", "bert", "t5", "nemotron"])
@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing(name, reentrant):
    model, _ = _model(name)
    inputs = _inputs(name)
    fastln.replace_norms(model)
    ref = _run(model.train(), inputs)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    _assert_close_run(_run(model, inputs), ref)  # T5 with checkpointing differs in rounding, as unswapped


_SAVED = []


def _sac_policy(ctx, op, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy
    # the ops selective checkpointing sees under autograd: the norms' forward ops
    norms = (torch.ops.fastln.rms_norm_fwd.default, torch.ops.fastln.layer_norm_fwd.default,
             torch.ops.fastln.add_norm_fwd.default)
    if op in norms:
        _SAVED.append(op)
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.MUST_SAVE if op == torch.ops.aten.mm.default else CheckpointPolicy.PREFER_RECOMPUTE


@pytest.mark.parametrize("compiled", [False, True])
def test_selective_activation_checkpointing(compiled):
    from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts
    model, _ = _model("llama")
    fastln.replace_norms(model)
    model.train()
    inputs = _inputs("llama")
    ref = _run(model, inputs)
    context_fn = functools.partial(create_selective_checkpoint_contexts, _sac_policy)

    def fwd(ids):
        return model(input_ids=ids).logits

    def run(ids):
        return checkpoint(fwd, ids, use_reentrant=False, context_fn=context_fn)

    if compiled:
        torch._dynamo.reset()
        run = torch.compile(run, fullgraph=False)
    _SAVED.clear()
    model.zero_grad(set_to_none=True)
    y = run(inputs["input_ids"])
    (y.float() * torch.linspace(-1, 1, y.shape[-1])).square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    _assert_close_run((y.detach(), grads), ref, rtol=1e-5, atol=1e-5)
    assert _SAVED, "the policy never saw a fastln norm op"


@pytest.mark.parametrize("name", ["llama", "bert", "nemotron", "cohere"])
def test_compile_fullgraph_and_export(name):
    model, _ = _model(name)
    inputs = _inputs(name)
    fastln.replace_norms(model)
    ref = _out(model, inputs).detach()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(_out(compiled, inputs), ref, rtol=1e-5, atol=1e-5)
    ep = torch.export.export(model, (), inputs)
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("fastln.") for t in targets), targets
    out = ep.module()(**inputs)
    torch.testing.assert_close(out.logits if hasattr(out, "logits") else out.last_hidden_state, ref)


def test_save_pretrained_from_pretrained_then_swap_again(tmp_path):
    model, norm_cls = _model("gemma")
    inputs = _inputs("gemma")
    n = fastln.replace_norms(model)
    ref = _out(model, inputs).detach()
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    # from_pretrained builds the model's own classes: torch's computation, the same weights
    assert _count_norms(loaded, norm_cls) == n
    torch.testing.assert_close(_out(loaded, inputs), ref, rtol=1e-5, atol=1e-5)
    assert fastln.replace_norms(loaded) == n
    torch.testing.assert_close(_out(loaded, inputs), ref, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["llama", "gemma", "bert", "nemotron", "cohere"])
def test_onnx_export_runs_in_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install '.[test]')")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install '.[test]')")
    model, _ = _model(name)
    inputs = _inputs(name)
    fastln.replace_norms(model)
    ref = _out(model, inputs).detach()
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (), str(path), kwargs=inputs, dynamo=True, verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name].numpy() for i in sess.get_inputs()}
    got = torch.from_numpy(sess.run(None, feeds)[0])
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # the model still runs fastln's kernels after the export
    assert any(type(m).__module__ == "fastln.swap" or type(m).__module__ == "fastln.modules"
               for m in model.modules())


def test_every_copy_of_the_llama_norm_is_recognised():
    """transformers copies LlamaRMSNorm into model after model: every class whose code is the
    same is swapped; the Gemma, T5, Olmo and ConvNext forms map to their semantics."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.mistral.modeling_mistral import MistralRMSNorm
    from transformers.models.phi3.modeling_phi3 import Phi3RMSNorm
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm
    from transformers.models.t5.modeling_t5 import T5LayerNorm
    for cls in (LlamaRMSNorm, MistralRMSNorm, Phi3RMSNorm, Qwen3RMSNorm):
        assert spec_of(cls).name == "hf-llama", cls
    assert spec_of(GemmaRMSNorm).weight_offset == 1.0
    assert spec_of(T5LayerNorm).name == "hf-t5"


def _norm_1p(cls_path, dtype=torch.float32, device="cpu"):
    """A `weight + 1` LayerNorm of transformers (Nemotron's, VideoPrism's), weight and bias away
    from their init, and its swapped copy."""
    norm = _form(cls_path, dict(normalized_shape=64)).to(device, dtype)
    swapped = copy.deepcopy(norm)
    assert fastln.replace_norms(swapped) == 1
    return norm, swapped


def _out_and_grads(norm, x):
    """The output, and the gradients of the input and of each parameter, of a scalar loss."""
    x = x.detach().requires_grad_()
    y = norm(x)
    y.float().mul(torch.linspace(-1, 1, y.shape[-1], device=y.device)).square().sum().backward()
    return (y, x.grad, *(p.grad for p in norm.parameters()))


_ONE_P = ["nemotron.modeling_nemotron.NemotronLayerNorm1P", "videoprism.modeling_videoprism.VideoPrismLayerNorm"]


@pytest.mark.parametrize("cls_path", _ONE_P)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weight_plus_one_layer_norms(cls_path, dtype):
    """Nemotron's and VideoPrism's LayerNorm scale by `weight + 1.0`, added in the weight's
    dtype (a bf16 weight's 1 + w rounds to bf16): the swapped norm adds it the same way. Its
    output and the gradients of the input, weight and bias: float32, the original's within
    rounding; bf16, against the same norm in float64 (from the same bf16 values), no worse than
    the original's (mean error; bf16 gradients of 32 rows differ by a rounding step or two)."""
    norm, swapped = _norm_1p(cls_path, dtype)
    assert type(swapped).__module__ == "fastln.swap" and spec_of(type(norm)).offset_first
    x = _rows(dtype)
    got, ref = _out_and_grads(swapped, x), _out_and_grads(norm, x)
    if dtype == torch.float32:
        for a, b in zip(got, ref):  # the rows of scale 1e-3 give dx ~1e3 times their rounding
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())
    else:
        exact = _out_and_grads(copy.deepcopy(norm).double(), x.double())
        for name, a, b, e in zip(("y", "dx", "dweight", "dbias"), got, ref, exact):
            err, err_orig = ((t.double() - e).abs().mean().item() for t in (a, b))
            assert err <= err_orig * 1.05 + 1e-6, (name, err, err_orig)
    # the offset is the weight's own add: with the weight 1 + w and no offset, the same bits
    plain = torch.nn.LayerNorm(64, dtype=dtype)
    with torch.no_grad():
        plain.weight.copy_(norm.weight + 1.0)
        plain.bias.copy_(norm.bias)
    fastln.replace_norms(plain)
    assert torch.equal(swapped(x), plain(x))


def _rows(dtype, device="cpu"):
    """32 rows of 64 whose scales run from 1e-3 to 3: eps (1e-5 or 1e-6 here) shows in the
    small rows' statistics, so a wrong epsilon attribute fails."""
    torch.manual_seed(1)
    return (torch.randn(32, 64) * torch.logspace(-3, 0.5, 32)[:, None]).to(device, dtype)


def test_nemotron_norm_casts_as_the_original_while_cuda_autocast_is_on():
    """Nemotron's norm casts x, weight + 1.0 and the bias to autocast's dtype while CUDA's
    autocast is on (torch.is_autocast_enabled() asks CUDA's), for tensors on x's device, then
    runs the norm with autocast off. Here on the CPU (CUDA's flag set by hand, CPU tensors cast
    to the CPU's autocast dtype): the swapped norm's output is bf16 and is, bit for bit,
    fastln's layer_norm of the cast tensors, with 1 added before the cast."""
    norm, swapped = _norm_1p(_ONE_P[0])
    x = _rows(torch.float32)
    was = torch.is_autocast_enabled("cuda")
    torch.set_autocast_enabled("cuda", True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the CPU's autocast dtype: bf16
            got, ref = swapped(x), norm(x)
    finally:
        torch.set_autocast_enabled("cuda", was)
    assert got.dtype == ref.dtype == torch.bfloat16
    want = fastln.layer_norm(x.bfloat16(), (64,), (norm.weight + 1.0).bfloat16(), norm.bias.bfloat16(), norm.eps)
    assert torch.equal(got, want)
    torch.testing.assert_close(got, ref, rtol=1.6e-2, atol=1e-2)


def test_nemotron_norm_on_meta_and_without_weight():
    """On the meta device (no autocast there) the swapped norm gives the original's shape and
    dtype; built without a weight (weight + 1.0 raises in the original), it is left alone."""
    norm, swapped = _norm_1p(_ONE_P[0])
    meta = copy.deepcopy(swapped).to("meta")
    y = meta(torch.empty(4, 64, device="meta"))
    assert y.device.type == "meta" and y.shape == (4, 64) and y.dtype == torch.float32
    bare = _form(_ONE_P[0], dict(normalized_shape=64, elementwise_affine=False))
    with pytest.warns(UserWarning, match="settings it does not compute"):
        assert fastln.replace_norms(bare) == 0
    with pytest.raises(TypeError):
        bare(torch.randn(2, 64))


@pytest.mark.skipif(not (torch.cuda.is_available() and fastln._C.cuda), reason="needs CUDA and fastln's CUDA kernels")
@pytest.mark.parametrize("path,kwargs", [
    ("cohere.modeling_cohere.CohereLayerNorm", dict(hidden_size=64)),
    ("olmo.modeling_olmo.OlmoLayerNorm", dict(hidden_size=64)),
    ("videoprism.modeling_videoprism.VideoPrismLayerNorm", dict(normalized_shape=64)),
    ("moshi.modeling_moshi.MoshiRMSNorm", (64,)),
    ("deberta.modeling_deberta.DebertaLayerNorm", dict(size=64)),
    ("ergo.modeling_ergo.ErgoRMSNorm", dict(hidden_size=64, eps=1e-6)),
    ("vitdet.modeling_vitdet.VitDetLayerNorm", dict(normalized_shape=64)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forms_under_cuda_autocast(path, kwargs, dtype):
    """Under CUDA autocast (bf16) each swapped norm returns the original's dtype: Cohere and
    Olmo compute in float32 and return the input's dtype whatever autocast says (fastln's
    layer_norm alone would follow torch's float32 policy), VideoPrism's F.layer_norm follows
    that policy; values within bf16 rounding of the original's."""
    norm = _form(path, kwargs).cuda()
    swapped = copy.deepcopy(norm)
    assert fastln.replace_norms(swapped) == 1
    x = _input_of(path, dtype, "cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got, ref = swapped(x), norm(x)
    assert got.dtype == ref.dtype
    torch.testing.assert_close(got.float(), ref.float(), rtol=1.6e-2, atol=1e-2)


@pytest.mark.skipif(not (torch.cuda.is_available() and fastln._C.cuda), reason="needs CUDA and fastln's CUDA kernels")
def test_nemotron_norm_under_cuda_autocast_casts_as_the_original():
    """Under CUDA autocast Nemotron's norm casts the input, weight + 1 and the bias to bf16
    first: the swapped norm returns bf16 too, with the original's values and gradients."""
    norm, swapped = _norm_1p(_ONE_P[0], device="cuda")
    x = 3 * torch.randn(32, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got, ref = _out_and_grads(swapped, x), _out_and_grads(norm, x)
    assert got[0].dtype == ref[0].dtype == torch.bfloat16
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1.6e-2, atol=1e-2)


# More forms of transformers 5.x: (class, constructor arguments, the spec's repr tag)
_FORMS = [
    ("cohere.modeling_cohere.CohereLayerNorm", dict(hidden_size=64), "hf-cohere"),
    ("cohere2.modeling_cohere2.Cohere2LayerNorm", dict(hidden_size=64), "hf-cohere"),
    ("llama4.modeling_llama4.Llama4TextRMSNorm", dict(hidden_size=64), "hf-llama"),
    ("moshi.modeling_moshi.MoshiRMSNorm", (64,), "hf-moshi"),
    ("qwen4_exp.modeling_qwen4_exp.Qwen4ExpTextRMSNorm", (64,), "hf-gemma"),
    ("deepseek_v4.modeling_deepseek_v4.DeepseekV4UnweightedRMSNorm", dict(eps=1e-6), "hf-unweighted"),
    ("deberta.modeling_deberta.DebertaLayerNorm", dict(size=64), "hf-deberta"),
    ("ergo.modeling_ergo.ErgoRMSNorm", dict(hidden_size=64, eps=1e-6), "hf-ergo"),
    ("squeezebert.modeling_squeezebert.SqueezeBertLayerNorm", dict(hidden_size=64), "hf-squeezebert"),
    ("vitdet.modeling_vitdet.VitDetLayerNorm", dict(normalized_shape=64), "hf-vitdet"),
]
_CHANNELS_FIRST = {"SqueezeBertLayerNorm": 3, "VitDetLayerNorm": 4}  # their inputs: (N, C, W), (N, C, H, W)


def _input_of(path, dtype, device="cpu"):
    """_rows' values in the layout the class normalizes: 64 channels in dim 1 where it wants it."""
    x = _rows(dtype, device)
    rank = _CHANNELS_FIRST.get(path.rsplit(".", 1)[1])
    if rank == 3:
        return x.reshape(2, 16, 64).transpose(1, 2)
    if rank == 4:
        return x.reshape(2, 4, 4, 64).permute(0, 3, 1, 2)
    return x


def _form(path, kwargs):
    """A transformers norm class built from kwargs, or from positional arguments (a tuple) where
    versions name the size differently (Moshi's and Qwen4Exp's: 5.17 `dim`, 5.25 `hidden_size`)."""
    import importlib
    mod, name = f"transformers.models.{path}".rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError):
        pytest.skip(f"{name} is not in transformers {transformers.__version__}")
    torch.manual_seed(0)
    norm = cls(*kwargs) if isinstance(kwargs, tuple) else cls(**kwargs)
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_(0.2, 0.5)  # away from the init (ones / zeros): a wrong offset or weight shows
    return norm


@pytest.mark.parametrize("path,kwargs,tag", _FORMS, ids=[f[0].rsplit(".", 1)[1] for f in _FORMS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, "bfloat16+float32"])
def test_more_hf_norm_forms(path, kwargs, tag, dtype):
    """Cohere's LayerNorm, Llama 4's, Moshi's, Qwen4Exp's and DeepSeek-V4's unweighted RMSNorm,
    DeBERTa's LayerNorm, Ergo's RMSNorm, SqueezeBERT's and VitDet's channels-first LayerNorms:
    recognised by their code, and the swapped norm's output and the gradients of the input and
    every parameter are the original's: float32, within rounding; bf16, against the float64
    norm (from the same values) no worse than the original's (mean error), as fastln rounds
    once where some of these round twice."""
    mixed = dtype == "bfloat16+float32"  # a 16-bit model keeping its norm weights in float32
    dtype = torch.bfloat16 if mixed else dtype
    norm = _form(path, kwargs).to(torch.float32 if mixed else dtype)
    swapped = copy.deepcopy(norm)
    assert fastln.replace_norms(swapped) == 1
    assert repr(swapped).startswith(f"fastln[{tag}]")
    x = _input_of(path, dtype)
    got, ref = _out_and_grads(swapped, x), _out_and_grads(norm, x)
    assert got[0].dtype == ref[0].dtype
    if dtype == torch.float32:
        for a, b in zip(got, ref):  # the rows of scale 1e-3 give dx ~1e3 times their rounding
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())
    else:
        exact = _out_and_grads(copy.deepcopy(norm).double(), x.double())
        for i, (a, b, e) in enumerate(zip(got, ref, exact)):
            err, err_orig = ((t.double() - e).abs().mean().item() for t in (a, b))
            assert err <= err_orig * 1.05 + 1e-6, (i, err, err_orig)


def test_forms_left_alone_where_they_compute_something_else():
    """Cohere's QK norm (a weight per head: (heads, head_dim)) and Qwen4Exp's grouped norm run
    their own code, also where the setting changes after the swap."""
    qk = _form("cohere.modeling_cohere.CohereLayerNorm", dict(hidden_size=(4, 16)))
    grouped = _form("qwen4_exp.modeling_qwen4_exp.Qwen4ExpTextRMSNorm", (64, 16))
    for norm in (qk, grouped):
        with pytest.warns(UserWarning, match=type(norm).__name__):
            assert fastln.replace_norms(norm) == 0
    x = _rows(torch.float32)
    norm = _form("qwen4_exp.modeling_qwen4_exp.Qwen4ExpTextRMSNorm", (64,))
    swapped = copy.deepcopy(norm)
    assert fastln.replace_norms(swapped) == 1
    norm.group_size = swapped.group_size = 16
    torch.testing.assert_close(swapped(x), norm(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cohere"])
def test_swap_matches_the_original_bfloat16_model(name):
    """A whole bf16 Cohere model (its LayerNorm without bias, in float32): swapped, its
    logits are as close to the float32 model's as the original bf16 model's."""
    model32, norm_cls = _model(name)
    inputs = _inputs(name)
    ref = _out(model32, inputs).double()
    orig = copy.deepcopy(model32).to(torch.bfloat16)
    swapped = copy.deepcopy(orig)
    assert fastln.replace_norms(swapped) == _count_norms(orig, norm_cls) > 0
    err_orig, err = ((_out(m, inputs).double() - ref).abs().mean().item() for m in (orig, swapped))
    assert err <= err_orig * 1.1, (err, err_orig)


def test_unrecognised_norm_is_left_alone_with_a_warning():
    class MyRMSNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(8))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight * 2

    model = torch.nn.Sequential(MyRMSNorm(), torch.nn.LayerNorm(8))
    with pytest.warns(UserWarning, match="MyRMSNorm"):
        assert fastln.replace_norms(model) == 1
    assert type(model[0]) is MyRMSNorm
    # registered, it is swapped, and computes what the spec says
    fastln.register_norm(MyRMSNorm, fastln.NormSpec("rms", "mine", eps=1e-6, weight_offset=0.0))
    fastln.restore_norms(model)
    x = torch.randn(3, 8)
    ref = model[0](x) / 2
    assert fastln.replace_norms(model) == 2
    torch.testing.assert_close(model[0](x), ref)


def test_a_module_with_its_own_forward_is_left_alone():
    """HF kernels' kernelize sets a forward on the instance: the class's code no longer runs."""
    model, _ = _model("llama")
    norm = model.model.norm
    norm.forward = lambda x: x
    with pytest.warns(UserWarning, match="instance forward"):
        assert fastln.replace_norms(model) == 4  # the other four
    assert type(norm).__module__ != "fastln.swap"


def test_timm_layer_norms():
    timm_norm = pytest.importorskip("timm.layers.norm", reason="timm not installed (it needs torchvision)")
    x = torch.randn(2, 8, 5, 5)
    for cls, inp in ((timm_norm.LayerNorm2d, x), (timm_norm.LayerNorm, x.permute(0, 2, 3, 1))):
        m = cls(8)
        with torch.no_grad():
            m.weight.normal_()
            m.bias.normal_()
        ref = m(inp)
        assert fastln.replace_norms(m) == 1
        torch.testing.assert_close(m(inp), ref)


def test_sentence_transformers_encode_and_train_step(tmp_path):
    """sentence-transformers on a BERT with random weights (saved here, nothing downloaded):
    embeddings and every parameter's gradient of a cosine loss, swapped against unswapped."""
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed (pip install '.[test]')")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(V - 5)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    bert, _ = _model("bert")
    bert.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no sentence-transformers model found: mean pooling"
        model = st.SentenceTransformer(str(tmp_path), device="cpu")
    sentences = ["w1 w2 w3 w4", "w5 w6 w7", "w8 w9 w10 w11 w12"]

    def step(m):
        m.zero_grad(set_to_none=True)
        features = m.tokenize(sentences)
        emb = m(features)["sentence_embedding"]
        torch.nn.functional.cosine_similarity(emb[0:1], emb[1:]).sum().backward()
        return emb.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    # The cosine loss of three short sentences is ill-conditioned: torch's own float32 gradients
    # are ~1e-4 of each gradient's scale from the float64 ones (sentence-transformers 6.3), so
    # fastln's are judged against a float64 copy of the model, beside torch's float32 ones.
    exact = step(copy.deepcopy(model).double())
    ref_encoded = model.encode(sentences, convert_to_tensor=True)
    ref = step(model)
    n = sum(1 for m in model.modules() if type(m) is torch.nn.LayerNorm)
    assert n == 2 * 2 + 1  # two per layer (2 layers) and the embeddings'
    assert fastln.replace_norms(model) == n
    assert sum(1 for m in model.modules() if type(m) is fastln.LayerNorm) == n
    torch.testing.assert_close(model.encode(sentences, convert_to_tensor=True), ref_encoded, rtol=1e-5, atol=1e-6)
    ours = step(model)
    assert ours[1].keys() == ref[1].keys() == exact[1].keys()
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-6)
    top = max(g.abs().max().item() for g in exact[1].values())

    def worst(run):  # the largest gradient error against float64, each to its own scale
        return max((g.double() - exact[1][k]).abs().max().item() / max(exact[1][k].abs().max().item(), 1e-3 * top)
                   for k, g in run[1].items())

    # Within twice torch's error, or within 5e-4: torch's error is itself one rounding's luck on this
    # loss (here 0.93e-4 against fastln's 1.35e-4; on the device's CPU and torch 2.11, 0.56e-4 against
    # 1.89e-4), while a wrong gradient is off by its own scale.
    assert worst(ours) <= max(2 * worst(ref), 5e-4), (worst(ours), worst(ref))
