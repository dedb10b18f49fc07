"""The built-in text corpora (`kerastl.pretraining.corpora`): python-docs-wide-files on a tiny fake standard library and
package (fast, offline), and on the real one (slow)."""

import pytest

from kerastl.errors import UsageError
from kerastl.pretraining import corpora


def _module(path, *docstrings):
    """A Python file whose module, and one function per further docstring, carry `docstrings`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'"""{docstrings[0]}"""', ""]
    for i, doc in enumerate(docstrings[1:]):
        lines += [f"def f{i}():", f'    """{doc}"""', ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _paragraphs(topic, n):
    return [f"Paragraph {i} about {topic} and nothing else." for i in range(n)]


@pytest.fixture
def fake_sources(tmp_path, monkeypatch):
    """A 'standard library' with two modules and an installed package `fakepkg` with nested files; never
    imported."""
    stdlib = tmp_path / "stdlib"
    _module(stdlib / "_alpha.py", *_paragraphs("alpha", 4))
    _module(stdlib / "email" / "message.py", *_paragraphs("mail", 3))
    _module(stdlib / "test_skipped.py", *_paragraphs("tests", 5))
    _module(stdlib / "tests" / "inner.py", *_paragraphs("tests", 5))
    site = tmp_path / "site"
    package = site / "fakepkg"
    _module(package / "__init__.py", "The fake package for the corpus tests only.")
    _module(package / "ops" / "linalg" / "solve.py", *_paragraphs("matrices", 3),
            "Paragraph 0 about alpha and nothing else.")  # repeats a stdlib paragraph word for word
    _module(package / "ops" / "signal" / "fft.py", *_paragraphs("spectra", 12))
    _module(package / "ops" / "test_util.py", *_paragraphs("tests", 5))
    (package / "broken.py").write_text("def (:\n", encoding="utf-8")  # does not parse: skipped
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(corpora.sysconfig, "get_paths", lambda: {"stdlib": str(stdlib)})
    monkeypatch.setattr(corpora, "WIDE_PACKAGES", ("fakepkg", "not_installed_anywhere"))
    monkeypatch.setattr(corpora, "_MAX_PER_FILE", 10)


def test_wide_files_labels_by_source_file(fake_sources):
    texts, labels, classes, description = corpora.corpus_examples("python-docs-wide-files", min_per_class=3)
    assert classes == ["alpha", "email/message", "fakepkg/ops/linalg/solve", "fakepkg/ops/signal/fft"]
    assert len(texts) == len(labels)
    by_class = {name: [t for t, y in zip(texts, labels) if y == i] for i, name in enumerate(classes)}
    # The linear-algebra and signal-processing files of one directory are separate classes.
    assert all("matrices" in t for t in by_class["fakepkg/ops/linalg/solve"])
    assert all("spectra" in t for t in by_class["fakepkg/ops/signal/fft"])
    # A repeated paragraph is kept once, under the first file (the standard library is walked first).
    assert len(set(texts)) == len(texts)
    assert len(by_class["alpha"]) == 4 and len(by_class["fakepkg/ops/linalg/solve"]) == 3
    # At most `_MAX_PER_FILE` per file; test files and test directories left out.
    assert len(by_class["fakepkg/ops/signal/fft"]) == 10
    assert not any("tests" in t for t in texts)
    assert "labelled by source file" in description and "4 classes" in description
    # The same call gives the same examples in the same order.
    assert corpora.corpus_examples("python-docs-wide-files", min_per_class=3)[0] == texts


def test_wide_files_default_minimum_and_unknown_name(fake_sources):
    # Default minimum: 10 paragraphs, so only the signal file is left.
    _, _, classes, _ = corpora.corpus_examples("python-docs-wide-files")
    assert classes == ["fakepkg/ops/signal/fft"]
    with pytest.raises(UsageError, match="python-docs-wide-files"):
        corpora.corpus_examples("python-docs-wide-file")


@pytest.mark.slow
def test_real_wide_files_corpus_keeps_the_benchmark_libraries_out():
    texts, labels, classes, description = corpora.corpus_examples("python-docs-wide-files")
    assert len(classes) > 1000 and len(texts) == len(labels) > 40000
    benchmark = ("numpy", "scipy", "matplotlib", "PIL", "click", "sklearn")
    assert not [c for c in classes if c.split("/")[0] in benchmark]
    assert {"email/message", "tensorflow/python/ops/linalg/linalg_impl"} <= set(classes)
    assert len(set(texts)) == len(texts)
    assert "tensorflow" in description
