"""Built-in labelled text corpora that exist offline, for supervised pre-training of text backbones.

`corpus:NAME` sources of `kerastl pretrain`. Each is real text that ships with something installed here,
read without importing or executing anything, and labelled by where it came from:

* ``"python-docs"``: the docstrings of the Python standard library that runs kerastl (modules, classes and
  functions, read with `ast` from the `.py` files of `sysconfig`'s stdlib directory; test suites, IDLE and
  lib2to3 left out), split into paragraphs of at least 5 words, doctest lines dropped. The label of a
  paragraph is the top-level module it was written in (`email`, `asyncio`, `tarfile`, ...; leading
  underscores dropped, so `_pydecimal` counts as `pydecimal`), keeping modules with at least `min_per_class`
  paragraphs. It is English technical prose about a wide range of topics (networking, files, dates, maths,
  GUIs, concurrency, text processing), so the task is topic classification, and the corpus depends on the
  Python version (recorded in the description).
* ``"python-docs-files"``: the same paragraphs labelled by source file (`email/message`, `asyncio/events`, ...):
  finer topics, more classes.
* ``"python-docs-wide"``: python-docs plus the docstrings of the TensorFlow stack that `pip install kerastl`
  brings in (`WIDE_PACKAGES`: tensorflow, keras, tensorboard, tensorflow_datasets, ...), labelled by package
  directory up to three levels (`tensorflow/python/ops`, `keras/src/layers`), at most 1,500 paragraphs per
  label (a seeded sample). About 50,000 paragraphs in 213 classes with TensorFlow 2.21. NumPy, SciPy,
  Matplotlib, Pillow, click and scikit-learn are left out: tools/bench_fewshot_audio_text.py classifies their
  docstrings. The corpus depends on the installed versions, which the description lists.
* ``"python-docs-wide-files"``: the texts of python-docs-wide (all of them, no per-label sample) labelled by
  source file instead (`email/message`, `tensorflow/python/ops/linalg/linalg_impl`,
  `keras/src/layers/preprocessing/image_preprocessing/random_zoom`): about 1,500 fine topics with TensorFlow
  2.21 (files with at least `min_per_class` paragraphs, 10 by default; at most 400 per file, a seeded sample).
  Directory labels lump unrelated topics together (`tensorflow/python/ops` holds linear algebra, signal
  processing, image ops and statistics alike); the file labels keep them apart, as ImageNet's 1,000 fine
  classes do for images. A paragraph that several files repeat word for word (generated op wrappers, API
  re-exports) is kept once, under the first file in the walk's sorted order, so no text has two labels. The
  same six libraries are left out.
"""

from __future__ import annotations

import ast
import os
import platform
import re
import sysconfig
from pathlib import Path

from kerastl.errors import UsageError

CORPORA = {
    "python-docs": "paragraphs of the Python standard library's docstrings, labelled by top-level module",
    "python-docs-files": "the same paragraphs labelled by source file (finer topics, more classes)",
    "python-docs-wide": "python-docs plus the docstrings of the TensorFlow stack kerastl installs, labelled by "
                        "package directory",
    "python-docs-wide-files": "the texts of python-docs-wide labelled by source file (~1,500 fine topics)",
}
# The minimum number of paragraphs of a class when `corpus_examples` is not given one.
_DEFAULT_MIN_PER_CLASS = {"python-docs-wide-files": 10}
_MAX_PER_FILE = 400

# The packages of "python-docs-wide" beside the standard library: what `pip install kerastl` brings in through
# TensorFlow and Keras. NumPy, SciPy, Matplotlib, Pillow, click and scikit-learn are left out on purpose:
# tools/bench_fewshot_audio_text.py classifies their docstrings, which pre-training must not have seen.
WIDE_PACKAGES = ("tensorflow", "keras", "tensorboard", "tensorflow_datasets", "tensorflow_hub", "absl", "h5py",
                 "etils", "optree", "ml_dtypes", "joblib", "rich", "markdown", "werkzeug")
_MAX_PER_CLASS = 1500

_SKIPPED_DIRS = {"site-packages", "dist-packages", "idlelib", "lib2to3", "__pycache__", "test", "tests",
                 "unittest/test", "ensurepip", "turtledemo"}
_MIN_WORDS = 5


def _paragraphs(docstring: str):
    for block in re.split(r"\n\s*\n", docstring):
        lines = [line.strip() for line in block.splitlines()
                 if line.strip() and not line.strip().startswith((">>>", "..."))]
        text = " ".join(lines)
        if len(text.split()) >= _MIN_WORDS:
            yield text


def _python_docs(min_per_class: int, by_file: bool = False):
    root = Path(sysconfig.get_paths()["stdlib"])
    by_module: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith(("test", ".")))
        for filename in sorted(filenames):
            if not filename.endswith(".py") or filename.startswith("test_"):
                continue
            path = Path(dirpath) / filename
            relative = path.relative_to(root)
            if by_file:
                module = "/".join(part.lstrip("_") for part in relative.with_suffix("").parts)
            else:
                module = relative.parts[0].removesuffix(".py").lstrip("_")
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue  # a few stdlib files are deliberately not parseable (bad-syntax samples)
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    docstring = ast.get_docstring(node)
                    if docstring:
                        by_module.setdefault(module, []).extend(_paragraphs(docstring))
    classes = sorted(name for name, texts in by_module.items() if len(texts) >= min_per_class)
    texts, labels = [], []
    for label, name in enumerate(classes):
        texts += by_module[name]
        labels += [label] * len(by_module[name])
    unit = "source files" if by_file else "top-level modules"
    description = (f"{'python-docs-files' if by_file else 'python-docs'}: {len(texts)} docstring paragraphs of the "
                   f"Python {platform.python_version()} standard library, {len(classes)} classes ({unit} with >= "
                   f"{min_per_class} paragraphs)")
    return texts, labels, classes, description


