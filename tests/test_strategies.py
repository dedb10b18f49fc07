"""Each strategy is checked by which weights changed after training, through the public `finetune` API."""

import numpy as np
import pytest

from kerastl.errors import UsageError
from kerastl.train.finetune import FinetuneConfig, finetune
from kerastl.train.strategies import AUTO_FULL_MIN_PER_CLASS, parse_strategy, resolve_auto

WEIGHTED = ["conv1", "bn1", "conv2", "bn2", "conv3"]


def _snapshot(model):
    """{layer: {weight path: value}} for the backbone's weighted layers and the new output layer."""
    backbone = model.get_layer("backbone")
    out = {}
    for name in WEIGHTED:
        layer = backbone.get_layer(name)
        out[name] = {w.name: np.array(w.numpy()) for w in layer.weights}
    out["predictions"] = {w.name: np.array(w.numpy()) for w in model.get_layer("predictions").weights}
    return out


def _initial(tiny_backbone_path):
    import keras

    model = keras.saving.load_model(tiny_backbone_path)
    return {name: {w.name: np.array(w.numpy()) for w in model.get_layer(name).weights} for name in WEIGHTED}


def _changed(before, after, name, weight):
    return not np.allclose(before[name][weight], after[name][weight], atol=0, rtol=0)


def _run(image_folder, tiny_backbone_path, strategy, **overrides):
    config = FinetuneConfig(strategy=strategy, epochs=2, head_epochs=1, batch_size=8, learning_rate=1e-2,
                            **overrides)
    return finetune(image_folder, str(tiny_backbone_path), config=config, verbose=0)


@pytest.mark.parametrize("strategy, trained", [
    ("head", []),
    ("full", WEIGHTED),
    ("top:2", ["bn2", "conv3"]),
    ("top:3", ["conv2", "bn2", "conv3"]),
])
def test_strategy_trains_exactly_the_expected_layers(image_folder, tiny_backbone_path, strategy, trained):
    before = _initial(tiny_backbone_path)
    result = _run(image_folder, tiny_backbone_path, strategy)
    after = _snapshot(result.model)
    assert result.metrics["strategy"] == strategy
    # The new layer starts at zeros (kerastl.train.head) and trains in every strategy.
    for weight, value in after["predictions"].items():
        assert np.abs(value).max() > 1e-4, f"{strategy}: predictions/{weight} did not train"
    for name in WEIGHTED:
        for weight in before[name]:
            if weight in ("moving_mean", "moving_variance"):
                # BatchNorm statistics never change, in any strategy.
                assert not _changed(before, after, name, weight), f"{strategy}: {name}/{weight} moved"
            elif name in trained:
                assert _changed(before, after, name, weight), f"{strategy}: {name}/{weight} did not train"
            else:
                assert not _changed(before, after, name, weight), f"{strategy}: {name}/{weight} changed"


def test_head_trains_the_new_layer(image_folder, tiny_backbone_path):
    """The head alone learns the separable patterns: its loss falls and it classifies well above chance (1/3);
    a head that never trained stays at zeros and predicts one class for every image."""
    from kerastl.data import load_images

    result = _run(image_folder, tiny_backbone_path, "head")
    history = result.metrics["history"]
    assert [row["phase"] for row in history] == ["head", "head"]
    assert history[-1]["loss"] < 0.8 * history[0]["loss"], history
    assert np.abs(result.model.get_layer("predictions").kernel.numpy()).max() > 1e-3
    files, labels = [], []
    for index, name in enumerate(result.class_names):
        paths = sorted(str(p) for p in (image_folder / name).iterdir())
        files += paths
        labels += [index] * len(paths)
    probabilities = result.model.predict(load_images(files, image_size=(16, 16), channels=3), verbose=0)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == np.asarray(labels)))
    assert accuracy >= 0.8, accuracy


def test_full_runs_head_phase_then_lower_learning_rate(image_folder, tiny_backbone_path):
    result = _run(image_folder, tiny_backbone_path, "full", schedule="constant")
    phases = [row["phase"] for row in result.metrics["history"]]
    assert phases == ["head", "full", "full"]
    # The second phase ran at learning_rate * fine_tune_factor (1e-2 * 0.1).
    assert float(result.model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_the_cosine_schedule_warms_up_to_the_phase_rate_and_ends_at_zero(image_folder, tiny_backbone_path):
    import keras

    result = _run(image_folder, tiny_backbone_path, "full")
    schedule = result.model.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    full = result.metrics["phases"]["full"]["budget"]
    assert full["epochs"] == 2 and full["rule"] == "--epochs 2"
    # Its peak is the full phase's rate, 1e-2 * 0.1 (no warmup: 5% of 8 steps rounds to 0).
    assert schedule.warmup_steps == 0 and float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(full["steps"])) == pytest.approx(0.0, abs=1e-9)


