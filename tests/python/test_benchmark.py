"""fastln.benchmark: the suite definitions (data), a tiny run of every CPU suite, the results
file (schema, merge by suite, measured copy bandwidth), the plots, and the README / docs tables,
which must equal what the generator makes of the committed results files."""
import argparse
import dataclasses
import json
import math
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from fastln import benchmark as B

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def tiny_args(**kw):
    base = dict(device="cpu", suites=None, quick=True, shapes=((8, 64),), dtypes=None, no_compile=True,
                budget=0.002)
    base.update(kw)
    return argparse.Namespace(**base)


def test_suites_are_well_formed():
    names = set()
    for s in B.SUITES:
        assert (s.device, s.name) not in names, "one suite of a name per device"
        names.add((s.device, s.name))
        assert s.device in ("cpu", "cuda", "cpu+cuda") and s.level in ("user", "kernel")
        assert s.timer in ("interleaved", "device", "host", "profile")
        assert set(s.dtypes) <= set(B.DTYPES) | set(B.MIXED) and s.shapes and s.about
        assert set(s.quick_shapes) <= set(s.shapes)
        modes = {"user": {"fwd", "fwd+bwd"}, "kernel": {"fwd", "bwd"}}[s.level]
        assert set(s.modes) <= modes, s
        assert any((op, m) in B.BYTES for op in s.ops for m in s.modes)
        assert s.impls[0].startswith("fastln"), "fastln first"
        if s.name not in ("isa", "bwd_kernels", "plans"):  # fastln against itself
            assert "torch" in s.impls, "torch is the reference of speedups"
    # CUDA runs take the peers where importable, and the CPU-against-CUDA suite
    cuda = {s.name: s for s in B.suites_for("cuda")}
    assert {"liger", "quack"} <= set(cuda["kernel"].impls) and {"compile", "liger", "quack"} <= set(cuda["user"].impls)
    assert "devices" in cuda
    assert set(cuda["mixed"].dtypes) <= set(B.MIXED) and {"liger", "quack"} <= set(cuda["mixed"].impls)
    assert {s.name for s in B.suites_for("cpu")} == {"user", "ops", "kernel", "calls"}
    assert {s.name for s in B.suites_for("cpu", ["isa"])} == {"isa"}
    with pytest.raises(ValueError, match="no suite"):
        B.suites_for("cpu", ["nope"])


def test_every_cpu_suite_runs_on_tiny_shapes():
    plans = []
    for s in B.SUITES:
        if s.device == "cpu":
            plans += B.make_plans(tiny_args(suites=s.name, dtypes=("float32", "bfloat16")))
    data = B.run("cpu", plans, B.Progress(0, False))
    rows = data["results"]
    assert data["schema"] == 2 and data["meta"]["copy_gbps"] > 0
    assert "copy_" in data["meta"]["copy_method"]
    for p in plans:
        s = p.suite
        mine = [r for r in rows if r["suite"] == s.name]
        for op in s.ops:
            for mode in s.modes:
                if (op, mode) not in B.BYTES:
                    continue
                got = {r["impl"] for r in mine if r["op"] == op and r["mode"] == mode and r["dtype"] == "float32"}
                assert {i for i in p.impls if i.startswith("fastln")} <= got, (s.name, op, mode, got)
        for r in mine:
            assert r["median_s"] > 0 and r["gbps"] > 0
            assert math.isclose(r["pct_copy"], 100 * r["gbps"] / data["meta"]["copy_gbps"])
        assert data["meta"]["suites"][s.name]["definition"]["name"] == s.name
    # torch has no CPU kernel for the RMSNorm backward: skipped with its reason, fastln still timed
    assert any("rms_norm bwd" in k for k in data["meta"]["suites"]["kernel"]["skipped"])
    isa = {r["impl"] for r in rows if r["suite"] == "isa"}
    assert isa == {f"fastln@{i}" for i in B._C.available_isas()}
    # every view of the tables renders from a fresh run
    md = B.full_table(data)
    assert "### user" in md and "### kernel" in md
    assert B.view_user(data).count("\n") >= 3 and "Geometric mean" in B.view_summary(data)
    assert "(8, 64)" in B.view_user(data, "ops", "rms_norm")


