"""The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2015/2017, §3.3;
fastai's `lr_find`): train for a short while with the learning rate rising exponentially, watch the loss, and
read a learning rate off the curve.

**The test.** From the model as it is (its trainable flags set as the phase to be tuned trains), up to `steps`
optimizer steps are taken on batches of the training set (cycled: a set of 50 examples in batches of 32 is
passed over many times), the learning rate of step i being `lr_min * (lr_max / lr_min) ** (i / (steps - 1))`.
The loss of each batch (computed before its update) is smoothed by an exponential moving average with bias
correction (`beta = SMOOTHING`, fastai's), and the test stops early once the smoothed loss exceeds
`DIVERGENCE` times its minimum so far, or is not finite: past that point the rates only blow the weights up.
Every weight (BatchNormalization statistics and the random layers' seed states included) is then put back
exactly as it was, so the test leaves no trace on the model but its compiled optimizer.

**The rule: fastai's "valley"** (its default suggestion since fastai 2.5). Over the smoothed curve, with its
first tenth and last five points dropped as fastai does (the start is all noise, the end is the divergence),
take the longest decreasing stretch: the longest subsequence of points along which the loss keeps falling
(not necessarily contiguous, so one noisy bump does not cut it); the suggestion is the rate in the middle of
that stretch, at fastai's index `start + int(len / 3) + int(len / 6)`. Why valley rather
than the two classic readings: the steepest descent (largest negative slope) is one point of a finite
difference of a noisy 100-point curve, and a single lucky batch moves it by decades; `min / 10` (the rate of
the lowest loss, divided by ten) lands below the useful range whenever the minimum sits right at the
divergence edge, and above it when the curve is flat. The valley is a property of the whole descending stretch,
so it is stable under noise, and it lies well inside the region where the loss falls fastest, below the
divergence. fastai measured it as the most robust of its suggestions; we keep its index arithmetic unchanged
so that the rule is exactly the published one.
"""

from __future__ import annotations

import dataclasses
import math

from kerastl.errors import UsageError

#: fastai's defaults: 100 steps from 1e-7 to 10.
LR_MIN = 1e-7
LR_MAX = 10.0
STEPS = 100
#: The moving average's weight of the past (fastai's `beta`).
SMOOTHING = 0.98
#: The test stops once the smoothed loss exceeds this multiple of its minimum (fastai's `stop_div` factor).
DIVERGENCE = 4.0
RULE = "valley"
RULE_TEXT = "valley (fastai): the rate in the middle of the longest decreasing stretch of the smoothed loss"


@dataclasses.dataclass
class RangeTest:
    """What a range test measured.

    Attributes:
        lrs: the learning rate of each step taken, rising.
        losses: the smoothed loss after each step (what the rule reads and the plot shows).
        raw_losses: each step's batch loss, unsmoothed.
        suggestion: the suggested learning rate, one of `lrs`.
        rule: how `suggestion` was read (`RULE_TEXT`).
        stopped: why the test ended: "diverged" (the smoothed loss passed `DIVERGENCE` times its minimum, or
            was not finite) or "steps" (all steps taken).
        phase: the training phase tested (head, full, top:N, from-scratch), when known.
    """

    lrs: list
    losses: list
    raw_losses: list
    suggestion: float
    rule: str
    stopped: str
    phase: str | None = None

    def record(self) -> dict:
        """A JSON-ready dict (metrics.json's `lr_find` and lr_find.json)."""
        return {"phase": self.phase, "suggestion": self.suggestion, "rule": self.rule, "stopped": self.stopped,
                "steps": len(self.lrs), "lr_min": self.lrs[0], "lr_max_reached": self.lrs[-1],
                "lrs": [float(f"{v:.6g}") for v in self.lrs], "losses": [round(v, 6) for v in self.losses],
                "raw_losses": [round(v, 6) if math.isfinite(v) else None for v in self.raw_losses]}


