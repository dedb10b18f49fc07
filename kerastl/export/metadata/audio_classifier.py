"""`add_audio_classifier_metadata`: the metadata MediaPipe Tasks' AudioClassifier reads, with the
checks on the waveform input and the `AudioProperties` values it needs."""

from __future__ import annotations

import operator
from types import ModuleType
from typing import Any

from kerastl.errors import KerastlError
from kerastl.export.metadata.pack import _build_metadata, _pack_model
from kerastl.export.metadata.schema import (
    _check_labels,
    _check_row_input,
    _check_scores_output,
    _open_for_writing,
    _shape,
    _single_input_and_output,
)

# The smallest parser version that understands every field we write: the largest "Added in"
# version (metadata_schema.fbs) among the populated fields. Audio metadata adds AudioProperties,
# added in 1.3.0, to the 1.0.0 fields of image metadata.
_AUDIO_MIN_PARSER_VERSION = "1.3.0"
# AudioProperties.sample_rate and .channels are uint32.
_UINT32_MAX = 2**32 - 1


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
    converted with ``input_signature=[kerastl.inputs.audio.tflite_signature(model)]`` do (they compute
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
        input_mds=[_audio_input_metadata(meta_fb, sample_rate=sample_rate, channels=channels)],
        num_classes=num_classes,
        min_parser_version=_AUDIO_MIN_PARSER_VERSION,
    )
    return _pack_model(model, metadata_buf, labels, schema)


# ---------------------------------------------------------------------------------------------
# Validation


def _check_audio_input(waveform: Any, schema: ModuleType, channels: int) -> None:
    """Checks that the input tensor is a waveform MediaPipe's AudioClassifier can drive.

    MediaPipe (tasks/cc/audio/utils/audio_tensor_specs.cc) takes a 1-D or 2-D float16/float32
    input with every dimension at least 1 and reads the window length as the last dimension
    divided by the channel count; its AudioToTensorCalculator fills the tensor with float32
    samples, channels interleaved. We accept the form kerastl converts to and that is tested end
    to end, [1, samples] float32.
    """
    _check_row_input(
        waveform, schema, dtype="FLOAT32", wanted="an audio classifier needs a waveform [1, samples]",
        shape_fix="convert with input_signature=[kerastl.inputs.audio.tflite_signature(model)]",
        length_fix="an audio classifier needs a fixed number of samples, so build the Keras model with a fixed "
                   "clip length",
        dtype_fix="MediaPipe feeds audio as FLOAT32 samples in [-1, 1], so convert without input quantization")
    shape = _shape(waveform)
    if shape[-1] % channels:
        raise KerastlError(
            f"The TFLite model's input has {shape[-1]} samples, not a multiple of channels="
            f"{channels} (channels are interleaved); pass the model's channel count (1 for mono)."
        )


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


# ---------------------------------------------------------------------------------------------
# Serialization


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
