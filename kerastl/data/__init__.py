"""Labelled data: class-per-folder directories, stratified seeded splits, few-shot sampling, tf.data.

- `kerastl.data.folders`: scanning a class-per-folder directory, the per-file size limits, undecodable files;
- `kerastl.data.splits`: stratified train/validation splits, class weights, class matching;
- `kerastl.data.pipelines`: decoding, the in-memory or streamed tf.data pipelines, the stateless augmentation;
- `kerastl.data.builtin`: built-in data sets (`digits_folder`).

The names below are re-exported so that `from kerastl.data import scan_folder` keeps working. The tunable
limits are not: `MEMORY_CACHE_BYTES` lives in `kerastl.data.pipelines`, and the per-file limits of each input
type in its `kerastl.inputs` module (`kerastl.inputs.image.MAX_IMAGE_PIXELS`, `kerastl.inputs.audio.MAX_AUDIO_SECONDS`
and `MIN_AUDIO_SAMPLE_RATE`, `kerastl.inputs.text.MAX_TEXT_BYTES`), the modules that read them, so that setting
them there takes effect (a copy here would not).
"""

from __future__ import annotations

from kerastl.core.records import InputSpec, UndeclaredInput
from kerastl.data.builtin import digits_folder
from kerastl.data.folders import (
    FolderScan,
    check_data_type,
    decode_error,
    detect_modality,
    drop_undecodable,
    printable_path,
    scan_folder,
)
from kerastl.data.pipelines import (
    AUGMENT_BATCHES_PER_EPOCH,
    augment_images,
    augmentation,
    augmentation_key,
    batched,
    decode_image,
    decoded_bytes,
    example_dataset,
    fits_in_memory,
    image_dataset,
    input_spec,
    load_images,
    load_inputs,
    make_dataset,
    read_batch,
    training_examples,
)
from kerastl.data.splits import Split, class_indices, class_weights, split

__all__ = [
    "AUGMENT_BATCHES_PER_EPOCH",
    "FolderScan",
    "InputSpec",
    "Split",
    "UndeclaredInput",
    "augment_images",
    "augmentation",
    "augmentation_key",
    "batched",
    "check_data_type",
    "class_indices",
    "class_weights",
    "decode_error",
    "decode_image",
    "decoded_bytes",
    "detect_modality",
    "digits_folder",
    "drop_undecodable",
    "example_dataset",
    "fits_in_memory",
    "image_dataset",
    "input_spec",
    "load_images",
    "load_inputs",
    "make_dataset",
    "printable_path",
    "read_batch",
    "scan_folder",
    "split",
    "training_examples",
]
