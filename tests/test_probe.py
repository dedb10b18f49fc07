"""Option 1's head fitted as a cross-validated linear probe (`kerastl.train.probe`, `head_solver="probe"`)."""

from __future__ import annotations

import numpy as np
import pytest

from kerastl.train.probe import C_GRID, fit_probe


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _blobs(classes=3, per_class=6, width=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, width)) * 2
    x = np.concatenate([centres[c] + rng.normal(size=(per_class, width)) for c in range(classes)])
    y = np.repeat(np.arange(classes), per_class)
    return x, y


def test_the_kernel_and_bias_are_the_logistic_regression_it_chose():
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs()
    fit = fit_probe(x, y, 3, seed=0)
    assert fit.folds == 5 and fit.c in C_GRID and set(fit.cv_by_c) == set(C_GRID)
    # The chosen C has the lowest mean held-out log-loss.
    assert fit.cv_by_c[fit.c] == min(fit.cv_by_c.values())
    reference = LogisticRegression(C=fit.c, max_iter=2000, random_state=0).fit(x, y)
    np.testing.assert_allclose(_softmax(x @ fit.kernel + fit.bias), reference.predict_proba(x), atol=1e-5)
    record = fit.record()
    assert record["chosen_by"] == "cross-validation" and 0 <= record["cv_accuracy_mean"] <= 1


def test_two_classes_give_the_sigmoid_as_a_two_way_softmax():
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(classes=2)
    fit = fit_probe(x, y, 2)
    reference = LogisticRegression(C=fit.c, max_iter=2000, random_state=0).fit(x, y)
    np.testing.assert_allclose(_softmax(x @ fit.kernel + fit.bias), reference.predict_proba(x), atol=1e-5)


def test_a_class_without_examples_never_wins_and_one_example_means_no_cross_validation():
    x, y = _blobs(classes=3, per_class=1)
    fit = fit_probe(x, y, 4, default_c=1.0)
    assert fit.folds == 0 and fit.c == 1.0 and fit.cv_accuracy is None
    assert fit.record()["chosen_by"].startswith("default")
    assert (np.argmax(x @ fit.kernel + fit.bias, axis=1) != 3).all()
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_probe(x[:1], y[:1], 3)


def _digits(root, per_class):
    """A few of scikit-learn's digits per class, as a class-per-folder set."""
    import shutil

    from kerastl.data import digits_folder

    source = digits_folder(root / "all")
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (root / "few" / folder.name).mkdir(parents=True)
        for file in sorted(folder.iterdir())[:per_class]:
            shutil.copy(file, root / "few" / folder.name / file.name)
    return root / "few"


def test_finetune_head_probe_puts_the_solution_in_the_saved_dense_layer(tmp_path):
    import keras

    import kerastl
    from kerastl.data import input_spec, load_inputs

    data = _digits(tmp_path, 12)
    config = kerastl.FinetuneConfig(strategy="head", shots=6, head_solver="probe", epochs=2, seed=1)
    result = kerastl.finetune(data, None, out=tmp_path / "out", config=config, verbose=0)
    fit = result.metrics["head_fit"]
    assert fit["folds"] == 5 and fit["l2_c"] in C_GRID
    # No optimizer epochs were run for the head.
    assert [row for row in result.metrics["history"] if row["phase"] == "head"] == []
    loaded = keras.saving.load_model(tmp_path / "out" / "model.keras")
    kernel, bias = loaded.get_layer("predictions").get_weights()
    np.testing.assert_allclose(kernel, result.model.get_layer("predictions").get_weights()[0])
    # The saved model predicts the softmax of the Dense layer on the standardised pooled features.
    files = sorted((data / "3").iterdir())[:4]
    inputs = load_inputs(input_spec(loaded), files)
    norm = loaded.get_layer("feature_norm")
    pooled = keras.Model(loaded.input, norm.input).predict(inputs, verbose=0)
    z = np.asarray(norm(pooled)) @ kernel + bias
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), _softmax(z), atol=1e-4)


def test_full_starts_from_the_probe_head(tmp_path):
    import kerastl

    data = _digits(tmp_path, 6)
    config = kerastl.FinetuneConfig(strategy="full", shots=4, head_solver="probe", epochs=1, seed=0)
    result = kerastl.finetune(data, None, config=config, verbose=0)
    assert result.metrics["head_fit"]["folds"] == 4
    assert [row["phase"] for row in result.metrics["history"]] == ["full"]


def test_the_cli_takes_head_solver(tmp_path):
    import json

    from click.testing import CliRunner

    from kerastl.cli import main

    data = _digits(tmp_path, 6)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["finetune", "--data", str(data), "--strategy", "head", "--shots", "4",
                                       "--head-solver", "probe", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["head_fit"]["folds"] == 4
    # With --augment the probe fits on the cached augmented views (tests/test_views.py), so only the API's
    # cache_features=False (tests/test_options.py) is refused; a bad view count is refused in one line.
    bad = CliRunner().invoke(main, ["finetune", "--data", str(data), "--head-solver", "probe", "--augment",
                                    "--augment-views", "0", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--augment-views" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "bad").exists()
