"""Install and first run: the README's Quick start (its shape, and CI running its test line word
for word), the extras it installs, and the CUDA decision of the build (FASTLN_CUDA=AUTO/ON/OFF,
tools/fastln_cuda.cmake) through a CMake configure with a stand-in torch: fast, no compiling."""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def quick_start_lines() -> list[str]:
    """The command lines of the first fenced block under README's '## Quick start' (comments and
    blank lines dropped)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```(?:bash|sh)?\n(.*?)^```", section, re.S | re.M)
    assert block, "no fenced code block under ## Quick start"
    return [l for l in block.group(1).splitlines() if l.strip() and not l.lstrip().startswith("#")]


def test_quick_start_is_the_first_section():
    readme = (ROOT / "README.md").read_text()
    headings = re.findall(r"^## (.*)$", readme, re.M)
    assert headings[0] == "Quick start"
    # right after the first paragraph
    first_paragraph_end = readme.index("\n\n", readme.index("\n\n") + 2)
    assert readme.index("## Quick start") == first_paragraph_end + 2


def test_quick_start_has_two_command_lines():
    lines = quick_start_lines()
    assert len(lines) == 2, lines
    install, tests = lines
    for line in lines:
        assert not line.endswith("\\"), "one command line each, no continuation"
        assert line.startswith("pip install torch && "), "torch first, on its own: fastln builds against it"
    assert "pip install '.[bench]'" in install and "python -m fastln bench" in install
    assert re.search(r"--out \S+", install), "the benchmark writes into a folder it names"
    assert "pip install '.[test]'" in tests
    assert "apt-get install -y catch2" in tests
    assert "ctest --test-dir build/tests" in tests and tests.endswith("python -m pytest tests/python")


def test_ci_runs_quick_start_line_2_word_for_word():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quick_start_lines()[1] in ci


def test_extras():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["bench"] == ["matplotlib"]
    names = {re.split(r"[<>=\[ ]", r, maxsplit=1)[0] for r in extras["test"]}
    assert {"pytest", "hypothesis", "numpy", "expecttest", "transformers", "onnx", "onnxscript",
            "onnxruntime", "cmake", "ninja"} <= names
    assert "transformers>=5" in extras["test"]


def test_cuda_is_auto_by_default_for_wheels_and_sdists():
    tomllib = pytest.importorskip("tomllib")
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["scikit-build"]
    assert conf["cmake"]["define"]["FASTLN_CUDA"] == {"env": "FASTLN_CUDA", "default": "AUTO"}
    # the sdist carries the decision's code (tools/)
    assert not any(x.startswith("tools") for x in conf["sdist"].get("exclude", []))
    assert re.search(r"^set\(FASTLN_CUDA AUTO CACHE STRING", (ROOT / "CMakeLists.txt").read_text(), re.M)


# ---- the CUDA decision, through cmake's configure step --------------------------------------

_CMAKE = shutil.which("cmake")


def _cmake_version() -> tuple[int, ...]:
    out = subprocess.run([_CMAKE, "--version"], capture_output=True, text=True).stdout
    return tuple(int(v) for v in re.search(r"(\d+)\.(\d+)", out).groups())


needs_cmake = pytest.mark.skipif(_CMAKE is None or _cmake_version() < (3, 24), reason="needs cmake >= 3.24")


def _nvcc():
    for d in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if d and os.path.exists(os.path.join(d, "bin", "nvcc")):
            return os.path.join(d, "bin", "nvcc")
    return shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if os.path.exists(p)), None)


def _nvcc_major():
    nvcc = _nvcc()
    if nvcc is None:
        return None
    m = re.search(r"release (\d+)\.", subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout)
    return int(m.group(1)) if m else None


@pytest.fixture(scope="module")
def stand_in_torch(tmp_path_factory):
    """A torch package that only answers the build's probe: its version, torch.version.cuda and
    the visible GPU from the environment (FAKE_TORCH_CUDA, FAKE_GPU_CAP), and the real torch's
    CMake files (find_package(Torch) runs for real)."""
    d = tmp_path_factory.mktemp("stand_in_torch")
    (d / "torch").mkdir()
    (d / "torch" / "__init__.py").write_text(textwrap.dedent(f"""\
        import os
        __version__ = "{torch.__version__.split('+')[0]}+standin"
        class version:
            cuda = os.environ.get("FAKE_TORCH_CUDA") or None
        class utils:
            cmake_prefix_path = {torch.utils.cmake_prefix_path!r}
        class cuda:
            @staticmethod
            def is_available():
                return bool(os.environ.get("FAKE_GPU_CAP"))
            @staticmethod
            def get_device_capability(i=0):
                cap = os.environ["FAKE_GPU_CAP"]
                return int(cap[:-1]), int(cap[-1])
        """))
    return d


@pytest.fixture(scope="module")
def stand_in_cuda_torch_without_toolkit(tmp_path_factory, stand_in_torch):
    """A CUDA build of torch (torch.version.cuda set) on a machine without the CUDA toolkit: the
    real torch's headers and libraries, and a CMake package that stops the configure as torch's
    own does there ("Your installed Caffe2 version uses CUDA but I cannot find the CUDA
    libraries")."""
    d = tmp_path_factory.mktemp("cuda_torch_without_toolkit")
    shutil.copytree(stand_in_torch / "torch", d / "torch")
    real = pathlib.Path(torch.__file__).parent
    (d / "torch" / "include").symlink_to(real / "include")
    # the real libraries, and placeholders of a CUDA build's (a configure only looks them up)
    (d / "torch" / "lib").mkdir()
    for lib in (real / "lib").iterdir():
        (d / "torch" / "lib" / lib.name).symlink_to(lib)
    for name in ("libc10_cuda.so", "libtorch_cuda.so"):
        if not (d / "torch" / "lib" / name).exists():
            (d / "torch" / "lib" / name).write_bytes(b"")
    cmake = d / "torch" / "share" / "cmake"
    (cmake / "Torch").mkdir(parents=True)
    (cmake / "Torch" / "TorchConfig.cmake").write_text(
        'message(FATAL_ERROR "Your installed Caffe2 version uses CUDA but I cannot find the CUDA libraries.")\n')
    init = d / "torch" / "__init__.py"
    init.write_text(init.read_text().replace(repr(torch.utils.cmake_prefix_path), repr(str(cmake))))
    return d


def configure(tmp_path, torch_dir, *defines, env=None):
    """cmake's configure step of the extension (no Catch2 tests) against the stand-in torch."""
    e = {k: v for k, v in os.environ.items()
         if k not in ("CUDACXX", "FASTLN_CUDA_ARCHITECTURES", "TORCH_CUDA_ARCH_LIST", "FASTLN_CUDA")}
    e.update(PYTHONPATH=str(torch_dir), **(env or {}))
    args = [_CMAKE, "-S", str(ROOT), "-B", str(tmp_path / "build"), "-DFASTLN_BUILD_TESTS=OFF",
            f"-DPython_EXECUTABLE={sys.executable}", *defines]
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    try:
        import pybind11
        args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
    except ImportError:  # the configure then stops at find_package(pybind11), after the decision
        pass
    p = subprocess.run(args, capture_output=True, text=True, env=e, timeout=300)
    return p, p.stdout + p.stderr


def _decision(out):
    m = re.search(r"-- fastln: CUDA kernels: (.*)", out)
    assert m, out
    return m.group(1)


def _pybind11_importable():
    try:
        import pybind11  # noqa: F401
        return True
    except ImportError:
        return False


@needs_cmake
def test_auto_without_cuda_torch_builds_cpu_kernels(tmp_path, stand_in_torch):
    p, out = configure(tmp_path, stand_in_torch)
    assert _decision(out) == (f"OFF (FASTLN_CUDA=AUTO: torch {torch.__version__.split('+')[0]}+standin "
                              "is built without CUDA (torch.version.cuda is None))")
    if _pybind11_importable():
        assert p.returncode == 0, out
        info = (tmp_path / "build" / "_build_info.py").read_text()
        assert 'cuda = "FALSE" == "TRUE"' in info and 'cuda_mode = "AUTO"' in info
        assert 'cuda_reason = "torch ' in info and 'cuda_version = ""' in info


@needs_cmake
def test_on_without_cuda_torch_is_a_clear_configure_error(tmp_path, stand_in_torch):
    p, out = configure(tmp_path, stand_in_torch, "-DFASTLN_CUDA=ON")
    assert p.returncode != 0
    flat = " ".join(out.split())
    assert "fastln: FASTLN_CUDA=ON, but the CUDA kernels cannot be built: torch" in flat
    assert "is built without CUDA (torch.version.cuda is None)" in flat
    assert "Install a CUDA build of torch" in flat


@needs_cmake
def test_off_is_off(tmp_path, stand_in_torch):
    p, out = configure(tmp_path, stand_in_torch, "-DFASTLN_CUDA=OFF", env={"FAKE_TORCH_CUDA": "13.0"})
    assert _decision(out) == "OFF (FASTLN_CUDA=OFF: FASTLN_CUDA=OFF)"


@needs_cmake
@pytest.mark.skipif(not _pybind11_importable(), reason="the configure stops at find_package(pybind11)")
def test_cpu_build_against_a_cuda_torch_without_the_toolkit(tmp_path, stand_in_cuda_torch_without_toolkit):
    """PyPI's torch on Linux is a CUDA build, and its CMake package requires the CUDA toolkit: a
    build without the CUDA kernels (OFF, or AUTO finding no nvcc that matches) takes torch's
    headers and libraries directly (tools/fastln_torch.cmake) and never asks that package."""
    for i, (flags, env) in enumerate(((["-DFASTLN_CUDA=OFF"], {"FAKE_TORCH_CUDA": "13.0"}),
                                      ([], {"FAKE_TORCH_CUDA": "1.0"}))):
        p, out = configure(tmp_path / str(i), stand_in_cuda_torch_without_toolkit, *flags, env=env)
        assert _decision(out).startswith("OFF (FASTLN_CUDA="), out
        assert p.returncode == 0, out
        assert "fastln: torch's headers and libraries from" in out


@needs_cmake
def test_auto_with_a_cuda_torch_and_no_matching_nvcc(tmp_path, stand_in_torch):
    # torch "CUDA 1.0": no nvcc matches it (or none is found at all)
    p, out = configure(tmp_path, stand_in_torch, env={"FAKE_TORCH_CUDA": "1.0"})
    decision = _decision(out)
    assert decision.startswith("OFF (FASTLN_CUDA=AUTO: ")
    if _nvcc() is None:
        assert "no CUDA compiler was found" in decision
    else:
        assert "does not match torch" in decision and "CUDA 1.0 (the major versions must agree)" in decision
    p, out = configure(tmp_path, stand_in_torch, "-DFASTLN_CUDA=ON", env={"FAKE_TORCH_CUDA": "1.0"})
    assert p.returncode != 0 and "fastln: FASTLN_CUDA=ON, but the CUDA kernels cannot be built" in out


@needs_cmake
@pytest.mark.skipif(_nvcc_major() is None, reason="no nvcc")
def test_auto_with_a_cuda_torch_and_a_matching_nvcc(tmp_path, stand_in_torch):
    """torch with the nvcc's own CUDA version: the kernels are built, for the visible GPU alone
    (configure only: no kernel is compiled)."""
    cuda = f"{_nvcc_major()}.0"
    env = {"FAKE_TORCH_CUDA": cuda, "FAKE_GPU_CAP": "90", "CUDA_HOME": os.path.dirname(os.path.dirname(_nvcc()))}
    p, out = configure(tmp_path, stand_in_torch, env=env)
    decision = _decision(out)
    assert decision.startswith(f"ON (FASTLN_CUDA=AUTO: torch ") and f"has CUDA {cuda} and nvcc" in decision
    assert decision.endswith("architectures 90 (the visible GPU's: torch.cuda.get_device_capability() is sm_90)")
    if _pybind11_importable():
        assert p.returncode == 0, out
        info = (tmp_path / "build" / "_build_info.py").read_text()
        assert 'cuda = "TRUE" == "TRUE"' in info and f'cuda_version = "{_nvcc_major()}.' in info
        assert 'cuda_archs = "90"' in info


@needs_cmake
@pytest.mark.skipif(_nvcc_major() is None, reason="no nvcc")
@pytest.mark.skipif(not _pybind11_importable(), reason="the configure stops at find_package(pybind11)")
def test_a_matching_nvcc_whose_toolkit_torch_cannot_use(tmp_path, stand_in_cuda_torch_without_toolkit):
    """nvcc compiles, but torch's CMake package cannot use its toolkit (here: a package that stops
    as torch's own does without the CUDA libraries; for real: a wrapper script of nvcc outside the
    toolkit, or a toolkit of nvcc and the runtime only, as on the machine this was found on). The
    kernels are built all the same, from torch's headers and libraries (c10_cuda and torch_cuda
    included), with AUTO and ON, and the decision says so."""
    env = {"FAKE_TORCH_CUDA": f"{_nvcc_major()}.0", "CUDA_HOME": os.path.dirname(os.path.dirname(_nvcc())),
           "FASTLN_CUDA_ARCHITECTURES": "90"}
    for i, flags in enumerate(([], ["-DFASTLN_CUDA=ON"])):
        p, out = configure(tmp_path / str(i), stand_in_cuda_torch_without_toolkit, *flags, env=env)
        decision = _decision(out)
        assert decision.startswith("ON (FASTLN_CUDA="), out
        assert "torch's CMake package cannot use that toolkit (Your installed Caffe2 version uses CUDA but I " \
               "cannot find the CUDA libraries." in decision
        assert "so the build takes torch's headers and libraries directly" in decision
        assert p.returncode == 0, out
        assert "(c10;torch_cpu;torch;c10_cuda;torch_cuda; definitions:" in out


@needs_cmake
@pytest.mark.parametrize("text, archs", [("8.0 9.0+PTX", "80-real;90"), ("7.5;8.6,9.0a", "75-real;86-real;90a-real"),
                                         ("10.0+PTX", "100")])
def test_torch_cuda_arch_list_in_cmake_terms(tmp_path, text, archs):
    """TORCH_CUDA_ARCH_LIST (torch's syntax) as CMake's CUDA_ARCHITECTURES: real code only, plus
    PTX where +PTX says so."""
    script = tmp_path / "t.cmake"
    script.write_text(f'include("{ROOT}/tools/fastln_cuda.cmake")\n'
                      f'_fastln_torch_arch_list("{text}" out)\nmessage("archs=${{out}}")\n')
    p = subprocess.run([_CMAKE, "-P", str(script)], capture_output=True, text=True)
    assert p.returncode == 0 and f"archs={archs}" in p.stderr, p.stderr
    script.write_text(f'include("{ROOT}/tools/fastln_cuda.cmake")\n_fastln_torch_arch_list("sm90" out)\n')
    p = subprocess.run([_CMAKE, "-P", str(script)], capture_output=True, text=True)
    assert p.returncode != 0 and "cannot read TORCH_CUDA_ARCH_LIST entry 'sm90'" in p.stderr
