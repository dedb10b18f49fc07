"""Option 2's step time: kerastl's full fine-tuning vs a plain Keras `fit` of the same model, side by side.

- kerastl: `kerastl.finetune(strategy="full", head_epochs=0, epochs=E, out=...)`, its own defaults otherwise
  (cosine schedule with warmup, early stopping and validation each epoch, the per-epoch backup, the
  stateless epoch batches of `kerastl.train.resume.epoch_batches`): what `kerastl finetune` runs.
- plain Keras: the same classifier (kerastl's head on the same backbone, BatchNormalization statistics frozen
  as kerastl freezes them, every layer trainable), compiled with the same loss, metric and optimizer (Adam on
  kerastl's cosine schedule at the same peak and length), fitted on a standard tf.data pipeline of the same
  in-memory examples (shuffled each epoch, batched, prefetched), with the same validation data each epoch.

Both use batch 32 on the same training examples (scikit-learn's digits, kerastl's 80/20 split, seed 0) and the
shipped default backbone for them unless `--backbone` says otherwise. A step's time is the wall time between
the ends of consecutive training batches within an epoch (the data, the step and every per-batch callback;
the epoch boundaries, where validation and the backup run, are left out); per run the median step, and over
the interleaved repeats (kerastl, plain, kerastl, ...) the median of those. Target: kerastl / plain <= 1.05.

    python tools/bench_step_time.py [--epochs 3] [--repeats 3] [--backbone SPEC]

Raw results: tools/results_step_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).with_name("results_step_time.json")


def step_timer():
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps, self._last = [], None

        def on_epoch_begin(self, epoch, logs=None):
            self._last = None

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if self._last is not None:
                self.steps.append(now - self._last)
            self._last = now

    return StepTimer()


class TimedFits:
    """Adds a `StepTimer` (last in the callbacks) to every `keras.Model.fit` of models named `name` while active:
    how kerastl's own fit is timed without changing it."""

    def __init__(self, name: str):
        self.name, self.timers = name, []

    def __enter__(self):
        import keras

        self._real = real = keras.Model.fit
        bench = self

        def fit(model, *args, callbacks=None, **kwargs):
            if model.name == bench.name:
                timer = step_timer()
                bench.timers.append(timer)
                callbacks = [*(callbacks or []), timer]
            return real(model, *args, callbacks=callbacks, **kwargs)

        keras.Model.fit = fit
        return self

    def __exit__(self, *exc):
        import keras

        keras.Model.fit = self._real


def kerastl_run(folder, spec, *, epochs, batch_size, seed):
    import kerastl

    config = kerastl.FinetuneConfig(strategy="full", head_epochs=0, epochs=epochs, batch_size=batch_size,
                                    baseline=False, seed=seed)
    with TimedFits("classifier") as timed, tempfile.TemporaryDirectory() as out:
        result = kerastl.finetune(folder, spec, config=config, out=out, verbose=0)
    [timer] = timed.timers
    return {"path": "kerastl full", "steps": timer.steps, "accuracy": result.metrics["accuracy"]}


def plain_run(parts, spec, *, epochs, batch_size, seed, learning_rate=1e-3, fine_tune_factor=0.1):
    import keras
    import numpy as np
    import tensorflow as tf

    from kerastl.backbones import load_backbone
    from kerastl.data import input_spec, load_inputs
    from kerastl.train.head import build_classifier
    from kerastl.train.schedule import budget
    from kerastl.train.schedule import learning_rate as schedule
    from kerastl.train.strategies import prepare_backbone

    keras.utils.set_random_seed(seed)
    backbone = load_backbone(spec)
    classifier = build_classifier(prepare_backbone(backbone.model), len(parts.class_names), seed=seed)
    data_spec = input_spec(backbone.model)
    x_train, y_train = load_inputs(data_spec, parts.train_files), np.asarray(parts.train_labels, "int32")
    x_val, y_val = load_inputs(data_spec, parts.val_files), np.asarray(parts.val_labels, "int32")
    classifier.adapt(classifier.feature_model.predict(x_train, verbose=0))
    classifier.backbone.trainable = True  # as kerastl's full phase; prepare_backbone froze BatchNormalization
    steps = budget(len(y_train), batch_size, epochs=epochs).steps
    classifier.model.compile(
        optimizer=keras.optimizers.Adam(schedule(learning_rate * fine_tune_factor, steps, "cosine")),
        loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(y_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
             .prefetch(tf.data.AUTOTUNE))
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    timer = step_timer()
    classifier.model.fit(train, epochs=epochs, validation_data=val, verbose=0, callbacks=[timer])
    accuracy = float((classifier.model.predict(x_val, verbose=0).argmax(-1) == y_val).mean())
    return {"path": "plain Keras fit", "steps": timer.steps, "accuracy": round(accuracy, 6)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=None, help="Backbone spec. Default: the shipped one for the digits.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from kerastl.backbones import default_backbone_spec
    from kerastl.data import digits_folder, drop_undecodable, scan_folder, split

    folder = digits_folder()
    spec = args.backbone or default_backbone_spec("image", folder)
    parts = split(drop_undecodable(scan_folder(folder)), seed=0)  # finetune's own split (seed 0, 20%)
    runs = {"kerastl": [], "plain": []}
    for repeat in range(args.repeats):  # interleaved, so a busy spell of the shared CPU hits both
        runs["kerastl"].append(kerastl_run(folder, spec, epochs=args.epochs, batch_size=args.batch_size, seed=0))
        runs["plain"].append(plain_run(parts, spec, epochs=args.epochs, batch_size=args.batch_size, seed=0))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    median = {name: statistics.median(statistics.median(r["steps"]) for r in rows) for name, rows in runs.items()}
    per_repeat = [statistics.median(k["steps"]) / statistics.median(p["steps"])
                  for k, p in zip(runs["kerastl"], runs["plain"])]
    ratio = median["kerastl"] / median["plain"]
    record = {"tool": "tools/bench_step_time.py", "backbone": Path(spec).name, "data": "sklearn digits (UCI optdigits)",
              "train_examples": len(parts.train_files), "epochs": args.epochs, "batch_size": args.batch_size,
              "repeats": args.repeats, "median_step_seconds": median, "ratio_kerastl_over_plain": ratio,
              "ratio_per_repeat": per_repeat,
              "accuracy": {name: [r["accuracy"] for r in rows] for name, rows in runs.items()}, "runs": runs}
    RESULTS.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")

    print(f"\n{Path(spec).name}, {len(parts.train_files)} training digits, batch {args.batch_size}, {args.epochs} "
          f"epochs, median step of {args.repeats} interleaved repeats\n")
    print("| path | median step (ms) | ratio to plain | ratio per repeat |")
    print("|---|---|---|---|")
    print(f"| plain Keras fit | {1000 * median['plain']:.2f} | 1.00x | |")
    print(f"| kerastl full (Option 2) | {1000 * median['kerastl']:.2f} | **{ratio:.3f}x** | "
          f"{', '.join(f'{r:.3f}' for r in per_repeat)} |")
    print(f"\ntarget <= 1.05x: {'met' if ratio <= 1.05 else 'NOT met'}. Raw: {RESULTS.name}")


if __name__ == "__main__":
    main()
