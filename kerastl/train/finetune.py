"""Step 2 of transfer learning: fine-tune a pretrained backbone with a new output layer on your classes.

Strategies (see `kerastl.train.strategies`):
- `head` (Option 1): only the new output layer trains. The frozen backbone's pooled features are computed
  once and cached, the head trains on them, and the trained head is put back on the backbone. With
  `augment=True` the cache holds the features of `augment_views` views of each example (`kerastl.train.views`);
  `cache_features=False` is the slow path (a plain frozen `fit`). The new layer starts at zero weights.
- `full` (Option 2): the head is trained first (as above), then every layer at a lower learning rate
  (`learning_rate * fine_tune_factor`), recompiled after `trainable` changes.
- `top:N`: as `full`, but only the last N weighted backbone layers are unfrozen in the second phase.
- `auto`: with `cross_validation`, head, top:N or full, whichever scores best on the folds
  (`kerastl.train.crossval`); without it, `head` or `full` from the number of labelled examples per class.
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
from kerastl.train import crossval, phases

# A phase's optimizer and compile live in kerastl.train.optimizers, the phases in kerastl.train.phases; these
# names are still importable from here.
from kerastl.train.optimizers import compile_phase as _compile  # noqa: F401
from kerastl.train.optimizers import make_optimizer  # noqa: F401

# The settings live in kerastl.train.options; FinetuneConfig and OPTIMIZERS are still importable from here.
from kerastl.train.options import OPTIMIZERS, FinetuneConfig, HParams, ModelOptions  # noqa: F401
from kerastl.train.phases import build_classifier as _build_classifier
from kerastl.train.phases import compile_head, train_head_on_features  # noqa: F401


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` produced: the model, its class names, the metrics dict and the files written."""

    model: object
    class_names: list
    metrics: dict
    files: dict


def _split(data_dir, backbone, hparams: HParams):
    """The folder's scan, its split and whether the run cross-validates (`kerastl.train.crossval.wanted`):
    then every labelled example is in the split's training part (the folds are made from it), else the split
    holds out `validation_fraction` (0.2 when not given) or all but `shots` per class."""
    from kerastl.data import drop_undecodable, input_spec, scan_folder, split

    spec = input_spec(backbone.model)
    scan = drop_undecodable(scan_folder(data_dir, spec.modality))
    cross_validate = crossval.wanted(hparams, min((len(files) for files in scan.files), default=0))
    fraction = 0.0 if cross_validate else crossval.fixed_fraction(hparams)
    return scan, split(scan, validation_fraction=fraction, shots=hparams.shots, seed=hparams.seed), cross_validate


def _candidates(requested, options: ModelOptions, classifier, parts, cross_validate: bool) -> list:
    """What the run trains: from scratch, the strategy asked for, or for `auto` its candidates to measure
    under cross-validation, and without it the fixed rule (`kerastl.train.strategies.resolve_auto`)."""
    from kerastl.train.strategies import resolve_auto

    if options.from_scratch:
        return [crossval.Candidate(None)]
    if requested.kind != "auto":
        return [crossval.Candidate(requested)]
    if not cross_validate:
        return [crossval.Candidate(resolve_auto(requested, min(parts.train_counts())))]
    return crossval.auto_candidates(classifier.backbone)


