"""The learning-rate range test (`kerastl.train.range_test`), `kerastl lr-find` (`kerastl.train.lr_find`) and
`--learning-rate auto` in finetune."""

import itertools
import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl.errors import UsageError
from kerastl.train.options import FinetuneConfig, HParams
from kerastl.train.range_test import (
    DIVERGENCE,
    check_range,
    exponential_rates,
    finds_rate,
    range_test,
    valley,
)
from tests.conftest import one_line_error


def _tiny_model(seed=0, dropout=0.2):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(dropout, seed=seed)(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _tiny_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype("int32")
    x = (rng.normal(0, 1, (n, 6)) + 2.0 * np.eye(3, 6)[y]).astype("float32")
    return x, y, None


def _adam(rate):
    import keras

    return keras.optimizers.Adam(rate)


def _sgd(rate):
    import keras

    return keras.optimizers.SGD(rate, momentum=0.9)


def _state(model):
    from kerastl.train.resume import _seed_generators

    return [v.numpy().copy() for v in model.weights] + [g.state.numpy().copy() for g in _seed_generators(model)]


def test_the_record_rises_and_restores_every_weight_exactly():
    model = _tiny_model()
    before = _state(model)
    test = range_test(model, _tiny_data(), optimizer=_adam, batch_size=16, lr_min=1e-6, lr_max=1.0, steps=40)
    after = _state(model)
    assert len(before) == len(after) and all(np.array_equal(a, b) for a, b in zip(before, after))
    assert test.lrs[0] == pytest.approx(1e-6) and all(b > a for a, b in itertools.pairwise(test.lrs))
    assert len(test.lrs) == len(test.losses) == len(test.raw_losses) <= 40
    assert test.suggestion in test.lrs and 1e-6 <= test.suggestion <= 1.0
    assert "valley" in test.rule
    record = json.loads(json.dumps(test.record()))
    assert record["suggestion"] == test.suggestion and record["steps"] == len(test.lrs)


def test_it_stops_once_the_loss_diverges():
    test = range_test(_tiny_model(), _tiny_data(), optimizer=_sgd, batch_size=16, lr_min=1e-4, lr_max=100.0,
                      steps=200)
    assert test.stopped == "diverged" and len(test.lrs) < 200
    last, best = test.losses[-1], min(test.losses)
    assert not math.isfinite(test.raw_losses[-1]) or last > DIVERGENCE * best
    # Before the last step the smoothed loss stayed within the bound.
    assert all(value <= DIVERGENCE * min(test.losses[: i + 1]) for i, value in enumerate(test.losses[:-1]))
    assert test.lrs[0] <= test.suggestion < test.lrs[-1]


def test_a_range_too_low_to_diverge_takes_every_step():
    test = range_test(_tiny_model(), _tiny_data(), optimizer=_adam, batch_size=16, lr_min=1e-7, lr_max=1e-5,
                      steps=20)
    assert test.stopped == "steps" and len(test.lrs) == 20
    assert test.lrs[-1] == pytest.approx(1e-5)


def test_the_batches_cycle_over_a_small_set():
    # 10 examples in batches of 4: 3 batches an epoch, so 30 steps pass over the set 10 times.
    x, y, _ = _tiny_data(n=10)
    test = range_test(_tiny_model(), (x, y, None), optimizer=_adam, batch_size=4, lr_min=1e-7, lr_max=1e-4,
                      steps=30)
    assert len(test.lrs) == 30


def test_exponential_rates_end_at_both_bounds():
    rates = exponential_rates(1e-7, 10.0, 100)
    assert rates[0] == pytest.approx(1e-7) and rates[-1] == pytest.approx(10.0)
    ratios = [b / a for a, b in itertools.pairwise(rates)]
    assert max(ratios) == pytest.approx(min(ratios))


def test_valley_picks_the_middle_of_the_longest_descent():
    lrs = exponential_rates(1e-6, 1.0, 100)
    # Flat, then falling from index 30 to 70, then rising: the valley is inside the descent.
    losses = [2.0] * 30 + list(np.linspace(2.0, 0.5, 40)) + list(np.linspace(0.6, 5.0, 30))
    suggestion = valley(lrs, losses)
    index = lrs.index(suggestion)
    assert 30 <= index < 70
    # fastai's index: first tenth dropped (10 points), descent of the trimmed curve from 20 to 59.
    assert index == 10 + 19 + int(40 / 3) + int(40 / 3 / 2)


def test_valley_of_a_curve_that_never_falls_is_its_first_rate():
    lrs = exponential_rates(1e-6, 1.0, 8)
    assert valley(lrs, [1.0 + i for i in range(8)]) == lrs[0]


@pytest.mark.parametrize("lr_min, lr_max, steps, match", [
    (0, 1.0, 100, "--lr-min must be in (0, 10]. Received: 0"),
    (-1e-3, 1.0, 100, "--lr-min"),
    (float("nan"), 1.0, 100, "--lr-min"),
    (1e-3, 1e-3, 100, "--lr-max must be above --lr-min"),
    (1e-3, 1e-4, 100, "--lr-max"),
    (1e-3, float("inf"), 100, "--lr-max"),
    (1e-3, 1000.0, 100, "--lr-max"),
    (1e-7, 10.0, 5, "--steps must be an integer in [10, 10000]. Received: 5"),
    (1e-7, 10.0, 2.5, "--steps"),
    (1e-7, 10.0, True, "--steps"),
])
def test_bad_ranges_are_refused_in_one_line(lr_min, lr_max, steps, match):
    with pytest.raises(UsageError, match=re.escape(match)):
        check_range(lr_min, lr_max, steps)
    with pytest.raises(UsageError):
        range_test(_tiny_model(), _tiny_data(), optimizer=_adam, batch_size=16, lr_min=lr_min, lr_max=lr_max,
                   steps=steps)


def test_an_empty_training_set_is_refused():
    x = np.zeros((0, 6), "float32")
    with pytest.raises(UsageError, match="training split is empty"):
        range_test(_tiny_model(), (x, np.zeros((0,), "int32"), None), optimizer=_adam, batch_size=4)


@pytest.mark.parametrize("value, ok", [("auto", True), (1e-3, True), (np.float32(0.01), True), (10, True),
                                       ("fast", False), ("AUTO", False), (0, False), (True, False),
                                       (float("nan"), False), (None, False)])
def test_learning_rate_takes_a_number_or_auto(value, ok):
    hparams = HParams(learning_rate=value)
    if ok:
        hparams.validate()
    else:
        with pytest.raises(UsageError, match=r"--learning-rate must be in \(0, 10\], or auto"):
            hparams.validate()


def test_which_phases_find_their_rate():
    assert finds_rate(HParams(learning_rate="auto"), "head") and finds_rate(HParams(learning_rate="auto"), "full")
    assert not finds_rate(HParams(learning_rate=0.01), "from-scratch")
    assert not finds_rate(HParams(), "head") and not finds_rate(HParams(), "full")


# ------------------------------------------------------------------------------------ finetune and the CLI


def test_finetune_auto_finds_a_rate_for_every_trained_phase(image_folder, tiny_backbone_path, tmp_path):
    from kerastl.reporting.text import finetune_summary_lines
    from kerastl.train.finetune import finetune

    config = FinetuneConfig(strategy="full", epochs=1, head_epochs=1, batch_size=8, learning_rate="auto")
    result = finetune(image_folder, str(tiny_backbone_path), config=config, out=tmp_path / "out", verbose=0)
    found = result.metrics["lr_find"]
    assert set(found) == {"head", "full"}
    for phase, record in found.items():
        assert record["phase"] == phase and record["lr_min"] <= record["suggestion"] <= record["lr_max_reached"]
        assert min(abs(rate - record["suggestion"]) for rate in record["lrs"]) < 1e-5 * record["suggestion"]
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["lr_find"]["full"]["suggestion"] == found["full"]["suggestion"]
    assert written["config"]["learning_rate"] == "auto"
    line = next(line for line in finetune_summary_lines(result) if line.startswith("learning rate"))
    assert "head" in line and "full" in line and "range test" in line


def test_finetune_at_a_fixed_rate_runs_no_range_test(image_folder, tiny_backbone_path):
    from kerastl.train.finetune import finetune

    config = FinetuneConfig(strategy="head", epochs=1, batch_size=8, learning_rate=0.01)
    assert finetune(image_folder, str(tiny_backbone_path), config=config, verbose=0).metrics["lr_find"] == {}


def test_a_probe_head_has_no_rate_to_find(image_folder, tiny_backbone_path):
    from kerastl.train.finetune import finetune

    config = FinetuneConfig(strategy="head", batch_size=8, learning_rate="auto", head_solver="probe")
    assert finetune(image_folder, str(tiny_backbone_path), config=config, verbose=0).metrics["lr_find"] == {}


def _invoke(*args):
    from kerastl.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("args, phase", [(["--strategy", "head"], "head"), (["--strategy", "top:1"], "top:1"),
                                         (["--from-scratch"], "from-scratch")])
def test_cli_lr_find_prints_the_suggestion_and_writes_both_files(args, phase, image_folder, tiny_backbone_path,
                                                                 tmp_path):
    out = tmp_path / "lr"
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    result = _invoke("lr-find", image_folder, "--backbone", tiny_backbone_path, "--batch-size", 8, "--steps", 30,
                     *args, "--out", out)
    assert result.exit_code == 0, result.output
    first = result.output.strip().splitlines()[0]
    assert first.startswith("suggested learning rate ") and f"for the {phase} phase" in first
    record = json.loads((out / "lr_find.json").read_text())
    assert record["phase"] == phase and record["range_test"]["steps"] <= 30
    assert f"{record['suggestion']:.2e}" in first
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "mine.txt").read_text() == "kept"