def test_from_scratch_reinitialises_and_trains_batchnorm_statistics(image_folder, tiny_backbone_path):
    before = _initial(tiny_backbone_path)
    result = _run(image_folder, tiny_backbone_path, "head", from_scratch=True)
    after = _snapshot(result.model)
    assert result.metrics["strategy"] == "from-scratch" and result.metrics["backbone"]["weights"] == "none"
    # BatchNorm learns its statistics as usual.
    assert _changed(before, after, "conv1", "kernel")
    assert _changed(before, after, "bn1", "moving_mean")
    # Fresh initial weights, not the pretrained ones (training alone would change the kernel too).
    from kerastl.backbones import load_backbone

    fresh = load_backbone(str(tiny_backbone_path), from_scratch=True).model
    assert not np.allclose(fresh.get_layer("conv1").kernel.numpy(), before["conv1"]["kernel"])
    assert not fresh.get_layer("bn1").moving_mean.numpy().any()  # reset to 0, not the pretrained statistics


def test_layer_patterns_choose_what_trains(image_folder, tiny_backbone_path):
    before = _initial(tiny_backbone_path)
    result = _run(image_folder, tiny_backbone_path, "full", frozen_layers=["conv*"])
    after = _snapshot(result.model)
    assert not _changed(before, after, "conv1", "kernel")
    assert not _changed(before, after, "conv3", "kernel")
    assert _changed(before, after, "bn1", "gamma")


def test_bad_pattern_is_an_error(image_folder, tiny_backbone_path):
    with pytest.raises(UsageError, match="matches no layer"):
        _run(image_folder, tiny_backbone_path, "full", trainable_layers=["nothing_like_this*"])


def test_patterns_with_head_are_refused_before_training(image_folder, tiny_backbone_path, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UsageError, match="layer patterns apply to full and top:N"):
        finetune(image_folder, str(tiny_backbone_path), out=out, verbose=0,
                 config=FinetuneConfig(strategy="head", trainable_layers=["conv*"], epochs=1))
    assert not out.exists()  # nothing was trained or written


def test_check_patterns():
    from kerastl.train.options import ModelOptions
    from kerastl.train.phases import check_patterns

    patterns = ModelOptions(frozen_layers=["conv*"])
    for allowed in (parse_strategy("full"), parse_strategy("top:2"), None):
        check_patterns(allowed, patterns)
    check_patterns(parse_strategy("head"), ModelOptions())
    with pytest.raises(UsageError, match="only the new layer"):
        check_patterns(parse_strategy("head"), patterns)


def test_top_n_larger_than_backbone_is_an_error(image_folder, tiny_backbone_path):
    with pytest.raises(UsageError, match="exceeds"):
        _run(image_folder, tiny_backbone_path, "top:99")


@pytest.mark.parametrize("text", ["", "top", "top:0", "top:-1", "tail:3", "full ", "FULL"])
def test_parse_strategy(text):
    if text.strip().lower() in ("full",):
        assert parse_strategy(text).kind == "full"
    else:
        with pytest.raises(UsageError, match="--strategy"):
            parse_strategy(text)


def test_auto_rule():
    auto = parse_strategy("auto")
    assert resolve_auto(auto, AUTO_FULL_MIN_PER_CLASS - 1).kind == "head"
    assert resolve_auto(auto, AUTO_FULL_MIN_PER_CLASS).kind == "full"
    assert resolve_auto(parse_strategy("top:2"), 1).kind == "top"


def test_auto_resolves_from_examples_per_class(image_folder, tiny_backbone_path, monkeypatch):
    import kerastl.train.strategies

    monkeypatch.setattr(kerastl.train.strategies, "AUTO_FULL_MIN_PER_CLASS", 4)
    result = _run(image_folder, tiny_backbone_path, "auto", shots=3)
    assert result.metrics["strategy"] == "head"
    assert "3 training examples" in result.metrics["auto_rule"]
    result = _run(image_folder, tiny_backbone_path, "auto", shots=4)
    assert result.metrics["strategy"] == "full"


