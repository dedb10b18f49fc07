"""kerastl.export.metadata: metadata that MediaPipe Tasks' ImageClassifier accepts.

A tiny Keras classifier learns "which colour dominates" from synthetic images, is converted to a
float32 and a full-integer (uint8 in/out) TFLite model, gets metadata, and MediaPipe must then
classify PNG files with our class names and the same scores as LiteRT. Everything is built once
per module; the file takes about 10 s on top of importing TensorFlow.
"""

from __future__ import annotations

import io
import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from mediapipe import Image as MpImage
from mediapipe.tasks.python import BaseOptions, vision

from kerastl.errors import KerastlError
from kerastl.export.metadata import (
    add_image_classifier_metadata,
    read_associated_files,
    read_metadata,
)

LABELS = ["red", "green", "blue"]
SIZE = 32
RAW = {"mean": [0.0], "std": [1.0]}  # kerastl models take raw 0-255 pixels


def colour_images(rng: np.random.Generator, classes: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Float32 images in [0, 255] whose class channel is bright and the others dark. The values
    come close to both 0 and 255, so int8 calibration gives the uint8 input scale ~1."""
    x = rng.uniform(0.0, 80.0, (len(classes), size, size, 3))
    x[np.arange(len(classes)), :, :, classes] = rng.uniform(
        175.0, 255.0, (len(classes), size, size)
    )
    return x.astype("float32")


def convert_uint8(model: keras.Model, calibration: np.ndarray) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [calibration[i : i + 1]] for i in range(len(calibration))
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter.convert()


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    x = colour_images(rng, y)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    # Few steps on purpose: confident but unsaturated scores make the score comparisons
    # between MediaPipe and LiteRT meaningful.
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return {
        "keras": model,
        "float": tf.lite.TFLiteConverter.from_keras_model(model).convert(),
        "uint8": convert_uint8(model, x[:32]),
    }


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """Two images per class at the model's size, and one per class at 2x (MediaPipe resizes)."""
    rng = np.random.default_rng(1)
    directory = tmp_path_factory.mktemp("pngs")
    images = []
    for size, classes in ((SIZE, [0, 1, 2, 0, 1, 2]), (2 * SIZE, [0, 1, 2])):
        pixels = np.round(colour_images(rng, np.array(classes), size)).astype(np.uint8)
        for i, (c, image) in enumerate(zip(classes, pixels)):
            path = directory / f"{LABELS[c]}_{size}_{i}.png"
            path.write_bytes(tf.io.encode_png(image).numpy())
            images.append((str(path), c, image))
    return images


def mediapipe_scores(model: bytes, paths: list[str]) -> list[dict[str, float]]:
    """Category name -> score for each image, as MediaPipe's ImageClassifier returns them."""
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=model))
    with vision.ImageClassifier.create_from_options(options) as classifier:
        results = []
        for path in paths:
            result = classifier.classify(MpImage.create_from_file(path))
            categories = result.classifications[0].categories
            results.append({c.category_name: c.score for c in categories})
        return results


def litert_scores(model: bytes, pixels: np.ndarray) -> np.ndarray:
    """Scores for one HxWx3 image fed to the input as is (cast to the input dtype), dequantized
    for a uint8 output."""
    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], pixels[None].astype(inp["dtype"]))
    interpreter.invoke()
    scores = interpreter.get_tensor(out["index"])[0]
    if out["dtype"] == np.uint8:
        scale, zero_point = out["quantization"]
        scores = scale * (scores.astype(np.float32) - zero_point)
    return scores


# ---------------------------------------------------------------------------------------------
# MediaPipe end to end


def test_mediapipe_refuses_float_model_without_metadata(trained, pngs):
    # This is why the metadata exists: a float model needs NormalizationOptions.
    with pytest.raises(Exception, match="NormalizationOptions"):
        mediapipe_scores(trained["float"], [pngs[0][0]])


