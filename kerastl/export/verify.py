"""Verification: each export run on the same examples as Keras and compared with it (`verify_tflite` in the
LiteRT interpreter, `verify_saved_model`, `compare`), and those examples (`verification_set`: the held-out
part of the training data as `kerastl finetune` held it out, plus int8 calibration inputs; or
`synthetic_inputs` when no data is given)."""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from pathlib import Path

from kerastl.core.modality import get
from kerastl.errors import KerastlError
from kerastl.export.inputs import model_input

# Full-integer calibration: TFLite's guidance is a few hundred representative inputs.
MAX_CALIBRATION_EXAMPLES = 200
# Verification runs every held-out example through the interpreter one at a time; this bounds its time.
MAX_VERIFY_EXAMPLES = 1000
SYNTHETIC_INPUTS = 32
# Latency is measured single-threaded: comparable between runs on a shared machine, and what a phone's
# background task gets.
INTERPRETER_THREADS = 1


def to_grayscale(images):
    """RGB float pixels (N, H, W, 3) → (N, H, W, 1), exactly as `kerastl.data.decode_image` does."""
    import numpy as np
    import tensorflow as tf

    return np.clip(tf.image.rgb_to_grayscale(images).numpy(), 0.0, 255.0)


def verify_tflite(model, inputs, *, reference, y_true=None, threads: int = INTERPRETER_THREADS) -> dict:
    """Runs a TFLite model (bytes or a path) in the LiteRT interpreter on `inputs`, one at a time, and compares
    it with `reference` (Keras' probabilities for the same examples).

    `inputs` are shaped like the TFLite input (see `tflite_inputs`): float32 pixels in [0, 255] are rounded to
    uint8 for a uint8 input; waveforms and token ids are cast to the input's dtype. For a file of several
    inputs, `inputs` is `{name: values}` by the names of its signature (a keras-hub text model's `token_ids`,
    `padding_mask`, `segment_ids`); `input` then describes the first. A uint8 or int8 output is dequantized.

    Returns `{"n", "top1_agreement", "accuracy" (None without y_true), "max_abs_diff", "median_latency_ms",
    "bytes", "threads", "input": {"dtype", "shape", "scale", "zero_point"}}`.
    """
    import numpy as np

    from kerastl import extras

    extras.require("TFLite verification", "ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    content = Path(model).read_bytes() if isinstance(model, (str, os.PathLike)) else bytes(model)
    interpreter = Interpreter(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    out = interpreter.get_output_details()[0]
    feeds = _feeds(interpreter, inputs)
    inp = feeds[0][0]
    probabilities, latencies = [], []
    for index in range(len(feeds[0][1])):
        for detail, values in feeds:
            interpreter.set_tensor(detail["index"], values[index][None])
        start = time.perf_counter()
        interpreter.invoke()
        elapsed = time.perf_counter() - start
        if index or len(feeds[0][1]) == 1:  # the first call also allocates and warms up
            latencies.append(elapsed)
        scores = interpreter.get_tensor(out["index"])[0].astype("float32")
        if out["dtype"] in (np.uint8, np.int8):
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
        **({"inputs": list(inputs)} if isinstance(inputs, dict) else {}),
    }


def _feeds(interpreter, inputs) -> list:
    """`[(input detail, values cast to its dtype)]` of the interpreter's inputs: one array for a file of one
    input; a dict matched by the signature's input names for several (the interpreter's own input order is not
    the signature's)."""
    import numpy as np

    details = interpreter.get_input_details()
    if isinstance(inputs, dict):
        named = interpreter.get_signature_runner().get_input_details()
        missing = sorted(set(named) - set(inputs))
        if missing:
            raise KerastlError(f"the TFLite file takes {', '.join(sorted(named))}; no values were given for "
                               f"{', '.join(missing)}")
        by_index = {detail["index"]: detail for detail in details}
        # In the order given (a keras-hub text model's token_ids first), so that `input` describes that one.
        pairs = [(by_index[named[name]["index"]], np.asarray(inputs[name])) for name in inputs if name in named]
    else:
        pairs = [(details[0], np.asarray(inputs))]
    feeds = []
    for detail, values in pairs:
        if detail["dtype"] == np.uint8:
            values = np.clip(np.round(values.astype("float32")), 0, 255)
        feeds.append((detail, values.astype(detail["dtype"])))
    return feeds


def verify_saved_model(path, inputs, *, reference, y_true=None, signature: str = "serving_float",
                       batch_size: int = 64) -> dict:
    """Loads a SavedModel with `tf.saved_model.load` and compares the probabilities of its `signature` (for
    images `serving_float`, taking float32 pixels in [0, 255] with the model's own channels; for audio and
    text `serving_default`) on `inputs` with `reference`.

    Returns `{"n", "top1_agreement", "accuracy", "max_abs_diff", "bytes"}`.
    """
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures[signature]
    (name, spec), = serve.structured_input_signature[1].items()
    inputs = np.asarray(inputs, dtype=object if spec.dtype == tf.string else "float32")
    parts = [serve(**{name: tf.constant(inputs[i:i + batch_size], dtype=spec.dtype)})["probabilities"].numpy()
             for i in range(0, len(inputs), batch_size)]
    probabilities = np.concatenate(parts) if parts else np.zeros((0, np.shape(reference)[-1]))
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return {**compare(probabilities, reference, y_true), "bytes": size}


def verify_text_classifier(model, texts, *, reference, y_true=None) -> dict:
    """Runs a TFLite text classifier with MediaPipe metadata (bytes or a path) in MediaPipe Tasks'
    `TextClassifier` on the raw `texts`, one at a time, as an app does, and compares its scores with
    `reference` (Keras' probabilities for the same texts). MediaPipe tokenises each text itself, by the
    file's metadata.

    Returns `{"n", "top1_agreement", "accuracy" (None without y_true), "max_abs_diff", "median_latency_ms"
    (per `classify` call: tokenising and the model), "runtime"}`.

    Raises:
        KerastlError: mediapipe is not installed, or MediaPipe refuses the file or a text (one line).
    """
    import importlib.metadata

    import numpy as np

    from kerastl import extras
    from kerastl.errors import KerastlError
    from kerastl.export.errors import error_line

    extras.require("MediaPipe verification", "mediapipe")
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.text import TextClassifier, TextClassifierOptions

    content = Path(model).read_bytes() if isinstance(model, (str, os.PathLike)) else bytes(model)
    classes = int(np.shape(reference)[-1])
    options = TextClassifierOptions(base_options=BaseOptions(model_asset_buffer=content), max_results=classes)
    probabilities, latencies = [], []
    try:
        with TextClassifier.create_from_options(options) as classifier:
            for index, text in enumerate(texts):
                start = time.perf_counter()
                result = classifier.classify(str(text))
                elapsed = time.perf_counter() - start
                if index or len(texts) == 1:  # the first call also warms up
                    latencies.append(elapsed)
                scores = np.zeros(classes, "float32")
                for category in result.classifications[0].categories:
                    scores[category.index] = category.score
                probabilities.append(scores)
    except (ValueError, RuntimeError) as error:
        raise KerastlError(f"MediaPipe's TextClassifier failed on the TFLite file: {error_line(error)}") from error
    probabilities = np.stack(probabilities) if probabilities else np.zeros((0, classes))
    return {
        **compare(probabilities, reference, y_true),
        "median_latency_ms": round(statistics.median(latencies) * 1e3, 4) if latencies else None,
        "runtime": f"mediapipe {importlib.metadata.version('mediapipe')} TextClassifier",
    }


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
    """Examples to check exports on and, for int8, to calibrate with.

    Attributes:
        inputs: what Keras and the SavedModel take: float32 pixels in [0, 255] with the model's channels,
            float32 waveforms, or strings.
        tflite_inputs: the same examples as the TFLite file takes them (`tflite_inputs`).
        y_true: label indices in the model's output order, or None for synthetic examples.
        calibration: training examples shaped like the TFLite input (int8 only), or None.
        description: JSON-able summary for the report.
    """

    inputs: object
    tflite_inputs: object
    y_true: object
    calibration: object
    description: dict


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
        if config.get("cross_validation") and config.get("validation_fraction") is None and not config.get("shots"):
            # Cross-validation refit the model on every example: none is held out (the check says so).
            settings["validation_fraction"] = 0.0
    if seed is not None:
        settings["seed"] = int(seed)
    return settings


def verification_set(data, labels: list[str], model, *, calibrate: bool = False, seed: int = 0,
                     max_examples: int = MAX_VERIFY_EXAMPLES, validation_fraction: float = 0.2,
                     shots: int | None = None) -> VerificationSet:
    """The held-out examples of `data` (the validation part of `kerastl.data.split` with its default fraction
    and `seed`, as `kerastl finetune` held them out), at most `max_examples` of them, read for `model`; with
    `calibrate`, also up to `MAX_CALIBRATION_EXAMPLES` of its training part. Without `data`, `SYNTHETIC_INPUTS`
    synthetic examples (`synthetic_inputs`).

    Raises:
        KerastlError: the data cannot be read, is of another input type than the model, or has class folders
            the model does not know.
    """
    import random

    import numpy as np

    from kerastl.data import check_data_type, class_indices, drop_undecodable, scan_folder, split

    spec = model_input(model)
    modality = get(spec.modality)
    if data is None:
        raw = synthetic_inputs(model, SYNTHETIC_INPUTS, seed=seed)
        return VerificationSet(*modality.export_pair(model, spec, raw), None, None,
                               {"source": "synthetic", "n": len(raw), "labelled": False, "held_out": False,
                                "examples": modality.plural})
    check_data_type(data, spec.modality, subject=f"the model takes {spec.modality} input",
                    fix=f"give --data a folder of {spec.modality} files (the model's own training data)")
    scan = drop_undecodable(scan_folder(data, spec.modality))
    to_model = class_indices(data, scan.class_names, labels)
    parts = split(scan, validation_fraction=validation_fraction, shots=shots, seed=seed)
    held_out = bool(parts.val_files)
    # Without a validation part (one example per class) the training examples are all there is.
    files, y = (parts.val_files, parts.val_labels) if held_out else (parts.train_files, parts.train_labels)
    total = len(files)
    rng = random.Random(seed)
    if len(files) > max_examples:
        keep = sorted(rng.sample(range(len(files)), max_examples))
        files, y = [files[i] for i in keep], [y[i] for i in keep]
    inputs, lite_inputs = modality.verification_inputs(model, spec, files)
    calibration = None
    if calibrate:
        train = list(parts.train_files)
        if len(train) > MAX_CALIBRATION_EXAMPLES:
            train = [train[i] for i in sorted(rng.sample(range(len(train)), MAX_CALIBRATION_EXAMPLES))]
        calibration = modality.verification_inputs(model, spec, train)[1]
    description = {"source": str(data), "n": len(files), "examples": modality.plural, "held_out": held_out,
                   "labelled": True,
                   "available": total, "calibration_images": None if calibration is None else len(calibration),
                   "skipped": len(scan.skipped)}
    return VerificationSet(inputs, lite_inputs, np.asarray([to_model[i] for i in y]), calibration, description)


def synthetic_inputs(model, n: int, *, seed: int = 0):
    """`n` synthetic examples for `model`'s input type (`Modality.synthetic_inputs`): smooth random RGB images
    (`synthetic_images`, RGB also for a 1-channel model); clips of a few random tones in noise at a random
    level; or strings of random words from the model's vocabulary."""
    spec = model_input(model)
    return get(spec.modality).synthetic_inputs(model, spec, n, seed=seed)


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
