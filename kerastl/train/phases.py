"""The phases of a fine-tuning run, each on given data: the head (Option 1, on cached features or a plain
frozen `fit`), the backbone phase of full and top:N (Option 2), and training from scratch.

`kerastl.train.finetune` runs them once on the run's split, and `kerastl.train.crossval` runs them on each
fold to compare strategies; both read the same `PhaseLog`, so a phase is recorded alike wherever it ran.
"""

from __future__ import annotations

import dataclasses
import time

from kerastl.errors import UsageError
from kerastl.train.optimizers import compile_phase as _compile
from kerastl.train.optimizers import make_optimizer
from kerastl.train.options import HParams, ModelOptions


def compile_head(classifier, config: HParams, examples: int, total_steps: int | None = None) -> None:
    """Compiles the head for training on cached features with `config`'s optimiser, learning rate and batch
    size (an `HParams`, or a `FinetuneConfig`, which has every field of one).

    The head is one small Dense layer, so a step costs less than Keras' per-step dispatch: running a whole
    epoch's steps per call (`steps_per_execution`) removes that overhead without changing the steps taken.
    """
    steps = max(1, -(-int(examples) // config.batch_size))
    _compile(classifier.head_model, config, config.learning_rate, steps_per_execution=steps, total_steps=total_steps)



def history_rows(history, phase: str) -> list[dict]:
    rows = []
    logs = history.history if history is not None else {}
    for epoch in range(len(logs.get("loss", []))):
        row = {"phase": phase, "epoch": epoch + 1}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                row[key] = round(float(logs[key][epoch]), 6)
        rows.append(row)
    return rows


def fit_phase(model, training, *, epochs: int, phase: str, hparams: HParams, out, validation, class_weight,
         verbose, mix=None):
    """`model.fit` over `training = (inputs, labels, augment)` held in memory, or a tf.data.Dataset.

    With `hparams.early_stopping` and `validation`, the phase stops early and ends on its best epoch's weights
    (`kerastl.train.schedule.restore_best_callback`); the History then carries `early_stopping`, its record.

    In-memory examples are batched by `checkpointing.epoch_batches`, so each epoch's order and augmentation
    depend only on (seed, epoch); every random layer's seed state is reset from (seed, epoch) too. With `out`,
    the phase is backed up each epoch into `out`, and a re-run of the same run (`kerastl.train.finetune`'s backup claim) resumes it.
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
    return fit_phase(classifier.head_model, training, epochs=epochs, phase="head", hparams=config, out=out,
                validation=validation, class_weight=class_weight, verbose=verbose)


def train_head(classifier, data, hparams: HParams, epochs, class_weight, verbose, timing, out=None,
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
        history = fit_phase(classifier.model, data["training"], epochs=epochs, phase="head", hparams=hparams, out=out,
                       validation=validation, class_weight=class_weight, verbose=verbose, mix=data["mix"])
    timing["head_train_seconds"] = round(time.perf_counter() - start, 3)
    return history


def datasets(spec, parts, hparams: HParams) -> dict:
    """The inputs every phase reads for the split `parts` (a `kerastl.data.Split`): `train_plain` (the
    training examples, unaugmented, batched), `training` (`(inputs, labels, transform)` for `fit_phase`:
    decoded into memory when it fits, else file paths read batch by batch, with the modality's stateless
    augmentation), `train_labels`, `val` (batched, or None without validation files), `val_labels`, and `mix`
    (`kerastl.train.mixing.batch_mixer`)."""
    from kerastl.data import make_dataset, training_examples
    from kerastl.train.mixing import batch_mixer

    common = dict(batch_size=hparams.batch_size, seed=hparams.seed)
    return {
        "train_plain": make_dataset(spec, parts.train_files, parts.train_labels, **common),
        "training": training_examples(spec, parts.train_files, parts.train_labels, augment=hparams.augment),
        "train_labels": parts.train_labels,
        "val": make_dataset(spec, parts.val_files, parts.val_labels, **common) if parts.val_files else None,
        "val_labels": parts.val_labels,
        "mix": batch_mixer(spec, hparams, len(parts.class_names)),
    }


def training_class_weights(parts, hparams: HParams) -> dict | None:
    """The class weights of training on `parts` (a `kerastl.data.Split`): balanced where
    `hparams.balance_classes` and the classes are uneven (`kerastl.data.class_weights`), else None."""
    from kerastl.data import class_weights

    return class_weights(parts.train_labels, len(parts.class_names)) if hparams.balance_classes else None


def build_classifier(backbone, num_classes: int, options: ModelOptions, *, seed: int):
    """The network `options` describe on `backbone`: its pooling and dropout, and pretrained weights with
    BatchNormalization statistics frozen, or (`from_scratch`) random ones that learn as usual."""
    from kerastl.train.head import build_classifier as build
    from kerastl.train.strategies import prepare_backbone

    backbone_model = backbone.model if options.from_scratch else prepare_backbone(backbone.model)
    # A head on pretrained features starts at zero weights, a network from scratch at random ones (kerastl.train.head).
    return build(backbone_model, num_classes, pooling=options.pooling, dropout=options.dropout, seed=seed,
                 zero_init=not options.from_scratch)

def apply_patterns(classifier, options: ModelOptions):
    """Applies `options`' trainable/frozen layer-name patterns to the backbone (full and top:N)."""
    from kerastl.train.strategies import set_trainable_by_pattern

    if options.trainable_layers or options.frozen_layers:
        set_trainable_by_pattern(classifier.backbone, options.trainable_layers, options.frozen_layers)


@dataclasses.dataclass
class PhaseLog:
    """What the phases of one training recorded, as metrics.json reports it: `history` (a row per epoch),
    `phases` ({name: budget, early stopping, epochs run}), `found` (the range tests of `--learning-rate auto`),
    `timing` (seconds) and `head_fit` (the probe's record, when the head was solved as one)."""

    history: list = dataclasses.field(default_factory=list)
    phases: dict = dataclasses.field(default_factory=dict)
    found: dict = dataclasses.field(default_factory=dict)
    timing: dict = dataclasses.field(default_factory=dict)
    head_fit: dict | None = None

    def best_epochs(self) -> dict:
        """{phase name: the epoch its early stopping kept (1-based), or the epochs it ran}, for every phase
        trained by steps: the training length a refit takes (`kerastl.train.crossval`)."""
        lengths = {}
        for name, phase in self.phases.items():
            if "epochs_run" not in phase:
                continue
            stopped = phase.get("early_stopping") or {}
            lengths[name] = stopped.get("best_epoch") or phase["epochs_run"]
        return lengths


@dataclasses.dataclass
class Training:
    """Everything the phases of one training on one split take.

    Attributes:
        classifier: the `kerastl.train.head.Classifier` to train (in place).
        data: `datasets(...)` of the split.
        hparams, options: the run's settings.
        class_weight: {class index: weight} or None.
        out: the run's output directory for epoch backups, or None (no backups: cross-validation folds).
        verbose: Keras progress output.
        run: the `kerastl.train.distribute` distribution.
        epochs: {phase name: epochs} that replace the budget rule (a refit after cross-validation), or None.
        log: where the phases record themselves.
    """

    classifier: object
    data: dict
    hparams: HParams
    options: ModelOptions
    class_weight: dict | None
    out: object
    verbose: object
    run: object
    epochs: dict | None = None
    log: PhaseLog = dataclasses.field(default_factory=PhaseLog)

    @property
    def validation(self):
        """The validation batches each epoch evaluates (early stopping reads them), or None."""
        return self.data["val"] if self.hparams.validate_each_epoch else None

    def budget(self, name: str, epochs: int | None):
        """The length of phase `name` (`kerastl.train.schedule.budget`), recorded in the log."""
        from kerastl.train.schedule import Budget, budget

        examples = len(self.data["train_labels"])
        length = budget(examples, self.hparams.batch_size, epochs=epochs, min_steps=self.hparams.min_steps)
        if self.epochs and name in self.epochs:  # within the folds' length (the budget rule or --epochs)
            length = Budget(int(self.epochs[name]), length.steps_per_epoch,
                            f"{self.epochs[name]} of {length.epochs} epochs, the median best epoch of the "
                            f"cross-validation folds")
        self.log.phases[name] = {"budget": length}
        return length

    def record(self, name: str, fit) -> None:
        self.log.phases[name]["early_stopping"] = getattr(fit, "early_stopping", None)
        self.log.phases[name]["epochs_run"] = len(fit.history.get("loss", [])) if fit is not None else 0
        self.log.history += history_rows(fit, name)


def head_phase(training: Training, strategy) -> None:
    """The head phase: all of Option 1, or the first phase of full and top:N (`strategy`, parsed)."""
    hparams = training.hparams
    head_epochs = hparams.epochs if strategy.kind == "head" or hparams.head_epochs is None else hparams.head_epochs
    length = training.budget("head", head_epochs)
    fit = train_head(training.classifier, training.data, hparams, length.epochs, training.class_weight,
                     training.verbose, training.log.timing, out=training.out, total_steps=length.steps,
                     found=training.log.found)
    training.run.broadcast_from_chief(training.classifier.head_model.weights)  # each worker adapted on its own
    if isinstance(fit, dict):
        training.log.head_fit = fit
        training.log.phases["head"] = {"solver": "probe"}
    else:
        training.record("head", fit)


def backbone_phase(training: Training, strategy) -> None:
    """The second phase of full and top:N: the backbone layers `strategy` unfreezes (and `options`' patterns)
    train with the head, at `learning_rate * fine_tune_factor`."""
    from kerastl.train.range_test import phase_rate
    from kerastl.train.strategies import set_backbone_trainable

    classifier, hparams, data = training.classifier, training.hparams, training.data
    set_backbone_trainable(classifier.backbone, strategy)
    apply_patterns(classifier, training.options)
    name = str(strategy)
    length = training.budget(name, hparams.epochs)
    # Recompile: `trainable` changes take effect only at compile time.
    rate = phase_rate(hparams, name, classifier.model, make_optimizer, training=data["training"],
                      class_weight=training.class_weight, factor=hparams.fine_tune_factor, found=training.log.found)
    _compile(classifier.model, hparams, rate, total_steps=length.steps, backbone=classifier.backbone)
    fit = fit_phase(classifier.model, data["training"], epochs=length.epochs, phase=name.replace(":", "-"),
                    hparams=hparams, out=training.out, validation=training.validation,
                    class_weight=training.class_weight, verbose=training.verbose, mix=data["mix"])
    training.record(name, fit)


def scratch_phase(training: Training) -> None:
    """Training from scratch: every layer from random weights, BatchNormalization learning as usual."""
    from kerastl.train.range_test import phase_rate
    from kerastl.train.scratch import settle_batchnorm_quickly
    from kerastl.train.strategies import parse_strategy, set_backbone_trainable

    classifier, hparams, data = training.classifier, training.hparams, training.data
    settle_batchnorm_quickly(classifier.backbone)
    set_backbone_trainable(classifier.backbone, parse_strategy("full"))
    apply_patterns(classifier, training.options)
    length = training.budget("from-scratch", hparams.epochs)
    rate = phase_rate(hparams, "from-scratch", classifier.model, make_optimizer, training=data["training"],
                      class_weight=training.class_weight, found=training.log.found)
    _compile(classifier.model, hparams, rate, total_steps=length.steps)
    fit = fit_phase(classifier.model, data["training"], epochs=length.epochs, phase="from-scratch",
                    hparams=hparams, out=training.out, validation=training.validation,
                    class_weight=training.class_weight, verbose=training.verbose, mix=data["mix"])
    training.record("from-scratch", fit)


def check_patterns(strategy, options: ModelOptions) -> None:
    """Refuses layer-name patterns with the head strategy (parsed; None, from scratch, passes).

    Raises:
        UsageError: patterns with `head`: they choose backbone layers, which it never trains.
    """
    if strategy is not None and strategy.kind == "head" and (options.trainable_layers or options.frozen_layers):
        raise UsageError("layer patterns apply to full and top:N fine-tuning; the head strategy trains "
                         "only the new layer")


def train(training: Training, strategy) -> None:
    """Every phase of `strategy` (parsed and resolved; None: from scratch) on `training`'s split.

    Raises:
        UsageError: layer patterns with the head strategy (they choose backbone layers, which it never trains).
    """
    check_patterns(strategy, training.options)  # before any training
    start = time.perf_counter()
    if strategy is None:
        scratch_phase(training)
    else:
        head_phase(training, strategy)
        if strategy.kind in ("full", "top"):
            backbone_phase(training, strategy)
    training.log.timing["train_seconds"] = round(time.perf_counter() - start, 3)
