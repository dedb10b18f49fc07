"""Deployment: a fine-tuned classifier as a TensorFlow SavedModel (servers) or a LiteRT/TFLite file (phones).

Both formats take the raw input (pixels, waveforms or strings), because kerastl models carry their
preprocessing as their first layers (rescaling, the log-mel front end, the tokenizer), so what runs on the
server or phone is exactly what Keras evaluated.

- SavedModel (`export_saved_model`): TF Serving's `serving_default` signature returns `probabilities`
  (batch, classes), `class_index` (int64) and `class_name` (string); the class names travel as the asset
  `assets/labels.txt` (read into a lookup table when the model loads). Its input: images, `images` uint8
  (batch, H, W, C) (`serving_float`: the same for float32 pixels in [0, 255]); audio, `waveforms` float32
  (batch, samples) in [-1, 1] at the model's sample rate; text, `texts` tf.string (batch,).
- TFLite (`convert_tflite`, `export_tflite`): converted with Keras' own `Model.export(format="litert")`,
  batch 1, builtin ops only (a model that would need the Flex delegate fails to convert rather than failing
  on the phone). Quantization (`QUANTIZATIONS`): none (float32), float16 (weights), dynamic (int8 weights,
  float activations), int8 (weights and activations int8, calibrated on representative inputs; weights
  quantized per output channel, TFLite's default) or int8-per-tensor (one scale per weight tensor: a smaller
  file, since per-channel scales and zero points cost 24 bytes per channel, which on MobileNet-style
  depthwise convolutions is more than their 9 weights; usually less accurate). An int8 image model takes and
  returns uint8 (raw pixel bytes in); audio and text models are not quantized to int8 (see below).
  - Images: the file carries MediaPipe-readable metadata: the input is an image of raw pixels
    (normalization mean 0, std 1 for float inputs; a uint8 input is quantized with scale 1 and zero point 0
    so it reads the image bytes as they are), and the class names are packed as `labels.txt`. MediaPipe
    Tasks only runs RGB models, so the TFLite file of a 1-channel model takes (H, W, 3) RGB and converts it
    to luminance in the graph with `tf.image.rgb_to_grayscale`'s weights (0.2989, 0.5870, 0.1140), the
    conversion `kerastl.data` applies to training images; the SavedModel keeps the model's own (H, W, 1).
  - Audio: the whole model converts (the log-mel front end is builtin ops): the file takes one float32
    waveform (1, samples) and carries MediaPipe AudioClassifier metadata (sample rate, mono, labels).
    Quantization must not touch the front end (`check_quantization`, `quantize_dynamic_except`): dynamic
    quantizes the network after it, and int8 is refused.
  - Text: string ops have no builtin TFLite kernels, so the file is the model after its tokenizer: it takes
    token ids (int32, (1, sequence_length)), and the vocabulary is written beside it (`vocabulary.txt`, or
    `<name>.vocab.txt`: line i is the token of id i; id 0, the empty first line, pads; id 1, `[UNK]`, is
    any word not in it). The report records the tokenizer's rules and says so. int8 is refused
    (`check_quantization`); dynamic and float16 work.

`export` ties it together: every export is checked against Keras on held-out inputs (`verify_tflite`,
`verify_saved_model`), an optional accuracy gate decides whether it is kept, and files appear under their
final names only once everything has passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from kerastl.errors import KerastlError, UsageError
from kerastl.export import metadata as tflite_metadata
from kerastl.reporting.text import report_lines  # noqa: F401  (moved: kept importable from here)

FORMATS = ("saved_model", "tflite", "all")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8", "int8-per-tensor")
FULL_INTEGER = ("int8", "int8-per-tensor")
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
REPORT_FILE = "export_report.json"
VOCABULARY_FILE = "vocabulary.txt"
LABELS_ASSET = "labels.txt"

# The weights of tf.image.rgb_to_grayscale, which kerastl.data uses to make 1-channel training images.
LUMINANCE_WEIGHTS = (0.2989, 0.5870, 0.1140)
# Full-integer calibration: TFLite's guidance is a few hundred representative inputs.
MAX_CALIBRATION_EXAMPLES = 200
# Verification runs every held-out example through the interpreter one at a time; this bounds its time.
MAX_VERIFY_EXAMPLES = 1000
SYNTHETIC_INPUTS = 32
# Words for synthetic texts when a model's vocabulary is inside a hub module.
_COMMON_WORDS = ("the of and to in is that for it as with was on be by this are from or have an they which one "
                 "you were all we when there can been has more if will their would what about time new first")
# Latency is measured single-threaded: comparable between runs on a shared machine, and what a phone's
# background task gets.
INTERPRETER_THREADS = 1



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
    if quantize in FULL_INTEGER and data is None:
        raise UsageError(f"--quantize {quantize} needs --data DIR: full-integer quantization calibrates on "
                         "representative inputs; give the class-per-folder directory the model was trained on")
    if max_accuracy_drop is not None:
        if not 0.0 <= float(max_accuracy_drop) <= 1.0:
            raise UsageError("--max-accuracy-drop is a fraction in [0, 1] (0.01 = one percentage point). "
                             f"Received: {max_accuracy_drop}")
        if data is None:
            raise UsageError("--max-accuracy-drop needs --data DIR: accuracy is measured on labelled "
                             "held-out images")


def require_tflite_dependencies(modality: str, quantize: str = "none", *, verify: bool = True) -> None:
    """Checks, before any work, the optional packages a TFLite export of a `modality` model quantized as
    `quantize` will import (`kerastl.extras`): the LiteRT interpreter to verify it (`verify`), the metadata
    packages for image and audio files, and litert-quantizer only for audio `dynamic`.

    Raises:
        KerastlError: one line naming the missing packages and the extra that installs them.
    """
    from kerastl import extras

    modules = ["ai_edge_litert"] if verify else []
    if modality in ("image", "audio"):
        modules += ["flatbuffers", "mediapipe"]
    if modality == "audio" and quantize == "dynamic":
        modules.append("litert_quantizer")
    extras.require("TFLite export", *modules)


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


def model_input(model):
    """The `kerastl.data.InputSpec` of a classifier to export (image, audio or text).

    Raises:
        KerastlError: the model does not take one fixed-size image, one waveform or one string per example.
    """
    from kerastl.data import input_spec

    spec = input_spec(model)
    if spec.modality == "image":
        image_input_shape(model)  # raises for a variable size
    return spec


def image_input_shape(model) -> tuple[int, int, int]:
    """(height, width, channels) of a classifier's image input.

    Raises:
        KerastlError: the model does not take one fixed-size image of 1 or 3 channels.
    """
    if len(model.inputs) != 1:
        raise KerastlError(f"the model has {len(model.inputs)} inputs; export handles classifiers with one")
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


def serving_inputs(model) -> list:
    """The SavedModel's signatures as `[(name, tf.TensorSpec)]`, the one `verify_saved_model` calls last: for
    images `serving_default` (uint8) and `serving_float` (float32 pixels 0-255); for audio and text one
    `serving_default` taking what `kerastl.modalities.audio.serving_signature` / `kerastl.modalities.text.serving_signature` say."""
    import tensorflow as tf

    spec = model_input(model)
    if spec.modality == "audio":
        from kerastl.modalities.audio import serving_signature

        return [("serving_default", serving_signature(model))]
    if spec.modality == "text":
        from kerastl.modalities.text import serving_signature

        return [("serving_default", serving_signature(model))]
    shape = (None, *image_input_shape(model))
    return [("serving_default", tf.TensorSpec(shape, tf.uint8, "images")),
            ("serving_float", tf.TensorSpec(shape, tf.float32, "images"))]


def write_saved_model(model, labels: list[str], path) -> None:
    """Writes the SavedModel described in the module docstring to `path` (not atomically; see
    `export_saved_model`)."""
    import keras
    import tensorflow as tf

    endpoints = serving_inputs(model)
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

        def outputs(inputs):
            if inputs.dtype.is_integer:
                inputs = tf.cast(inputs, tf.float32)
            probabilities = model(inputs, training=False)
            index = tf.argmax(probabilities, axis=-1)
            return {"probabilities": probabilities, "class_index": index, "class_name": table.lookup(index)}

        for name, signature in endpoints:
            archive.add_endpoint(name, outputs, input_signature=[signature])
        archive.write_out(str(path), verbose=False)


def export_saved_model(model, out, *, labels: list[str]) -> Path:
    """Writes `model` as a SavedModel directory at `out`, atomically (a previous one is replaced only once the
    new one is complete). Returns `out` as a Path.

    Raises:
        KerastlError: the model is not a classifier of fixed-size images, waveforms or strings, or `out` is not
            replaceable (see `output_paths`).
    """
    from kerastl.core.atomic import atomic_path, recover_around

    recover_around(out)
    out = output_paths(out, "saved_model")["saved_model"]
    with atomic_path(out, directory=True) as tmp:
        write_saved_model(model, labels, tmp)
    return out


# ---------------------------------------------------------------------------------------------------------
# TFLite


def lite_model(model):
    """What `convert_tflite` converts: `(keras_model, input TensorSpec of batch 1)`.

    Images: `rgb_input_model(model)` on float32 pixels. Audio: the model itself on a float32 waveform. Text:
    `kerastl.modalities.text.tokenized_model(model)` on int32 token ids (its vocabulary: `kerastl.modalities.text.vocabulary_of`).

    Raises:
        KerastlError: as `model_input`, or a text model that cannot be split at its tokenizer.
    """
    import tensorflow as tf

    spec = model_input(model)
    if spec.modality == "audio":
        from kerastl.modalities.audio import tflite_signature

        return model, tflite_signature(model)
    if spec.modality == "text":
        from kerastl.modalities.text import tokenized_model

        _require_own_tokenizer(model)
        ids_model = tokenized_model(model)[0]
        # int32 ids: what mobile tokenizers produce and TFLite's gather takes natively.
        return ids_model, tf.TensorSpec((1, int(ids_model.input.shape[1])), tf.int32, name="token_ids")
    converted = rgb_input_model(model)
    return converted, tf.TensorSpec((1, *image_input_shape(converted)), tf.float32, name="image")


def _require_own_tokenizer(model) -> None:
    """Raises KerastlError unless a text model tokenises with a `TextVectorization` layer (which `lite_model`
    splits off), rather than inside a TF-Hub module."""
    from kerastl.modalities.text import tokenizer_of

    if tokenizer_of(model) is None:
        raise KerastlError("this text model tokenises inside a TF-Hub module, whose string ops TFLite cannot run "
                           "and kerastl cannot split off; export it with --format saved_model")


def tflite_inputs(model, inputs):
    """`inputs` as Keras takes them → as the TFLite file takes them: int32 token ids for a text model
    (tokenized by the model's own tokenizer; None for a hub module that tokenises inside), waveforms and RGB
    pixels unchanged. (A 1-channel image model's
    file takes RGB: `verification_set` keeps the RGB it decoded for it.)"""
    import numpy as np

    if model_input(model).modality == "text":
        from kerastl.modalities.text import tokenize, tokenizer_of

        if tokenizer_of(model) is None:
            return None  # no TFLite form (`_require_own_tokenizer`)
        return tokenize(model, inputs).astype("int32")
    return np.asarray(inputs, dtype="float32")


def convert_tflite(model, *, labels: list[str], quantize: str = "none", calibration=None) -> bytes:
    """The TFLite file of `model` (see the module docstring), with MediaPipe metadata for images and audio, as
    bytes. For a text model it is the token-id model; its vocabulary is `kerastl.modalities.text.vocabulary_of(model)`.

    `calibration` (inputs shaped like the TFLite input, see `tflite_inputs`) is required for int8. For images,
    one calibration image gets a pixel of 0 and one of 255 so that the uint8 input is quantized with scale 1
    and zero point 0, i.e. it takes raw pixel bytes, as MediaPipe feeds them.

    Raises:
        UsageError: unknown `quantize`, int8 without calibration inputs, or int8 for audio or text
            (`check_quantization`).
        KerastlError: conversion fails (e.g. an op LiteRT's builtin kernels lack), or the metadata cannot be
            written (e.g. the uint8 input did not get scale 1).
    """
    import numpy as np
    import tensorflow as tf

    if quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received: {quantize}")
    modality = model_input(model).modality
    check_quantization(modality, quantize)
    require_tflite_dependencies(modality, quantize, verify=False)
    converted, signature = lite_model(model)
    options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    front_end = _front_end_layers(model) if modality == "audio" and quantize == "dynamic" else []
    if quantize != "none" and not front_end:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        options["target_spec"]["supported_types"] = [tf.float16]
    if quantize in FULL_INTEGER:
        if calibration is None or len(calibration) == 0:
            raise UsageError(f"--quantize {quantize} needs calibration inputs (--data DIR)")
        samples = np.array(calibration, dtype=signature.dtype.as_numpy_dtype, copy=True)
        if samples.shape[1:] != tuple(signature.shape[1:]):
            raise UsageError(f"calibration inputs have shape {samples.shape[1:]}; the TFLite input is "
                             f"{tuple(signature.shape[1:])}")
        if modality == "image":
            # The converter takes the input's range from what it sees; pin it to the full 0..255.
            samples[0, 0, 0, :] = 0.0
            samples[0, -1, -1, :] = 255.0
            # Raw pixel bytes in, as MediaPipe feeds them; audio and text keep float32 in and out (a waveform
            # or token ids are not bytes).
            options.update(inference_input_type=tf.uint8, inference_output_type=tf.uint8)
        options["representative_dataset"] = lambda: ([sample[None]] for sample in samples)
        options["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if quantize == "int8-per-tensor":
            # Not public converter API (TensorFlow 2.21): if it goes away, conversion fails with one line.
            options["_experimental_disable_per_channel"] = True
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TFLITE_FILE
        try:
            converted.export(str(path), format="litert", verbose=False, input_signature=[signature], **options)
        except Exception as error:  # the converter raises ConverterError and friends with pages of MLIR
            raise KerastlError(f"TFLite conversion ({quantize}) failed: {_one_line(error)}") from error
        blob = path.read_bytes()
    if front_end:
        blob = quantize_dynamic_except(blob, front_end)
    kind = "float32" if quantize == "none" else quantize
    if modality == "text":
        return blob
    if modality == "audio":
        from kerastl.modalities.audio import sample_rate_of

        return tflite_metadata.add_audio_classifier_metadata(
            blob, labels=list(labels), sample_rate=int(sample_rate_of(model)), name=f"{model.name} ({kind})",
            description=f"Audio classifier exported by kerastl: {len(labels)} classes, raw mono waveforms in.")
    float_input = quantize not in FULL_INTEGER
    return tflite_metadata.add_image_classifier_metadata(
        blob,
        labels=list(labels),
        # Raw pixels in, preprocessing inside: MediaPipe feeds (pixel - 0) / 1 to a float input and the bytes
        # themselves to a uint8 one.
        mean=[0.0] if float_input else None,
        std=[1.0] if float_input else None,
        name=f"{model.name} ({kind})",
        description=f"Image classifier exported by kerastl: {len(labels)} classes, raw RGB pixels in.",
    )


def check_quantization(modality: str, quantize: str) -> None:
    """Raises UsageError for a quantization that ruins models of this input type. Both cases are measured by
    tools/bench_export_audio_text.py; the verification report would show the damage, but a file that answers
    near chance is not worth writing.

    - Audio, full integer: it quantizes the log-mel front end too; the waveform and the power spectrum become
      8-bit, and everything quieter than 1/256 of a frame's loudest part is lost. The shipped audio backbone
      fine-tuned on ten spoken keywords: 100% held-out accuracy in float32, 25% in int8.
    - Text, full integer: the masked means over token positions do not survive 8-bit activations. The shipped
      text backbone fine-tuned on eight libraries' docstrings: 72.4% in float32, 13.2% in int8 (chance is
      12.5%), with 9.2% top-1 agreement.

    Dynamic-range quantization (int8 weights, float activations) keeps 100% (audio) and 99.3% (text) top-1
    agreement.
    """
    if quantize not in FULL_INTEGER or modality == "image":
        return
    if modality == "audio":
        raise UsageError(f"--quantize {quantize} would make the audio front end 8-bit (waveform and spectrum), which "
                         "destroys accuracy; use --quantize dynamic (int8 network weights, float front end) or "
                         "float16")
    raise UsageError(f"--quantize {quantize} makes text models answer at chance (8-bit averages over token "
                     "positions); use --quantize dynamic (int8 weights, 4x smaller) or float16")


def _front_end_layers(model) -> list[str]:
    """Names of the model's `LogMelSpectrogram` layers (kerastl's audio front end)."""
    from kerastl.core.graph import walk_layers
    from kerastl.modalities.audio import LogMelSpectrogram

    return [layer.name for layer in walk_layers(model) if isinstance(layer, LogMelSpectrogram)]


def quantize_dynamic_except(blob: bytes, layers: list[str]) -> bytes:
    """Dynamic-range quantization (int8 weights per output channel, activations quantized on the fly) of a
    float32 TFLite file, leaving the ops of the Keras layers named `layers` in float32.

    TFLite's converter has no way to leave ops out of dynamic-range quantization, and applied to an audio model
    it quantizes the log-mel front end's DFT and mel matrices and their inputs. Google's litert-quantizer
    quantizes a converted file by a recipe whose entries select ops by their tensor names, which carry the
    Keras layer names. Measured by tools/bench_export_audio_text.py on ten spoken keywords: the converter's
    file agrees with Keras on 96.25% of the held-out clips (largest probability error 0.88); with the front
    end left float, on 100% (0.0135), at 0.535x the float32 size instead of 0.262x.

    Raises:
        KerastlError: litert-quantizer is missing or fails.
    """
    import re

    from kerastl import extras

    extras.require("audio dynamic-range quantization", "litert_quantizer")
    from litert_quantizer import quantizer, recipe

    # Keras traces a layer "log_mel" under scopes such as "classifier_1/backbone_1/log_mel_1/...".
    pattern = "|".join(rf"(^|.*/){re.escape(name)}(_\d+)?/.*" for name in layers)
    try:
        quantize = quantizer.Quantizer(bytearray(blob))
        steps = list(recipe.dynamic_wi8_afp32())
        # Later entries override earlier ones for the ops they match.
        steps.append({"regex": pattern, "operation": "*", "algorithm_key": "no_quantize"})
        quantize.load_quantization_recipe(steps)
        with contextlib.redirect_stdout(None):  # it prints a progress report
            quantized = bytes(quantize.quantize(enable_progress_report=False).quantized_model)
    except Exception as error:  # its errors are internal types with multi-line messages
        raise KerastlError(f"dynamic-range quantization failed: {_one_line(error)}") from error
    # It stores weights over 256 KB after the flatbuffer, where metadata writing cannot reach them.
    return tflite_metadata.inline_buffers(quantized)


def export_tflite(model, out, *, labels: list[str], quantize: str = "none", calibration=None) -> Path:
    """Writes `convert_tflite(...)` to `out` (a .tflite path), and for a text model its vocabulary beside it
    (`vocabulary_path(out)`), as one set (`kerastl.core.atomic.commit_set`; a vocabulary left beside `out` by a
    previous text export goes with the old set). Returns `out` as a Path.

    Raises:
        UsageError, KerastlError: as `convert_tflite` and `output_paths`.
    """
    from kerastl.core import atomic
    from kerastl.modalities.text import vocabulary_of

    atomic.recover_around(out)
    out = output_paths(out, "tflite")["tflite"]
    data = convert_tflite(model, labels=labels, quantize=quantize, calibration=calibration)
    vocabulary = vocabulary_path(out, "tflite")
    staged = [atomic.staged_path(out), atomic.staged_path(vocabulary)]
    out.parent.mkdir(parents=True, exist_ok=True)
    for path in staged:
        atomic.discard(path)  # what a killed export left
    try:
        staged[0].write_bytes(data)
        if model_input(model).modality == "text":
            write_vocabulary(vocabulary_of(model), staged[1])
    except BaseException:
        for path in staged:
            atomic.discard(path)
        raise
    entries = [(staged[0], out)]
    if staged[1].exists() or vocabulary.exists():
        entries.append((staged[1] if staged[1].exists() else None, vocabulary))
    atomic.commit_set(entries)
    return out


def vocabulary_path(tflite: Path, format: str) -> Path:
    """Where a text model's vocabulary goes beside its .tflite: `vocabulary.txt` in a `--format all`
    directory, else `<name>.vocab.txt`."""
    tflite = Path(tflite)
    return tflite.with_name(VOCABULARY_FILE if format == "all" else tflite.stem + ".vocab.txt")


def write_vocabulary(vocabulary: list[str], path) -> None:
    """One token per line, line i (from 0) holding the token of id i; id 0 (padding) is the empty first line.

    Raises:
        KerastlError: a token contains a line break, which would shift every id after it.
    """
    bad = next((token for token in vocabulary if "\n" in token or "\r" in token), None)
    if bad is not None:
        raise KerastlError(f"the vocabulary token {bad!r} contains a line break; it cannot be written one per line")
    Path(path).write_text("".join(f"{token}\n" for token in vocabulary), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# Verification


def verify_tflite(model, inputs, *, reference, y_true=None, threads: int = INTERPRETER_THREADS) -> dict:
    """Runs a TFLite model (bytes or a path) in the LiteRT interpreter on `inputs`, one at a time, and compares
    it with `reference` (Keras' probabilities for the same examples).

    `inputs` are shaped like the TFLite input (see `tflite_inputs`): float32 pixels in [0, 255] are rounded to
    uint8 for a uint8 input; waveforms and token ids are cast to the input's dtype. A uint8 or int8 output
    is dequantized.

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
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    inputs = np.asarray(inputs)
    if inp["dtype"] == np.uint8:
        inputs = np.clip(np.round(inputs.astype("float32")), 0, 255)
    inputs = inputs.astype(inp["dtype"])
    probabilities, latencies = [], []
    for index, example in enumerate(inputs):
        interpreter.set_tensor(inp["index"], example[None])
        start = time.perf_counter()
        interpreter.invoke()
        elapsed = time.perf_counter() - start
        if index or len(inputs) == 1:  # the first call also allocates and warms up
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
    }


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

    from kerastl.data import class_indices, detect_modality, drop_undecodable, scan_folder, split

    spec = model_input(model)
    if data is None:
        raw = synthetic_inputs(model, SYNTHETIC_INPUTS, seed=seed)
        return VerificationSet(*_for_model(model, spec, raw), None, None,
                               {"source": "synthetic", "n": len(raw), "labelled": False, "held_out": False})
    found = detect_modality(data)
    if found is not None and found != spec.modality:
        raise KerastlError(f"{data} holds {found} files but the model takes {spec.modality} input; give --data a "
                           f"folder of {spec.modality} files (the model's own training data)")
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
    inputs, lite_inputs = _for_model(model, spec, _read(spec, files))
    calibration = None
    if calibrate:
        train = list(parts.train_files)
        if len(train) > MAX_CALIBRATION_EXAMPLES:
            train = [train[i] for i in sorted(rng.sample(range(len(train)), MAX_CALIBRATION_EXAMPLES))]
        calibration = _for_model(model, spec, _read(spec, train))[1]
    description = {"source": str(data), "n": len(files), "held_out": held_out, "labelled": True,
                   "available": total, "calibration_images": None if calibration is None else len(calibration),
                   "skipped": len(scan.skipped)}
    return VerificationSet(inputs, lite_inputs, np.asarray([to_model[i] for i in y]), calibration, description)


