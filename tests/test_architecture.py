"""The shape of the package, as ARCHITECTURE.md states it and tools/check_architecture.py measures it: no import
cycles (function-level imports counted), imports pointing one way, no modality branch or modality-keyed table
outside kerastl/modalities/, and no module over the size limit."""

from pathlib import Path

from .conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]


def _checker():
    return load_tool("check_architecture")


def test_package_shape():
    checker = _checker()
    figures = checker.measure(ROOT)
    assert figures["cycles"] == []
    assert figures["upward"] == []
    assert figures["branches"] == {}
    assert {name: n for name, n in figures["sizes"].items() if n > figures["max_lines"]} == {}


def test_checker_sees_branches_and_tables(tmp_path):
    checker = _checker()
    source = tmp_path / "m.py"
    source.write_text('if spec.modality == "audio":\n    pass\nx = {"image": 1}\ny = kind in ("text",)\n')
    assert checker.modality_branches(source) == [1, 3, 4]
