"""The settings of a fine-tuning run, in two parts, as MediaPipe Model Maker separates `HParams` from
`ModelOptions`.

The rule that splits them: a setting is a **model option** if changing it changes the network that is built,
that is its layers, their starting weights, or which of them are trainable. Every other setting is a
**hyperparameter**: it changes how the built network is trained (the optimiser and its schedule, the data split
and the order and augmentation of the examples, the seed and determinism, class weights, the feature cache and
validation during training), so only the values the weights reach. So `strategy` and `from_scratch` are model
options (they decide what trains and from which weights), while `augment` is a hyperparameter (the
augmentation runs in the input pipeline and is not part of the saved model), and so is `seed`, although it
also seeds the dropout and a from-scratch initialisation: it is a property of the run, not of the network.
MediaPipe's image classifier keeps its `do_fine_tuning` flag with the hyperparameters; kerastl's `strategy`
is richer (head, full, top:N, auto, name patterns) and decides the trainable set of the built model, so it sits
with the model options.

- `HParams`: how training runs.
- `ModelOptions`: what model is built.
- `FinetuneConfig`: both in one flat record, the form `kerastl.finetune(config=...)` always took; its fields,
  defaults and `dataclasses.asdict` (which the resume fingerprint hashes) are exactly the two parts' together.
"""

from __future__ import annotations

import dataclasses
import numbers

from kerastl.errors import UsageError
from kerastl.train.distribute import DISTRIBUTE
from kerastl.train.schedule import MIN_STEPS, SCHEDULES
from kerastl.train.views import DEFAULT_VIEWS

OPTIMIZERS = ("adam", "sgd")
#: How Option 1's head is fitted on cached features: optimizer steps, or solved as a cross-validated linear
#: probe (`kerastl.train.probe`).
HEAD_SOLVERS = ("steps", "probe")


