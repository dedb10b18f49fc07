"""Is the pre-training input pipeline ever the bottleneck? Step time on the real tf.data pipeline against the
same number of identical-shape batches already in memory, side by side in one run. Target: ratio <= 1.1.

    python tools/bench_pipeline.py [--source synthetic:glyphs] [--arch smallnet-s] [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def timed_fit(model, dataset, steps: int) -> float:
    """Seconds per step of the second of two `fit` epochs (the first one traces and warms up)."""
    import keras

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    timer = Timer()
    model.fit(dataset, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    return timer.seconds / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="synthetic:glyphs")
    parser.add_argument("--arch", default="smallnet-s")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--precision", default="mixed_bfloat16", help="Keras dtype policy of the model.")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from kerastl.pretraining.run import PretrainConfig, build_pretraining_model, load_source

    config = PretrainConfig(source=args.source, arch=args.arch, image_size=args.image_size, classes=args.classes,
                            batch_size=args.batch_size)
    channels = 1 if args.source.startswith("synthetic:") else 3
    source = load_source(config, channels, args.batch_size)
    # The in-memory twin: the same number of real batches, materialised first, then replayed from memory.
    batches = list(source.train.take(args.steps * 2))
    xs = tf.concat([x for x, _ in batches], 0)
    ys = tf.concat([y for _, y in batches], 0)
    in_memory = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(args.batch_size).repeat().prefetch(2)

    keras.mixed_precision.set_global_policy(args.precision)
    rows = []
    for name, dataset in (("in memory", in_memory), ("tf.data pipeline", source.train)):
        keras.utils.set_random_seed(0)
        model, _ = build_pretraining_model(args.arch, (args.image_size, args.image_size, channels), source.num_classes,
                                           mean=[0.1], std=[0.3], dropout=0.1, seed=0)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
        rows.append((name, timed_fit(model, dataset, args.steps)))
    base = rows[0][1]
    print(f"{args.source}, {args.arch} at {args.image_size}px, batch {args.batch_size}, {args.precision}, "
          f"{os.cpu_count()} cores")
    print("| input | seconds per step | images per second | ratio to in-memory (target <= 1.1) |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.4f} | {args.batch_size / seconds:.0f} | {seconds / base:.3f} |")


if __name__ == "__main__":
    main()
