"""Images: the preprocessing layer baked into image models, decoding (`decode_image`, `load_images`) and the
one stateless augmentation (`augment_images`), and mixup and cutmix (`mix_images`).

`ImagePreprocessing` turns raw pixels (0–255) into what a backbone was trained on, inside the model, so that
exported SavedModels and TFLite files take raw pixels and train/deploy preprocessing cannot drift apart. It is
registered under the `kerastl` package, so `.keras` files holding it load with `safe_mode=True` once `kerastl`
is imported.
"""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

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


# ------------------------------------------------------------------------------------------------ files


def decode_image(path, image_size, channels: int):
    """Graph function: reads an image file and returns float32 pixels in [0, 255], resized to `image_size`
    (height, width) with antialiasing and converted to `channels` (1 or 3). Alpha is dropped."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape((None, None, 3))
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, antialias=True)
    if channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    return tf.clip_by_value(image, 0.0, 255.0)


def load_images(files, *, image_size, channels: int, batch_size: int = 64):
    """Decodes `files` into one float32 array (N, H, W, C), in order."""
    import numpy as np
    import tensorflow as tf

    image_size = tuple(int(s) for s in image_size)
    dataset = (tf.data.Dataset.from_tensor_slices([str(f) for f in files] or tf.zeros((0,), tf.string))
               .map(lambda p: decode_image(p, image_size, channels), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
               .batch(batch_size))
    batches = [x.numpy() for x in dataset]
    return np.concatenate(batches) if batches else np.zeros((0, *image_size, channels), "float32")


def augment_images(images, key, *, translate: float = 0.1, rotate_degrees: float = 7.0, zoom: float = 0.1,
                   contrast: float = 0.2):
    """The image augmentation, the only one (in memory and streaming alike): a graph function on a batch of
    float pixels in [0, 255] giving each image a random translation (up to `translate` of its size), rotation
    (up to `rotate_degrees`), zoom (up to `zoom`) as one affine transform with constant (black) fill, then a
    contrast change (up to `contrast`).

    Stateless: the draws are `tf.random.stateless_uniform` keyed on `key` (a shape-[2] int seed,
    `augmentation_key(seed, epoch, batch)`), so the same key gives the same batch bit for bit, in a resumed
    process too. Flips are left out: they change the meaning of digits and text. Training set only, so
    exported models carry none of it.
    """
    import math

    import tensorflow as tf

    shape = tf.shape(images)
    batch = shape[0]
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    u = tf.random.stateless_uniform([batch, 5], seed=key, minval=-1.0, maxval=1.0)
    angle = u[:, 0] * rotate_degrees * math.pi / 180.0
    scale = 1.0 + u[:, 1] * zoom
    dx = u[:, 2] * translate * width
    dy = u[:, 3] * translate * height
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): a rotation and zoom about the
    # centre, then a shift.
    a2 = cx - cos * cx + sin * cy - dx
    b2 = cy - sin * cx - cos * cy - dy
    zeros = tf.zeros_like(cos)
    transforms = tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    factor = 1.0 + u[:, 4] * contrast
    mean = tf.reduce_mean(warped, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((warped - mean) * factor[:, None, None, None] + mean, 0.0, 255.0)


MIXING_KINDS = ("mixup", "cutmix")


def mix_images(images, targets, key, *, kind: str, alpha: float):
    """Mixup or cutmix of a batch: `(images, targets)` -> `(mixed images, mixed targets)`, a graph function.

    `images` is (batch, height, width, channels) float pixels, `targets` (batch, classes) rows of class
    weights (one-hot labels). Each example is paired with another of the batch by a random permutation and a
    share `lam ~ Beta(alpha, alpha)` is drawn for the batch (Zhang et al., 2018; Yun et al., 2019, as timm
    does it):

    - mixup: `lam * x + (1 - lam) * x[partner]`, and the targets likewise;
    - cutmix: a box of `1 - lam` of the image's area, centred at a uniform point and clipped to the image,
      holds the partner's pixels; the targets are weighted by the pixels each example really keeps, so the
      weights sum to 1 and the partner's equals the clipped box's share of the area.

    Stateless: every draw is keyed on `key` (a shape-[2] int seed), so a resumed run mixes the same batches.

    Raises:
        UsageError: an unknown `kind`, an `alpha` not above 0, or (cutmix) inputs that are not 2-D images.
    """
    import tensorflow as tf

    from kerastl.errors import UsageError

    if kind not in MIXING_KINDS:
        raise UsageError(f"batch mixing must be one of {MIXING_KINDS}. Received: {kind}")
    if not float(alpha) > 0:
        raise UsageError(f"--{kind} must be above 0 to mix batches. Received: {alpha}")
    images = tf.convert_to_tensor(images, tf.float32)
    if kind == "cutmix" and images.shape.rank != 4:
        raise UsageError(f"--cutmix pastes boxes of 2-D images (batch, height, width, channels); these inputs "
                         f"have shape {tuple(images.shape)}: use --mixup")
    targets = tf.cast(targets, tf.float32)
    keys = tf.random.experimental.stateless_split(tf.cast(key, tf.int64), 4)
    batch = tf.shape(images)[0]
    partner = tf.argsort(tf.random.stateless_uniform([batch], seed=keys[0]))
    first = tf.random.stateless_gamma([], seed=keys[1], alpha=float(alpha))
    second = tf.random.stateless_gamma([], seed=keys[2], alpha=float(alpha))
    lam = first / tf.maximum(first + second, 1e-12)
    other = tf.gather(images, partner)
    if kind == "mixup":
        mixed = lam * images + (1.0 - lam) * other
        return mixed, lam * targets + (1.0 - lam) * tf.gather(targets, partner)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    mask, kept = cutmix_box(height, width, 1.0 - lam, keys[3])
    mixed = tf.where(mask[None, :, :, None], other, images)
    return mixed, kept * targets + (1.0 - kept) * tf.gather(targets, partner)


def cutmix_box(height, width, area, key):
    """A cutmix box covering about `area` of a `height` x `width` image: `(mask, kept)`, the (height, width)
    boolean mask of the box (a uniform centre, sides `sqrt(area)` of the image's, clipped at its borders) and
    `kept`, the share of pixels outside it."""
    import tensorflow as tf

    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    side = tf.sqrt(tf.clip_by_value(area, 0.0, 1.0))
    centre = tf.random.stateless_uniform([2], seed=key)
    cy, cx = centre[0] * h, centre[1] * w
    top = tf.cast(tf.round(tf.clip_by_value(cy - side * h / 2, 0.0, h)), tf.int32)
    bottom = tf.cast(tf.round(tf.clip_by_value(cy + side * h / 2, 0.0, h)), tf.int32)
    left = tf.cast(tf.round(tf.clip_by_value(cx - side * w / 2, 0.0, w)), tf.int32)
    right = tf.cast(tf.round(tf.clip_by_value(cx + side * w / 2, 0.0, w)), tf.int32)
    rows, cols = tf.range(height), tf.range(width)
    mask = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
    kept = 1.0 - tf.cast((bottom - top) * (right - left), tf.float32) / (h * w)
    return mask, kept


# Limits on what one file may cost to read; files beyond them are skipped with the reason. Decoding allocates
# the full decoded size whatever the file's size, so a few kilobytes can claim gigabytes (a decompression bomb):
# the limits are checked on the header (Pillow reads an image's size without decoding it), before any decoder.
# 64 megapixels is 192 MB as RGB uint8, beyond any camera photo a training set comes from.
MAX_IMAGE_PIXELS = 64_000_000


def image_error(path) -> str | None:
    """Why the image at `path` cannot be decoded (over `MAX_IMAGE_PIXELS` by its header, damaged), or None."""
    path = Path(path)
    too_large = _image_size_error(path)
    if too_large:
        return too_large
    import tensorflow as tf

    try:
        data = tf.io.read_file(str(path))
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        if image.shape[0] == 0 or image.shape[1] == 0:
            return "empty image"
    except Exception as error:  # noqa: BLE001 (TF raises InvalidArgumentError and friends with multi-line messages)
        text = str(error).strip().splitlines()
        reason = text[-1] if text else ""
        # "{{function_node __wrapped__DecodeImage_device_/job:...}} Invalid PNG. [Op:DecodeImage] name:"
        reason = re.sub(r"^\{\{.*?\}\}\s*|\s*\[Op:\w+\].*$", "", reason).strip()
        return (reason or type(error).__name__)[:200]
    return None


# warnings.catch_warnings changes process-wide state and drop_undecodable reads headers from several threads.
_PILLOW_LOCK = threading.Lock()


def _image_size_error(path: Path) -> str | None:
    """Why the image at `path` is too large to decode (over `MAX_IMAGE_PIXELS` by its header), or None.

    Only the header is read. Files Pillow cannot identify are left to the decoder, which names the problem.
    Pillow's own decompression-bomb check warns above `PIL.Image.MAX_IMAGE_PIXELS` (silenced here: the size
    is checked below) and raises above twice that (reported as the same reason).
    """
    from PIL import Image

    limit = f"over the {MAX_IMAGE_PIXELS / 1e6:g}-megapixel limit (kerastl.inputs.image.MAX_IMAGE_PIXELS); downscale it"
    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Image.DecompressionBombError as error:
            found = re.search(r"\((\d+) pixels\)", str(error))
            if found and int(found.group(1)) > MAX_IMAGE_PIXELS:
                return f"image of {int(found.group(1)) / 1e6:.3g} megapixels, {limit}"
            return f"refused by Pillow: {error}"[:200]  # PIL.Image.MAX_IMAGE_PIXELS was set below ours
        except Exception:  # noqa: BLE001 (not an image Pillow knows, or a damaged header)
            return None
    if width * height > MAX_IMAGE_PIXELS:
        return f"image of {width}x{height} = {width * height / 1e6:.3g} megapixels, {limit}"
    return None


# A pixel is coloured when its channels differ by more than this (of 255): JPEG's chroma noise in a gray
# image stored as RGB stays below it. An image is colour when more than COLOR_PIXEL_SHARE of its pixels are.
COLOR_CHANNEL_SPREAD = 24
COLOR_PIXEL_SHARE = 0.01


def image_color(path) -> str | None:
    """`"grayscale"` or `"rgb"`: whether the image at `path` holds colour, judged on a thumbnail of at most
    64×64 pixels (a gray image saved as RGB is grayscale); None when it cannot be read or is over
    `MAX_IMAGE_PIXELS`. Reads with Pillow; JPEGs are decoded at reduced size."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    if _image_size_error(path):
        return None
    try:
        with _PILLOW_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
                    return "grayscale"
                image.draft("RGB", (64, 64))  # JPEG only: decode at 1/2 to 1/8 scale
                thumb = image.convert("RGB")
                thumb.thumbnail((64, 64))
                pixels = np.asarray(thumb, dtype=np.int16)
    except Exception:  # noqa: BLE001 (damaged or unknown files: the decoder's check names them later)
        return None
    if pixels.size == 0:
        return None
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    return "rgb" if float((spread > COLOR_CHANNEL_SPREAD).mean()) > COLOR_PIXEL_SHARE else "grayscale"


def images_color(paths, *, sample: int = 32) -> str | None:
    """The colour of a set of images: `"rgb"` when more than half of up to `sample` of `paths` (spread evenly
    over the sorted list) are colour, `"grayscale"` otherwise; None when none of them can be read."""
    paths = sorted(str(p) for p in paths)
    step = max(1, len(paths) // max(1, sample))
    found = [c for c in (image_color(p) for p in paths[::step][:sample]) if c is not None]
    if not found:
        return None
    return "rgb" if found.count("rgb") * 2 > len(found) else "grayscale"
