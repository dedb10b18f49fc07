"""kerastl.export.metadata: metadata that MediaPipe Tasks' AudioClassifier accepts.

A tiny kerastl-style audio classifier (raw 16 kHz waveforms in, `LogMelSpectrogram` inside the
graph) learns to tell a low hum, a high chirp and white noise apart, is converted the way kerastl
converts audio classifiers (`Model.export(format="litert")` with `tflite_signature`), gets
metadata, and MediaPipe must then classify clips with our class names and Keras' scores.
Everything is built once per module.
"""

from __future__ import annotations

import io
import json
import zipfile

import keras
import numpy as np
import pytest

# mediapipe is in the test extra: these MediaPipe AudioClassifier checks must run, not skip.
from mediapipe.tasks.python import BaseOptions
from mediapipe.tasks.python import audio as mp_audio
from mediapipe.tasks.python.components.containers import AudioData

from kerastl.errors import KerastlError
from kerastl.export.metadata import (
    add_audio_classifier_metadata,
    add_image_classifier_metadata,
    read_associated_files,
    read_metadata,
)
from kerastl.inputs import audio

LABELS = ["hum", "chirp", "noise"]
RATE = 16000
SAMPLES = RATE  # 1 s clips


def clips(rng: np.random.Generator, classes, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    """Float32 waveforms in [-1, 1]: a 100-250 Hz hum with a harmonic, a 2-6 kHz chirp, or white
    noise, at a random level."""
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for c in classes:
        level = rng.uniform(0.1, 0.6)
        if c == 0:
            f = rng.uniform(100.0, 250.0)
            x = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t + rng.uniform(0, 6))
        elif c == 1:
            f0, f1 = rng.uniform(2000.0, 3000.0), rng.uniform(4500.0, 6000.0)
            x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1])))
        else:
            x = rng.uniform(-1.0, 1.0, len(t))
        out.append(level * x / np.abs(x).max())
    return np.asarray(out, dtype="float32")


def build_classifier(x: np.ndarray, y: np.ndarray) -> keras.Model:
    """Waveform -> standardised log-mel (as kerastl backbones start) -> mean over time -> Dense."""
    mean, std = audio.logmel_statistics(x, sample_rate=RATE)
    inputs = keras.Input((SAMPLES,), name="waveforms")
    front = audio.LogMelSpectrogram(sample_rate=RATE, mean=mean, std=std, name="log_mel")
    features = front(inputs)
    frames = front.num_frames(SAMPLES)
    pooled = keras.layers.AveragePooling2D((frames, 1))(features)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(keras.layers.Flatten()(pooled))
    model = keras.Model(inputs, outputs)
    # A few epochs separate the classes; the tests compare every score, not just the top one.
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=4, batch_size=16, verbose=0)
    return model


def export_litert(model: keras.Model, path) -> bytes:
    model.export(
        str(path), format="litert", verbose=False, input_signature=[audio.tflite_signature(model)]
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(3), 16)
    x = clips(rng, y)
    model = build_classifier(x, y)
    path = tmp_path_factory.mktemp("model") / "audio.tflite"
    return {"keras": model, "tflite": export_litert(model, path)}


@pytest.fixture(scope="module")
def model_with_metadata(trained):
    return add_audio_classifier_metadata(trained["tflite"], labels=LABELS, sample_rate=RATE)


def mediapipe_results(model: bytes, waveform: np.ndarray, rate: int = RATE):
    """MediaPipe's AudioClassifier results for one clip: one per window of the model's length."""
    options = mp_audio.AudioClassifierOptions(
        base_options=BaseOptions(model_asset_buffer=model),
        running_mode=mp_audio.RunningMode.AUDIO_CLIPS,
        max_results=len(LABELS),
    )
    with mp_audio.AudioClassifier.create_from_options(options) as classifier:
        return classifier.classify(AudioData.create_from_array(waveform, rate))


def scores_of(result) -> dict[str, float]:
    return {c.category_name: c.score for c in result.classifications[0].categories}


# ---------------------------------------------------------------------------------------------
# MediaPipe end to end


def test_mediapipe_refuses_audio_model_without_metadata(trained):
    # This is why the metadata exists: the sample rate comes from AudioProperties.
    with pytest.raises(Exception, match="require TFLite Model Metadata"):
        mediapipe_results(trained["tflite"], np.zeros(SAMPLES, "float32"))


