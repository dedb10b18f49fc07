"""Using every label: k-fold cross-validation, and an `auto` that measures.

With few labels a fixed validation split costs the model a fifth of its training data and still gives a noisy
estimate. With `HParams.cross_validation` (`--cross-validation`) and no fixed split asked for,
`kerastl.train.finetune` instead:

1. splits the labelled examples into k stratified folds (`folds`; k = `HParams.folds`, fewer when the smallest
   class has fewer examples);
2. trains each candidate on k - 1 folds and scores it on the held-out one (`compare`). The candidates are the
   strategy asked for, or for `auto` head, top:N and full (`auto_candidates`); then, for the winner, the
   learning rate times 1/3 and 3 (`rate_candidates`). Early stopping on the held-out fold gives each
   phase's training length;
3. keeps the candidate with the best mean held-out accuracy (ties: lower log-loss, then the cheaper one);
4. refits it on all labelled examples, each phase for the median of its folds' best epochs.

The report (metrics.json `cross_validation`, and the summary) is the chosen candidate's out-of-fold estimate:
accuracy mean ± std over folds, and the per-class figures of the pooled out-of-fold predictions. It says that
it is one. It is slightly optimistic, because the held-out fold also chose the epoch it was scored at.

Everything runs within `HParams.budget` seconds: after the first fold, the candidates whose projected cost
does not fit are dropped (the cheapest, the head, always runs), and the learning-rate stage runs only if its
projection fits. What was dropped, and why, is reported.

Cross-validation is not yet the default: a run costs k + 1 trainings per candidate (the wall times beside the
accuracies: tools/bench_crossval.py), and the size below which it should switch itself on is still to be
measured.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import time

DEFAULT_FOLDS = 5
DEFAULT_BUDGET_SECONDS = 600.0
# The learning rates the second stage tries, as multiples of the configured one.
RATE_FACTORS = (1 / 3, 3.0)
# top:N's share of the backbone's weighted layers among auto's candidates: the upper quarter, at least one.
TOP_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One way of training: `strategy` (a parsed `Strategy`; None: from scratch) at `rate_factor` times the
    configured learning rate."""

    strategy: object
    rate_factor: float = 1.0

    @property
    def name(self) -> str:
        kind = "from-scratch" if self.strategy is None else str(self.strategy)
        return kind if self.rate_factor == 1.0 else f"{kind} @ lr x{self.rate_factor:.3g}"


@dataclasses.dataclass
class Scored:
    """A candidate's results over the folds it ran."""

    candidate: Candidate
    accuracies: list = dataclasses.field(default_factory=list)
    log_losses: list = dataclasses.field(default_factory=list)
    seconds: list = dataclasses.field(default_factory=list)
    epochs: list = dataclasses.field(default_factory=list)  # PhaseLog.best_epochs() per fold
    labels: list = dataclasses.field(default_factory=list)  # held-out labels per fold
    probabilities: list = dataclasses.field(default_factory=list)  # held-out probabilities per fold

    @property
    def accuracy(self) -> float:
        return statistics.fmean(self.accuracies)

    def key(self):
        # Best mean accuracy; then the lower mean log-loss.
        return (-round(self.accuracy, 9), statistics.fmean(self.log_losses))

    def median_epochs(self) -> dict:
        names = {name for fold in self.epochs for name in fold}
        return {name: int(statistics.median_low([fold[name] for fold in self.epochs if name in fold]))
                for name in sorted(names)}

    def record(self) -> dict:
        std = statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0
        return {"candidate": self.candidate.name, "folds": len(self.accuracies),
                "accuracy_mean": round(self.accuracy, 4), "accuracy_std": round(std, 4),
                "fold_accuracies": [round(a, 4) for a in self.accuracies],
                "log_loss_mean": round(statistics.fmean(self.log_losses), 4),
                "seconds": round(sum(self.seconds), 1), "epochs": self.median_epochs()}


def wanted(hparams, smallest_class: int) -> bool:
    """Whether the run cross-validates: with `hparams.cross_validation`, no fixed split asked for
    (`validation_fraction` and `shots` are None; `HParams.validate` refuses both together) and at least two
    examples in the smallest class (one fold each way)."""
    if hparams.shots is not None or hparams.validation_fraction is not None:
        return False
    return bool(hparams.cross_validation) and smallest_class >= 2


def fixed_fraction(hparams) -> float:
    """The validation share of a run that does not cross-validate: the one asked for, else 0.2."""
    return 0.2 if hparams.validation_fraction is None else float(hparams.validation_fraction)


def folds(parts, k: int, seed: int) -> list:
    """`k` stratified folds of `parts`' training examples (a `kerastl.data.Split` with every labelled example
    in training): a list of `Split`s, fold i holding out every k-th example of each class (seeded order)."""
    from kerastl.data.splits import Split

    rng = random.Random(seed)
    assigned = {}
    for label in range(len(parts.class_names)):
        members = [i for i, y in enumerate(parts.train_labels) if y == label]
        rng.shuffle(members)
        for position, index in enumerate(members):
            assigned[index] = position % k
    result = []
    for fold in range(k):
        held = [i for i in range(len(parts.train_files)) if assigned[i] == fold]
        kept = [i for i in range(len(parts.train_files)) if assigned[i] != fold]
        result.append(Split(list(parts.class_names), [parts.train_files[i] for i in kept],
                            [parts.train_labels[i] for i in kept], [parts.train_files[i] for i in held],
                            [parts.train_labels[i] for i in held]))
    return result