def test_host_timer_interleaves_the_implementations(monkeypatch):
    """The "host" timer (CUDA's decode-size calls) times the implementations batch by batch in
    turn, as the CPU's: each runner's batches alternate with the others', not one runner's whole
    budget after another's. Run here on the CPU's calls suite with its timer set to "host"."""
    plan = B.make_plans(tiny_args(suites="calls"))[0]
    plan.suite = dataclasses.replace(plan.suite, timer="host", shapes=((8, 64),))
    seen = []
    real = B.make_runner

    def recording(suite, impl, *a, **kw):
        fn = real(suite, impl, *a, **kw)
        if impl == "fastln":
            seen.append([])  # a new case (op, mode): fastln's runner is made first
        return lambda: (seen[-1].append(impl), fn())[1]

    monkeypatch.setattr(B, "make_runner", recording)
    data = B.run("cpu", [plan], B.Progress(0, False))
    rows = [r for r in data["results"] if r["suite"] == "calls"]
    assert {r["impl"] for r in rows} == {"fastln", "torch"} and all(r["min_s"] > 0 for r in rows)
    # in every case the calls switch implementation at least once a round (two runners in a
    # rotating order: a switch between the two batches of a round), at least 7 rounds; timed one
    # after the other, a case would switch once
    assert len(seen) == 4  # two ops, two modes
    for calls in seen:
        assert sum(a != b for a, b in zip(calls, calls[1:])) >= 7, calls


def test_device_timer_interleaves_the_implementations():
    """device_times (the CUDA suites' timer): rounds in which every runner is timed once, the
    order rotating; the first round warms up, the others split the repetitions; a runner's
    median and minimum are those of its rounds' medians (a stall spoils a round, not a cell)."""
    calls = []

    def one(fn, warmup_ms, rep_ms):
        name = fn()
        calls.append((name, warmup_ms, rep_ms))
        rnd = sum(c[0] == name for c in calls) - 1
        return {"median_s": {"a": 1.0, "b": 2.0, "c": 3.0}[name] + (100.0 if rnd == 2 else rnd)}

    res = B.device_times({n: (lambda n=n: n) for n in "abc"}, rounds=5, warmup_ms=20, rep_ms=80, one=one)
    names = [c[0] for c in calls]
    assert len(names) == 15 and all(sorted(names[i:i + 3]) == ["a", "b", "c"] for i in range(0, 15, 3))
    assert len({tuple(names[i:i + 3]) for i in range(0, 15, 3)}) == 3  # the order rotates
    assert [c[1] for c in calls[:3]] == [20] * 3 and all(c[1] == 4 and c[2] == 16 for c in calls[3:])
    # rounds' medians of "a": 1, 2, 101 (a stall), 4, 5: median 4, minimum 1, IQR 3 (not the stall)
    assert res["a"]["median_s"] == 4.0 and res["a"]["min_s"] == 1.0 and res["a"]["samples"] == 5
    assert res["a"]["iqr_s"] == 3.0
    assert res["c"]["median_s"] == 6.0


def test_mixed_precision_cases_take_float32_parameters(monkeypatch):
    """A case's dtype "bfloat16+float32" (the CUDA 'mixed' suite's): bf16 input, float32
    weight and bias, for fastln and the peers alike; the rows keep the name."""
    seen = []
    real = B.user_fn

    def spy(impl, op):
        f = real(impl, op)

        def g(x, r, w, b):
            seen.append((impl, x.dtype, w.dtype, b.dtype))
            return f(x, r, w, b)
        return g

    monkeypatch.setattr(B, "user_fn", spy)
    plans = B.make_plans(tiny_args(suites="user", dtypes=B._dtypes("bfloat16+float32")))
    data = B.run("cpu", plans, B.Progress(0, False))
    assert {"fastln", "torch"} <= {r["impl"] for r in data["results"]}
    assert {r["dtype"] for r in data["results"]} == {"bfloat16+float32"}
    assert {s[0] for s in seen} >= {"fastln", "torch"}
    assert all(s[1:] == (torch.bfloat16, torch.float32, torch.float32) for s in seen), seen
    assert B.dtypes_of("float16+float32") == (torch.float16, torch.float32)
    assert B.dtypes_of("float32") == (torch.float32, torch.float32)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown dtype"):
        B._dtypes("bfloat16+int8")


