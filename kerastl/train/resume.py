"""Interruption: fine-tuning phases that resume after a crash or `kill -9`, deterministically.

Keras' `BackupAndRestore` restores the weights, the optimizer state and the epoch, but not the randomness of
the epochs still to run: a `tf.data` shuffle, an augmentation layer and a dropout layer all draw from state
that a new process starts afresh. Here every source of randomness is a pure function of `(seed, epoch)`:

- the order of each epoch's examples is a stateless permutation keyed on `(seed, epoch)` (`epoch_batches`);
- augmentation (`kerastl.data.augment_images`, `kerastl.inputs.audio.augment_waveforms`) uses stateless random ops
  keyed on `(seed, epoch, batch)`, and a training set too large for memory streams through the same batches
  (`kerastl.data.training_examples`: its paths are permuted, then read and augmented);
- every dropout and other random layer's seed state is reset from `(seed, epoch)` when the epoch begins
  (`EpochSeeds`).

So a run resumed from its backup at epoch k does exactly what the uninterrupted run did from epoch k, and
with TensorFlow's op determinism on (`deterministic=True`) it ends with the same weights.

A backup is resumed only by the same run: it carries the run's fingerprint (`run_fingerprint`: the command
and its options, the config, every data file's size and modification time, the backbone's identity and the
sha256 of its initial weights), and `claim_backup` discards a backup whose fingerprint differs, with one line
saying so. Fine-tuning's `OUT/.kerastl-backup/` and pre-training's `.NAME.backup` beside its output share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

# The image augmentation lives beside image decoding; its old name here stays for old imports.
from kerastl.data import augment_images  # noqa: F401

BACKUP_DIR = ".kerastl-backup"
FINGERPRINT_FILE = "kerastl-run.json"


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


def weights_sha256(model) -> str:
    """sha256 over all of `model`'s weights, in order."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()


def files_identity(paths) -> list:
    """`[name, bytes, mtime_ns]` of each file, in sorted order: a changed, added or removed file changes it
    without reading any file. Names are relative to the files' common folder, so moving the folder is no
    change."""
    paths = sorted(str(p) for p in paths)
    if not paths:
        return []
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    identity = []
    for path in paths:
        try:
            info = os.stat(path)
            identity.append([os.path.relpath(path, root), info.st_size, info.st_mtime_ns])
        except OSError:
            identity.append([os.path.relpath(path, root), None, None])
    return identity


def run_fingerprint(command: str, *, options: dict, config: dict, data_files=(), backbone: dict | None = None
                    ) -> dict:
    """What makes two runs the same run, as `{part: sha256}`: `command` (finetune or pretrain) with its
    `options` (what the command line gives besides the config, e.g. the backbone spec and --cut), the `config`
    (the hyperparameters), `data_files` (`files_identity`) and the `backbone` record (including the sha256 of
    its initial weights). Paths of the output and options that change no weight (--out, --description) are left
    out by the callers."""

    def sha(value) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()

    return {"format_version": 1, "command": sha([command, options]), "config": sha(config),
            "data": sha(files_identity(data_files)), "backbone": sha(backbone)}


_PART_NAMES = {"command": "the command or its options", "config": "the settings", "data": "the data files",
               "backbone": "the backbone"}


def claim_backup(directory, fingerprint: dict) -> str | None:
    """Makes `directory` the backup of the run `fingerprint` describes.

    A backup left by that same run is kept (the run resumes from it). One left by another run (other data,
    settings, command or backbone, or a backup without a fingerprint) is removed, so that the run starts
    afresh. The fingerprint is then recorded in the directory.

    Returns:
        None, or one line saying that a backup of another run was discarded and why (for the caller to report).
    """
    directory = Path(directory)
    note = None
    if directory.exists():
        try:
            recorded = json.loads((directory / FINGERPRINT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        if recorded != fingerprint:
            differ = [text for part, text in _PART_NAMES.items()
                      if not isinstance(recorded, dict) or recorded.get(part) != fingerprint.get(part)]
            why = ", ".join(differ) if isinstance(recorded, dict) else "it records no run"
            note = (f"not resuming from the backup in {directory}: it is another run's ({why} differ)"
                    if isinstance(recorded, dict) else
                    f"not resuming from the backup in {directory}: {why}") + "; starting afresh"
            shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    from kerastl.core.atomic import write_text

    write_text(directory / FINGERPRINT_FILE, json.dumps(fingerprint, indent=1) + "\n")
    return note


PROGRESS_FILE = "kerastl-progress.json"


def read_progress(directory, epochs_done: int) -> dict:
    """The per-epoch record (`loss`, cumulative training `seconds`) that `progress_callback` kept of the
    `epochs_done` epochs a backup holds; lists shorter than `epochs_done` when a record is missing."""
    try:
        record = json.loads((Path(directory) / PROGRESS_FILE).read_text(encoding="utf-8"))
        return {"loss": list(record["loss"])[:epochs_done], "seconds": list(record["seconds"])[:epochs_done]}
    except (OSError, ValueError, KeyError, TypeError):
        return {"loss": [], "seconds": []}


def write_progress(directory, progress: dict) -> None:
    from kerastl.core.atomic import write_text

    Path(directory).mkdir(parents=True, exist_ok=True)
    write_text(Path(directory) / PROGRESS_FILE, json.dumps(progress) + "\n")


def progress_callback(directory, progress: dict, seconds_before: float):
    """A callback that appends each epoch's loss and the cumulative training seconds to `progress` and writes
    it into the backup `directory`. Put it before `BackupAndRestore` in the callbacks: the record is then never
    behind the backup, and `read_progress` cuts it to the backup's epochs."""
    import time

    import keras

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            progress["loss"].append(round(float((logs or {}).get("loss", float("nan"))), 5))
            progress["seconds"].append(round(seconds_before + time.perf_counter() - self.start, 3))
            write_progress(directory, progress)

    return Progress()


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
    from kerastl.core.graph import walk_layers

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