def test_cached_features_give_the_same_model_as_the_slow_path(image_folder, tiny_backbone_path):
    """Option 1 on cached features equals a plain frozen `fit`, within float tolerance."""
    common = dict(strategy="head", epochs=3, batch_size=8, learning_rate=1e-2, dropout=0.0, shuffle=False)
    fast = finetune(image_folder, str(tiny_backbone_path), config=FinetuneConfig(**common), verbose=0)
    slow = finetune(image_folder, str(tiny_backbone_path),
                    config=FinetuneConfig(cache_features=False, **common), verbose=0)
    assert "feature_cache_seconds" in fast.metrics["timing"]
    assert "feature_cache_seconds" not in slow.metrics["timing"]
    np.testing.assert_allclose(fast.model.get_layer("predictions").kernel.numpy(),
                               slow.model.get_layer("predictions").kernel.numpy(), atol=1e-4)
    x = np.random.default_rng(0).uniform(0, 255, (6, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(fast.model.predict(x, verbose=0), slow.model.predict(x, verbose=0), atol=1e-4)


def test_augmentation_trains_on_cached_views_unless_the_cache_is_off(image_folder, tiny_backbone_path):
    result = _run(image_folder, tiny_backbone_path, "head", augment=True, augment_views=2)
    assert "feature_cache_seconds" in result.metrics["timing"] and "view_cache_seconds" in result.metrics["timing"]
    result = _run(image_folder, tiny_backbone_path, "head", augment=True, cache_features=False)
    assert "feature_cache_seconds" not in result.metrics["timing"]


def test_sgd_with_momentum(image_folder, tiny_backbone_path):
    result = _run(image_folder, tiny_backbone_path, "full", optimizer="sgd")
    assert result.metrics["config"]["optimizer"] == "sgd"
    assert type(result.model.optimizer).__name__ == "SGD" and float(result.model.optimizer.momentum) == 0.9
    losses = [row["loss"] for row in result.metrics["history"]]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


@pytest.mark.slow
def test_kill_during_finetune_resumes_to_the_same_weights(tmp_path, image_folder, tiny_backbone_path):
    """kill -9 in the middle of Option 2's second phase, the same command again: it resumes from the last epoch
    backup and, in deterministic mode, ends with exactly the weights of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys

    import keras

    def command(out):
        return [sys.executable, "-m", "kerastl.cli", "finetune", "--data", str(image_folder), "--backbone",
                str(tiny_backbone_path), "--strategy", "full", "--head-epochs", "2", "--epochs", "4",
                "--batch-size", "4", "--augment", "--seed", "7", "--deterministic", "--out", str(out)]

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    reference = subprocess.run(command(tmp_path / "uninterrupted"), capture_output=True, text=True, env=env, check=False)
    assert reference.returncode == 0, reference.stdout + reference.stderr

    out = tmp_path / "interrupted"
    first = subprocess.Popen(command(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in first.stdout:
        seen.append(line)
        if line.startswith("Epoch 3/4"):  # full-phase epochs 1 and 2 are backed up
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, "".join(seen)
    assert not (out / "model.keras").exists()  # nothing half-written
    second = subprocess.run(command(out), capture_output=True, text=True, env=env, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Epoch 1/4" not in second.stdout and "Epoch 3/4" in second.stdout, second.stdout
    assert not (out / ".kerastl-backup").exists()
    a = keras.saving.load_model(tmp_path / "uninterrupted" / "model.keras")
    b = keras.saving.load_model(out / "model.keras")
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy(), err_msg=wa.path)


def test_new_layer_starts_at_zero_on_a_pretrained_backbone_random_from_scratch():
    import keras

    from kerastl.train.head import build_classifier

    inputs = keras.Input((6,))
    backbone = keras.Model(inputs, keras.layers.Dense(5, name="features")(inputs))
    kernel = build_classifier(backbone, 3, seed=0).predictions.kernel.numpy()
    assert kernel.shape == (5, 3) and not kernel.any()
    scratch = build_classifier(backbone, 3, seed=0, zero_init=False).predictions.kernel.numpy()
    np.testing.assert_allclose(scratch, keras.initializers.GlorotUniform(seed=0)((5, 3)).numpy())
