"""Labelled data: class-per-folder image directories, stratified seeded splits, few-shot sampling, tf.data.

A data directory holds one subfolder per class; the folder names are the class names (sorted, so the order
is reproducible). Hidden files and folders are ignored, as are files of other types (counted in the report).
Images that fail to decode are skipped and listed; an empty class folder, or fewer than two classes, stop
the run with one line.
"""

from __future__ import annotations

import dataclasses
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kerastl.errors import KerastlError, UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
AUDIO_EXTENSIONS = (".wav",)
TEXT_EXTENSIONS = (".txt",)
MODALITY_EXTENSIONS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS, "text": TEXT_EXTENSIONS}

# Decoded, resized training sets up to this size are cached in memory by tf.data after the first epoch.
MEMORY_CACHE_BYTES = 2 << 30


@dataclasses.dataclass
class FolderScan:
    """What a class-per-folder directory holds.

    Attributes:
        root: the directory.
        class_names: subfolder names, sorted.
        files: per class, the sorted file paths of the scanned modality.
        ignored: files skipped because they are hidden or of another type.
        skipped: `(path, reason)` for files that failed to decode (filled by `drop_undecodable`).
    """

    root: Path
    class_names: list
    files: list
    ignored: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)

    @property
    def counts(self) -> dict:
        return {name: len(paths) for name, paths in zip(self.class_names, self.files)}


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


def detect_modality(root) -> str | None:
    """The input type of a class-per-folder directory, by the most common known file type in it."""
    counts = {modality: 0 for modality in MODALITY_EXTENSIONS}
    for _, _, names in os.walk(root):
        for name in names:
            suffix = Path(name).suffix.lower()
            for modality, extensions in MODALITY_EXTENSIONS.items():
                if suffix in extensions and not name.startswith("."):
                    counts[modality] += 1
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def scan_folder(root, modality: str = "image") -> FolderScan:
    """Lists the classes and files of a class-per-folder directory.

    Raises:
        KerastlError: the directory does not exist or is not a directory, has fewer than two class folders,
            or a class folder has no file of the modality.
    """
    root = Path(root)
    if not root.exists():
        raise KerastlError(f"data directory not found: {root}")
    if not root.is_dir():
        raise KerastlError(f"{root} is not a directory; give a folder with one subfolder per class")
    extensions = MODALITY_EXTENSIONS[modality]
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    stray = [p for p in root.iterdir() if p.is_file()]
    if len(class_dirs) < 2:
        found = f"only '{class_dirs[0].name}'" if class_dirs else "none"
        raise KerastlError(
            f"{root} needs one subfolder per class and at least 2 classes (found {found}); "
            "put each class's files in its own subfolder"
        )
    files, ignored = [], list(stray)
    for class_dir in class_dirs:
        kept = []
        for dirpath, dirnames, names in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(names):
                path = Path(dirpath) / name
                if not name.startswith(".") and path.suffix.lower() in extensions:
                    kept.append(path)
                else:
                    ignored.append(path)
        if not kept:
            raise KerastlError(
                f"class folder '{class_dir.name}' in {root} has no {modality} files "
                f"({', '.join(extensions)}); add some or remove the folder"
            )
        files.append(kept)
    return FolderScan(root=root, class_names=[d.name for d in class_dirs], files=files, ignored=ignored)


def _decode_error(path: Path) -> str | None:
    import tensorflow as tf

    try:
        data = tf.io.read_file(str(path))
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        if image.shape[0] == 0 or image.shape[1] == 0:
            return "empty image"
    except Exception as error:  # TF raises InvalidArgumentError and friends with multi-line messages
        text = str(error).strip().splitlines()
        return (text[-1] if text else type(error).__name__)[:200]
    return None


def drop_undecodable(scan: FolderScan, workers: int | None = None) -> FolderScan:
    """Decodes every image once and removes those that fail, recording them in `scan.skipped`.

    Raises:
        KerastlError: a class is left with no decodable image.
    """
    flat = [path for paths in scan.files for path in paths]
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        errors = dict(zip(flat, pool.map(_decode_error, flat)))
    files = []
    for name, paths in zip(scan.class_names, scan.files):
        good = [p for p in paths if errors[p] is None]
        if not good:
            raise KerastlError(f"no image in class folder '{name}' could be decoded (e.g. {paths[0]}: "
                               f"{errors[paths[0]]}); replace the files")
        files.append(good)
    skipped = [(str(p), reason) for p, reason in errors.items() if reason is not None]
    return dataclasses.replace(scan, files=files, skipped=scan.skipped + skipped)


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
            n_val = int(round(len(paths) * validation_fraction))
            if validation_fraction > 0 and len(paths) >= 2:
                n_val = min(max(n_val, 1), len(paths) - 1)
        result.val_files += paths[:n_val]
        result.val_labels += [label] * n_val
        result.train_files += paths[n_val:]
        result.train_labels += [label] * (len(paths) - n_val)
    return result


