"""Option 1 speed: training the head on cached backbone features vs a plain frozen `fit`, side by side.

Both paths train the same head (same initial weights, batches and optimizer) on scikit-learn's digits; the
frozen backbone runs every epoch in the plain path and once in the cached one. Prints a markdown table of
per-epoch times after the first epoch, their ratio, the one-off caching cost, and the validation accuracy of
both final models.

    python tools/bench_head_cache.py [--backbone SPEC] [--image-size N] [--epochs 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer()


def run(spec: str | None, image_size: int | None, epochs: int, batch_size: int) -> list[dict]:
    import keras
    import numpy as np

    from kerastl.backbones import default_backbone_spec, load_backbone
    from kerastl.data import digits_folder, drop_undecodable, image_dataset, scan_folder, split
    from kerastl.train.finetune import FinetuneConfig, _compile, compile_head
    from kerastl.train.head import build_classifier
    from kerastl.train.resume import epoch_batches
    from kerastl.train.strategies import Strategy, prepare_backbone, set_backbone_trainable

    # The digits are grayscale: the default for them is the grayscale glyph backbone.
    spec = spec or default_backbone_spec("image", digits_folder())
    backbone = load_backbone(spec, image_size=image_size, weights="none" if spec.startswith("keras:") else None)
    parts = split(drop_undecodable(scan_folder(digits_folder())), seed=0)
    size, channels = backbone.input_shape[:2], backbone.input_shape[2]
    common = dict(image_size=size, channels=channels, batch_size=batch_size)
    train = image_dataset(parts.train_files, parts.train_labels, **common)
    val = image_dataset(parts.val_files, parts.val_labels, **common)
    config = FinetuneConfig(strategy="head", batch_size=batch_size, dropout=0.0, shuffle=False)
    y_val = np.asarray(parts.val_labels)

    def fresh():
        keras.utils.set_random_seed(0)
        classifier = build_classifier(prepare_backbone(backbone.model), 10, dropout=0.0, seed=0)
        set_backbone_trainable(classifier.backbone, Strategy("head"))
        return classifier

    # Warm the tf.data cache so that neither path pays for decoding in the timed epochs.
    for _ in train:
        pass
    for _ in val:
        pass

    y_train = np.asarray(parts.train_labels, "int32")
    steps = -(-len(y_train) // batch_size)

    def batches(x):  # the batches finetune trains on: same order, epoch after epoch
        return epoch_batches(x, y_train, batch_size=batch_size, seed=0, first_epoch=0, epochs=epochs, shuffle=False)

    rows = []
    classifier = fresh()
    images = np.concatenate([x.numpy() for x, _ in train])
    start = time.perf_counter()
    features = classifier.feature_model.predict(train, verbose=0)
    cache_seconds = time.perf_counter() - start
    classifier.adapt(features)  # both paths standardise the pooled features, as finetune does
    _compile(classifier.model, config, config.learning_rate)
    timer = _epoch_timer()
    classifier.model.fit(batches(images), epochs=epochs, steps_per_epoch=steps, shuffle=False, verbose=0,
                         callbacks=[timer])
    plain_acc = float((classifier.model.predict(val, verbose=0).argmax(-1) == y_val).mean())
    rows.append({"path": "plain frozen fit", "first": timer.times[0], "epoch": statistics.median(timer.times[1:]),
                 "cache": 0.0, "accuracy": plain_acc})

    classifier = fresh()
    classifier.adapt(features)
    compile_head(classifier, config, len(y_train))
    timer = _epoch_timer()
    classifier.head_model.fit(batches(features), epochs=epochs, steps_per_epoch=steps, shuffle=False, verbose=0,
                              callbacks=[timer])
    cached_acc = float((classifier.model.predict(val, verbose=0).argmax(-1) == y_val).mean())
    rows.append({"path": "cached features", "first": timer.times[0], "epoch": statistics.median(timer.times[1:]),
                 "cache": cache_seconds, "accuracy": cached_acc})
    return [dict(row, backbone=backbone.spec, images=len(parts.train_files)) for row in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", action="append", default=None,
                        help="Backbone spec (repeatable). Default: the shipped backbone and keras:MobileNetV2 at 96 px.")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    specs = args.backbone or [None, "keras:MobileNetV2"]
    print("| backbone | train images | path | epoch 1 (s) | later epochs, median (s) | one-off cache (s) "
          "| speed-up per later epoch | val accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in specs:
        size = args.image_size or (96 if spec and spec.startswith("keras:") else None)
        plain, cached = run(spec, size, args.epochs, args.batch_size)
        ratio = plain["epoch"] / cached["epoch"]
        for row in (plain, cached):
            speed = f"**{ratio:.1f}x**" if row is cached else "1.0x"
            print(f"| {row['backbone']} | {row['images']} | {row['path']} | {row['first']:.3f} | {row['epoch']:.4f} "
                  f"| {row['cache']:.3f} | {speed} | {row['accuracy']:.4f} |")


if __name__ == "__main__":
    main()
