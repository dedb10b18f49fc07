"""Labelled data: class-per-folder directories, stratified seeded splits, few-shot sampling, tf.data.

Images are decoded here; audio (`kerastl.modalities.audio`) and text (`kerastl.modalities.text`) files by their modules. `InputSpec`
and the functions after it (`input_spec`, `make_dataset`, `load_inputs`, `decode_error`) dispatch on the
modality, so that fine-tuning, evaluation and export treat the three alike.

A data directory holds one subfolder per class; the folder names are the class names (sorted, so the order
is reproducible). Hidden files and folders are ignored, as are files of other types; files that fail to
decode or exceed a size limit (`MAX_IMAGE_PIXELS`, ...) are skipped. All of them are listed with the reason
(`FolderScan.skipped`, the report's `skipped`). An empty class folder, fewer than two classes, or a class
with no readable file stop the run with one line.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kerastl.core.records import InputSpec, UndeclaredInput
from kerastl.errors import KerastlError, UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
AUDIO_EXTENSIONS = (".wav",)
TEXT_EXTENSIONS = (".txt",)
MODALITY_EXTENSIONS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS, "text": TEXT_EXTENSIONS}

# Sets whose decoded inputs (`decoded_bytes`: float32 pixels or samples, the bytes of texts) fit in this are read
# into memory once; larger ones stream from their files, paths shuffled before decoding (`example_dataset`,
# `training_examples`). One bound for images, audio and text.
MEMORY_CACHE_BYTES = 2 << 30

# Limits on what one file may cost to read; files beyond them are skipped with the reason. Decoding allocates
# the full decoded size whatever the file's size, so a few kilobytes can claim gigabytes (a decompression bomb):
# the limits are checked on the header (Pillow reads an image's size without decoding it), before any decoder.
# 64 megapixels is 192 MB as RGB uint8, beyond any camera photo a training set comes from.
MAX_IMAGE_PIXELS = 64_000_000
# A WAV file is resampled whole before it is cropped to the clip: 10 minutes bounds that memory. A rate below
# 1 kHz is a damaged header, and resampling it up to the model's rate multiplies the samples (16,000 times
# for a header claiming 1 Hz).
MAX_AUDIO_SECONDS = 600
MIN_AUDIO_SAMPLE_RATE = 1000
# Texts are read whole and kept in memory; the tokenizer keeps only the first few hundred tokens anyway.
MAX_TEXT_BYTES = 8 << 20


@dataclasses.dataclass
class FolderScan:
    """What a class-per-folder directory holds.

    Attributes:
        root: the directory.
        class_names: subfolder names, sorted.
        files: per class, the sorted file paths of the scanned modality.
        ignored: files left out because they are hidden, of another type or not regular files.
        skipped: `(path, reason)` for every file left out: those in `ignored` and hidden folders (by
            `scan_folder`), then those that failed to decode or exceed a size limit (by `drop_undecodable`).
        modality: the type of file scanned (image, audio or text).
    """

    root: Path
    class_names: list
    files: list
    ignored: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    modality: str = "image"

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


def scan_folder(root, modality: str = "image", *, min_classes: int = 2) -> FolderScan:
    """Lists the classes and files of a class-per-folder directory.

    Files that are hidden, of another type, not regular files (pipes, devices, broken links) or whose names
    are not UTF-8 are left out and listed in `skipped` with the reason, as are files beside the class folders
    and hidden folders (not read).

    Raises:
        KerastlError: the directory does not exist or is not a directory, has fewer than `min_classes` class
            folders, a class folder's name is not UTF-8 or holds a control character (labels.txt has one name
            per line), or a class folder has no file of the modality.
    """
    root = Path(root)
    if not root.exists():
        raise KerastlError(f"data directory not found: {root}")
    if not root.is_dir():
        raise KerastlError(f"{root} is not a directory; give a folder with one subfolder per class")
    extensions = MODALITY_EXTENSIONS[modality]
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    stray = [p for p in root.iterdir() if p.is_file()]
    if len(class_dirs) < min_classes:
        found = f"only '{class_dirs[0].name}'" if class_dirs else "none"
        raise KerastlError(
            f"{root} needs one subfolder per class and at least {min_classes} "
            f"class{'es' if min_classes > 1 else ''} (found {found}); "
            "put each class's files in its own subfolder"
        )
    for class_dir in class_dirs:
        problem = _name_problem(class_dir.name)
        if problem:
            raise KerastlError(f"class folder name {class_dir.name!r} in {printable_path(root)} {problem}; "
                               "rename the folder (its name becomes a line of labels.txt)")
    files, ignored = [], list(stray)
    skipped = [(printable_path(p), "not in a class folder") for p in stray]
    skipped += [(printable_path(p), "hidden folder (not read)") for p in sorted(root.iterdir())
                if p.is_dir() and p.name.startswith(".")]
    for class_dir in class_dirs:
        kept = []
        for dirpath, dirnames, names in os.walk(class_dir):
            skipped += [(printable_path(Path(dirpath) / d), "hidden folder (not read)") for d in sorted(dirnames)
                        if d.startswith(".")]
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(names):
                path = Path(dirpath) / name
                reason = _leave_out_reason(path, extensions)
                if reason is None:
                    kept.append(path)
                else:
                    ignored.append(path)
                    skipped.append((printable_path(path), reason))
        if not kept:
            raise KerastlError(
                f"class folder '{class_dir.name}' in {root} has no {modality} files "
                f"({', '.join(extensions)}); add some or remove the folder"
            )
        files.append(kept)
    return FolderScan(root=root, class_names=[d.name for d in class_dirs], files=files, ignored=ignored,
                      skipped=skipped, modality=modality)


def printable_path(path) -> str:
    """`path` as a str that can be written as UTF-8: bytes of a non-UTF-8 name appear as `\\xff` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _name_problem(name: str) -> str | None:
    import unicodedata

    if printable_path(name) != name:
        return "is not valid UTF-8"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "holds a control character (a line break or tab)"
    return None