def _package_docs(min_per_class: int):
    """Docstring paragraphs of `WIDE_PACKAGES` that are installed, labelled by package directory (at most three
    levels: `tensorflow/python/ops`, `keras/src/layers`), at most `_MAX_PER_CLASS` per label (a seeded sample)."""
    import importlib.util
    import random

    by_dir: dict[str, list[str]] = {}
    found = []
    for package in WIDE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        found.append(package)
        base = Path(next(iter(spec.submodule_search_locations)))
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith(("test", ".")))
            for filename in sorted(filenames):
                if not filename.endswith(".py") or "test" in filename:
                    continue
                path = Path(dirpath) / filename
                label = "/".join((package, *path.parent.relative_to(base).parts)[:3])
                try:
                    tree = ast.parse(path.read_text(encoding="utf-8"))
                except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                    continue
                for node in ast.walk(tree):
                    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                        docstring = ast.get_docstring(node)
                        if docstring:
                            by_dir.setdefault(label, []).extend(_paragraphs(docstring))
    rng = random.Random(0)
    for label, texts in by_dir.items():
        if len(texts) > _MAX_PER_CLASS:
            by_dir[label] = rng.sample(texts, _MAX_PER_CLASS)
    return {k: v for k, v in by_dir.items() if len(v) >= min_per_class}, found


def _docstring_paragraphs(path: Path):
    """The paragraphs of every docstring in the Python file `path` (module, classes, functions), or none when
    it does not parse."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node)
            if docstring:
                found.extend(_paragraphs(docstring))
    return found


def _source_files(base: Path, prefix: tuple, stdlib: bool):
    """`(label, path)` of the .py files under `base` in sorted walk order, the label being the file's path
    below `base` without `.py`, after `prefix` (leading underscores dropped in the standard library, as in
    python-docs-files). Test suites and the directories python-docs skips are left out."""
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith(("test", ".")))
        for filename in sorted(filenames):
            if not filename.endswith(".py") or (filename.startswith("test_") if stdlib else "test" in filename):
                continue
            path = Path(dirpath) / filename
            parts = path.relative_to(base).with_suffix("").parts
            if stdlib:
                parts = tuple(part.lstrip("_") for part in parts)
            yield "/".join((*prefix, *parts)), path


def _wide_files(min_per_class: int):
    """python-docs-wide-files: the standard library and `WIDE_PACKAGES`, labelled by source file."""
    import importlib.util
    import random

    bases = [(Path(sysconfig.get_paths()["stdlib"]), (), True)]
    found = []
    for package in WIDE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            found.append(package)
            bases.append((Path(next(iter(spec.submodule_search_locations))), (package,), False))
    by_file: dict[str, list[str]] = {}
    seen: set[str] = set()
    for base, prefix, stdlib in bases:
        for label, path in _source_files(base, prefix, stdlib):
            for text in _docstring_paragraphs(path):
                if text not in seen:  # word-for-word repeats (generated wrappers, re-exports): the first only
                    seen.add(text)
                    by_file.setdefault(label, []).append(text)
    rng = random.Random(0)
    texts, labels, classes = [], [], []
    for label in sorted(by_file):
        items = by_file[label]
        if len(items) < min_per_class:
            continue
        if len(items) > _MAX_PER_FILE:
            items = rng.sample(items, _MAX_PER_FILE)
        texts += items
        labels += [len(classes)] * len(items)
        classes.append(label)
    versions = _versions(found)
    description = (f"python-docs-wide-files: {len(texts)} docstring paragraphs of the Python "
                   f"{platform.python_version()} standard library and of {', '.join(versions)}, labelled by "
                   f"source file: {len(classes)} classes of >= {min_per_class} paragraphs (at most "
                   f"{_MAX_PER_FILE}), each paragraph once")
    return texts, labels, classes, description


def _versions(packages) -> list[str]:
    """"name version" of each installed package (the corpus depends on them), or the name alone."""
    from importlib import metadata

    versions = []
    for package in packages:
        try:
            versions.append(f"{package} {metadata.version(package.replace('_', '-'))}")
        except metadata.PackageNotFoundError:
            versions.append(package)
    return versions


def corpus_examples(name: str, *, min_per_class: int | None = None):
    """The labelled examples of corpus `name`: `(texts, labels, class_names, description)`, in a fixed order.

    `min_per_class`: the fewest paragraphs a class may have (default 30; 10 for python-docs-wide-files).

    Raises:
        UsageError: an unknown corpus name.
    """
    if name not in CORPORA:
        raise UsageError(f"unknown corpus '{name}'; use one of: {', '.join(sorted(CORPORA))}")
    if min_per_class is None:
        min_per_class = _DEFAULT_MIN_PER_CLASS.get(name, 30)
    if name == "python-docs-wide-files":
        return _wide_files(int(min_per_class))
    if name != "python-docs-wide":
        return _python_docs(int(min_per_class), by_file=name == "python-docs-files")
    texts, labels, classes, _ = _python_docs(int(min_per_class))
    packages, found = _package_docs(int(min_per_class))
    for name_, items in sorted(packages.items()):
        labels += [len(classes)] * len(items)
        texts += items
        classes.append(name_)
    versions = _versions(found)
    description = (f"python-docs-wide: {len(texts)} docstring paragraphs of the Python {platform.python_version()} "
                   f"standard library (labelled by module) and of {', '.join(versions)} (labelled by package "
                   f"directory), {len(classes)} classes of >= {min_per_class} paragraphs")
    return texts, labels, classes, description
