"""The `hub:<url-or-dir>` source: a TF-Hub TF2 SavedModel in a `HubLayer`, its input type (image, audio or
text) read from the module's input signature or declared in the spec (`#modality=audio`), never guessed from a
shape.
"""

from __future__ import annotations

from kerastl.backbones.models import refuse_weights
from kerastl.core.records import Backbone
from kerastl.errors import UsageError


def split_modality(handle: str) -> tuple[str, str | None]:
    """`<handle>#modality=audio` → `(<handle>, "audio")`: a hub spec's declared input type. Other fragment
    keys (joined by `&`) stay on the handle.

    Raises:
        UsageError: a modality that is not registered (`kerastl.core.modality`).
    """
    from kerastl.core.modality import listed, names

    base, sep, fragment = handle.partition("#")
    if not sep:
        return handle, None
    declared, rest = None, []
    for part in fragment.split("&"):
        key, _, value = part.partition("=")
        if key == "modality":
            if value not in names():
                raise UsageError(f"a hub: spec declares #modality={listed(names())}. Received: #{part}")
            declared = value
        elif part:
            rest.append(part)
    return (f"{base}#{'&'.join(rest)}" if rest else base), declared


def hub_source(spec, rest, *, weights, image_size, from_scratch, trust) -> Backbone:
    """The `hub:` resolver: `rest` is the module's URL or directory, with an optional `#modality=` fragment."""
    refuse_weights(spec, weights)
    return _load_savedmodel(spec, rest, image_size, from_scratch)


def _load_savedmodel(spec, handle, image_size, from_scratch) -> Backbone:
    from kerastl.backbones.hub_layer import HubLayer

    if from_scratch:
        raise UsageError(
            f"--from-scratch needs an architecture to re-initialise; {spec} is an opaque SavedModel. "
            "Use a keras: or .keras backbone for the from-scratch baseline"
        )
    handle, declared = split_modality(handle)
    hub = HubLayer(handle, trainable=True, name="hub")
    return _hub_modality(spec, hub, declared).hub_backbone(spec, hub, image_size=image_size)


def _hub_modality(spec, hub, declared=None):
    """The `Modality` of a hub module, from its input signature (`Modality.hub_claims`): text for a string
    input (its dtype says so); audio only when the spec declares it (`#modality=audio`) and the input is a
    float waveform, (batch, samples) or one (samples,) as YAMNet takes; image for anything else, which the
    image path then checks by calling the module.

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
    from kerastl.core.modality import all_modalities

    try:
        kind = next((m for m in all_modalities() if m.hub_claims(input_spec, declared)), None)
    except UsageError as error:
        raise UsageError(f"{spec} {error}") from None
    if kind is None or (declared is not None and declared != kind.name):
        shape = "?" if input_spec is None else tuple(input_spec.shape)
        dtype = "?" if input_spec is None else input_spec.dtype.name
        raise UsageError(f"{spec} declares modality={declared} but the module takes {dtype} inputs of shape "
                         f"{shape}; drop or correct #modality")
    return kind
