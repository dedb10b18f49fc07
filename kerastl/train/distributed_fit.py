"""`Model.fit` under MultiWorkerMirroredStrategy, which Keras 3's own `fit` does not run under
(keras-team/keras#20585). `fit` is `model.fit` for a model of any other strategy; `distributed_fit` trains a
compiled model with a step under `strategy.run` on the distributed dataset, and keeps fit's contract where
fine-tuning relies on it:

- the compiled loss and optimizer; `class_weight` weighs each example's loss as fit does (the weighted sum over
  the global batch, divided by its number of examples, which a partial last batch also uses: each replica's sum
  is divided by the global count, so the gradients' all-reduce sums to fit's loss);
- callbacks (`on_train_begin`, `on_epoch_begin`, `on_epoch_end` with `loss`, `accuracy` and, with validation data,
  `val_loss` and `val_accuracy`, `on_train_end`) and `model.stop_training`, so early stopping, epoch seeds and
  `BackupAndRestore` work unchanged; a `keras.callbacks.History` is returned;
- the validation split is sharded over the workers too, and its sums are all-reduced, so every worker logs the
  same `val_loss` and takes the same early-stopping decision;
- BatchNormalization statistics that train (from scratch) are averaged over the replicas after each epoch, so
  every worker holds the same model.
"""

from __future__ import annotations


def _per_example_loss(model):
    """The compiled loss of each example (the form fit reduces)."""
    import keras

    loss = model.loss
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        config["reduction"] = None
        return type(loss).from_config(config)
    return keras.losses.get(loss)


def _sharded(dataset):
    import tensorflow as tf

    options = tf.data.Options()
    # The batches are made in memory (kerastl.train.resume.epoch_batches): split each global batch over the
    # workers rather than look for files to shard.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _validation_dataset(validation_data, batch_size: int = 256):
    """`validation_data` as a dataset: cached features come as arrays (the batch size changes no sum)."""
    import numpy as np
    import tensorflow as tf

    if validation_data is None or isinstance(validation_data, tf.data.Dataset):
        return validation_data
    inputs, labels = validation_data
    return tf.data.Dataset.from_tensor_slices((np.asarray(inputs), np.asarray(labels))).batch(batch_size)


def distributed_fit(model, training, *, strategy, epochs: int, initial_epoch: int = 0,
                    steps_per_epoch: int | None = None, validation_data=None, class_weight: dict | None = None,
                    callbacks=None, verbose="auto"):
    """Trains the compiled `model` on `training` (a tf.data.Dataset of global batches, `steps_per_epoch` of them
    per epoch, epochs `initial_epoch`..`epochs`) under `strategy`, as `model.fit` would.

    Returns:
        The `keras.callbacks.History` of the epochs run.

    Raises:
        ValueError: `steps_per_epoch` missing (the loop does not guess the length of an epoch).
    """
    import keras
    import tensorflow as tf

    if steps_per_epoch is None:
        raise ValueError("distributed fit needs steps_per_epoch")
    loss_fn = _per_example_loss(model)
    optimizer = model.optimizer
    with strategy.scope():
        optimizer.build(model.trainable_variables)
    weights = None
    if class_weight:
        table = [1.0] * (max(class_weight) + 1)
        for label, weight in class_weight.items():
            table[int(label)] = float(weight)
        weights = tf.constant(table, tf.float32)

    def losses_and_hits(x, y, training_mode, weighted):
        probabilities = model(x, training=training_mode)
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        losses = tf.cast(tf.reshape(loss_fn(y, probabilities), [-1]), tf.float32)
        if weighted and weights is not None:
            losses = losses * tf.gather(weights, y)
        hits = tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), y), tf.float32)
        return tf.reduce_sum(losses), tf.reduce_sum(hits), tf.cast(tf.size(y), tf.float32)

    @tf.function
    def train_step(iterator):
        def step(x, y):
            context = tf.distribute.get_replica_context()
            with tf.GradientTape() as tape:
                loss_sum, hits, count = losses_and_hits(x, y, True, True)
                total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
                loss = loss_sum / tf.maximum(total, 1.0)
                if model.losses:  # regularisation, counted once over the replicas as fit counts it
                    loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss_sum, hits, count

        return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for value in strategy.run(step, args=next(iterator))]

    @tf.function
    def evaluate_step(x, y):
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for value in strategy.run(lambda a, b: losses_and_hits(a, b, False, False), args=(x, y))]

    statistics = _trained_statistics(model)

    @tf.function
    def average_statistics():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            return [context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.identity(v.value)) for v in statistics]

        return strategy.run(replica_fn)

    validation = _validation_dataset(validation_data)
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList([*(callbacks or []), history], model=model, epochs=epochs,
                                                 steps=steps_per_epoch, verbose=0)
    iterator = iter(strategy.experimental_distribute_dataset(_sharded(training)))
    chief_verbose = verbose not in (0, False)
    from kerastl.train.distribute import is_chief

    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(int(initial_epoch), int(epochs)):
        callback_list.on_epoch_begin(epoch)
        bar = keras.utils.Progbar(steps_per_epoch, verbose=1 if chief_verbose and is_chief() else 0)
        loss_sum = hits = count = 0.0
        for index in range(steps_per_epoch):
            step_loss, step_hits, step_count = (float(v) for v in train_step(iterator))
            loss_sum, hits, count = loss_sum + step_loss, hits + step_hits, count + step_count
            bar.update(index + 1, [("loss", loss_sum / max(count, 1.0))])
        logs = {"loss": loss_sum / max(count, 1.0), "accuracy": hits / max(count, 1.0)}
        if statistics:
            for variable, value in zip(statistics, average_statistics()):
                variable.assign(strategy.experimental_local_results(value)[0])
        if validation is not None:
            sums = [0.0, 0.0, 0.0]
            for x, y in strategy.experimental_distribute_dataset(_sharded(validation)):
                sums = [total + float(value) for total, value in zip(sums, evaluate_step(x, y))]
            logs.update(val_loss=sums[0] / max(sums[2], 1.0), val_accuracy=sums[1] / max(sums[2], 1.0))
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return history


def _trained_statistics(model) -> list:
    """The moving statistics of BatchNormalization layers that update them (frozen ones are left alone)."""
    import keras

    from kerastl.core.graph import walk_layers

    found = []
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found += [layer.moving_mean, layer.moving_variance]
    return found


def fit(model, training, **kwargs):
    """`model.fit(training, **kwargs)`, or for a model built under MultiWorkerMirroredStrategy, which Keras'
    `fit` does not run under, its equivalent `distributed_fit`."""
    import tensorflow as tf

    strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model.fit(training, **kwargs)
    kwargs.pop("shuffle", None)  # the batches come shuffled (kerastl.train.resume.epoch_batches)
    return distributed_fit(model, training, strategy=strategy, **kwargs)
