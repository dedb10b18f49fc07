"""TFLite model metadata for image and audio classifiers, in the form MediaPipe Tasks reads.

MediaPipe's `ImageClassifier` refuses a float model without `NormalizationOptions` metadata,
and takes class names only from a labels file packed with the model (without one, every category
name is None). Its `AudioClassifier` refuses a model without metadata at all: it takes the sample
rate and channel count of the input from the input tensor's `AudioProperties`, and class names
from the same kind of labels file. The tools that used to write that metadata no longer work:
mediapipe's own `metadata_writers` fails to import (it needs a C extension the wheels no longer
ship), and tflite-support is unmaintained. This module reimplements what tflite-support's
`MetadataPopulator` does:

1. serialize a `ModelMetadata` flatbuffer (file identifier ``M001``),
2. store it as a model buffer referenced from the model's ``metadata`` vector under the name
   ``TFLITE_METADATA`` (other entries, such as the converter's ``min_runtime_version``, are kept),
3. append the associated files (here ``labels.txt``) as an uncompressed zip archive after the
   flatbuffer, so the model file is also a valid zip.

The flatbuffer code is the generated Python that ships in the installed wheels: the TFLite model
schema from TensorFlow (or mediapipe) and the metadata schema from mediapipe. They are loaded by
file path, because importing the `mediapipe` package runs its native bindings, which we don't
need for reading or writing bytes.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import math
import operator
import os
import zipfile
from types import ModuleType
from typing import Any

from kerastl.errors import KerastlError

__all__ = [
    "LABELS_FILE_NAME",
    "add_audio_classifier_metadata",
    "add_image_classifier_metadata",
    "inline_buffers",
    "read_associated_files",
    "read_metadata",
]

#: Name of the associated labels file written by the `add_*_classifier_metadata` functions.
LABELS_FILE_NAME = "labels.txt"

_METADATA_FIELD_NAME = "TFLITE_METADATA"
_TFLITE_FILE_IDENTIFIER = b"TFL3"
_METADATA_FILE_IDENTIFIER = b"M001"
# The smallest parser version that understands every field we write. It is the largest "Added in"
# version (metadata_schema.fbs) among the populated fields, and at least 1.0.0 for identifier
# M001. Image metadata only uses 1.0.0 fields (no VOCABULARY files, process units on the
# subgraph, tensor groups, custom metadata or AssociatedFile.version), so it is 1.0.0; audio
# metadata adds AudioProperties, added in 1.3.0. tflite-support computed this with a C++ helper
# that current mediapipe wheels don't ship.
_IMAGE_MIN_PARSER_VERSION = "1.0.0"
_AUDIO_MIN_PARSER_VERSION = "1.3.0"
# AudioProperties.sample_rate and .channels are uint32.
_UINT32_MAX = 2**32 - 1
# The TFLite schema declares Buffer.data with force_align 16, but the generated Python packer
# aligns bytes to 1. TFLite copes with either (the converter itself leaves small buffers 4- or
# 8-aligned), but re-serializing is our chance to give kernels that read weights in place the
# alignment the schema promises, at the cost of at most 15 padding bytes per buffer.
_BUFFER_ALIGNMENT = 16
# A fixed timestamp makes the appended zip, and so the whole model file, reproducible.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# Relative tolerance for "the uint8 input takes raw pixel values" (see _check_uint8_input).
_QUANT_SCALE_RTOL = 0.02


# ---------------------------------------------------------------------------------------------
# Generated flatbuffer code


def _load_generated(package: str, relative_path: str, module_name: str) -> ModuleType | None:
    """Loads a generated `*_py_generated.py` file from an installed package, without importing
    the package itself. Returns None if the package or file is not there."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = os.path.join(location, relative_path)
        if os.path.isfile(path):
            file_spec = importlib.util.spec_from_file_location(module_name, path)
            if file_spec is None or file_spec.loader is None:
                continue
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
            return module
    return None


@functools.cache
def _model_schema() -> ModuleType:
    # TensorFlow's copy matches the converter that wrote the model; mediapipe's is a fallback.
    for package, path in (
        ("tensorflow", "lite/python/schema_py_generated.py"),
        ("mediapipe", "tasks/metadata/schema_py_generated.py"),
    ):
        module = _load_generated(package, path, "kerastl._generated_tflite_schema")
        if module is not None:
            return module
    raise KerastlError(
        "The TFLite model schema (schema_py_generated.py) was not found in the installed "
        "tensorflow or mediapipe; reinstall tensorflow."
    )


