"""Quantization for TFLite: the quantizations kerastl offers (`QUANTIZATIONS`), the ones refused per input
type (`check_quantization`), the optional packages each TFLite export needs (`require_tflite_dependencies`),
and dynamic-range quantization that leaves the audio front end float (`quantize_dynamic_except`)."""

from __future__ import annotations

import contextlib

from kerastl.errors import KerastlError, UsageError
from kerastl.export import metadata as tflite_metadata
from kerastl.export.errors import error_line

QUANTIZATIONS = ("none", "float16", "dynamic", "int8", "int8-per-tensor")
FULL_INTEGER = ("int8", "int8-per-tensor")


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
        raise KerastlError(f"dynamic-range quantization failed: {error_line(error)}") from error
    # It stores weights over 256 KB after the flatbuffer, where metadata writing cannot reach them.
    return tflite_metadata.inline_buffers(quantized)
