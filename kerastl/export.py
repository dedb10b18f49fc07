"""Deployment: a fine-tuned classifier as a TensorFlow SavedModel (servers) or a LiteRT/TFLite file (phones).

Both formats take raw pixels, because kerastl models carry their preprocessing as their first layers, so
what runs on the server or phone is exactly what Keras evaluated.

- SavedModel (`export_saved_model`): TF Serving's `serving_default` signature takes `images`, uint8 of shape
  (batch, H, W, C), and returns `probabilities` (batch, classes), `class_index` (int64) and `class_name`
  (string). `serving_float` is the same for float32 pixels in [0, 255]. The class names travel as the asset
  `assets/labels.txt` (read into a lookup table when the model loads).
- TFLite (`convert_tflite`, `export_tflite`): converted with Keras' own `Model.export(format="litert")`,
  batch 1, builtin ops only (a model that would need the Flex delegate fails to convert rather than failing
  on the phone). Quantization: none (float32), float16 (weights), dynamic (int8 weights, float activations)
  or int8 (everything int8, calibrated on representative images, with uint8 input and output). The file
  carries MediaPipe-readable metadata: the input is an image of raw pixels (normalization mean 0, std 1 for
  float inputs; a uint8 input is quantized with scale 1 and zero point 0 so it reads the image bytes as
  they are), and the class names are packed as `labels.txt`.
- Grayscale models: MediaPipe Tasks only runs RGB models, so the TFLite file of a 1-channel model takes
  (H, W, 3) RGB and converts it to luminance in the graph with `tf.image.rgb_to_grayscale`'s weights
  (0.2989, 0.5870, 0.1140), the conversion `kerastl.data` applies to training images. The SavedModel keeps
  the model's own (H, W, 1) input.

`export` ties it together: every export is checked against Keras on held-out images (`verify_tflite`,
`verify_saved_model`), an optional accuracy gate decides whether it is kept, and files appear under their
final names only once everything has passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from kerastl import tflite_metadata
from kerastl.errors import KerastlError, UsageError

FORMATS = ("saved_model", "tflite", "all")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
REPORT_FILE = "export_report.json"
LABELS_ASSET = "labels.txt"

# The weights of tf.image.rgb_to_grayscale, which kerastl.data uses to make 1-channel training images.
LUMINANCE_WEIGHTS = (0.2989, 0.5870, 0.1140)
# Full-integer calibration: TFLite's guidance is a few hundred representative images.
MAX_CALIBRATION_IMAGES = 200
# Verification runs every held-out image through the interpreter one at a time; this bounds its time.
MAX_VERIFY_IMAGES = 1000
SYNTHETIC_IMAGES = 32
# Latency is measured single-threaded: comparable between runs on a shared machine, and what a phone's
# background task gets.
INTERPRETER_THREADS = 1

_TFLITE_PACKAGES = (("ai_edge_litert", "ai-edge-litert"), ("mediapipe", "mediapipe"), ("flatbuffers", "flatbuffers"))


class ExportRejected(KerastlError):
    """An export did worse than `max_accuracy_drop` allows; nothing was written. `report` holds the figures."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


# ---------------------------------------------------------------------------------------------------------
# Checks made before any work


def check_options(format: str, quantize: str, data, max_accuracy_drop) -> None:
    """Raises UsageError naming the first invalid or inconsistent option."""
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}. Received: {format}")
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received: {quantize}")
    if format == "saved_model" and quantize != "none":
        raise UsageError(f"--quantize {quantize} applies to TFLite; a SavedModel keeps float32 weights: use "
                         "--format tflite or all")
    if quantize == "int8" and data is None:
        raise UsageError("--quantize int8 needs --data DIR: full-integer quantization calibrates on "
                         "representative images; give a class-per-folder image directory")
    if max_accuracy_drop is not None:
        if not 0.0 <= float(max_accuracy_drop) <= 1.0:
            raise UsageError("--max-accuracy-drop is a fraction in [0, 1] (0.01 = one percentage point). "
                             f"Received: {max_accuracy_drop}")
        if data is None:
            raise UsageError("--max-accuracy-drop needs --data DIR: accuracy is measured on labelled "
                             "held-out images")