def test_merge_replaces_the_cases_run_and_keeps_the_others():
    """A suite run in parts (one device call per dtype, say) adds up; a case run again replaces
    its rows; other suites stay."""
    def fake(suite, t, dtype="float32", shape=(8, 64)):
        row = {"suite": suite, "impl": "fastln", "mode": "fwd", "phase": "e2e", "speedup_vs_torch": t,
               "dtype": dtype, "M": shape[0], "N": shape[1], "op": "layer_norm", "device": "cuda"}
        meta = {"date": str(t), "shapes": [list(shape)], "dtypes": [dtype], "impls": ["fastln"], "skipped": {}}
        return {"schema": 2, "meta": {"device": "cuda", "suites": {suite: meta}}, "results": [row]}

    old = B.merge(fake("user", 1.0), fake("kernel", 2.0))
    new = B.merge(old, fake("user", 3.0))
    assert sorted((r["suite"], r["speedup_vs_torch"]) for r in new["results"]) == [("kernel", 2.0), ("user", 3.0)]
    assert new["meta"]["suites"]["user"]["date"] == "3.0" and "kernel" in new["meta"]["suites"]
    parts = B.merge(B.merge(new, fake("kernel", 4.0, "bfloat16")), fake("kernel", 5.0, "bfloat16", (16, 64)))
    kernel = sorted((r["dtype"], r["M"], r["speedup_vs_torch"]) for r in parts["results"] if r["suite"] == "kernel")
    assert kernel == [("bfloat16", 8, 4.0), ("bfloat16", 16, 5.0), ("float32", 8, 2.0)]
    assert parts["meta"]["suites"]["kernel"]["dtypes"] == ["float32", "bfloat16"]
    assert parts["meta"]["suites"]["kernel"]["shapes"] == [[8, 64], [16, 64]]
    assert parts["meta"]["summary"]["kernel fwd"]["min_speedup_vs_torch"] == 2.0
    # Each part's provenance stays, and the run line names every part.
    assert [p["date"] for p in parts["meta"]["suites"]["kernel"]["parts"]] == ["2.0", "4.0", "5.0"]
    # a part whose cases all ran again holds no rows any more: it is no longer named
    again = B.merge(parts, fake("kernel", 6.0, "bfloat16"))
    assert [p["date"] for p in again["meta"]["suites"]["kernel"]["parts"]] == ["2.0", "5.0", "6.0"]
    # ... and so is one whose cases the later parts ran again between them (bf16 in one call,
    # fp32 in another)
    both = B.merge(fake("kernel", 7.0), fake("kernel", 8.0, "bfloat16"))
    both["meta"]["suites"]["kernel"]["parts"][0]["dtypes"] = ["float32", "bfloat16"]  # a run of both dtypes
    split = B.merge(B.merge(both, fake("kernel", 9.0)), fake("kernel", 10.0, "bfloat16"))
    assert [p["date"] for p in split["meta"]["suites"]["kernel"]["parts"]] == ["9.0", "10.0"]
    parts["meta"].update(device_name="a card", torch="t", copy_gbps=1.0)
    line = B.view_run(parts, "kernel")
    assert "run in parts: 2.0 (float32; " in line and "5.0 (bfloat16; " in line
    # A run its deadline stopped covers only the cases it reached: the part before it keeps the
    # others' rows and stays named, and the run line says where the newer run stopped.
    two = fake("kernel", 11.0)
    two["results"].append({**two["results"][0], "M": 16, "speedup_vs_torch": 11.5})
    two["meta"]["suites"]["kernel"]["shapes"] = [[8, 64], [16, 64]]
    cut = fake("kernel", 12.0)
    cut["meta"]["suites"]["kernel"].update(shapes=[[8, 64], [16, 64]], interrupted="stopped by --deadline 9 s")
    merged = B.merge(two, cut)
    assert sorted((r["M"], r["speedup_vs_torch"]) for r in merged["results"]) == [(8, 12.0), (16, 11.5)]
    kparts = merged["meta"]["suites"]["kernel"]["parts"]
    assert [p["date"] for p in kparts] == ["11.0", "12.0"] and kparts[1]["cases"] == [("float32", 8, 64)]
    merged["meta"].update(device_name="a card", torch="t", copy_gbps=1.0)
    assert "stopped by --deadline 9 s, 1 cases reached" in B.view_run(merged, "kernel")
    # ... and once a later run reaches the rest, the older part holds no rows and goes
    full = fake("kernel", 13.0, shape=(16, 64))
    assert [p["date"] for p in B.merge(merged, full)["meta"]["suites"]["kernel"]["parts"]] == ["12.0", "13.0"]
    # a single run its deadline stopped says so on its run line
    alone = fake("kernel", 14.0)
    alone["meta"]["suites"]["kernel"].update(command="cmd", interrupted="stopped by --deadline 9 s")
    alone["meta"].update(device_name="a card", torch="t", copy_gbps=1.0)
    assert "command: `cmd` (stopped by --deadline 9 s)" in B.view_run(alone, "kernel")


