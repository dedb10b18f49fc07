"""tf.data pipelines of labelled files: decoding (`decode_image`, `load_images`, `load_inputs`), the memory
estimate that decides between in-memory and streamed sets (`MEMORY_CACHE_BYTES`, `fits_in_memory`),
`example_dataset`, `batched`, `make_dataset` and `training_examples`, and the stateless augmentation
(`augmentation`, `augmentation_key`, `augment_images`).

Images are decoded here; audio (`kerastl.modalities.audio`) and text (`kerastl.modalities.text`) files by their
modules. `input_spec` and the functions after it (`make_dataset`, `load_inputs`, ...) dispatch on the modality, so
that fine-tuning, evaluation and export treat the three alike.
"""

from __future__ import annotations

import os

from kerastl.core.records import InputSpec, UndeclaredInput
from kerastl.errors import KerastlError, UsageError

# Sets whose decoded inputs (`decoded_bytes`: float32 pixels or samples, the bytes of texts) fit in this are read
# into memory once; larger ones stream from their files, paths shuffled before decoding (`example_dataset`,
# `training_examples`). One bound for images, audio and text.
MEMORY_CACHE_BYTES = 2 << 30


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


# Augmentation keys: `(seed, epoch * 2**20 + batch)`, int64, as `kerastl.train.resume.epoch_batches` builds
# them, so a batch's augmentation depends only on the seed, the epoch and the batch's place in that epoch (whose
# examples are themselves a stateless permutation keyed on (seed, epoch)).
AUGMENT_BATCHES_PER_EPOCH = 1 << 20


def augmentation_key(seed: int, epoch, batch):
    """The stateless key of a batch's augmentation: int64 `[seed, epoch * 2**20 + batch]` (see above)."""
    import tensorflow as tf

    epoch, batch = tf.cast(epoch, tf.int64), tf.cast(batch, tf.int64)
    return tf.stack([tf.constant(int(seed), tf.int64), epoch * AUGMENT_BATCHES_PER_EPOCH + batch])


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


def image_dataset(files, labels, *, image_size, channels: int, batch_size: int, shuffle: bool = False,
                  augment: bool = False, seed: int = 0, cache: bool | None = None):
    """The tf.data pipeline of image files: `(pixels, label)` batches, pixels float32 in [0, 255] of shape
    (batch, *image_size, channels). See `example_dataset` for `shuffle` and `cache` (None: decoded once into
    memory when the set fits in `MEMORY_CACHE_BYTES`, else decoded as it streams) and `batched` for `augment`.
    """
    spec = InputSpec(modality="image", shape=(*(int(s) for s in image_size), int(channels)))
    examples = example_dataset(spec, files, labels, shuffle=shuffle, seed=seed, in_memory=cache)
    return batched(spec, examples, batch_size=batch_size, augment=augment, seed=seed)


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


# ------------------------------------------------------------------------------------ dispatch by modality


def input_spec(model) -> InputSpec:
    """The `InputSpec` of a Keras model (a backbone or a classifier), from what the model records rather than
    a guess from its shape: strings are text (the dtype says so); a float (samples,) input is a waveform only
    when a `LogMelSpectrogram` or `Waveform` layer in the model gives its sample rate (kerastl's audio
    backbones carry one); three axes with 1 or 3 channels are images, kerastl's default (its image backbones
    carry an `ImagePreprocessing` layer).

    Raises:
        UndeclaredInput: a float (samples,) input with no sample-rate layer (it may be a feature vector);
            the one line says how to declare a waveform.
        KerastlError: an input of none of these forms (one line naming its shape and dtype).
    """
    if len(model.inputs) != 1:
        raise KerastlError(f"the model has {len(model.inputs)} inputs; kerastl reads files into models with one")
    shape = tuple(None if d is None else int(d) for d in model.input.shape[1:])
    dtype = str(model.input.dtype)
    if "string" in dtype:
        return InputSpec("text", shape)
    if len(shape) == 1 and shape[0] is not None and "float" in dtype:
        from kerastl.modalities.audio import sample_rate_of

        rate = sample_rate_of(model)
        if rate is None:
            raise UndeclaredInput(
                f"the model takes {dtype} inputs of shape {shape} and nothing in it says they are waveforms "
                "(they may be feature vectors; kerastl does not guess from a shape): to use it as audio, put a "
                "kerastl.modalities.audio.Waveform(sample_rate) layer first, or give it a manifest with \"modality\": "
                "\"audio\" (a hub: module: append #modality=audio to the spec)"
            )
        return InputSpec("audio", shape, rate)
    if len(shape) == 3 and shape[2] in (1, 3) and None not in shape:
        return InputSpec("image", shape)
    raise KerastlError(f"the model takes {dtype} inputs of shape {shape}: neither images (H, W, 1 or 3), raw "
                       "waveforms (samples,) nor strings, so kerastl cannot read files into it")


