"""`kerastl lr-find`: the learning-rate range test (`kerastl.train.range_test`) on a fresh classifier, for the
phase a fine-tuning run with the same settings would train last.

- `head`: the new output layer on the frozen backbone's cached features (fast: the backbone runs once), or on
  the whole frozen model under `augment`, as `finetune` trains it.
- `full`, `top:N`: the head is first trained as `finetune` trains it (same budget, same learning rate), then
  the test runs on the whole model with that strategy's layers unfrozen: the rate it suggests is the one for
  the second phase (which `finetune` otherwise sets to `learning_rate * fine_tune_factor`).
- `from_scratch`: the whole network from random weights, BatchNormalization settling as in `finetune`.

`finetune` itself runs the same test before each phase with `learning_rate="auto"`; this command shows the
curve, so a rate can be read off and chosen by hand.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kerastl.errors import KerastlError
from kerastl.train.options import FinetuneConfig, HParams, ModelOptions
from kerastl.train.range_test import LR_MAX, LR_MIN, STEPS, RangeTest, check_range

JSON_FILE = "lr_find.json"
PLOT_FILE = "lr_find.png"


@dataclasses.dataclass
class LRFindResult:
    """What `lr_find` measured.

    Attributes:
        test: the `RangeTest` (rates, smoothed losses, suggestion, rule).
        strategy: the resolved strategy ("from-scratch" for a random network).
        phase: the phase tested: head, full, top:N or from-scratch.
        record: everything written to lr_find.json.
        files: {"json": path, "plot": path} when `out` was given, else empty.
    """

    test: RangeTest
    strategy: str
    phase: str
    record: dict
    files: dict


def lr_find(data_dir=None, backbone=None, *, out=None, config: FinetuneConfig | None = None,
            hparams: HParams | None = None, model_options: ModelOptions | None = None, weights: str | None = None,
            cut: str | None = None, image_size: int | None = None, trust: bool = False, lr_min: float = LR_MIN,
            lr_max: float = LR_MAX, steps: int = STEPS) -> LRFindResult:
    """Runs the learning-rate range test for the last phase `finetune` would train with these settings (see
    the module docstring), on the training split `finetune` would make.

    Args:
        data_dir, backbone, config / hparams / model_options, weights, cut, image_size, trust: as `finetune`
            takes them (batch size, seed, shots, validation split, optimizer and class weights are used).
        out: a directory to write lr_find.json and lr_find.png into, as one set (other files in it are kept);
            None writes nothing.
        lr_min, lr_max, steps: the range and the most steps (`kerastl.train.range_test.check_range`).

    Returns:
        An `LRFindResult`.

    Raises:
        UsageError: an invalid setting or range (named, with what was received), random weights without
            `from_scratch`, a strategy `head` with `head_solver="probe"` (a probe has no learning rate).
        KerastlError: unusable data or backbone, or `out` is a file.
    """
    import keras

    from kerastl.train import finetune as tuning
    from kerastl.train import phases
    from kerastl.train.range_test import range_test
    from kerastl.train.strategies import (
        parse_strategy,
        resolve_auto,
        set_backbone_trainable,
    )

    check_range(lr_min, lr_max, steps)
    config = tuning._settings(config, hparams, model_options)
    config.validate()
    hparams, options = config.hparams, config.model_options
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise KerastlError(f"--out {out} is a file; give a directory path")
    requested = parse_strategy(options.strategy)
    keras.utils.set_random_seed(hparams.seed)
    backbone, data_dir = _load(data_dir, backbone, options, requested, weights, cut, image_size, trust)
    from kerastl.data import input_spec

    # The run's training examples: all of them where finetune would cross-validate and refit on all.
    _scan, parts, _cross_validate = tuning._split(data_dir, backbone, hparams)
    class_weight = phases.training_class_weights(parts, hparams)
    data = phases.datasets(input_spec(backbone.model), parts, hparams)
    strategy = resolve_auto(requested, min(parts.train_counts()))
    classifier = tuning._build_classifier(backbone, len(parts.class_names), options, seed=hparams.seed)
    test_settings = dict(batch_size=hparams.batch_size, seed=hparams.seed, class_weight=class_weight,
                         shuffle=hparams.shuffle, lr_min=lr_min, lr_max=lr_max, steps=steps,
                         optimizer=lambda rate: tuning.make_optimizer(hparams.optimizer, rate, hparams.momentum))
    if options.from_scratch:
        from kerastl.train.scratch import settle_batchnorm_quickly

        phase = "from-scratch"
        settle_batchnorm_quickly(classifier.backbone)
        set_backbone_trainable(classifier.backbone, parse_strategy("full"))
        phases.apply_patterns(classifier, options)
        model, training = classifier.model, data["training"]
    elif strategy.kind == "head":
        phase = "head"
        model, training = _head_phase(classifier, data, hparams)
    else:
        from kerastl.train.schedule import budget

        phase = str(strategy)
        head_epochs = hparams.epochs if hparams.head_epochs is None else hparams.head_epochs
        length = budget(len(parts.train_files), hparams.batch_size, epochs=head_epochs, min_steps=hparams.min_steps)
        phases.train_head(classifier, data, hparams, length.epochs, class_weight, 0, {}, total_steps=length.steps)
        set_backbone_trainable(classifier.backbone, strategy)
        phases.apply_patterns(classifier, options)
        model, training = classifier.model, data["training"]
    test = range_test(model, training, phase=phase, **test_settings)
    record = {"suggestion": test.suggestion, "phase": phase,
              "strategy": "from-scratch" if options.from_scratch else str(strategy),
              "backbone": backbone.spec, "data": str(data_dir), "train_examples": len(parts.train_files),
              "lr_min": lr_min, "lr_max": lr_max, "max_steps": steps, "range_test": test.record(),
              "config": dataclasses.asdict(config)}
    files = {} if out is None else write_outputs(out, test, record)
    return LRFindResult(test=test, strategy=record["strategy"], phase=phase, record=record, files=files)


def _load(data_dir, backbone, options: ModelOptions, requested, weights, cut, image_size, trust):
    """The backbone and data folder as `finetune` resolves them (default backbone, random-weight refusal, the
    same-input-type rule)."""
    from kerastl.backbones import default_backbone_spec, load_backbone
    from kerastl.core.records import Backbone
    from kerastl.data import detect_modality, digits_folder
    from kerastl.train.finetune import check_modality
    from kerastl.train.scratch import refuse_random_weights

    data_dir = Path(data_dir) if data_dir is not None else digits_folder()
    if weights == "none" and not options.from_scratch:
        refuse_random_weights(backbone if isinstance(backbone, str) else "the backbone", requested)
    if not isinstance(backbone, Backbone):
        spec = backbone or default_backbone_spec(detect_modality(data_dir) or "image", data_dir)
        backbone = load_backbone(spec, weights=weights, cut=cut, image_size=image_size,
                                 from_scratch=options.from_scratch, trust=trust)
    if backbone.weights == "none" and not options.from_scratch:
        refuse_random_weights(backbone.spec, requested)
    check_modality(backbone, data_dir)
    return backbone, data_dir


def _head_phase(classifier, data, hparams: HParams):
    """The head phase's model and training set: the head on cached, standardised features (the backbone runs
    once), or the whole frozen model on the examples when `augment` or no cache (as `finetune` trains it).

    Raises:
        UsageError: `head_solver="probe"`: the probe is solved, not stepped, so it has no learning rate.
    """
    import numpy as np

    from kerastl.errors import UsageError
    from kerastl.train.strategies import Strategy, set_backbone_trainable

    if hparams.head_solver == "probe":
        raise UsageError("--head-solver probe solves the head without a learning rate; lr-find tests the "
                         "optimizer's steps (--head-solver steps), or use --strategy full or top:N")
    set_backbone_trainable(classifier.backbone, Strategy("head"))
    features = classifier.feature_model.predict(data["train_plain"], verbose=0)
    classifier.adapt(features)  # finetune standardises the features first either way
    if hparams.cache_features and not hparams.augment:
        return classifier.head_model, (features, np.asarray(data["train_labels"]), None)
    return classifier.model, data["training"]


def write_outputs(out, test: RangeTest, record: dict) -> dict:
    """Writes lr_find.json (`record`) and lr_find.png (the curve, `kerastl.reporting.plots.plot_lr_find`) into
    `out` as one set, keeping every other file there (`kerastl.core.atomic.commit_directory`).

    Raises:
        KerastlError: `out` exists and is not a directory.
    """
    from kerastl.core.atomic import commit_directory, staged_directory
    from kerastl.reporting.plots import plot_lr_find

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KerastlError(f"--out {out} is a file; give a directory path")
    with staged_directory(out) as staged:
        (staged / JSON_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        plot_lr_find(test.lrs, test.losses, test.suggestion, staged / PLOT_FILE,
                     title=f"kerastl lr-find: {record['phase']} ({record['backbone']})", stopped=test.stopped)
    commit_directory(staged, out, owned=(JSON_FILE, PLOT_FILE))
    return {"json": str(out / JSON_FILE), "plot": str(out / PLOT_FILE)}