def _leave_out_reason(path: Path, extensions) -> str | None:
    """Why a file in a class folder is not read, or None."""
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() not in extensions:
        return f"not a {'/'.join(e.lstrip('.') for e in extensions)} file"
    if not path.is_file():  # a FIFO or device would block or never end; a broken link has nothing to read
        return "not a regular file (a pipe, device or broken link)"
    if printable_path(path) != str(path):
        return "file name is not valid UTF-8; rename it"
    return None


def _decode_error(path: Path) -> str | None:
    too_large = _image_size_error(path)
    if too_large:
        return too_large
    import tensorflow as tf

    try:
        data = tf.io.read_file(str(path))
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        if image.shape[0] == 0 or image.shape[1] == 0:
            return "empty image"
    except Exception as error:  # noqa: BLE001 (TF raises InvalidArgumentError and friends with multi-line messages)
        text = str(error).strip().splitlines()
        reason = text[-1] if text else ""
        # "{{function_node __wrapped__DecodeImage_device_/job:...}} Invalid PNG. [Op:DecodeImage] name:"
        reason = re.sub(r"^\{\{.*?\}\}\s*|\s*\[Op:\w+\].*$", "", reason).strip()
        return (reason or type(error).__name__)[:200]
    return None


# warnings.catch_warnings changes process-wide state and drop_undecodable reads headers from several threads.
_PILLOW_LOCK = threading.Lock()


def _image_size_error(path: Path) -> str | None:
    """Why the image at `path` is too large to decode (over `MAX_IMAGE_PIXELS` by its header), or None.

    Only the header is read. Files Pillow cannot identify are left to the decoder, which names the problem.
    Pillow's own decompression-bomb check warns above `PIL.Image.MAX_IMAGE_PIXELS` (silenced here: the size
    is checked below) and raises above twice that (reported as the same reason).
    """
    from PIL import Image

    limit = f"over the {MAX_IMAGE_PIXELS / 1e6:g}-megapixel limit (kerastl.data.MAX_IMAGE_PIXELS); downscale it"
    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Image.DecompressionBombError as error:
            found = re.search(r"\((\d+) pixels\)", str(error))
            if found and int(found.group(1)) > MAX_IMAGE_PIXELS:
                return f"image of {int(found.group(1)) / 1e6:.3g} megapixels, {limit}"
            return f"refused by Pillow: {error}"[:200]  # PIL.Image.MAX_IMAGE_PIXELS was set below ours
        except Exception:  # noqa: BLE001 (not an image Pillow knows, or a damaged header)
            return None
    if width * height > MAX_IMAGE_PIXELS:
        return f"image of {width}x{height} = {width * height / 1e6:.3g} megapixels, {limit}"
    return None


