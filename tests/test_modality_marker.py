"""The modality comes from what a model records (issue 10, item 9), not from a guess on its input's shape: a
float (samples,) input is audio only with a sample-rate layer or a manifest saying so, and a hub module
taking float vectors is audio only when the spec declares `#modality=audio`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.io import wavfile

from kerastl.cli import main
from kerastl.errors import KerastlError, UsageError

from .conftest import one_line_error

RATE = 8000
SAMPLES = 800


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    for label, freq in (("low", 300.0), ("high", 2000.0)):
        (root / label).mkdir()
        for i in range(6):
            t = np.arange(SAMPLES) / RATE
            wave = 0.5 * np.sin(2 * np.pi * freq * (1 + 0.05 * rng.normal()) * t) + 0.01 * rng.normal(size=SAMPLES)
            wavfile.write(root / label / f"{i}.wav", RATE, (wave * 32767).astype("int16"))
    return root


def _vector_model(marker=None):
    """(SAMPLES,) floats in → a small vector: a feature-vector model, or with `marker` a waveform model."""
    import keras

    inputs = keras.Input((SAMPLES,), name="x")
    x = inputs if marker is None else marker(inputs)
    x = keras.layers.Reshape((SAMPLES, 1))(x)
    x = keras.layers.Conv1D(4, 64, strides=32, activation="relu", name="conv")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling1D(name="pool")(x))


def test_a_float_vector_input_without_a_marker_is_not_audio(tmp_path, wavs):
    from kerastl.backbones import load_backbone
    from kerastl.core.records import UndeclaredInput
    from kerastl.data import input_spec

    model = _vector_model()
    with pytest.raises(UndeclaredInput, match="Waveform"):
        input_spec(model)
    model.save(tmp_path / "vector.keras")
    assert load_backbone(str(tmp_path / "vector.keras")).modality == "unknown"
    result = CliRunner().invoke(main, ["finetune", "--data", str(wavs), "--backbone", str(tmp_path / "vector.keras"),
                                       "--epochs", "1", "--out", str(tmp_path / "out")])
    one_line_error(result, 1, "nothing in it says they are waveforms", "kerastl.inputs.audio.Waveform", "#modality=audio")
    assert not (tmp_path / "out").exists()


def test_a_waveform_marker_declares_audio_with_its_rate(tmp_path, wavs):
    from kerastl.backbones import load_backbone
    from kerastl.data import input_spec
    from kerastl.inputs.audio import Waveform

    model = _vector_model(Waveform(RATE, name="waveform"))
    assert input_spec(model).modality == "audio" and input_spec(model).sample_rate == RATE
    model.save(tmp_path / "wave.keras")
    backbone = load_backbone(str(tmp_path / "wave.keras"))
    assert backbone.modality == "audio" and backbone.preprocessing == {"mode": "waveform", "sample_rate": RATE}


def test_integer_vectors_are_not_audio():
    import keras

    from kerastl.data import input_spec

    inputs = keras.Input((SAMPLES,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Embedding(10, 2)(inputs))
    with pytest.raises(KerastlError, match="neither images"):
        input_spec(model)


def test_a_manifest_declaring_audio_gets_the_marker_in_the_model(tmp_path):
    from kerastl.backbones import load_backbone
    from kerastl.data import input_spec
    from kerastl.net import sha256_file

    folder = tmp_path / "vector-audio"
    folder.mkdir()
    _vector_model().save(folder / "backbone.keras")
    (folder / "manifest.json").write_text(json.dumps({
        "name": "vector-audio", "modality": "audio",
        "input": {"shape": [SAMPLES], "dtype": "float32", "sample_rate": RATE},
        "preprocessing": {"mode": "waveform", "sample_rate": RATE},
        "weights": {"file": "backbone.keras", "sha256": sha256_file(folder / "backbone.keras")}}))
    backbone = load_backbone(str(folder))
    spec = input_spec(backbone.model)  # what every later step (and a saved classifier) reads
    assert backbone.modality == spec.modality == "audio" and spec.sample_rate == RATE


# ------------------------------------------------------------------------------------------------- TF-Hub


@pytest.fixture(scope="module")
def hub_vector_module(tmp_path_factory):
    """A TF-Hub-style module taking (batch, n) floats: waveforms or feature vectors, its shape cannot tell."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((None,))
    x = tf_keras.layers.Reshape((-1, 1))(inputs)
    x = tf_keras.layers.Conv1D(4, 64, strides=32, activation="relu")(x)
    path = tmp_path_factory.mktemp("hub") / "vector_module"
    tf.saved_model.save(tf_keras.Model(inputs, tf_keras.layers.GlobalAveragePooling1D()(x)), str(path))
    return path


def test_an_undeclared_float_vector_hub_module_is_refused(hub_vector_module, tmp_path, wavs):
    from kerastl.backbones import load_backbone

    with pytest.raises(UsageError, match="#modality=audio"):
        load_backbone(f"hub:{hub_vector_module}")
    result = CliRunner().invoke(main, ["finetune", "--data", str(wavs), "--backbone", f"hub:{hub_vector_module}",
                                       "--epochs", "1", "--out", str(tmp_path / "out")])
    one_line_error(result, 2, "does not guess", "#modality=audio")


def test_a_declared_audio_hub_module_records_its_marker(hub_vector_module, tmp_path, wavs):
    from kerastl.backbones import load_backbone
    from kerastl.data import input_spec
    from kerastl.train.evaluate import load_classifier
    from kerastl.train.finetune import FinetuneConfig, finetune

    backbone = load_backbone(f"hub:{hub_vector_module}#modality=audio")
    assert backbone.modality == "audio" and backbone.spec.endswith("#modality=audio")
    finetune(wavs, backbone, out=tmp_path / "run", config=FinetuneConfig(strategy="head", epochs=1, batch_size=4),
             verbose=0)
    model, _ = load_classifier(tmp_path / "run", trust=True)
    assert input_spec(model).modality == "audio"  # the saved model says it itself: no declaration needed


@pytest.mark.parametrize("fragment, match", [("#modality=speech", "image, audio or text"),
                                             ("#modality=text", "declares modality=text")])
def test_bad_hub_declarations(hub_vector_module, fragment, match):
    from kerastl.backbones import load_backbone

    with pytest.raises(UsageError, match=match):
        load_backbone(f"hub:{hub_vector_module}{fragment}")


def test_split_modality_keeps_other_fragment_keys():
    from kerastl.backbones import split_modality

    assert split_modality("https://h/m.tar.gz#modality=audio&sha256=ab") == ("https://h/m.tar.gz#sha256=ab", "audio")
    assert split_modality("/path/module") == ("/path/module", None)
