"""The classical baseline every fine-tuning run fits beside the network (`kerastl.train.baseline`,
`Modality.classical_features`), and how metrics.json and the summary report it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import wavfile

from kerastl.core.records import InputSpec
from kerastl.train.baseline import classical_baseline

from .test_probe import _digits
from .test_text import make_text_folder


def _files_and_labels(root):
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = sorted(f for f in root.rglob("*") if f.is_file())
    return files, [classes.index(f.parent.name) for f in files]


def _split(files, labels, per_class):
    train, held = [], []
    seen = {}
    for f, y in zip(files, labels):
        seen[y] = seen.get(y, 0) + 1
        (train if seen[y] <= per_class else held).append((f, y))
    return [f for f, _ in train], [y for _, y in train], [f for f, _ in held], [y for _, y in held]


def test_pixels_baseline_on_real_digits(tmp_path):
    files, labels = _files_and_labels(_digits(tmp_path, 20))
    train_f, train_y, held_f, held_y = _split(files, labels, 10)
    record = classical_baseline(InputSpec("image", (28, 28, 1)), train_f, train_y, held_f, held_y, seed=0)
    assert record["method"] == "pixels + logistic regression" and record["evaluated_on"] == len(held_f)
    # Logistic regression on scikit-learn's digits' pixels is far above chance (10%) at 10 per class.
    assert record["accuracy"] > 0.6


def test_log_spectrum_baseline_tells_low_from_high_tones(tmp_path):
    rate, rng = 16000, np.random.default_rng(0)
    for name, base in (("low", 300.0), ("high", 3000.0)):
        (tmp_path / name).mkdir()
        for i in range(8):
            t = np.arange(rate) / rate
            clip = 0.3 * np.sin(2 * np.pi * base * (1 + 0.1 * rng.random()) * t) + 0.01 * rng.normal(size=rate)
            wavfile.write(tmp_path / name / f"{i}.wav", rate, (clip * 32767).astype(np.int16))
    files, labels = _files_and_labels(tmp_path)
    train_f, train_y, held_f, held_y = _split(files, labels, 4)
    from kerastl.core.modality import get

    spec = InputSpec("audio", (rate,), rate)
    train_x, _ = get("audio").classical_features(spec, train_f, held_f)
    assert train_x.shape == (8, 80)  # the mean and std of 40 bands
    record = classical_baseline(spec, train_f, train_y, held_f, held_y)
    assert record["method"] == "log-spectrum statistics + logistic regression" and record["accuracy"] == 1.0


def test_tfidf_baseline_is_sparse_and_reads_the_words(tmp_path):
    import scipy.sparse

    from kerastl.core.modality import get

    files, labels = _files_and_labels(make_text_folder(tmp_path, per_class=10))
    train_f, train_y, held_f, held_y = _split(files, labels, 5)
    train_x, held_x = get("text").classical_features(InputSpec("text", ()), train_f, held_f)
    assert scipy.sparse.issparse(train_x) and train_x.shape[0] == len(train_f) and held_x.shape[0] == len(held_f)
    record = classical_baseline(InputSpec("text", ()), train_f, train_y, held_f, held_y)
    assert record["method"] == "TF-IDF + logistic regression" and record["accuracy"] > 0.5


def test_nothing_to_evaluate_or_one_class_gives_none(tmp_path):
    files, labels = _files_and_labels(_digits(tmp_path, 3))
    spec = InputSpec("image", (28, 28, 1))
    assert classical_baseline(spec, files, labels, [], []) is None
    assert classical_baseline(spec, files[:3], [0, 0, 0], files[3:5], [0, 0]) is None


def test_finetune_reports_the_baseline_and_whether_transfer_beat_it(tmp_path):
    import kerastl
    from kerastl.reporting.text import finetune_summary_lines

    data = _digits(tmp_path, 12)
    result = kerastl.finetune(data, None, config=kerastl.FinetuneConfig(strategy="head", shots=5, epochs=2,
                                                                        seed=0), verbose=0)
    base = result.metrics["baseline"]
    assert base["method"] == "pixels + logistic regression" and base["evaluated_on"] == result.metrics["n"]
    assert base["margin"] == pytest.approx(result.metrics["accuracy"] - base["accuracy"], abs=1e-6)
    line = next(x for x in finetune_summary_lines(result) if x.startswith("baseline"))
    assert "on the same split" in line and ("beat it" in line or "a tie" in line)
    off = kerastl.finetune(data, None, config=kerastl.FinetuneConfig(strategy="head", shots=5, epochs=1,
                                                                     baseline=False), verbose=0)
    assert off.metrics["baseline"] is None


def test_log_spectrum_statistics_below_16_khz_stop_at_nyquist():
    from kerastl.inputs.audio import band_statistics

    noise = np.random.default_rng(0).normal(size=(2, 8000)).astype("float32") * 0.1
    assert band_statistics(noise, sample_rate=8000).shape == (2, 80)
