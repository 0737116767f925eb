"""Packaging facts: version, import without torch first, torch version guard."""
import struct
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


def test_build_info_tells_the_cuda_decision():
    bi = fastln._build_info
    assert bi.cuda == fastln._C.cuda
    assert bi.cuda_mode in ("AUTO", "ON", "OFF") and bi.cuda_reason
    assert bi.torch_cuda_version == (torch.version.cuda or "") or not bi.cuda  # built for this torch
    if bi.cuda:  # the toolkit built with, of torch's CUDA major version, and the architectures
        assert bi.cuda_version.split(".")[0] == bi.torch_cuda_version.split(".")[0]
        assert bi.cuda_archs == fastln._C.cuda_archs != ""
    else:
        assert bi.cuda_archs == "" and fastln._C.cuda_archs == ""


def test_torch_version_mismatch_is_a_clear_import_error(monkeypatch):
    monkeypatch.setattr(fastln._build_info, "torch_version", "1.99.0")
    with pytest.raises(ImportError, match=r"built against torch 1\.99\.0, but torch .* is installed"):
        fastln._check_torch_version()


def test_isa_reporting():
    isas = fastln._C.available_isas()
    assert isas[0] == "base" and fastln._C.isa() in isas


def _elf_needed(path):
    """The DT_NEEDED entries of a 64-bit little-endian ELF shared object."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4:6] == b"\x02\x01", "not a 64-bit little-endian ELF"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:  # PT_LOAD
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (p_offset, p_filesz)
    assert dynamic is not None, "no dynamic section"
    entries = [struct.unpack_from("<qQ", data, dynamic[0] + 16 * i) for i in range(dynamic[1] // 16)]
    strtab_vaddr = next(v for tag, v in entries if tag == 5)  # DT_STRTAB
    strtab = next(o + strtab_vaddr - v for v, o, n in loads if v <= strtab_vaddr < v + n)
    return [data[strtab + v:data.index(b"\0", strtab + v)].decode() for tag, v in entries if tag == 1]


@pytest.mark.skipif(not sys.platform.startswith("linux") or not fastln._C.compiler.startswith("gcc"),
                    reason="a g++ build on Linux")
def test_extension_uses_the_shared_libstdcxx():
    """_C must need libstdc++.so.6 (the C++ runtime torch loads), never carry a static copy:
    two copies in one process crashed on every error message that formats a number."""
    assert "libstdc++.so.6" in _elf_needed(fastln._C.__file__)
