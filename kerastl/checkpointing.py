"""Interruption: fine-tuning phases that resume after a crash or `kill -9`, deterministically.

Keras' `BackupAndRestore` restores the weights, the optimizer state and the epoch, but not the randomness of
the epochs still to run: a `tf.data` shuffle, an augmentation layer and a dropout layer all draw from state
that a new process starts afresh. Here every source of randomness is a pure function of `(seed, epoch)`:

- the order of each epoch's examples is a stateless permutation keyed on `(seed, epoch)` (`epoch_batches`);
- image augmentation uses stateless random ops keyed on `(seed, epoch, batch)` (`augment_images`);
- every dropout and other random layer's seed state is reset from `(seed, epoch)` when the epoch begins
  (`EpochSeeds`).

So a run resumed from its backup at epoch k does exactly what the uninterrupted run did from epoch k, and
with TensorFlow's op determinism on (`deterministic=True`) it ends with the same weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def augment_images(images, key, *, translate: float = 0.1, rotate_degrees: float = 7.0, zoom: float = 0.1,
                   contrast: float = 0.2):
    """Stateless image augmentation of a batch (float pixels in [0, 255]): random translation, rotation and
    zoom (one affine transform per image, constant fill) and contrast, all keyed on `key`."""
    import math

    import tensorflow as tf

    shape = tf.shape(images)
    batch = shape[0]
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    u = tf.random.stateless_uniform([batch, 5], seed=key, minval=-1.0, maxval=1.0)
    angle = u[:, 0] * rotate_degrees * math.pi / 180.0
    scale = 1.0 + u[:, 1] * zoom
    dx = u[:, 2] * translate * width
    dy = u[:, 3] * translate * height
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): a rotation and zoom about the
    # centre, then a shift.
    a2 = cx - cos * cx + sin * cy - dx
    b2 = cy - sin * cx - cos * cy - dy
    zeros = tf.zeros_like(cos)
    transforms = tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    factor = 1.0 + u[:, 4] * contrast
    mean = tf.reduce_mean(warped, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((warped - mean) * factor[:, None, None, None] + mean, 0.0, 255.0)


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
