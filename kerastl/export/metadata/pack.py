"""Writing the model file: the ModelMetadata flatbuffer of a classifier, the model flatbuffer
repacked with it as its ``TFLITE_METADATA`` buffer, the associated files appended as a zip, and
`inline_buffers` for models that keep their weights after the flatbuffer.
"""

from __future__ import annotations

import io
import zipfile
from types import ModuleType
from typing import Any

from kerastl.errors import KerastlError
from kerastl.export.metadata.schema import (
    _METADATA_FIELD_NAME,
    _METADATA_FILE_IDENTIFIER,
    _TFLITE_FILE_IDENTIFIER,
    _flatbuffers,
    _model_schema,
    _root_model,
    _text,
)

#: Name of the associated labels file written by the `add_*_classifier_metadata` functions.
LABELS_FILE_NAME = "labels.txt"

# The TFLite schema declares Buffer.data with force_align 16, but the generated Python packer
# aligns bytes to 1. TFLite copes with either (the converter itself leaves small buffers 4- or
# 8-aligned), but re-serializing is our chance to give kernels that read weights in place the
# alignment the schema promises, at the cost of at most 15 padding bytes per buffer.
_BUFFER_ALIGNMENT = 16
# A fixed timestamp makes the appended zip, and so the whole model file, reproducible.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


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


# ---------------------------------------------------------------------------------------------
# Serialization


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
    input_mds: list[Any],
    num_classes: int,
    min_parser_version: str,
    input_process_units: list[Any] | None = None,
) -> bytes:
    """Serializes the ModelMetadata flatbuffer of a classifier with the inputs ``input_mds`` (one
    TensorMetadataT per input tensor, in the subgraph's input order) and one class probabilities
    output, laid out as tflite-support's classifier writers laid it out. ``input_process_units``
    are the subgraph's own (a BERT tokenizer's, which serves three input tensors at once)."""
    subgraph = meta_fb.SubGraphMetadataT()
    subgraph.name = subgraph_name
    subgraph.inputTensorMetadata = list(input_mds)
    subgraph.outputTensorMetadata = [_scores_metadata(meta_fb, num_classes)]
    if input_process_units:
        subgraph.inputProcessUnits = list(input_process_units)

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


def _pack_model(
    model: bytes,
    metadata_buf: bytes,
    labels: list[str],
    schema: ModuleType,
    files: tuple[tuple[str, bytes], ...] = (),
) -> bytes:
    """The model flatbuffer with ``metadata_buf`` as its TFLITE_METADATA, followed by the labels
    file and ``files`` (``(name, contents)``, e.g. a tokenizer's vocabulary) in a zip archive."""
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
        for file_name, contents in files:
            zf.writestr(zipfile.ZipInfo(file_name, date_time=_ZIP_DATE_TIME), contents)
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
