"""Guards against wrong inputs (issue 10, item 9): settings and models that would train into garbage, or train
on the wrong thing, are refused in one line or handled with the change said."""

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl.cli import main
from kerastl.errors import KerastlError, UsageError

from .conftest import one_line_error


# --------------------------------------------------------------------------- feature standardisation floor


def test_a_feature_constant_in_training_is_not_scaled_by_1e7():
    """A pooled feature that never moves over the training examples (a dead ReLU channel) and then moves by a
    typical amount comes out as a few standard units, not ~1e7 (Keras' own floor)."""
    import keras

    from kerastl.head import build_classifier

    inputs = keras.Input((3,))
    classifier = build_classifier(keras.Model(inputs, keras.layers.Identity()(inputs)), 2)
    rng = np.random.default_rng(0)
    features = rng.normal(0.0, 2.0, (5, 3))
    features[:, 0] = 0.0  # constant over the 5 training examples
    classifier.adapt(features)
    norm = classifier.model.get_layer("feature_norm")
    moved = np.array([[2.0, 0.0, 0.0]], "float32")  # the dead feature moves by a typical std (about 2)
    value = float(np.asarray(norm(moved))[0, 0])
    assert 0 < value <= 20, value  # 1 / kerastl.head.STD_FLOOR standard units at most; Keras alone gives 2e7
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
    from kerastl.backbones import Backbone
    from kerastl.finetuning import FinetuneConfig, finetune

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

    from kerastl.pretraining import PretrainConfig, pretrain

    config = PretrainConfig(source=str(_tiny_corpus(tmp_path / "corpus")), arch="textcnn-s", epochs=1,
                            steps_per_epoch=2, batch_size=8, validation_steps=1, precision="auto",
                            jit_compile=False, deterministic=True, sequence_length=8, vocabulary_size=100)
    pretrain(config, tmp_path / "out", verbose=0)
    assert config.precision == "auto"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["pretraining"]["precision"] == "float32"
    with pytest.raises(UsageError, match="float32"):
        pretrain(PretrainConfig(**{**config.__dict__, "precision": "mixed"}), tmp_path / "out2", verbose=0)
