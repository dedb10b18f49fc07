"""EfficientNet-Lite0 in Keras: the architecture of kerastl's default backbone for colour photos,
`saved_models/efficientnet-lite0-imagenet` (converted from ImageNet weights by tools/import_efficientnet_lite0.py).

EfficientNet-Lite (the TensorFlow TPU repository's `efficientnet/lite`, 2020) is EfficientNet-B0's block layout
(Tan & Le, 2019) made friendly to quantization and mobile accelerators: no squeeze-and-excitation, ReLU6
instead of swish, and the stem (32 filters) and head (1280 filters) not scaled with the width. Lite0 is the
unscaled member (width and depth 1.0, 224×224 input), the backbone MediaPipe Model Maker and TFLite Model
Maker default to. Its 16 mobile inverted bottleneck blocks (MBConv) each expand with a 1×1 convolution (not
in the first block, whose ratio is 1), filter with a depthwise convolution, project back with a linear 1×1
convolution, and add their input when stride and width allow.

Two details decide whether converted weights compute what they were trained to compute:

- Padding is TensorFlow's "SAME" (Keras `padding="same"`): with stride 2 the odd pad pixel goes at the bottom
  and right (224 → 112 pads 0 above and 1 below for a 3×3 kernel, 1 and 2 for a 5×5). The weights were trained
  in TensorFlow and the PyTorch port they come through pads the same way (its `Conv2dStaticSamePadding`);
  PyTorch's symmetric `padding=k//2` shifts every stride-2 layer by a pixel.
- BatchNormalization epsilon is 1e-3 (TensorFlow's EfficientNet; Keras' default too), not PyTorch's 1e-5.

Inputs are raw pixels (0–255); the first layer is `ImagePreprocessing` mapping them to `(x - 127) / 128`, the
normalisation of the Lite training pipeline (`MEAN_RGB = 127`, `STDDEV_RGB = 128`).
"""

from __future__ import annotations

# (repeats, kernel size, stride of the first block, expansion ratio, output filters) per stage, from
# `efficientnet_lite_builder.py`'s block strings (r1_k3_s11_e1_i32_o16, r2_k3_s22_e6_i16_o24, ...).
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)

STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
# (x - 127) / 128 per channel: what the EfficientNet-Lite training and evaluation pipelines feed the network.
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)
LITE0_IMAGE_SIZE = 224


def lite0_blocks():
    """The 16 blocks of EfficientNet-Lite0 in order: `(kernel, stride, expand_ratio, in_filters, out_filters)`."""
    blocks, width = [], STEM_FILTERS
    for repeats, kernel, stride, expand, out in LITE0_STAGES:
        for repeat in range(repeats):
            blocks.append((kernel, stride if repeat == 0 else 1, expand, width, out))
            width = out
    return blocks


def _conv_bn(x, filters, kernel, stride, name, *, relu=True, depthwise=False):
    import keras

    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)
    return x


def efficientnet_lite0_features(x):
    """Applies EfficientNet-Lite0 without its classifier to the normalised symbolic tensor `x` (N, H, W, 3) and
    returns the head's feature map (N, H/32, W/32, 1280), after its BatchNormalization and ReLU6; the
    ImageNet classifier pools it globally before its Dense layer, as `kerastl.train.head` pools it.

    Layer names: `stem_conv`, `block{i}_expand` (blocks 1–15), `block{i}_depthwise`, `block{i}_project`, each
    followed by `<name>_bn` (and `<name>_relu6` except after the projection), `block{i}_add` where the block
    adds its input, and `head_conv`.
    """
    import keras

    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem_conv")
    for index, (kernel, stride, expand, width_in, width_out) in enumerate(lite0_blocks()):
        inputs = x
        if expand != 1:
            x = _conv_bn(x, width_in * expand, 1, 1, f"block{index}_expand")
        x = _conv_bn(x, None, kernel, stride, f"block{index}_depthwise", depthwise=True)
        x = _conv_bn(x, width_out, 1, 1, f"block{index}_project", relu=False)
        if stride == 1 and width_in == width_out:
            # Drop-connect (stochastic depth) trained these residuals; at inference it is the identity.
            x = keras.layers.Add(name=f"block{index}_add")([x, inputs])
    return _conv_bn(x, HEAD_FILTERS, 1, 1, "head_conv")


def build_efficientnet_lite0(image_size: int = LITE0_IMAGE_SIZE, *, name: str = "efficientnet_lite0"):
    """EfficientNet-Lite0 from raw RGB pixels (image_size, image_size, 3) in [0, 255] to its 1280-wide feature
    map, with freshly initialised weights (the importer assigns the ImageNet ones).

    Raises:
        UsageError: an image size below 32 (five stride-2 stages need at least 32 pixels).
    """
    import keras

    from kerastl.errors import UsageError
    from kerastl.inputs.image import ImagePreprocessing

    if int(image_size) < 32:
        raise UsageError(f"EfficientNet-Lite0 needs images of at least 32x32. Received: {image_size}")
    inputs = keras.Input((int(image_size), int(image_size), 3), name="pixels")
    preprocess = ImagePreprocessing(mode="scale", scale=1.0, mean=list(LITE_MEAN), std=list(LITE_STD),
                                    name="preprocessing")
    return keras.Model(inputs, efficientnet_lite0_features(preprocess(inputs)), name=name)