@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_mediapipe_classifies_with_our_labels_like_litert_and_keras(trained, pngs, kind):
    kwargs = RAW if kind == "float" else {"mean": None, "std": None}
    model = add_image_classifier_metadata(trained[kind], labels=LABELS, **kwargs)
    same_size = [(path, c, pixels) for path, c, pixels in pngs if pixels.shape[0] == SIZE]
    results = mediapipe_scores(model, [path for path, _, _ in pngs])

    for (path, c, pixels), scores in zip(pngs, results):
        assert sorted(scores) == sorted(LABELS), path
        assert max(scores, key=scores.get) == LABELS[c], path

    keras_scores = trained["keras"].predict(np.stack([p for _, _, p in same_size]), verbose=0)
    for (path, c, pixels), scores, expected in zip(same_size, results, keras_scores):
        lite = litert_scores(model, pixels.astype(np.float32))
        mp = np.array([scores[label] for label in LABELS])
        assert np.argmax(mp) == np.argmax(lite) == np.argmax(expected) == c, path
        # Float: MediaPipe feeds (pixel - 0) / 1, i.e. raw pixels, as our graph expects.
        # uint8: MediaPipe copies the image bytes, the same numbers LiteRT was given here.
        np.testing.assert_allclose(mp, lite, atol=1e-5, err_msg=path)
        np.testing.assert_allclose(mp, expected, atol=0.05 if kind == "uint8" else 1e-4)


# ---------------------------------------------------------------------------------------------
# What the metadata says, and what it leaves alone


def test_read_metadata_round_trip(trained):
    model = add_image_classifier_metadata(
        trained["float"],
        labels=LABELS,
        **RAW,
        name="colours",
        description="Which colour dominates.",
        version="7",
        author="tests",
        license="Apache-2.0",
    )
    summary = read_metadata(model)
    assert json.loads(json.dumps(summary)) == summary
    assert {k: summary[k] for k in ("name", "description", "version", "author", "license")} == {
        "name": "colours",
        "description": "Which colour dominates.",
        "version": "7",
        "author": "tests",
        "license": "Apache-2.0",
    }
    assert summary["min_parser_version"] == "1.0.0"
    assert summary["min_runtime_version"]  # the converter's entry is kept
    (image,) = summary["inputs"]
    assert image["content"] == "image"
    assert image["color_space"] == "RGB"
    assert image["normalization"] == {"mean": [0.0], "std": [1.0]}
    assert image["stats"] == {"min": [0.0], "max": [255.0]}
    (scores,) = summary["outputs"]
    assert scores["associated_files"] == [{"name": "labels.txt", "type": "TENSOR_AXIS_LABELS"}]
    assert summary["label_files"] == ["labels.txt"]

    assert zipfile.is_zipfile(io.BytesIO(model))
    assert read_associated_files(model) == {"labels.txt": b"red\ngreen\nblue\n"}
    assert read_associated_files(trained["float"]) == {}


def test_uint8_input_without_normalization(trained):
    summary = read_metadata(
        add_image_classifier_metadata(trained["uint8"], labels=LABELS, mean=None, std=None)
    )
    (image,) = summary["inputs"]
    assert image["normalization"] is None
    assert image["stats"] == {"min": [0.0], "max": [255.0]}


@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_litert_outputs_unchanged(trained, kind):
    kwargs = RAW if kind == "float" else {"mean": None, "std": None}
    model = add_image_classifier_metadata(trained[kind], labels=LABELS, **kwargs)
    pixels = colour_images(np.random.default_rng(2), np.array([0, 1, 2]))
    for image in pixels:
        np.testing.assert_array_equal(
            litert_scores(model, image), litert_scores(trained[kind], image)
        )


