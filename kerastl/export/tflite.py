"""TFLite export (phones), as keras/src/export/litert.py: the form that converts (`lite_model`, with the
RGB-input wrapper of 1-channel image models and the token-id model of text ones), `convert_tflite`,
`export_tflite`, and the vocabulary file beside a text model's file.

The file is converted with Keras' own `Model.export(format="litert")`, batch 1, builtin ops only (a model
that would need the Flex delegate fails to convert rather than failing on the phone). Quantization (`QUANTIZATIONS`): none (float32), float16 (weights), dynamic (int8 weights,
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
  any word not in it). The report records the tokenizer's rules and says so. The file carries MediaPipe
  TextClassifier metadata: a regex tokenizer and its vocabulary file (`vocab.txt`, packed inside: several
  spellings per id) that turn a raw string into those ids, exactly for the tokenizer kerastl builds
  (`kerastl.inputs.text.mediapipe_tokenizer`), and the labels; export runs the file in MediaPipe too and
  reports how often it agrees with Keras. int8 is refused (`check_quantization`); dynamic and float16 work.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kerastl.errors import KerastlError, UsageError
from kerastl.export.errors import error_line
from kerastl.export.inputs import image_input_shape, model_input
from kerastl.export.paths import TFLITE_FILE, output_paths
from kerastl.export.quantize import (
    FULL_INTEGER,
    QUANTIZATIONS,  # noqa: F401 (re-exported)
    check_quantization,
    quantize_dynamic_except,
    require_tflite_dependencies,
)

VOCABULARY_FILE = "vocabulary.txt"
# The weights of tf.image.rgb_to_grayscale, which kerastl.data uses to make 1-channel training images.
LUMINANCE_WEIGHTS = (0.2989, 0.5870, 0.1140)


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


def lite_model(model):
    """What `convert_tflite` converts: `(keras_model, input TensorSpec of batch 1)`, `Modality.tflite_model`
    (a list of specs for a file of several inputs).

    Images: `rgb_input_model(model)` on float32 pixels. Audio: the model itself on a float32 waveform. Text:
    `kerastl.inputs.text.tokenized_model(model)` on int32 token ids (its vocabulary:
    `kerastl.inputs.text.vocabulary_of`), or for a keras-hub preprocessor
    `kerastl.inputs.packed_text.packed_model(model)` on its int32 token ids, padding mask and segment ids.

    Raises:
        KerastlError: as `model_input`, or a model with no TFLite form (a text model that cannot be split at its
            tokenizer).
    """
    return _modality(model).tflite_model(model)


def _modality(model):
    from kerastl.core.modality import get

    return get(model_input(model).modality)


def tflite_inputs(model, inputs):
    """`inputs` as Keras takes them → as the TFLite file takes them (`Modality.tflite_inputs`): int32 token ids
    for a text model (tokenized by the model's own tokenizer; `{name: ids}` of a keras-hub preprocessor's packed
    inputs; None for a hub module that tokenises inside),
    waveforms and RGB pixels unchanged. (A 1-channel image model's file takes RGB: `verification_set` keeps
    the RGB it decoded for it.)"""
    return _modality(model).tflite_inputs(model, inputs)


def convert_tflite(model, *, labels: list[str], quantize: str = "none", calibration=None) -> bytes:
    """The TFLite file of `model` (see the module docstring), with its MediaPipe task's metadata, as bytes. For a
    text model it is the token-id model; its vocabulary is `kerastl.inputs.text.vocabulary_of(model)`.

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

    modality = _modality(model)
    check_quantization(modality.name, quantize)
    require_tflite_dependencies(modality.name, quantize, verify=False)
    converted, signature = lite_model(model)
    options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    front_end = modality.float_layers(model, quantize)
    if quantize != "none" and not front_end:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        options["target_spec"]["supported_types"] = [tf.float16]
    if quantize in FULL_INTEGER:
        if isinstance(signature, (list, tuple)):
            raise UsageError(f"--quantize {quantize} calibrates TFLite files of one input; this {modality.noun} "
                             f"model's file takes {len(signature)}: use --quantize dynamic or float16")
        if calibration is None or len(calibration) == 0:
            raise UsageError(f"--quantize {quantize} needs calibration inputs (--data DIR)")
        samples = np.array(calibration, dtype=signature.dtype.as_numpy_dtype, copy=True)
        if samples.shape[1:] != tuple(signature.shape[1:]):
            raise UsageError(f"calibration inputs have shape {samples.shape[1:]}; the TFLite input is "
                             f"{tuple(signature.shape[1:])}")
        # Images: the input range pinned to 0..255 and uint8 in and out, raw pixel bytes as MediaPipe feeds
        # them; other modalities keep float32 in and out (a waveform or token ids are not bytes).
        options.update(modality.calibration(samples, quantize))
        options["representative_dataset"] = lambda: ([sample[None]] for sample in samples)
        options["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if quantize == "int8-per-tensor":
            # Not public converter API (TensorFlow 2.21): if it goes away, conversion fails with one line.
            options["_experimental_disable_per_channel"] = True
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TFLITE_FILE
        try:
            # A list of specs (a keras-hub text model's packed inputs) is the one list argument of a multi-input
            # functional model.
            converted.export(str(path), format="litert", verbose=False, input_signature=[signature], **options)
        except Exception as error:  # the converter raises ConverterError and friends with pages of MLIR
            raise KerastlError(f"TFLite conversion ({quantize}) failed: {error_line(error)}") from error
        blob = path.read_bytes()
    if front_end:
        blob = quantize_dynamic_except(blob, front_end)
    return modality.tflite_metadata(blob, model, labels, quantize=quantize)


def export_tflite(model, out, *, labels: list[str], quantize: str = "none", calibration=None) -> Path:
    """Writes `convert_tflite(...)` to `out` (a .tflite path), and the modality's companion files beside it
    (`Modality.companions`: a text model's vocabulary, `companion_path(out)`), as one set
    (`kerastl.core.atomic.commit_set`; a companion left beside `out` by a previous export goes with the old
    set). Returns `out` as a Path.

    Raises:
        UsageError, KerastlError: as `convert_tflite` and `output_paths`.
    """
    from kerastl.core import atomic

    atomic.recover_around(out)
    out = output_paths(out, "tflite")["tflite"]
    data = convert_tflite(model, labels=labels, quantize=quantize, calibration=calibration)
    modality = _modality(model)
    contents = modality.companion_contents(model)
    # Companions of every modality may lie beside an earlier file of this name: all are part of the old set.
    beside = companion_paths(out, "tflite")
    staged = {key: atomic.staged_path(path) for key, path in beside.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    staged_out = atomic.staged_path(out)
    for path in [staged_out, *staged.values()]:
        atomic.discard(path)  # what a killed export left
    try:
        staged_out.write_bytes(data)
        for key, (write, _) in contents.items():
            write(staged[key])
    except BaseException:
        for path in [staged_out, *staged.values()]:
            atomic.discard(path)
        raise
    entries = [(staged_out, out)]
    for key, path in beside.items():
        if staged[key].exists() or path.exists():
            entries.append((staged[key] if staged[key].exists() else None, path))
    atomic.commit_set(entries)
    return out


def companion_path(tflite: Path, format: str, companion) -> Path:
    """Where a `kerastl.core.modality.Companion` goes beside its .tflite: its `file_name` in a `--format all`
    directory, else `<name><suffix>`."""
    tflite = Path(tflite)
    return tflite.with_name(companion.file_name if format == "all" else tflite.stem + companion.suffix)


def companion_paths(tflite: Path, format: str, modality=None) -> dict:
    """`key -> path` of the companion files of `modality` (default: of every registered modality) beside
    `tflite`."""
    from kerastl.core.modality import all_modalities

    found = {}
    for each in [modality] if modality is not None else all_modalities():
        found.update({c.key: companion_path(tflite, format, c) for c in each.companion_files})
    return found


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
