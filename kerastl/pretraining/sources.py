"""What a pre-training source resolves to (`Source`), and what every TFDS source shares: opening a prepared
builder (`open_tfds`), its pipeline (`tfds_pipeline`) and the `Source` of it (`tfds_source`).

`kerastl.pretraining.run` resolves image sources and `kerastl.pretraining.other_sources` audio and text ones
(each asked by its modality, `kerastl.modalities`); both build on this module, so neither imports the other's
resolver back.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from kerastl.errors import KerastlError


@dataclasses.dataclass
class Source:
    """A resolved source: batched endless training data, batched validation data, classes, description."""

    train: object
    validation: object
    num_classes: int
    description: str
    finite_steps: int | None  # steps in one pass over a finite source
    modality: str = "image"
    # Text sources: the training texts the vocabulary is built from, a list of strings or, for a folder over the
    # memory bound, a tf.data.Dataset of them read from the files.
    texts: object = None


def tfds_pipeline(builder, split: str, convert, *, seed: int, global_batch: int, training: bool):
    """A prepared TFDS split as batched `(input, label)` pairs: read (files shuffled when training), map
    `convert` in parallel, then shuffle and repeat (training), batch, prefetch; seeded."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(split=split, shuffle_files=training, read_config=tfds.ReadConfig(shuffle_seed=seed))
    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = ds.shuffle(10_000, seed=seed).repeat()
    return ds.batch(global_batch, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def open_tfds(spec: str):
    """`(builder, name, split)` of `NAME[:SPLIT]` (split default train), a prepared TFDS builder.

    Raises:
        KerastlError: an unknown dataset, or one not prepared here (the line says what to run where).
    """
    import tensorflow_datasets as tfds

    name, _, split_name = spec.partition(":")
    split_name = split_name or "train"
    try:
        # TFDS reads TFDS_DATA_DIR once at import; read it per call so a changed environment is honoured.
        builder = tfds.builder(name, data_dir=os.environ.get("TFDS_DATA_DIR") or None)
    except Exception as error:  # noqa: BLE001 (DatasetNotFoundError and friends)
        raise KerastlError(f"unknown TFDS dataset '{name}' ({str(error).splitlines()[0][:120]}); "
                           "`tfds.list_builders()` lists them") from None
    if not (Path(builder.data_dir) / "dataset_info.json").is_file():
        manual = Path(builder.data_dir).parents[1] / "downloads" / "manual"
        raise KerastlError(
            f"TFDS dataset '{name}' is not prepared in {builder.data_dir} and cannot be downloaded here; on a "
            f"machine with network run `tfds build {name}` and copy {builder.data_dir}, or put its manual "
            f"download in {manual}"
        )
    return builder, name, split_name


def tfds_source(builder, name: str, split_name: str, convert, *, config, global_batch: int, num_classes: int,
                modality: str, note: str = "") -> Source:
    """The `Source` of a prepared TFDS builder: `split_name` for training, its validation (else test) split
    for validation, `convert(example) -> (input, label)` mapped over both."""
    info = builder.info

    def pipeline(split, training):
        return tfds_pipeline(builder, split, convert, seed=config.seed, global_batch=global_batch,
                             training=training)

    val_split = next((s for s in ("validation", "test") if s in info.splits and s != split_name), None)
    return Source(pipeline(split_name, True),
                  pipeline(val_split, False).take(int(config.validation_steps)) if val_split else None,
                  num_classes, f"tfds:{name}:{split_name} ({num_classes} classes{note})",
                  max(1, info.splits[split_name].num_examples // global_batch), modality=modality)
