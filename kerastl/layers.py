"""Keras layers that kerastl bakes into the models it builds.

- `ImagePreprocessing` turns raw pixels (0–255) into what a backbone was trained on, inside the model, so that
  exported SavedModels and TFLite files take raw pixels and train/deploy preprocessing cannot drift apart.
- `InferenceBatchNormalization` is a BatchNormalization whose moving statistics never change: it always
  normalises with them, while gamma and beta still train when the layer is trainable. This is the Keras
  transfer-learning guide's "keep BatchNormalization in inference mode" rule; the guide's recipe of calling the
  base model with `training=False` no longer holds in Keras 3.15, whose functional models overwrite a nested
  call's `training` argument with the outer one (checked here).

Both are registered under the `kerastl` package, so `.keras` files holding them load with `safe_mode=True`
once `kerastl` is imported.
"""

from __future__ import annotations

import keras
from keras import ops

# `keras.applications.imagenet_utils.preprocess_input` modes, as constants so that they are data in a model's
# config rather than a function reference.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

PREPROCESSING_MODES = ("none", "scale", "tf", "torch", "caffe")


@keras.saving.register_keras_serializable(package="kerastl")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw pixels in [0, 255] to a backbone's expected input.

    Modes:
        none:  identity (the backbone preprocesses itself, e.g. EfficientNet, ConvNeXt, MobileNetV3).
        scale: `(x * scale - mean) / std`, per channel (`mean`/`std` broadcast; defaults 0 and 1).
        tf:    `x / 127.5 - 1` (MobileNet, Xception, Inception, ResNetV2).
        torch: `(x / 255 - imagenet_mean) / imagenet_std` (DenseNet).
        caffe: RGB → BGR, then subtract the ImageNet BGR mean (ResNet v1, VGG).

    Raises:
        ValueError: unknown mode, or mean/std of a length that does not broadcast to the channels.
    """

    def __init__(self, mode="scale", scale=1.0 / 255.0, mean=None, std=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"Unknown preprocessing mode. Expected one of {PREPROCESSING_MODES}. Received: mode={mode}"
            )
        self.mode = mode
        self.scale = float(scale)
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError(f"Preprocessing std must be non-zero. Received: std={std}")

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            return (x / 255.0 - ops.array(_TORCH_MEAN, x.dtype)) / ops.array(_TORCH_STD, x.dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.array(_CAFFE_MEAN_BGR, x.dtype)
        x = x * self.scale
        if self.mean is not None:
            x = x - ops.array(self.mean, x.dtype)
        if self.std is not None:
            x = x / ops.array(self.std, x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, scale=self.scale, mean=self.mean, std=self.std)
        return config

    def to_record(self) -> dict:
        """The JSON-able preprocessing record that manifests and export metadata carry."""
        return {"mode": self.mode, "scale": self.scale, "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="kerastl")
class InferenceBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that always normalises with its moving statistics.

    The moving mean and variance are never updated, whatever `training` is; gamma and beta stay trainable
    while the layer is trainable. timm's `FrozenBatchNorm2d` and detectron2 do the same for fine-tuning.
    """

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def _clone_replacing(model: keras.Model, replace) -> keras.Model:
    """Clones `model` (recursively) where `replace(layer)` returns a new layer, copying the old one's weights
    and trainability into it; layers for which it returns None are kept as they are (shared)."""
    replaced = []

    def clone(layer):
        new = replace(layer)
        if new is None:
            return layer  # keeps its identity and weights
        replaced.append((layer, new))
        return new

    result = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in replaced:
        new.set_weights(old.get_weights())
        new.trainable = old.trainable
    return result


def _swap_batchnorm(model: keras.Model, to_inference: bool) -> keras.Model:
    source = keras.layers.BatchNormalization if to_inference else InferenceBatchNormalization
    target = InferenceBatchNormalization if to_inference else keras.layers.BatchNormalization
    # Exact type checks: `InferenceBatchNormalization` is itself a BatchNormalization.
    if not any(type(layer) is source for layer in _walk(model)):
        return model
    return _clone_replacing(
        model, lambda layer: target.from_config(layer.get_config()) if type(layer) is source else None)


def freeze_batchnorm_statistics(model: keras.Model) -> keras.Model:
    """Returns `model` with every BatchNormalization replaced by `InferenceBatchNormalization`.

    All other layers are shared with `model` (same objects, same weights); the BatchNormalization layers are
    new objects holding copies of the old weights. A model without BatchNormalization is returned as is.
    """
    return _swap_batchnorm(model, to_inference=True)


def restore_batchnorm(model: keras.Model) -> keras.Model:
    """The inverse of `freeze_batchnorm_statistics`: plain BatchNormalization layers, so that a saved model
    needs nothing from kerastl for its normalisation layers."""
    return _swap_batchnorm(model, to_inference=False)


def to_float32(model: keras.Model) -> keras.Model:
    """A copy of `model` whose layers all compute in float32 (weights copied).

    Mixed-precision training records its dtype policy in every layer's config; a backbone or classifier
    that we save must not make its users compute in bfloat16 or float16.
    """
    if all(layer.dtype_policy.name == "float32" for layer in _walk(model)):
        return model

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    return _clone_replacing(model, as_float32)


def _walk(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def walk_layers(model: keras.Model):
    """Every layer of `model`, depth first, descending into nested models (the models themselves included)."""
    return list(_walk(model))
