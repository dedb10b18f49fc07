"""Packaging: the extras match what the code and the tests import, optional packages are checked by the feature
that needs them, and a wheel carries the shipped backbones."""

import ast
import configparser
import glob
import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kerastl import extras
from kerastl.errors import KerastlError

ROOT = Path(__file__).resolve().parent.parent


def _requirements(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(_normalise(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]))
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _setup() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def _imported_modules(paths) -> set[str]:
    """Top-level names imported anywhere in `paths`, function-level imports included."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(Path(path).read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _third_party(modules) -> set[str]:
    local = {"kerastl", "tests", "conftest"} | {Path(p).stem for p in glob.glob(str(ROOT / "tools" / "*.py"))}
    return {m for m in modules if m not in sys.stdlib_module_names and m not in local}


def _distributions(modules) -> dict[str, set[str]]:
    """import name -> the installed distributions that provide it (normalised)."""
    provided = importlib.metadata.packages_distributions()
    return {m: {_normalise(d) for d in provided.get(m, [])} for m in modules}


def test_test_extra_installs_everything_the_tests_import():
    config = _setup()
    declared = _requirements(config["options"]["install_requires"]) | _requirements(
        config["options.extras_require"]["test"])
    unmet = {}
    for module, dists in _distributions(_third_party(_imported_modules(ROOT.glob("tests/*.py")))).items():
        if not dists & declared:
            unmet[module] = sorted(dists) or ["(not installed)"]
    assert not unmet, f"tests import packages the test extra does not install: {unmet}"


def test_every_package_kerastl_imports_is_a_requirement_or_an_extra():
    config = _setup()
    declared = _requirements(config["options"]["install_requires"])
    for name in config["options.extras_require"]:
        declared |= _requirements(config["options.extras_require"][name])
    unmet = {}
    for module, dists in _distributions(_third_party(_imported_modules((ROOT / "kerastl").rglob("*.py")))).items():
        if not dists & declared:
            unmet[module] = sorted(dists) or ["(not installed)"]
    assert not unmet, f"kerastl imports packages no requirement or extra installs: {unmet}"


def test_the_test_extra_holds_every_optional_feature():
    # The tests exercise every feature, so every optional package must be in the test extra too: CI once
    # stayed green only because a hand-installed quantizer hid its absence.
    config = _setup()
    test = _requirements(config["options.extras_require"]["test"])
    for module, (dist, extra) in extras.PACKAGES.items():
        assert _normalise(dist) in _requirements(config["options.extras_require"][extra]), module
        assert _normalise(dist) in test, dist


def test_the_maintained_quantizer_is_used():
    assert "litert_quantizer" in extras.PACKAGES
    sources = "\n".join(p.read_text() for p in (ROOT / "kerastl").rglob("*.py"))
    assert "import ai_edge_quantizer" not in sources and "from ai_edge_quantizer" not in sources


def test_require_names_the_package_and_its_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "litert_quantizer" else real(name, *a))
    with pytest.raises(KerastlError) as raised:
        extras.require("audio dynamic-range quantization", "litert_quantizer")
    message = str(raised.value)
    assert "\n" not in message
    assert "litert-quantizer" in message and 'pip install "kerastl[tflite]"' in message
    extras.require("nothing optional")  # no packages: no error


def test_each_export_checks_only_what_it_uses(monkeypatch):
    from kerastl.export import require_tflite_dependencies

    real = importlib.util.find_spec
    hidden = set()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    hidden.add("litert_quantizer")
    for modality in ("image", "audio", "text"):
        for quantize in ("none", "float16", "int8"):
            require_tflite_dependencies(modality, quantize)
    require_tflite_dependencies("image", "dynamic")
    require_tflite_dependencies("text", "dynamic")
    with pytest.raises(KerastlError, match="litert-quantizer"):
        require_tflite_dependencies("audio", "dynamic")
    hidden.clear()
    hidden.add("mediapipe")
    for modality in ("image", "audio", "text"):  # every file carries MediaPipe metadata
        with pytest.raises(KerastlError, match="mediapipe"):
            require_tflite_dependencies(modality, "none")
    hidden.clear()
    hidden.add("ai_edge_litert")
    require_tflite_dependencies("text", "none", verify=False)
    with pytest.raises(KerastlError, match="ai-edge-litert"):
        require_tflite_dependencies("text", "none")


def test_the_package_finds_the_shipped_backbones(monkeypatch):
    from kerastl.backbones import list_saved_backbones, saved_models_dir

    monkeypatch.delenv("KERASTL_SAVED_MODELS", raising=False)
    root = saved_models_dir()
    assert root.resolve() == (ROOT / "saved_models").resolve()
    names = {Path(m["path"]).name for m in list_saved_backbones()}
    assert {"glyphs-smallnet-s", "espeak-words-smallnet-s", "pydocs-files-textcnn-l", "english-minilm-distil"} <= names


@pytest.mark.slow
def test_the_wheel_carries_the_shipped_backbones(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, timeout=600)
    (wheel,) = tmp_path.glob("kerastl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for backbone in sorted(p.name for p in (ROOT / "saved_models").iterdir() if (p / "manifest.json").is_file()):
        assert f"kerastl/saved_models/{backbone}/manifest.json" in names
        assert f"kerastl/saved_models/{backbone}/backbone.keras" in names
    assert not [n for n in names if "/saved_models/." in n], "logs or backups were shipped"


def test_no_subpackage_shadows_a_public_name():
    """`kerastl.pretrain` is a function; a subpackage of that name, once imported, would replace it."""
    import importlib
    import types

    import kerastl

    for entry in sorted((ROOT / "kerastl").iterdir()):
        if (entry / "__init__.py").is_file():
            importlib.import_module(f"kerastl.{entry.name}")
    for name in kerastl.__all__:
        assert not isinstance(getattr(kerastl, name), types.ModuleType), name


def test_the_loader_registers_every_kerastl_layer():
    """A model file names its custom layers `kerastl>Name`; Keras finds them only if their module was
    imported first, which `load_keras_file` does for every module that registers one."""
    source = (ROOT / "kerastl" / "backbones" / "safe_load.py").read_text()
    for path in sorted((ROOT / "kerastl").rglob("*.py")):
        if "register_keras_serializable" in path.read_text():
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            assert f"import {module}\n" in source, module


def test_every_shipped_backbone_loads_in_a_fresh_process():
    code = ("import sys\nfrom kerastl.backbones import list_saved_backbones, load_backbone\n"
            "for m in list_saved_backbones():\n    b = load_backbone(m['path'])\n    print(m['name'], b.modality)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"glyphs-smallnet-s image", "espeak-words-smallnet-s audio",
            "pydocs-files-textcnn-l text", "english-minilm-distil text"} <= set(result.stdout.split("\n"))