def test_merge_files_brings_a_device_run_into_the_results_file(tmp_path, capsys):
    """`--merge FILE`: a device call's results file (here the H100's fp32 kernel run of
    2026-12-06) joins the committed file of its card: its cases replace theirs, the rest stay,
    and the table is rewritten."""
    shutil.copy(ROOT / "bench/results/cuda_h100.json", tmp_path / "cuda_h100.json")
    run = ROOT / "docs/journal/data/2026-12-06-h100-d/k32/cuda_h100.json"
    old, new = B.load(tmp_path / "cuda_h100.json"), B.load(run)
    assert B.main(["--merge", str(run), "--out", str(tmp_path)]) == 0
    merged = B.load(tmp_path / "cuda_h100.json")
    key = lambda r: (B._case(r), r["impl"], r["mode"])  # noqa: E731
    rows = {key(r): r for r in merged["results"]}
    assert all(rows[key(r)] == r for r in new["results"])
    ran = {B._case(r) for r in new["results"]}
    assert [r for r in old["results"] if B._case(r) not in ran] == [r for r in merged["results"] if B._case(r) not in ran]
    assert len(ran) and any(B._case(r) in ran for r in old["results"])  # it did replace rows
    assert merged["meta"]["suites"]["kernel"]["parts"][-1]["date"] == new["meta"]["suites"]["kernel"]["date"]
    assert "(2731,49152)" in (tmp_path / "cuda_h100.md").read_text()
    assert "merged" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    for text in ('{"schema": 1}', '{"schema": 2, "meta": {"device": "cuda"}, "results": []}'):  # no card named
        bad.write_text(text)
        assert B.main(["--merge", str(bad), "--out", str(tmp_path)]) == 1


def test_targets_view_names_every_cell_that_misses():
    """docs/cuda.md's list of issue 25's misses comes from the file: a cell under a bar, a peer
    faster by more than the run's spread, and a geomean short of its target are each named; a
    peer within 0.5 % is level; a gap within either cell's IQR is marked so."""
    def row(impl, mode, N, t, pct, dtype="bfloat16", M=None):
        M = M or 2 ** 27 // N
        return {"suite": "kernel", "op": "layer_norm", "impl": impl, "mode": mode, "dtype": dtype, "M": M, "N": N,
                "phase": "e2e", "median_s": t, "pct_copy": pct, "speedup_vs_torch": 1.5}
    rows = [row("fastln", "fwd", 1024, 1.0, 95.0), row("fastln", "bwd", 1024, 1.0, 90.0),
            row("fastln", "fwd", 20000, 1.0, 91.0), row("fastln", "bwd", 20000, 1.0, 80.0),
            row("quack", "fwd", 1024, 0.998, 95.2), row("liger", "fwd", 20000, 0.9, 99.0),
            row("fastln", "fwd", 4096, 1.0, 50.0, M=2048), row("quack", "fwd", 4096, 0.5, 99.0, M=2048)]
    text = B.view_targets({"results": rows})
    fwd, bwd, geo, fwd_peers, bwd_peers = text.splitlines()
    assert "bf16 20000 (91.0)" in fwd and "1024" not in fwd
    assert "bf16 20000 (80.0)" in bwd and "1024" not in bwd
    assert "1.50x forward (target 1.6x)" in geo and "1.50x backward (target 2x)" in geo
    # a missed geomean's bounds: each cell at its fastest implementation (1.5 x 1/0.998, 1/0.9,
    # 1/0.5), and each large cell at 100 % of copy (1.5 x 100/95, 100/91; the mid size as it is)
    assert "forward: the fastest implementation of each cell would give 1.96x" in geo
    assert "2^27 at 100 % of copy 1.57x" in geo
    assert "backward: the fastest implementation of each cell would give 1.50x" in geo
    assert geo.endswith("at 100 % of copy 1.77x).")
    # fastln's own variants (a plan override's A/B) are not an implementation of the run's bound
    variant = rows + [row("fastln+fwd_nv=8", "fwd", 1024, 0.1, 99.0)]
    assert B.view_targets({"results": variant}).splitlines()[2] == geo
    assert "behind at 2 cells" in fwd_peers and "bf16 20000 0.90x liger" in fwd_peers
    assert "bf16 (2048, 4096) 0.50x quack" in fwd_peers and " 1024 " not in fwd_peers
    assert "(within the IQR)" not in fwd_peers
    assert "met at every shape" in bwd_peers
    # a gap no wider than either cell's IQR (a host-bound cell's spread) is named, and marked
    noisy = rows + [{**row("fastln", "bwd", 4096, 1.0, 20.0, M=2048), "iqr_s": 0.3},
                    {**row("liger", "bwd", 4096, 0.8, 25.0, M=2048), "iqr_s": 0.05}]
    assert "bf16 (2048, 4096) 0.80x liger (within the IQR)" in B.view_targets({"results": noisy}).splitlines()[4]
    # the user suite: no bars of % of copy or geomean, a line per mode it ran
    user = [{**r, "suite": "user", "mode": "fwd+bwd" if r["mode"] == "bwd" else r["mode"]} for r in rows]
    lines = B.view_targets({"results": user}, "user").splitlines()
    assert [ln.split("**")[1] for ln in lines] == [
        "Forward at least as fast as the best of liger, quack",
        "Forward + backward at least as fast as the best of liger, quack"]