def check_range(lr_min: float, lr_max: float, steps: int) -> None:
    """Checks a range test's settings.

    Raises:
        UsageError: `lr_min` not in (0, 10], `lr_max` not above `lr_min` or above 100, or fewer than 10 steps
            (the rule drops the first tenth and the last five points of the curve), naming the option.
    """
    checks = [
        ("--lr-min", lr_min, _finite(lr_min) and 0 < lr_min <= 10, "in (0, 10]"),
        ("--lr-max", lr_max, _finite(lr_max) and _finite(lr_min) and lr_min < lr_max <= 100,
         f"above --lr-min ({lr_min}) and at most 100"),
        ("--steps", steps, isinstance(steps, int) and not isinstance(steps, bool) and 10 <= steps <= 10_000,
         "an integer in [10, 10000]"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise UsageError(f"{name} must be {expected}. Received: {value}")


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def exponential_rates(lr_min: float, lr_max: float, steps: int) -> list[float]:
    """`steps` rates rising geometrically from `lr_min` to `lr_max`, both included."""
    ratio = lr_max / lr_min
    return [lr_min * ratio ** (i / (steps - 1)) for i in range(steps)]


def valley(lrs, losses) -> float:
    """fastai's valley suggestion over a (smoothed) loss curve (the module docstring gives the rule and why).

    The first tenth and the last five points are left out when enough remain (at least 10); a curve with no
    decreasing pair gives its first rate.
    """
    lrs, losses = list(lrs), list(losses)
    start, end = len(lrs) // 10, len(lrs) - 5
    if end - start >= 10:
        lrs, losses = lrs[start:end], losses[start:end]
    n = len(losses)
    # lds[i]: the length of the longest decreasing subsequence ending at i (fastai's O(n^2) loop, n ~ 100).
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    index = max_start + int(sections) + int(sections / 2)
    return float(lrs[min(max(index, 0), n - 1)])


def range_test(model, training, *, optimizer, batch_size: int, seed: int = 0, lr_min: float = LR_MIN,
               lr_max: float = LR_MAX, steps: int = STEPS, class_weight=None, shuffle: bool = True,
               phase: str | None = None) -> RangeTest:
    """Runs the range test on `model` and puts its weights back (see the module docstring).

    Args:
        model: a Keras model from inputs to class probabilities, its `trainable` flags set as the phase trains.
        training: `(inputs, labels, transform)` as `kerastl.train.resume.epoch_batches` takes them (in-memory
            examples, cached features, or paths with their reader).
        optimizer: a callable from a learning rate to a new Keras optimizer (the phase's own kind).
        batch_size, seed, shuffle: how the batches are drawn (cycled over as many epochs as the steps need).
        lr_min, lr_max, steps: the range and the most steps (`check_range`).
        class_weight: the phase's class weights, or None.
        phase: recorded in the result.

    Returns:
        A `RangeTest`. `model` is left compiled with the test's optimizer: compile it again before training.

    Raises:
        UsageError: bad range settings (`check_range`), or no training examples.
    """
    import numpy as np

    from kerastl.train.resume import epoch_batches

    check_range(lr_min, lr_max, steps)
    inputs, labels, transform = training
    if len(labels) == 0:
        raise UsageError("the learning-rate range test needs training examples; the training split is empty")
    rates = exponential_rates(float(lr_min), float(lr_max), int(steps))
    per_epoch = -(-len(labels) // int(batch_size))
    batches = epoch_batches(inputs, np.asarray(labels), batch_size=int(batch_size), seed=int(seed), first_epoch=0,
                            epochs=-(-int(steps) // per_epoch), shuffle=shuffle, augment=transform)
    saved = _snapshot(model)
    model.compile(optimizer=optimizer(rates[0]), loss="sparse_categorical_crossentropy")
    taken, raw, smooth = [], [], []
    average, best, stopped = 0.0, math.inf, "steps"
    try:
        for step, (x, y) in enumerate(batches.take(len(rates))):
            model.optimizer.learning_rate = rates[step]
            loss = float(model.train_on_batch(x, y, class_weight=class_weight, return_dict=True)["loss"])
            taken.append(rates[step])
            raw.append(loss)
            if not math.isfinite(loss):
                stopped = "diverged"
                smooth.append(smooth[-1] if smooth else math.inf)
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            smoothed = average / (1 - SMOOTHING ** (step + 1))  # bias correction: the average starts at 0
            smooth.append(smoothed)
            best = min(best, smoothed)
            if step > 0 and smoothed > DIVERGENCE * best:
                stopped = "diverged"
                break
    finally:
        _restore(model, saved)
    finite = [(r, v) for r, v in zip(taken, smooth) if math.isfinite(v)]
    if not finite:
        # The first step already failed (inf or nan loss): nothing to read, so the lowest rate is suggested.
        suggestion = float(rates[0])
    else:
        suggestion = valley([r for r, _ in finite], [v for _, v in finite])
    return RangeTest(lrs=taken, losses=smooth, raw_losses=raw, suggestion=suggestion, rule=RULE_TEXT,
                     stopped=stopped, phase=phase)


def _snapshot(model) -> list:
    """Copies of every weight (trainable or not) and every random layer's seed state."""
    from kerastl.train.resume import _seed_generators

    variables = [*model.weights, *(generator.state for generator in _seed_generators(model))]
    return [(variable, variable.numpy().copy()) for variable in variables]


def _restore(model, saved) -> None:
    for variable, value in saved:
        variable.assign(value)


#: `HParams.learning_rate`'s value that asks for the range test before every trained phase.
AUTO = "auto"
#: Whether a from-scratch run at the default learning rate finds its own (issue #13 item 6). Off, as measured:
#: `python tools/bench_lr_find.py --shots 5 --seeds 3` (scikit-learn's digits, 5 per class, the other 1,747
#: held out; tools/results_lr_find_digits.json) gave 91.0% ± 0.2% at the found rates (1.3e-3 to 1.9e-3)
#: against 91.1% ± 0.5% at 1e-3: no gain, a hair lower on average, so the fixed default stays and
#: `learning_rate="auto"` asks for the test explicitly.
SCRATCH_FINDS_RATE = False


def finds_rate(hparams, phase: str) -> bool:
    """Whether `phase` of a run with `hparams` takes its learning rate from the range test: always with
    `learning_rate="auto"`; the from-scratch phase at the default learning rate too when `SCRATCH_FINDS_RATE`
    is on (1e-3 was chosen for a new head on pretrained features, not for a random network; it is off, since
    the measurement found no gain)."""
    from kerastl.train.options import HParams

    if hparams.learning_rate == AUTO:
        return True
    return SCRATCH_FINDS_RATE and phase == "from-scratch" and hparams.learning_rate == HParams.learning_rate


def phase_rate(hparams, phase: str, model, make_optimizer, *, training, class_weight=None, factor: float = 1.0,
               found: dict | None = None) -> float:
    """The peak learning rate of `phase`: the range test's suggestion when `finds_rate(hparams, phase)` (the
    test's record is then stored in `found[phase]`), else `hparams.learning_rate * factor` (full and top:N
    pass `fine_tune_factor`).

    `model` and `training` are the phase's (see `range_test`); `make_optimizer(name, rate, momentum=...)` makes
    the run's optimizer (`kerastl.train.finetune.make_optimizer`). The test draws its batches with the run's
    batch size, seed and shuffle setting, and leaves the weights as they were.
    """
    if not finds_rate(hparams, phase):
        return float(hparams.learning_rate) * factor
    test = range_test(model, training, batch_size=hparams.batch_size, seed=hparams.seed, class_weight=class_weight,
                      shuffle=hparams.shuffle, phase=phase,
                      optimizer=lambda rate: make_optimizer(hparams.optimizer, rate, momentum=hparams.momentum))
    if found is not None:
        found[phase] = test.record()
    return test.suggestion
