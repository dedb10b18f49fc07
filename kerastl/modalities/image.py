"""Images: the preprocessing layer baked into image models.

`ImagePreprocessing` turns raw pixels (0–255) into what a backbone was trained on, inside the model, so that
exported SavedModels and TFLite files take raw pixels and train/deploy preprocessing cannot drift apart. It is
registered under the `kerastl` package, so `.keras` files holding it load with `safe_mode=True` once `kerastl`
is imported.
"""

from __future__ import annotations

import keras
from keras import ops

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