def require_tflite_dependencies() -> None:
    """Raises KerastlError naming the missing packages that TFLite export and verification need."""
    missing = [name for module, name in _TFLITE_PACKAGES if importlib.util.find_spec(module) is None]
    if missing:
        raise KerastlError(f"TFLite export needs {', '.join(missing)}, not installed here; run "
                           'pip install "kerastl[tflite]"')


def output_paths(out, format: str) -> dict:
    """Where `export` writes: {"saved_model": dir, "tflite": file, "report": file}, only the formats asked.

    - `format="all"`: `out` is a directory receiving `saved_model/`, `model.tflite` and `export_report.json`.
    - `format="tflite"`: `out` is the .tflite file; the report is `<out without .tflite>.report.json` beside it.
    - `format="saved_model"`: `out` is the SavedModel directory; the report is `<out>.report.json` beside it.

    Raises:
        UsageError: a .tflite target whose name does not end in .tflite.
        KerastlError: a target exists and is something else, e.g. a directory that is not a SavedModel (which
            is never replaced, so that `--out` pointing at a wrong directory cannot delete it).
    """
    out = Path(out)
    if format == "all":
        if out.exists() and not out.is_dir():
            raise KerastlError(f"--out {out} is a file; with --format all give a directory (it receives "
                               f"{SAVED_MODEL_DIR}/, {TFLITE_FILE} and {REPORT_FILE})")
        paths = {"saved_model": out / SAVED_MODEL_DIR, "tflite": out / TFLITE_FILE, "report": out / REPORT_FILE}
    elif format == "tflite":
        if out.suffix != ".tflite":
            raise UsageError(f"--out must name a .tflite file with --format tflite (e.g. {out.name}.tflite). "
                             f"Received: {out}")
        paths = {"tflite": out, "report": out.with_name(out.stem + ".report.json")}
    else:
        paths = {"saved_model": out, "report": out.with_name(out.name + ".report.json")}
    if "tflite" in paths and paths["tflite"].is_dir():
        raise KerastlError(f"{paths['tflite']} is a directory; give a .tflite file path for --out")
    target = paths.get("saved_model")
    if target is not None and target.exists():
        if not target.is_dir():
            raise KerastlError(f"{target} is a file; give a directory path for the SavedModel")
        if any(target.iterdir()) and not (target / "saved_model.pb").is_file():
            raise KerastlError(f"{target} is a non-empty directory that is not a SavedModel; give a new path "
                               "(an existing SavedModel there would be replaced, other directories never are)")
    return paths


# ---------------------------------------------------------------------------------------------------------
# Model helpers


def image_input_shape(model) -> tuple[int, int, int]:
    """(height, width, channels) of a classifier's image input.

    Raises:
        KerastlError: the model does not take one fixed-size image of 1 or 3 channels.
    """
    if len(model.inputs) != 1:
        raise KerastlError(f"the model has {len(model.inputs)} inputs; export handles image classifiers with one")
    shape = tuple(model.input.shape[1:])
    if len(shape) != 3 or any(d is None for d in shape) or shape[2] not in (1, 3):
        raise KerastlError(f"the model takes inputs of shape {shape}; export needs a fixed (height, width, 1 or 3) "
                           "image input, as `kerastl finetune` models have")
    return int(shape[0]), int(shape[1]), int(shape[2])


