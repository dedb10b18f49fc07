"""Budgets in optimizer steps, the warmup + cosine learning rate, and early stopping that restores the best
epoch (`kerastl.train.schedule`)."""

from __future__ import annotations

import numpy as np
import pytest

from kerastl.train.schedule import (
    DEFAULT_EPOCHS,
    MIN_STEPS,
    budget,
    learning_rate,
    patience,
    restore_best_callback,
)


def test_small_sets_get_the_step_floor_and_large_ones_the_epoch_floor():
    small = budget(40, 32)  # 2 steps an epoch
    assert (small.epochs, small.steps) == (MIN_STEPS // 2, MIN_STEPS)
    large = budget(4000, 32)  # 125 steps an epoch
    assert large.epochs == DEFAULT_EPOCHS and large.steps == 1250
    assert budget(40, 32, epochs=3).epochs == 3 and budget(40, 32, epochs=3).rule == "--epochs 3"
    assert budget(40, 32, min_steps=7).epochs == DEFAULT_EPOCHS
    assert patience(150) == 38 and patience(10) == 5


def test_the_learning_rate_warms_up_then_falls_to_zero():
    schedule = learning_rate(1e-3, 300)
    assert schedule.warmup_steps == 15
    values = [float(schedule(step)) for step in (0, 15, 150, 300)]
    assert values[0] == 0 and values[1] == pytest.approx(1e-3) and 0 < values[2] < 1e-3
    assert values[3] == pytest.approx(0, abs=1e-9)
    assert learning_rate(1e-3, 300, "constant") == 1e-3


def _overfitting_run(directory, epochs, initial_epoch=0, model=None):
    """A linear model fitted to noise: the validation loss improves for a few epochs, then rises."""
    import keras

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 30)).astype("float32"), rng.integers(0, 2, 16)
    vx, vy = rng.normal(size=(64, 30)).astype("float32"), rng.integers(0, 2, 64)
    if model is None:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    best = restore_best_callback(model, patience_epochs=3, directory=directory)
    history = model.fit(x, y, validation_data=(vx, vy), epochs=epochs, initial_epoch=initial_epoch, verbose=0,
                        callbacks=[best], shuffle=False)
    return model, best, history


def test_early_stopping_ends_on_the_best_epochs_weights(tmp_path):
    model, best, history = _overfitting_run(None, 40)
    losses = history.history["val_loss"]
    record = best.record()
    assert record["best_epoch"] == int(np.argmin(losses)) + 1 and record["best"] == pytest.approx(min(losses))
    assert len(losses) < 40  # it stopped
    # The weights are those of the best epoch: re-evaluating gives its loss.
    rng = np.random.default_rng(0)
    rng.normal(size=(16, 30)), rng.integers(0, 2, 16)
    val_x, val_y = rng.normal(size=(64, 30)).astype("float32"), rng.integers(0, 2, 64)
    assert model.evaluate(val_x, val_y, verbose=0) == pytest.approx(min(losses), rel=1e-4)


def test_a_resumed_phase_restores_the_best_epoch_from_the_backup(tmp_path):
    model, best, _history = _overfitting_run(tmp_path, 40)
    best_epoch = best.record()["best_epoch"]
    assert (tmp_path / "kerastl-best.json").is_file()
    # A new process resumes after the best epoch: it never improves on the recorded best, so it must put back
    # the best weights from the backup directory.
    import keras

    resumed = keras.models.clone_model(model)
    resumed.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    noise = np.random.default_rng(1)
    # Far from anything good (equal weights would tie the two classes, a loss of log 2, better than the best).
    resumed.set_weights([w + 10 * noise.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    _, again, _ = _overfitting_run(tmp_path, best_epoch + 2, initial_epoch=best_epoch + 1, model=resumed)
    assert again.record()["best_epoch"] == best_epoch
    for a, b in zip(resumed.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b)
