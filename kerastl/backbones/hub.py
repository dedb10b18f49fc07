"""The `hub:<url-or-dir>` source: a TF-Hub TF2 SavedModel in a `HubLayer`, its input type (image, audio or
text) read from the module's input signature or declared in the spec (`#modality=audio`), never guessed from a
shape.
"""

from __future__ import annotations

from kerastl.backbones.models import DEFAULT_IMAGE_SIZE, _image_backbone, refuse_weights
from kerastl.core.records import Backbone
from kerastl.errors import UsageError

HUB_MODALITIES = ("image", "audio", "text")


def split_modality(handle: str) -> tuple[str, str | None]:
    """`<handle>#modality=audio` → `(<handle>, "audio")`: a hub spec's declared input type. Other fragment
    keys (joined by `&`) stay on the handle.

    Raises:
        UsageError: a modality other than image, audio or text.
    """
    base, sep, fragment = handle.partition("#")
    if not sep:
        return handle, None
    declared, rest = None, []
    for part in fragment.split("&"):
        key, _, value = part.partition("=")
        if key == "modality":
            if value not in HUB_MODALITIES:
                raise UsageError(f"a hub: spec declares #modality=image, audio or text. Received: #{part}")
            declared = value
        elif part:
            rest.append(part)
    return (f"{base}#{'&'.join(rest)}" if rest else base), declared


def hub_source(spec, rest, *, weights, image_size, from_scratch, trust) -> Backbone:
    """The `hub:` resolver: `rest` is the module's URL or directory, with an optional `#modality=` fragment."""
    refuse_weights(spec, weights)
    return _load_savedmodel(spec, rest, image_size, from_scratch)


def _load_savedmodel(spec, handle, image_size, from_scratch) -> Backbone:
    import keras

    from kerastl.backbones.hub_layer import HubLayer
    from kerastl.modalities.image import ImagePreprocessing

    if from_scratch:
        raise UsageError(
            f"--from-scratch needs an architecture to re-initialise; {spec} is an opaque SavedModel. "
            "Use a keras: or .keras backbone for the from-scratch baseline"
        )
    handle, declared = split_modality(handle)
    hub = HubLayer(handle, trainable=True, name="hub")
    kind = _hub_input_kind(spec, hub, declared)
    if kind == "text":
        from kerastl.modalities.text import hub_backbone

        return hub_backbone(spec, hub)
    if kind == "audio":
        # hub_backbone puts an `audio.Waveform` marker first, so later loads of the model need no declaration.
        from kerastl.modalities.audio import hub_backbone

        return hub_backbone(spec, hub)
    size = int(image_size or DEFAULT_IMAGE_SIZE)
    inputs = keras.Input((size, size, 3), name="pixels")
    # TF-Hub's image convention: float pixels in [0, 1].
    preprocess = ImagePreprocessing(mode="scale", scale=1.0 / 255.0, name="preprocessing")
    return _image_backbone(spec, inputs, hub(preprocess(inputs)), preprocess, "pretrained",
                           name="hub_backbone")


def _hub_input_kind(spec, hub, declared=None) -> str:
    """The input type of a hub module: text for a string input (its dtype says so); audio only when the spec
    declares it (`#modality=audio`) and the input is a float waveform, (batch, samples) or one (samples,) as
    YAMNet takes; image for anything else, which the image path then checks by calling the module.

    A float input of rank 1 or 2 may be waveforms or feature vectors, so kerastl does not guess from the
    shape: without a declaration it is refused.

    Raises:
        UsageError: an undeclared rank-1/2 float input, or a declaration the input contradicts.
    """
    from kerastl.core.graph import first_input_spec

    input_spec = None
    fn = getattr(hub, "_fn", None)
    if fn is not None and getattr(hub, "_input_names", None) is None:
        input_spec = first_input_spec(fn)
    elif fn is not None:
        specs = list(fn.structured_input_signature[1].values())
        input_spec = specs[0] if len(specs) == 1 else None
    if input_spec is not None and input_spec.dtype == "string":
        kind = "text"
    elif input_spec is not None and input_spec.shape.rank in (1, 2) and input_spec.dtype.is_floating:
        if declared is None:
            raise UsageError(
                f"{spec} takes {input_spec.dtype.name} inputs of shape {tuple(input_spec.shape)}, which may be "
                f"waveforms or feature vectors; kerastl does not guess from a shape: if it takes mono waveforms "
                f"(16 kHz), write {spec}#modality=audio"
            )
        kind = "audio" if declared == "audio" else None
    else:
        kind = "image"
    if declared is not None and declared != kind:
        shape = "?" if input_spec is None else tuple(input_spec.shape)
        dtype = "?" if input_spec is None else input_spec.dtype.name
        raise UsageError(f"{spec} declares modality={declared} but the module takes {dtype} inputs of shape "
                         f"{shape}; drop or correct #modality")
    return kind