def decode_error(path, modality: str = "image") -> str | None:
    """Why `path` cannot be read as a file of `modality`, or None (see the limits at the top of the module)."""
    if modality == "audio":
        from kerastl.modalities.audio import decode_error as audio_error

        return _wav_header_error(Path(path)) or audio_error(path)
    if modality == "text":
        from kerastl.modalities.text import decode_error as text_error

        size = Path(path).stat().st_size if Path(path).is_file() else 0
        if size > MAX_TEXT_BYTES:
            return f"text of {size / 2**20:.0f} MiB, over the {MAX_TEXT_BYTES >> 20} MiB limit " \
                   "(kerastl.data.MAX_TEXT_BYTES); split it"
        return text_error(path)
    return _decode_error(Path(path))


def _wav_header_error(path: Path) -> str | None:
    """Why the WAV file at `path` would cost too much to read (a sample rate below `MIN_AUDIO_SAMPLE_RATE`, or
    longer than `MAX_AUDIO_SECONDS`), from its header and size, or None. Headers this cannot parse are left to
    the WAV reader, which names the problem."""
    import struct

    try:
        with open(path, "rb") as file:
            head = file.read(1 << 16)
        size = path.stat().st_size
    except OSError:
        return None
    if head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        return None
    endian = ">" if head[:4] == b"RIFX" else "<"
    at = 12
    while at + 8 <= len(head):  # walk the chunks to "fmt "
        chunk, length = head[at:at + 4], struct.unpack(endian + "I", head[at + 4:at + 8])[0]
        if chunk == b"fmt " and at + 24 <= len(head):
            channels, rate = struct.unpack(endian + "HI", head[at + 10:at + 16])
            block = struct.unpack(endian + "H", head[at + 20:at + 22])[0] or max(1, channels)
            if rate < MIN_AUDIO_SAMPLE_RATE:
                return f"sample rate of {rate} Hz, below {MIN_AUDIO_SAMPLE_RATE} Hz: a damaged header"
            seconds = size / (block * rate)  # an upper bound: the file holds at most size / block frames
            if seconds > MAX_AUDIO_SECONDS:
                return (f"audio of up to {seconds:.0f} s, over the {MAX_AUDIO_SECONDS} s limit "
                        "(kerastl.data.MAX_AUDIO_SECONDS); cut it into clips")
            return None
        at += 8 + length + (length & 1)
    return None


def drop_undecodable(scan: FolderScan, workers: int | None = None) -> FolderScan:
    """Decodes every file once and removes those that fail, recording them in `scan.skipped`.

    Raises:
        KerastlError: a class is left with no decodable file.
    """
    flat = [path for paths in scan.files for path in paths]
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        errors = dict(zip(flat, pool.map(lambda p: decode_error(p, scan.modality), flat)))
    files = []
    for name, paths in zip(scan.class_names, scan.files):
        good = [p for p in paths if errors[p] is None]
        if not good:
            raise KerastlError(f"no {scan.modality} file in class folder '{name}' could be decoded (e.g. {paths[0]}: "
                               f"{errors[paths[0]]}); replace the files")
        files.append(good)
    # Damaged files first: they are what the user may want to fix; hidden and other files follow.
    skipped = [(printable_path(p), reason) for p, reason in errors.items() if reason is not None]
    return dataclasses.replace(scan, files=files, skipped=skipped + scan.skipped)


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


# Augmentation keys: `(seed, epoch * 2**20 + batch)`, int64, as `kerastl.train.resume.epoch_batches` builds
# them, so a batch's augmentation depends only on the seed, the epoch and the batch's place in that epoch (whose
# examples are themselves a stateless permutation keyed on (seed, epoch)).
AUGMENT_BATCHES_PER_EPOCH = 1 << 20


def augmentation_key(seed: int, epoch, batch):
    """The stateless key of a batch's augmentation: int64 `[seed, epoch * 2**20 + batch]` (see above)."""
    import tensorflow as tf

    epoch, batch = tf.cast(epoch, tf.int64), tf.cast(batch, tf.int64)
    return tf.stack([tf.constant(int(seed), tf.int64), epoch * AUGMENT_BATCHES_PER_EPOCH + batch])


