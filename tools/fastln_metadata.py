"""In-tree dynamic-metadata provider: pins a wheel's torch to the major.minor it is built against.

fastln's extension links libtorch, whose C++ ABI changes between minor releases, so a wheel
built under torch 2.13 must say ``torch>=2.13,<2.14``. The torch is the one CMakeLists.txt
builds against: the target environment's, which inside pip's isolated build only ``python -I``
sees (the same two tries as CMakeLists.txt). An sdist carries a loose ``torch`` requirement and
marks Requires-Dist as Dynamic: the pin is decided when the wheel is built.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from typing import Any

_PROBE = "import torch; print(torch.__version__)"


def _torch_major_minor() -> tuple[int, int]:
    for flags in ([], ["-I"]):
        proc = subprocess.run([sys.executable, *flags, "-c", _PROBE], capture_output=True, text=True)
        if proc.returncode == 0:
            major, minor = proc.stdout.strip().split(".")[:2]
            return int(major), int(minor)
    raise RuntimeError(
        f"fastln builds against an installed PyTorch, and {sys.executable} cannot import torch. "
        "Install torch first (pip install torch), then install fastln.")


class Provider:
    def __init__(self) -> None:
        self._state = "metadata_wheel"

    def build_state(self, build_state: str) -> None:
        self._state = build_state

    def dynamic_metadata(self, settings: Mapping[str, Any], project: Mapping[str, Any]) -> dict[str, Any]:
        loose = str(settings.get("sdist", "torch"))
        if self._state == "sdist":
            return {"dependencies": [loose]}
        major, minor = _torch_major_minor()
        return {"dependencies": [f"torch>={major}.{minor},<{major}.{minor + 1}"]}

    def dynamic_wheel(self, settings: Mapping[str, Any]) -> dict[str, bool]:
        return {"dependencies": True}
