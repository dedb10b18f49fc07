"""tf.data pipelines of labelled files: reading them (`load_inputs`, `read_batch`), the memory estimate that
decides between in-memory and streamed sets (`MEMORY_CACHE_BYTES`, `fits_in_memory`), `example_dataset`,
`batched`, `make_dataset` and `training_examples`, and the stateless augmentation keys (`augmentation`,
`augmentation_key`).

What differs between input types (decoding, the augmentation, the memory cost) is asked of the data's
`kerastl.core.modality.Modality`, so that fine-tuning, evaluation and export treat every modality alike.
`decode_image`, `load_images` and `augment_images` (`kerastl.inputs.image`) are re-exported here.
"""

from __future__ import annotations

from kerastl.core import modality as modalities
from kerastl.core.records import InputSpec, UndeclaredInput  # noqa: F401 (UndeclaredInput: re-exported)
from kerastl.inputs.image import augment_images, decode_image, load_images  # noqa: F401 (re-exported)

# Sets whose decoded inputs (`decoded_bytes`: float32 pixels or samples, the bytes of texts) fit in this are read
# into memory once; larger ones stream from their files, paths shuffled before decoding (`example_dataset`,
# `training_examples`). One bound for images, audio and text.
MEMORY_CACHE_BYTES = 2 << 30


# Augmentation keys: `(seed, epoch * 2**20 + batch)`, int64, as `kerastl.train.resume.epoch_batches` builds
# them, so a batch's augmentation depends only on the seed, the epoch and the batch's place in that epoch (whose
# examples are themselves a stateless permutation keyed on (seed, epoch)).
AUGMENT_BATCHES_PER_EPOCH = 1 << 20


def augmentation_key(seed: int, epoch, batch):
    """The stateless key of a batch's augmentation: int64 `[seed, epoch * 2**20 + batch]` (see above)."""
    import tensorflow as tf

    epoch, batch = tf.cast(epoch, tf.int64), tf.cast(batch, tf.int64)
    return tf.stack([tf.constant(int(seed), tf.int64), epoch * AUGMENT_BATCHES_PER_EPOCH + batch])


def image_dataset(files, labels, *, image_size, channels: int, batch_size: int, shuffle: bool = False,
                  augment: bool = False, seed: int = 0, cache: bool | None = None):
    """The tf.data pipeline of image files: `(pixels, label)` batches, pixels float32 in [0, 255] of shape
    (batch, *image_size, channels). See `example_dataset` for `shuffle` and `cache` (None: decoded once into
    memory when the set fits in `MEMORY_CACHE_BYTES`, else decoded as it streams) and `batched` for `augment`.
    """
    spec = InputSpec(modality="image", shape=(*(int(s) for s in image_size), int(channels)))
    examples = example_dataset(spec, files, labels, shuffle=shuffle, seed=seed, in_memory=cache)
    return batched(spec, examples, batch_size=batch_size, augment=augment, seed=seed)


# ------------------------------------------------------------------------------------ dispatch by modality


def input_spec(model) -> InputSpec:
    """The `InputSpec` of a Keras model (a backbone or a classifier), from the markers it carries rather than a
    guess from its shape (`kerastl.core.modality.of_model`): a string input is text, a waveform carries its
    sample-rate layer (`kerastl.inputs.audio.MARKER_LAYERS`), an image its `ImagePreprocessing`; a float (H, W, 1
    or 3) input with no marker at all is taken as images, the one default, for Keras files made elsewhere.

    Raises:
        UndeclaredInput: a float (samples,) input with no sample-rate layer (it may be a feature vector);
            the one line says how to declare a waveform.
        KerastlError: an input of none of these forms (one line naming its shape and dtype).
    """
    return modalities.of_model(model)


def decoded_bytes(spec: InputSpec, files) -> int:
    """What `files` cost in memory once read for a model taking `spec` (`Modality.decoded_bytes`: 4 bytes per
    float32 pixel or sample, the bytes of texts). The one estimate behind every in-memory decision
    (`fits_in_memory`)."""
    return modalities.get(spec.modality).decoded_bytes(spec, files)


def fits_in_memory(spec: InputSpec, files) -> bool:
    """Whether `files`, read for `spec`, fit in `MEMORY_CACHE_BYTES` (read at call time, so it can be lowered)."""
    return decoded_bytes(spec, files) <= MEMORY_CACHE_BYTES


def _reader(spec: InputSpec):
    """`(read, signature)`: `read(path)` is a graph function giving one file's input as `load_inputs` gives it,
    of type `signature` (a tf.TensorSpec): `Modality.reader`."""
    return modalities.get(spec.modality).reader(spec)


def read_batch(spec: InputSpec):
    """A graph function from a batch of file paths (tf.string, (batch,)) to the batch of their inputs, read as
    `load_inputs` reads them, bit for bit: what streams a training set too large for memory."""
    import tensorflow as tf

    read, signature = _reader(spec)
    return lambda paths: tf.map_fn(read, paths, fn_output_signature=signature)


def augmentation(spec: InputSpec):
    """The one augmentation of `spec`'s modality, `augment(batch, key) -> batch` (stateless, keyed on
    `augmentation_key(seed, epoch, batch)`): `Modality.augmentation`, e.g.
    `kerastl.inputs.image.augment_images` or `kerastl.inputs.audio.augment_waveforms`.

    Raises:
        UsageError: a modality with no input augmentation (text: textcnn-l's word dropout is part of the model).
    """
    return modalities.get(spec.modality).augmentation()


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
        # Strings come as numpy object arrays, which tf.constant does not take as they are.
        inputs = tf.constant(list(inputs), tf.string) if inputs.dtype == object else tf.constant(inputs)
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
    """`files` read for a model taking `spec`, in order (`Modality.load`): a float32 array of pixels or
    waveforms, or a numpy array of strings."""
    return modalities.get(spec.modality).load(spec, files, batch_size=batch_size)
