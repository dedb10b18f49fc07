"""Shared test fixtures and helpers: tiny image folders and tiny backbones, made on the fly (no downloads), and
the CLI calls and checks that the per-modality tests share."""

import importlib.util
import os
import sys
from pathlib import Path

# Quiet TensorFlow's C++ logging and pin determinism before TensorFlow is imported anywhere.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASTL_OFFLINE", "1")

import numpy as np
import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def load_tool(name: str):
    """tools/`name`.py as a module (tools/ is not a package), registered in `sys.modules` under `name`: a
    dataclass looks its module up while being defined. (The tools put tools/ on `sys.path` themselves.)"""
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pattern_image(label: int, rng, size: int = 16) -> np.ndarray:
    """An RGB uint8 image whose class is visible in its structure: stripes one way, the other way, or blobs."""
    grid = np.arange(size)
    if label % 3 == 0:
        base = (grid[:, None] // 2 % 2) * np.ones((1, size))
    elif label % 3 == 1:
        base = np.ones((size, 1)) * (grid[None, :] // 2 % 2)
    else:
        yy, xx = np.mgrid[:size, :size]
        base = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2).astype(float)
    colour = rng.uniform(0.5, 1.0, size=3)
    image = base[..., None] * colour[None, None, :] * 255 + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image_folder(root, classes=("circles", "horizontal", "vertical"), per_class=12, size=16, seed=0,
                      formats=("png", "jpg")):
    """Writes a class-per-folder image set and returns its path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    order = {"horizontal": 0, "vertical": 1, "circles": 2}
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = pattern_image(order.get(name, index), rng, size)
            Image.fromarray(image).save(folder / f"{i:03d}.{formats[i % len(formats)]}")
    return root


def make_tiny_backbone(input_shape=(16, 16, 3), seed=0):
    """A small conv backbone with BatchNormalization and baked-in preprocessing, as a pretrained one would be."""
    import keras

    from kerastl.inputs.image import ImagePreprocessing

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="pixels")
    x = ImagePreprocessing(mode="scale", scale=1 / 255.0, name="preprocessing")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv3")(x)
    model = keras.Model(inputs, x, name="tiny")
    # Give BatchNormalization non-trivial statistics, as pretraining would.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.random.default_rng(1).normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(np.random.default_rng(2).uniform(0.5, 1.5, layer.moving_variance.shape))
    return model


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def tiny_backbone_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("backbone") / "tiny.keras"
    make_tiny_backbone().save(path)
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASTL_CACHE", str(tmp_path / "kerastl-cache"))


def one_line_error(result, code, *needles):
    """Asserts that a CliRunner `result` failed with exit `code` and one `Error: ...` line (no traceback) that
    contains every needle; returns that line."""
    assert result.exit_code == code, result.output
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert last.startswith("Error: ") and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in last, last
    return last


def finetune_cli(data, backbone, out, *args):
    """`kerastl finetune --data DATA --backbone BACKBONE --out OUT ARGS...` through CliRunner; returns `out`."""
    from click.testing import CliRunner

    from kerastl.cli import main

    result = CliRunner().invoke(main, ["finetune", "--data", str(data), "--backbone", str(backbone), *args,
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def finetune_quick(data, backbone, out):
    """One epoch of `kerastl finetune` through CliRunner; returns the result (for the error tests)."""
    from click.testing import CliRunner

    from kerastl.cli import main

    return CliRunner().invoke(main, ["finetune", "--data", str(data), "--backbone", str(backbone), "--epochs", "1",
                                     "--out", str(out)], catch_exceptions=False)


@pytest.fixture()
def saved_models(tmp_path, monkeypatch):
    """A saved_models/ holding one backbone manifest per modality, so that errors can name one."""
    import json

    root = tmp_path / "saved_models"
    for name, modality in (("glyphs-x", "image"), ("pseudowords-x", "audio"), ("docs-x", "text")):
        (root / name).mkdir(parents=True)
        (root / name / "manifest.json").write_text(json.dumps({"modality": modality, "input": {"shape": []}}))
    monkeypatch.setenv("KERASTL_SAVED_MODELS", str(root))
    return root
