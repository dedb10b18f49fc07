"""Images: the image `Modality`. Raw pixels (0–255, (H, W, 1 or 3)) in, `ImagePreprocessing` inside the model
(`kerastl.inputs.image`), MediaPipe ImageClassifier metadata on TFLite files, uint8 pixels for full-integer
files."""

from __future__ import annotations

from kerastl.core.modality import Modality, register
from kerastl.core.records import InputSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _image_shape(model):
    shape = tuple(None if d is None else int(d) for d in model.input.shape[1:])
    if len(shape) == 3 and shape[2] in (1, 3) and None not in shape and "float" in str(model.input.dtype):
        return shape
    return None


class Image(Modality):
    name = "image"
    extensions = IMAGE_EXTENSIONS
    noun = "image"
    plural = "images"
    input_form = "images of shape (height, width, 1 or 3)"
    # A Keras file made elsewhere often starts at its first convolution: a float (H, W, 1 or 3) input with no
    # marker at all is taken as pixels, the one default (kerastl's own image backbones carry the marker).
    fallback = True
    quantizations = ("none", "float16", "dynamic", "int8", "int8-per-tensor")
    default_backbone_hint = "keras:MobileNetV2"
    pretrain_hint = "kerastl pretrain --data synthetic:glyphs --arch smallnet-s --out saved_models/NAME"
    classical_baseline = "pixels + logistic regression"
    #: The classical baseline's images are resized whole to this side (as kerastl resizes to a backbone's
    #: input), in the backbone's colour.
    BASELINE_SIDE = 32

    def decode_error(self, path):
        from kerastl.inputs.image import image_error

        return image_error(path)

    def claims(self, model):
        from kerastl.core.graph import walk_layers
        from kerastl.inputs.image import ImagePreprocessing

        shape = _image_shape(model)
        if shape is not None and any(isinstance(layer, ImagePreprocessing) for layer in walk_layers(model)):
            return InputSpec(self.name, shape)
        return None

    def claims_unmarked(self, model):
        shape = _image_shape(model)
        return None if shape is None else InputSpec(self.name, shape)

    def check_input(self, model, spec):
        from kerastl.export.inputs import image_input_shape

        image_input_shape(model)  # raises for a variable size

    def preprocessing_record(self, model):
        from kerastl.core.graph import walk_layers
        from kerastl.inputs.image import ImagePreprocessing

        pre = [layer for layer in walk_layers(model) if isinstance(layer, ImagePreprocessing)]
        return pre[0].to_record() if pre else {"mode": "none"}

    def backbone_preferences(self, folder):
        """The folder's colour: grayscale scans (the embedded digits) suit the small grayscale backbone, colour
        photos the RGB ImageNet one."""
        import os

        from kerastl.inputs.image import images_color

        files = []
        for top, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # hidden folders are not read
            files += [os.path.join(top, name) for name in names
                      if not name.startswith(".") and os.path.splitext(name)[1].lower() in self.extensions]
        color = images_color(files)
        return {} if color is None else {"color": color}

    # ---------------------------------------------------------------------------------------------- data
    def load(self, spec, files, *, batch_size=64):
        from kerastl.inputs.image import load_images

        return load_images(files, image_size=spec.shape[:2], channels=spec.shape[2], batch_size=batch_size)

    def classical_features(self, spec, train_files, other_files):
        from kerastl.inputs.image import load_images

        def pixels(files):
            side, channels = (self.BASELINE_SIDE,) * 2, int(spec.shape[2])
            return load_images(files, image_size=side, channels=channels).reshape(len(files), -1)

        return pixels(train_files), pixels(other_files)

    def reader(self, spec):
        import tensorflow as tf

        from kerastl.inputs.image import decode_image

        size, channels = tuple(int(s) for s in spec.shape[:2]), int(spec.shape[2])
        return (lambda path: decode_image(path, size, channels)), tf.TensorSpec((*size, channels), tf.float32)

    def augmentation(self):
        from kerastl.inputs.image import augment_images

        return augment_images

    def batch_mixing(self, kind, alpha):
        import functools

        from kerastl.inputs.image import mix_images

        return functools.partial(mix_images, kind=kind, alpha=float(alpha))

    # ---------------------------------------------------------------------------------------------- hub
    def hub_claims(self, signature, declared):
        # Anything but strings and rank-1/2 floats (which the text and audio modalities claim or refuse); the
        # image path then checks the module by calling it.
        return signature is None or not (signature.shape.rank in (1, 2) and signature.dtype.is_floating)

    def hub_backbone(self, spec, hub, *, image_size=None):
        import keras

        from kerastl.backbones.models import DEFAULT_IMAGE_SIZE, image_backbone
        from kerastl.inputs.image import ImagePreprocessing

        size = int(image_size or DEFAULT_IMAGE_SIZE)
        inputs = keras.Input((size, size, 3), name="pixels")
        # TF-Hub's image convention: float pixels in [0, 1].
        preprocess = ImagePreprocessing(mode="scale", scale=1.0 / 255.0, name="preprocessing")
        return image_backbone(spec, inputs, hub(preprocess(inputs)), preprocess, "pretrained", name="hub_backbone")

    # ---------------------------------------------------------------------------------------------- export
    def serving_signatures(self, model):
        import tensorflow as tf

        from kerastl.export.inputs import image_input_shape

        shape = (None, *image_input_shape(model))
        return [("serving_default", tf.TensorSpec(shape, tf.uint8, "images")),
                ("serving_float", tf.TensorSpec(shape, tf.float32, "images"))]

    def tflite_model(self, model):
        import tensorflow as tf

        from kerastl.export.inputs import image_input_shape
        from kerastl.export.tflite import rgb_input_model

        converted = rgb_input_model(model)
        return converted, tf.TensorSpec((1, *image_input_shape(converted)), tf.float32, name="image")

    def tflite_packages(self, quantize):
        return ["flatbuffers", "mediapipe"]

    def calibration(self, samples, quantize):
        import tensorflow as tf

        # The converter takes the input's range from what it sees; pin it to the full 0..255.
        samples[0, 0, 0, :] = 0.0
        samples[0, -1, -1, :] = 255.0
        # Raw pixel bytes in, as MediaPipe feeds them.
        return {"inference_input_type": tf.uint8, "inference_output_type": tf.uint8}

    def tflite_metadata(self, blob, model, labels, *, quantize):
        from kerastl.export import metadata
        from kerastl.export.quantize import FULL_INTEGER

        kind = "float32" if quantize == "none" else quantize
        float_input = quantize not in FULL_INTEGER
        return metadata.add_image_classifier_metadata(
            blob,
            labels=list(labels),
            # Raw pixels in, preprocessing inside: MediaPipe feeds (pixel - 0) / 1 to a float input and the
            # bytes themselves to a uint8 one.
            mean=[0.0] if float_input else None,
            std=[1.0] if float_input else None,
            name=f"{model.name} ({kind})",
            description=f"Image classifier exported by kerastl: {len(labels)} classes, raw RGB pixels in.",
        )

    def tflite_figures(self, spec):
        return {"rgb_input_for_grayscale_model": spec.shape[2] == 1}

    def verification_inputs(self, model, spec, files):
        from kerastl.inputs.image import load_images

        # Always RGB: the TFLite file of a 1-channel model takes RGB (see `export_pair`).
        return self.export_pair(model, spec, load_images(files, image_size=spec.shape[:2], channels=3))

    def export_pair(self, model, spec, raw):
        """A 1-channel model gets the RGB converted as `kerastl.inputs.image.decode_image` converts training
        images, and its TFLite file, which converts RGB itself, the RGB."""
        from kerastl.export.verify import to_grayscale

        if spec.shape[2] == 1:
            return to_grayscale(raw), raw
        return raw, self.tflite_inputs(model, raw)

    def synthetic_inputs(self, model, spec, n, *, seed=0):
        from kerastl.export.verify import synthetic_images

        return synthetic_images(n, spec.shape[:2], seed=seed)

    # ---------------------------------------------------------------------------------------------- pretraining
    def pretraining_source(self, config, channels, global_batch):
        from kerastl.pretraining.run import image_source

        return image_source(config, channels, global_batch)

    def pretraining_model(self, config, source, channels):
        from kerastl.pretraining.run import image_model_factory

        return image_model_factory(config, source, channels)


IMAGE = register(Image())