def auto_candidates(backbone_model) -> list:
    """`auto`'s strategies in order of cost: head, top:N (the upper `TOP_FRACTION` of the weighted layers; left
    out when that is every layer) and full."""
    from kerastl.train.strategies import Strategy, weighted_layers

    layers = len(weighted_layers(backbone_model))
    top = max(1, round(layers * TOP_FRACTION))
    chosen = [Candidate(Strategy("head"))]
    if top < layers:
        chosen.append(Candidate(Strategy("top", top)))
    return chosen + [Candidate(Strategy("full"))]


def rate_candidates(winner: Candidate, hparams) -> list:
    """The learning-rate stage for `winner`: none when the rate is found by the range test (`auto`) or the
    winner is a probe-solved head (which has no learning rate)."""
    if hparams.learning_rate == "auto":
        return []
    if winner.strategy is not None and winner.strategy.kind == "head" and hparams.head_solver == "probe":
        return []
    return [dataclasses.replace(winner, rate_factor=f) for f in RATE_FACTORS]


@dataclasses.dataclass
class Comparison:
    """What `compare` measured: `scored` (every candidate that ran, in order), `skipped` ({name, reason}),
    `chosen` (the best `Scored`), `seconds`."""

    scored: list
    skipped: list
    chosen: Scored
    seconds: float
    budget_seconds: float

    def record(self, kind: str) -> dict:
        return {"evaluation": kind, "chosen": self.chosen.candidate.name,
                "candidates": [s.record() for s in self.scored], "skipped": self.skipped,
                "seconds": round(self.seconds, 1), "budget_seconds": self.budget_seconds}


def compare(splits: list, candidates: list, train_on, *, budget_seconds: float, elapsed: float = 0.0) -> Comparison:
    """Trains and scores every candidate on every split (fold), within the budget.

    Args:
        splits: the folds (`folds`), or one fixed split.
        candidates: `Candidate`s in order of cost, the first always run to the end.
        train_on: `train_on(split, candidate, shared)` trains `candidate` on `split`'s training examples and
            returns `(probabilities on split's held-out examples, PhaseLog)`; `shared` is a
            dict the calls on one split share (a head phase that several candidates start from).
        budget_seconds: the time the whole comparison may take (`elapsed` of it already spent).

    Returns:
        A `Comparison`.
    """
    import numpy as np

    start = time.perf_counter() - elapsed
    scored = [Scored(c) for c in candidates]
    skipped = []
    alive = list(scored)
    for index, split in enumerate(splits):
        shared = {}
        labels = np.asarray(split.val_labels, dtype=int)
        for entry in list(alive):
            began = time.perf_counter()
            probabilities, log = train_on(split, entry.candidate, shared)
            probabilities = np.asarray(probabilities, dtype="float64")
            entry.seconds.append(time.perf_counter() - began)
            entry.accuracies.append(float((probabilities.argmax(axis=-1) == labels).mean()))
            picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)
            entry.log_losses.append(float(-np.log(picked).mean()))
            entry.epochs.append(log.best_epochs())
            entry.labels.append(labels)
            entry.probabilities.append(probabilities)
        if index == 0 and len(splits) > 1:
            # Drop the costliest candidates until the projection of the remaining folds fits.
            spent = time.perf_counter() - start
            while len(alive) > 1 and spent + sum(e.seconds[0] for e in alive) * (len(splits) - 1) > budget_seconds:
                dropped = alive.pop()
                scored.remove(dropped)
                skipped.append({"candidate": dropped.candidate.name,
                                "reason": f"one fold took {dropped.seconds[0]:.1f} s; all {len(splits)} would "
                                          f"not fit the {budget_seconds:g} s budget"})
    return Comparison(scored, skipped, best(scored), time.perf_counter() - start, budget_seconds)


def best(scored: list) -> Scored:
    """The best of `scored` by `Scored.key`; of equals, the first (the cheapest, as candidates run in order of
    cost)."""
    return min(scored, key=Scored.key)


def fits(comparison: Comparison, entry: Scored, extra: int, budget_seconds: float) -> bool:
    """Whether `extra` more runs of `entry`'s cost over its folds fit in the rest of the budget."""
    return comparison.seconds + extra * sum(entry.seconds) <= budget_seconds


def out_of_fold(entry: Scored):
    """The pooled held-out labels and probabilities of `entry`'s folds."""
    import numpy as np

    return np.concatenate(entry.labels), np.concatenate(entry.probabilities)


def merge(first: Comparison, second: Comparison) -> Comparison:
    """One comparison of both stages' candidates (`second` ran after `first`, its seconds include first's)."""
    scored = first.scored + second.scored
    return Comparison(scored, first.skipped + second.skipped, best(scored), second.seconds, first.budget_seconds)


def select(splits: list, candidates: list, train_on, hparams) -> Comparison:
    """Cross-validation's choice (the module docstring): the candidates compared on `splits`, then the
    learning-rate stage for the winner when its projection fits `hparams.budget` (else it is reported as
    skipped). `train_on` is as `compare` takes it."""
    comparison = compare(splits, candidates, train_on, budget_seconds=hparams.budget)
    extra = rate_candidates(comparison.chosen.candidate, hparams)
    if not extra:
        return comparison
    if not fits(comparison, comparison.chosen, len(extra), hparams.budget):
        comparison.skipped += [{"candidate": c.name, "reason": f"the learning-rate stage would not fit the "
                                f"{hparams.budget:g} s budget"} for c in extra]
        return comparison
    return merge(comparison, compare(splits, extra, train_on, budget_seconds=hparams.budget,
                                     elapsed=comparison.seconds))