@functools.cache
def _metadata_schema() -> ModuleType:
    module = _load_generated(
        "mediapipe",
        "tasks/metadata/metadata_schema_py_generated.py",
        "kerastl._generated_tflite_metadata_schema",
    )
    if module is None:
        from kerastl import extras

        extras.require("TFLite metadata (its schema ships in the mediapipe wheel)", "mediapipe")
        raise KerastlError(  # mediapipe is installed but lacks the file: a wheel layout we don't know
            "the installed mediapipe has no tasks/metadata/metadata_schema_py_generated.py; reinstall it with "
            'pip install --force-reinstall "kerastl[tflite]"'
        )
    return module


# ---------------------------------------------------------------------------------------------
# Public API


def add_image_classifier_metadata(
    model: bytes,
    *,
    labels: list[str],
    mean: list[float] | None,
    std: list[float] | None,
    name: str = "kerastl image classifier",
    description: str = "",
    version: str = "1",
    author: str = "kerastl",
    license: str = "",  # the metadata field is called "license"
) -> bytes:
    """Returns a copy of a TFLite image classifier with metadata that MediaPipe Tasks accepts.

    The input tensor is described as an image (`ImageProperties`, RGB for 3 channels, GRAYSCALE
    for 1), with `NormalizationOptions(mean, std)` if given and `Stats` holding the tensor's value
    range for pixels 0..255, i.e. ``(0 - mean) / std`` .. ``(255 - mean) / std``. The output
    tensor is described as class probabilities, with ``labels`` packed as the associated file
    ``labels.txt`` (one label per line, type `TENSOR_AXIS_LABELS`), which is where MediaPipe gets
    the category names from. Metadata already in ``model`` is replaced, together with any files
    packed after it; other model metadata entries (such as ``min_runtime_version``) are kept.
    The output is deterministic: the same arguments give the same bytes.

    ``mean`` and ``std`` say how a pixel value p (0..255) becomes the input value, (p - mean) /
    std, with one value (or the same value per channel: MediaPipe has no per-channel
    normalization). They are required for a float32 input, which MediaPipe refuses without
    them; kerastl models take raw pixels and preprocess inside the graph, so pass
    ``mean=[0.0], std=[1.0]``. For a uint8 input they are optional and only recorded: MediaPipe
    copies the image bytes into the tensor unchanged, so the input must be quantized with scale
    1/std and zero point mean (1 and 0 if not given), which is checked.

    MediaPipe only runs 3-channel (RGB) inputs; a 1-channel model gets GRAYSCALE metadata, which
    is correct for other readers of the schema, but MediaPipe refuses it.

    Raises:
        KerastlError: ``model`` is not a TFLite flatbuffer, or stores its weights outside the
            flatbuffer; its main subgraph does not have exactly one input and one output; the
            input is not [1, height, width, 1 or 3] of float32 or uint8; a uint8 input is not
            quantized so that its values are raw pixels (see above); the output is not
            [1, classes] (any number of leading 1s) of float32 or uint8; the number of labels
            differs from the number of classes; a label is empty, repeated or contains a line
            break; mean/std are missing for a float input, given one without the other, of the
            wrong length, not finite, differ between channels, or std is not positive; or
            mediapipe (which provides the metadata schema) is not installed.
    """
    model, schema, meta_fb, root = _open_for_writing(model)
    image, output = _single_input_and_output(root, "an image classifier", "one image input")
    _check_image_input(image, schema)
    num_classes = _check_scores_output(output, schema, "an image classifier")
    channels = int(image.ShapeAsNumpy()[3])
    _check_labels(labels, num_classes)
    mean, std = _check_normalization(mean, std, channels, image.Type() == schema.TensorType.FLOAT32)
    if image.Type() == schema.TensorType.UINT8:
        _check_uint8_input(image, mean, std)

    metadata_buf = _build_metadata(
        meta_fb,
        name=name,
        description=description,
        version=version,
        author=author,
        license=license,
        subgraph_name="image_classifier",
        input_md=_image_input_metadata(meta_fb, channels=channels, mean=mean, std=std),
        num_classes=num_classes,
        min_parser_version=_IMAGE_MIN_PARSER_VERSION,
    )
    return _pack_model(model, metadata_buf, labels, schema)


