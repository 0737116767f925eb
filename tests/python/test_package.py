"""Packaging facts: version, import without torch first, torch version guard."""
import subprocess
import sys

import pytest
import torch

import fastln


def test_version():
    assert fastln.__version__ == fastln._build_info.version
    assert fastln._build_info.torch_version.split(".")[:2] == torch.__version__.split(".")[:2]


def test_import_without_importing_torch_first():
    code = "import fastln, sys; assert 'torch' in sys.modules; print(fastln.layer_norm.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "fastln.functional"


def test_torch_version_mismatch_is_a_clear_import_error(monkeypatch):
    monkeypatch.setattr(fastln._build_info, "torch_version", "1.99.0")
    with pytest.raises(ImportError, match=r"built against torch 1\.99\.0, but torch .* is installed"):
        fastln._check_torch_version()


def test_isa_reporting():
    isas = fastln._C.available_isas()
    assert isas[0] == "base" and fastln._C.isa() in isas
