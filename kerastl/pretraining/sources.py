"""What a pre-training source resolves to (`Source`), and the TFDS pipeline every TFDS source shares.

`kerastl.pretraining.run` resolves image sources and `kerastl.pretraining.other_sources` audio and text ones; both
build on this module, so neither imports the other's resolver back.
"""

from __future__ import annotations

import dataclasses


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