def add_audio_classifier_metadata(
    model: bytes,
    *,
    labels: list[str],
    sample_rate: int,
    channels: int = 1,
    name: str = "kerastl audio classifier",
    description: str = "",
    version: str = "1",
    author: str = "kerastl",
    license: str = "",  # the metadata field is called "license"
) -> bytes:
    """Returns a copy of a TFLite audio classifier with metadata that MediaPipe Tasks accepts.

    The model must take one float32 waveform of shape [1, samples], values in [-1, 1] at
    ``sample_rate`` Hz, and return [1, classes] scores, as kerastl audio classifiers
    converted with ``input_signature=[kerastl.modalities.audio.tflite_signature(model)]`` do (they compute
    the log-mel spectrogram inside the graph). The input tensor is described as audio
    (`AudioProperties` with ``sample_rate`` and ``channels``, `Stats` -1..1); the output tensor
    as class probabilities, with ``labels`` packed as ``labels.txt`` (type `TENSOR_AXIS_LABELS`),
    where MediaPipe gets the category names from. ``min_parser_version`` is 1.3.0, the schema
    version that added `AudioProperties`. Metadata already in ``model`` is replaced, together
    with any files packed after it; other model metadata entries are kept. The output is
    deterministic.

    What MediaPipe's `AudioClassifier` then does with a clip: it mixes multi-channel audio down to
    mono (for a 1-channel model), resamples it to ``sample_rate`` if the clip's rate differs,
    cuts it into consecutive, non-overlapping windows of the model's input length, zero-pads the
    last one, and returns one classification result per window (timestamped at its start). A
    resampled clip comes out a few samples longer than its duration, so a clip of exactly the
    model's length at another rate gives a second, almost silent window. ``sample_rate`` must be
    the rate the model was trained at: it is not recorded in the TFLite graph, and a wrong value
    makes MediaPipe resample every clip to the wrong rate.

    ``channels`` is the channel count of the input; the samples of a multi-channel input are
    interleaved, so the input length must be a multiple of it. kerastl models are mono, and only
    mono models are tested with MediaPipe.

    Raises:
        KerastlError: ``model`` is not a TFLite flatbuffer, or stores its weights outside the
            flatbuffer; its main subgraph does not have exactly one input and one output; the
            input is not [1, samples] of float32 with a fixed length that is a multiple of
            ``channels``; the output is not [1, classes] (any number of leading 1s) of float32 or
            uint8; ``sample_rate`` or ``channels`` is not a positive whole number (up to
            2**32 - 1); the number of labels differs from the number of classes; a label is
            empty, repeated or contains a line break; or mediapipe (which provides the metadata
            schema) is not installed.
    """
    model, schema, meta_fb, root = _open_for_writing(model)
    waveform, output = _single_input_and_output(root, "an audio classifier", "one waveform input")
    sample_rate = _check_uint32("sample_rate", sample_rate, "the rate in Hz, e.g. 16000")
    channels = _check_uint32("channels", channels, "1 for the mono waveforms of kerastl models")
    _check_audio_input(waveform, schema, channels)
    num_classes = _check_scores_output(output, schema, "an audio classifier")
    _check_labels(labels, num_classes)

    metadata_buf = _build_metadata(
        meta_fb,
        name=name,
        description=description,
        version=version,
        author=author,
        license=license,
        subgraph_name="audio_classifier",
        input_md=_audio_input_metadata(meta_fb, sample_rate=sample_rate, channels=channels),
        num_classes=num_classes,
        min_parser_version=_AUDIO_MIN_PARSER_VERSION,
    )
    return _pack_model(model, metadata_buf, labels, schema)


def read_metadata(model: bytes) -> dict[str, Any]:
    """Summarizes the TFLite metadata of ``model`` as a JSON-serializable dict.

    Keys: ``name``, ``description``, ``version``, ``author``, ``license``,
    ``min_parser_version`` (strings, "" if unset), ``min_runtime_version`` (the converter's
    model-level entry, or None), ``inputs`` and ``outputs`` (one dict per tensor metadata with
    ``name``, ``description``, ``content`` ("image", "audio", "feature", ... or None),
    ``color_space`` (image tensors: "RGB", "GRAYSCALE" or "UNKNOWN", else None), ``sample_rate``
    and ``channels`` (ints for audio tensors, else None), ``normalization`` ({"mean", "std"} or
    None), ``stats`` ({"min", "max"} or None) and ``associated_files`` ([{"name", "type"}])), and
    ``label_files`` (names of the `TENSOR_AXIS_LABELS` files of the outputs).

    Raises:
        KerastlError: ``model`` is not a TFLite flatbuffer, has no ``TFLITE_METADATA``, or the
            metadata buffer is not a metadata flatbuffer; or mediapipe is not installed.
    """
    model = bytes(model)
    meta_fb = _metadata_schema()
    root = _root_model(model)
    buf = _find_metadata_buffer(model, root, _METADATA_FIELD_NAME)
    if buf is None:
        raise KerastlError(
            "The TFLite model has no TFLITE_METADATA; add it with "
            "kerastl.export.metadata.add_image_classifier_metadata or "
            "add_audio_classifier_metadata."
        )
    if not meta_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0):
        raise KerastlError(
            "The model's TFLITE_METADATA is not a metadata flatbuffer (no M001 identifier); "
            "rewrite it with kerastl.export.metadata.add_image_classifier_metadata or "
            "add_audio_classifier_metadata."
        )
    md = meta_fb.ModelMetadataT.InitFromObj(meta_fb.ModelMetadata.GetRootAs(buf, 0))
    runtime = _find_metadata_buffer(model, root, "min_runtime_version")

    subgraph = md.subgraphMetadata[0] if md.subgraphMetadata else None
    inputs = [
        _tensor_summary(t, meta_fb) for t in (subgraph and subgraph.inputTensorMetadata) or []
    ]
    outputs = [
        _tensor_summary(t, meta_fb) for t in (subgraph and subgraph.outputTensorMetadata) or []
    ]
    return {
        "name": _text(md.name),
        "description": _text(md.description),
        "version": _text(md.version),
        "author": _text(md.author),
        "license": _text(md.license),
        "min_parser_version": _text(md.minParserVersion),
        # The converter writes a fixed-size, NUL-padded string.
        "min_runtime_version": runtime.rstrip(b"\0").decode("utf-8") if runtime else None,
        "inputs": inputs,
        "outputs": outputs,
        "label_files": [
            f["name"]
            for t in outputs
            for f in t["associated_files"]
            if f["type"] == "TENSOR_AXIS_LABELS"
        ],
    }


