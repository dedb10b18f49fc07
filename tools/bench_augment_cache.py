"""Option 1 with `--augment`: kerastl's cached augmented views vs a plain frozen Keras `fit`, side by side.

Both train the same classifier (kerastl's head on the frozen backbone: standardisation, dropout 0.2, a Dense
layer starting at zero) on the same real data with the same batches (32), optimizer (Adam at a constant
1e-3) and epochs, and the same augmentation (`kerastl.data.augment_images`, stateless, keyed per batch):

- kerastl: `kerastl.finetune(strategy="head", augment=True, augment_views=K)`. The frozen backbone's features
  of K views of every training example (view 0 the plain one) are computed once, then every epoch trains the
  head on them (each example shows one of its views).
- plain Keras: `backbone.trainable = False`, the augmentation mapped in the tf.data pipeline (shuffled, batched,
  augmented afresh every batch of every epoch), `model.fit`: the backbone runs every epoch.

Data: scikit-learn's handwritten digits (1,797 8x8 scans, UCI optdigits, CC BY 4.0; 80/20 split, seed 0) with
the shipped default backbone for them (`default_backbone_spec`: the grayscale glyph backbone), or `--backbone`.
Timing: each epoch's wall time is taken by a callback (both paths); per epoch = the median of epochs 2..E (the
first traces the graph), and the repeats are interleaved (kerastl, plain, kerastl, ...), the median over
repeats reported. The one-off cost of the kerastl path (the features of the plain training and validation
examples, `feature_cache_seconds`, and of the K - 1 augmented views, `view_cache_seconds`) is shown apart,
and also amortised over the run's E epochs: (one-off + E epochs) / E against the plain fit's E epochs / E
(the plain fit's pass to adapt the standardisation is not counted against it). Validation accuracy of both
final models is printed beside.

    python tools/bench_augment_cache.py [--views 8] [--epochs 10] [--repeats 3] [--backbone SPEC]

Raw results: tools/results_augment_cache.json.
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

RESULTS = Path(__file__).with_name("results_augment_cache.json")


def epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer()


class TimedFits:
    """Adds an `EpochTimer` to every `keras.Model.fit` of models named `name` while active (how kerastl's own
    fit is timed without changing it)."""

    def __init__(self, name: str):
        self.name, self.timers = name, []

    def __enter__(self):
        import keras

        self._real = real = keras.Model.fit
        bench = self

        def fit(model, *args, callbacks=None, **kwargs):
            if model.name == bench.name:
                timer = epoch_timer()
                bench.timers.append(timer)
                callbacks = [*(callbacks or []), timer]
            return real(model, *args, callbacks=callbacks, **kwargs)

        keras.Model.fit = fit
        return self

    def __exit__(self, *exc):
        import keras

        keras.Model.fit = self._real


def kerastl_run(folder, spec, *, views, epochs, batch_size, seed):
    import kerastl

    config = kerastl.FinetuneConfig(strategy="head", epochs=epochs, batch_size=batch_size, augment=True,
                                    augment_views=views, schedule="constant", early_stopping=False,
                                    validate_each_epoch=False, baseline=False, seed=seed)
    with TimedFits("head") as timed, tempfile.TemporaryDirectory() as out:
        result = kerastl.finetune(folder, spec, config=config, out=out, verbose=0)
    [timer] = timed.timers
    timing = result.metrics["timing"]
    return {"path": "kerastl cached views", "epoch_seconds": timer.times,
            "one_off_seconds": timing["feature_cache_seconds"] + timing["view_cache_seconds"],
            "feature_cache_seconds": timing["feature_cache_seconds"],
            "view_cache_seconds": timing["view_cache_seconds"], "accuracy": result.metrics["accuracy"]}


def plain_run(parts, spec, *, epochs, batch_size, seed):
    import keras
    import numpy as np
    import tensorflow as tf

    from kerastl.backbones import load_backbone
    from kerastl.data import augment_images, input_spec, load_inputs
    from kerastl.train.head import build_classifier
    from kerastl.train.strategies import prepare_backbone

    keras.utils.set_random_seed(seed)
    backbone = load_backbone(spec)
    classifier = build_classifier(prepare_backbone(backbone.model), len(parts.class_names), seed=seed)
    classifier.backbone.trainable = False
    data_spec = input_spec(backbone.model)
    x_train, y_train = load_inputs(data_spec, parts.train_files), np.asarray(parts.train_labels, "int32")
    x_val, y_val = load_inputs(data_spec, parts.val_files), np.asarray(parts.val_labels)
    classifier.adapt(classifier.feature_model.predict(x_train, verbose=0))  # the same model as kerastl's
    classifier.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                             metrics=["accuracy"])
    steps = -(-len(y_train) // batch_size)
    dataset = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
               .shuffle(len(y_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size).repeat()
               .enumerate()
               .map(lambda i, batch: (augment_images(batch[0], tf.stack([tf.constant(seed, tf.int64), i])),
                                      batch[1]), num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    timer = epoch_timer()
    classifier.model.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    accuracy = float((classifier.model.predict(x_val, verbose=0).argmax(-1) == y_val).mean())
    return {"path": "plain frozen Keras fit", "epoch_seconds": timer.times, "one_off_seconds": 0.0,
            "accuracy": round(accuracy, 6)}


def summarise(runs: list[dict], epochs: int) -> dict:
    per_epoch = statistics.median(statistics.median(r["epoch_seconds"][1:]) for r in runs)
    total = statistics.median(sum(r["epoch_seconds"]) + r["one_off_seconds"] for r in runs)
    return {"per_epoch_seconds": per_epoch,
            "one_off_seconds": statistics.median(r["one_off_seconds"] for r in runs),
            "amortised_per_epoch_seconds": total / epochs, "run_seconds": total,
            "accuracy": statistics.median(r["accuracy"] for r in runs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=None, help="Backbone spec. Default: the shipped one for the digits.")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
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
        runs["kerastl"].append(kerastl_run(folder, spec, views=args.views, epochs=args.epochs,
                                           batch_size=args.batch_size, seed=0))
        runs["plain"].append(plain_run(parts, spec, epochs=args.epochs, batch_size=args.batch_size, seed=0))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    fast, plain = summarise(runs["kerastl"], args.epochs), summarise(runs["plain"], args.epochs)
    ratios = {"per_epoch": plain["per_epoch_seconds"] / fast["per_epoch_seconds"],
              "amortised_over_run": plain["amortised_per_epoch_seconds"] / fast["amortised_per_epoch_seconds"]}
    # Epochs after which the one-off views have paid for themselves.
    saved = plain["per_epoch_seconds"] - fast["per_epoch_seconds"]
    ratios["break_even_epochs"] = fast["one_off_seconds"] / saved if saved > 0 else None
    record = {"tool": "tools/bench_augment_cache.py", "backbone": Path(spec).name, "data": "sklearn digits (UCI optdigits)",
              "train_examples": len(parts.train_files), "val_examples": len(parts.val_files), "views": args.views,
              "epochs": args.epochs, "batch_size": args.batch_size, "repeats": args.repeats,
              "kerastl": fast, "plain": plain, "ratios": ratios, "runs": runs}
    RESULTS.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")

    print(f"\n{Path(spec).name}, {len(parts.train_files)} training digits, K={args.views} views, {args.epochs} epochs, "
          f"batch {args.batch_size}, median of {args.repeats} interleaved repeats\n")
    print("| path | per epoch (s) | one-off (s) | amortised per epoch over the run (s) | run total (s) "
          "| val accuracy |")
    print("|---|---|---|---|---|---|")
    for name, row in (("plain frozen Keras fit", plain), (f"kerastl, {args.views} cached views", fast)):
        print(f"| {name} | {row['per_epoch_seconds']:.4f} | {row['one_off_seconds']:.3f} "
              f"| {row['amortised_per_epoch_seconds']:.4f} | {row['run_seconds']:.2f} | {row['accuracy']:.4f} |")
    even = ratios["break_even_epochs"]
    print(f"\nkerastl faster per epoch: **{ratios['per_epoch']:.1f}x**; amortised over the {args.epochs}-epoch run "
          f"(views included): **{ratios['amortised_over_run']:.2f}x**; the views pay for themselves after "
          f"{'never' if even is None else f'{even:.1f}'} epochs. Raw: {RESULTS.name}")


if __name__ == "__main__":
    main()
