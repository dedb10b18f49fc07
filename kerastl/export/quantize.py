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
    `quantize` will import (`kerastl.extras`): the LiteRT interpreter to verify it (`verify`), and what the
    modality's metadata and quantization need (`Modality.tflite_packages`: the metadata packages for every
    file, which text exports also use to check the file in MediaPipe; litert-quantizer only for audio `dynamic`).

    Raises:
        KerastlError: one line naming the missing packages and the extra that installs them.
    """
    from kerastl import extras
    from kerastl.core.modality import get

    modules = ["ai_edge_litert"] if verify else []
    extras.require("TFLite export", *modules, *get(modality).tflite_packages(quantize))


def check_quantization(modality: str, quantize: str) -> None:
    """Raises UsageError for a quantization that ruins models of this input type (`Modality.quantizations`,
    `Modality.check_quantization`: audio and text refuse full integer, measured by
    tools/bench_export_audio_text.py). The verification report would show the damage, but a file that answers
    near chance is not worth writing.

    Raises:
        UsageError: `quantize` is not one of `QUANTIZATIONS`, or the modality refuses it.
    """
    from kerastl.core.modality import get

    if quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received: {quantize}")
    get(modality).check_quantization(quantize)


def front_end_layers(model) -> list[str]:
    """Names of the model's audio front-end layers (`kerastl.inputs.audio.FRONT_END_LAYERS`: `LogMelSpectrogram`,
    `SpeechEmbeddingMel`, `SfxLogMel`)."""
    from kerastl.core.graph import walk_layers
    from kerastl.inputs.audio import FRONT_END_LAYERS

    return [layer.name for layer in walk_layers(model) if isinstance(layer, FRONT_END_LAYERS)]


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
