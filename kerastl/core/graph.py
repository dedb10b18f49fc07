"""Graph utilities on Keras models: walking nested layers, cloning with replacements, BatchNormalization that
keeps its statistics, and float32 copies of mixed-precision models.

`InferenceBatchNormalization` is a BatchNormalization whose moving statistics never change: it always
normalises with them, while gamma and beta still train when the layer is trainable. This is the Keras
transfer-learning guide's "keep BatchNormalization in inference mode" rule; the guide's recipe of calling the
base model with `training=False` no longer holds in Keras 3.15, whose functional models overwrite a nested
call's `training` argument with the outer one (checked here). It is registered under the `kerastl` package, so
`.keras` files holding it load with `safe_mode=True` once `kerastl` is imported.
"""

from __future__ import annotations

import keras

# `keras.applications.imagenet_utils.preprocess_input` modes, as constants so that they are data in a model's
# config rather than a function reference.





@keras.saving.register_keras_serializable(package="kerastl")
class InferenceBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that always normalises with its moving statistics.

    The moving mean and variance are never updated, whatever `training` is; gamma and beta stay trainable
    while the layer is trainable. timm's `FrozenBatchNorm2d` and detectron2 do the same for fine-tuning.
    """

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def _clone_replacing(model: keras.Model, replace) -> keras.Model:
    """Clones `model` (recursively) where `replace(layer)` returns a new layer, copying the old one's weights
    and trainability into it; layers for which it returns None are kept as they are (shared)."""
    replaced = []

    def clone(layer):
        new = replace(layer)
        if new is None:
            return layer  # keeps its identity and weights
        replaced.append((layer, new))
        return new

    result = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in replaced:
        new.set_weights(old.get_weights())
        new.trainable = old.trainable
    return result


def _swap_batchnorm(model: keras.Model, to_inference: bool) -> keras.Model:
    source = keras.layers.BatchNormalization if to_inference else InferenceBatchNormalization
    target = InferenceBatchNormalization if to_inference else keras.layers.BatchNormalization
    # Exact type checks: `InferenceBatchNormalization` is itself a BatchNormalization.
    if not any(type(layer) is source for layer in _walk(model)):
        return model
    return _clone_replacing(
        model, lambda layer: target.from_config(layer.get_config()) if type(layer) is source else None)


def freeze_batchnorm_statistics(model: keras.Model) -> keras.Model:
    """Returns `model` with every BatchNormalization replaced by `InferenceBatchNormalization`.

    All other layers are shared with `model` (same objects, same weights); the BatchNormalization layers are
    new objects holding copies of the old weights. A model without BatchNormalization is returned as is.
    """
    return _swap_batchnorm(model, to_inference=True)


def restore_batchnorm(model: keras.Model) -> keras.Model:
    """The inverse of `freeze_batchnorm_statistics`: plain BatchNormalization layers, so that a saved model
    needs nothing from kerastl for its normalisation layers."""
    return _swap_batchnorm(model, to_inference=False)


def to_float32(model: keras.Model) -> keras.Model:
    """A copy of `model` whose layers all compute in float32 (weights copied).

    Mixed-precision training records its dtype policy in every layer's config; a backbone or classifier
    that we save must not make its users compute in bfloat16 or float16.
    """
    if all(layer.dtype_policy.name == "float32" for layer in _walk(model)):
        return model

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    return _clone_replacing(model, as_float32)


def _walk(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def walk_layers(model: keras.Model):
    """Every layer of `model`, depth first, descending into nested models (the models themselves included)."""
    return list(_walk(model))


def concrete_functions(fn) -> list:
    """The concrete functions of a restored tf.function (e.g. a SavedModel's `__call__`), or `[fn]` for a
    signature, which is one already."""
    if hasattr(fn, "concrete_functions"):
        return list(fn.concrete_functions)
    return [fn]


def first_input_spec(fn):
    """The `tf.TensorSpec` of the first positional input of a restored tf.function or signature, or None."""
    import tensorflow as tf

    for cf in concrete_functions(fn):
        args = cf.structured_input_signature[0]
        flat = [s for s in tf.nest.flatten(args[:1]) if isinstance(s, tf.TensorSpec)]
        if flat:
            return flat[0]
    return None