def test_copy_bandwidth_is_measured_never_hard_coded():
    gbps, how = B.copy_bandwidth("cpu")
    assert gbps > 0 and how
    for path in [*ROOT.glob("bench/*.py"), *ROOT.glob("bench/*.sh"), *ROOT.glob("src/fastln/*.py")]:
        assert not re.search(r"\b2970\b", path.read_text()), path


def test_plots_of_every_suite_and_of_cpu_against_cuda(tmp_path):
    pytest.importorskip("matplotlib")
    rows = []
    for dev, scale in (("cpu", 1.0), ("cuda", 0.1)):
        for impl in ("fastln", "torch"):
            for M in (1, 64, 4096):
                for mode in ("fwd", "fwd+bwd"):
                    rows.append({"suite": "devices", "device": dev, "op": "layer_norm", "impl": impl,
                                 "dtype": "float32", "M": M, "N": 1024, "mode": mode, "phase": "e2e",
                                 "median_s": scale * M * 1e-6 + 1e-5, "pct_copy": 1.0})
    data = {"schema": 2, "meta": {"device": "cuda", "suites": {}}, "results": rows}
    assert [Path(p).name for p in B.plots(data, tmp_path, "cuda_x")] == ["cuda_x_devices.png"]
    data = B.load(RESULTS / "cuda_h100.json")
    written = B.plots(data, tmp_path, "cuda_h100")  # a time and a % of copy plot per suite of the file
    assert {Path(p).name for p in written} == {f"cuda_h100_{s}_{k}.png" for s in data["meta"]["suites"]
                                               for k in ("time", "copy")}


def test_results_files_have_one_schema_and_render():
    for path in RESULTS.glob("*.json"):
        if path.name.startswith("models_"):
            continue  # fastln.model_bench's files
        data = B.load(path)
        assert data["schema"] == 2, path
        meta = data["meta"]
        assert meta["copy_gbps"] > 0 and meta["copy_method"]
        for name, s in meta["suites"].items():
            assert s["date"] and s["torch"] and s["definition"]["name"] == name
            assert B.view_run(data, name)
        assert {r["suite"] for r in data["results"]} <= set(meta["suites"])
        assert B.full_table(data)


def test_generated_tables_equal_the_results_files():
    """README.md and docs/*.md: every generated block is what `python -m fastln bench --readme`
    makes of bench/results now (run it after a benchmark run, commit both)."""
    blocks = 0
    for path in B.doc_files(ROOT):
        text = path.read_text()
        assert text.count("<!-- table:") == text.count("<!-- /table -->"), path
        blocks += len(B.BLOCK.findall(text))
        assert B.update_blocks(path, RESULTS, check=True) == [], (
            f"{path.name}: generated tables out of date: run python -m fastln bench --readme")
    assert blocks >= 5
    readme = (ROOT / "README.md").read_text()
    for name in ("cpu:user", "cpu:summary", "cuda_h100:bandwidth"):
        assert f"<!-- table:{name} -->" in readme


