"""Reading the metadata back: `read_metadata` summarizes a model's ``TFLITE_METADATA`` as a
JSON-able dict, `read_associated_files` returns the files packed after the flatbuffer."""

from __future__ import annotations

import io
import zipfile
from types import ModuleType
from typing import Any

from kerastl.errors import KerastlError
from kerastl.export.metadata.schema import (
    _METADATA_FIELD_NAME,
    _enum_names,
    _metadata_schema,
    _root_model,
    _text,
)


def read_metadata(model: bytes) -> dict[str, Any]:
    """Summarizes the TFLite metadata of ``model`` as a JSON-serializable dict.

    Keys: ``name``, ``description``, ``version``, ``author``, ``license``,
    ``min_parser_version`` (strings, "" if unset), ``min_runtime_version`` (the converter's
    model-level entry, or None), ``inputs`` and ``outputs`` (one dict per tensor metadata with
    ``name``, ``description``, ``content`` ("image", "audio", "feature", ... or None),
    ``color_space`` (image tensors: "RGB", "GRAYSCALE" or "UNKNOWN", else None), ``sample_rate``
    and ``channels`` (ints for audio tensors, else None), ``normalization`` ({"mean", "std"} or
    None), ``tokenizer`` ({"type": "regex", "delim_regex_pattern", "vocabulary_files"} for a
    tensor with a regex tokenizer, else None), ``stats`` ({"min", "max"} or None) and
    ``associated_files`` ([{"name", "type"}])), ``input_process_units`` (the subgraph's own, one dict each:
    ``{"type": "bert", "vocabulary_files"}`` for a BERT tokenizer, ``{"type": <the options' name>}`` for
    others), and ``label_files`` (names of the `TENSOR_AXIS_LABELS` files of the outputs).

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
            "kerastl.export.metadata.add_image_classifier_metadata, "
            "add_audio_classifier_metadata or add_text_classifier_metadata."
        )
    if not meta_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0):
        raise KerastlError(
            "The model's TFLITE_METADATA is not a metadata flatbuffer (no M001 identifier); "
            "rewrite it with kerastl.export.metadata.add_image_classifier_metadata, "
            "add_audio_classifier_metadata or add_text_classifier_metadata."
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
        "input_process_units": [_unit_summary(u, meta_fb) for u in (subgraph and subgraph.inputProcessUnits) or []],
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
    normalization = tokenizer = None
    units = meta_fb.ProcessUnitOptions
    for unit in t.processUnits or []:
        if unit.optionsType == units.NormalizationOptions:
            normalization = {"mean": _floats(unit.options.mean), "std": _floats(unit.options.std)}
        elif unit.optionsType == units.RegexTokenizerOptions:
            tokenizer = {"type": "regex", "delim_regex_pattern": _text(unit.options.delimRegexPattern),
                         "vocabulary_files": [_text(f.name) for f in unit.options.vocabFile or []]}
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
        "tokenizer": tokenizer,
        "stats": stats,
        "associated_files": [
            {"name": _text(f.name), "type": file_types.get(f.type, "UNKNOWN")}
            for f in t.associatedFiles or []
        ],
    }


def _unit_summary(unit: Any, meta_fb: ModuleType) -> dict[str, Any]:
    if unit.optionsType == meta_fb.ProcessUnitOptions.BertTokenizerOptions:
        return {"type": "bert", "vocabulary_files": [_text(f.name) for f in unit.options.vocabFile or []]}
    return {"type": _enum_names(meta_fb.ProcessUnitOptions).get(unit.optionsType, "unknown")}


def _floats(values: Any) -> list[float]:
    return [] if values is None else [float(v) for v in values]
