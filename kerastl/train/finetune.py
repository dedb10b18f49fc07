"""Step 2 of transfer learning: fine-tune a pretrained backbone with a new output layer on your classes.

Strategies (see `kerastl.train.strategies`):
- `head` (Option 1): only the new output layer trains. The frozen backbone's pooled features are computed
  once and cached, the head trains on them, and the trained head is put back on the backbone. With
  `augment=True` the cache holds the features of `augment_views` views of each example (`kerastl.train.views`);
  `cache_features=False` is the slow path (a plain frozen `fit`). The new layer starts at zero weights.
- `full` (Option 2): the head is trained first (as above), then every layer at a lower learning rate
  (`learning_rate * fine_tune_factor`), recompiled after `trainable` changes.
- `top:N`: as `full`, but only the last N weighted backbone layers are unfrozen in the second phase.
- `auto`: `head` or `full` from the number of labelled examples per class.
- `from_scratch`: the same architecture and training with random initial weights: the baseline that shows
  what transfer bought. Every layer trains from the start, and BatchNormalization learns its statistics as
  usual (frozen random statistics would handicap the baseline).

In every pretrained strategy the backbone's BatchNormalization layers keep their moving statistics.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from kerastl.errors import KerastlError, UsageError
from kerastl.reporting.text import with_article

# A phase's optimizer and compile live in kerastl.train.optimizers; make_optimizer is still importable here.
from kerastl.train.optimizers import compile_phase as _compile
from kerastl.train.optimizers import make_optimizer

# The settings live in kerastl.train.options; FinetuneConfig and OPTIMIZERS are still importable from here.
from kerastl.train.options import OPTIMIZERS, FinetuneConfig, HParams, ModelOptions  # noqa: F401


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` produced: the model, its class names, the metrics dict and the files written."""

    model: object
    class_names: list
    metrics: dict
    files: dict


