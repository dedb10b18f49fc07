"""A phase's optimizer and compile (`make_optimizer`, `compile_phase`), and layer-wise learning-rate decay
(discriminative learning rates) for full and top:N fine-tuning.

The new head keeps the phase's learning rate; the backbone's units (`kerastl.train.strategies.weighted_layers`,
what top:N counts), numbered from the top, get `rate * decay ** depth`, the top unit at depth 1. Layers near
the input hold the most general features, which a small set should move least (ULMFiT's discriminative
fine-tuning, Howard & Ruder 2018; BEiT's and timm's layer decay).

Keras 3 has no per-variable learning rate (Keras 2's `MultiOptimizer` from TF Addons is gone), but every
optimizer's step ends in `update_step(gradient, variable, learning_rate)`, called once per variable with the
step's scheduled rate. `with_layer_decay` therefore makes the phase's optimizer an instance of a subclass of
its own class whose `update_step` multiplies that rate by the variable's factor before the class's own
update: Adam's moments, SGD's momentum, the cosine schedule (evaluated once per step, as before) and the
optimizer's variables are the base class's, so a backup of the phase (`keras.callbacks.BackupAndRestore`)
restores it exactly as a plain one. The factors are constants chosen when the graph is traced.

The factors belong to one model's variables, so the optimizer's config is its base class's settings only and
names a class plain Keras does not know; `saveable` gives the model to write without its compile state, so
model.keras loads in plain Keras without kerastl.
"""

from __future__ import annotations

import json

import keras
from keras import ops

from kerastl.errors import UsageError
from kerastl.train.options import OPTIMIZERS, HParams


class _LayerDecay:
    """The mixin `with_layer_decay` puts before an optimizer class (see the module docstring)."""

    _factors: dict

    def set_learning_rate_factors(self, factors) -> None:
        """`factors`: `(variable, factor)` pairs; a variable not listed keeps the step's rate."""
        self._factors = {self._var_key(variable): float(factor) for variable, factor in factors}

    def learning_rate_factor(self, variable) -> float:
        return getattr(self, "_factors", {}).get(self._var_key(variable), 1.0)

    def update_step(self, gradient, variable, learning_rate):
        factor = self.learning_rate_factor(variable)
        if factor != 1.0:
            learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype), factor)
        return super().update_step(gradient, variable, learning_rate)


_CLASSES: dict = {}


def _decayed_class(base: type) -> type:
    if base not in _CLASSES:
        _CLASSES[base] = type(f"LayerDecay{base.__name__}", (_LayerDecay, base), {})
    return _CLASSES[base]


def layer_factors(backbone, decay: float) -> list:
    """`(variable, decay ** depth)` for every trainable variable of `backbone`'s units, the top unit at depth
    1 (frozen units count towards the depth but have nothing to train)."""
    from kerastl.train.strategies import weighted_layers

    units = weighted_layers(backbone)
    return [(variable, float(decay) ** (len(units) - index))
            for index, unit in enumerate(units) for variable in unit.trainable_variables]


def with_layer_decay(optimizer, backbone, decay: float | None):
    """`optimizer`, or with `decay` (not None, below 1) and a `backbone`, a new optimizer of the same class
    and settings (its learning rate or schedule included) whose step scales each backbone variable's rate by
    `layer_factors(backbone, decay)`. Call it after the phase's `trainable` flags are set."""
    if backbone is None or decay is None or float(decay) == 1.0:
        return optimizer
    decayed = _decayed_class(type(optimizer)).from_config(optimizer.get_config())
    decayed.set_learning_rate_factors(layer_factors(backbone, decay))
    return decayed


def saveable(model):
    """`model`, or when it was compiled with an object Keras cannot rebuild from its config (kerastl's
    layer-decay optimizer, `kerastl.train.losses`' loss and metric, none of them registered), the same layers
    in a new uncompiled functional model, so that model.keras loads with `keras.saving.load_model` alone. The
    weights are shared, not copied. Take it before `keras.models.clone_model`, which recompiles a clone from
    the compile config."""
    if not getattr(model, "compiled", False):
        return model
    decayed = isinstance(getattr(model, "optimizer", None), _LayerDecay)
    if not decayed and '"module": "kerastl.' not in json.dumps(model.get_compile_config(), default=str):
        return model
    # A one-input, one-output model keeps its tensors rather than lists of one (`model.output` is a tensor).
    inputs, outputs = list(model.inputs), list(model.outputs)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs,
                       name=model.name)


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.9):
    """Adam, or SGD with momentum.

    Raises:
        UsageError: another name.
    """
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum)
    raise UsageError(f"--optimizer must be one of {OPTIMIZERS}. Received: {name}")


def compile_phase(model, hparams: HParams, learning_rate: float, steps_per_execution: int = 1,
             total_steps: int | None = None, backbone=None) -> None:
    """Compiles `model` for a phase of `total_steps` optimizer steps, with `hparams.schedule` peaking at
    `learning_rate` (None: a constant `learning_rate`), `backbone`'s rates decaying by `hparams.layer_decay`
    (`kerastl.train.optimizers`) and the loss `kerastl.train.losses.loss_and_metrics` gives."""
    from kerastl.train.distribute import model_scope
    from kerastl.train.losses import loss_and_metrics
    from kerastl.train.optimizers import with_layer_decay
    from kerastl.train.schedule import learning_rate as schedule

    rate = learning_rate if total_steps is None else schedule(learning_rate, total_steps, hparams.schedule)
    loss, metrics = loss_and_metrics(hparams)
    with model_scope(model):  # the optimizer's variables follow the model's strategy
        model.compile(
            optimizer=with_layer_decay(make_optimizer(hparams.optimizer, rate, hparams.momentum), backbone,
                                       hparams.layer_decay),
            loss=loss, metrics=metrics,
            steps_per_execution=steps_per_execution,
        )