def test_mediapipe_classifies_with_our_labels_like_keras(trained, model_with_metadata):
    rng = np.random.default_rng(1)
    classes = [0, 1, 2, 0, 1, 2]
    x = clips(rng, classes)
    expected = trained["keras"].predict(x, verbose=0)
    for c, waveform, keras_scores in zip(classes, x, expected):
        (result,) = mediapipe_results(model_with_metadata, waveform)  # 1 s: one window
        scores = scores_of(result)
        assert sorted(scores) == sorted(LABELS)
        mp = np.array([scores[label] for label in LABELS])
        assert np.argmax(mp) == np.argmax(keras_scores) == c, LABELS[c]
        np.testing.assert_allclose(mp, keras_scores, atol=1e-4, err_msg=LABELS[c])


def test_mediapipe_windows_longer_clips_and_pads_short_ones(trained, model_with_metadata):
    rng = np.random.default_rng(2)
    hum, chirp = clips(rng, [0, 1])
    # 2.5 s: windows at 0, 1000 and 2000 ms, the last one half clip, half zeros.
    waveform = np.concatenate([hum, chirp, hum[: SAMPLES // 2]])
    results = mediapipe_results(model_with_metadata, waveform)
    assert [r.timestamp_ms for r in results] == [0, 1000, 2000]
    padded = np.concatenate([hum[: SAMPLES // 2], np.zeros(SAMPLES // 2, "float32")])
    expected = trained["keras"].predict(np.stack([hum, chirp, padded]), verbose=0)
    for result, keras_scores in zip(results, expected):
        scores = scores_of(result)
        mp = np.array([scores[label] for label in LABELS])
        np.testing.assert_allclose(mp, keras_scores, atol=1e-4)
    assert [max(scores_of(r), key=scores_of(r).get) for r in results[:2]] == ["hum", "chirp"]


def test_mediapipe_resamples_to_the_metadata_rate(model_with_metadata):
    rng = np.random.default_rng(3)
    classes = [0, 1, 2]
    for rate in (8000, 48000):
        for c, waveform in zip(classes, clips(rng, classes, rate=rate)):
            results = mediapipe_results(model_with_metadata, waveform, rate=rate)
            # The 1 s clip resampled to 16 kHz fills the first window. The resampler's flushed
            # filter tail makes it a few samples longer than 16000, so MediaPipe also returns a
            # near-silent, zero-padded window at 1000 ms.
            assert results[0].timestamp_ms == 0
            assert all(r.timestamp_ms >= 1000 for r in results[1:])
            scores = scores_of(results[0])
            assert max(scores, key=scores.get) == LABELS[c], (rate, LABELS[c])


# ---------------------------------------------------------------------------------------------
# What the metadata says


def test_read_metadata_round_trip(trained):
    model = add_audio_classifier_metadata(
        trained["tflite"],
        labels=LABELS,
        sample_rate=RATE,
        name="sounds",
        description="Hum, chirp or noise.",
        version="2",
        author="tests",
        license="Apache-2.0",
    )
    summary = read_metadata(model)
    assert json.loads(json.dumps(summary)) == summary
    assert {k: summary[k] for k in ("name", "description", "version", "author", "license")} == {
        "name": "sounds",
        "description": "Hum, chirp or noise.",
        "version": "2",
        "author": "tests",
        "license": "Apache-2.0",
    }
    assert summary["min_parser_version"] == "1.3.0"  # AudioProperties were added in 1.3.0
    assert summary["min_runtime_version"]
    (waveform,) = summary["inputs"]
    assert waveform["content"] == "audio"
    assert (waveform["sample_rate"], waveform["channels"]) == (RATE, 1)
    assert waveform["color_space"] is None and waveform["normalization"] is None
    assert waveform["stats"] == {"min": [-1.0], "max": [1.0]}
    (scores,) = summary["outputs"]
    assert scores["sample_rate"] is None
    assert scores["associated_files"] == [{"name": "labels.txt", "type": "TENSOR_AXIS_LABELS"}]
    assert summary["label_files"] == ["labels.txt"]

    assert zipfile.is_zipfile(io.BytesIO(model))
    assert read_associated_files(model) == {"labels.txt": b"hum\nchirp\nnoise\n"}


def test_adding_metadata_again_replaces_it(trained, model_with_metadata):
    relabelled = add_audio_classifier_metadata(
        model_with_metadata, labels=["h", "c", "n"], sample_rate=8000
    )
    assert read_metadata(relabelled)["inputs"][0]["sample_rate"] == 8000
    assert relabelled == add_audio_classifier_metadata(
        trained["tflite"], labels=["h", "c", "n"], sample_rate=8000
    )
    again = add_audio_classifier_metadata(relabelled, labels=LABELS, sample_rate=RATE)
    assert again == model_with_metadata


# ---------------------------------------------------------------------------------------------
# Validation


def assert_one_line_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_label_count_mismatch(trained):
    with pytest.raises(KerastlError) as excinfo:
        add_audio_classifier_metadata(trained["tflite"], labels=["hum", "chirp"], sample_rate=RATE)
    assert_one_line_error(excinfo, "2 labels", "3 output classes")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"labels": ["hum", "hum", "noise"], "sample_rate": RATE}, ["repeated"]),
        ({"labels": ["hum", "", "noise"], "sample_rate": RATE}, ["empty"]),
        ({"labels": LABELS, "sample_rate": 0}, ["sample_rate is 0", "positive whole number"]),
        ({"labels": LABELS, "sample_rate": -16000}, ["sample_rate is -16000"]),
        ({"labels": LABELS, "sample_rate": 16000.5}, ["sample_rate is 16000.5"]),
        ({"labels": LABELS, "sample_rate": "16000"}, ["sample_rate is '16000'"]),
        ({"labels": LABELS, "sample_rate": True}, ["sample_rate is True"]),
        ({"labels": LABELS, "sample_rate": 2**32}, ["sample_rate is 4294967296"]),
        ({"labels": LABELS, "sample_rate": RATE, "channels": 0}, ["channels is 0"]),
        # 16000 interleaved samples don't split into 3 channels.
        ({"labels": LABELS, "sample_rate": RATE, "channels": 3}, ["multiple of channels=3"]),
    ],
)
def test_invalid_arguments(trained, kwargs, words):
    with pytest.raises(KerastlError) as excinfo:
        add_audio_classifier_metadata(trained["tflite"], **kwargs)
    assert_one_line_error(excinfo, *words)


def test_not_a_tflite_model():
    with pytest.raises(KerastlError) as excinfo:
        add_audio_classifier_metadata(b"not a model at all", labels=LABELS, sample_rate=RATE)
    assert_one_line_error(excinfo, "not a TFLite model")


def tiny_export(model: keras.Model, shape, tmp_path) -> bytes:
    """``model`` converted as kerastl converts, with an input signature of ``shape``."""
    import tensorflow as tf

    path = tmp_path / f"{model.name}.tflite"
    model.export(
        str(path), format="litert", verbose=False, input_signature=[tf.TensorSpec(shape, "float32")]
    )
    return path.read_bytes()


def test_non_audio_models(trained, tmp_path):
    # An image-shaped input.
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    image_model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    with pytest.raises(KerastlError) as excinfo:
        add_audio_classifier_metadata(
            tiny_export(image_model, (1, 8, 8, 3), tmp_path), labels=LABELS, sample_rate=RATE
        )
    assert_one_line_error(excinfo, "[1, 8, 8, 3]", "[1, samples]", "tflite_signature")

    # A waveform of no fixed length (converts to shape [1, 1], signature [1, -1]).
    inputs = keras.Input((None,))
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Reshape((-1, 1))(inputs))
    any_length = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    with pytest.raises(KerastlError) as excinfo:
        add_audio_classifier_metadata(
            tiny_export(any_length, (1, None), tmp_path), labels=LABELS, sample_rate=RATE
        )
    assert_one_line_error(excinfo, "variable length", "fixed clip length")

    # Per-frame scores rather than one score vector per clip.
    inputs = keras.Input((SAMPLES,))
    framed = keras.layers.Reshape((16, SAMPLES // 16))(inputs)
    per_frame = keras.Model(inputs, keras.layers.Dense(3)(framed))
    with pytest.raises(KerastlError) as excinfo:
        add_audio_classifier_metadata(
            tiny_export(per_frame, (1, SAMPLES), tmp_path), labels=LABELS, sample_rate=RATE
        )
    assert_one_line_error(excinfo, "[1, 16, 3]", "[1, number of classes]")

    # And the image writer refuses the audio model.
    with pytest.raises(KerastlError) as excinfo:
        add_image_classifier_metadata(trained["tflite"], labels=LABELS, mean=[0.0], std=[1.0])
    assert_one_line_error(excinfo, f"[1, {SAMPLES}]", "[1, height, width, 1 or 3]")