def decoded_bytes(spec: InputSpec, files) -> int:
    """What `files` cost in memory once read for a model taking `spec`: 4 bytes per float32 pixel or sample,
    and for text the bytes of the texts (their file sizes, an upper bound of their UTF-8 without a BOM). The one
    estimate behind every in-memory decision (`fits_in_memory`)."""
    if spec.modality == "text":
        return sum(os.path.getsize(f) for f in files)
    per_example = 1
    for size in spec.shape:
        per_example *= int(size or 1)
    return 4 * per_example * len(files)


def fits_in_memory(spec: InputSpec, files) -> bool:
    """Whether `files`, read for `spec`, fit in `MEMORY_CACHE_BYTES` (read at call time, so it can be lowered)."""
    return decoded_bytes(spec, files) <= MEMORY_CACHE_BYTES


def _reader(spec: InputSpec):
    """`(read, signature)`: `read(path)` is a graph function giving one file's input as `load_inputs` gives it,
    of type `signature` (a tf.TensorSpec)."""
    import tensorflow as tf

    if spec.modality == "audio":
        from kerastl.modalities.audio import wav_reader

        return wav_reader(spec.sample_rate, spec.shape[0])
    if spec.modality == "text":
        from kerastl.modalities.text import text_reader

        return text_reader()
    size, channels = tuple(int(s) for s in spec.shape[:2]), int(spec.shape[2])
    return (lambda path: decode_image(path, size, channels)), tf.TensorSpec((*size, channels), tf.float32)


def read_batch(spec: InputSpec):
    """A graph function from a batch of file paths (tf.string, (batch,)) to the batch of their inputs, read as
    `load_inputs` reads them, bit for bit: what streams a training set too large for memory."""
    import tensorflow as tf

    read, signature = _reader(spec)
    return lambda paths: tf.map_fn(read, paths, fn_output_signature=signature)


def augmentation(spec: InputSpec):
    """The one augmentation of `spec`'s modality, `augment(batch, key) -> batch` (stateless, keyed on
    `augmentation_key(seed, epoch, batch)`): `augment_images`, or `kerastl.modalities.audio.augment_waveforms`.

    Raises:
        UsageError: text, which has no input augmentation (textcnn-l's word dropout is part of the model).
    """
    if spec.modality == "audio":
        from kerastl.modalities.audio import augment_waveforms

        return augment_waveforms
    if spec.modality == "text":
        raise UsageError("--augment applies to images and audio; text has no input augmentation (the word "
                         "dropout of textcnn-l is part of the model): drop --augment")
    return augment_images