def test_update_blocks_rewrites_only_the_blocks(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- table:cpu:summary -->\nstale\n<!-- /table -->\noutro\n")
    assert B.update_blocks(doc, RESULTS, check=True) == ["cpu:summary"]
    assert "stale" in doc.read_text()
    assert B.update_blocks(doc, RESULTS) == ["cpu:summary"]
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("<!-- /table -->\noutro\n")
    assert B.render("cpu:summary", RESULTS) in text and B.update_blocks(doc, RESULTS, check=True) == []


def test_blocks_of_a_card_not_yet_run_say_so(tmp_path):
    """A block of a CUDA card without a results file (the H200 until its first run) says it was
    not measured; a block of an unknown view, or of a missing CPU file, is still an error."""
    assert B.render("cuda_h999:run:kernel", RESULTS).startswith("Not measured yet: no `cuda_h999.json`")
    assert B.render("cuda_h999:ranges", RESULTS) == "Not measured yet.\n"
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- table:cuda_h999:targets -->\nold\n<!-- /table -->\n")
    assert B.update_blocks(doc, RESULTS) == ["cuda_h999:targets"] and "Not measured yet" in doc.read_text()
    with pytest.raises(KeyError):
        B.render("cuda_h999:no_such_view", RESULTS)
    with pytest.raises(FileNotFoundError):
        B.render("cpu:summary", tmp_path)


def test_readme_check_from_the_command_line(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "cpu.json").write_text((RESULTS / "cpu.json").read_text())
    (tmp_path / "README.md").write_text("<!-- table:cpu:user -->\nold\n<!-- /table -->\n")
    assert B.main(["--readme", "--check", "--root", str(tmp_path)]) == 1
    assert B.main(["--readme", "--root", str(tmp_path)]) == 0
    assert B.main(["--readme", "--check", "--root", str(tmp_path)]) == 0
    assert "| float32 | (100, 512) |" in (tmp_path / "README.md").read_text()


def test_list_prints_the_suites_as_data(capsys):
    assert B.main(["--list"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(B.SUITES) and all({"name", "ops", "shapes", "dtypes", "modes"} <= set(l) for l in lines)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA suites need a GPU")
def test_cuda_suites_run_on_tiny_shapes():
    plans = []
    for s in B.suites_for("cuda"):
        plans += B.make_plans(tiny_args(device="cuda", suites=s.name, shapes=((8, 256),), budget=0.002))
    data = B.run("cuda", plans, B.Progress(0, False))
    assert {r["suite"] for r in data["results"]} == {p.suite.name for p in plans}
    assert {r["device"] for r in data["results"] if r["suite"] == "devices"} == {"cpu", "cuda"}


def test_relative_links_in_readme_and_docs_resolve():
    """Files moved with the harness and the journal (bench/results -> docs/journal/data, ...):
    every relative link of README.md and docs/**/*.md points at a file that exists."""
    broken = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_plan_overrides_are_parsed_and_cuda_only():
    assert B.plan_overrides("fastln+cluster_fwd=2+pdl=0+bwd_staged=129+fwd_persist=0") == {
        "cluster_fwd": 2, "pdl": False, "bwd_staged": 129, "fwd_persist": 0}
    with pytest.raises(ValueError, match="KEY=INTEGER"):
        B.plan_overrides("fastln+cluster_fwd")
    # a CPU run has no 'plans' suite; the CUDA suites take --plans as variants beside fastln
    assert B.main(["--plans", "cluster_fwd=2", "--no-progress"]) == 2
    x = torch.randn(4, 64)
    w, b = torch.ones(64), torch.zeros(64)
    suite = next(s for s in B.SUITES if s.device == "cuda" and s.name == "plans")
    with pytest.raises(B.Skip, match="CUDA"):
        B.make_runner(suite, "fastln+pdl=0", "layer_norm", "bwd", x, x, w, b, x)


def test_an_interrupted_run_keeps_the_cases_done(monkeypatch):
    """`timeout -s INT` (a device call's limit) or Ctrl-C in the middle of a suite: the rows of
    the cases done are kept and the suite says it was interrupted."""
    real = B.measure
    calls = []

    def measure(runners, sync, budget_s):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(runners, sync, 0.01)

    monkeypatch.setattr(B, "measure", measure)
    plans = B.make_plans(B.parser().parse_args(["--suites", "kernel", "--shapes", "8x64,16x64", "--dtypes",
                                                "float32", "--budget", "0.01"]))
    data = B.run("cpu", plans, B.Progress(1, False))
    assert {(r["M"], r["mode"]) for r in data["results"]} == {(8, "fwd"), (8, "bwd")}
    assert data["meta"]["suites"]["kernel"]["interrupted"] == "interrupted in suite kernel"


def test_a_file_that_cannot_be_merged_keeps_the_run_beside_it(monkeypatch, tmp_path, capsys):
    """A results file the run cannot merge into (here: a suite's metadata without its shapes) is
    left as it was; the run's results go to a side file, and the command fails saying so."""
    monkeypatch.setattr(B, "copy_bandwidth", lambda device: (10.0, "not measured (test)"))
    bad = {"schema": 2, "meta": {"device": "cpu", "suites": {"kernel": {"date": "x"}}}, "results": []}
    (tmp_path / "cpu.json").write_text(json.dumps(bad))
    argv = ["--suites", "kernel", "--shapes", "8x64", "--dtypes", "float32", "--budget", "0.01",
            "--no-progress", "--out", str(tmp_path)]
    assert B.main(argv) == 1
    assert json.loads((tmp_path / "cpu.json").read_text()) == bad
    side = json.loads((tmp_path / "cpu.unmerged.json").read_text())
    assert {(r["M"], r["N"]) for r in side["results"]} == {(8, 64)}
    assert "cannot merge into" in capsys.readouterr().err


def test_deadline_stops_before_the_next_case(monkeypatch, tmp_path):
    """--deadline: no case starts once it has passed; the file keeps the cases done, says why it
    stopped and records the command."""
    real = B.measure

    def slow(runners, sync, budget_s):
        time.sleep(0.2)
        return real(runners, sync, 0.01)

    monkeypatch.setattr(B, "measure", slow)
    monkeypatch.setattr(B, "copy_bandwidth", lambda device: (10.0, "not measured (test)"))
    argv = ["--suites", "kernel", "--shapes", "8x64,16x64", "--dtypes", "float32", "--budget", "0.01",
            "--deadline", "0.1", "--no-progress", "--out", str(tmp_path)]
    assert B.main(argv) == 0
    data = json.loads((tmp_path / "cpu.json").read_text())
    assert {(r["M"], r["op"]) for r in data["results"]} == {(8, "layer_norm")}
    meta = data["meta"]["suites"]["kernel"]
    assert meta["interrupted"] == "stopped by --deadline 0.1 s in suite kernel"
    assert meta["command"] == "python -m fastln bench " + " ".join(argv)


def test_every_compile_case_runs_its_own_graph():
    # Dynamo runs a function's specializations past recompile_limit eagerly, without an error:
    # the "compile" column of a suite of more cases than that was torch eager from its ninth
    # case on. Each case's runner must compile (a graph of its own), however many came before.
    suite = next(s for s in B.SUITES if s.device == "cpu" and s.name == "user")
    cases = [(n, "fwd") for n in range(8, 8 * (torch._dynamo.config.recompile_limit + 2), 8)] + [(16, "fwd+bwd")]
    for n, mode in cases:
        x, w, b = torch.randn(2, n), torch.randn(n), torch.randn(n)
        graphs = B._compiled_graphs()
        run = B.make_runner(suite, "compile", "layer_norm", mode, x, x, w, b, torch.randn(2, n))
        assert B._compiled_graphs() > graphs, (n, mode)
        if mode == "fwd":
            torch.testing.assert_close(run(), torch.nn.functional.layer_norm(x, (n,), w, b, B.EPS))


def test_a_compile_case_that_falls_back_to_eager_is_skipped(monkeypatch):
    # Without the reset, a recompile limit of 1 sends the second shape to eager: the runner must
    # refuse (a Skip naming it), not time torch eager as "compile".
    suite = next(s for s in B.SUITES if s.device == "cpu" and s.name == "user")

    def runner(n):
        x, w, b = torch.randn(2, n), torch.randn(n), torch.randn(n)
        return B.make_runner(suite, "compile", "layer_norm", "fwd", x, x, w, b, torch.randn(2, n))

    runner(24)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: None)
    # config.patch, not monkeypatch: undoing a setattr on Dynamo's config module deletes the key
    # (every later torch.compile of the session then raised AttributeError)
    with torch._dynamo.config.patch(recompile_limit=1), pytest.raises(B.Skip, match="compiled no graph"):
        runner(40)
