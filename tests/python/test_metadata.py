"""The wheel's torch pin (tools/fastln_metadata.py, the in-tree dynamic-metadata provider)."""
import importlib.util
import pathlib

import torch

_path = pathlib.Path(__file__).parents[2] / "tools" / "fastln_metadata.py"
_spec = importlib.util.spec_from_file_location("fastln_metadata", _path)
assert _spec is not None and _spec.loader is not None
fastln_metadata = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fastln_metadata)


def test_wheel_pins_the_running_torch_major_minor():
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    p = fastln_metadata.Provider()
    for state in ("wheel", "editable", "metadata_wheel"):
        p.build_state(state)
        assert p.dynamic_metadata({"sdist": "torch>=2.4"}, {}) == {
            "dependencies": [f"torch>={major}.{minor},<{major}.{minor + 1}"]}


def test_sdist_is_loose_and_marks_the_requirement_dynamic():
    p = fastln_metadata.Provider()
    p.build_state("sdist")
    assert p.dynamic_metadata({"sdist": "torch>=2.4"}, {}) == {"dependencies": ["torch>=2.4"]}
    assert p.dynamic_wheel({}) == {"dependencies": True}
