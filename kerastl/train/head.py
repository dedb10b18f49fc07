"""The new output layer: pooling → feature standardisation → dropout → `Dense(num_classes, name="predictions")`.

As in keras-hub, the backbone knows nothing about the task; the head is added on top of it. The head's layers
are plain objects shared by two models:

- `Classifier.model`: raw pixels → backbone → head, the model that is trained end to end and saved;
- `Classifier.head_model`: pooled features → head, which Option 1 trains on cached features so that the
  frozen backbone runs once instead of every epoch (see `kerastl.train.finetune`).

Training either one trains the same weights.

On a pretrained backbone the new Dense layer starts from zero weights rather than random ones: with few
examples the training features span only a few directions of the feature space, and random weights along the
others are never trained away, adding noise to every prediction on new inputs (a head on frozen 320-wide text
features, 5 examples per class in tools/bench_fewshot_audio_text.py: 43.5% accuracy from random weights,
49.2% from zeros). Zero is where logistic regression starts, and Big Transfer (Kolesnikov et al., 2020)
zero-initialises its new heads too. A network trained from scratch keeps the usual random (Glorot) start,
since its features move with the head (`zero_init=False`).

The standardisation is a fixed `Normalization` of the pooled features, adapted once on the training
features (`Classifier.adapt`, each standard deviation floored at `STD_FLOOR` of the typical one); it is not
trained. Linear probes standardise features for the same reason
(scikit-learn's StandardScaler before LogisticRegression): pretrained features come in very different scales,
and a single Dense layer trained for a few hundred steps learns far better on standardised ones. Until it is
adapted it is the identity.
"""

from __future__ import annotations

import dataclasses

from kerastl.errors import UsageError

POOLINGS = ("avg", "max")


@dataclasses.dataclass
class Classifier:
    """A backbone with a new output layer.

    Attributes:
        model: raw pixels → class probabilities (softmax).
        backbone: the backbone model, nested in `model` under the name "backbone".
        feature_model: raw pixels → pooled features (the backbone and the pooling layer).
        head_model: pooled features → class probabilities (dropout and the new Dense layer).
    """

    model: object
    backbone: object
    feature_model: object
    head_model: object

    @property
    def predictions(self):
        return self.model.get_layer("predictions")

    def adapt(self, features) -> None:
        """Sets the feature standardisation from pooled training features (N, width).

        Each feature's standard deviation is floored at `STD_FLOOR` times the median standard deviation of the
        features that vary (see `feature_variance`), so that a feature constant over the training examples is
        not scaled up by ~1e7 when it moves at test time or under Option 2.
        """
        import numpy as np

        features = np.asarray(features, dtype="float64")
        norm = self.model.get_layer("feature_norm")
        # Assigned rather than `Normalization.adapt()`, which builds a tf.data pipeline for an in-memory array.
        norm.adapt_mean.assign(features.mean(axis=0).reshape(norm.adapt_mean.shape).astype("float32"))
        norm.adapt_variance.assign(feature_variance(features).reshape(norm.adapt_variance.shape).astype("float32"))
        norm.finalize_state()  # models compiled after this use the new statistics


# A feature's standard deviation is at least this share of the typical (median) one. Keras' Normalization
# divides by max(std, 1e-7): a pooled feature that is constant over a handful of training examples (a dead
# ReLU channel, common at 1-5 shots) would be multiplied by ~1e7 as soon as it moves, at test time or when
# Option 2 trains the backbone. Floored, such a feature moving by a typical amount reaches at most
# 1 / STD_FLOOR = 10 standard units, the scale of an outlier rather than of an overflow.
STD_FLOOR = 0.1


