"""`add_image_classifier_metadata`: the metadata MediaPipe Tasks' ImageClassifier reads, with the
checks on the image input (shape, type, normalization, uint8 quantization) it needs."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from kerastl.errors import KerastlError
from kerastl.export.metadata.pack import _build_metadata, _pack_model
from kerastl.export.metadata.schema import (
    _check_labels,
    _check_scores_output,
    _enum_names,
    _open_for_writing,
    _shape,
    _shape_signature,
    _single_input_and_output,
)

# The smallest parser version that understands every field we write. It is the largest "Added in"
# version (metadata_schema.fbs) among the populated fields, and at least 1.0.0 for identifier
# M001. Image metadata only uses 1.0.0 fields (no VOCABULARY files, process units on the
# subgraph, tensor groups, custom metadata or AssociatedFile.version), so it is 1.0.0.
# tflite-support computed this with a C++ helper that current mediapipe wheels don't ship.
_IMAGE_MIN_PARSER_VERSION = "1.0.0"
# Relative tolerance for "the uint8 input takes raw pixel values" (see _check_uint8_input).
_QUANT_SCALE_RTOL = 0.02


def add_image_classifier_metadata(
    model: bytes,
    *,
    labels: list[str],
    mean: list[float] | None,
    std: list[float] | None,
    name: str = "kerastl image classifier",
    description: str = "",
    version: str = "1",
    author: str = "kerastl",
    license: str = "",  # the metadata field is called "license"
) -> bytes:
    """Returns a copy of a TFLite image classifier with metadata that MediaPipe Tasks accepts.

    The input tensor is described as an image (`ImageProperties`, RGB for 3 channels, GRAYSCALE
    for 1), with `NormalizationOptions(mean, std)` if given and `Stats` holding the tensor's value
    range for pixels 0..255, i.e. ``(0 - mean) / std`` .. ``(255 - mean) / std``. The output
    tensor is described as class probabilities, with ``labels`` packed as the associated file
    ``labels.txt`` (one label per line, type `TENSOR_AXIS_LABELS`), which is where MediaPipe gets
    the category names from. Metadata already in ``model`` is replaced, together with any files
    packed after it; other model metadata entries (such as ``min_runtime_version``) are kept.
    The output is deterministic: the same arguments give the same bytes.

    ``mean`` and ``std`` say how a pixel value p (0..255) becomes the input value, (p - mean) /
    std, with one value (or the same value per channel: MediaPipe has no per-channel
    normalization). They are required for a float32 input, which MediaPipe refuses without
    them; kerastl models take raw pixels and preprocess inside the graph, so pass
    ``mean=[0.0], std=[1.0]``. For a uint8 input they are optional and only recorded: MediaPipe
    copies the image bytes into the tensor unchanged, so the input must be quantized with scale
    1/std and zero point mean (1 and 0 if not given), which is checked.

    MediaPipe only runs 3-channel (RGB) inputs; a 1-channel model gets GRAYSCALE metadata, which
    is correct for other readers of the schema, but MediaPipe refuses it.

    Raises:
        KerastlError: ``model`` is not a TFLite flatbuffer, or stores its weights outside the
            flatbuffer; its main subgraph does not have exactly one input and one output; the
            input is not [1, height, width, 1 or 3] of float32 or uint8; a uint8 input is not
            quantized so that its values are raw pixels (see above); the output is not
            [1, classes] (any number of leading 1s) of float32 or uint8; the number of labels
            differs from the number of classes; a label is empty, repeated or contains a line
            break; mean/std are missing for a float input, given one without the other, of the
            wrong length, not finite, differ between channels, or std is not positive; or
            mediapipe (which provides the metadata schema) is not installed.
    """
    model, schema, meta_fb, root = _open_for_writing(model)
    image, output = _single_input_and_output(root, "an image classifier", "one image input")
    _check_image_input(image, schema)
    num_classes = _check_scores_output(output, schema, "an image classifier")
    channels = int(image.ShapeAsNumpy()[3])
    _check_labels(labels, num_classes)
    mean, std = _check_normalization(mean, std, channels, image.Type() == schema.TensorType.FLOAT32)
    if image.Type() == schema.TensorType.UINT8:
        _check_uint8_input(image, mean, std)

    metadata_buf = _build_metadata(
        meta_fb,
        name=name,
        description=description,
        version=version,
        author=author,
        license=license,
        subgraph_name="image_classifier",
        input_mds=[_image_input_metadata(meta_fb, channels=channels, mean=mean, std=std)],
        num_classes=num_classes,
        min_parser_version=_IMAGE_MIN_PARSER_VERSION,
    )
    return _pack_model(model, metadata_buf, labels, schema)


# ---------------------------------------------------------------------------------------------
# Validation


def _check_image_input(image: Any, schema: ModuleType) -> None:
    """Checks that the input tensor is an image MediaPipe's ImageClassifier can drive."""
    types = _enum_names(schema.TensorType)
    shape = _shape(image)
    if len(shape) != 4 or shape[0] != 1 or shape[1] < 1 or shape[2] < 1 or shape[3] not in (1, 3):
        raise KerastlError(
            f"The TFLite model's input has shape {shape}; an image classifier needs "
            "[1, height, width, 1 or 3], so convert with a fixed input size and batch size 1."
        )
    # A Keras input of (None, None, 3) converts to shape [1, 1, 1, 3] with signature
    # [-1, -1, -1, 3]; MediaPipe would then shrink every image to 1x1 pixel.
    signature = _shape_signature(image)
    if len(signature) == 4 and (signature[1] < 1 or signature[2] < 1):
        raise KerastlError(
            f"The TFLite model's input has a variable size ({signature}); an image classifier "
            "needs a fixed height and width, so build the Keras model with a fixed input shape."
        )
    if image.Type() not in (schema.TensorType.FLOAT32, schema.TensorType.UINT8):
        raise KerastlError(
            f"The TFLite model's input is {types.get(image.Type(), image.Type())}; MediaPipe "
            "takes FLOAT32 or UINT8 images, so convert with inference_input_type tf.float32 or "
            "tf.uint8."
        )


