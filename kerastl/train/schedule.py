"""How long a fine-tuning phase trains, and how: a budget in optimizer steps, a warmup then cosine learning
rate, and early stopping that restores the best epoch.

**The budget is counted in optimizer steps.** An epoch budget gives a set of 40 images 2 steps an epoch, so
10 epochs are 20 steps, while 4,000 images get 1,250: with 5 digits per class, `--from-scratch` trained for
20 steps reached 10.9%, chance (issue #13). A phase therefore runs at least `min_steps` steps, and at least
`DEFAULT_EPOCHS` passes over a larger set: `epochs = max(DEFAULT_EPOCHS, ceil(min_steps / steps_per_epoch))`.
`epochs=N` is an override: exactly N epochs, whatever the set's size.

**The learning rate** rises linearly from 0 over the first `WARMUP_FRACTION` of the phase's steps (a
pretrained backbone's first updates, driven by a new head's large errors, do the most damage) and then falls
to 0 along a half cosine, as in timm's and fastai's fine-tuning recipes. `schedule="constant"` keeps the
learning rate flat.

**Early stopping** watches the validation loss after each epoch (when there is a validation split), stops
after `patience` epochs without improvement, and puts back the weights of the best epoch. Its state (the best
loss, its epoch and weights) is kept in the phase's backup directory, so that a resumed run restores the same
epoch an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

#: Passes over the training set a phase makes at least (a large set's budget).
DEFAULT_EPOCHS = 10
#: Optimizer steps a phase takes at least (a small set's budget); see the module docstring.
MIN_STEPS = 300
#: Share of a phase's steps spent warming the learning rate up from 0.
WARMUP_FRACTION = 0.05
SCHEDULES = ("cosine", "constant")
#: Epochs without a better validation loss before a phase stops: this share of its epochs, at least 5.
PATIENCE_FRACTION = 0.25
MIN_PATIENCE = 5
BEST_FILE = "kerastl-best.json"
BEST_WEIGHTS = "kerastl-best.weights.h5"


@dataclasses.dataclass(frozen=True)
class Budget:
    """A phase's length.

    Attributes:
        epochs: passes over the training set.
        steps_per_epoch: optimizer steps per pass (`ceil(examples / batch_size)`).
        rule: how `epochs` was reached, for metrics.json.
    """

    epochs: int
    steps_per_epoch: int
    rule: str

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def record(self) -> dict:
        return {"epochs": self.epochs, "steps": self.steps, "steps_per_epoch": self.steps_per_epoch,
                "rule": self.rule}


def budget(examples: int, batch_size: int, *, epochs: int | None = None, min_steps: int = MIN_STEPS) -> Budget:
    """The length of a phase over `examples` training examples in batches of `batch_size`.

    `epochs` (not None) is the user's override and is taken as it is; otherwise the phase runs
    `max(DEFAULT_EPOCHS, ceil(min_steps / steps_per_epoch))` epochs (the module docstring says why).
    """
    per_epoch = max(1, math.ceil(int(examples) / int(batch_size)))
    if epochs is not None:
        return Budget(int(epochs), per_epoch, f"--epochs {epochs}")
    needed = max(DEFAULT_EPOCHS, math.ceil(int(min_steps) / per_epoch))
    return Budget(needed, per_epoch, f"at least {min_steps} steps and {DEFAULT_EPOCHS} epochs: "
                                     f"{needed} epochs of {per_epoch} steps")


def learning_rate(peak: float, total_steps: int, schedule: str = "cosine",
                  warmup_fraction: float = WARMUP_FRACTION):
    """The optimizer's learning rate for a phase of `total_steps` steps: a float for "constant", else a Keras
    schedule warming up to `peak` over `warmup_fraction` of the steps and decaying to 0 by a half cosine."""
    import keras

    if schedule == "constant" or total_steps <= 1:
        return float(peak)
    warmup = round(warmup_fraction * total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else float(peak), decay_steps=max(1, total_steps - warmup),
        warmup_target=float(peak) if warmup else None, warmup_steps=warmup)


def patience(epochs: int) -> int:
    """Epochs without improvement before early stopping ends a phase of `epochs` epochs."""
    return max(MIN_PATIENCE, math.ceil(PATIENCE_FRACTION * epochs))


def restore_best_callback(model, *, patience_epochs: int, directory=None, monitor: str = "val_loss"):
    """Early stopping on `monitor` (lower is better) that restores the best epoch's weights at the end.

    With `directory` (the phase's backup directory), the best value, its epoch and its weights are written
    there after every improvement and read back when a resumed phase begins, so a resumed run stops and
    restores exactly as an uninterrupted one. An epoch whose logs lack `monitor` is skipped.
    """
    import keras
    import numpy as np

    directory = None if directory is None else Path(directory)

    class RestoreBest(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.best_epoch, self.weights = math.inf, None, None

        def on_train_begin(self, logs=None):
            if directory is not None and (directory / BEST_FILE).is_file():
                record = json.loads((directory / BEST_FILE).read_text(encoding="utf-8"))
                self.best, self.best_epoch = float(record["best"]), int(record["epoch"])

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is None or not np.isfinite(value):
                return
            if value < self.best:
                self.best, self.best_epoch = float(value), int(epoch)
                self.weights = [w.copy() for w in model.get_weights()]
                if directory is not None:
                    from kerastl.core.atomic import write_text

                    directory.mkdir(parents=True, exist_ok=True)
                    model.save_weights(directory / BEST_WEIGHTS)
                    write_text(directory / BEST_FILE, json.dumps({"best": self.best, "epoch": self.best_epoch}))
            elif self.best_epoch is not None and epoch - self.best_epoch >= patience_epochs:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_epoch is None:
                return
            if self.weights is not None:
                model.set_weights(self.weights)
            elif directory is not None and (directory / BEST_WEIGHTS).is_file():
                model.load_weights(directory / BEST_WEIGHTS)

        def record(self) -> dict:
            return {"monitor": monitor, "best": None if self.best_epoch is None else round(self.best, 6),
                    "best_epoch": None if self.best_epoch is None else self.best_epoch + 1,
                    "patience": patience_epochs}

    return RestoreBest()
