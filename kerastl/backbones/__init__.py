"""Backbones: pretrained networks without their output layer, with the record that travels with them.

One function, `load_backbone(spec)`, resolves every kind of backbone. A spec names its source explicitly:

- `keras:<Name>`: a `keras.applications` constructor (MobileNetV2, EfficientNetB0, ResNet50, VGG16, ...) built
  with `include_top=False`; weights are `imagenet` (through Keras' cache), `none`, or a local weights file.
- `hub:<url-or-dir>`: a TF-Hub TF2 SavedModel (feature vector or classifier) wrapped by `kerastl.backbones.hub_layer.HubLayer`.
- `kerashub:<preset>`: a keras-hub backbone (a preset name, `kaggle://...`, `hf://...`, or a directory holding a
  keras-hub preset or a Hugging Face transformers or timm checkpoint) behind its preset's image converter or text
  preprocessor (`kerastl.backbones.kerashub`; the `kerashub` extra).
- `url:<https-url>[#sha256=<hex>]`: one of our released backbones, an archive of a `saved_models/NAME`
  directory, downloaded and verified through `kerastl.net`.
- a path: a `.keras` file, a SavedModel directory, or one of our pretrained backbones in `saved_models/`
  (a directory with a `manifest.json`).

`load_backbone` finds the resolver of a spec's scheme in one table, `SOURCES` (as timm's `create_model`
parses a model name's source), and falls back to the path resolver for a spec with no known scheme. A new
source is one more entry: a function `(spec, rest, *, weights, image_size, from_scratch, trust) -> Backbone`,
where `rest` is the spec after `scheme:`.

A bare word such as `MobileNetV2` is ambiguous (a Keras application? a folder?) and is refused, as timm
refuses an ambiguous model name.

The returned `Backbone` takes raw pixels (0–255): its preprocessing is its first layer, so that a classifier
built on it, and every export of that classifier, takes raw pixels too.
"""

from __future__ import annotations

from kerastl.backbones.hub import hub_source, split_modality
from kerastl.backbones.keras_apps import (
    KERAS_PREPROCESSING,
    _keras_downloads_through_cache,
    _keras_module,
    keras_application_names,
    keras_source,
)
from kerastl.backbones.kerashub import kerashub_source
from kerastl.backbones.local import path_source, resolve_path
from kerastl.backbones.models import DEFAULT_IMAGE_SIZE, cut_backbone
from kerastl.backbones.released import (
    BACKBONE_FILE,
    MANIFEST,
    fetch_released,
    read_manifest,
    url_source,
)
from kerastl.backbones.safe_load import GRAPH_LAYERS, load_keras_file
from kerastl.backbones.saved import (
    default_backbone_spec,
    list_saved_backbones,
    saved_models_dir,
    suggest_backbone,
)
from kerastl.core.records import Backbone
from kerastl.errors import UsageError

__all__ = [
    "BACKBONE_FILE",
    "DEFAULT_IMAGE_SIZE",
    "GRAPH_LAYERS",
    "KERAS_PREPROCESSING",
    "MANIFEST",
    "SOURCES",
    "Backbone",
    "_keras_downloads_through_cache",
    "_keras_module",
    "cut_backbone",
    "default_backbone_spec",
    "fetch_released",
    "keras_application_names",
    "list_saved_backbones",
    "load_backbone",
    "load_keras_file",
    "read_manifest",
    "resolve_path",
    "saved_models_dir",
    "split_modality",
    "suggest_backbone",
]

#: The backbone sources, by the scheme a spec starts with (`keras:MobileNetV2`); a spec with none of these
#: schemes is a path (`path_source`).
SOURCES = {
    "keras": keras_source,
    "hub": hub_source,
    "url": url_source,
    "kerashub": kerashub_source,
}


def load_backbone(
    spec: str,
    *,
    weights: str | None = None,
    cut: str | None = None,
    image_size: int | None = None,
    from_scratch: bool = False,
    trust: bool = False,
) -> Backbone:
    """Resolves a backbone spec into a `Backbone`.

    Args:
        spec: `keras:<Name>`, `hub:<url-or-dir>`, `kerashub:<preset>`, `url:<https-url>`, or a path (see the
            module docstring).
        weights: for `keras:` specs, `imagenet` (default), `none`, or a path to a local weights file. Other
            sources carry their own weights; passing `imagenet` with them is an error.
        cut: name of a layer at which to cut the network (its output becomes the features); a layer inside a
            nested model is named `outer/inner` as `kerastl inspect` lists it, or by its own name if unique.
        image_size: square input size for sources whose size is free (keras applications, hub modules,
            keras-hub image backbones without a fixed size).
        from_scratch: the same architecture with random initial weights (the no-transfer baseline).
        trust: allow `.keras` files to run arbitrary code (Lambda layers); see SECURITY.md.

    Raises:
        UsageError: the spec, weights, cut or image size is invalid (the message names what was received), a
            hub module's input type is ambiguous and undeclared, or a loaded classifier's top cannot be found
            (the message lists candidate `--cut` layers).
        KerastlError: the source cannot be loaded (missing file, offline without cached weights, ...).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("empty backbone spec; use keras:<Name>, hub:<url-or-dir>, kerashub:<preset> or a path")
    spec = spec.strip()
    if image_size is not None and not 8 <= int(image_size) <= 1024:
        raise UsageError(f"--image-size must be between 8 and 1024. Received: {image_size}")
    scheme, sep, rest = spec.partition(":")
    source = SOURCES.get(scheme) if sep else None
    if source is None:  # no known scheme (a Windows drive letter included): a path
        source, rest = path_source, spec
    backbone = source(spec, rest, weights=weights, image_size=image_size, from_scratch=from_scratch, trust=trust)
    if cut:
        backbone = cut_backbone(backbone, cut)
    if backbone.refusal:
        raise UsageError(backbone.refusal)
    return backbone