def augment_images(images, key, *, translate: float = 0.1, rotate_degrees: float = 7.0, zoom: float = 0.1,
                   contrast: float = 0.2):
    """The image augmentation, the only one (in memory and streaming alike): a graph function on a batch of
    float pixels in [0, 255] giving each image a random translation (up to `translate` of its size), rotation
    (up to `rotate_degrees`), zoom (up to `zoom`) as one affine transform with constant (black) fill, then a
    contrast change (up to `contrast`).

    Stateless: the draws are `tf.random.stateless_uniform` keyed on `key` (a shape-[2] int seed,
    `augmentation_key(seed, epoch, batch)`), so the same key gives the same batch bit for bit, in a resumed
    process too. Flips are left out: they change the meaning of digits and text. Training set only, so
    exported models carry none of it.
    """
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


def image_dataset(files, labels, *, image_size, channels: int, batch_size: int, shuffle: bool = False,
                  augment: bool = False, seed: int = 0, cache: bool | None = None):
    """The tf.data pipeline of image files: `(pixels, label)` batches, pixels float32 in [0, 255] of shape
    (batch, *image_size, channels). See `example_dataset` for `shuffle` and `cache` (None: decoded once into
    memory when the set fits in `MEMORY_CACHE_BYTES`, else decoded as it streams) and `batched` for `augment`.
    """
    spec = InputSpec(modality="image", shape=(*(int(s) for s in image_size), int(channels)))
    examples = example_dataset(spec, files, labels, shuffle=shuffle, seed=seed, in_memory=cache)
    return batched(spec, examples, batch_size=batch_size, augment=augment, seed=seed)


