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
}

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


def corpus_examples(name: str, *, min_per_class: int = 30):
    """The labelled examples of corpus `name`: `(texts, labels, class_names, description)`, in a fixed order.

    Raises:
        UsageError: an unknown corpus name.
    """
    if name not in CORPORA:
        raise UsageError(f"unknown corpus '{name}'; use one of: {', '.join(sorted(CORPORA))}")
    if name != "python-docs-wide":
        return _python_docs(int(min_per_class), by_file=name == "python-docs-files")
    texts, labels, classes, _ = _python_docs(int(min_per_class))
    packages, found = _package_docs(int(min_per_class))
    for name_, items in sorted(packages.items()):
        labels += [len(classes)] * len(items)
        texts += items
        classes.append(name_)
    versions = []
    from importlib import metadata

    for package in found:
        try:
            versions.append(f"{package} {metadata.version(package.replace('_', '-'))}")
        except metadata.PackageNotFoundError:
            versions.append(package)
    description = (f"python-docs-wide: {len(texts)} docstring paragraphs of the Python {platform.python_version()} "
                   f"standard library (labelled by module) and of {', '.join(versions)} (labelled by package "
                   f"directory), {len(classes)} classes of >= {min_per_class} paragraphs")
    return texts, labels, classes, description