def test_the_library_function_restores_nothing_it_should_not_write(image_folder, tiny_backbone_path):
    from kerastl.train.lr_find import lr_find
    from kerastl.train.options import ModelOptions

    result = lr_find(image_folder, str(tiny_backbone_path), hparams=HParams(batch_size=8),
                     model_options=ModelOptions(strategy="head"), steps=20)
    assert result.files == {} and result.phase == "head"
    assert result.test.lrs[0] <= result.test.suggestion <= result.test.lrs[-1]


@pytest.mark.parametrize("args, code, match", [
    (["--lr-min", "0"], 2, "--lr-min"),
    (["--lr-min", "nan"], 2, "--lr-min"),
    (["--lr-max", "1e-8"], 2, "--lr-max must be above --lr-min"),
    (["--lr-min", "1e-2", "--lr-max", "1e-3"], 2, "--lr-max"),
    (["--steps", "5"], 2, "--steps"),
    (["--strategy", "sideways"], 2, "--strategy"),
    (["--batch-size", "0"], 2, "--batch-size"),
])
def test_cli_lr_find_bad_input_is_one_line(args, code, match, image_folder, tiny_backbone_path, tmp_path):
    result = _invoke("lr-find", image_folder, "--backbone", tiny_backbone_path, *args, "--out", tmp_path / "o")
    one_line_error(result, code, match)
    assert not (tmp_path / "o").exists()