def compile_head(classifier, config: HParams, examples: int, total_steps: int | None = None) -> None:
    """Compiles the head for training on cached features with `config`'s optimiser, learning rate and batch
    size (an `HParams`, or a `FinetuneConfig`, which has every field of one).

    The head is one small Dense layer, so a step costs less than Keras' per-step dispatch: running a whole
    epoch's steps per call (`steps_per_execution`) removes that overhead without changing the steps taken.
    """
    steps = max(1, -(-int(examples) // config.batch_size))
    _compile(classifier.head_model, config, config.learning_rate, steps_per_execution=steps, total_steps=total_steps)


def _history_rows(history, phase: str) -> list[dict]:
    rows = []
    logs = history.history if history is not None else {}
    for epoch in range(len(logs.get("loss", []))):
        row = {"phase": phase, "epoch": epoch + 1}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                row[key] = round(float(logs[key][epoch]), 6)
        rows.append(row)
    return rows


def _fit(model, training, *, epochs: int, phase: str, hparams: HParams, out, validation, class_weight,
         verbose, mix=None):
    """`model.fit` over `training = (inputs, labels, augment)` held in memory, or a tf.data.Dataset.

    With `hparams.early_stopping` and `validation`, the phase stops early and ends on its best epoch's weights
    (`kerastl.train.schedule.restore_best_callback`); the History then carries `early_stopping`, its record.

    In-memory examples are batched by `checkpointing.epoch_batches`, so each epoch's order and augmentation
    depend only on (seed, epoch); every random layer's seed state is reset from (seed, epoch) too. With `out`,
    the phase is backed up each epoch into `out`, and a re-run of the same run (`_claim_backups`) resumes it.
    `mix` (`kerastl.train.mixing.batch_mixer`) blends the training batches and makes their labels soft targets.
    """
    import keras

    from kerastl.train.distributed_fit import fit
    from kerastl.train.resume import (
        backup_dir,
        completed_epochs,
        epoch_batches,
        epoch_seeds_callback,
    )
    from kerastl.train.schedule import patience, restore_best_callback

    callbacks = [epoch_seeds_callback(model, hparams.seed)]
    first = 0
    directory = None if out is None else backup_dir(out, phase)
    best = None
    if hparams.early_stopping and validation is not None:
        # Before BackupAndRestore: the best epoch's record is then never behind the backup.
        best = restore_best_callback(model, patience_epochs=patience(epochs), directory=directory)
        callbacks.append(best)
    if directory is not None:
        first = min(completed_epochs(directory), epochs)
        callbacks.append(keras.callbacks.BackupAndRestore(str(directory), delete_checkpoint=False))
    steps = None
    if isinstance(training, tuple):
        inputs, labels, augment = training
        steps = -(-len(labels) // hparams.batch_size)
        training = epoch_batches(inputs, labels, batch_size=hparams.batch_size, seed=hparams.seed,
                                 first_epoch=first, epochs=epochs, shuffle=hparams.shuffle, augment=augment)
        training = training if mix is None else mix(training, first_epoch=first, steps_per_epoch=steps)
    history = fit(model, training, epochs=epochs, initial_epoch=first, steps_per_epoch=steps, shuffle=False,
                  validation_data=validation, class_weight=class_weight, callbacks=callbacks, verbose=verbose)
    history.early_stopping = None if best is None else best.record()
    return history


def train_head_on_features(classifier, train_features, train_labels, *, config: HParams, epochs: int,
                           validation=None, class_weight=None, verbose="auto", out=None, total_steps=None):
    """Option 1's fast path: trains the head (standardisation, dropout, new Dense) on cached pooled features,
    with the training settings `config` (an `HParams`, or a `FinetuneConfig`).

    The head's layers are shared with `classifier.model`, so afterwards the full model carries the trained head.
    Returns the Keras History.
    """
    import numpy as np

    from kerastl.train.views import pick_view

    compile_head(classifier, config, len(train_labels), total_steps=total_steps)
    features = np.asarray(train_features)  # (N, width), or (N, K, width) views: one is drawn per example
    training = (features, np.asarray(train_labels), pick_view if features.ndim == 3 else None)
    return _fit(classifier.head_model, training, epochs=epochs, phase="head", hparams=config, out=out,
                validation=validation, class_weight=class_weight, verbose=verbose)


def _train_head(classifier, data, hparams: HParams, epochs, class_weight, verbose, timing, out=None,
                total_steps=None, found=None):
    """Trains the head with the backbone frozen: on cached features (by `epochs` of the optimizer, or solved as
    a linear probe: `hparams.head_solver`), or with a plain frozen `fit` (no cache). Returns the Keras History,
    the probe's record (`kerastl.train.probe.ProbeFit.record`), or None when `epochs` is 0.

    Either way the frozen backbone's features of the (unaugmented) training images are computed once first,
    to standardise them (`Classifier.adapt`); the cached path then trains on them directly. With
    `learning_rate="auto"` the steps are preceded by the range test (`kerastl.train.range_test`, its record in
    `found["head"]`).
    """
    import numpy as np

    from kerastl.train import views
    from kerastl.train.range_test import phase_rate
    from kerastl.train.strategies import Strategy, set_backbone_trainable

    set_backbone_trainable(classifier.backbone, Strategy("head"))
    start = time.perf_counter()
    train_x = classifier.feature_model.predict(data["train_plain"], verbose=0)
    classifier.adapt(train_x)
    cached = hparams.cache_features and not hparams.mixes_batches
    validation = data["val"] if hparams.validate_each_epoch else None
    if cached and validation is not None:
        validation = (classifier.feature_model.predict(data["val"], verbose=0), np.asarray(data["val_labels"]))
    timing["feature_cache_seconds" if cached else "feature_statistics_seconds"] = round(
        time.perf_counter() - start, 3)
    if epochs <= 0:
        return None
    if cached and hparams.augment:  # the features of K views of each example (kerastl.train.views)
        train_x = views.training_views(classifier, data["training"], train_x, views=hparams.augment_views,
                                       seed=hparams.seed, out=out, timing=timing)
    start = time.perf_counter()
    if cached and hparams.head_solver == "probe":
        from kerastl.train.probe import fit_probe, set_head

        fit = fit_probe(**views.probe_inputs(classifier, train_x, data["train_labels"]),
                        num_classes=int(classifier.predictions.units), class_weight=class_weight, seed=hparams.seed)
        set_head(classifier, fit)
        timing["head_train_seconds"] = round(time.perf_counter() - start, 3)
        return fit.record()
    hparams = dataclasses.replace(hparams, learning_rate=phase_rate(
        hparams, "head", classifier.head_model if cached else classifier.model, make_optimizer, found=found,
        training=(train_x, np.asarray(data["train_labels"]), None) if cached else data["training"],
        class_weight=class_weight))
    if cached:
        history = train_head_on_features(classifier, train_x, data["train_labels"], config=hparams, epochs=epochs,
                                         validation=validation, class_weight=class_weight, verbose=verbose,
                                         out=out, total_steps=total_steps)
    else:
        _compile(classifier.model, hparams, hparams.learning_rate, total_steps=total_steps)
        history = _fit(classifier.model, data["training"], epochs=epochs, phase="head", hparams=hparams, out=out,
                       validation=validation, class_weight=class_weight, verbose=verbose, mix=data["mix"])
    timing["head_train_seconds"] = round(time.perf_counter() - start, 3)
    return history


def _prepare_data(data_dir, backbone, hparams: HParams):
    from kerastl.data import (
        class_weights,
        drop_undecodable,
        input_spec,
        make_dataset,
        scan_folder,
        split,
    )
    from kerastl.train.mixing import batch_mixer

    spec = input_spec(backbone.model)
    scan = drop_undecodable(scan_folder(data_dir, spec.modality))
    parts = split(scan, validation_fraction=hparams.validation_fraction, shots=hparams.shots, seed=hparams.seed)
    common = dict(batch_size=hparams.batch_size, seed=hparams.seed)
    weights = class_weights(parts.train_labels, len(parts.class_names)) if hparams.balance_classes else None
    has_val = bool(parts.val_files)
    return scan, parts, weights, {
        "train_plain": make_dataset(spec, parts.train_files, parts.train_labels, **common),
        "training": _training_examples(spec, parts, hparams, make_dataset, common),
        "train_labels": parts.train_labels,
        "val": make_dataset(spec, parts.val_files, parts.val_labels, **common) if has_val else None,
        "val_labels": parts.val_labels,
        "mix": batch_mixer(spec, hparams, len(parts.class_names)),
    }


def _training_examples(spec, parts, hparams: HParams, make_dataset, common):
    """The training set for `_fit`, `(inputs, labels, transform)` for `checkpointing.epoch_batches`: decoded
    into memory when it fits, else file paths read batch by batch (`kerastl.data.training_examples`), with
    the modality's one stateless augmentation either way."""
    from kerastl.data import training_examples

    return training_examples(spec, parts.train_files, parts.train_labels, augment=hparams.augment)


def check_modality(backbone, data_dir) -> None:
    """The same-input-type rule: stops before any training when the data's type is not the backbone's, or the
    backbone's input is not the form kerastl feeds that type (channels other than 1 or 3, another rank).

    Raises:
        KerastlError: one line naming both types (or the input's shape) and suggesting a backbone of the
            data's type from `saved_models/`.
    """
    from kerastl.backbones import suggest_backbone
    from kerastl.core.modality import find as find_modality
    from kerastl.core.modality import get as get_modality
    from kerastl.core.records import UndeclaredInput
    from kerastl.data import detect_modality, input_spec

    found = detect_modality(data_dir)
    try:
        spec = input_spec(backbone.model)
    except UndeclaredInput as error:
        raise KerastlError(f"{backbone.spec}: {error}") from None
    except KerastlError:
        shape = tuple(backbone.model.input.shape[1:])
        wanted = find_modality(found or backbone.modality)
        raise KerastlError(
            f"{backbone.spec} takes {backbone.model.input.dtype} inputs of shape {shape}, not the "
            f"{'image, waveform or string input' if wanted is None else wanted.input_form} that kerastl feeds "
            f"{'its data' if wanted is None else wanted.name}: {suggest_backbone(found or backbone.modality, data_dir if found else None)}"
        ) from None
    labelled = find_modality(backbone.modality)
    if labelled is not None and backbone.modality != spec.modality:
        raise KerastlError(
            f"{backbone.spec} is labelled {with_article(backbone.modality)} backbone but takes "
            f"{get_modality(spec.modality).input_form}; fix its manifest's modality or re-run its pretrain command")
    if found is not None and found != spec.modality:
        raise KerastlError(
            f"{data_dir} holds {found} files but {backbone.spec} is {with_article(spec.modality)} backbone; a network "
            f"pretrained on {spec.modality} will not transfer to {found}: {suggest_backbone(found, data_dir)}"
        )


def finetune(data_dir=None, backbone=None, *, out=None, config: FinetuneConfig | None = None,
             weights: str | None = None, cut: str | None = None, image_size: int | None = None,
             trust: bool = False, verbose="auto", hparams: HParams | None = None,
             model_options: ModelOptions | None = None) -> FinetuneResult:
    """Fine-tunes a pretrained backbone with a new output layer on a class-per-folder directory.

    Args:
        data_dir: class-per-folder images, WAV files or .txt files; None uses scikit-learn's bundled
            handwritten digits.
        backbone: a spec for `kerastl.backbones.load_backbone`, or a loaded `Backbone`; None uses the shipped
            backbone in `saved_models/` that suits the data (`default_backbone_spec`: its type, and for images
            its colour: EfficientNet-Lite0 for colour photos, the glyph backbone for grayscale images).
        out: directory for model.keras, labels.txt, metrics.json and report.png; None writes nothing.
        config: every setting in one record (`FinetuneConfig`); or give the two parts instead:
        hparams: how training runs (`HParams`; default: its defaults).
        model_options: what model is built (`ModelOptions`; default: its defaults).
        weights, cut, image_size, trust: passed to `load_backbone`.
        verbose: Keras progress output (0, 1, 2 or "auto").

    `config=FinetuneConfig(...)` and `hparams=..., model_options=...` with the same values are the same run:
    the same metrics with the same seed, and either resumes the other's backup.

    Returns:
        A `FinetuneResult`; `metrics` holds validation accuracy, per-class figures, the resolved strategy,
        skipped files, the training history, timings and `notes` (lines for the user, e.g. that a backup in
        `out` belonged to another run and was not resumed).

    A killed run started again with the same data, backbone, options and config resumes each phase from its
    last epoch backup in `out/.kerastl-backup`; any other run into the same `out` discards that backup and
    starts afresh (`_claim_backups`), saying so in `notes`.

    Raises:
        UsageError: an invalid option (named, with what was received), among them random weights
            (`weights="none"`, or a `Backbone` whose weights are "none") without `from_scratch`, and
            `config` given together with `hparams` or `model_options`.
        KerastlError: unusable data or backbone (one line naming the problem and the fix).
    """
    import keras
    import numpy as np

    from kerastl.backbones import default_backbone_spec, load_backbone
    from kerastl.core.records import Backbone
    from kerastl.data import digits_folder
    from kerastl.train.distribute import distribution
    from kerastl.train.evaluate import classification_metrics
    from kerastl.train.range_test import phase_rate
    from kerastl.train.scratch import refuse_random_weights, settle_batchnorm_quickly
    from kerastl.train.strategies import (
        parse_strategy,
        resolve_auto,
        set_backbone_trainable,
        set_trainable_by_pattern,
    )

    config = _settings(config, hparams, model_options)
    config.validate()
    # The rest reads training settings from one part and model settings from the other; `config` itself is
    # kept for what records the run as a whole (the resume fingerprint, metrics["config"]).
    hparams, options = config.hparams, config.model_options
    run = distribution(hparams.distribute, backbone)
    # Steps take the global batch; a non-chief worker keeps its backups apart (kerastl.train.distribute).
    hparams = dataclasses.replace(hparams, batch_size=run.global_batch(hparams.batch_size))
    out = run.out(out)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise KerastlError(f"--out {out} is a file; give a directory path")  # before any training
    requested = parse_strategy(options.strategy)
    keras.utils.set_random_seed(hparams.seed)
    if hparams.deterministic:
        from kerastl.train.resume import enable_determinism

        enable_determinism(hparams.seed)
    data_dir = Path(data_dir) if data_dir is not None else digits_folder()

    if weights == "none" and not options.from_scratch:
        refuse_random_weights(backbone if isinstance(backbone, str) else "the backbone", requested)
    if not isinstance(backbone, Backbone):
        if backbone is None:
            from kerastl.data import detect_modality

            # The default backbone is the one of the data's input type that suits the data (for images, their
            # colour: see `default_backbone_spec`).
            spec = default_backbone_spec(detect_modality(data_dir) or "image", data_dir)
        else:
            spec = backbone
        with run.scope():  # the backbone's variables are the strategy's too
            backbone = load_backbone(spec, weights=weights, cut=cut, image_size=image_size,
                                     from_scratch=options.from_scratch, trust=trust)
    if backbone.weights == "none" and not options.from_scratch:
        refuse_random_weights(backbone.spec, requested)
    check_modality(backbone, data_dir)
    scan, parts, weights_by_class, data = _prepare_data(data_dir, backbone, hparams)
    min_per_class = min(parts.train_counts())
    strategy = resolve_auto(requested, min_per_class)
    notes = [] if out is None else _claim_backups(out, backbone, config, parts,
                                                 {"weights": weights, "cut": cut, "image_size": image_size})

    with run.scope():
        classifier = _build_classifier(backbone, len(parts.class_names), options, seed=hparams.seed)
    timing, history, head_fit, phases, found = {}, [], None, {}, {}
    validation = data["val"] if hparams.validate_each_epoch else None
    examples = len(parts.train_files)

    def phase_budget(name, epochs):
        from kerastl.train.schedule import budget

        phases[name] = {"budget": budget(examples, hparams.batch_size, epochs=epochs, min_steps=hparams.min_steps)}
        return phases[name]["budget"]

    def record(name, fit):
        phases[name]["early_stopping"] = getattr(fit, "early_stopping", None)
        phases[name]["epochs_run"] = len(fit.history.get("loss", [])) if fit is not None else 0
        return _history_rows(fit, name)

    start = time.perf_counter()
    if options.from_scratch:
        settle_batchnorm_quickly(classifier.backbone)
        set_backbone_trainable(classifier.backbone, parse_strategy("full"))
        _apply_patterns(classifier, options, set_trainable_by_pattern)
        length = phase_budget("from-scratch", hparams.epochs)
        rate = phase_rate(hparams, "from-scratch", classifier.model, make_optimizer, training=data["training"],
                          class_weight=weights_by_class, found=found)
        _compile(classifier.model, hparams, rate, total_steps=length.steps)
        fit = _fit(classifier.model, data["training"], epochs=length.epochs, phase="from-scratch", hparams=hparams,
                   out=out, validation=validation, class_weight=weights_by_class, verbose=verbose, mix=data["mix"])
        history += record("from-scratch", fit)
    else:
        head_epochs = hparams.epochs if strategy.kind == "head" or hparams.head_epochs is None else hparams.head_epochs
        length = phase_budget("head", head_epochs)
        fit = _train_head(classifier, data, hparams, length.epochs, weights_by_class, verbose, timing, out=out,
                          total_steps=length.steps, found=found)
        run.broadcast_from_chief(classifier.head_model.weights)  # each worker adapted (and probed) on its own
        if isinstance(fit, dict):
            head_fit = fit
            phases["head"] = {"solver": "probe"}
        else:
            history += record("head", fit)
        if strategy.kind in ("full", "top"):
            set_backbone_trainable(classifier.backbone, strategy)
            _apply_patterns(classifier, options, set_trainable_by_pattern)
            name = str(strategy)
            length = phase_budget(name, hparams.epochs)
            # Recompile: `trainable` changes take effect only at compile time.
            rate = phase_rate(hparams, name, classifier.model, make_optimizer, training=data["training"],
                              class_weight=weights_by_class, factor=hparams.fine_tune_factor, found=found)
            _compile(classifier.model, hparams, rate, total_steps=length.steps, backbone=classifier.backbone)
            fit = _fit(classifier.model, data["training"], epochs=length.epochs, phase=name.replace(":", "-"),
                       hparams=hparams, out=out, validation=validation, class_weight=weights_by_class, verbose=verbose,
                       mix=data["mix"])
            history += record(name, fit)
        elif options.trainable_layers or options.frozen_layers:
            raise UsageError("layer patterns apply to full and top:N fine-tuning; the head strategy trains "
                             "only the new layer")
    timing["train_seconds"] = round(time.perf_counter() - start, 3)

    if parts.val_files:
        probabilities = classifier.model.predict(data["val"], verbose=0)
        metrics = classification_metrics(np.asarray(parts.val_labels), probabilities, parts.class_names)
        metrics["evaluated_on"] = "validation"
    else:
        metrics = classification_metrics([], np.zeros((0, len(parts.class_names))), parts.class_names)
        metrics["evaluated_on"] = "nothing (no validation split)"
    metrics["baseline"] = _baseline(backbone, parts, hparams, weights_by_class, metrics)
    metrics.update({
        "strategy": "from-scratch" if options.from_scratch else str(strategy),
        "strategy_requested": str(requested),
        "auto_rule": _auto_rule_text(requested, min_per_class),
        "backbone": backbone.record(),
        "data": str(data_dir),
        "train_examples": len(parts.train_files),
        "train_counts": dict(zip(parts.class_names, parts.train_counts())),
        "class_weights": None if weights_by_class is None else {
            parts.class_names[i]: round(w, 4) for i, w in weights_by_class.items()},
        "skipped": [{"path": p, "reason": r} for p, r in scan.skipped],
        "ignored_files": len(scan.ignored),
        "history": history,
        "head_fit": head_fit,
        "lr_find": found,
        "phases": {name: {key: (value.record() if hasattr(value, "record") else value) for key, value in p.items()}
                   for name, p in phases.items()},
        "timing": timing,
        "config": dataclasses.asdict(config),
        "notes": notes,
        "distribute": run.record(config.batch_size),
    })
    model = classifier.model
    files = {}
    if out is not None:
        from kerastl.train.resume import clear_backups

        files = save_outputs(out, model, parts.class_names, metrics) if run.chief else run.discard(out)
        clear_backups(out)  # only once every output is in place
    return FinetuneResult(model=model, class_names=parts.class_names, metrics=metrics, files=files)


def _baseline(backbone, parts, hparams: HParams, class_weight, metrics) -> dict | None:
    """The classical baseline on the run's split (`kerastl.train.baseline`), with `margin`, the run's accuracy
    minus the baseline's (positive: transfer beat it); None without `hparams.baseline` or a validation split."""
    from kerastl.data import input_spec
    from kerastl.train.baseline import classical_baseline

    if not hparams.baseline:
        return None
    record = classical_baseline(input_spec(backbone.model), parts.train_files, parts.train_labels, parts.val_files,
                                parts.val_labels, class_weight=class_weight, seed=hparams.seed)
    if record is not None and metrics.get("accuracy") is not None:
        record["margin"] = round(metrics["accuracy"] - record["accuracy"], 6)
    return record


def _settings(config, hparams, model_options) -> FinetuneConfig:
    """The run's one `FinetuneConfig`: `config` as given, or the one `hparams` and `model_options` make
    (`FinetuneConfig.from_parts`), so that both forms are recorded and fingerprinted alike.

    Raises:
        UsageError: `config` together with a part (which would win is not obvious), or a part given as
            `config`.
    """
    if config is not None and (hparams is not None or model_options is not None):
        raise UsageError("give finetune either config=FinetuneConfig(...) or hparams=HParams(...) and "
                         "model_options=ModelOptions(...), not both")
    if isinstance(config, (HParams, ModelOptions)):
        keyword = "hparams" if isinstance(config, HParams) else "model_options"
        raise UsageError(f"config must be a kerastl.FinetuneConfig; give {type(config).__name__}(...) as "
                         f"{keyword}= instead. Received: config={type(config).__name__}")
    if config is not None:
        return config
    return FinetuneConfig.from_parts(hparams, model_options)


def _build_classifier(backbone, num_classes: int, options: ModelOptions, *, seed: int):
    """The network `options` describe on `backbone`: its pooling and dropout, and pretrained weights with
    BatchNormalization statistics frozen, or (`from_scratch`) random ones that learn as usual."""
    from kerastl.train.head import build_classifier
    from kerastl.train.strategies import prepare_backbone

    backbone_model = backbone.model if options.from_scratch else prepare_backbone(backbone.model)
    # A head on pretrained features starts at zero weights, a network from scratch at random ones (kerastl.train.head).
    return build_classifier(backbone_model, num_classes, pooling=options.pooling, dropout=options.dropout,
                            seed=seed, zero_init=not options.from_scratch)


def _claim_backups(out, backbone, config: FinetuneConfig, parts, options: dict) -> list[str]:
    """Keeps `out`'s backups only if this same run made them (`kerastl.train.resume.claim_backup`): the same
    options and config, the same training and validation files (sizes and modification times) and the same
    backbone (its record and the sha256 of its weights before training). Returns the notes to report: one
    line when another run's backup was discarded."""
    from kerastl.train.resume import BACKUP_DIR, claim_backup, run_fingerprint, weights_sha256

    fingerprint = run_fingerprint(
        "finetune", options=options, config=dataclasses.asdict(config),
        data_files=[*parts.train_files, *parts.val_files],
        backbone={**backbone.record(), "weights_sha256": weights_sha256(backbone.model)})
    note = claim_backup(Path(out) / BACKUP_DIR, fingerprint)
    return [note] if note else []


def _apply_patterns(classifier, options: ModelOptions, set_trainable_by_pattern):
    if options.trainable_layers or options.frozen_layers:
        set_trainable_by_pattern(classifier.backbone, options.trainable_layers, options.frozen_layers)


def _auto_rule_text(requested, min_per_class: int) -> str | None:
    from kerastl.train.strategies import AUTO_FULL_MIN_PER_CLASS

    if requested.kind != "auto":
        return None
    return (f"{min_per_class} training examples in the smallest class; auto uses full from "
            f"{AUTO_FULL_MIN_PER_CLASS} per class, head below")


def save_outputs(out, model, class_names, metrics) -> dict:
    """Writes model.keras, labels.txt, metrics.json and report.png into `out` as one set.

    The set is staged complete in a new directory beside `out`, fsynced, and swapped with `out` in one atomic
    step (`kerastl.core.atomic.commit_directory`): a failed or killed run leaves the previous set or the new one,
    never a mix. Everything else in `out` (your files, the run's backups) is kept. `metrics["outputs"]` records
    the sha256 of model.keras and labels.txt, so that `load_classifier` refuses a labels.txt that is not the one
    written with the model.

    The saved model uses plain BatchNormalization layers (their statistics are what training left), so it
    loads in plain Keras; only a hub backbone needs `import kerastl` for its layer.

    Raises:
        KerastlError: `out` exists and is not a directory.
    """
    from kerastl.core.atomic import commit_directory, staged_directory
    from kerastl.core.graph import restore_batchnorm
    from kerastl.reporting.plots import plot_report
    from kerastl.train.evaluate import (
        LABELS_FILE,
        METRICS_FILE,
        MODEL_FILE,
        REPORT_FILE,
        output_record,
    )
    from kerastl.train.optimizers import saveable

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KerastlError(f"--out {out} is a file; give a directory path")
    names = {"model": MODEL_FILE, "labels": LABELS_FILE, "metrics": METRICS_FILE, "report": REPORT_FILE}
    with staged_directory(out) as staged:
        restore_batchnorm(saveable(model)).save(staged / MODEL_FILE)
        (staged / LABELS_FILE).write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
        metrics["outputs"] = output_record(staged, [MODEL_FILE, LABELS_FILE])
        (staged / METRICS_FILE).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        plot_report(metrics.get("history", []), metrics, staged / REPORT_FILE,
                    title=f"kerastl finetune: {metrics.get('strategy')}")
    commit_directory(staged, out, owned=names.values())
    return {key: str(out / name) for key, name in names.items()}
