"""python -m fastln bench --model: the model-level benchmark (fastln.model_bench), with tiny
configs on the CPU; skipped without transformers."""
import json
import sys

import pytest
import torch

import fastln
from fastln import cli, model_bench

FIELDS = ("model", "device", "dtype", "mode", "torch_ms", "fastln_ms", "speedup", "norm_share_torch",
          "norm_share_fastln", "norms", "swapped", "max_rel_diff")


def test_bert_tiny_table_and_json(tmp_path, capsys):
    pytest.importorskip("transformers")
    path = tmp_path / "m.json"  # one thread: see one_thread
    rc = cli.main(["bench", "--model", "bert", "--tiny", "--device", "cpu", "--budget", "0.05",
                   "--min-rounds", "2", "--json", str(path), "--quiet", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    for word in ("model", "device", "dtype", "mode", "torch", "fastln", "speedup", "norm%", "swapped"):
        assert word in header, out
    data = json.loads(path.read_text())
    rows = data["results"]
    assert [r["mode"] for r in rows] == ["inference", "train"]
    for r in rows:
        assert set(FIELDS) <= set(r)
        assert (r["model"], r["device"], r["dtype"]) == ("bert", "cpu", "float32")
        assert r["torch_ms"] > 0 and r["fastln_ms"] > 0 and r["samples"] >= 2
        assert r["speedup"] == pytest.approx(r["torch_ms"] / r["fastln_ms"])
        assert 0 < r["norm_share_torch"] < 1 and 0 < r["norm_share_fastln"] < 1
        # BERT's norms are nn.LayerNorm: all swapped (embeddings + 2 per layer), same outputs
        assert r["norms"] == r["swapped"] == 1 + 2 * 2
        assert r["max_rel_diff"] < 1e-4
        line = next(l for l in out.splitlines() if l.split()[:4] == ["bert", "cpu", "float32", r["mode"]])
        assert line.split()[-1] == "5/5"
    assert data["meta"]["device"] == "cpu" and data["models"][0]["norm_classes"]
    assert f"wrote {path}" in out


def test_hf_norm_classes_are_counted_and_restored():
    # llama's norms are LlamaRMSNorm (HF's own class): counted from the model, whatever
    # replace_norms swaps; after a swap and back, no fastln module is left.
    pytest.importorskip("transformers")
    built = model_bench.build("llama", "tiny", torch.device("cpu"), torch.float32)
    assert len(model_bench.norm_modules(built.model)) == 2 * 2 + 1  # 2 a layer and the final one
    v = model_bench.Variants(built.model)
    assert v.norms == 5 and v.swapped in (0, 5)
    assert sum(model_bench._is_fastln(m) for m in v.get("fastln").modules()) == v.swapped
    assert not any(model_bench._is_fastln(m) for m in v.get("torch").modules())


@pytest.mark.parametrize("name", ["gemma", "cohere", "nemotron"])
def test_every_norm_of_the_decoders_is_swapped(name):
    """Each causal LM of the benchmark builds, and replace_norms swaps all of its norms (the
    model-level numbers would otherwise time torch against torch)."""
    pytest.importorskip("transformers")
    built = model_bench.build(name, "tiny", torch.device("cpu"), torch.float32)
    v = model_bench.Variants(built.model)
    assert v.norms == len(model_bench.norm_modules(built.model)) > 0
    assert v.swapped == v.norms
    out = model_bench._output(v.get("fastln")(**built.inputs))
    ref = model_bench._output(v.get("torch")(**built.inputs))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.fixture
def one_thread():
    # 2 OpenMP threads on a busy 2-core host: a tiny step can take 100x longer
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_unswapped_norms_are_reported(monkeypatch, one_thread):
    # Norms that replace_norms leaves alone: still benchmarked (both columns torch), with a warning.
    pytest.importorskip("transformers")
    monkeypatch.setattr(fastln, "replace_norms", lambda model: 0)
    with pytest.warns(UserWarning, match="swapped 0 of 5 norm modules"):
        rows, info = model_bench.bench_model("bert", torch.device("cpu"), torch.float32, "tiny",
                                             modes=("inference",), budget_s=0.02, min_rounds=2,
                                             target_sample_s=0.001, share_passes=1)
    assert rows[0].swapped == 0 and rows[0].norms == 5 and "warning" in info
    assert rows[0].max_rel_diff == 0


def test_unknown_model(capsys):
    assert cli.main(["bench", "--model", "resnet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet'" in err and all(n in err for n in model_bench.MODELS)


def test_without_transformers(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    assert cli.main(["bench", "--model", "bert", "--tiny", "--device", "cpu"]) == 2
    assert "pip install transformers" in capsys.readouterr().err