@dataclasses.dataclass
class HParams:
    """How a fine-tuning run trains the model (the hyperparameters).

    Attributes:
        epochs: epochs of the main phase (the only phase for head and from-scratch), an override; None: a
            budget of at least `min_steps` optimizer steps and `kerastl.train.schedule.DEFAULT_EPOCHS` epochs
            (`kerastl.train.schedule.budget`).
        head_epochs: epochs of the head phase that precedes full/top:N fine-tuning (default: as `epochs`).
        min_steps: the fewest optimizer steps of a phase without `epochs`.
        schedule: the learning rate over a phase: "cosine" (linear warmup, then a half cosine to 0) or
            "constant".
        early_stopping: with a validation split, stop a phase once its validation loss has not improved for
            `kerastl.train.schedule.patience(epochs)` epochs, and restore its best epoch's weights.
        batch_size: examples per step.
        learning_rate: the head's learning rate; full/top:N fine-tuning uses `learning_rate * fine_tune_factor`.
            "auto": every trained phase takes the rate the learning-rate range test suggests
            (`kerastl.train.range_test`; metrics.json records each phase's test under `lr_find`).
        fine_tune_factor: see `learning_rate`.
        optimizer: adam, or sgd (with `momentum`).
        momentum: SGD momentum.
        augment: the modality's stateless augmentation of the training examples (images: translation,
            rotation, zoom, contrast; audio: time shift and gain; text has none). The head then trains on the
            cached features of `augment_views` views of each example (`kerastl.train.views`).
        shots: train on N examples per class (the rest validate): a fixed split.
        validation_fraction: share of each class held out (a fixed split) when `shots` is not given; None (the
            default): 0.2, or with `cross_validation` none.
        cross_validation: k-fold cross-validation chooses the strategy (for `auto`: head, top:N or full), each
            phase's length and the learning rate, and the model is refit on every labelled example
            (`kerastl.train.crossval`); metrics.json reports the cross-validated estimate. Not with a fixed split
            (`validation_fraction` or `shots`).
        folds: the folds of cross-validation (fewer when the smallest class has fewer examples), at least 2.
        budget: seconds that cross-validation and `auto`'s comparison may take (`kerastl.train.crossval`).
        seed: seeds the split, the initialisation, shuffling, dropout and augmentation.
        cache_features: Option 1's cached-feature speed-up; False forces the plain frozen `fit`.
        shuffle: shuffle training batches each epoch.
        validate_each_epoch: evaluate the validation split after every epoch (for the curves in report.png);
            the final metrics are computed either way.
        deterministic: TensorFlow op determinism; with a fixed `seed`, a run resumed after a kill ends with the
            weights an uninterrupted run ends with (see `kerastl.train.resume`).
        balance_classes: class weights when classes are imbalanced.
        head_solver: how the head is fitted on cached features (Option 1, and the head phase before full and
            top:N): "steps", `epochs` of the optimizer; "probe", a multinomial logistic regression solved by
            L-BFGS with its L2 penalty chosen by k-fold cross-validation on the training examples
            (`kerastl.train.probe`), which needs the feature cache (`cache_features`; with `augment`, on the views).
        baseline: also fit the input type's classical baseline (a logistic regression on pixels, log-spectrum
            statistics or TF-IDF) on the same split, and report it beside the result (`kerastl.train.baseline`).
        distribute: the tf.distribute strategy (`kerastl.train.distribute`): None, the default one device;
            "mirrored", the local devices; "multiworker", the machines `TF_CONFIG` describes. `batch_size` is then
            per replica: a step takes `batch_size` × replicas examples.
        augment_views: with `augment` and the feature cache, the views of each training example whose
            features the head trains on (the head strategy and the head phase of full/top:N): view 0 is the
            example itself, the others its augmentations, computed once (`kerastl.train.views`; the default
            and why: `kerastl.train.views.DEFAULT_VIEWS`). 1: the plain example only, so the head phase sees
            no augmentation; `cache_features=False` augments afresh every epoch instead, running the backbone.
        label_smoothing: in [0, 1): every optimizer phase's targets become `(1 - s) * target + s / classes`
            (`kerastl.train.losses`); 0 trains on the hard labels. The probe solver is unaffected.
        layer_decay: full and top:N only: the fine-tuning phase's learning rate for the new head, times
            `layer_decay ** depth` for each backbone unit, the top one at depth 1 (`kerastl.train.optimizers`);
            None (or 1) gives every layer the same rate.
        mixup: the Beta(alpha, alpha) concentration of mixup on training batches (each example blended with
            another, labels likewise); 0 is off. Images only; disables the feature cache.
        cutmix: as `mixup` for cutmix (a box of another example pasted in, labels weighted by its area); with
            both, each batch takes one of the two at random (`kerastl.train.mixing`).
    """

    epochs: int | None = None
    head_epochs: int | None = None
    min_steps: int = MIN_STEPS
    schedule: str = "cosine"
    early_stopping: bool = True
    batch_size: int = 32
    learning_rate: float | str = 1e-3
    fine_tune_factor: float = 0.1
    optimizer: str = "adam"
    momentum: float = 0.9
    augment: bool = False
    shots: int | None = None
    validation_fraction: float | None = None
    seed: int = 0
    cache_features: bool = True
    shuffle: bool = True
    validate_each_epoch: bool = True
    deterministic: bool = False
    balance_classes: bool = True
    head_solver: str = "steps"
    baseline: bool = True
    distribute: str | None = None
    augment_views: int = DEFAULT_VIEWS
    label_smoothing: float = 0.0
    layer_decay: float | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    cross_validation: bool = False
    folds: int = 5
    budget: float = 600.0

    @property
    def mixes_batches(self) -> bool:
        """Whether mixup or cutmix blend the training batches (which, like `augment`, needs the backbone to
        run on every batch, so the feature cache is off)."""
        return float(self.mixup) > 0 or float(self.cutmix) > 0

    def validate(self) -> None:
        """Checks the optimisation and schedule settings.

        Raises:
            UsageError: the first invalid value, named as the command line names it (`--epochs must be an
                integer >= 1. Received: 0`).
        """
        checks = [
            ("--epochs", self.epochs, self.epochs is None or (isinstance(self.epochs, int) and self.epochs >= 1),
             "an integer >= 1"),
            ("--head-epochs", self.head_epochs,
             self.head_epochs is None or (isinstance(self.head_epochs, int) and self.head_epochs >= 0),
             "an integer >= 0"),
            ("--min-steps", self.min_steps, isinstance(self.min_steps, int) and self.min_steps >= 1,
             "an integer >= 1"),
            ("--schedule", self.schedule, self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("--batch-size", self.batch_size, isinstance(self.batch_size, int) and self.batch_size >= 1,
             "an integer >= 1"),
            ("--learning-rate", self.learning_rate, _is_rate(self.learning_rate), "in (0, 10], or auto"),
            ("fine_tune_factor", self.fine_tune_factor, 0 < float(self.fine_tune_factor) <= 1, "in (0, 1]"),
            ("--optimizer", self.optimizer, self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
            ("--momentum", self.momentum, 0 <= float(self.momentum) < 1, "in [0, 1)"),
            ("--head-solver", self.head_solver, self.head_solver in HEAD_SOLVERS, f"one of {HEAD_SOLVERS}"),
            ("--distribute", self.distribute, self.distribute is None or self.distribute in DISTRIBUTE,
             f"one of {DISTRIBUTE} (or None: the default strategy)"),
            ("--augment-views", self.augment_views,
             isinstance(self.augment_views, int) and not isinstance(self.augment_views, bool)
             and self.augment_views >= 1, "an integer >= 1"),
            ("--validation-split", self.validation_fraction,
             self.validation_fraction is None or 0 <= float(self.validation_fraction) < 1, "in [0, 1)"),
            ("--folds", self.folds, isinstance(self.folds, int) and not isinstance(self.folds, bool)
             and self.folds >= 2, "an integer >= 2"),
            ("--budget", self.budget, isinstance(self.budget, (int, float)) and not isinstance(self.budget, bool)
             and self.budget > 0, "a number of seconds > 0"),
            *_recipe_checks(self),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise UsageError(f"{name} must be {expected}. Received: {value}")
        if self.cross_validation and (self.validation_fraction is not None or self.shots is not None):
            given = "--shots" if self.shots is not None else "--validation-split"
            raise UsageError(f"--cross-validation uses every label in its folds, and {given} asks for a fixed "
                             f"split; give one of the two")
        if self.head_solver == "probe" and not self.cache_features:
            raise UsageError("--head-solver probe fits the head on cached features, which cache_features=False "
                             "turns off; drop it, or use --head-solver steps")
        if self.head_solver == "probe" and self.mixes_batches:
            raise UsageError("--head-solver probe fits the head on cached features, which --mixup and --cutmix "
                             "turn off; drop them, or use --head-solver steps")


def _is_rate(value) -> bool:
    """A learning rate `HParams` takes: a number in (0, 10], or "auto" (the range test's)."""
    if value == "auto":
        return True
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return 0 < float(value) <= 10


def _number(value) -> float | None:
    """`value` as a finite float, or None (not a number, nan or infinite), so a range check refuses it."""
    import math

    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and not isinstance(value, bool) else None


def _recipe_checks(hparams: HParams) -> list:
    """`HParams.validate`'s rows for label smoothing, layer-wise decay, mixup and cutmix."""
    smoothing, decay = _number(hparams.label_smoothing), _number(hparams.layer_decay)
    mixup, cutmix = _number(hparams.mixup), _number(hparams.cutmix)
    return [
        ("--label-smoothing", hparams.label_smoothing, smoothing is not None and 0 <= smoothing < 1, "in [0, 1)"),
        ("--layer-decay", hparams.layer_decay, hparams.layer_decay is None or (decay is not None and 0 < decay <= 1),
         "in (0, 1]"),
        ("--mixup", hparams.mixup, mixup is not None and mixup >= 0, "a number >= 0 (0: off)"),
        ("--cutmix", hparams.cutmix, cutmix is not None and cutmix >= 0, "a number >= 0 (0: off)"),
    ]


@dataclasses.dataclass
class ModelOptions:
    """What model a fine-tuning run builds: the new head, the starting weights, and which layers train.

    Attributes:
        strategy: which layers train: head, full, top:N or auto (see `kerastl.train.strategies`).
        dropout: dropout before the new output layer, in [0, 1).
        pooling: avg or max global pooling of the backbone's feature map.
        from_scratch: random initial weights instead of the pretrained ones (the no-transfer baseline).
        trainable_layers / frozen_layers: layer-name glob patterns applied after the strategy (API only;
            full and top:N only).
    """

    strategy: str = "auto"
    dropout: float = 0.2
    pooling: str = "avg"
    from_scratch: bool = False
    trainable_layers: list | None = None
    frozen_layers: list | None = None

    def validate(self) -> None:
        """Checks the strategy, then the head's pooling and dropout.

        Whether the layer patterns match layers, and whether they suit the resolved strategy, depends on the
        backbone and the data, so `finetune` checks those once it has both.

        Raises:
            UsageError: the first invalid value, with what was received.
        """
        from kerastl.train.head import check_head_options
        from kerastl.train.strategies import parse_strategy

        parse_strategy(self.strategy)
        check_head_options(pooling=self.pooling, dropout=self.dropout)


_HPARAMS = tuple(field.name for field in dataclasses.fields(HParams))
_MODEL_OPTIONS = tuple(field.name for field in dataclasses.fields(ModelOptions))


@dataclasses.dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run in one flat record: the fields of `HParams` and of `ModelOptions`.

    This is the form `kerastl.finetune(config=...)` has always taken, and it keeps working: the same keywords
    in the same order, the same defaults (taken from the two parts), plain attribute reads and writes, and
    `dataclasses.asdict`/`replace`. `from_parts` builds one from the two parts, and `hparams` and
    `model_options` split it again; each field is documented on its part.
    """

    # The order of the fields is the one FinetuneConfig always had (positional arguments keep their meaning).
    strategy: str = ModelOptions.strategy
    epochs: int = HParams.epochs
    head_epochs: int | None = HParams.head_epochs
    batch_size: int = HParams.batch_size
    learning_rate: float | str = HParams.learning_rate
    fine_tune_factor: float = HParams.fine_tune_factor
    optimizer: str = HParams.optimizer
    momentum: float = HParams.momentum
    dropout: float = ModelOptions.dropout
    pooling: str = ModelOptions.pooling
    augment: bool = HParams.augment
    from_scratch: bool = ModelOptions.from_scratch
    shots: int | None = HParams.shots
    validation_fraction: float | None = HParams.validation_fraction
    seed: int = HParams.seed
    cache_features: bool = HParams.cache_features
    shuffle: bool = HParams.shuffle
    validate_each_epoch: bool = HParams.validate_each_epoch
    deterministic: bool = HParams.deterministic
    balance_classes: bool = HParams.balance_classes
    trainable_layers: list | None = ModelOptions.trainable_layers
    frozen_layers: list | None = ModelOptions.frozen_layers
    head_solver: str = HParams.head_solver
    min_steps: int = HParams.min_steps
    schedule: str = HParams.schedule
    early_stopping: bool = HParams.early_stopping
    baseline: bool = HParams.baseline
    distribute: str | None = HParams.distribute
    augment_views: int = HParams.augment_views
    label_smoothing: float = HParams.label_smoothing
    layer_decay: float | None = HParams.layer_decay
    mixup: float = HParams.mixup
    cutmix: float = HParams.cutmix
    cross_validation: bool = HParams.cross_validation
    folds: int = HParams.folds
    budget: float = HParams.budget

    @classmethod
    def from_parts(cls, hparams: HParams | None = None, model_options: ModelOptions | None = None
                   ) -> FinetuneConfig:
        """The config with `hparams`' and `model_options`' values (either part left out: its defaults).

        Raises:
            UsageError: a part that is not an `HParams` / `ModelOptions` (e.g. the two swapped).
        """
        hparams = HParams() if hparams is None else hparams
        model_options = ModelOptions() if model_options is None else model_options
        for name, value, kind in (("hparams", hparams, HParams), ("model_options", model_options, ModelOptions)):
            if not isinstance(value, kind):
                raise UsageError(f"{name} must be a kerastl.{kind.__name__}. Received: {type(value).__name__}")
        return cls(**{name: getattr(hparams, name) for name in _HPARAMS},
                   **{name: getattr(model_options, name) for name in _MODEL_OPTIONS})

    @property
    def hparams(self) -> HParams:
        """A new `HParams` with this config's training settings (changing it does not change the config)."""
        return HParams(**{name: getattr(self, name) for name in _HPARAMS})

    @property
    def model_options(self) -> ModelOptions:
        """A new `ModelOptions` with this config's model settings (changing it does not change the config)."""
        return ModelOptions(**{name: getattr(self, name) for name in _MODEL_OPTIONS})

    def validate(self) -> None:
        """Checks both parts.

        Raises:
            UsageError: the first invalid value: the strategy, then the hyperparameters (in the order
                `HParams.validate` checks them), then the head's pooling and dropout.
        """
        from kerastl.train.strategies import parse_strategy

        # The strategy is named first, as it was before the split; the head's options come last because
        # before the split they were only checked once the model was built.
        strategy = parse_strategy(self.strategy)
        self.hparams.validate()
        self.model_options.validate()
        if self.layer_decay is not None and (strategy.kind == "head" or self.from_scratch):
            raise UsageError("--layer-decay sets the backbone's learning rates in full and top:N fine-tuning; "
                             f"drop it, or use --strategy full or top:N. Received: "
                             f"{'--from-scratch' if self.from_scratch else '--strategy head'}")
