"""Class-per-folder directories: what files a folder holds (`scan_folder`, `FolderScan`, `detect_modality`),
and the files that fail to decode or exceed a limit of their input type (`decode_error`, `drop_undecodable`,
asking the modality), listed with the reason; `printable_path` for names that are not UTF-8.

A data directory holds one subfolder per class; the folder names are the class names (sorted, so the order
is reproducible). Hidden files and folders are ignored, as are files of other types; files that fail to
decode or exceed a size limit (`kerastl.inputs.image.MAX_IMAGE_PIXELS`, ...) are skipped. All of them are listed with the reason
(`FolderScan.skipped`, the report's `skipped`). An empty class folder, fewer than two classes, or a class
with no readable file stop the run with one line.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kerastl.core import modality as modalities
from kerastl.errors import KerastlError


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


def decode_error(path, modality: str = "image") -> str | None:
    """Why `path` cannot be read as a file of `modality`, or None (`Modality.decode_error`: damaged, or over a
    limit of its input type such as `kerastl.inputs.image.MAX_IMAGE_PIXELS`)."""
    return modalities.get(modality).decode_error(path)


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
