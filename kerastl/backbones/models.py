"""Backbone records from Keras models, shared by every source: the image backbone of a preprocessing layer and
its features, a loaded model with its classifier top found by its structure and cut off, the modality its markers
say, a cut at a named layer, and the weights check of the sources that carry their own weights.
"""

from __future__ import annotations

import dataclasses
import difflib

from kerastl.core.modality import find as find_modality
from kerastl.core.records import Backbone
from kerastl.errors import KerastlError, UsageError
from kerastl.reporting.text import with_article

DEFAULT_IMAGE_SIZE = 224


def refuse_weights(spec, weights) -> None:
    """The `--weights` check of the sources that carry their own weights (every source but `keras:`).

    Raises:
        UsageError: `weights` is neither None nor `pretrained`.
    """
    if weights not in (None, "pretrained"):
        raise UsageError(
            f"--weights applies to keras: backbones only; {spec} carries its own weights. "
            f"Received: --weights {weights}"
        )


def refuse_image_size(spec, image_size, input_shape) -> None:
    """The `--image-size` check of the sources whose input size is fixed (a directory with a manifest, a
    `.keras` file), given the `input_shape` they take: that size is accepted, any other refused.

    Raises:
        UsageError: `image_size` is given and is not the backbone's input size.
    """
    if image_size is None:
        return
    shape = tuple(input_shape)
    if len(shape) == 3 and shape[0] == shape[1] == int(image_size):
        return
    takes = f"{shape[0]}x{shape[1]} images" if len(shape) == 3 else f"a fixed input of shape {shape}"
    raise UsageError(f"--image-size {image_size} does not apply to {spec}: it takes {takes}; drop "
                     "--image-size (it sizes keras: and hub: backbones only)")


def graph_backbone(spec, modality: str, inputs, features, *, preprocessing: dict, weights: str, name: str,
                   ranks=None) -> Backbone:
    """The `Backbone` of the graph from raw `inputs` to `features` (the one builder behind keras: backbones and
    every hub module's wrapping).

    Raises:
        KerastlError: `ranks` is given and the features' rank is not in it (named with the shapes it should be).
    """
    import keras

    if ranks is not None and len(features.shape) not in ranks:
        wanted = " or ".join({2: "(batch, features)", 3: "(batch, steps, features)",
                              4: "(batch, height, width, features)"}[r] for r in ranks)
        raise KerastlError(f"{spec} returns outputs of shape {tuple(features.shape)}; {with_article(modality)} "
                           f"backbone must return {wanted}")
    return Backbone(
        model=keras.Model(inputs, features, name=name),
        spec=spec,
        modality=modality,
        input_shape=tuple(int(d) for d in inputs.shape[1:]),
        preprocessing=preprocessing,
        feature_width=int(features.shape[-1]),
        weights=weights,
    )


def image_backbone(spec, inputs, features, preprocess, weights, *, name) -> Backbone:
    """The `Backbone` of an image model from raw-pixel `inputs` (its first layer `preprocess`) to `features`."""
    return graph_backbone(spec, "image", inputs, features, preprocessing=preprocess.to_record(), weights=weights,
                          name=name)