def _check_normalization(
    mean: list[float] | None, std: list[float] | None, channels: int, float_input: bool
) -> tuple[list[float] | None, list[float] | None]:
    if mean is None and std is None:
        if float_input:
            raise KerastlError(
                "A float input needs normalization metadata or MediaPipe refuses the model; "
                "pass mean=[0.0], std=[1.0] for a model that takes raw 0-255 pixels."
            )
        return None, None
    if mean is None or std is None:
        raise KerastlError("Pass both mean and std, or neither (only for a uint8 input).")
    mean = [float(v) for v in mean]
    std = [float(v) for v in std]
    for label, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise KerastlError(
                f"{label} has {len(values)} values for a {channels}-channel input; pass 1 value "
                f"or {channels}."
            )
        if not all(math.isfinite(v) for v in values):
            raise KerastlError(f"{label} {values} is not finite; pass finite numbers.")
    if not all(v > 0 for v in std):
        raise KerastlError(
            f"std {std} must be positive; pass the pixel scale divisor (1.0 for raw)."
        )
    if len(set(mean)) > 1 or len(set(std)) > 1:
        # MediaPipe: "Per-channel image normalization is not available."
        raise KerastlError(
            f"MediaPipe can't apply per-channel normalization (mean {mean}, std {std}); do it "
            "inside the model and pass one mean and one std value."
        )
    return mean, std


def _check_uint8_input(image: Any, mean: list[float] | None, std: list[float] | None) -> None:
    # MediaPipe copies the image bytes into a uint8 input unchanged, so the model must read q as
    # the pixel value: real = scale * (q - zero_point) must equal (q - mean) / std, i.e. scale
    # 1/std and zero point mean. The converter derives scale and zero point from the range of the
    # representative data, so calibration images that never reach 0 or 255 give e.g. scale 0.94,
    # and the phone then sees every image 6% darker than Keras did.
    q = image.Quantization()
    scales = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else []
    zero_points = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else []
    if len(scales) != 1 or len(zero_points) != 1:
        raise KerastlError(
            "The uint8 input has no per-tensor quantization; convert with a representative "
            "dataset and inference_input_type=tf.uint8."
        )
    scale, zero_point = float(scales[0]), int(zero_points[0])
    # _check_normalization has made the values equal across channels.
    want_scale = 1.0 / std[0] if std is not None else 1.0
    want_zero_point = mean[0] if mean is not None else 0.0
    if (
        abs(scale - want_scale) > _QUANT_SCALE_RTOL * want_scale
        or abs(zero_point - want_zero_point) > 1.0
    ):
        raise KerastlError(
            f"The uint8 input is quantized with scale {scale:.4g}, zero point {zero_point}, so "
            f"raw pixels would be misread (expected scale {want_scale:.4g}, zero point "
            f"{want_zero_point:.4g}); calibrate with representative images spanning pixel "
            "values 0-255."
        )


# ---------------------------------------------------------------------------------------------
# Serialization


def _image_input_metadata(
    meta_fb: ModuleType, *, channels: int, mean: list[float] | None, std: list[float] | None
) -> Any:
    """The TensorMetadataT of an image input, as tflite-support's ImageClassifierWriter wrote it."""
    image_props = meta_fb.ImagePropertiesT()
    image_props.colorSpace = (
        meta_fb.ColorSpaceType.RGB if channels == 3 else meta_fb.ColorSpaceType.GRAYSCALE
    )
    image_md = meta_fb.TensorMetadataT()
    image_md.name = "image"
    image_md.description = "Input image to be classified."
    image_md.content = meta_fb.ContentT()
    image_md.content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    image_md.content.contentProperties = image_props
    m = mean if mean is not None else [0.0]
    s = std if std is not None else [1.0]
    if mean is not None:
        norm = meta_fb.NormalizationOptionsT()
        norm.mean, norm.std = list(mean), list(std)
        unit = meta_fb.ProcessUnitT()
        unit.optionsType = meta_fb.ProcessUnitOptions.NormalizationOptions
        unit.options = norm
        image_md.processUnits = [unit]
    # Stats are informational: the input value range for pixels 0..255, per channel.
    n = max(len(m), len(s))
    m, s = (m * n if len(m) == 1 else m), (s * n if len(s) == 1 else s)
    image_md.stats = meta_fb.StatsT()
    image_md.stats.min = [(0.0 - mi) / si for mi, si in zip(m, s)]
    image_md.stats.max = [(255.0 - mi) / si for mi, si in zip(m, s)]
    return image_md
