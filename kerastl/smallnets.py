"""A small convolutional family sized for low-resolution input (28–64 px) that trains fast on a CPU.

VGG-style stages of two 3×3 convolutions with BatchNormalization and ReLU, halving the resolution between
stages with max pooling. At 28×28 the `s` variant costs about 29 MFLOP·2 per image forward.
"""

from __future__ import annotations

from kerastl.errors import UsageError

# name -> channel widths per stage
SMALLNETS = {
    "smallnet-s": (32, 64, 128),
    "smallnet-m": (48, 96, 192),
    "smallnet-l": (64, 128, 256),
}


def smallnet_features(name: str, x, *, name_prefix: str = ""):
    """Applies the feature extractor `name` (no pooling, no classifier) to the symbolic tensor `x` and returns
    its feature map, so that the layers join the caller's functional model directly (no nested model).

    Raises:
        UsageError: unknown name, or an input smaller than 8 px.
    """
    import keras

    if name not in SMALLNETS:
        raise UsageError(f"unknown small architecture '{name}'; choose one of {', '.join(SMALLNETS)}")
    if min(x.shape[1:3]) < 8:
        raise UsageError(f"{name} needs inputs of at least 8x8. Received: {tuple(x.shape[1:])}")
    widths = SMALLNETS[name]
    for stage, width in enumerate(widths, start=1):
        if stage > 1:
            x = keras.layers.MaxPooling2D(2, name=f"{name_prefix}pool{stage - 1}")(x)
        for conv in (1, 2):
            tag = f"{name_prefix}stage{stage}_conv{conv}"
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=tag)(x)
            x = keras.layers.BatchNormalization(name=f"{tag}_bn")(x)
            x = keras.layers.ReLU(name=f"{tag}_relu")(x)
    return x
