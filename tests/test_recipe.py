"""The fine-tuning recipe's regularisers: label smoothing (`kerastl.train.losses`), layer-wise learning-rate
decay (`kerastl.train.optimizers`) and mixup / cutmix (`kerastl.inputs.image.mix_images`,
`kerastl.train.mixing`)."""

import json
import zipfile

import keras
import numpy as np
import pytest

from kerastl.core.records import InputSpec
from kerastl.errors import UsageError
from kerastl.inputs.image import mix_images
from kerastl.train.finetune import finetune
from kerastl.train.losses import SoftTargetCrossentropy, loss_and_metrics, soft_accuracy
from kerastl.train.mixing import batch_mixer
from kerastl.train.optimizers import layer_factors, saveable, with_layer_decay
from kerastl.train.options import FinetuneConfig, HParams, ModelOptions

from .conftest import finetune_cli

# ------------------------------------------------------------------------------------------------ loss


def test_hard_labels_keep_keras_sparse_loss():
    assert loss_and_metrics(HParams()) == ("sparse_categorical_crossentropy", ["accuracy"])
    loss, metrics = loss_and_metrics(HParams(label_smoothing=0.1))
    assert isinstance(loss, SoftTargetCrossentropy) and metrics[0].name == "accuracy"
    assert isinstance(loss_and_metrics(FinetuneConfig(mixup=0.2))[0], SoftTargetCrossentropy)


def test_soft_target_loss_matches_keras_on_each_label_form():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], "float32")
    labels = np.array([0, 2])
    one_hot = keras.ops.one_hot(labels, 3)
    sparse = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    np.testing.assert_allclose(SoftTargetCrossentropy()(labels, probabilities), sparse, rtol=1e-6)
    np.testing.assert_allclose(SoftTargetCrossentropy()(labels[:, None], probabilities), sparse, rtol=1e-6)
    smoothed = keras.losses.CategoricalCrossentropy(label_smoothing=0.3)(one_hot, probabilities)
    np.testing.assert_allclose(SoftTargetCrossentropy(0.3)(labels, probabilities), smoothed, rtol=1e-6)
    # Smoothing by hand: (1 - s) * target + s / classes.
    target = 0.7 * np.eye(3)[labels] + 0.1
    by_hand = -(target * np.log(probabilities)).sum(axis=1).mean()
    np.testing.assert_allclose(SoftTargetCrossentropy(0.3)(labels, probabilities), by_hand, rtol=1e-5)
    soft = np.array([[0.6, 0.4, 0.0], [0.0, 0.25, 0.75]], "float32")
    np.testing.assert_allclose(SoftTargetCrossentropy()(soft, probabilities),
                               -(soft * np.log(probabilities)).sum(axis=1).mean(), rtol=1e-5)
    np.testing.assert_array_equal(soft_accuracy(labels, probabilities), [1.0, 1.0])
    np.testing.assert_array_equal(soft_accuracy(np.array([[0.4, 0.6, 0], [0, 0, 1]], "float32"), probabilities),
                                  [0.0, 1.0])
    with pytest.raises(UsageError, match="label_smoothing must be in"):
        SoftTargetCrossentropy(1.0)


# ------------------------------------------------------------------------------------------------ layer decay


def _tiny(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="low")(inputs)
    x = keras.layers.Dense(4, name="middle")(x)
    x = keras.layers.Dense(4, name="high")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    head = keras.layers.Dense(2, name="predictions")
    model = keras.Model(inputs, head(backbone(inputs)))
    return model, backbone


def _one_step(optimizer_factory, decay):
    model, backbone = _tiny()
    optimizer = with_layer_decay(optimizer_factory(), backbone, decay)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    grads = [keras.ops.ones(v.shape) for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    return {v.path: before[v.path] - v.numpy() for v in model.trainable_variables}


def test_layer_decay_scales_each_units_sgd_step_by_decay_to_its_depth():
    steps = _one_step(lambda: keras.optimizers.SGD(0.1), 0.5)
    depth = {"high": 1, "middle": 2, "low": 3, "predictions": 0}
    for path, step in steps.items():
        # The gradient is 1 everywhere, so an SGD step is exactly the variable's learning rate.
        np.testing.assert_allclose(step, 0.1 * 0.5 ** depth[path.split("/")[-2]], rtol=1e-6)
    plain = _one_step(lambda: keras.optimizers.SGD(0.1), None)
    assert all(np.allclose(v, 0.1) for v in plain.values())


def test_layer_decay_scales_adam_and_a_scheduled_rate():
    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=10)
    decayed = _one_step(lambda: keras.optimizers.Adam(schedule), 0.8)
    plain = _one_step(lambda: keras.optimizers.Adam(schedule), None)
    assert float(np.abs(plain["predictions/kernel"]).min()) > 0
    ratio = {path: float(np.mean(decayed[path] / plain[path])) for path in plain}
    assert ratio["low/kernel"] == pytest.approx(0.8 ** 3, rel=1e-5)
    assert ratio["high/bias"] == pytest.approx(0.8, rel=1e-5)
    assert ratio["predictions/kernel"] == pytest.approx(1.0, rel=1e-6)


