"""The pre-training classifier put on every backbone while it pre-trains (and dropped after): global average
pooling of a feature map, dropout, and `Dense(num_classes, name="predictions")` in float32, as keras-hub's
Task puts its head on a Backbone."""

from __future__ import annotations


def pretraining_classifier(backbone, num_classes: int, *, dropout: float, seed: int, name: str):
    """The Keras model `backbone.input -> backbone -> [pool] -> dropout -> softmax` (pooling only for a
    (batch, height, width, channels) feature map; vector features go straight to dropout)."""
    import keras

    x = backbone.output
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(backbone.input, outputs, name=f"pretrain_{name}")