def feature_variance(features):
    """Per-feature variances of `features` (N, width) with the floor described at `STD_FLOOR`.

    The typical scale is the median standard deviation of the features that vary; if none varies (e.g. one
    example), it is the mean absolute feature value, else 1.
    """
    import numpy as np

    features = np.asarray(features, dtype="float64")
    std = features.std(axis=0)
    varying = std[std > 0]
    if varying.size:
        typical = float(np.median(varying))
    else:
        typical = float(np.abs(features).mean()) if features.size else 0.0
        typical = typical if typical > 0 else 1.0
    return np.maximum(std, STD_FLOOR * typical) ** 2


def check_head_options(*, pooling: str, dropout: float) -> None:
    """Checks the head's options as `build_classifier` takes them (`ModelOptions.validate` checks them before
    any loading or training).

    Raises:
        UsageError: an unknown pooling, or a dropout outside [0, 1), with what was received.
    """
    if pooling not in POOLINGS:
        raise UsageError(f"pooling must be one of {POOLINGS}. Received: pooling={pooling}")
    if not 0.0 <= float(dropout) < 1.0:
        raise UsageError(f"dropout must be in [0, 1). Received: dropout={dropout}")


def build_classifier(backbone_model, num_classes: int, *, pooling: str = "avg", dropout: float = 0.2,
                     seed: int | None = None, zero_init: bool = True) -> Classifier:
    """Keeps every layer of `backbone_model` and adds a new output layer sized for `num_classes`.

    Args:
        backbone_model: a Keras model from raw pixels to features (a feature map, pooled here, or a vector).
        num_classes: the number of classes, at least 2.
        pooling: "avg" or "max" global pooling of a feature map.
        dropout: dropout rate before the new layer, in [0, 1).
        seed: seeds the dropout (and the new layer's random initialiser without `zero_init`), for
            reproducible runs.
        zero_init: start the new layer's weights at zero (a pretrained backbone); False: Glorot-uniform random
            weights (a network trained from scratch).

    Raises:
        UsageError: fewer than 2 classes, an unknown pooling, or a dropout outside [0, 1).
    """
    import keras

    if int(num_classes) < 2:
        raise UsageError(f"a classifier needs at least 2 classes. Received: num_classes={num_classes}")
    check_head_options(pooling=pooling, dropout=dropout)

    rank = len(backbone_model.output.shape)
    if rank == 4:
        pool = (keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D)(
            name="pool")
    elif rank == 3:
        pool = (keras.layers.GlobalAveragePooling1D if pooling == "avg" else keras.layers.GlobalMaxPooling1D)(
            name="pool")
    elif rank == 2:
        pool = None
    else:
        raise UsageError(f"backbone output must be a feature map or a vector. Received: shape "
                         f"{tuple(backbone_model.output.shape)}")
    # Adaptable statistics, built as mean 0 and variance 1: the identity until `Classifier.adapt`.
    norm = keras.layers.Normalization(axis=-1, name="feature_norm")
    drop = keras.layers.Dropout(float(dropout), seed=seed, name="dropout")
    dense = keras.layers.Dense(
        int(num_classes),
        activation="softmax",
        # See the module docstring.
        kernel_initializer="zeros" if zero_init else keras.initializers.GlorotUniform(seed=seed),
        name="predictions",
        # The softmax output stays float32 under mixed precision, for a stable loss.
        dtype="float32",
    )

    inputs = keras.Input(backbone_model.input.shape[1:], dtype=backbone_model.input.dtype, name="pixels")
    if backbone_model.name != "backbone":
        # The classifier finds its backbone by this name; the new functional model shares every layer.
        backbone_model = keras.Model(backbone_model.input, backbone_model.output, name="backbone")
    features = backbone_model(inputs)
    if pool is not None:
        features = pool(features)
    feature_model = keras.Model(inputs, features, name="features")
    model = keras.Model(inputs, dense(drop(norm(features))), name="classifier")

    head_inputs = keras.Input((int(features.shape[-1]),), name="pooled_features")
    head_model = keras.Model(head_inputs, dense(drop(norm(head_inputs))), name="head")
    return Classifier(model=model, backbone=backbone_model, feature_model=feature_model, head_model=head_model)