def rgb_input_model(model):
    """For a 1-channel model: a model taking (H, W, 3) RGB pixels, converting them to luminance with
    `LUMINANCE_WEIGHTS` (a fixed 1x1 convolution, which every TFLite runtime and the int8 quantizer handle),
    then running `model`. 3-channel models are returned unchanged."""
    import keras
    import numpy as np

    height, width, channels = image_input_shape(model)
    if channels == 3:
        return model
    inputs = keras.Input((height, width, 3), name="image")
    luminance = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="rgb_to_luminance")
    x = luminance(inputs)
    luminance.set_weights([np.asarray(LUMINANCE_WEIGHTS, "float32").reshape(1, 1, 3, 1)])
    return keras.Model(inputs, model(x), name=f"{model.name}_rgb")


def to_grayscale(images):
    """RGB float pixels (N, H, W, 3) → (N, H, W, 1), exactly as `kerastl.data.decode_image` does."""
    import numpy as np
    import tensorflow as tf

    return np.clip(tf.image.rgb_to_grayscale(images).numpy(), 0.0, 255.0)


# ---------------------------------------------------------------------------------------------------------
# SavedModel


def write_saved_model(model, labels: list[str], path) -> None:
    """Writes the SavedModel described in the module docstring to `path` (not atomically; see
    `export_saved_model`)."""
    import keras
    import tensorflow as tf

    height, width, channels = image_input_shape(model)
    with tempfile.TemporaryDirectory() as tmp:
        # The asset keeps its file name inside the SavedModel: assets/labels.txt.
        labels_file = Path(tmp) / LABELS_ASSET
        labels_file.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(str(labels_file), tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                                          tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
            default_value="")
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.track(table)  # tables are resources Keras cannot discover through the endpoint functions

        def outputs(images):
            probabilities = model(tf.cast(images, tf.float32), training=False)
            index = tf.argmax(probabilities, axis=-1)
            return {"probabilities": probabilities, "class_index": index, "class_name": table.lookup(index)}

        shape = (None, height, width, channels)
        archive.add_endpoint("serving_default", outputs, input_signature=[tf.TensorSpec(shape, tf.uint8, "images")])
        archive.add_endpoint("serving_float", outputs, input_signature=[tf.TensorSpec(shape, tf.float32, "images")])
        archive.write_out(str(path), verbose=False)


def export_saved_model(model, out, *, labels: list[str]) -> Path:
    """Writes `model` as a SavedModel directory at `out`, atomically (a previous one is replaced only once the
    new one is complete). Returns `out` as a Path.

    Raises:
        KerastlError: the model is not a fixed-size image classifier, or `out` is not replaceable (see
            `output_paths`).
    """
    from kerastl.atomic import atomic_path

    out = output_paths(out, "saved_model")["saved_model"]
    with atomic_path(out, directory=True) as tmp:
        write_saved_model(model, labels, tmp)
    return out


# ---------------------------------------------------------------------------------------------------------
# TFLite


