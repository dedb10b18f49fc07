"""Step 1 for audio and text: their pre-training sources and models (`kerastl.pretraining.run` runs the training).

Sources:
- audio: `synthetic:pseudowords` (`kerastl.pretraining.synthetic_audio`, generated in the tf.data graph), a class-per-folder
  directory of WAV files, or `tfds:NAME[:SPLIT]` of a prepared TFDS audio set (`audio` and `label` features,
  e.g. speech_commands);
- text: `corpus:python-docs` (`kerastl.pretraining.corpora`, text that ships with Python) or a class-per-folder directory
  of `.txt` files.

Models: the backbone (`kerastl.backbones.archs.build_audio_backbone`, `build_text_backbone`) with a
pre-training classifier on top (pooling, dropout, `Dense(name="predictions")`), as for images. The audio front
end's standardisation is measured on the source; the text vocabulary is built from the training texts.
"""

from __future__ import annotations

from pathlib import Path

from kerastl.errors import KerastlError, UsageError
from kerastl.pretraining.head import pretraining_classifier

# The feature that holds the waveform in a TFDS audio classification set (speech_commands, ...).
TFDS_AUDIO_FEATURE = "audio"


def audio_source(config, global_batch: int):
    """The `kerastl.pretraining.sources.Source` of an audio `config.source` (`synthetic:` of an audio
    generator, `tfds:` of a set with an `audio` feature, a folder of WAV files), or None for another kind.

    Raises:
        KerastlError: the folder or TFDS set cannot be read.
    """
    from kerastl.pretraining.synthetic_audio import SOURCES

    spec = config.source
    if spec.startswith("synthetic:"):
        name = spec[len("synthetic:"):]
        return _synthetic_audio(config, name, global_batch) if name in SOURCES else None
    if spec.startswith("tfds:"):
        return _tfds_audio(config, spec[len("tfds:"):], global_batch)
    scan = _folder_scan(spec, "audio")
    if scan is None:
        return None
    return _audio_folder(config, scan, f"folder {spec} ({len(scan.class_names)} classes)", global_batch)


def text_source(config, global_batch: int):
    """The `Source` of a text `config.source` (`corpus:NAME`, a folder of `.txt` files), or None.

    Raises:
        UsageError: an unknown corpus.
        KerastlError: the folder cannot be read.
    """
    spec = config.source
    if spec.startswith("corpus:"):
        from kerastl.pretraining.corpora import corpus_examples

        texts, labels, classes, description = corpus_examples(spec[len("corpus:"):])
        by_class = [[t for t, y in zip(texts, labels) if y == i] for i in range(len(classes))]
        return _text_source(config, classes, by_class, description, global_batch)
    scan = _folder_scan(spec, "text")
    if scan is None:
        return None
    from kerastl.core.records import InputSpec
    from kerastl.data import fits_in_memory
    from kerastl.inputs.text import load_texts

    description = f"folder {spec} ({len(scan.class_names)} classes)"
    if fits_in_memory(InputSpec(modality=scan.modality, shape=()), [f for files in scan.files for f in files]):
        by_class = [list(load_texts(files)) for files in scan.files]
        return _text_source(config, scan.class_names, by_class, description, global_batch)
    # Above the memory bound that images and audio keep too, the texts stream from their files.
    by_class = [[str(f) for f in files] for files in scan.files]
    return _text_source(config, scan.class_names, by_class, description, global_batch, from_files=True)


def _folder_scan(spec, modality: str):
    """The decodable files of folder `spec` when it holds files of `modality`, else None."""
    if spec.startswith(("synthetic:", "tfds:", "corpus:")) or not Path(spec).is_dir():
        return None
    from kerastl.data import detect_modality, drop_undecodable, scan_folder

    if detect_modality(spec) != modality:
        return None
    return drop_undecodable(scan_folder(spec, modality))


def _num_samples(config) -> int:
    return round(int(config.sample_rate) * float(config.clip_seconds))