def test_layer_factors_count_frozen_units_and_skip_their_variables():
    _, backbone = _tiny()
    backbone.get_layer("low").trainable = False
    factors = {variable.path: factor for variable, factor in layer_factors(backbone, 0.5)}
    assert factors == {"high/kernel": 0.5, "high/bias": 0.5, "middle/kernel": 0.25, "middle/bias": 0.25}


def test_layer_decay_model_fits_and_saves_without_kerastl_compile_objects(tmp_path):
    model, backbone = _tiny()
    model.compile(optimizer=with_layer_decay(keras.optimizers.Adam(1e-3), backbone, 0.7),
                  loss=SoftTargetCrossentropy(0.1), metrics=loss_and_metrics(HParams(label_smoothing=0.1))[1])
    x, y = np.random.default_rng(0).normal(size=(8, 3)).astype("float32"), np.arange(8) % 2
    model.fit(x, y, epochs=1, verbose=0)
    plain = saveable(model)
    assert plain is not model and not plain.compiled
    plain.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        config = json.loads(archive.read("config.json"))
    assert not config.get("compile_config") and "kerastl>" not in json.dumps(config)
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "m.keras").predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)
    uncompiled, _ = _tiny()
    assert saveable(uncompiled) is uncompiled
    uncompiled.compile(optimizer="adam", loss=SoftTargetCrossentropy(0.1))  # the loss alone
    assert saveable(uncompiled) is not uncompiled
    uncompiled.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert saveable(uncompiled) is uncompiled


# ------------------------------------------------------------------------------------------------ mixing


def _batch(n=6, side=8):
    images = np.stack([np.full((side, side, 3), 10.0 * (i + 1), "float32") for i in range(n)])
    return images, np.eye(n, dtype="float32")  # example i is class i: a mixed row names both sources


def test_mixup_is_a_convex_combination_with_matching_labels():
    images, targets = _batch()
    key = np.array([3, 4], "int64")
    mixed, labels = (t.numpy() for t in mix_images(images, targets, key, kind="mixup", alpha=0.4))
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
    for i in range(len(images)):
        expected = (labels[i][:, None, None, None] * images).sum(axis=0)
        np.testing.assert_allclose(mixed[i], expected, rtol=1e-5)
    again = mix_images(images, targets, key, kind="mixup", alpha=0.4)[0].numpy()
    np.testing.assert_array_equal(mixed, again)
    assert not np.array_equal(mixed, mix_images(images, targets, np.array([3, 5]), kind="mixup", alpha=0.4)[0])


def test_cutmix_pastes_a_box_whose_area_is_the_partners_label_weight():
    images, targets = _batch(side=16)
    for seed in range(5):
        mixed, labels = (t.numpy() for t in mix_images(images, targets, np.array([seed, 1]), kind="cutmix",
                                                       alpha=1.0))
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
        for i in range(len(images)):
            values = mixed[i, :, :, 0]
            own = np.mean(values == images[i, 0, 0, 0])
            assert labels[i, i] == pytest.approx(own, abs=1e-6) or labels[i, i] == pytest.approx(1.0)
            for j in np.flatnonzero(labels[i]):
                assert np.mean(values == images[j, 0, 0, 0]) == pytest.approx(labels[i, j], abs=1e-6)
            box = values != images[i, 0, 0, 0]
            if box.any():  # one axis-aligned rectangle
                rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
                assert box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()


def test_mixing_refuses_bad_arguments_and_other_modalities():
    images, targets = _batch()
    with pytest.raises(UsageError, match="must be one of"):
        mix_images(images, targets, np.array([0, 0]), kind="blend", alpha=1.0)
    with pytest.raises(UsageError, match="--mixup must be above 0"):
        mix_images(images, targets, np.array([0, 0]), kind="mixup", alpha=0.0)
    import tensorflow as tf

    with pytest.raises(UsageError, match="2-D images"):
        mix_images(tf.zeros((4, 100)), tf.eye(4), np.array([0, 0]), kind="cutmix", alpha=1.0)
    for spec in (InputSpec(modality="text", shape=()), InputSpec(modality="audio", shape=(800,), sample_rate=8000)):
        with pytest.raises(UsageError, match=f"^--cutmix blends images, not .*drop --cutmix for {spec.modality}"):
            batch_mixer(spec, HParams(cutmix=1.0), 3)
    assert batch_mixer(InputSpec(modality="image", shape=(8, 8, 3)), HParams(), 3) is None


