"""Guards against wrong inputs (issue 10, item 9): settings and models that would train into garbage, or train
on the wrong thing, are refused in one line or handled with the change said."""

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl.cli import main
from kerastl.errors import UsageError

from .conftest import one_line_error

# --------------------------------------------------------------------------- feature standardisation floor


def test_a_feature_constant_in_training_is_not_scaled_by_1e7():
    """A pooled feature that never moves over the training examples (a dead ReLU channel) and then moves by a
    typical amount comes out as a few standard units, not ~1e7 (Keras' own floor)."""
    import keras

    from kerastl.train.head import build_classifier

    inputs = keras.Input((3,))
    classifier = build_classifier(keras.Model(inputs, keras.layers.Identity()(inputs)), 2)
    rng = np.random.default_rng(0)
    features = rng.normal(0.0, 2.0, (5, 3))
    features[:, 0] = 0.0  # constant over the 5 training examples
    classifier.adapt(features)
    norm = classifier.model.get_layer("feature_norm")
    moved = np.array([[2.0, 0.0, 0.0]], "float32")  # the dead feature moves by a typical std (about 2)
    value = float(np.asarray(norm(moved))[0, 0])
    assert 0 < value <= 20, value  # 1 / kerastl.train.head.STD_FLOOR standard units at most; Keras alone gives 2e7
    # Features that vary are standardised exactly as before.
    out = np.asarray(norm(features.astype("float32")))
    np.testing.assert_allclose(out[:, 1:].std(axis=0), 1.0, atol=1e-4)


# --------------------------------------------------------------------------- --weights none


@pytest.mark.parametrize("strategy", ["head", "full", "top:2", "auto"])
def test_random_weights_with_a_pretrained_strategy_are_refused_on_the_cli(strategy, image_folder, tmp_path):
    result = CliRunner().invoke(main, ["finetune", "--data", str(image_folder), "--backbone",
                                       "keras:MobileNetV3Small", "--weights", "none", "--image-size", "32",
                                       "--strategy", strategy, "--epochs", "1", "--out", str(tmp_path / "out")])
    one_line_error(result, 2, "--weights none", f"--strategy {strategy}", "--from-scratch")
    assert not (tmp_path / "out").exists()


def test_random_weights_with_a_pretrained_strategy_are_refused_by_the_api(image_folder, tmp_path):
    from kerastl.core.records import Backbone
    from kerastl.train.finetune import FinetuneConfig, finetune

    from .conftest import make_tiny_backbone

    with pytest.raises(UsageError, match="--from-scratch"):
        finetune(image_folder, "keras:MobileNetV3Small", weights="none", config=FinetuneConfig(strategy="full"))
    # A Backbone loaded with random weights is refused the same way.
    random = Backbone(model=make_tiny_backbone(), spec="tiny", modality="image", input_shape=(16, 16, 3),
                      preprocessing={"mode": "scale"}, feature_width=16, weights="none")
    with pytest.raises(UsageError, match="random weights"):
        finetune(image_folder, random, config=FinetuneConfig(strategy="head", epochs=1))
    # With --from-scratch the same backbone trains.
    result = finetune(image_folder, random, config=FinetuneConfig(strategy="head", epochs=1, from_scratch=True))
    assert result.metrics["strategy"] == "from-scratch"


# --------------------------------------------------------------------------- pre-training keeps the caller's config


def _tiny_corpus(root):
    rng = np.random.default_rng(1)
    for topic in ("music", "travel"):
        (root / topic).mkdir(parents=True)
        for i in range(12):
            (root / topic / f"{i}.txt").write_text(" ".join(f"{topic}{j}" for j in rng.integers(0, 5, 6)))
    return root


def test_text_pretraining_leaves_the_callers_config_unchanged(tmp_path):
    """Text pre-trains in float32, decided on pretrain's own copy: the caller's `precision` stays "auto" (a
    config reused for an image run afterwards would otherwise silently lose its precision choice)."""
    import json

    from kerastl.pretraining.run import PretrainConfig, pretrain

    config = PretrainConfig(source=str(_tiny_corpus(tmp_path / "corpus")), arch="textcnn-s", epochs=1,
                            steps_per_epoch=2, batch_size=8, validation_steps=1, precision="auto",
                            jit_compile=False, deterministic=True, sequence_length=8, vocabulary_size=100)
    pretrain(config, tmp_path / "out", verbose=0)
    assert config.precision == "auto"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["pretraining"]["precision"] == "float32"
    with pytest.raises(UsageError, match="float32"):
        pretrain(PretrainConfig(**{**config.__dict__, "precision": "mixed"}), tmp_path / "out2", verbose=0)


# --------------------------------------------------------------------------- a loaded classifier's top


def _trunk():
    import keras

    inputs = keras.Input((16, 16, 3), name="pixels")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="trunk1")(inputs)
    return inputs, keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="trunk2")(x)


def _top(kind):
    """A classifier over `_trunk()` ending in each form published classifiers use."""
    import keras

    L = keras.layers
    inputs, x = _trunk()
    if kind == "pool-dense-softmax":  # keras.applications (include_top=True)
        out = L.Dense(5, activation="softmax", name="top")(L.Dropout(0.2)(L.GlobalAveragePooling2D()(x)))
    elif kind == "dense-then-softmax-layer":
        out = L.Activation("softmax", name="probs")(L.Dense(5, name="top")(L.GlobalAveragePooling2D()(x)))
    elif kind == "conv1x1-pool-softmax":  # SqueezeNet-style: no Dense at all
        out = L.Softmax(name="probs")(L.GlobalAveragePooling2D()(L.ReLU()(L.Conv2D(5, 1, name="top")(x))))
    else:  # keras.Sequential of the same pool-dense-softmax top
        return keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(8, 3, padding="same", name="trunk1"),
                                 L.Conv2D(6, 3, padding="same", name="trunk2"), L.GlobalAveragePooling2D(),
                                 L.Dense(5, name="top"), L.Softmax(name="probs")])
    return keras.Model(inputs, out)