def example_dataset(spec: InputSpec, files, labels, *, shuffle: bool = False, seed: int = 0,
                    in_memory: bool | None = None):
    """Unbatched `(input, label)` examples of `files` for a model taking `spec`, the shuffle buffer holding
    indices or paths, never decoded inputs.

    `in_memory=None` decides by `fits_in_memory`. In memory: every file is read once (`load_inputs`), and with
    `shuffle` a seeded permutation of their indices, new each pass, picks them. Otherwise the paths are shuffled
    the same way and each file is read after (`read_batch`'s reader), so memory stays at one shuffle buffer of
    paths and a few batches.
    """
    import numpy as np
    import tensorflow as tf

    labels = tf.constant(np.asarray(list(labels), "int32").reshape(-1))
    if in_memory is None:
        in_memory = fits_in_memory(spec, files)
    n = len(files)
    if in_memory:
        inputs = load_inputs(spec, files)
        inputs = tf.constant(list(inputs), tf.string) if spec.modality == "text" else tf.constant(inputs)
        pick = lambda i: (tf.gather(inputs, i), tf.gather(labels, i))
    else:
        read, _ = _reader(spec)
        paths = tf.constant([str(f) for f in files], tf.string)
        pick = lambda i: (read(tf.gather(paths, i)), tf.gather(labels, i))
    order = tf.data.Dataset.range(n)
    if shuffle:
        order = order.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    return order.map(pick, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def batched(spec: InputSpec, examples, *, batch_size: int, augment: bool = False, seed: int = 0,
            drop_remainder: bool = False):
    """`examples` (an `example_dataset`) batched, with `augment` the modality's `augmentation` keyed on
    `augmentation_key(seed, 0, batch)` (each pass of the dataset repeats it: fine-tuning itself trains through
    `training_examples`, whose keys follow the epoch), then prefetched.

    Raises:
        UsageError: `augment` for text.
    """
    import tensorflow as tf

    dataset = examples.batch(batch_size, drop_remainder=drop_remainder)
    if augment:
        augment_batch = augmentation(spec)
        dataset = dataset.enumerate().map(
            lambda i, batch: (augment_batch(batch[0], augmentation_key(seed, 0, i)), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def training_examples(spec: InputSpec, files, labels, *, augment: bool = False):
    """A training set as `kerastl.train.resume.epoch_batches` takes it: `(inputs, labels, transform)`.

    When the set fits in memory (`fits_in_memory`), `inputs` are the decoded examples and `transform` is the
    augmentation or None. Above it, `inputs` are the file paths, so each epoch's stateless permutation shuffles
    paths, and `transform` reads a batch of them (`read_batch`), then augments it. Both paths give the same
    batches bit for bit, augmentation included (one function per modality, keyed on (seed, epoch, batch)), so a
    resumed run repeats the uninterrupted one whichever path it takes.

    Raises:
        UsageError: `augment` for text.
    """
    import numpy as np

    augment_batch = augmentation(spec) if augment else None
    labels = np.asarray(list(labels), "int32")
    if fits_in_memory(spec, files):
        return load_inputs(spec, files), labels, augment_batch
    read = read_batch(spec)
    if augment_batch is None:
        transform = lambda paths, key: read(paths)
    else:
        transform = lambda paths, key: augment_batch(read(paths), key)
    return np.asarray([str(f) for f in files], dtype=object), labels, transform


def make_dataset(spec: InputSpec, files, labels, *, batch_size: int, shuffle: bool = False,
                 augment: bool = False, seed: int = 0):
    """The tf.data pipeline of `files` for a model taking `spec`: batches of `(inputs, label)`, examples in
    memory or streamed as `example_dataset` decides, augmented as `batched` says.

    Raises:
        UsageError: `augment` for text.
    """
    if augment:
        augmentation(spec)  # refuses text before anything is read
    examples = example_dataset(spec, files, labels, shuffle=shuffle, seed=seed)
    return batched(spec, examples, batch_size=batch_size, augment=augment, seed=seed)


def load_inputs(spec: InputSpec, files, *, batch_size: int = 64):
    """`files` read for a model taking `spec`, in order: a float32 array of pixels or waveforms, or a numpy
    array of strings."""
    if spec.modality == "audio":
        from kerastl.modalities.audio import load_waveforms

        return load_waveforms(files, sample_rate=spec.sample_rate, num_samples=spec.shape[0])
    if spec.modality == "text":
        from kerastl.modalities.text import load_texts

        return load_texts(files)
    return load_images(files, image_size=spec.shape[:2], channels=spec.shape[2], batch_size=batch_size)
