"""What training random weights (`from_scratch`, the no-transfer baseline) needs beyond the pretrained recipe."""

from __future__ import annotations

from kerastl.errors import UsageError


def settle_batchnorm_quickly(model, momentum: float = 0.9) -> None:
    """From scratch, BatchNormalization statistics start at 0 and 1: a momentum of 0.99–0.999 (the Keras
    applications use 0.999) leaves them far from the data after the few hundred steps of a small run, and the
    model then predicts one class at inference. 0.9 lets them settle, so the baseline is a fair one."""
    import keras

    from kerastl.core.graph import walk_layers

    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = min(float(layer.momentum), momentum)


def refuse_random_weights(spec, strategy) -> None:
    """A pretrained strategy on random weights trains into garbage (MobileNetV3Small, `--weights none
    --strategy full`: loss 10,934, 10% accuracy): `head` learns on random features, and `full` starts from a
    zero head, frozen BatchNormalization statistics of 0 and 1, and a tenth of the learning rate. The
    from-scratch recipe is the one that trains random weights, so the user is sent there rather than
    switched silently."""
    raise UsageError(
        f"--weights none gives {spec} random weights, but --strategy {strategy} fine-tunes pretrained ones; "
        "pass --from-scratch to train the random network (the no-transfer baseline), or drop --weights none"
    )