@pytest.mark.parametrize("kind", ["pool-dense-softmax", "dense-then-softmax-layer", "conv1x1-pool-softmax",
                                  "sequential"])
def test_a_classifier_top_is_found_by_its_structure_and_cut_with_a_note(kind, tmp_path):
    from kerastl.backbones import load_backbone

    _top(kind).save(tmp_path / "classifier.keras")
    backbone = load_backbone(str(tmp_path / "classifier.keras"))
    names = [layer.name for layer in backbone.model.layers]
    # The features are the trunk's feature map, not the old class probabilities.
    assert names[-1] == "trunk2" and "top" not in names and backbone.feature_width == 6, names
    assert len(backbone.notes) == 1 and "'trunk2'" in backbone.notes[0] and "top" in backbone.notes[0]
    assert backbone.record()["notes"] == backbone.notes


def test_the_cut_top_is_printed_to_the_cli_user(image_folder, tmp_path):
    _top("conv1x1-pool-softmax").save(tmp_path / "classifier.keras")
    result = CliRunner().invoke(main, ["finetune", "--data", str(image_folder), "--backbone",
                                       str(tmp_path / "classifier.keras"), "--strategy", "head", "--epochs", "1",
                                       "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    note = next(line for line in result.output.splitlines() if line.startswith("note "))
    assert "cut the classifier top" in note and "'trunk2'" in note


def test_a_last_dense_without_softmax_is_a_projection_and_stays(tmp_path):
    import keras

    from kerastl.backbones import load_backbone

    inputs, x = _trunk()
    embedding = keras.layers.Dense(4, name="embedding")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, embedding).save(tmp_path / "embedder.keras")
    backbone = load_backbone(str(tmp_path / "embedder.keras"))
    assert backbone.model.layers[-1].name == "embedding" and backbone.feature_width == 4
    assert backbone.notes == []


def test_a_softmax_top_without_a_classifier_layer_is_refused_listing_cut_layers(image_folder, tmp_path):
    import keras

    from kerastl.backbones import load_backbone

    inputs, x = _trunk()  # trunk2 is a 3x3 convolution: not a classifier layer kerastl may cut off
    keras.Model(inputs, keras.layers.Softmax(name="probs")(keras.layers.GlobalAveragePooling2D(name="gap")(x))
                ).save(tmp_path / "odd.keras")
    with pytest.raises(UsageError, match="--cut LAYER") as error:
        load_backbone(str(tmp_path / "odd.keras"))
    assert "gap" in str(error.value) and "trunk2" in str(error.value)
    result = CliRunner().invoke(main, ["finetune", "--data", str(image_folder), "--backbone",
                                       str(tmp_path / "odd.keras"), "--epochs", "1", "--out", str(tmp_path / "o")])
    one_line_error(result, 2, "ends in a softmax", "--cut LAYER", "trunk2")
    # Naming the feature layer resolves it.
    assert load_backbone(str(tmp_path / "odd.keras"), cut="trunk2").feature_width == 6


# --------------------------------------------------------------------------- --cut inside nested models


def test_cut_reaches_layers_inside_a_nested_model(tmp_path):
    import keras

    from kerastl.backbones import load_backbone

    inputs, x = _trunk()
    inner = keras.Model(inputs, x, name="inner")
    outer_in = keras.Input((16, 16, 3), name="pixels")
    pooled = keras.layers.GlobalAveragePooling2D()(inner(outer_in))
    keras.Model(outer_in, keras.layers.Dense(3, activation="softmax")(pooled)).save(tmp_path / "nested.keras")
    for name in ("inner/trunk1", "trunk1"):  # as `kerastl inspect` lists it, or the bare unique name
        backbone = load_backbone(str(tmp_path / "nested.keras"), cut=name)
        assert backbone.feature_width == 8 and backbone.model.output.shape[1:] == (16, 16, 8), name
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    model = keras.saving.load_model(tmp_path / "nested.keras")
    expected = keras.Model(model.get_layer("inner").input, model.get_layer("inner").get_layer("trunk1").output)
    np.testing.assert_allclose(backbone.model.predict(images, verbose=0), expected.predict(images, verbose=0),
                               atol=1e-5)
    with pytest.raises(UsageError, match="no layer named"):
        load_backbone(str(tmp_path / "nested.keras"), cut="inner/nope")


# --------------------------------------------------------------------------- --from-scratch on a hub layer


def test_from_scratch_on_a_keras_file_holding_a_hub_layer_is_refused(tmp_path):
    """clone_model would rebuild the HubLayer from its config and restore the module's pretrained weights."""
    import keras
    import tensorflow as tf
    import tf_keras

    from kerastl.backbones import load_backbone
    from kerastl.backbones.hub_layer import HubLayer

    inputs = tf_keras.Input((8, 8, 3))
    conv = tf_keras.layers.Conv2D(4, 3)(inputs)
    tf.saved_model.save(tf_keras.Model(inputs, tf_keras.layers.GlobalAveragePooling2D()(conv)),
                        str(tmp_path / "module"))
    x = keras.Input((8, 8, 3))
    keras.Model(x, HubLayer(str(tmp_path / "module"), name="hub")(x)).save(tmp_path / "hub.keras")
    with pytest.raises(UsageError, match="--from-scratch .*TF-Hub module"):
        load_backbone(str(tmp_path / "hub.keras"), from_scratch=True, trust=True)
    assert load_backbone(str(tmp_path / "hub.keras"), trust=True).weights == "pretrained"