class _Trainer:
    """Trains the run's candidates on given splits, each from the classifier's starting weights (the
    pretrained backbone and a zero head, or the random network), so that folds and candidates never see each
    other's training. With `restarts` False it trains once, from the weights it was given."""

    def __init__(self, classifier, backbone, hparams: HParams, options: ModelOptions, run, verbose, *,
                 restarts: bool):
        from kerastl.data import input_spec

        self.classifier, self.hparams, self.options, self.run, self.verbose = (
            classifier, hparams, options, run, verbose)
        self.spec = input_spec(backbone.model)
        # The starting weights are copied only for runs that train more than once (a large backbone's copy
        # costs its size in memory).
        self.initial = classifier.model.get_weights() if restarts else None

    def training(self, parts, candidate, out, *, epochs=None, verbose=None):
        from kerastl.train.phases import Training, datasets, training_class_weights

        hparams = self.hparams
        if candidate.rate_factor != 1.0:
            hparams = dataclasses.replace(hparams, learning_rate=float(hparams.learning_rate) * candidate.rate_factor)
        return Training(self.classifier, datasets(self.spec, parts, hparams), hparams, self.options,
                        training_class_weights(parts, hparams), out,
                        self.verbose if verbose is None else verbose, self.run, epochs=epochs)

    def run_all(self, parts, candidate, out, *, epochs=None):
        """Every phase of `candidate` on `parts` (`epochs`: cross-validated lengths by phase), from the starting
        weights where they were kept; returns its `kerastl.train.phases.Training`."""
        if self.initial is not None:
            self.classifier.model.set_weights(self.initial)
        training = self.training(parts, candidate, out, epochs=epochs)
        phases.train(training, candidate.strategy)
        return training

    def train_on(self, out):
        """The `train_on` of `kerastl.train.crossval.compare`: candidates that begin with the same head phase
        (same learning rate and head epochs) train it once per split and start from a copy of it."""
        import copy

        def train_on(split, candidate, shared):
            if candidate.strategy is None:
                training = self.run_all(split, candidate, out)
            else:
                kind, hparams = candidate.strategy.kind, self.hparams
                head_epochs = hparams.epochs if kind == "head" or hparams.head_epochs is None else hparams.head_epochs
                key = (candidate.rate_factor, head_epochs)
                if key not in shared:
                    self.classifier.model.set_weights(self.initial)
                    training = self.training(split, candidate, out, verbose=0 if out is None else None)
                    phases.head_phase(training, candidate.strategy)
                    shared[key] = (self.classifier.model.get_weights(), training)
                weights, head = shared[key]
                self.classifier.model.set_weights(weights)
                training = dataclasses.replace(head, log=copy.deepcopy(head.log))
                if kind != "head":
                    phases.backbone_phase(training, candidate.strategy)
            probabilities = self.classifier.model.predict(training.data["val"], verbose=0)
            return probabilities, training.log

        return train_on


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
    from kerastl.train.scratch import refuse_random_weights
    from kerastl.train.strategies import parse_strategy

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
    phases.check_patterns(requested, options)
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
    scan, parts, cross_validate = _split(data_dir, backbone, hparams)
    min_per_class = min(parts.train_counts())
    notes = [] if out is None else _claim_backups(out, backbone, config, parts,
                                                 {"weights": weights, "cut": cut, "image_size": image_size})
    with run.scope():
        classifier = _build_classifier(backbone, len(parts.class_names), options, seed=hparams.seed)
    fold_parts = crossval.folds(parts, min(hparams.folds, min_per_class), hparams.seed) if cross_validate else None
    candidates = _candidates(requested, options, classifier, parts, cross_validate)
    trainer = _Trainer(classifier, backbone, hparams, options, run, verbose, restarts=cross_validate)
    comparison = None
    start = time.perf_counter()
    if cross_validate:
        comparison = crossval.select(fold_parts, candidates, trainer.train_on(None), hparams)
        chosen = comparison.chosen.candidate
        training = trainer.run_all(parts, chosen, out, epochs=comparison.chosen.median_epochs())
    else:
        chosen = candidates[0]
        training = trainer.run_all(parts, chosen, out)
    timing = training.log.timing
    timing["train_seconds"] = round(time.perf_counter() - start, 3)
    if comparison is not None:
        timing["comparison_seconds"] = round(comparison.seconds, 3)
    strategy = chosen.strategy

    if cross_validate:
        labels, probabilities = crossval.out_of_fold(comparison.chosen)
        metrics = classification_metrics(labels, probabilities, parts.class_names)
        metrics["evaluated_on"] = (f"cross-validation: the out-of-fold predictions of {len(fold_parts)} folds "
                                   "(an estimate; the saved model was refit on every labelled example)")
    elif parts.val_files:
        probabilities = classifier.model.predict(training.data["val"], verbose=0)
        metrics = classification_metrics(np.asarray(parts.val_labels), probabilities, parts.class_names)
        metrics["evaluated_on"] = "validation"
    else:
        metrics = classification_metrics([], np.zeros((0, len(parts.class_names))), parts.class_names)
        metrics["evaluated_on"] = "nothing (no validation split)"
    weights_by_class = training.class_weight
    evaluation = f"{len(fold_parts)}-fold cross-validation" if cross_validate else "the validation split"
    metrics["cross_validation"] = None if comparison is None else comparison.record(evaluation)
    metrics["baseline"] = _baseline(backbone, fold_parts or [parts], hparams, metrics)
    metrics.update({
        "strategy": "from-scratch" if options.from_scratch else str(strategy),
        "learning_rate_factor": chosen.rate_factor,
        "strategy_requested": str(requested),
        "auto_rule": _auto_rule_text(requested, comparison, evaluation, min_per_class),
        "backbone": backbone.record(),
        "data": str(data_dir),
        "train_examples": len(parts.train_files),
        "train_counts": dict(zip(parts.class_names, parts.train_counts())),
        "class_weights": None if weights_by_class is None else {
            parts.class_names[i]: round(w, 4) for i, w in weights_by_class.items()},
        "skipped": [{"path": p, "reason": r} for p, r in scan.skipped],
        "ignored_files": len(scan.ignored),
        "history": training.log.history,
        "head_fit": training.log.head_fit,
        "lr_find": training.log.found,
        "phases": {name: {key: (value.record() if hasattr(value, "record") else value) for key, value in p.items()}
                   for name, p in training.log.phases.items()},
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


def _baseline(backbone, splits: list, hparams: HParams, metrics) -> dict | None:
    """The classical baseline (`kerastl.train.baseline`) on the run's split, or on each cross-validation fold
    (pooled over the held-out examples, as the run's out-of-fold accuracy is), with `margin`, the run's accuracy
    minus the baseline's (positive: transfer beat it); None without `hparams.baseline` or held-out examples."""
    from kerastl.data import input_spec
    from kerastl.train.baseline import classical_baseline
    from kerastl.train.phases import training_class_weights

    if not hparams.baseline:
        return None
    records = []
    for part in splits:
        records.append(classical_baseline(input_spec(backbone.model), part.train_files, part.train_labels,
                                          part.val_files, part.val_labels,
                                          class_weight=training_class_weights(part, hparams), seed=hparams.seed))
    if any(r is None for r in records):
        return None
    record = dict(records[0])
    if len(records) > 1:
        held = sum(r["evaluated_on"] for r in records)
        record.update(accuracy=round(sum(r["accuracy"] * r["evaluated_on"] for r in records) / held, 6),
                      evaluated_on=held, folds=len(records), l2_c=[r["l2_c"] for r in records],
                      seconds=round(sum(r["seconds"] for r in records), 3))
    if metrics.get("accuracy") is not None:
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


def _auto_rule_text(requested, comparison, evaluation: str, min_per_class: int) -> str | None:
    """How `auto` chose, for the summary: the measured accuracy of each candidate on `evaluation`, or without
    cross-validation the fixed rule and the count it read."""
    from kerastl.train.strategies import AUTO_FULL_MIN_PER_CLASS

    if requested.kind != "auto":
        return None
    if comparison is None:
        return (f"{min_per_class} training examples in the smallest class; auto uses full from "
                f"{AUTO_FULL_MIN_PER_CLASS} per class, head below (--cross-validation measures instead)")
    scores = ", ".join(f"{c.candidate.name} {100 * c.accuracy:.1f}%" for c in comparison.scored)
    return f"measured by {evaluation}: {scores}"


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
