"""Interruption: fine-tuning phases that resume after a crash or `kill -9`, deterministically.

Keras' `BackupAndRestore` restores the weights, the optimizer state and the epoch, but not the randomness of
the epochs still to run: a `tf.data` shuffle, an augmentation layer and a dropout layer all draw from state
that a new process starts afresh. Here every source of randomness is a pure function of `(seed, epoch)`:

- the order of each epoch's examples is a stateless permutation keyed on `(seed, epoch)` (`epoch_batches`);
- augmentation (`kerastl.data.augment_images`, `kerastl.audio.augment_waveforms`) uses stateless random ops
  keyed on `(seed, epoch, batch)`, and a training set too large for memory streams through the same batches
  (`kerastl.data.training_examples`: its paths are permuted, then read and augmented);
- every dropout and other random layer's seed state is reset from `(seed, epoch)` when the epoch begins
  (`EpochSeeds`).

So a run resumed from its backup at epoch k does exactly what the uninterrupted run did from epoch k, and
with TensorFlow's op determinism on (`deterministic=True`) it ends with the same weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# The image augmentation lives beside image decoding; its old name here stays for old imports.
from kerastl.data import augment_images  # noqa: F401

BACKUP_DIR = ".kerastl-backup"


def backup_dir(out, phase: str) -> Path:
    """Where a phase's backup lives while a run is in progress (inside the output directory)."""
    return Path(out) / BACKUP_DIR / phase


def completed_epochs(directory) -> int:
    """Epochs a phase already finished according to its `BackupAndRestore` metadata (0 without a backup)."""
    try:
        return int(json.loads((Path(directory) / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def clear_backups(out) -> None:
    """Removes the backups of a run that has finished and written its outputs."""
    shutil.rmtree(Path(out) / BACKUP_DIR, ignore_errors=True)


def enable_determinism(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow, and makes TensorFlow ops deterministic (slower on some ops)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def epoch_batches(x, y, *, batch_size: int, seed: int, first_epoch: int, epochs: int, shuffle: bool = True,
                  augment=None):
    """Batches of epochs `[first_epoch, epochs)` of the in-memory examples `(x, y)`, as one tf.data.Dataset.

    Each epoch has `ceil(len(x) / batch_size)` batches; its order is a stateless permutation keyed on
    `(seed, epoch)`, and `augment(batch, key)` (if given) receives a stateless key `(seed, epoch * 2**20 +
    batch)`. Fit it with `steps_per_epoch=ceil(len(x) / batch_size)` and `initial_epoch=first_epoch`.
    """
    import tensorflow as tf

    inputs = tf.constant(x)
    labels = tf.constant(y)
    n = int(inputs.shape[0])

    def one_epoch(epoch):
        if shuffle:
            key = tf.stack([tf.constant(seed, tf.int64), epoch])
            order = tf.argsort(tf.random.stateless_uniform([n], seed=key))
        else:
            order = tf.range(n)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()

        def gather(index, ids):
            batch = tf.gather(inputs, ids)
            if augment is not None:
                batch = augment(batch, tf.stack([tf.constant(seed, tf.int64), epoch * (1 << 20) + index]))
            return batch, tf.gather(labels, ids)

        return batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    epochs_range = tf.data.Dataset.range(int(first_epoch), int(epochs))
    return epochs_range.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def _seed_generators(model):
    from kerastl.layers import walk_layers

    generators = []
    for layer in walk_layers(model):
        generators.extend(getattr(layer, "_seed_generators", []))
    return generators


def epoch_seeds_callback(model, seed: int):
    """A callback that resets every random layer's seed state from `(seed, epoch)` when an epoch begins."""
    import keras
    import numpy as np

    class EpochSeeds(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            for index, generator in enumerate(_seed_generators(model)):
                dtype = generator.state.dtype
                state = np.array([(seed * 1_000_003 + index) % (1 << 31), epoch * (1 << 20)], dtype=dtype)
                generator.state.assign(state)

    return EpochSeeds()