def convert_tflite(model, *, labels: list[str], quantize: str = "none", calibration=None) -> bytes:
    """The TFLite file of `model`, with MediaPipe metadata, as bytes (see the module docstring).

    `calibration` (float32 pixels in [0, 255], shaped like the TFLite input: RGB for a 1-channel model) is
    required for int8. One calibration image gets a pixel of 0 and one of 255 so that the uint8 input is
    quantized with scale 1 and zero point 0, i.e. it takes raw pixel bytes, as MediaPipe feeds them.

    Raises:
        UsageError: unknown `quantize`, or int8 without calibration images.
        KerastlError: conversion fails (e.g. an op LiteRT's builtin kernels lack), or the metadata cannot be
            written (e.g. the uint8 input did not get scale 1).
    """
    import numpy as np
    import tensorflow as tf

    require_tflite_dependencies()
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received: {quantize}")
    lite_model = rgb_input_model(model)
    height, width, channels = image_input_shape(lite_model)
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]
    options = {"target_spec": {"supported_ops": builtins}}
    if quantize in ("float16", "dynamic", "int8"):
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        options["target_spec"]["supported_types"] = [tf.float16]
    if quantize == "int8":
        if calibration is None or len(calibration) == 0:
            raise UsageError("--quantize int8 needs calibration images (--data DIR)")
        images = np.array(calibration, dtype="float32", copy=True)
        if images.shape[1:] != (height, width, channels):
            raise UsageError(f"calibration images have shape {images.shape[1:]}; the TFLite input is "
                             f"{(height, width, channels)}")
        # The converter takes the input's range from what it sees; pin it to the full 0..255.
        images[0, 0, 0, :] = 0.0
        images[0, -1, -1, :] = 255.0
        options.update(
            representative_dataset=lambda: ([image[None]] for image in images),
            inference_input_type=tf.uint8,
            inference_output_type=tf.uint8,
        )
        options["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    signature = [tf.TensorSpec((1, height, width, channels), tf.float32, name="image")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TFLITE_FILE
        try:
            lite_model.export(str(path), format="litert", verbose=False, input_signature=signature, **options)
        except Exception as error:  # the converter raises ConverterError and friends with pages of MLIR
            raise KerastlError(f"TFLite conversion ({quantize}) failed: {_one_line(error)}") from error
        converted = path.read_bytes()
    float_input = quantize != "int8"
    return tflite_metadata.add_image_classifier_metadata(
        converted,
        labels=list(labels),
        # Raw pixels in, preprocessing inside: MediaPipe feeds (pixel - 0) / 1 to a float input and the bytes
        # themselves to a uint8 one.
        mean=[0.0] if float_input else None,
        std=[1.0] if float_input else None,
        name=f"{model.name} ({'float32' if quantize == 'none' else quantize})",
        description=f"Image classifier exported by kerastl: {len(labels)} classes, raw RGB pixels in.",
    )


def export_tflite(model, out, *, labels: list[str], quantize: str = "none", calibration=None) -> Path:
    """Writes `convert_tflite(...)` to `out` (a .tflite path) atomically. Returns `out` as a Path.

    Raises:
        UsageError, KerastlError: as `convert_tflite` and `output_paths`.
    """
    from kerastl.atomic import atomic_path

    require_tflite_dependencies()
    out = output_paths(out, "tflite")["tflite"]
    data = convert_tflite(model, labels=labels, quantize=quantize, calibration=calibration)
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(data)
    return out


# ---------------------------------------------------------------------------------------------------------
# Verification


def verify_tflite(model, images, *, reference, y_true=None, threads: int = INTERPRETER_THREADS) -> dict:
    """Runs a TFLite model (bytes or a path) in the LiteRT interpreter on `images`, one at a time, and compares
    it with `reference` (Keras' probabilities for the same images).

    `images` are float32 pixels in [0, 255] shaped like the TFLite input; they are rounded to uint8 for a
    uint8 input, and a uint8 output is dequantized.

    Returns `{"n", "top1_agreement", "accuracy" (None without y_true), "max_abs_diff", "median_latency_ms",
    "bytes", "threads", "input": {"dtype", "shape", "scale", "zero_point"}}`.
    """
    import numpy as np

    require_tflite_dependencies()
    from ai_edge_litert.interpreter import Interpreter

    content = Path(model).read_bytes() if isinstance(model, (str, os.PathLike)) else bytes(model)
    interpreter = Interpreter(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    images = np.asarray(images, dtype="float32")
    if inp["dtype"] == np.uint8:
        images = np.clip(np.round(images), 0, 255)
    images = images.astype(inp["dtype"])
    probabilities, latencies = [], []
    for index, image in enumerate(images):
        interpreter.set_tensor(inp["index"], image[None])
        start = time.perf_counter()
        interpreter.invoke()
        elapsed = time.perf_counter() - start
        if index or len(images) == 1:  # the first call also allocates and warms up
            latencies.append(elapsed)
        scores = interpreter.get_tensor(out["index"])[0].astype("float32")
        if out["dtype"] == np.uint8:
            scale, zero_point = out["quantization"]
            scores = scale * (scores - zero_point)
        probabilities.append(scores)
    probabilities = np.stack(probabilities) if probabilities else np.zeros((0, np.shape(reference)[-1]))
    scale, zero_point = inp["quantization"]
    return {
        **compare(probabilities, reference, y_true),
        "median_latency_ms": round(statistics.median(latencies) * 1e3, 4) if latencies else None,
        "bytes": len(content),
        "threads": threads,
        "input": {"dtype": np.dtype(inp["dtype"]).name, "shape": [int(d) for d in inp["shape"]],
                  "scale": float(scale), "zero_point": int(zero_point)},
    }


def verify_saved_model(path, images, *, reference, y_true=None, batch_size: int = 64) -> dict:
    """Loads a SavedModel with `tf.saved_model.load` and compares its `serving_float` probabilities on `images`
    (float32 pixels in [0, 255], the model's own channels) with `reference`.

    Returns `{"n", "top1_agreement", "accuracy", "max_abs_diff", "bytes"}`.
    """
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_float"]
    images = np.asarray(images, dtype="float32")
    parts = [serve(images=tf.constant(images[i:i + batch_size]))["probabilities"].numpy()
             for i in range(0, len(images), batch_size)]
    probabilities = np.concatenate(parts) if parts else np.zeros((0, np.shape(reference)[-1]))
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return {**compare(probabilities, reference, y_true), "bytes": size}


def compare(probabilities, reference, y_true=None) -> dict:
    """`{"n", "top1_agreement", "accuracy", "max_abs_diff"}` of `probabilities` against `reference`."""
    import numpy as np

    probabilities, reference = np.asarray(probabilities), np.asarray(reference)
    n = len(reference)
    if not n:
        return {"n": 0, "top1_agreement": None, "accuracy": None, "max_abs_diff": None}
    predicted = probabilities.argmax(-1)
    return {
        "n": int(n),
        "top1_agreement": round(float((predicted == reference.argmax(-1)).mean()), 6),
        "accuracy": None if y_true is None else round(float((predicted == np.asarray(y_true)).mean()), 6),
        "max_abs_diff": float(np.abs(probabilities - reference).max()),
    }


@dataclasses.dataclass
class VerificationSet:
    """Images to check exports on and, for int8, to calibrate with.

    Attributes:
        images: float32 pixels in [0, 255] with the model's channels (what Keras and the SavedModel take).
        rgb: the same images with 3 channels (what the TFLite file of a 1-channel model takes), else None.
        y_true: label indices in the model's output order, or None for synthetic images.
        calibration: training images shaped like the TFLite input (int8 only), or None.
        description: JSON-able summary for the report.
    """

    images: object
    rgb: object
    y_true: object
    calibration: object
    description: dict

    @property
    def tflite_images(self):
        return self.images if self.rgb is None else self.rgb


def _training_split(model, seed) -> dict:
    """The split `kerastl finetune` used for `model`, from the metrics.json beside it (or the defaults)."""
    import json

    settings = {"seed": 0, "validation_fraction": 0.2, "shots": None}
    if isinstance(model, (str, Path)):
        path = Path(model)
        metrics = (path if path.is_dir() else path.parent) / "metrics.json"
        try:
            config = json.loads(metrics.read_text()).get("config", {})
        except (OSError, ValueError, AttributeError):
            config = {}
        for key in settings:
            if config.get(key) is not None:
                settings[key] = config[key]
    if seed is not None:
        settings["seed"] = int(seed)
    return settings


def verification_set(data, labels: list[str], input_shape, *, calibrate: bool = False, seed: int = 0,
                     max_images: int = MAX_VERIFY_IMAGES, validation_fraction: float = 0.2,
                     shots: int | None = None) -> VerificationSet:
    """The held-out images of `data` (the validation part of `kerastl.data.split` with its default fraction
    and `seed`, as `kerastl finetune` held them out), at most `max_images` of them; with `calibrate`, also up to
    `MAX_CALIBRATION_IMAGES` of its training part. Without `data`, `SYNTHETIC_IMAGES` smooth random images.

    Raises:
        KerastlError: the data cannot be read, or has class folders the model does not know.
    """
    import random

    import numpy as np

    from kerastl.data import drop_undecodable, load_images, scan_folder, split

    height, width, channels = input_shape
    if data is None:
        rgb = synthetic_images(SYNTHETIC_IMAGES, (height, width), seed=seed)
        return _with_channels(rgb, channels, None, None,
                              {"source": "synthetic", "n": len(rgb), "labelled": False, "held_out": False})
    scan = drop_undecodable(scan_folder(data))
    unknown = [name for name in scan.class_names if name not in labels]
    if unknown:
        raise KerastlError(
            f"{data} has classes the model was not trained on: {', '.join(unknown[:5])}; the model knows "
            f"{', '.join(labels[:10])}{'...' if len(labels) > 10 else ''}; remove or rename those folders")
    parts = split(scan, validation_fraction=validation_fraction, shots=shots, seed=seed)
    to_model = [labels.index(name) for name in scan.class_names]
    held_out = bool(parts.val_files)
    # Without a validation part (one image per class) the training images are all there is.
    files, y = (parts.val_files, parts.val_labels) if held_out else (parts.train_files, parts.train_labels)
    total = len(files)
    rng = random.Random(seed)
    if len(files) > max_images:
        keep = sorted(rng.sample(range(len(files)), max_images))
        files, y = [files[i] for i in keep], [y[i] for i in keep]
    rgb = load_images(files, image_size=(height, width), channels=3)
    calibration = None
    if calibrate:
        train = list(parts.train_files)
        if len(train) > MAX_CALIBRATION_IMAGES:
            train = [train[i] for i in sorted(rng.sample(range(len(train)), MAX_CALIBRATION_IMAGES))]
        calibration = load_images(train, image_size=(height, width), channels=3)
    description = {"source": str(data), "n": len(files), "held_out": held_out, "labelled": True,
                   "available": total, "calibration_images": None if calibration is None else len(calibration),
                   "skipped": len(scan.skipped)}
    return _with_channels(rgb, channels, np.asarray([to_model[i] for i in y]), calibration, description)


def _with_channels(rgb, channels, y_true, calibration, description) -> VerificationSet:
    if channels == 3:
        return VerificationSet(rgb, None, y_true, calibration, description)
    return VerificationSet(to_grayscale(rgb), rgb, y_true, calibration, description)


def synthetic_images(n: int, size, *, seed: int = 0):
    """`n` smooth random RGB images (float32, (n, H, W, 3)) whose pixels span 0..255: blurry colour blobs,
    closer to photographs than white noise, for checking an export when no data is given."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 255.0, (n, 4, 4, 3)).astype("float32")
    images = tf.image.resize(coarse, size, method="bicubic").numpy()
    images += rng.normal(0.0, 8.0, images.shape)
    low = images.min(axis=(1, 2, 3), keepdims=True)
    high = images.max(axis=(1, 2, 3), keepdims=True)
    return ((images - low) / np.maximum(high - low, 1e-6) * 255.0).astype("float32")


# ---------------------------------------------------------------------------------------------------------
# The command


def export(model, *, format: str = "tflite", quantize: str = "none", data=None, max_accuracy_drop=None, out,
           labels: list[str] | None = None, trust: bool = False, seed: int | None = None) -> dict:
    """Exports a classifier for serving (SavedModel) and/or phones (TFLite), checks it against Keras and returns
    the report.

    Args:
        model: a `kerastl finetune` output directory, a .keras file, or a loaded Keras model.
        format: saved_model, tflite or all.
        quantize: none, float16, dynamic or int8 (TFLite only; int8 needs `data`).
        data: class-per-folder images. Exports are checked on its held-out part (the validation split that
            `kerastl finetune --seed 0` made) and int8 calibrates on its training part. Without it, exports are
            checked on synthetic images, for agreement with Keras only.
        max_accuracy_drop: a fraction (0.01 = one point); if any export's accuracy is lower than Keras' by
            more, nothing is written and `ExportRejected` is raised. Needs `data`.
        out: see `output_paths`: the .tflite file, the SavedModel directory, or for `all` a directory
            receiving saved_model/, model.tflite and export_report.json.
        labels: class names of a loaded `model` (default: those in labels.txt, or "0".."K-1").
        trust: allow model files that run code (Lambda layers).
        seed: the split's seed. Default: the seed, validation split and shots recorded in the finetune
            directory's metrics.json (so that "held out" means what `finetune` held out), else 0.

    Returns:
        The report (also written as JSON, see `output_paths`): `keras` and per-format `exports` figures from
        `verify_saved_model` and `verify_tflite`, `verified_on`, `files`, `passed`.

    All files are written to temporary names beside their targets and renamed into place once every export has
    been converted, verified and passed the gate: an interrupted or failed export leaves earlier files
    untouched and no partial one.

    Raises:
        UsageError: an invalid option or combination (named).
        ExportRejected: an export's accuracy dropped by more than `max_accuracy_drop`.
        KerastlError: the model, data or output path is unusable, a package is missing, or conversion fails.
    """
    from kerastl.atomic import atomic_path

    check_options(format, quantize, data, max_accuracy_drop)
    targets = output_paths(out, format)
    if "tflite" in targets:
        require_tflite_dependencies()
    keras_model, labels, source = _load(model, labels, trust)
    input_shape = image_input_shape(keras_model)
    samples = verification_set(data, labels, input_shape, calibrate=quantize == "int8",
                               **_training_split(model, seed))
    reference = keras_model.predict(samples.images, batch_size=64, verbose=0)

    report = {
        "model": source,
        "labels": list(labels),
        "input_shape": list(input_shape),
        "format": format,
        "quantize": quantize,
        "verified_on": samples.description,
        "keras": _keras_figures(reference, samples.y_true),
        "exports": {},
        "max_accuracy_drop": max_accuracy_drop,
        "passed": None,
        "files": {key: str(path) for key, path in targets.items()},
    }
    created = _missing_directories(targets.values())
    with _removed_if_empty_on_failure(created), contextlib.ExitStack() as stack:
        # Entered first, renamed last: the report appears only after the files it describes.
        report_tmp = stack.enter_context(atomic_path(targets["report"]))
        if "saved_model" in targets:
            tmp = stack.enter_context(atomic_path(targets["saved_model"], directory=True))
            write_saved_model(keras_model, labels, tmp)
            figures = verify_saved_model(tmp, samples.images, reference=reference, y_true=samples.y_true)
            report["exports"]["saved_model"] = _with_drop(figures, report["keras"])
        if "tflite" in targets:
            tmp = stack.enter_context(atomic_path(targets["tflite"]))
            blob = convert_tflite(keras_model, labels=labels, quantize=quantize, calibration=samples.calibration)
            Path(tmp).write_bytes(blob)
            figures = verify_tflite(blob, samples.tflite_images, reference=reference, y_true=samples.y_true)
            figures["quantize"] = quantize
            figures["rgb_input_for_grayscale_model"] = input_shape[2] == 1
            report["exports"]["tflite"] = _with_drop(figures, report["keras"])
        failures = _gate(report["exports"], max_accuracy_drop)
        report["passed"] = not failures
        if failures:
            raise ExportRejected(
                f"{'; '.join(failures)}, more than --max-accuracy-drop {max_accuracy_drop:g}; nothing was written "
                "(try a milder --quantize, or more --data to calibrate int8)", report)
        Path(report_tmp).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _missing_directories(paths) -> list[Path]:
    """The directories that writing `paths` will create, deepest first."""
    missing = []
    for path in paths:
        parent = Path(path).parent
        while not parent.exists() and parent not in missing:
            missing.append(parent)
            parent = parent.parent
    return sorted(missing, key=lambda p: len(p.parts), reverse=True)


@contextlib.contextmanager
def _removed_if_empty_on_failure(directories):
    # A failed export into a new --out directory should not leave an empty one behind.
    try:
        yield
    except BaseException:
        for directory in directories:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only succeeds when empty
        raise


def _load(model, labels, trust):
    from kerastl.evaluation import load_classifier

    if isinstance(model, (str, os.PathLike)):
        keras_model, file_labels = load_classifier(model, trust=trust)
        return keras_model, list(labels or file_labels), str(model)
    width = int(model.output.shape[-1])
    labels = list(labels) if labels is not None else [str(i) for i in range(width)]
    if len(labels) != width:
        raise KerastlError(f"{len(labels)} labels for a model with {width} outputs; pass one label per output")
    return model, labels, model.name


def _keras_figures(reference, y_true) -> dict:
    import numpy as np

    accuracy = None
    if y_true is not None and len(y_true):
        accuracy = round(float((np.asarray(reference).argmax(-1) == y_true).mean()), 6)
    return {"accuracy": accuracy}


def _with_drop(figures: dict, keras_figures: dict) -> dict:
    drop = None
    if figures.get("accuracy") is not None and keras_figures["accuracy"] is not None:
        drop = round(keras_figures["accuracy"] - figures["accuracy"], 6)
    return {**figures, "accuracy_drop": drop}


def _gate(exports: dict, max_accuracy_drop) -> list[str]:
    if max_accuracy_drop is None:
        return []
    failures = []
    for name, figures in exports.items():
        drop = figures.get("accuracy_drop")
        if drop is not None and drop > max_accuracy_drop + 1e-9:
            label = name if name != "tflite" else f"tflite {figures['quantize']}"
            failures.append(f"{label} accuracy {figures['accuracy']:.2%} is {drop * 100:.2f} points below Keras'")
    return failures


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    # Converter errors end with the useful line ("... op is neither a custom op nor a flex op").
    interesting = [line for line in lines if "error" in line.lower()] or lines
    text = interesting[-1] if interesting else type(error).__name__
    return text[:300]


# ---------------------------------------------------------------------------------------------------------
# Presentation (the CLI prints these lines)


def report_lines(report: dict) -> list[str]:
    """The report as a short table: one row per export with size, top-1 agreement with Keras, accuracy,
    maximum probability difference and median single-image latency."""
    verified = report["verified_on"]
    keras_accuracy = report["keras"]["accuracy"]
    if verified["source"] == "synthetic":
        where = f"{verified['n']} synthetic images (no --data: agreement with Keras only)"
    else:
        kind = "held-out" if verified["held_out"] else "training (no held-out part)"
        where = f"{verified['n']} {kind} images of {verified['source']}"
    lines = [f"verified on {where}" + (f"; Keras accuracy {keras_accuracy:.2%}" if keras_accuracy is not None else "")]
    lines.append(f"  {'export':<16}  {'size':>9}  {'top-1 = Keras':>13}  {'accuracy':>8}  {'max |dp|':>8}  "
                 f"{'latency':>10}")
    for name, figures in report["exports"].items():
        label = name if name != "tflite" else f"tflite {figures['quantize']}"
        accuracy = "-" if figures["accuracy"] is None else f"{figures['accuracy']:.2%}"
        agreement = "-" if figures["top1_agreement"] is None else f"{figures['top1_agreement']:.2%}"
        diff = "-" if figures["max_abs_diff"] is None else f"{figures['max_abs_diff']:.2g}"
        latency = "-" if figures.get("median_latency_ms") is None else f"{figures['median_latency_ms']:.3g} ms"
        lines.append(f"  {label:<16}  {_size(figures['bytes']):>9}  {agreement:>13}  {accuracy:>8}  {diff:>8}  "
                     f"{latency:>10}")
    tflite = report["exports"].get("tflite")
    if tflite and tflite.get("rgb_input_for_grayscale_model"):
        lines.append("  the TFLite file takes RGB and converts it to grayscale inside (MediaPipe runs only RGB models)")
    return lines


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}"
