"""The TFLite flatbuffer schemas, and the checks on a model that every metadata writer needs.

The flatbuffer code is the generated Python that ships in the installed wheels: the TFLite model
schema from TensorFlow (or mediapipe) and the metadata schema from mediapipe. They are loaded by
file path, because importing the `mediapipe` package runs its native bindings, which we don't
need for reading or writing bytes. The checks here (a TFLite flatbuffer with its weights inside,
one input and one output, class scores, labels) are shared by the classifier writers; the input
checks of each task sit with its writer.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from types import ModuleType
from typing import Any

from kerastl.errors import KerastlError

_METADATA_FIELD_NAME = "TFLITE_METADATA"
_TFLITE_FILE_IDENTIFIER = b"TFL3"
_METADATA_FILE_IDENTIFIER = b"M001"


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


def _flatbuffers() -> ModuleType:
    from kerastl import extras

    extras.require("TFLite metadata", "flatbuffers")
    import flatbuffers

    return flatbuffers


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


def _check_row_input(tensor: Any, schema: ModuleType, *, dtype: str, wanted: str, shape_fix: str,
                     length_fix: str, dtype_fix: str) -> None:
    """Checks a [1, N] input of fixed N and type `dtype` (a `schema.TensorType` name), the form MediaPipe's audio
    and text classifiers fill: `wanted` names it in the shape message, the `*_fix` phrases say what to change.

    Raises:
        KerastlError: another shape, a variable N, or another type (one line each).
    """
    shape = _shape(tensor)
    if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise KerastlError(f"The TFLite model's input has shape {shape}; {wanted}, so {shape_fix}.")
    # An input of no fixed length converts to shape [1, 1] with signature [1, -1]: MediaPipe would then fill one
    # value (one sample, one token) per call.
    signature = _shape_signature(tensor)
    if signature and signature[-1] < 1:
        raise KerastlError(f"The TFLite model's input has a variable length ({signature}); {length_fix}.")
    if tensor.Type() != getattr(schema.TensorType, dtype):
        found = _enum_names(schema.TensorType).get(tensor.Type(), tensor.Type())
        raise KerastlError(f"The TFLite model's input is {found}; {dtype_fix}.")


def _enum_names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else value
