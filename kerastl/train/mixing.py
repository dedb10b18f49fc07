"""Mixup and cutmix on the training batches of a fine-tuning phase.

What blending means is the modality's (`Modality.batch_mixing`: images mix pixels or paste boxes, see
`kerastl.inputs.image.mix_images`; other input types refuse); this module only applies it to the batches
`kerastl.train.resume.epoch_batches` yields. The integer labels become one-hot rows, then the mixed rows, so
the phase trains on soft targets (`kerastl.train.losses.SoftTargetCrossentropy`, which also takes the integer
labels of the validation data).

Each batch's draws are keyed on (seed, epoch, batch), as the augmentation's are, with another salt: a
resumed phase mixes exactly the batches an uninterrupted one would. With both mixup and cutmix, each batch
takes one of the two with even odds, as timm's `Mixup(switch_prob=0.5)` does.
"""

from __future__ import annotations

#: Keeps the mixing draws apart from the augmentation's, which is keyed on the same (seed, epoch, batch).
MIXING_SALT = 0x6D6978


def batch_mixer(spec, config, num_classes: int):
    """The mixing of `config` (an `HParams` or `FinetuneConfig`: `mixup`, `cutmix`, `seed`) for training
    examples of input type `spec` (an `InputSpec`) with `num_classes` classes: None when both are 0, else a
    function `mix(dataset, *, first_epoch, steps_per_epoch) -> dataset` over `epoch_batches`' batches.

    Raises:
        UsageError: mixing asked of a modality that has none (`Modality.batch_mixing`).
    """
    from kerastl.core.modality import get

    kinds = [(kind, float(alpha)) for kind, alpha in (("mixup", config.mixup), ("cutmix", config.cutmix))
             if float(alpha) > 0]
    if not kinds:
        return None
    modality = get(spec.modality)
    mixes = [modality.batch_mixing(kind, alpha) for kind, alpha in kinds]
    seed = int(config.seed)

    def mix(dataset, *, first_epoch: int, steps_per_epoch: int):
        import tensorflow as tf

        def one(index, batch):
            inputs, labels = batch
            epoch = int(first_epoch) + index // int(steps_per_epoch)
            key = tf.stack([tf.constant(seed + MIXING_SALT, tf.int64),
                            epoch * (1 << 20) + index % int(steps_per_epoch)])
            targets = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), int(num_classes))
            if len(mixes) == 1:
                return mixes[0](inputs, targets, key)
            pick, key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            return tf.cond(tf.random.stateless_uniform([], seed=pick) < 0.5,
                           lambda: mixes[0](inputs, targets, key), lambda: mixes[1](inputs, targets, key))

        return (dataset.enumerate().map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .prefetch(tf.data.AUTOTUNE))

    return mix
