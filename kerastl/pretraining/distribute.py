"""Distributed pre-training: the tf.distribute strategy for `--strategy` and which worker writes the outputs
(`make_distribution`, `is_chief`, shared with fine-tuning in `kerastl.train.distribute`), and the multi-worker
custom training loop (`custom_training`), because Keras 3 `Model.fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585)."""

from __future__ import annotations

import time
from pathlib import Path

# The strategy and the chief are fine-tuning's too; they live in kerastl.train.distribute, and stay importable here.
from kerastl.train.distribute import is_chief, make_distribution, task_index  # noqa: F401


def custom_training(model, optimizer, strategy, source, config, epochs, steps_per_epoch, global_batch,
                     backup_dir: Path, log_dir: Path, verbose, fingerprint: dict) -> tuple:
    """The multi-worker path: a train step under `strategy.run` on a distributed dataset, with
    CheckpointManager backups each epoch (resuming from the latest, if `fingerprint` is the backup's) and
    TensorBoard scalars. Returns `(last logs, notes, progress, epochs done before, their seconds)`,
    `progress` holding every epoch's loss and the cumulative seconds (see `checkpointing.read_progress`)."""
    import keras
    import tensorflow as tf

    from kerastl.train.resume import claim_backup, read_progress, write_progress

    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction="none")
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    # Every worker writes a checkpoint (collective ops need all of them); only the chief's is kept.
    directory = backup_dir if is_chief() else backup_dir.with_name(backup_dir.name + f".worker{task_index()}")
    note = claim_backup(directory, fingerprint)
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=1)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
    done = int(epoch_var.numpy())
    progress = read_progress(directory, done)
    seconds_before = progress["seconds"][-1] if progress["seconds"] else 0.0
    start = time.perf_counter()
    # Continue the data stream where the restored epoch left it.
    train_iter = iter(strategy.experimental_distribute_dataset(
        source.train.skip(int(epoch_var.numpy()) * steps_per_epoch)))

    @tf.function
    def train_step(iterator):
        def step(x, y):
            with tf.GradientTape() as tape:
                probabilities = model(x, training=True)
                loss = tf.nn.compute_average_loss(loss_fn(y, probabilities), global_batch_size=global_batch)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            correct = tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), tf.cast(y, tf.int32)),
                              tf.float32)
            return loss, tf.reduce_sum(correct) / global_batch

        loss, accuracy = strategy.run(step, args=next(iterator))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, accuracy, axis=None))

    statistics = [v for v in model.non_trainable_variables if str(v.dtype).startswith("float")]

    @tf.function
    def average_statistics():
        # Each worker updates BatchNorm moving statistics from its own shard of the batch; average them so
        # that every worker, and the backbone the chief saves, holds the same model.
        def replica_fn():
            context = tf.distribute.get_replica_context()
            return [context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.identity(v.value)) for v in statistics]

        return strategy.run(replica_fn)

    writer = tf.summary.create_file_writer(str(log_dir)) if is_chief() else tf.summary.create_noop_writer()
    logs = {}
    for epoch in range(done, epochs):
        bar = keras.utils.Progbar(steps_per_epoch, verbose=1 if verbose and is_chief() else 0)
        losses, accuracies = [], []
        for step in range(steps_per_epoch):
            loss, accuracy = train_step(train_iter)
            losses.append(float(loss))
            accuracies.append(float(accuracy))
            bar.update(step + 1, [("loss", losses[-1]), ("accuracy", accuracies[-1])])
        logs = {"loss": sum(losses) / len(losses), "accuracy": sum(accuracies) / len(accuracies)}
        with writer.as_default():
            for key, value in logs.items():
                tf.summary.scalar(key, value, step=epoch + 1)
        for variable, value in zip(statistics, average_statistics()):
            variable.assign(strategy.experimental_local_results(value)[0])
        epoch_var.assign(epoch + 1)
        # Written before the checkpoint, so that the record is never behind the backup it describes.
        progress["loss"].append(round(logs["loss"], 5))
        progress["seconds"].append(round(seconds_before + time.perf_counter() - start, 3))
        write_progress(directory, progress)
        manager.save()
    return logs, [note] if note else [], progress, done, seconds_before
