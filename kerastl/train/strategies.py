"""Which weights train: Option 1 (`head`), Option 2 (`full`), `top:N`, `auto`, and name patterns.

BatchNormalization statistics never change in any strategy: `prepare_backbone` swaps every BatchNormalization
for `kerastl.core.graph.InferenceBatchNormalization` (gamma and beta still train where the strategy says so).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re

from kerastl.errors import UsageError

# `auto` picks Option 2 (`full`) from this many labelled training examples per class (the smallest class
# counts), and Option 1 (`head`) below it. The seed's rule is that very few examples favour Option 1; measured
# with tools/bench_fewshot.py on scikit-learn's digits and the shipped backbone (the README table and
# tools/results_fewshot_digits.json, 5 seeds), full fine-tuning (head phase, then every layer at a tenth of the
# learning rate) beat the head alone at every count it tried, 1 to 50 examples per class. So the measured
# threshold is 1: auto picks full whenever there is data. It stays a single constant, to be revisited with
# large backbones (millions of parameters over a handful of images), where the seed's overfitting argument
# may hold.
AUTO_FULL_MIN_PER_CLASS = 1

STRATEGIES = ("head", "full", "top:N", "auto")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A parsed `--strategy`: `kind` is head, full, top or auto; `layers` is N for top:N."""

    kind: str
    layers: int = 0

    def __str__(self):
        return f"top:{self.layers}" if self.kind == "top" else self.kind


def parse_strategy(text: str) -> Strategy:
    """Parses `head`, `full`, `top:N` (N ≥ 1) or `auto`.

    Raises:
        UsageError: anything else, naming what was received.
    """
    value = str(text).strip().lower()
    if value in ("head", "full", "auto"):
        return Strategy(value)
    match = re.fullmatch(r"top:(\d+)", value)
    if match and int(match.group(1)) >= 1:
        return Strategy("top", int(match.group(1)))
    raise UsageError(f"--strategy must be head, full, top:N (N >= 1) or auto. Received: {text}")


def resolve_auto(strategy: Strategy, min_examples_per_class: int) -> Strategy:
    """Replaces `auto` by `head` below `AUTO_FULL_MIN_PER_CLASS` examples per class, else by `full`."""
    if strategy.kind != "auto":
        return strategy
    return Strategy("full" if min_examples_per_class >= AUTO_FULL_MIN_PER_CLASS else "head")


def prepare_backbone(backbone_model):
    """Returns the backbone with BatchNormalization statistics frozen (see the module docstring)."""
    from kerastl.core.graph import freeze_batchnorm_statistics

    return freeze_batchnorm_statistics(backbone_model)


def weighted_layers(model) -> list:
    """The layers of `model` that hold weights, in order (descending into nested models): what `top:N` counts
    and layer patterns match.

    A layer is one unit however many sublayers it holds (a keras-hub `TransformerEncoder` is one transformer
    layer), except a stack: a layer that keeps a list of two or more layers holding weights (keras-hub's
    `ViTEncoder`, whose blocks run in a loop inside it) counts as its weighted sublayers, each block once and in
    order, so that `top:N` means the last N blocks there too.
    """
    import keras

    from kerastl.core.graph import walk_layers

    units = []
    for layer in walk_layers(model):
        if not isinstance(layer, keras.Model) and layer.weights:
            units.extend(_units(layer))
    return units


def _units(layer) -> list:
    """`[layer]`, or for a stack (see `weighted_layers`) the units of its weighted direct sublayers."""
    import keras

    stacked = any(isinstance(value, (list, tuple)) and not name.startswith("_")
                  and sum(isinstance(v, keras.layers.Layer) and bool(v.weights) for v in value) >= 2
                  for name, value in vars(layer).items())
    if not stacked:
        return [layer]
    children = [child for child in layer._flatten_layers(include_self=False, recursive=False) if child.weights]
    return [unit for child in children for unit in _units(child)]


def set_backbone_trainable(backbone_model, strategy: Strategy) -> list[str]:
    """Sets which backbone layers train under `strategy` (`head`, `full` or `top`); returns their names.

    `top:N` unfreezes the last N layers that hold weights (`weighted_layers`: a transformer layer or block is
    one; layers without weights have nothing to train).

    Raises:
        UsageError: `auto` was not resolved first, or N exceeds the number of weighted layers.
    """
    layers = weighted_layers(backbone_model)
    if strategy.kind == "auto":
        raise UsageError("resolve --strategy auto with resolve_auto() before freezing")
    if strategy.kind == "top" and strategy.layers > len(layers):
        raise UsageError(f"--strategy top:{strategy.layers} exceeds the backbone's {len(layers)} layers with "
                         f"weights; use top:{len(layers)} or full")
    # A nested model's `trainable` overrides its layers', so open the containers and choose per layer.
    backbone_model.trainable = True
    _set_containers_trainable(backbone_model)
    if strategy.kind == "head":
        chosen = []
    elif strategy.kind == "full":
        chosen = layers
    else:
        chosen = layers[-strategy.layers:]
    chosen_ids = {id(layer) for layer in chosen}
    for layer in layers:
        layer.trainable = id(layer) in chosen_ids
    return [layer.name for layer in chosen]


def set_trainable_by_pattern(model, trainable: list[str] | None = None, frozen: list[str] | None = None) -> list[str]:
    """Sets trainability by layer-name glob patterns (`fnmatch`, e.g. `block5_*`), applied in that order.

    Layers matching a `trainable` pattern are unfrozen, then layers matching a `frozen` pattern are frozen;
    other layers keep their state. Returns the names of the trainable weighted layers afterwards.

    Raises:
        UsageError: a pattern matches no layer (a typo would otherwise silently train nothing).
    """
    model.trainable = True
    _set_containers_trainable(model)
    layers = weighted_layers(model)
    for patterns, value in ((trainable or [], True), (frozen or [], False)):
        for pattern in patterns:
            hits = [layer for layer in layers if fnmatch.fnmatchcase(layer.name, pattern)]
            if not hits:
                raise UsageError(f"layer pattern '{pattern}' matches no layer with weights; "
                                 "`kerastl inspect` lists the layer names")
            for layer in hits:
                layer.trainable = value
    return [layer.name for layer in layers if layer.trainable]


def _set_containers_trainable(model):
    import keras

    from kerastl.core.graph import walk_layers

    for layer in walk_layers(model):
        if isinstance(layer, keras.Model):
            layer.trainable = True