def _read(spec, files):
    """`files` read for the model; images always as RGB (see `_for_model`)."""
    from kerastl.data import load_images, load_inputs

    if spec.modality == "image":
        return load_images(files, image_size=spec.shape[:2], channels=3)
    return load_inputs(spec, files)


def _for_model(model, spec, raw) -> tuple:
    """(what Keras takes, what the TFLite file takes) from `_read`'s or `synthetic_inputs`' examples. A
    1-channel image model gets the RGB converted as `kerastl.data` converts training images, and its TFLite
    file, which converts RGB itself, the RGB."""
    if spec.modality == "image" and spec.shape[2] == 1:
        return to_grayscale(raw), raw
    return raw, tflite_inputs(model, raw)


def synthetic_inputs(model, n: int, *, seed: int = 0):
    """`n` synthetic examples for `model`'s input type: smooth random RGB images (`synthetic_images`, RGB also
    for a 1-channel model); clips of a few random tones in noise at a random level; or strings of random words
    from the model's vocabulary (common English words for a hub module, whose vocabulary is hidden)."""
    import numpy as np

    spec = model_input(model)
    rng = np.random.default_rng(seed)
    if spec.modality == "audio":
        samples = spec.shape[0]
        t = np.arange(samples) / spec.sample_rate
        clips = []
        for _ in range(n):
            tones = sum(np.sin(2 * np.pi * rng.uniform(80, 4000) * t + rng.uniform(0, 2 * np.pi))
                        for _ in range(rng.integers(1, 4)))
            clip = tones / 3 + rng.normal(0, 0.1, samples)
            clips.append(rng.uniform(0.05, 0.9) * clip / np.abs(clip).max())
        return np.stack(clips).astype("float32")
    if spec.modality == "text":
        from kerastl.modalities.text import vocabulary_of

        words = vocabulary_of(model)[2:] or _COMMON_WORDS.split()
        return np.asarray([" ".join(rng.choice(words, rng.integers(3, 40))) for _ in range(n)], dtype=object)
    return synthetic_images(n, spec.shape[:2], seed=seed)


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
    """Exports a classifier (image, audio or text) for serving (SavedModel) and/or phones (TFLite), checks it
    against Keras and returns the report.

    Args:
        model: a `kerastl finetune` output directory, a .keras file, or a loaded Keras model.
        format: saved_model, tflite or all.
        quantize: one of `QUANTIZATIONS` (TFLite only; int8 and int8-per-tensor need `data`).
        data: the class-per-folder directory of the model's input type. Exports are checked on its held-out
            part (the validation split that `kerastl finetune --seed 0` made) and int8 calibrates on its
            training part. Without it, exports are checked on synthetic inputs, for agreement with Keras only.
        max_accuracy_drop: a fraction (0.01 = one point); if any export's accuracy is lower than Keras' by
            more, nothing is written and `ExportRejected` is raised. Needs `data`.
        out: see `output_paths`: the .tflite file, the SavedModel directory, or for `all` a directory
            receiving saved_model/, model.tflite and export_report.json. A text model's TFLite file gets its
            vocabulary beside it (`vocabulary_path`).
        labels: class names of a loaded `model` (default: those in labels.txt, or "0".."K-1").
        trust: allow model files that run code (Lambda layers).
        seed: the split's seed. Default: the seed, validation split and shots recorded in the finetune
            directory's metrics.json (so that "held out" means what `finetune` held out), else 0.

    Returns:
        The report (also written as JSON, see `output_paths`): `modality`, `keras` and per-format `exports`
        figures from `verify_saved_model` and `verify_tflite`, `verified_on`, `files`, `passed`, and for text
        `tokenizer` (how to turn a string into the TFLite file's token ids).

    The files are one set: written under temporary names, fsynced, and committed together only once every
    export has been converted, verified and passed the gate (`_staged_outputs`). A failed export leaves the
    previous set untouched and no partial file. A killed one leaves the previous set or the new one, complete,
    never a mix: for `format="all"` on disk at every moment (one atomic directory swap, see `kerastl.core.atomic`);
    for a .tflite or SavedModel target beside other files, as kerastl sees it: a commit journal, which the
    next kerastl command reading or writing there completes first (a kill inside the few milliseconds of the
    renames leaves other programs a mix until that command runs).

    Raises:
        UsageError: an invalid option or combination (named).
        ExportRejected: an export's accuracy dropped by more than `max_accuracy_drop`.
        KerastlError: the model, data or output path is unusable, the data is of another input type than the
            model, a package is missing, or conversion fails.
    """
    from kerastl.core.atomic import recover_around

    check_options(format, quantize, data, max_accuracy_drop)
    recover_around(out)  # complete an export a kill interrupted, before looking at what is there
    targets = output_paths(out, format)
    keras_model, labels, source = _load(model, labels, trust)
    spec = model_input(keras_model)
    check_quantization(spec.modality, quantize)
    if "tflite" in targets:
        require_tflite_dependencies(spec.modality, quantize)
    if spec.modality == "text" and "tflite" in targets:
        _require_own_tokenizer(keras_model)
        targets["vocabulary"] = vocabulary_path(targets["tflite"], format)
    samples = verification_set(data, labels, keras_model, calibrate=quantize in FULL_INTEGER,
                               **_training_split(model, seed))
    reference = keras_model.predict(samples.inputs, batch_size=64, verbose=0)

    report = {
        "model": source,
        "modality": spec.modality,
        "labels": list(labels),
        "input_shape": list(spec.shape),
        "format": format,
        "quantize": quantize,
        "verified_on": samples.description,
        "keras": _keras_figures(reference, samples.y_true),
        "exports": {},
        "max_accuracy_drop": max_accuracy_drop,
        "passed": None,
        "files": {key: str(path) for key, path in targets.items()},
    }
    if spec.sample_rate is not None:
        report["sample_rate"] = spec.sample_rate
    created = _missing_directories(targets.values())
    with _removed_if_empty_on_failure(created), _staged_outputs(targets, format) as staged:
        if "saved_model" in targets:
            write_saved_model(keras_model, labels, staged["saved_model"])
            figures = verify_saved_model(staged["saved_model"], samples.inputs, reference=reference,
                                         y_true=samples.y_true, signature=serving_inputs(keras_model)[-1][0])
            report["exports"]["saved_model"] = _with_drop(figures, report["keras"])
        if "tflite" in targets:
            blob = convert_tflite(keras_model, labels=labels, quantize=quantize, calibration=samples.calibration)
            staged["tflite"].write_bytes(blob)
            figures = verify_tflite(blob, samples.tflite_inputs, reference=reference, y_true=samples.y_true)
            figures["quantize"] = quantize
            figures["rgb_input_for_grayscale_model"] = spec.modality == "image" and spec.shape[2] == 1
            report["exports"]["tflite"] = _with_drop(figures, report["keras"])
            if "vocabulary" in targets:
                from kerastl.modalities.text import tokenizer_rules, vocabulary_of

                write_vocabulary(vocabulary_of(keras_model), staged["vocabulary"])
                report["tokenizer"] = {
                    **tokenizer_rules(keras_model),
                    "vocabulary_file": targets["vocabulary"].name,
                    "input": "token ids, int32 (1, sequence_length), padded with 0 and cut at sequence_length",
                    "why": "TFLite has no builtin kernels for the tokenizer's string ops, so the .tflite file is "
                           "the model after its tokenizer; tokenize with the vocabulary file as the rules say "
                           "(the SavedModel takes raw strings)",
                }
        failures = _gate(report["exports"], max_accuracy_drop)
        report["passed"] = not failures
        if failures:
            raise ExportRejected(
                f"{'; '.join(failures)}, more than --max-accuracy-drop {max_accuracy_drop:g}; nothing was written "
                "(try a milder --quantize, or more --data to calibrate int8)", report)
        staged["report"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


# What an export owns: for `all`, names in its directory; else the siblings of its target (a vocabulary that a
# previous text export left beside NAME.tflite goes with the set it belonged to).
_ALL_NAMES = (SAVED_MODEL_DIR, TFLITE_FILE, VOCABULARY_FILE, REPORT_FILE)
_COMMIT_ORDER = ("saved_model", "tflite", "vocabulary", "report")  # the report, describing the rest, last


@contextlib.contextmanager
def _staged_outputs(targets: dict, format: str):
    """Yields `{key: where to write it}` for `targets`; when the block ends without an exception, they all
    become the targets as one set (`kerastl.core.atomic`); on any exception, nothing is kept.

    `format="all"`: the new directory is staged beside `--out` and swapped with it; files in `--out` that the
    export does not write are kept. Other formats: each file is staged beside its target and the set committed
    through a journal.
    """
    from kerastl.core import atomic

    if format == "all":
        out = targets["report"].parent
        with atomic.staged_directory(out) as directory:
            yield {key: directory / path.name for key, path in targets.items()}
        atomic.commit_directory(directory, out, owned=_ALL_NAMES)
        return
    parent = targets["report"].parent
    parent.mkdir(parents=True, exist_ok=True)
    staged = {key: atomic.staged_path(path) for key, path in targets.items()}
    for path in staged.values():
        atomic.discard(path)
    try:
        yield staged
    except BaseException:
        for path in staged.values():
            atomic.discard(path)
        raise
    entries = [(staged[key], targets[key]) for key in _COMMIT_ORDER if key in targets]
    if "tflite" in targets and "vocabulary" not in targets:
        stale = vocabulary_path(targets["tflite"], format)
        if stale.exists():
            entries.insert(1, (None, stale))
    atomic.commit_set(entries)


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
    from kerastl.train.evaluate import load_classifier

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

