"""python -m fastln bench --model: the model-level benchmark (fastln.model_bench), with tiny
configs on the CPU; skipped without transformers."""
import json
import sys

import pytest

from fastln import cli, model_bench

FIELDS = ("model", "device", "dtype", "mode", "torch_ms", "fastln_ms", "speedup", "norm_share_torch",
          "norm_share_fastln", "norms", "swapped", "max_rel_diff")


def test_bert_tiny_table_and_json(tmp_path, capsys):
    pytest.importorskip("transformers")
    path = tmp_path / "m.json"
    rc = cli.main(["bench", "--model", "bert", "--tiny", "--device", "cpu", "--budget", "0.05",
                   "--min-rounds", "2", "--json", str(path), "--quiet"])
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


def test_unswapped_norms_are_reported(tmp_path, capsys):
    # The norm count comes from the model, the swapped count from replace_norms: a model whose
    # norms replace_norms does not know is still benchmarked, with a warning.
    pytest.importorskip("transformers")
    built = model_bench.build("llama", "tiny", model_bench.torch.device("cpu"), model_bench.torch.float32)
    assert len(model_bench.norm_modules(built.model)) == 2 * 2 + 1  # 2 a layer and the final one


def test_unknown_model(capsys):
    assert cli.main(["bench", "--model", "resnet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet'" in err and all(n in err for n in model_bench.MODELS)


def test_without_transformers(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    assert cli.main(["bench", "--model", "bert", "--tiny", "--device", "cpu"]) == 2
    assert "pip install transformers" in capsys.readouterr().err
