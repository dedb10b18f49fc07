"""Stratified seeded train/validation splits and few-shot sampling (`Split`, `split`), class weights for
imbalanced sets, and matching a folder's classes to a model's (`class_indices`)."""

from __future__ import annotations

import dataclasses
import random

from kerastl.data.folders import FolderScan
from kerastl.errors import KerastlError, UsageError


@dataclasses.dataclass
class Split:
    """A stratified train/validation split: parallel lists of paths and integer labels."""

    class_names: list
    train_files: list
    train_labels: list
    val_files: list
    val_labels: list

    def train_counts(self) -> list[int]:
        return [self.train_labels.count(i) for i in range(len(self.class_names))]


def split(scan: FolderScan, *, validation_fraction: float = 0.2, shots: int | None = None,
          seed: int = 0) -> Split:
    """A stratified, seeded train/validation split.

    Without `shots`, each class keeps `validation_fraction` of its files (at least one when it has two or
    more) for validation. With `shots=N`, N files per class train and all the others validate, which is how
    few-shot results are reported.

    Raises:
        UsageError: `validation_fraction` outside [0, 1) or `shots` < 1.
        KerastlError: a class has too few files for `shots` (it needs N to train and 1 to validate).
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise UsageError(f"validation fraction must be in [0, 1). Received: {validation_fraction}")
    if shots is not None and int(shots) < 1:
        raise UsageError(f"--shots must be at least 1. Received: {shots}")
    rng = random.Random(seed)
    result = Split(list(scan.class_names), [], [], [], [])
    for label, (name, paths) in enumerate(zip(scan.class_names, scan.files)):
        paths = list(paths)
        rng.shuffle(paths)
        if shots is not None:
            if len(paths) < shots + 1:
                raise KerastlError(f"class '{name}' has {len(paths)} files; --shots {shots} needs at least "
                                   f"{shots + 1} per class ({shots} to train, 1 to validate)")
            n_val = len(paths) - shots
        else:
            n_val = round(len(paths) * validation_fraction)
            if validation_fraction > 0 and len(paths) >= 2:
                n_val = min(max(n_val, 1), len(paths) - 1)
        result.val_files += paths[:n_val]
        result.val_labels += [label] * n_val
        result.train_files += paths[n_val:]
        result.train_labels += [label] * (len(paths) - n_val)
    return result


def class_indices(data, class_names, labels) -> list[int]:
    """The index in `labels` (a model's classes) of each class folder name of `data`, names matched up to
    Unicode normalisation (NFC).

    macOS stores file names decomposed (NFD), Linux as typed (NFC), so a model trained on one may be
    evaluated or exported with a folder copied through the other; `evaluate` and export's verification set
    both match classes here, so they accept and refuse the same folders.

    Raises:
        KerastlError: a folder names a class the model does not know (one line naming them and the fix).
    """
    import unicodedata

    index = {unicodedata.normalize("NFC", label): i for i, label in enumerate(labels)}
    known = [index.get(unicodedata.normalize("NFC", name)) for name in class_names]
    unknown = [name for name, i in zip(class_names, known) if i is None]
    if unknown:
        raise KerastlError(
            f"{data} has classes the model was not trained on: {', '.join(unknown[:5])}; the model knows "
            f"{', '.join(labels[:10])}{'...' if len(labels) > 10 else ''}; remove or rename those folders")
    return known


def class_weights(labels: list[int], num_classes: int, imbalance: float = 1.5) -> dict | None:
    """Balanced class weights `n / (k * count)` when the largest class is more than `imbalance` times the
    smallest, else None (uniform)."""
    counts = [labels.count(i) for i in range(num_classes)]
    present = [c for c in counts if c]
    if not present or max(present) <= imbalance * min(present):
        return None
    total = sum(counts)
    return {i: (total / (num_classes * c) if c else 0.0) for i, c in enumerate(counts)}
