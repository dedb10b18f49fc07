"""The path source, the fallback for a spec without a known scheme: a `.keras` file, a SavedModel directory, or a
directory with a manifest, as given or relative to `saved_models/`. A bare word is refused as ambiguous.
"""

from __future__ import annotations

from pathlib import Path

from kerastl.backbones.hub import _load_savedmodel
from kerastl.backbones.models import _from_keras_model, refuse_image_size, refuse_weights
from kerastl.backbones.released import MANIFEST, _load_manifest_dir
from kerastl.backbones.safe_load import load_keras_file
from kerastl.backbones.saved import saved_models_dir
from kerastl.core.records import Backbone
from kerastl.errors import KerastlError, UsageError


def path_source(spec, rest, *, weights, image_size, from_scratch, trust) -> Backbone:
    """The path resolver: `rest` is the whole spec, a path (see `_load_path`)."""
    refuse_weights(spec, weights)
    return _load_path(spec, image_size, from_scratch, trust)


def resolve_path(spec: str) -> Path | None:
    """The filesystem path a spec names: as given, else relative to `saved_models/`; None if neither exists."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    root = saved_models_dir()
    for candidate in (root / spec, root / Path(spec).name if spec.startswith("saved_models/") else None):
        if candidate is not None and candidate.exists():
            return candidate
    return None


def _load_path(spec, image_size, from_scratch, trust) -> Backbone:
    path = resolve_path(spec)
    if path is None:
        if "/" not in spec and not spec.endswith((".keras", ".h5")):
            raise UsageError(
                f"ambiguous backbone spec '{spec}': write keras:{spec} for a Keras application, "
                f"hub:{spec} for a TF-Hub module, or a path (./{spec}, saved_models/{spec})"
            )
        raise KerastlError(f"backbone not found: {spec}; `kerastl backbones` lists the known ones")
    if path.is_dir() and (path / MANIFEST).is_file():
        return _load_manifest_dir(spec, path, from_scratch, trust, image_size=image_size)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _load_savedmodel(spec, str(path), image_size, from_scratch)
    if path.is_file() and path.suffix in (".keras", ".h5", ".hdf5"):
        model = load_keras_file(path, trust=trust)
        backbone = _from_keras_model(spec, model, None, from_scratch)
        refuse_image_size(spec, image_size, backbone.input_shape)
        return backbone
    raise UsageError(
        f"{spec} is not a backbone: expected a .keras file, a SavedModel directory (saved_model.pb) or a "
        f"directory with {MANIFEST}"
    )