def test_adding_metadata_again_replaces_it(trained):
    once = add_image_classifier_metadata(trained["float"], labels=LABELS, **RAW)
    relabelled = add_image_classifier_metadata(once, labels=["r", "g", "b"], **RAW)
    assert read_associated_files(relabelled) == {"labels.txt": b"r\ng\nb\n"}
    # Same bytes as writing onto the bare model: the old metadata and archive are gone.
    assert relabelled == add_image_classifier_metadata(
        trained["float"], labels=["r", "g", "b"], **RAW
    )
    assert add_image_classifier_metadata(relabelled, labels=LABELS, **RAW) == once


# ---------------------------------------------------------------------------------------------
# Validation


def assert_one_line_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_label_count_mismatch(trained):
    with pytest.raises(KerastlError) as excinfo:
        add_image_classifier_metadata(trained["float"], labels=["red", "green"], **RAW)
    assert_one_line_error(excinfo, "2 labels", "3 output classes")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"labels": ["red", "red", "blue"], **RAW}, ["repeated"]),
        ({"labels": ["red", "gr\neen", "blue"], **RAW}, ["line break"]),
        ({"labels": ["red", " ", "blue"], **RAW}, ["empty"]),
        ({"labels": LABELS, "mean": None, "std": None}, ["mean=[0.0], std=[1.0]"]),
        ({"labels": LABELS, "mean": [0.0], "std": None}, ["both"]),
        ({"labels": LABELS, "mean": [0.0], "std": [0.0]}, ["positive"]),
        ({"labels": LABELS, "mean": [0.0, 0.0], "std": [1.0]}, ["2 values"]),
        ({"labels": LABELS, "mean": [0.0, 1.0, 2.0], "std": [1.0]}, ["per-channel"]),
    ],
)
def test_invalid_arguments(trained, kwargs, words):
    with pytest.raises(KerastlError) as excinfo:
        add_image_classifier_metadata(trained["float"], **kwargs)
    assert_one_line_error(excinfo, *words)


def test_not_a_tflite_model():
    with pytest.raises(KerastlError) as excinfo:
        add_image_classifier_metadata(b"not a model at all", labels=LABELS, **RAW)
    assert_one_line_error(excinfo, "not a TFLite model")


def test_model_without_metadata_has_nothing_to_read(trained):
    with pytest.raises(KerastlError) as excinfo:
        read_metadata(trained["float"])
    assert_one_line_error(excinfo, "no TFLITE_METADATA")


def test_miscalibrated_uint8_input(trained):
    # Calibration images that stay below 200 give an input scale of ~0.8, but MediaPipe feeds
    # raw pixel bytes, so the phone would see every image 20% darker than Keras did.
    rng = np.random.default_rng(3)
    dim = colour_images(rng, rng.integers(0, 3, 16)) * (200 / 255)
    model = convert_uint8(trained["keras"], dim)
    with pytest.raises(KerastlError) as excinfo:
        add_image_classifier_metadata(model, labels=LABELS, mean=None, std=None)
    assert_one_line_error(excinfo, "scale", "0-255")


def test_grayscale_and_non_image_models():
    def tiny(input_shape, classes=2):
        model = keras.Sequential(
            [
                keras.Input(input_shape),
                keras.layers.GlobalAveragePooling2D()
                if len(input_shape) == 3
                else keras.layers.Identity(),
                keras.layers.Dense(classes, activation="softmax"),
            ]
        )
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()

    model = add_image_classifier_metadata(tiny((8, 8, 1)), labels=["dark", "light"], **RAW)
    # Correct per the schema; MediaPipe itself only runs 3-channel inputs.
    assert read_metadata(model)["inputs"][0]["color_space"] == "GRAYSCALE"

    for input_shape, words in [
        ((8,), ["[1, 8]", "[1, height, width, 1 or 3]"]),
        ((None, None, 3), ["variable size", "fixed input shape"]),
    ]:
        with pytest.raises(KerastlError) as excinfo:
            add_image_classifier_metadata(tiny(input_shape), labels=["a", "b"], **RAW)
        assert_one_line_error(excinfo, *words)
