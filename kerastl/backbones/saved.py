"""Our own pretrained backbones in `saved_models/`: where they live, their manifests, the default one of each
modality, and what to suggest (or how to pretrain one) when a backbone of the data's type is needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kerastl.backbones.released import MANIFEST
from kerastl.core.modality import find as find_modality
from kerastl.errors import KerastlError


def saved_models_dir() -> Path:
    """Where our own pretrained backbones live: `$KERASTL_SAVED_MODELS`, else `kerastl/saved_models`.

    In a wheel that is a real directory inside the installed package; in a clone (and an editable install)
    it is a link to the repository's top-level `saved_models/`, and where a checkout did not make the link
    (git with symlinks off), the top-level directory is used directly.
    """
    env = os.environ.get("KERASTL_SAVED_MODELS")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent.parent
    inside = package / "saved_models"
    return inside.resolve() if inside.is_dir() else package.parent / "saved_models"


def list_saved_backbones() -> list[dict]:
    """The manifests of the backbones in `saved_models/`, each with its `path`, newest format first."""
    root = saved_models_dir()
    found = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            manifest_path = entry / MANIFEST
            if manifest_path.is_file():
                try:
                    manifest = json.loads(manifest_path.read_text())
                except (OSError, ValueError):
                    continue
                manifest["path"] = str(entry)
                found.append(manifest)
    return found


def default_backbone_spec(modality: str = "image", data_dir=None) -> str:
    """The backbone `kerastl finetune` uses when none is given: a backbone of `modality` in `saved_models/`,
    the one that suits the data in `data_dir` best.

    The modality says what suits a folder (`Modality.backbone_preferences`: for images, the folder's colour,
    so grayscale digits get the grayscale glyph backbone and colour photos the RGB ImageNet one); among the
    backbones whose manifest's `input` record agrees with every preference (all of them if none does, or
    without `data_dir`), the one marked `"default": true` wins, then the first by name.

    Raises:
        KerastlError: no backbone of that modality is shipped in `saved_models/`.
    """
    candidates = [m for m in list_saved_backbones() if m.get("modality") == modality]
    known = find_modality(modality)
    if not candidates:
        example = "hub:<dir>" if known is None else known.default_backbone_hint
        raise KerastlError(
            f"no pretrained {modality} backbone found in {saved_models_dir()}; pass --backbone SPEC "
            f"(e.g. {example}) or run `kerastl pretrain` first"
        )
    preferences = {} if known is None or data_dir is None else known.backbone_preferences(data_dir)
    fitting = [m for m in candidates if all(_input_record(m).get(key) == value
                                            for key, value in preferences.items())]
    ranked = sorted(fitting or candidates, key=lambda m: not m.get("default", False))  # stable: by name next
    return ranked[0]["path"]


def _input_record(manifest: dict) -> dict:
    record = manifest.get("input")
    return record if isinstance(record, dict) else {}


def suggest_backbone(modality: str, data_dir=None) -> str:
    """A short instruction naming a backbone of `modality`: the default one in `saved_models/` (for the data
    in `data_dir`, when given) if there is one, else how to pretrain one."""
    try:
        path = default_backbone_spec(modality, data_dir)
    except KerastlError:
        known = find_modality(modality)
        hint = None if known is None else known.pretrain_hint
        return (f"pretrain {modality} backbone with `{hint}`" if hint else
                "pick a backbone of the data's type (`kerastl backbones` shows each one's modality)")
    name = Path(path).name
    return f"use a {modality} backbone such as --backbone saved_models/{name} (`kerastl backbones` lists them)"