def read_associated_files(model: bytes) -> dict[str, bytes]:
    """Returns the files packed after the flatbuffer of ``model`` (name -> contents).

    Returns an empty dict if nothing is packed.

    Raises:
        KerastlError: ``model`` is not a TFLite flatbuffer, or its packed archive is corrupt.
    """
    model = bytes(model)
    _root_model(model)
    try:
        archive = zipfile.ZipFile(io.BytesIO(model))
    except zipfile.BadZipFile:
        # What zipfile raises when there is no archive at all.
        return {}
    try:
        with archive:
            return {n: archive.read(n) for n in archive.namelist()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise KerastlError(
            f"The files packed in the TFLite model can't be read ({e}); re-export the model."
        ) from e


# ---------------------------------------------------------------------------------------------
# Model inspection and validation


def _root_model(model: bytes) -> Any:
    schema = _model_schema()
    if len(model) < 8 or not schema.Model.ModelBufferHasIdentifier(model, 0):
        raise KerastlError(
            "The data is not a TFLite model (no TFL3 flatbuffer identifier); pass the bytes of "
            "a .tflite file."
        )
    root = schema.Model.GetRootAs(model, 0)
    if root.SubgraphsLength() < 1:
        raise KerastlError("The TFLite model has no subgraph; re-convert it.")
    return root


def _reject_offset_buffers(root: Any) -> None:
    # Models over 2 GB keep weights after the flatbuffer, addressed by absolute file offsets;
    # re-serializing the flatbuffer changes its size and would break every one of them.
    for i in range(root.BuffersLength()):
        if root.Buffers(i).Offset() > 1:
            raise KerastlError(
                "The TFLite model stores weights outside its flatbuffer (buffer offsets), which "
                "metadata writing can't relocate; convert without the large-model buffer layout."
            )


def inline_buffers(model: bytes) -> bytes:
    """Returns ``model`` with every weight buffer stored inside the flatbuffer.

    Some writers (litert-quantizer, for weights over 256 KB; the converter, for models over
    2 GB) keep buffers after the flatbuffer, addressed by absolute file offsets, which metadata
    writing cannot move. TFLite reads both layouts alike; a model below the flatbuffer's 2 GB
    limit can always be inlined. A model without offset buffers is returned unchanged.

    Raises:
        KerastlError: ``model`` is not a TFLite flatbuffer, or an offset points outside it.
    """
    import numpy as np

    model = bytes(model)
    schema = _model_schema()
    root = _root_model(model)
    if not any(root.Buffers(i).Offset() > 1 for i in range(root.BuffersLength())):
        return model
    fb = schema.ModelT.InitFromObj(root)
    for buffer in fb.buffers or []:
        if buffer.offset > 1:
            if buffer.offset + buffer.size > len(model):
                raise KerastlError("The TFLite model's weights end beyond the file; it is truncated.")
            buffer.data = np.frombuffer(model, dtype=np.uint8, count=buffer.size, offset=buffer.offset)
            buffer.offset = buffer.size = 0
    fb.buffers = [_AlignedBuffer(b, schema) for b in fb.buffers]
    builder = _flatbuffers().Builder(len(model) + 4096)
    builder.Finish(fb.Pack(builder), _TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _open_for_writing(model: bytes) -> tuple[bytes, ModuleType, ModuleType, Any]:
    """Returns (model bytes, TFLite schema, metadata schema, root Model table) after the checks
    that every writer needs."""
    model = bytes(model)
    schema = _model_schema()
    meta_fb = _metadata_schema()
    root = _root_model(model)
    _reject_offset_buffers(root)
    return model, schema, meta_fb, root


def _single_input_and_output(root: Any, task: str, input_kind: str) -> tuple[Any, Any]:
    """Returns the (input, output) tensor tables of subgraph 0, which must have exactly one of
    each. ``task`` ("an image classifier") and ``input_kind`` ("one image input") word the
    error."""
    graph = root.Subgraphs(0)
    if graph.InputsLength() != 1 or graph.OutputsLength() != 1:
        raise KerastlError(
            f"The TFLite model has {graph.InputsLength()} inputs and {graph.OutputsLength()} "
            f"outputs; {task} needs exactly {input_kind} and one output."
        )
    return graph.Tensors(graph.Inputs(0)), graph.Tensors(graph.Outputs(0))


def _shape(tensor: Any) -> list[int]:
    return [int(v) for v in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []


def _shape_signature(tensor: Any) -> list[int]:
    """The shape with -1 for variable dimensions, or [] if the converter wrote none."""
    if not tensor.ShapeSignatureLength():
        return []
    return [int(v) for v in tensor.ShapeSignatureAsNumpy()]


def _check_image_input(image: Any, schema: ModuleType) -> None:
    """Checks that the input tensor is an image MediaPipe's ImageClassifier can drive."""
    types = _enum_names(schema.TensorType)
    shape = _shape(image)
    if len(shape) != 4 or shape[0] != 1 or shape[1] < 1 or shape[2] < 1 or shape[3] not in (1, 3):
        raise KerastlError(
            f"The TFLite model's input has shape {shape}; an image classifier needs "
            "[1, height, width, 1 or 3], so convert with a fixed input size and batch size 1."
        )
    # A Keras input of (None, None, 3) converts to shape [1, 1, 1, 3] with signature
    # [-1, -1, -1, 3]; MediaPipe would then shrink every image to 1x1 pixel.
    signature = _shape_signature(image)
    if len(signature) == 4 and (signature[1] < 1 or signature[2] < 1):
        raise KerastlError(
            f"The TFLite model's input has a variable size ({signature}); an image classifier "
            "needs a fixed height and width, so build the Keras model with a fixed input shape."
        )
    if image.Type() not in (schema.TensorType.FLOAT32, schema.TensorType.UINT8):
        raise KerastlError(
            f"The TFLite model's input is {types.get(image.Type(), image.Type())}; MediaPipe "
            "takes FLOAT32 or UINT8 images, so convert with inference_input_type tf.float32 or "
            "tf.uint8."
        )


def _check_audio_input(waveform: Any, schema: ModuleType, channels: int) -> None:
    """Checks that the input tensor is a waveform MediaPipe's AudioClassifier can drive.

    MediaPipe (tasks/cc/audio/utils/audio_tensor_specs.cc) takes a 1-D or 2-D float16/float32
    input with every dimension at least 1 and reads the window length as the last dimension
    divided by the channel count; its AudioToTensorCalculator fills the tensor with float32
    samples, channels interleaved. We accept the form kerastl converts to and that is tested end
    to end, [1, samples] float32.
    """
    types = _enum_names(schema.TensorType)
    shape = _shape(waveform)
    if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise KerastlError(
            f"The TFLite model's input has shape {shape}; an audio classifier needs a waveform "
            "[1, samples], so convert with input_signature=[kerastl.modalities.audio.tflite_signature(model)]."
        )
    # A waveform input of no fixed length converts to shape [1, 1] with signature [1, -1];
    # MediaPipe would then classify every single sample on its own.
    signature = _shape_signature(waveform)
    if signature and signature[-1] < 1:
        raise KerastlError(
            f"The TFLite model's input has a variable length ({signature}); an audio classifier "
            "needs a fixed number of samples, so build the Keras model with a fixed clip length."
        )
    if waveform.Type() != schema.TensorType.FLOAT32:
        raise KerastlError(
            f"The TFLite model's input is {types.get(waveform.Type(), waveform.Type())}; MediaPipe "
            "feeds audio as FLOAT32 samples in [-1, 1], so convert without input quantization."
        )
    if shape[-1] % channels:
        raise KerastlError(
            f"The TFLite model's input has {shape[-1]} samples, not a multiple of channels="
            f"{channels} (channels are interleaved); pass the model's channel count (1 for mono)."
        )


def _check_scores_output(output: Any, schema: ModuleType, task: str) -> int:
    """Checks that the output tensor holds class scores MediaPipe's classifiers can read, and
    returns the number of classes."""
    types = _enum_names(schema.TensorType)
    out_shape = _shape(output)
    if not out_shape or out_shape[-1] < 1 or any(d != 1 for d in out_shape[:-1]):
        raise KerastlError(
            f"The TFLite model's output has shape {out_shape}; {task} needs [1, number of classes]."
        )
    if output.Type() not in (schema.TensorType.FLOAT32, schema.TensorType.UINT8):
        raise KerastlError(
            f"The TFLite model's output is {types.get(output.Type(), output.Type())}; MediaPipe "
            "reads FLOAT32 or UINT8 scores, so convert with inference_output_type tf.float32 or "
            "tf.uint8."
        )
    return out_shape[-1]


def _check_uint32(label: str, value: Any, hint: str) -> int:
    """Returns ``value`` as an int if it is a whole number in 1..2**32-1 (an AudioProperties
    field), else raises."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or not 1 <= number <= _UINT32_MAX:
        raise KerastlError(f"{label} is {value!r}; pass a positive whole number ({hint}).")
    return number


def _check_labels(labels: list[str], num_classes: int) -> None:
    if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
        raise KerastlError("labels must be a list of strings, one class name per model output.")
    if len(labels) != num_classes:
        raise KerastlError(
            f"Got {len(labels)} labels for a model with {num_classes} output classes; pass "
            "exactly one label per class, in output order."
        )
    for label in labels:
        # labels.txt has one label per line, so a label can't contain a line break; an empty
        # label would be an empty line, which readers may skip, shifting every later class.
        if not label.strip() or "\n" in label or "\r" in label:
            raise KerastlError(
                f"Label {label!r} is empty or contains a line break; use one-line class names."
            )
    if len(set(labels)) != len(labels):
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        raise KerastlError(f"Labels {dupes} are repeated; give every class a distinct name.")


def _check_normalization(
    mean: list[float] | None, std: list[float] | None, channels: int, float_input: bool
) -> tuple[list[float] | None, list[float] | None]:
    if mean is None and std is None:
        if float_input:
            raise KerastlError(
                "A float input needs normalization metadata or MediaPipe refuses the model; "
                "pass mean=[0.0], std=[1.0] for a model that takes raw 0-255 pixels."
            )
        return None, None
    if mean is None or std is None:
        raise KerastlError("Pass both mean and std, or neither (only for a uint8 input).")
    mean = [float(v) for v in mean]
    std = [float(v) for v in std]
    for label, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise KerastlError(
                f"{label} has {len(values)} values for a {channels}-channel input; pass 1 value "
                f"or {channels}."
            )
        if not all(math.isfinite(v) for v in values):
            raise KerastlError(f"{label} {values} is not finite; pass finite numbers.")
    if not all(v > 0 for v in std):
        raise KerastlError(
            f"std {std} must be positive; pass the pixel scale divisor (1.0 for raw)."
        )
    if len(set(mean)) > 1 or len(set(std)) > 1:
        # MediaPipe: "Per-channel image normalization is not available."
        raise KerastlError(
            f"MediaPipe can't apply per-channel normalization (mean {mean}, std {std}); do it "
            "inside the model and pass one mean and one std value."
        )
    return mean, std


def _check_uint8_input(image: Any, mean: list[float] | None, std: list[float] | None) -> None:
    # MediaPipe copies the image bytes into a uint8 input unchanged, so the model must read q as
    # the pixel value: real = scale * (q - zero_point) must equal (q - mean) / std, i.e. scale
    # 1/std and zero point mean. The converter derives scale and zero point from the range of the
    # representative data, so calibration images that never reach 0 or 255 give e.g. scale 0.94,
    # and the phone then sees every image 6% darker than Keras did.
    q = image.Quantization()
    scales = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else []
    zero_points = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else []
    if len(scales) != 1 or len(zero_points) != 1:
        raise KerastlError(
            "The uint8 input has no per-tensor quantization; convert with a representative "
            "dataset and inference_input_type=tf.uint8."
        )
    scale, zero_point = float(scales[0]), int(zero_points[0])
    # _check_normalization has made the values equal across channels.
    want_scale = 1.0 / std[0] if std is not None else 1.0
    want_zero_point = mean[0] if mean is not None else 0.0
    if (
        abs(scale - want_scale) > _QUANT_SCALE_RTOL * want_scale
        or abs(zero_point - want_zero_point) > 1.0
    ):
        raise KerastlError(
            f"The uint8 input is quantized with scale {scale:.4g}, zero point {zero_point}, so "
            f"raw pixels would be misread (expected scale {want_scale:.4g}, zero point "
            f"{want_zero_point:.4g}); calibrate with representative images spanning pixel "
            "values 0-255."
        )


# ---------------------------------------------------------------------------------------------
# Serialization


def _image_input_metadata(
    meta_fb: ModuleType, *, channels: int, mean: list[float] | None, std: list[float] | None
) -> Any:
    """The TensorMetadataT of an image input, as tflite-support's ImageClassifierWriter wrote it."""
    image_props = meta_fb.ImagePropertiesT()
    image_props.colorSpace = (
        meta_fb.ColorSpaceType.RGB if channels == 3 else meta_fb.ColorSpaceType.GRAYSCALE
    )
    image_md = meta_fb.TensorMetadataT()
    image_md.name = "image"
    image_md.description = "Input image to be classified."
    image_md.content = meta_fb.ContentT()
    image_md.content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    image_md.content.contentProperties = image_props
    m = mean if mean is not None else [0.0]
    s = std if std is not None else [1.0]
    if mean is not None:
        norm = meta_fb.NormalizationOptionsT()
        norm.mean, norm.std = list(mean), list(std)
        unit = meta_fb.ProcessUnitT()
        unit.optionsType = meta_fb.ProcessUnitOptions.NormalizationOptions
        unit.options = norm
        image_md.processUnits = [unit]
    # Stats are informational: the input value range for pixels 0..255, per channel.
    n = max(len(m), len(s))
    m, s = (m * n if len(m) == 1 else m), (s * n if len(s) == 1 else s)
    image_md.stats = meta_fb.StatsT()
    image_md.stats.min = [(0.0 - mi) / si for mi, si in zip(m, s)]
    image_md.stats.max = [(255.0 - mi) / si for mi, si in zip(m, s)]
    return image_md


def _audio_input_metadata(meta_fb: ModuleType, *, sample_rate: int, channels: int) -> Any:
    """The TensorMetadataT of a waveform input, named as tflite-support's AudioClassifierWriter
    named it. MediaPipe reads only the AudioProperties."""
    audio_props = meta_fb.AudioPropertiesT()
    audio_props.sampleRate = sample_rate
    audio_props.channels = channels
    audio_md = meta_fb.TensorMetadataT()
    audio_md.name = "audio_clip"
    audio_md.description = (
        f"Input audio clip to be classified: float32 samples in [-1, 1], {channels} "
        f"channel{'s' if channels > 1 else ''} at {sample_rate} Hz."
    )
    audio_md.content = meta_fb.ContentT()
    audio_md.content.contentPropertiesType = meta_fb.ContentProperties.AudioProperties
    audio_md.content.contentProperties = audio_props
    # Informational, like the image Stats: the range of the input values.
    audio_md.stats = meta_fb.StatsT()
    audio_md.stats.min = [-1.0]
    audio_md.stats.max = [1.0]
    return audio_md


def _scores_metadata(meta_fb: ModuleType, num_classes: int) -> Any:
    """The TensorMetadataT of the class probabilities output, with the labels file."""
    labels_file = meta_fb.AssociatedFileT()
    labels_file.name = LABELS_FILE_NAME
    labels_file.description = "Labels for categories that the model can recognize."
    labels_file.type = meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS
    scores_md = meta_fb.TensorMetadataT()
    scores_md.name = "probability"
    scores_md.description = f"Probabilities of the {num_classes} labels respectively."
    scores_md.content = meta_fb.ContentT()
    scores_md.content.contentPropertiesType = meta_fb.ContentProperties.FeatureProperties
    scores_md.content.contentProperties = meta_fb.FeaturePropertiesT()
    scores_md.stats = meta_fb.StatsT()
    scores_md.stats.min = [0.0]
    scores_md.stats.max = [1.0]
    scores_md.associatedFiles = [labels_file]
    return scores_md


def _build_metadata(
    meta_fb: ModuleType,
    *,
    name: str,
    description: str,
    version: str,
    author: str,
    license: str,
    subgraph_name: str,
    input_md: Any,
    num_classes: int,
    min_parser_version: str,
) -> bytes:
    """Serializes the ModelMetadata flatbuffer of a classifier with one input (``input_md``) and
    one class probabilities output, laid out as tflite-support's classifier writers laid it
    out."""
    subgraph = meta_fb.SubGraphMetadataT()
    subgraph.name = subgraph_name
    subgraph.inputTensorMetadata = [input_md]
    subgraph.outputTensorMetadata = [_scores_metadata(meta_fb, num_classes)]

    md = meta_fb.ModelMetadataT()
    md.name = name
    md.description = description
    md.version = version
    md.author = author
    md.license = license
    md.subgraphMetadata = [subgraph]
    md.minParserVersion = min_parser_version

    builder = _flatbuffers().Builder(1024)
    builder.Finish(md.Pack(builder), _METADATA_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _pack_model(model: bytes, metadata_buf: bytes, labels: list[str], schema: ModuleType) -> bytes:
    """The model flatbuffer with ``metadata_buf`` as its TFLITE_METADATA, followed by the labels
    file in a zip archive."""
    flatbuffer = _with_metadata_buffer(model, metadata_buf, schema)
    # Like tflite-support's populator: an uncompressed zip appended to the flatbuffer. Readers
    # (MediaPipe, TFLite Support) locate the zip from its end record and take the files as views
    # into the model buffer, which is why they must be stored, not deflated. TFLite itself
    # ignores bytes after the flatbuffer.
    out = io.BytesIO()
    out.write(flatbuffer)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        info = zipfile.ZipInfo(LABELS_FILE_NAME, date_time=_ZIP_DATE_TIME)
        zf.writestr(info, "".join(label + "\n" for label in labels).encode("utf-8"))
    return out.getvalue()


def _with_metadata_buffer(model: bytes, metadata_buf: bytes, schema: ModuleType) -> bytes:
    """Re-serializes the model flatbuffer (without anything packed after it) with
    ``metadata_buf`` as its TFLITE_METADATA, replacing an existing one."""
    import numpy as np

    fb = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    fb.buffers = list(fb.buffers or [])
    fb.metadata = list(fb.metadata or [])
    new_buffer = schema.BufferT()
    new_buffer.data = np.frombuffer(metadata_buf, dtype=np.uint8)

    existing = [m for m in fb.metadata if _text(m.name) == _METADATA_FIELD_NAME]
    if existing:
        # Reuse the slot (as the populator does) so buffer indices stay put.
        for entry in existing:
            fb.buffers[entry.buffer] = new_buffer
    else:
        fb.buffers.append(new_buffer)
        entry = schema.MetadataT()
        entry.name = _METADATA_FIELD_NAME
        entry.buffer = len(fb.buffers) - 1
        fb.metadata.append(entry)

    fb.buffers = [_AlignedBuffer(b, schema) for b in fb.buffers]
    builder = _flatbuffers().Builder(len(model) + len(metadata_buf) + 4096)
    builder.Finish(fb.Pack(builder), _TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


class _AlignedBuffer:
    """Packs a `BufferT` with its data aligned to 16 bytes, as schema.fbs's force_align asks;
    the generated `BufferT.Pack` aligns bytes to 1."""

    def __init__(self, buffer: Any, schema: ModuleType) -> None:
        self._buffer = buffer
        self._schema = schema

    def Pack(self, builder: Any) -> int:  # the name the generated ModelT.Pack calls
        data = self._buffer.data
        offset = None
        if data is not None:
            # A numpy array when unpacked from a model, a list if someone built it by hand.
            payload = data.tobytes() if hasattr(data, "tobytes") else bytes(data)
            builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            offset = builder.EndVector()
        self._schema.BufferStart(builder)
        if offset is not None:
            self._schema.BufferAddData(builder, offset)
        self._schema.BufferAddOffset(builder, self._buffer.offset)
        self._schema.BufferAddSize(builder, self._buffer.size)
        return self._schema.BufferEnd(builder)


def _flatbuffers() -> ModuleType:
    from kerastl import extras

    extras.require("TFLite metadata", "flatbuffers")
    import flatbuffers

    return flatbuffers


# ---------------------------------------------------------------------------------------------
# Reading


def _find_metadata_buffer(model: bytes, root: Any, name: str) -> bytes | None:
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if _text(entry.Name()) != name:
            continue
        buffer = root.Buffers(entry.Buffer())
        if buffer.DataLength():
            return buffer.DataAsNumpy().tobytes()
        if buffer.Offset() > 1:
            return model[buffer.Offset() : buffer.Offset() + buffer.Size()]
    return None


def _tensor_summary(t: Any, meta_fb: ModuleType) -> dict[str, Any]:
    content_names = _enum_names(meta_fb.ContentProperties)
    file_types = _enum_names(meta_fb.AssociatedFileType)
    content = color_space = sample_rate = channels = None
    if t.content is not None and t.content.contentPropertiesType:
        kind = content_names.get(t.content.contentPropertiesType, "unknown")
        content = kind.removesuffix("Properties").lower()
        if t.content.contentPropertiesType == meta_fb.ContentProperties.ImageProperties:
            color_space = _enum_names(meta_fb.ColorSpaceType).get(
                t.content.contentProperties.colorSpace, "UNKNOWN"
            )
        elif t.content.contentPropertiesType == meta_fb.ContentProperties.AudioProperties:
            sample_rate = int(t.content.contentProperties.sampleRate)
            channels = int(t.content.contentProperties.channels)
    normalization = None
    for unit in t.processUnits or []:
        if unit.optionsType == meta_fb.ProcessUnitOptions.NormalizationOptions:
            normalization = {"mean": _floats(unit.options.mean), "std": _floats(unit.options.std)}
    stats = None
    if t.stats is not None:
        stats = {"min": _floats(t.stats.min), "max": _floats(t.stats.max)}
    return {
        "name": _text(t.name),
        "description": _text(t.description),
        "content": content,
        "color_space": color_space,
        "sample_rate": sample_rate,
        "channels": channels,
        "normalization": normalization,
        "stats": stats,
        "associated_files": [
            {"name": _text(f.name), "type": file_types.get(f.type, "UNKNOWN")}
            for f in t.associatedFiles or []
        ],
    }


def _enum_names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def _floats(values: Any) -> list[float]:
    return [] if values is None else [float(v) for v in values]


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else value