def _synthetic_audio(config, name, global_batch):
    import tensorflow as tf

    from kerastl.pretraining.sources import Source
    from kerastl.pretraining.synthetic_audio import synthetic_audio_dataset

    common = dict(num_classes=int(config.classes), sample_rate=int(config.sample_rate),
                  num_samples=_num_samples(config), seed=int(config.seed))
    train = synthetic_audio_dataset(name, split="train", **common).batch(global_batch, drop_remainder=True)
    val = (synthetic_audio_dataset(name, split="validation", **common)
           .take(int(config.validation_steps) * global_batch).batch(global_batch).cache())
    return Source(train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE), int(config.classes),
                  f"synthetic:{name} ({config.classes} classes, generated in the tf.data graph)", None,
                  modality="audio")


def _tfds_audio(config, spec, global_batch):
    """A TFDS audio classification set (an `audio` and a `label` feature, e.g. speech_commands), or None when
    the builder has no audio feature (the image path then handles it, or says what to prepare)."""
    import tensorflow as tf

    from kerastl.pretraining.sources import open_tfds, tfds_source

    try:
        builder, name, split_name = open_tfds(spec)
    except KerastlError:  # unknown or unprepared: the image path reports it in one line
        return None
    features = builder.info.features
    if TFDS_AUDIO_FEATURE not in features or "label" not in features:
        return None
    rate = int(getattr(features[TFDS_AUDIO_FEATURE], "sample_rate", 0) or 0)
    if rate and rate != int(config.sample_rate):
        raise UsageError(f"tfds:{name} is sampled at {rate} Hz; pass --sample-rate {rate}")
    num_samples = _num_samples(config)
    scale = 32768.0 if features[TFDS_AUDIO_FEATURE].dtype == tf.int16 else 1.0

    def convert(example):
        wave = tf.cast(example[TFDS_AUDIO_FEATURE], tf.float32) / scale
        if wave.shape.rank == 2:  # (samples, channels): mixed down to mono
            wave = tf.reduce_mean(wave, axis=-1)
        length = tf.shape(wave)[0]
        start = tf.maximum(length - num_samples, 0) // 2  # centre crop, as kerastl.inputs.audio.fit_length
        wave = wave[start:start + num_samples]
        pad = num_samples - tf.shape(wave)[0]
        wave = tf.pad(wave, [[pad // 2, pad - pad // 2]])
        return tf.ensure_shape(tf.clip_by_value(wave, -1.0, 1.0), [num_samples]), tf.cast(example["label"], tf.int32)

    return tfds_source(builder, name, split_name, convert, config=config, global_batch=global_batch,
                       num_classes=int(features["label"].num_classes), modality="audio",
                       note=f", audio at {rate or '?'} Hz")


def _split_lists(class_names, by_class, seed):
    from kerastl.data import FolderScan, split

    # `split` shuffles and partitions per class; the items need not be paths.
    scan = FolderScan(root=Path("."), class_names=list(class_names), files=[list(items) for items in by_class])
    return split(scan, validation_fraction=0.05, seed=seed)


def _audio_folder(config, scan, description, global_batch):
    """A folder of WAV files: read once into memory when the clips fit in
    `kerastl.data.pipelines.MEMORY_CACHE_BYTES`, else streamed from the files, paths shuffled before reading
    (`kerastl.data.example_dataset`)."""
    import tensorflow as tf

    from kerastl.core.records import InputSpec
    from kerastl.data import example_dataset
    from kerastl.pretraining.sources import Source

    parts = _split_lists(scan.class_names, scan.files, config.seed)
    spec = InputSpec(modality="audio", shape=(_num_samples(config),), sample_rate=int(config.sample_rate))
    train = (example_dataset(spec, parts.train_files, parts.train_labels, shuffle=True, seed=config.seed)
             .repeat().batch(global_batch, drop_remainder=True))
    val = example_dataset(spec, parts.val_files, parts.val_labels).batch(global_batch)
    return Source(train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE), len(scan.class_names),
                  description, max(1, len(parts.train_files) // global_batch), modality="audio")


def _text_source(config, class_names, by_class, description, global_batch, *, from_files: bool = False):
    """The Source of texts grouped by class: `by_class` holds the strings themselves, or with `from_files` the
    paths of `.txt` files, which are then read as the pipeline runs (paths shuffled before reading) and never
    held all at once; the vocabulary is then adapted on a stream of the training files too (`Source.texts`)."""
    import numpy as np
    import tensorflow as tf

    from kerastl.inputs.text import text_reader
    from kerastl.pretraining.sources import Source

    parts = _split_lists(class_names, by_class, config.seed)
    if len(parts.train_files) < global_batch:
        raise KerastlError(f"{config.source} has {len(parts.train_files)} training texts, fewer than one batch of "
                           f"{global_batch}; lower --batch-size or add texts")
    read = text_reader()[0] if from_files else None

    def examples(items, labels, *, training: bool):
        dataset = tf.data.Dataset.from_tensor_slices((tf.constant(items, tf.string), np.asarray(labels, "int32")))
        if training:
            dataset = dataset.shuffle(len(items), seed=config.seed).repeat()
        if from_files:  # after the shuffle, which then holds paths, not texts
            dataset = dataset.map(lambda x, y: (read(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(global_batch, drop_remainder=training)

    train = examples(parts.train_files, parts.train_labels, training=True)
    val = examples(parts.val_files, parts.val_labels, training=False) if parts.val_files else None
    texts = list(parts.train_files)
    if from_files:
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string)).map(
            read, num_parallel_calls=tf.data.AUTOTUNE)
    return Source(train.prefetch(tf.data.AUTOTUNE), val, len(class_names), description,
                  max(1, len(parts.train_files) // global_batch), modality="text", texts=texts)


def audio_model_factory(config, source):
    """For an audio `source`: `(input_shape, input_record, preprocessing, make_model)`, where `make_model()`
    returns `(pretraining_model, backbone)` as `kerastl.pretraining.run.build_pretraining_model`.

    Raises:
        UsageError: an architecture of another modality.
    """
    import numpy as np

    from kerastl.backbones.archs import build_audio_backbone
    from kerastl.inputs.audio import logmel_statistics

    num_samples = _num_samples(config)
    sample = np.concatenate([x.numpy() for x, _ in source.train.take(4)])
    mean, std = logmel_statistics(sample, sample_rate=int(config.sample_rate))
    options = dict(sample_rate=int(config.sample_rate), num_samples=num_samples, mean=mean, std=std)

    def make_model():
        backbone = build_audio_backbone(config.arch, **options)
        model = pretraining_classifier(backbone, source.num_classes, dropout=config.dropout, seed=config.seed,
                                       name=backbone.name)
        return model, backbone

    record = build_audio_backbone(config.arch, **options).get_layer("log_mel").to_record()
    input_record = {"shape": [num_samples], "dtype": "float32", "range": [-1, 1], "layout": "waveform",
                    "channels": "mono", "sample_rate": int(config.sample_rate),
                    "clip_seconds": float(config.clip_seconds)}
    return (num_samples,), input_record, record, make_model


def text_model_factory(config, source):
    """For a text `source`: as `audio_model_factory`. Text trains in float32: `keras.mixed_precision` would give
    the tokenizer a float dtype on saving.

    Raises:
        UsageError: an architecture of another modality, or precision "mixed".
    """
    from kerastl.backbones.archs import build_text_backbone
    from kerastl.inputs.text import SPLIT, STANDARDIZE, build_vocabulary

    if config.precision == "mixed":
        raise UsageError("text pre-training runs in float32 (mixed precision would give the tokenizer a float "
                         "dtype on saving): drop --precision mixed")
    # `config` is pretrain's own copy (see kerastl.pretraining.run.pretrain): "auto" resolves to float32 here.
    config.precision = "float32"
    vocabulary = build_vocabulary(source.texts, vocabulary_size=int(config.vocabulary_size),
                                  sequence_length=int(config.sequence_length))

    def make_model():
        backbone = build_text_backbone(config.arch, vocabulary, sequence_length=int(config.sequence_length))
        model = pretraining_classifier(backbone, source.num_classes, dropout=config.dropout, seed=config.seed,
                                       name=backbone.name)
        return model, backbone

    input_record = {"shape": [], "dtype": "string", "encoding": "utf-8", "layout": "text",
                    "sequence_length": int(config.sequence_length)}
    preprocessing = {"mode": "text_vectorization", "standardize": STANDARDIZE, "split": SPLIT,
                     "sequence_length": int(config.sequence_length), "vocabulary_size": len(vocabulary) + 2,
                     "vocabulary_source": "the training texts of the pre-training source"}
    return (), input_record, preprocessing, make_model