def test_mixed_batches_depend_only_on_seed_epoch_and_batch():
    """A phase resumed at epoch 1 mixes epoch 1's batches as the uninterrupted phase did."""
    from kerastl.train.resume import epoch_batches

    images, _ = _batch(n=8)
    labels = np.arange(8) % 4
    mix = batch_mixer(InputSpec(modality="image", shape=(8, 8, 3)), HParams(mixup=0.5, cutmix=1.0, seed=3), 4)

    def batches(first):
        data = epoch_batches(images, labels, batch_size=4, seed=3, first_epoch=first, epochs=3)
        return [(x.numpy(), y.numpy()) for x, y in mix(data, first_epoch=first, steps_per_epoch=2)]

    whole, resumed = batches(0), batches(1)
    assert len(whole) == 6 and len(resumed) == 4
    for (x, y), (rx, ry) in zip(whole[2:], resumed):
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)
    assert all(y.shape == (4, 4) and np.allclose(y.sum(axis=1), 1) for _, y in whole)


# ------------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize("settings, message", [
    (dict(label_smoothing=1.0), "--label-smoothing must be in [0, 1). Received: 1.0"),
    (dict(label_smoothing=float("nan")), "--label-smoothing must be in [0, 1)"),
    (dict(label_smoothing="x"), "--label-smoothing must be in [0, 1). Received: x"),
    (dict(layer_decay=0.0), "--layer-decay must be in (0, 1]. Received: 0.0"),
    (dict(layer_decay=1.5), "--layer-decay must be in (0, 1]"),
    (dict(mixup=-0.1), "--mixup must be a number >= 0 (0: off). Received: -0.1"),
    (dict(cutmix=float("inf")), "--cutmix must be a number >= 0"),
    (dict(mixup=0.2, head_solver="probe"), "--head-solver probe fits the head on cached features, which --mixup"),
    (dict(layer_decay=0.8, strategy="head"), "--layer-decay sets the backbone's learning rates in full and top:N"),
    (dict(layer_decay=0.8, from_scratch=True), "Received: --from-scratch"),
])
def test_bad_recipe_settings_are_named(settings, message):
    with pytest.raises(UsageError) as error:
        FinetuneConfig(**settings).validate()
    assert message in str(error.value)


# ------------------------------------------------------------------------------------------------ runs


@pytest.mark.parametrize("settings", [dict(mixup=0.4, label_smoothing=0.1), dict(cutmix=1.0, layer_decay=0.8)])
def test_finetune_runs_with_mixing(image_folder, tiny_backbone_path, tmp_path, settings):
    from kerastl.train.evaluate import load_classifier

    result = finetune(image_folder, str(tiny_backbone_path), out=tmp_path / "out", verbose=0,
                      hparams=HParams(epochs=2, batch_size=8, baseline=False, **settings),
                      model_options=ModelOptions(strategy="full"))
    phases = [row["phase"] for row in result.metrics["history"]]
    assert phases == ["head", "head", "full", "full"]
    assert all(np.isfinite(row["loss"]) and "accuracy" in row and "val_accuracy" in row
               for row in result.metrics["history"])
    # The feature cache is off: the head trained through the backbone, on mixed batches.
    assert "feature_statistics_seconds" in result.metrics["timing"]
    assert {key: result.metrics["config"][key] for key in settings} == settings
    with zipfile.ZipFile(tmp_path / "out" / "model.keras") as archive:
        assert not json.loads(archive.read("config.json")).get("compile_config")
    model, names = load_classifier(tmp_path / "out")
    assert len(names) == 3 and model.output.shape[-1] == 3


def test_cli_finetune_with_the_recipe_flags(image_folder, tiny_backbone_path, tmp_path):


    out = finetune_cli(image_folder, tiny_backbone_path, tmp_path / "out", "--strategy", "top:2", "--epochs", "1",
                       "--batch-size", "8", "--label-smoothing", "0.1", "--layer-decay", "0.8", "--mixup", "0.2",
                       "--cutmix", "0.5")
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert (config["label_smoothing"], config["layer_decay"], config["mixup"], config["cutmix"]) == (
        0.1, 0.8, 0.2, 0.5)