def test_cli_lr_find_refuses_missing_data_and_a_file_as_out(image_folder, tiny_backbone_path, tmp_path):
    one_line_error(_invoke("lr-find", tmp_path / "nowhere", "--backbone", tiny_backbone_path), 1, "not found")
    one_line_error(_invoke("lr-find", "--backbone", tiny_backbone_path), 2, "DATA")
    target = tmp_path / "file"
    target.write_text("x")
    one_line_error(_invoke("lr-find", image_folder, "--backbone", tiny_backbone_path, "--out", target), 1,
                   "is a file")
    one_line_error(_invoke("lr-find", image_folder, "--backbone", "keras:MobileNetV2", "--weights", "none"), 2,
                   "--from-scratch")


@pytest.mark.parametrize("value", ["fast", "AUTO", "0", "-1", "nan", "11"])
def test_cli_finetune_learning_rate_must_be_a_rate_or_auto(value, tmp_path):
    one_line_error(_invoke("finetune", "--learning-rate", value, "--out", tmp_path / "o"), 2, "--learning-rate")


def test_cli_finetune_learning_rate_auto_says_so(image_folder, tiny_backbone_path, tmp_path):
    result = _invoke("finetune", "--data", image_folder, "--backbone", tiny_backbone_path, "--strategy", "head",
                     "--epochs", 1, "--batch-size", 8, "--learning-rate", "auto", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "found by the range test: head " in result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["lr_find"]["head"]["phase"] == "head"


@pytest.mark.parametrize("on", [True, False])
def test_from_scratch_at_the_default_rate_follows_the_measured_switch(on, monkeypatch):
    from kerastl.train import range_test as module

    monkeypatch.setattr(module, "SCRATCH_FINDS_RATE", on)
    assert finds_rate(HParams(), "from-scratch") is on
    assert not finds_rate(HParams(learning_rate=2e-3), "from-scratch")  # a rate given is a rate kept
    assert not finds_rate(HParams(), "head") and not finds_rate(HParams(), "full")


def test_finetune_from_scratch_records_its_found_rate(image_folder, tiny_backbone_path):
    from kerastl.train.finetune import finetune

    config = FinetuneConfig(from_scratch=True, strategy="full", epochs=1, batch_size=8, learning_rate="auto")
    found = finetune(image_folder, str(tiny_backbone_path), config=config, verbose=0).metrics["lr_find"]
    assert list(found) == ["from-scratch"] and found["from-scratch"]["rule"].startswith("valley")