def _from_keras_model(spec, model, manifest, from_scratch) -> Backbone:
    import keras

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UsageError(f"{spec}: a backbone needs one input and one output; this model has "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    if isinstance(model, keras.Sequential):
        # A loaded Sequential model has no `input`/`output` of its own; its graph as a functional model has.
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    notes, refusal = [], None
    # "Keep every layer but its output layer", where the output layer is a classifier top found by its
    # structure; a model without a softmax at its end (a projection, an embedding) is kept whole.
    top = _classifier_top(model)
    if top is not None and top["features"] is not None:
        features, removed = top["features"], top["layers"]
        if features is model.input:
            raise UsageError(f"{spec} is only a classifier ({', '.join(removed)}); nothing is left to use as "
                             "a backbone")
        model = keras.Model(model.input, features, name=model.name)
        notes.append(f"cut the classifier top of {spec} ({' -> '.join(reversed(removed))}): its features are "
                     f"the output of layer '{model.layers[-1].name}' ({int(features.shape[-1])} wide); pass "
                     "--cut LAYER to choose another layer")
    elif top is not None:
        refusal = (f"{spec} ends in a softmax ({', '.join(top['layers'])}) but not in the Dense or 1x1 "
                   "convolution classifier kerastl knows how to cut off; pass --cut LAYER with the layer whose "
                   f"output should be the features, e.g. {', '.join(top['candidates'])}")
    if from_scratch:
        hub = _hub_layers(model)
        if hub:
            # clone_model rebuilds a HubLayer from its config, and its first call restores the module's
            # pretrained variables: the "from scratch" baseline would secretly be pretrained.
            raise UsageError(f"--from-scratch cannot re-initialise {spec}: it holds a TF-Hub module "
                             f"({hub[0]}), whose weights reload as pretrained; use a keras: or kerastl "
                             "backbone for the from-scratch baseline")
        # Fresh layers from the same configs: the same architecture with new random initial weights.
        model = keras.models.clone_model(model)
    input_shape = tuple(int(d) for d in model.input.shape[1:])
    if manifest is not None:
        modality = manifest["modality"]
        preprocessing = manifest.get("preprocessing", {})
        known = find_modality(modality)
        # A manifest's model that lacks its modality's marker gets it, so the model itself says what it takes.
        model = model if known is None else known.mark(model, manifest)
    else:
        modality = _modality_of(model)
        known = find_modality(modality)
        preprocessing = {"mode": "none"} if known is None else known.preprocessing_record(model)
    return Backbone(
        model=model,
        spec=spec,
        modality=modality,
        input_shape=input_shape,
        preprocessing=preprocessing,
        feature_width=int(model.output.shape[-1]),
        weights="none" if from_scratch else "pretrained",
        notes=notes,
        refusal=refusal,
    )


def _hub_layers(model) -> list[str]:
    """Names of the TF-Hub modules inside `model`: HubLayers, also those a `PerWaveform` layer wraps."""
    from kerastl.backbones.hub_layer import HubLayer
    from kerastl.core.graph import walk_layers

    found = []
    for layer in walk_layers(model):
        inner = getattr(layer, "module", None)
        if isinstance(layer, HubLayer) or isinstance(inner, HubLayer):
            found.append(layer.name)
    return found


# Layers that may sit between a classifier layer and its softmax, or around the global pooling of a top.
_TOP_PASS_THROUGH = ("Flatten", "Reshape", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "ReLU",
                     "Activation", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
                     "GlobalMaxPooling2D")


def _classifier_top(model):
    """The classifier top at the end of a functional `model`, found by its structure: a Dense layer or a 1x1
    convolution, possibly global pooling, flattening, dropout or an activation, then a softmax (a `Softmax` or
    `Activation("softmax")` layer, or the softmax activation of the Dense/convolution itself). Dropout and
    global pooling just before the classifier layer belong to the top too (the new head pools itself).

    Returns:
        None when the model does not end in a softmax. Otherwise a dict: `layers`, the names of the top's
        layers from the output backwards; `features`, the tensor below the top (None when no classifier layer
        was found between the softmax and the rest of the network); `candidates`, a few layer names just
        below the softmax, for a `--cut` suggestion.
    """
    layers, tensor = [], model.output
    layer, tensor_in = _producer(tensor)
    if layer is None or not _is_softmax(layer):
        return None
    found_classifier = _is_classifier_layer(layer)
    layers.append(layer.name)
    tensor = tensor_in
    while not found_classifier:
        layer, tensor_in = _producer(tensor)
        if layer is None:
            break
        if _is_classifier_layer(layer):
            found_classifier = True
        elif type(layer).__name__ not in _TOP_PASS_THROUGH:
            break
        layers.append(layer.name)
        tensor = tensor_in
    if not found_classifier:
        candidates = []
        probe = _producer(model.output)[1]
        while probe is not None and len(candidates) < 4:
            layer, probe = _producer(probe)
            if layer is None:
                break
            candidates.append(layer.name)
        return {"layers": layers, "features": None, "candidates": candidates or ["(none)"]}
    while True:  # dropout and global pooling just below the classifier layer belong to the top
        layer, tensor_in = _producer(tensor)
        if layer is None or not type(layer).__name__.startswith(("Dropout", "SpatialDropout", "GlobalAverage",
                                                                  "GlobalMax")):
            break
        layers.append(layer.name)
        tensor = tensor_in
    return {"layers": layers, "features": tensor, "candidates": []}


def _producer(tensor):
    """`(layer, its input tensor)` of the layer call that made `tensor`, when that call had one input;
    `(None, None)` at the model input or for anything else (merges)."""
    import keras

    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, None
    layer = history.operation
    nodes = getattr(layer, "_inbound_nodes", [])
    if isinstance(layer, keras.layers.InputLayer) or history.node_index >= len(nodes):
        return None, None
    inputs = nodes[history.node_index].input_tensors
    if len(inputs) != 1:
        return None, None
    return layer, inputs[0]


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") if activation is not None else ""


def _is_softmax(layer) -> bool:
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return True
    return _activation_name(layer) in ("softmax", "log_softmax")


def _is_classifier_layer(layer) -> bool:
    """A Dense layer, or a convolution with a 1x1 (or 1) kernel: the layer that maps features to classes."""
    import keras

    if isinstance(layer, keras.layers.Dense):
        return True
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        return all(int(k) == 1 for k in layer.kernel_size)
    return False


def _modality_of(model) -> str:
    """The modality `kerastl.data.input_spec` reads from the model's markers, else "unknown" (finetune then
    refuses the backbone in one line)."""
    from kerastl.data import input_spec

    try:
        return input_spec(model).modality
    except KerastlError:
        return "unknown"


def cut_backbone(backbone: Backbone, layer_name: str) -> Backbone:
    """Cuts `backbone` at the output of the layer named `layer_name` (a cut in the middle is often the better
    feature extractor, e.g. VGG16's block4_pool against block5_pool).

    A layer inside a nested model is named `outer/inner` (as `kerastl inspect` lists it), or by its own name
    when no other layer has it.

    Raises:
        UsageError: no such layer (the message suggests close names), a name that several nested layers share,
            or a nested model that cannot be cut (it is shared or has several inputs).
    """
    import keras

    model = backbone.model
    path = _layer_path(model, layer_name)
    if path is None:
        names = _layer_names(model)
        close = difflib.get_close_matches(layer_name, names, n=3)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise UsageError(
            f"--cut: no layer named '{layer_name}' in {backbone.spec}.{hint} `kerastl inspect "
            f"{backbone.spec}` lists the layers"
        )
    features = _cut_output(model, path, layer_name)
    cut = keras.Model(model.input, features, name=f"{model.name}_cut")
    width = int(features.shape[-1])
    return dataclasses.replace(backbone, model=cut, spec=f"{backbone.spec}@{layer_name}", feature_width=width,
                               refusal=None)


def _layer_names(model, prefix="") -> list[str]:
    """Every layer's name, nested ones as `outer/inner`."""
    import keras

    names = []
    for layer in model.layers:
        names.append(prefix + layer.name)
        if isinstance(layer, keras.Model):
            names += _layer_names(layer, f"{prefix}{layer.name}/")
    return names


def _layer_path(model, name):
    """The chain of layers from `model` down to the layer `name` (`outer/inner`, or a unique bare name), or
    None when there is none.

    Raises:
        UsageError: a bare name that several nested layers share.
    """
    import keras

    def find(container, parts):
        for layer in container.layers:
            if layer.name == parts[0]:
                if len(parts) == 1:
                    return [layer]
                if isinstance(layer, keras.Model):
                    rest = find(layer, parts[1:])
                    if rest:
                        return [layer, *rest]
        return None

    path = find(model, name.split("/"))
    if path is not None:
        return path
    matches = [full for full in _layer_names(model) if full.rsplit("/", 1)[-1] == name]
    if len(matches) > 1:
        raise UsageError(f"--cut: several nested layers are named '{name}': {', '.join(matches[:4])}; name one "
                         "as outer/inner")
    return find(model, matches[0].split("/")) if matches else None


def _cut_output(model, path, layer_name):
    """The tensor in `model`'s own graph that carries the output of the last layer of `path` (nested models
    are cut and re-applied to the tensor that feeds them)."""
    import keras

    if len(path) == 1:
        return path[0].output
    nested = path[0]
    nodes = getattr(nested, "_inbound_nodes", [])
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1 or len(nested.inputs) != 1:
        raise UsageError(f"--cut {layer_name}: the nested model '{nested.name}' is shared or takes several "
                         "inputs, so it cannot be cut inside; cut at a top-level layer")
    inner = keras.Model(nested.input, _cut_output(nested, path[1:], layer_name), name=f"{nested.name}_cut")
    return inner(nodes[0].input_tensors[0])
