"""Step 1 of transfer learning: supervised pre-training on a large dataset of the same input type.

`pretrain(...)` trains an architecture on a source and writes a backbone directory (the network minus its
output layer, a `manifest.json` and the run's TensorBoard logs beside it) that `kerastl finetune --backbone`
and `kerastl backbones` understand.

Sources:
- a class-per-folder image directory;
- `tfds:NAME[:SPLIT]`, a TFDS builder's prepared data (offline: one line says what to download and where);
- `synthetic:NAME`, generated inside the tf.data graph (`kerastl.pretraining.synthetic_image`), unlimited images per class;
- audio and text: `synthetic:pseudowords`, `corpus:python-docs`, folders of WAV or .txt files and TFDS audio
  sets (`kerastl.pretraining.other_sources`, which also builds their models; the training here is shared).

Distribution (`kerastl.pretraining.distribute`; precision and XLA are measured by `kerastl.pretraining.execution`):
- `auto` (the default tf.distribute strategy, one device) and `mirrored` (several GPUs) train with Keras
  `Model.fit`, `BackupAndRestore` and `TensorBoard`.
- `multiworker` (several machines, `TF_CONFIG`) trains with a short custom step under `strategy.run`,
  because Keras 3 `Model.fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585).
  Backups there are `tf.train.CheckpointManager` checkpoints written each epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import time
from pathlib import Path

from kerastl.errors import KerastlError, UsageError
from kerastl.pretraining.distribute import custom_training, is_chief, make_distribution
from kerastl.pretraining.execution import (
    choose_execution,
    count_flops,
    hardware_summary,
    matmul_peak_flops,
    mixed_policy,
)
from kerastl.pretraining.head import pretraining_classifier
from kerastl.pretraining.sources import Source, open_tfds, tfds_source

PRECISIONS = ("auto", "float32", "mixed")
DISTRIBUTIONS = ("auto", "mirrored", "multiworker")
DEFAULT_STEPS_PER_EPOCH = 500
# The feature that holds the pixels in a TFDS image classification set.
TFDS_IMAGE_FEATURE = "image"


@dataclasses.dataclass
class PretrainConfig:
    """Pre-training options.

    Attributes:
        source: a folder, `tfds:NAME[:SPLIT]` or `synthetic:NAME`.
        arch: a `keras.applications` name (optionally `keras:`-prefixed) or a `kerastl.backbones.archs` name.
        image_size: square input size.
        channels: 1 or 3 (`None`: 1 for synthetic sources, 3 otherwise).
        classes: number of classes for synthetic sources (folders and TFDS define their own).
        epochs: epochs to train (an epoch of an endless source is `steps_per_epoch` steps).
        steps: total steps instead of epochs (rounded up to whole epochs).
        steps_per_epoch: steps per epoch for endless sources (and a cap for others).
        batch_size: global batch size.
        learning_rate: peak learning rate of the cosine schedule (Adam, with weight decay).
        precision: auto (measured), float32, or mixed (float16 on GPU, bfloat16 on CPU).
        jit_compile: None measures XLA against plain graph execution; True/False forces it.
        distribution: auto, mirrored or multiworker.
        validation_steps: batches of held-out data evaluated each epoch.
        seed: seeds the data order, the initialisation and the synthetic images.
        dropout: dropout before the pre-training classifier.
        description: free text for the manifest.
        default: mark the backbone as `kerastl finetune`'s default in its manifest.
        deterministic: TensorFlow op determinism and no timing-based choice of precision or XLA; with the
            same command, a run resumed after a kill ends with the weights of an uninterrupted run.
        sample_rate, clip_seconds: audio sources: the waveform the backbone takes (mono).
        sequence_length, vocabulary_size: text sources: tokens per text and the vocabulary's size.
    """

    source: str
    arch: str = "smallnet-s"
    image_size: int = 28
    channels: int | None = None
    classes: int = 1000
    epochs: int = 10
    steps: int | None = None
    steps_per_epoch: int = DEFAULT_STEPS_PER_EPOCH
    batch_size: int = 128
    learning_rate: float = 2e-3
    precision: str = "auto"
    jit_compile: bool | None = None
    distribution: str = "auto"
    validation_steps: int = 20
    seed: int = 0
    dropout: float = 0.1
    description: str = ""
    default: bool = False
    deterministic: bool = False
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    sequence_length: int = 64
    vocabulary_size: int = 16000

    def validate(self) -> None:
        """Raises UsageError naming the first invalid value."""
        checks = [
            ("--image-size", self.image_size, 8 <= int(self.image_size) <= 1024, "between 8 and 1024"),
            ("--classes", self.classes, int(self.classes) >= 2, "at least 2"),
            ("--epochs", self.epochs, int(self.epochs) >= 1, "at least 1"),
            ("--steps", self.steps, self.steps is None or int(self.steps) >= 1, "at least 1"),
            ("--steps-per-epoch", self.steps_per_epoch, int(self.steps_per_epoch) >= 1, "at least 1"),
            ("--batch-size", self.batch_size, int(self.batch_size) >= 1, "at least 1"),
            ("--learning-rate", self.learning_rate, 0 < float(self.learning_rate) <= 10, "in (0, 10]"),
            ("--precision", self.precision, self.precision in PRECISIONS, f"one of {PRECISIONS}"),
            ("--strategy", self.distribution, self.distribution in DISTRIBUTIONS, f"one of {DISTRIBUTIONS}"),
            ("--channels", self.channels, self.channels in (None, 1, 3), "1 or 3"),
            ("--sample-rate", self.sample_rate, 8000 <= int(self.sample_rate) <= 96000, "between 8000 and 96000"),
            ("--clip-seconds", self.clip_seconds, 0.25 <= float(self.clip_seconds) <= 30, "between 0.25 and 30"),
            ("--sequence-length", self.sequence_length, 4 <= int(self.sequence_length) <= 4096,
             "between 4 and 4096"),
            ("--vocabulary-size", self.vocabulary_size, 100 <= int(self.vocabulary_size) <= 1_000_000,
             "between 100 and 1000000"),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise UsageError(f"{name} must be {expected}. Received: {value}")

    def total_epochs(self) -> int:
        if self.steps is not None:
            return max(1, math.ceil(int(self.steps) / int(self.steps_per_epoch)))
        return int(self.epochs)


# ---------------------------------------------------------------------------------------------- sources




def load_source(config: PretrainConfig, channels: int, global_batch: int) -> Source:
    """Resolves `config.source` into batched tf.data pipelines (map in parallel, cache where it fits,
    shuffle, batch, prefetch; seeded).

    Raises:
        UsageError: an unknown source kind or synthetic name.
        KerastlError: the folder or TFDS data cannot be read (one line says what to fetch and where).
    """
    from kerastl.core.modality import all_modalities, get
    from kerastl.data import detect_modality

    kind = detect_modality(config.source) if Path(config.source).is_dir() else None
    candidates = [get(kind)] if kind is not None else all_modalities()
    for modality in candidates:
        found = modality.pretraining_source(config, channels, global_batch)
        if found is not None:
            return found
    if kind is not None:
        raise UsageError(f"kerastl pretrain builds no backbones from {get(kind).plural}; give --data images, "
                         "WAV files or .txt files")
    raise UsageError(f"--data must be a class-per-folder directory, tfds:NAME[:SPLIT], synthetic:NAME or "
                     f"corpus:NAME. Received: {config.source}")


def image_source(config: PretrainConfig, channels: int, global_batch: int) -> Source | None:
    """The image `Source` of `config.source` (`synthetic:NAME`, `tfds:NAME[:SPLIT]`, a folder of images), or
    None for a source of another kind. Asked last (`kerastl.modalities.image` is the fallback), so a TFDS set or
    synthetic name nothing else claims is reported here.

    Raises:
        UsageError: an unknown synthetic name.
        KerastlError: the folder or TFDS data cannot be read.
    """
    source = config.source
    if source.startswith("synthetic:"):
        return _synthetic_source(config, source[len("synthetic:"):], channels, global_batch)
    if source.startswith("tfds:"):
        return _tfds_source(config, source[len("tfds:"):], channels, global_batch)
    if Path(source).is_dir():
        return _folder_source(config, Path(source), channels, global_batch)
    return None


def _synthetic_source(config, name, channels, global_batch) -> Source:
    import tensorflow as tf

    from kerastl.pretraining.synthetic_image import synthetic_dataset

    common = dict(num_classes=int(config.classes), image_size=int(config.image_size), channels=channels,
                  seed=int(config.seed))
    train = synthetic_dataset(name, split="train", **common).batch(global_batch, drop_remainder=True)
    # A fixed held-out set: the same validation images every epoch, cached after the first pass.
    val = (synthetic_dataset(name, split="validation", **common)
           .take(int(config.validation_steps) * global_batch).batch(global_batch).cache())
    return Source(train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE), int(config.classes),
                  f"synthetic:{name} ({config.classes} classes, generated in the tf.data graph)", None)


def _folder_source(config, root: Path, channels, global_batch) -> Source:
    from kerastl.data import drop_undecodable, image_dataset, scan_folder, split

    scan = drop_undecodable(scan_folder(root))
    parts = split(scan, validation_fraction=0.05, seed=config.seed)
    size = (int(config.image_size),) * 2
    train = image_dataset(parts.train_files, parts.train_labels, image_size=size, channels=channels,
                          batch_size=global_batch, shuffle=True, seed=config.seed).repeat()
    val = image_dataset(parts.val_files, parts.val_labels, image_size=size, channels=channels,
                        batch_size=global_batch)
    return Source(train, val, len(scan.class_names), f"folder {root} ({len(scan.class_names)} classes)",
                  max(1, len(parts.train_files) // global_batch))


def _tfds_source(config, spec, channels, global_batch) -> Source:
    import tensorflow as tf

    builder, name, split_name = open_tfds(spec)
    info = builder.info
    label_key = "label" if "label" in info.features else None
    image_key = TFDS_IMAGE_FEATURE if TFDS_IMAGE_FEATURE in info.features else None
    if label_key is None or image_key is None:
        raise KerastlError(f"TFDS dataset '{name}' has no image/label features; pick an image classification set")
    num_classes = int(info.features[label_key].num_classes)
    size = (int(config.image_size),) * 2

    def convert(example):
        image = tf.image.resize(tf.cast(example[image_key], tf.float32), size, antialias=True)
        if image.shape[-1] == 1 and channels == 3:
            image = tf.image.grayscale_to_rgb(image)
        elif image.shape[-1] == 3 and channels == 1:
            image = tf.image.rgb_to_grayscale(image)
        return tf.clip_by_value(image, 0.0, 255.0), tf.cast(example[label_key], tf.int32)

    return tfds_source(builder, name, split_name, convert, config=config, global_batch=global_batch,
                       num_classes=num_classes, modality="image")




# ------------------------------------------------------------------------------------------ architecture


def build_pretraining_model(arch: str, input_shape, num_classes: int, *, mean, std, dropout: float, seed: int):
    """Raw pixels → ImagePreprocessing (scale to [0, 1], standardise) → `arch` features → classifier.

    Returns `(model, backbone)`: the backbone shares its layers with the model and ends at the feature map.

    Raises:
        UsageError: unknown architecture.
    """
    import keras

    from kerastl.backbones import keras_application_names
    from kerastl.backbones.archs import SMALLNETS, smallnet_features
    from kerastl.inputs.image import ImagePreprocessing

    name = arch.removeprefix("keras:")
    inputs = keras.Input(tuple(input_shape), name="pixels")
    preprocess = ImagePreprocessing(mode="scale", scale=1.0 / 255.0, mean=mean, std=std, name="preprocessing")
    x = preprocess(inputs)
    # Both kinds are built on the preprocessing output, so the backbone is one flat functional model whose
    # layers are its own (for top:N and --cut).
    if name in SMALLNETS:
        features = smallnet_features(name, x)
    elif name in keras_application_names():
        constructor = getattr(keras.applications, name)
        try:
            features = constructor(include_top=False, weights=None, input_tensor=x).output
        except ValueError as error:
            raise UsageError(f"cannot build {name} for {tuple(input_shape)} inputs: "
                             f"{str(error).splitlines()[0]}") from None
    else:
        raise UsageError(f"unknown --arch '{arch}'; use a keras.applications name (e.g. MobileNetV2) or one of "
                         f"{', '.join(SMALLNETS)}")
    backbone = keras.Model(inputs, features, name=name.lower())
    return pretraining_classifier(backbone, num_classes, dropout=dropout, seed=seed, name=name.lower()), backbone


def image_model_factory(config: PretrainConfig, source: Source, channels: int):
    """For an image `source`: `(input_shape, input_record, preprocessing, make_model)`, the standardisation
    measured on the source, `make_model()` as `build_pretraining_model`."""
    input_shape = (int(config.image_size), int(config.image_size), channels)
    mean, std = _estimate_statistics(source.train, channels)
    input_record = {"shape": list(input_shape), "dtype": "float32", "range": [0, 255],
                    "layout": "channels_last", "color": "grayscale" if channels == 1 else "rgb"}
    preprocessing = {"mode": "scale", "scale": 1.0 / 255.0, "mean": mean, "std": std}

    def make_model():
        return build_pretraining_model(config.arch, input_shape, source.num_classes, mean=mean, std=std,
                                       dropout=config.dropout, seed=config.seed)

    return input_shape, input_record, preprocessing, make_model


# ------------------------------------------------------------------------------------------------ run


@dataclasses.dataclass
class PretrainResult:
    """The trained backbone model, its manifest, the output directory (None on non-chief workers), and `notes`:
    lines for the user (e.g. that a backup beside `out` was another run's and was not resumed)."""

    backbone: object
    manifest: dict
    out: Path | None
    weights_digest: str
    notes: list = dataclasses.field(default_factory=list)


def _estimate_statistics(dataset, channels: int, batches: int = 4):
    import numpy as np

    samples = [x.numpy() for x, _ in dataset.take(batches)]
    pixels = np.concatenate(samples).reshape(-1, channels) / 255.0
    mean = pixels.mean(axis=0)
    std = np.maximum(pixels.std(axis=0), 1e-3)
    return [round(float(m), 5) for m in mean], [round(float(s), 5) for s in std]


def pretrain(config: PretrainConfig, out, *, command: str | None = None, verbose="auto",
             log_dir=None) -> PretrainResult:
    """Pre-trains `config.arch` on `config.source` and writes the backbone to `out`.

    `out` receives `backbone.keras` (raw pixels → features, preprocessing inside) and `manifest.json`
    (modality, input spec, preprocessing, classes, source, command, hardware, time, metrics, weights sha256),
    written together as one set. A killed run started again as the same run (the same settings and, for a
    folder source, the same files: `_fingerprint`) resumes from its last epoch backup (kept in a hidden
    directory beside `out` until the run succeeds); another run into the same `out` discards that backup,
    starts afresh and says so in `notes`. After a resume the manifest still describes the whole run: every
    epoch's loss, `examples_seen` and `train_seconds` over all epochs, and the utilisation from the epochs this
    process ran. `command` is recorded as given (the CLI passes its command line), else as the equivalent
    `kerastl pretrain` command (`equivalent_command`).

    Raises:
        UsageError: invalid options.
        KerastlError: the source or cluster configuration cannot be used.
    """
    import keras

    config.validate()
    # The run settles some options on its own copy (text trains in float32); the caller's config stays as given.
    config = dataclasses.replace(config)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KerastlError(f"--out {out} is a file; give a directory such as saved_models/NAME")
    channels = config.channels or (1 if config.source.startswith("synthetic:") else 3)
    started = time.time()
    keras.utils.set_random_seed(config.seed)
    strategy = make_distribution(config.distribution)
    global_batch = int(config.batch_size)
    source = load_source(config, channels, global_batch)
    from kerastl.core.modality import get

    _, input_record, preprocessing, make_model = get(source.modality).pretraining_model(
        config, source, channels)
    steps_per_epoch = int(config.steps_per_epoch)
    if source.finite_steps is not None and config.steps is None:
        steps_per_epoch = min(steps_per_epoch, source.finite_steps)
    epochs = config.total_epochs()

    def build():
        model, _ = make_model()
        return model

    multiworker = config.distribution == "multiworker"
    if config.deterministic:
        from kerastl.train.resume import enable_determinism

        enable_determinism(config.seed)
    if multiworker or config.deterministic:
        # Collective ops across workers must see the same program on every worker, and a deterministic run
        # the same program on every run: no timing-based choice.
        execution = {"policy": "float32" if config.precision == "auto" else (
            mixed_policy() if config.precision == "mixed" else "float32"),
            "jit_compile": bool(config.jit_compile), "measurements": []}
    else:
        execution = choose_execution(config, build, next(iter(source.train)))
    keras.mixed_precision.set_global_policy(execution["policy"])
    try:
        with strategy.scope():
            keras.utils.set_random_seed(config.seed)
            model, backbone = make_model()
            schedule = keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps=max(1, epochs * steps_per_epoch - min(200, steps_per_epoch)),
                warmup_target=float(config.learning_rate), warmup_steps=min(200, steps_per_epoch))
            optimizer = keras.optimizers.AdamW(schedule, weight_decay=1e-4)
            if execution["policy"] == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        backup_dir = out.parent / f".{out.name}.backup"
        log_dir = Path(log_dir) if log_dir else out.parent / ".logs" / out.name
        fingerprint = _fingerprint(config, channels)
        start = time.perf_counter()
        if multiworker:
            logs, notes, progress, done, seconds_before = custom_training(
                model, optimizer, strategy, source, config, epochs, steps_per_epoch, global_batch, backup_dir,
                log_dir, verbose, fingerprint)
        else:
            with strategy.scope():
                model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                              jit_compile=execution["jit_compile"])
            from kerastl.train.resume import (
                claim_backup,
                completed_epochs,
                epoch_seeds_callback,
                progress_callback,
                read_progress,
            )

            note = claim_backup(backup_dir, fingerprint)  # another run's backup is discarded, not resumed
            notes = [note] if note else []
            # A resumed run continues the data stream where the backup left it (the stream is a function of
            # the seed and the batch index), and every random layer's seed is reset from (seed, epoch).
            done = min(completed_epochs(backup_dir), epochs)
            # fit's history holds only the epochs this process runs: the earlier ones' losses and seconds come
            # from the record kept beside the backup.
            progress = read_progress(backup_dir, done)
            seconds_before = progress["seconds"][-1] if progress["seconds"] else 0.0
            callbacks = [progress_callback(backup_dir, progress, seconds_before),
                         keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=True),
                         keras.callbacks.TensorBoard(str(log_dir)), epoch_seeds_callback(model, config.seed)]
            history = model.fit(source.train.skip(done * steps_per_epoch), epochs=epochs, initial_epoch=done,
                                steps_per_epoch=steps_per_epoch, shuffle=False, validation_data=source.validation,
                                callbacks=callbacks, verbose=verbose)
            logs = {key: values[-1] for key, values in history.history.items()} if history.history else {}
        seconds_here = time.perf_counter() - start
    finally:
        keras.mixed_precision.set_global_policy("float32")

    from kerastl.train.resume import weights_sha256

    # sha256 over all weights: two workers that stayed in sync print the same digest.
    digest = weights_sha256(model)
    examples = epochs * steps_per_epoch * global_batch
    examples_here = (epochs - done) * steps_per_epoch * global_batch
    loss_history = progress["loss"]
    # The whole run's training time: the earlier processes' (recorded with the backup) and this one's.
    train_seconds = seconds_before + seconds_here
    flops = count_flops(backbone)
    head_flops = count_flops(model) - flops
    # Utilisation from the examples this process trained on, in the time it took (after a resume the earlier
    # epochs ran at another time, maybe on another machine).
    achieved = 3 * (flops + head_flops) * examples_here / max(seconds_here, 1e-9)  # forward + backward ≈ 3×
    peak_dtype = "bfloat16" if execution["policy"] == "mixed_bfloat16" else (
        "float16" if execution["policy"] == "mixed_float16" else "float32")
    peak = matmul_peak_flops(peak_dtype) if is_chief() else None
    metrics = {key: round(float(value), 5) for key, value in logs.items()}
    manifest = {
        "format_version": 1,
        "name": out.name,
        "modality": source.modality,
        "description": config.description or f"{config.arch} pretrained on {source.description}",
        "default": bool(config.default),
        "input": input_record,
        "preprocessing": preprocessing,
        "feature_width": int(backbone.output.shape[-1]),
        "arch": config.arch,
        "pretraining": {
            "source": config.source,
            "source_description": source.description,
            "classes": source.num_classes,
            "epochs": epochs,
            "steps_per_epoch": steps_per_epoch,
            "batch_size": global_batch,
            "examples_seen": examples,
            "resumed_from_epoch": done,
            "learning_rate": config.learning_rate,
            "seed": config.seed,
            "precision": execution["policy"],
            "jit_compile": execution["jit_compile"],
            "execution_measurements": execution["measurements"],
            "distribution": config.distribution,
            "replicas": int(strategy.num_replicas_in_sync),
        },
        "metrics": metrics,
        "loss_history": loss_history,
        "compute": {
            "forward_flops_per_example": flops + head_flops,
            "examples_this_process": examples_here,
            "seconds_this_process": round(seconds_here, 1),
            "achieved_flops_per_second": round(achieved),
            "matmul_peak_flops_per_second": round(peak) if peak else None,
            "peak_dtype": peak_dtype,
            "utilisation": round(achieved / peak, 4) if peak else None,
        },
        "command": command or equivalent_command(config, out, log_dir=log_dir if log_dir != out.parent / ".logs" /
                                                 out.name else None),
        "hardware": hardware_summary(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "train_seconds": round(train_seconds, 1),
        "weights": {"file": "backbone.keras"},
    }
    if not is_chief():
        return PretrainResult(backbone=backbone, manifest=manifest, out=None, weights_digest=digest, notes=notes)
    manifest = write_backbone(backbone, manifest, out)
    import shutil

    shutil.rmtree(backup_dir, ignore_errors=True)
    return PretrainResult(backbone=backbone, manifest=manifest, out=out, weights_digest=digest, notes=notes)


# Options that change what is written about a run but not what it trains: a backup stays valid across them.
_NOT_FINGERPRINTED = ("description", "default")


def _fingerprint(config: PretrainConfig, channels: int) -> dict:
    """The run a pre-training backup belongs to (`kerastl.train.resume.run_fingerprint`): the config (but
    the description and the default mark) and, for a folder source, every file's size and mtime."""
    from kerastl.train.resume import run_fingerprint

    settings = {key: value for key, value in dataclasses.asdict(config).items() if key not in _NOT_FINGERPRINTED}
    source = Path(config.source)
    files = [p for p in source.rglob("*") if p.is_file()] if source.is_dir() else []
    return run_fingerprint("pretrain", options={"channels": channels}, config=settings, data_files=files)


def equivalent_command(config: PretrainConfig, out, *, log_dir=None) -> str:
    """The `kerastl pretrain` command line that runs `config` into `out` (every option that differs from the
    CLI's default): what the manifest records when `pretrain` is called from Python, where the host's
    `sys.argv` says nothing about the run."""
    defaults = PretrainConfig(source=config.source)
    flags = {"arch": "--arch", "image_size": "--image-size", "channels": "--channels", "classes": "--classes",
             "epochs": "--epochs", "steps": "--steps", "steps_per_epoch": "--steps-per-epoch",
             "batch_size": "--batch-size", "learning_rate": "--learning-rate", "precision": "--precision",
             "distribution": "--strategy", "validation_steps": "--validation-steps", "seed": "--seed",
             "description": "--description", "sample_rate": "--sample-rate", "clip_seconds": "--clip-seconds",
             "sequence_length": "--sequence-length", "vocabulary_size": "--vocabulary-size"}
    words = ["kerastl", "pretrain", "--data", str(config.source), "--arch", str(config.arch)]
    for field, flag in flags.items():
        value = getattr(config, field)
        if field != "arch" and value is not None and value != getattr(defaults, field):
            words += [flag, str(value)]
    if config.jit_compile is not None:
        words.append("--xla" if config.jit_compile else "--no-xla")
    if config.default:
        words.append("--default")
    if config.deterministic:
        words.append("--deterministic")
    if log_dir is not None:
        words += ["--logdir", str(log_dir)]
    words += ["--out", str(out)]
    return " ".join(shlex.quote(word) for word in words)


def write_backbone(backbone, manifest: dict, out) -> dict:
    """Writes `backbone.keras` and `manifest.json` (with the weights' sha256) into `out` as one set
    (`kerastl.core.atomic.commit_directory`): a killed write leaves the previous pair or the new one, and other
    files in `out` are kept. Returns the manifest as written."""
    from kerastl.core.atomic import commit_directory, staged_directory
    from kerastl.core.graph import restore_batchnorm, to_float32
    from kerastl.net import sha256_file

    out = Path(out)
    with staged_directory(out) as tmp:
        weights = tmp / manifest["weights"]["file"]
        to_float32(restore_batchnorm(backbone)).save(weights)
        manifest = dict(manifest, weights=dict(manifest["weights"], sha256=sha256_file(weights),
                                               bytes=weights.stat().st_size))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    commit_directory(tmp, out, owned=(manifest["weights"]["file"], "manifest.json"))
    return manifest
