"""Class-per-folder directories: what files a folder holds (`scan_folder`, `FolderScan`, `detect_modality`),
the limits on what one file may cost to read, and the files that fail to decode (`decode_error`,
`drop_undecodable`), listed with the reason; `printable_path` for names that are not UTF-8.

A data directory holds one subfolder per class; the folder names are the class names (sorted, so the order
is reproducible). Hidden files and folders are ignored, as are files of other types; files that fail to
decode or exceed a size limit (`MAX_IMAGE_PIXELS`, ...) are skipped. All of them are listed with the reason
(`FolderScan.skipped`, the report's `skipped`). An empty class folder, fewer than two classes, or a class
with no readable file stop the run with one line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kerastl.core import modality as modalities
from kerastl.errors import KerastlError

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


def detect_modality(root) -> str | None:
    """The input type of a class-per-folder directory: the registered modality (`kerastl.core.modality`) whose
    file extensions are the most common in it, or None when it holds none of them."""
    counts = {modality.name: 0 for modality in modalities.all_modalities()}
    for _, _, names in os.walk(root):
        for name in names:
            found = None if name.startswith(".") else modalities.of_path(name)
            if found is not None:
                counts[found.name] += 1
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def check_data_type(root, modality: str, *, subject: str, fix: str) -> None:
    """The same-input-type rule for data given to an existing model: `root` must hold files of `modality`.

    Raises:
        KerastlError: one line, "ROOT holds X files but SUBJECT; FIX" (for instance subject "the model takes
            image input", fix "evaluate it on a folder of image files").
    """
    found = detect_modality(root)
    if found is not None and found != modality:
        raise KerastlError(f"{root} holds {found} files but {subject}; {fix}")


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
    extensions = modalities.get(modality).extensions
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


def image_error(path) -> str | None:
    """Why the image at `path` cannot be decoded (over `MAX_IMAGE_PIXELS` by its header, damaged), or None."""
    path = Path(path)
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

    limit = f"over the {MAX_IMAGE_PIXELS / 1e6:g}-megapixel limit (kerastl.data.folders.MAX_IMAGE_PIXELS); downscale it"
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
    """Why `path` cannot be read as a file of `modality`, or None (`Modality.decode_error`; see the limits at the
    top of the module)."""
    return modalities.get(modality).decode_error(path)


def text_size_error(path) -> str | None:
    """Why the text file at `path` is too large to read (over `MAX_TEXT_BYTES`), or None."""
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    if size > MAX_TEXT_BYTES:
        return f"text of {size / 2**20:.0f} MiB, over the {MAX_TEXT_BYTES >> 20} MiB limit " \
               "(kerastl.data.folders.MAX_TEXT_BYTES); split it"
    return None


def wav_header_error(path) -> str | None:
    """Why the WAV file at `path` would cost too much to read (a sample rate below `MIN_AUDIO_SAMPLE_RATE`, or
    longer than `MAX_AUDIO_SECONDS`), from its header and size, or None. Headers this cannot parse are left to
    the WAV reader, which names the problem."""
    import struct

    path = Path(path)
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
                        "(kerastl.data.folders.MAX_AUDIO_SECONDS); cut it into clips")
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
