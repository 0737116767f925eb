"""python -m fastln: info, check and bench, as a user runs them (subprocesses, exit codes)."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import fastln
from fastln import cli


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastln", *args], capture_output=True, text=True,
                          timeout=600)


def test_info():
    p = run("info")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert fastln.__version__ in out
    assert f"torch (running)        {torch.__version__}" in out
    assert f"torch (built against)  {fastln._build_info.torch_version}" in out
    assert f"CPU kernels in use     {fastln._C.isa()}" in out
    assert ", ".join(fastln._C.available_isas()) in out
    for name in ("compiler", "threads", "CUDA kernels", "GPU"):
        assert name in out
    # the build's CUDA decision and why (tools/fastln_cuda.cmake, through _build_info)
    bi = fastln._build_info
    assert f"CUDA build decision    FASTLN_CUDA={bi.cuda_mode}: {bi.cuda_reason}" in out
    if fastln._C.cuda:
        assert f"CUDA kernels           built for {fastln._C.cuda_archs} with CUDA {bi.cuda_version}" in out
    else:
        assert "CUDA kernels           not built" in out


def test_info_reports_forced_isa():
    p = subprocess.run([sys.executable, "-m", "fastln", "info"], capture_output=True, text=True,
                       env={**os.environ, "FASTLN_ISA": "base"}, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "CPU kernels in use     base (FASTLN_ISA=base)" in p.stdout


def test_check_passes():
    p = run("check", "--device", "cpu")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [l for l in p.stdout.splitlines() if l.startswith(("layer_norm", "rms_norm"))]
    assert lines and all(l.endswith("ok") for l in lines), p.stdout
    n = len(cli._cases(["cpu"]))
    assert len(lines) == n and f"{n}/{n} cases passed on cpu" in p.stdout


@pytest.mark.parametrize("wrong", ["scaled", "nan"])
def test_check_fails_on_a_wrong_result(monkeypatch, capsys, wrong):
    # The same table code, with fastln's layer_norm 5% off or with one NaN: exit 1, FAIL rows.
    def off(x, ns, w, b):
        y = fastln.layer_norm(x, ns, w, b)
        if wrong == "scaled":
            return y * 1.05
        nan = torch.zeros_like(y)
        nan.view(-1)[0] = float("nan")
        return y + nan

    ops = [cli.Op("layer_norm", off, cli._ops()[0].torch, True)]
    monkeypatch.setattr(cli, "_ops", lambda: ops)
    assert cli.main(["check", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    n = len(cli._cases(["cpu"]))
    assert out.count("FAIL") == n and f"0/{n} cases passed" in out


def test_check_unavailable_device():
    if fastln._C.cuda and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    p = run("check", "--device", "cuda")
    assert p.returncode == 2
    assert "not available" in p.stderr


def test_no_command_is_a_usage_error():
    p = run()
    assert p.returncode == 2 and "usage" in p.stderr


def test_bench_delegates_to_the_benchmark_suite():
    if importlib.util.find_spec("fastln.benchmark") is None:
        p = run("bench", "--quick")
        assert p.returncode == 2
        assert "no benchmark suite" in p.stderr
    else:  # its options are fastln.benchmark's own
        p = run("bench", "--help")
        assert p.returncode == 0, p.stderr
        assert all(opt in p.stdout for opt in ("--quick", "--device", "--out"))


@pytest.mark.skipif(importlib.util.find_spec("fastln.benchmark") is None, reason="no benchmark suite")
def test_bench_runs_the_shapes_and_dtypes_asked_for(tmp_path):
    import json
    p = run("bench", "--shapes", "8x64", "--dtypes", "float32", "--no-compile", "--budget", "0.01",
            "--no-progress", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "cpu.json").read_text())["results"]
    assert {(r["suite"], r["op"]) for r in rows} == {("user", "layer_norm")}  # --shapes alone: the main suite
    assert {(r["dtype"], r["M"], r["N"], r["phase"]) for r in rows} == {("float32", 8, 64, "e2e")}
    assert {(r["impl"], r["mode"]) for r in rows} == {(i, m) for i in ("fastln", "torch", "baseline")
                                                       for m in ("fwd", "fwd+bwd")}
    for bad in (["--shapes", "8y64"], ["--shapes", "0x64"], ["--dtypes", "float64"]):
        p = run("bench", *bad)
        assert p.returncode == 2 and "error: argument" in p.stderr, (bad, p.stderr)
    p = run("bench", "--suites", "nope")
    assert p.returncode == 2 and "no suite 'nope' on cpu" in p.stderr


@pytest.mark.skipif(importlib.util.find_spec("fastln.benchmark") is None, reason="no benchmark suite")
def test_bench_quick_writes_table_json_and_plots(tmp_path):
    # README Quick start line 1 runs `bench --quick --out DIR`; one quick suite here (the whole
    # --quick takes ~40 s on 2 cores), into a folder that does not exist yet.
    import json
    pytest.importorskip("matplotlib")
    out = tmp_path / "fastln-bench"
    p = run("bench", "--quick", "--suites", "calls", "--budget", "0.01", "--no-progress", "--out", str(out))
    assert p.returncode == 0, p.stderr
    data = json.loads((out / "cpu.json").read_text())
    assert data["meta"]["suites"]["calls"]["quick"] is True and data["meta"]["copy_gbps"] > 0
    assert "| calls" not in p.stdout and "### calls" in (out / "cpu.md").read_text()
    assert {x.name for x in out.glob("*.png")} == {"cpu_calls_time.png", "cpu_calls_copy.png"}


@pytest.mark.skipif(importlib.util.find_spec("fastln.benchmark") is None, reason="no benchmark suite")
def test_bench_without_matplotlib_writes_table_and_json_and_says_how_to_get_plots(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from fastln.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "bench", "--shapes", "8x64", "--dtypes", "float32",
                        "--no-compile", "--budget", "0.01", "--no-progress", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "cpu.json").exists() and (tmp_path / "cpu.md").exists()
    assert not list(tmp_path.glob("*.png"))
    assert "matplotlib is not installed: no PNG plots" in p.stderr
    assert "pip install 'fastln[bench]' (or pip install matplotlib)" in p.stderr
