"""The fine-tuning loss: cross-entropy on hard labels, or on smoothed and mixed (soft) targets.

A run without label smoothing and without mixup or cutmix compiles Keras' own
`sparse_categorical_crossentropy` and `accuracy`, exactly as before these options existed. Otherwise every
optimizer phase compiles `SoftTargetCrossentropy` and `soft_accuracy`, one form for both: each takes the
integer labels the validation data carries and the one-hot or blended rows mixup and cutmix make of the
training labels (`kerastl.train.mixing`), so one compiled model trains on the ones and validates on the others.
Label smoothing then applies to either: the target becomes `(1 - s) * target + s / classes` (Szegedy et al.,
2016), as `keras.losses.CategoricalCrossentropy(label_smoothing=s)` computes it; Keras 3's
`SparseCategoricalCrossentropy` has no `label_smoothing`.

Neither is registered with Keras' serialisation: they are training objects, and the saved model.keras carries
neither (`kerastl.train.optimizers.saveable` writes it uncompiled), so it loads in plain Keras.
"""

from __future__ import annotations

import keras
from keras import ops

from kerastl.errors import UsageError


def soft_targets(y_true, y_pred):
    """`y_true` as rows of class weights shaped like `y_pred` (batch, classes): integer labels (batch,) or
    (batch, 1) become one-hot rows, rows of that shape already are targets and are cast to `y_pred`'s dtype.

    The form is decided on the static shapes, at trace time, so a compiled step never branches on values.
    """
    classes = int(y_pred.shape[-1])
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == classes and classes > 1:
        return ops.cast(y_true, y_pred.dtype)
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    return ops.one_hot(labels, classes, dtype=y_pred.dtype)


class SoftTargetCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy of softmax probabilities against integer labels or soft target rows
    (`soft_targets`), with optional label smoothing.

    Args:
        label_smoothing: in [0, 1); 0 leaves the targets as they are.

    Raises:
        UsageError: `label_smoothing` outside [0, 1).
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "soft_target_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise UsageError(f"label_smoothing must be in [0, 1). Received: {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        return keras.losses.categorical_crossentropy(soft_targets(y_true, y_pred), y_pred,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def soft_accuracy(y_true, y_pred):
    """1 where the most probable class is the label (integer labels) or the target's heaviest class (soft
    rows, e.g. the larger share of a mixed pair), else 0; the metric is reported as "accuracy"."""
    targets = soft_targets(y_true, y_pred)
    return ops.cast(ops.equal(ops.argmax(targets, axis=-1), ops.argmax(y_pred, axis=-1)), "float32")


def uses_soft_targets(config) -> bool:
    """Whether `config` (an `HParams` or `FinetuneConfig`) trains on smoothed or mixed targets."""
    return (float(config.label_smoothing) > 0 or float(config.mixup) > 0 or float(config.cutmix) > 0)


def loss_and_metrics(config) -> tuple:
    """`(loss, metrics)` for `model.compile` under `config` (an `HParams` or `FinetuneConfig`): Keras'
    sparse cross-entropy and accuracy on hard labels, else `SoftTargetCrossentropy` and `soft_accuracy`
    (named "accuracy", so the history and report.png keep their keys)."""
    if not uses_soft_targets(config):
        return "sparse_categorical_crossentropy", ["accuracy"]
    accuracy = keras.metrics.MeanMetricWrapper(soft_accuracy, name="accuracy")
    return SoftTargetCrossentropy(config.label_smoothing), [accuracy]