def class_weights(labels: list[int], num_classes: int, imbalance: float = 1.5) -> dict | None:
    """Balanced class weights `n / (k * count)` when the largest class is more than `imbalance` times the
    smallest, else None (uniform)."""
    counts = [labels.count(i) for i in range(num_classes)]
    present = [c for c in counts if c]
    if not present or max(present) <= imbalance * min(present):
        return None
    total = sum(counts)
    return {i: (total / (num_classes * c) if c else 0.0) for i, c in enumerate(counts)}


def decode_image(path, image_size, channels: int):
    """Graph function: reads an image file and returns float32 pixels in [0, 255], resized to `image_size`
    (height, width) with antialiasing and converted to `channels` (1 or 3). Alpha is dropped."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape((None, None, 3))
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, antialias=True)
    if channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    return tf.clip_by_value(image, 0.0, 255.0)


def augmenter(seed: int | None = None):
    """The optional augmentation: small translations, rotations, zooms and contrast changes.

    Flips are left out: they change the meaning of digits and text. Applied in the tf.data pipeline on the
    training set only, so exported models carry none of it.
    """
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomRotation(0.04, fill_mode="constant", seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomContrast(0.2, value_range=(0, 255), seed=seed),
        ],
        name="augmentation",
    )


def image_dataset(files, labels, *, image_size, channels: int, batch_size: int, shuffle: bool = False,
                  augment: bool = False, seed: int = 0, cache: bool | None = None):
    """The tf.data pipeline: map(decode, parallel) → cache → shuffle (training) → batch → augment → prefetch.

    Yields `(pixels, label)` batches, pixels float32 in [0, 255] of shape (batch, *image_size, channels).
    `cache=None` caches decoded images in memory when they fit in `MEMORY_CACHE_BYTES`.
    """
    import tensorflow as tf

    image_size = tuple(int(s) for s in image_size)
    dataset = tf.data.Dataset.from_tensor_slices(([str(f) for f in files], list(labels)))
    dataset = dataset.map(lambda p, y: (decode_image(p, image_size, channels), y),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache is None:
        cache = len(files) * image_size[0] * image_size[1] * channels * 4 <= MEMORY_CACHE_BYTES
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(max(len(files), 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment:
        layers = augmenter(seed)
        dataset = dataset.map(lambda x, y: (layers(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_images(files, *, image_size, channels: int, batch_size: int = 64):
    """Decodes `files` into one float32 array (N, H, W, C), in order."""
    import numpy as np

    dataset = image_dataset(files, [0] * len(files), image_size=image_size, channels=channels,
                            batch_size=batch_size, cache=False)
    batches = [x.numpy() for x, _ in dataset]
    return np.concatenate(batches) if batches else np.zeros((0, *image_size, channels), "float32")


def digits_folder(dest=None) -> Path:
    """Writes scikit-learn's bundled handwritten digits (1,797 real 8×8 scans, 10 classes) as a class-per-folder
    PNG set, once, and returns its path: `dest`, else the kerastl cache's `datasets/sklearn-digits`.

    Pixels are the 0–16 ink levels scaled to 0–255: bright ink on a dark background, as in MNIST.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from kerastl.downloads import cache_dir

    dest = Path(dest) if dest else cache_dir() / "datasets" / "sklearn-digits"
    marker = dest / ".complete"
    if marker.is_file():
        return dest
    digits = load_digits()
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    for index, (image, target) in enumerate(zip(digits.images, digits.target)):
        folder = tmp / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.round(image * (255.0 / 16.0)), 0, 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"{index:04d}.png")
    (tmp / ".complete").write_text("scikit-learn load_digits\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, dest)  # atomic: a concurrent or killed writer never leaves a half set under `dest`
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not marker.is_file():
            raise
    return dest