def load_images(files, *, image_size, channels: int, batch_size: int = 64):
    """Decodes `files` into one float32 array (N, H, W, C), in order."""
    import numpy as np
    import tensorflow as tf

    image_size = tuple(int(s) for s in image_size)
    dataset = (tf.data.Dataset.from_tensor_slices([str(f) for f in files] or tf.zeros((0,), tf.string))
               .map(lambda p: decode_image(p, image_size, channels), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
               .batch(batch_size))
    batches = [x.numpy() for x in dataset]
    return np.concatenate(batches) if batches else np.zeros((0, *image_size, channels), "float32")


def digits_folder(dest=None) -> Path:
    """Writes scikit-learn's bundled handwritten digits (1,797 real 8×8 scans, 10 classes) as a class-per-folder
    PNG set, once, and returns its path: `dest`, else the kerastl cache's `datasets/sklearn-digits`.

    Pixels are the 0–16 ink levels scaled to 0–255: bright ink on a dark background, as in MNIST.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from kerastl.net import cache_dir

    dest = Path(dest) if dest else cache_dir() / "datasets" / "sklearn-digits"
    # The set is written elsewhere and renamed into place whole, so a `dest` that exists is complete (and a
    # marker file inside it would only show up as a stray file in every report).
    if dest.is_dir():
        return dest
    digits = load_digits()
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    for index, (image, target) in enumerate(zip(digits.images, digits.target)):
        folder = tmp / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.round(image * (255.0 / 16.0)), 0, 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"{index:04d}.png")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, dest)  # atomic: a concurrent or killed writer never leaves a half set under `dest`
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():  # another process may have won the race; that is fine
            raise
    return dest


# ------------------------------------------------------------------------------------ dispatch by modality






def input_spec(model) -> InputSpec:
    """The `InputSpec` of a Keras model (a backbone or a classifier), from what the model records rather than
    a guess from its shape: strings are text (the dtype says so); a float (samples,) input is a waveform only
    when a `LogMelSpectrogram` or `Waveform` layer in the model gives its sample rate (kerastl's audio
    backbones carry one); three axes with 1 or 3 channels are images, kerastl's default (its image backbones
    carry an `ImagePreprocessing` layer).

    Raises:
        UndeclaredInput: a float (samples,) input with no sample-rate layer (it may be a feature vector);
            the one line says how to declare a waveform.
        KerastlError: an input of none of these forms (one line naming its shape and dtype).
    """
    if len(model.inputs) != 1:
        raise KerastlError(f"the model has {len(model.inputs)} inputs; kerastl reads files into models with one")
    shape = tuple(None if d is None else int(d) for d in model.input.shape[1:])
    dtype = str(model.input.dtype)
    if "string" in dtype:
        return InputSpec("text", shape)
    if len(shape) == 1 and shape[0] is not None and "float" in dtype:
        from kerastl.modalities.audio import sample_rate_of

        rate = sample_rate_of(model)
        if rate is None:
            raise UndeclaredInput(
                f"the model takes {dtype} inputs of shape {shape} and nothing in it says they are waveforms "
                "(they may be feature vectors; kerastl does not guess from a shape): to use it as audio, put a "
                "kerastl.modalities.audio.Waveform(sample_rate) layer first, or give it a manifest with \"modality\": "
                "\"audio\" (a hub: module: append #modality=audio to the spec)"
            )
        return InputSpec("audio", shape, rate)
    if len(shape) == 3 and shape[2] in (1, 3) and None not in shape:
        return InputSpec("image", shape)
    raise KerastlError(f"the model takes {dtype} inputs of shape {shape}: neither images (H, W, 1 or 3), raw "
                       "waveforms (samples,) nor strings, so kerastl cannot read files into it")


def decoded_bytes(spec: InputSpec, files) -> int:
    """What `files` cost in memory once read for a model taking `spec`: 4 bytes per float32 pixel or sample,
    and for text the bytes of the texts (their file sizes, an upper bound of their UTF-8 without a BOM). The one
    estimate behind every in-memory decision (`fits_in_memory`)."""
    if spec.modality == "text":
        return sum(os.path.getsize(f) for f in files)
    per_example = 1
    for size in spec.shape:
        per_example *= int(size or 1)
    return 4 * per_example * len(files)


def fits_in_memory(spec: InputSpec, files) -> bool:
    """Whether `files`, read for `spec`, fit in `MEMORY_CACHE_BYTES` (read at call time, so it can be lowered)."""
    return decoded_bytes(spec, files) <= MEMORY_CACHE_BYTES


def _reader(spec: InputSpec):
    """`(read, signature)`: `read(path)` is a graph function giving one file's input as `load_inputs` gives it,
    of type `signature` (a tf.TensorSpec)."""
    import tensorflow as tf

    if spec.modality == "audio":
        from kerastl.modalities.audio import wav_reader

        return wav_reader(spec.sample_rate, spec.shape[0])
    if spec.modality == "text":
        from kerastl.modalities.text import text_reader

        return text_reader()
    size, channels = tuple(int(s) for s in spec.shape[:2]), int(spec.shape[2])
    return (lambda path: decode_image(path, size, channels)), tf.TensorSpec((*size, channels), tf.float32)


def read_batch(spec: InputSpec):
    """A graph function from a batch of file paths (tf.string, (batch,)) to the batch of their inputs, read as
    `load_inputs` reads them, bit for bit: what streams a training set too large for memory."""
    import tensorflow as tf

    read, signature = _reader(spec)
    return lambda paths: tf.map_fn(read, paths, fn_output_signature=signature)


def augmentation(spec: InputSpec):
    """The one augmentation of `spec`'s modality, `augment(batch, key) -> batch` (stateless, keyed on
    `augmentation_key(seed, epoch, batch)`): `augment_images`, or `kerastl.modalities.audio.augment_waveforms`.

    Raises:
        UsageError: text, which has no input augmentation (textcnn-l's word dropout is part of the model).
    """
    if spec.modality == "audio":
        from kerastl.modalities.audio import augment_waveforms

        return augment_waveforms
    if spec.modality == "text":
        raise UsageError("--augment applies to images and audio; text has no input augmentation (the word "
                         "dropout of textcnn-l is part of the model): drop --augment")
    return augment_images


def example_dataset(spec: InputSpec, files, labels, *, shuffle: bool = False, seed: int = 0,
                    in_memory: bool | None = None):
    """Unbatched `(input, label)` examples of `files` for a model taking `spec`, the shuffle buffer holding
    indices or paths, never decoded inputs.

    `in_memory=None` decides by `fits_in_memory`. In memory: every file is read once (`load_inputs`), and with
    `shuffle` a seeded permutation of their indices, new each pass, picks them. Otherwise the paths are shuffled
    the same way and each file is read after (`read_batch`'s reader), so memory stays at one shuffle buffer of
    paths and a few batches.
    """
    import numpy as np
    import tensorflow as tf

    labels = tf.constant(np.asarray(list(labels), "int32").reshape(-1))
    if in_memory is None:
        in_memory = fits_in_memory(spec, files)
    n = len(files)
    if in_memory:
        inputs = load_inputs(spec, files)
        inputs = tf.constant(list(inputs), tf.string) if spec.modality == "text" else tf.constant(inputs)
        pick = lambda i: (tf.gather(inputs, i), tf.gather(labels, i))
    else:
        read, _ = _reader(spec)
        paths = tf.constant([str(f) for f in files], tf.string)
        pick = lambda i: (read(tf.gather(paths, i)), tf.gather(labels, i))
    order = tf.data.Dataset.range(n)
    if shuffle:
        order = order.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    return order.map(pick, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def batched(spec: InputSpec, examples, *, batch_size: int, augment: bool = False, seed: int = 0,
            drop_remainder: bool = False):
    """`examples` (an `example_dataset`) batched, with `augment` the modality's `augmentation` keyed on
    `augmentation_key(seed, 0, batch)` (each pass of the dataset repeats it: fine-tuning itself trains through
    `training_examples`, whose keys follow the epoch), then prefetched.

    Raises:
        UsageError: `augment` for text.
    """
    import tensorflow as tf

    dataset = examples.batch(batch_size, drop_remainder=drop_remainder)
    if augment:
        augment_batch = augmentation(spec)
        dataset = dataset.enumerate().map(
            lambda i, batch: (augment_batch(batch[0], augmentation_key(seed, 0, i)), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def training_examples(spec: InputSpec, files, labels, *, augment: bool = False):
    """A training set as `kerastl.train.resume.epoch_batches` takes it: `(inputs, labels, transform)`.

    When the set fits in memory (`fits_in_memory`), `inputs` are the decoded examples and `transform` is the
    augmentation or None. Above it, `inputs` are the file paths, so each epoch's stateless permutation shuffles
    paths, and `transform` reads a batch of them (`read_batch`), then augments it. Both paths give the same
    batches bit for bit, augmentation included (one function per modality, keyed on (seed, epoch, batch)), so a
    resumed run repeats the uninterrupted one whichever path it takes.

    Raises:
        UsageError: `augment` for text.
    """
    import numpy as np

    augment_batch = augmentation(spec) if augment else None
    labels = np.asarray(list(labels), "int32")
    if fits_in_memory(spec, files):
        return load_inputs(spec, files), labels, augment_batch
    read = read_batch(spec)
    if augment_batch is None:
        transform = lambda paths, key: read(paths)
    else:
        transform = lambda paths, key: augment_batch(read(paths), key)
    return np.asarray([str(f) for f in files], dtype=object), labels, transform


def make_dataset(spec: InputSpec, files, labels, *, batch_size: int, shuffle: bool = False,
                 augment: bool = False, seed: int = 0):
    """The tf.data pipeline of `files` for a model taking `spec`: batches of `(inputs, label)`, examples in
    memory or streamed as `example_dataset` decides, augmented as `batched` says.

    Raises:
        UsageError: `augment` for text.
    """
    if augment:
        augmentation(spec)  # refuses text before anything is read
    examples = example_dataset(spec, files, labels, shuffle=shuffle, seed=seed)
    return batched(spec, examples, batch_size=batch_size, augment=augment, seed=seed)


def load_inputs(spec: InputSpec, files, *, batch_size: int = 64):
    """`files` read for a model taking `spec`, in order: a float32 array of pixels or waveforms, or a numpy
    array of strings."""
    if spec.modality == "audio":
        from kerastl.modalities.audio import load_waveforms

        return load_waveforms(files, sample_rate=spec.sample_rate, num_samples=spec.shape[0])
    if spec.modality == "text":
        from kerastl.modalities.text import load_texts

        return load_texts(files)
    return load_images(files, image_size=spec.shape[:2], channels=spec.shape[2], batch_size=batch_size)
