"""Backbone directories with a manifest: the `url:<https-url>[#sha256=<hex>]` source (a released backbone,
an archive of a `saved_models/NAME` directory fetched and verified through `kerastl.net`), reading a manifest,
and loading the directory it describes (its files kept inside it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from kerastl.backbones.models import _from_keras_model, refuse_image_size, refuse_weights
from kerastl.backbones.safe_load import load_keras_file
from kerastl.core.records import Backbone
from kerastl.errors import KerastlError, UsageError

MANIFEST = "manifest.json"


BACKBONE_FILE = "backbone.keras"


def url_source(spec, rest, *, weights, image_size, from_scratch, trust) -> Backbone:
    """The `url:` resolver: `rest` is the archive's URL, pinned or https (see `fetch_released`)."""
    refuse_weights(spec, weights)
    return _load_manifest_dir(spec, fetch_released(rest), from_scratch, trust, image_size=image_size)


def fetch_released(url: str) -> Path:
    """Downloads a released backbone: a .tar.gz (or .zip) of a `saved_models/NAME` directory, pinned by a
    `#sha256=<hex>` fragment. Returns the directory holding `manifest.json`.

    The pin is what verifies the archive, and it comes from the spec, outside the archive. Without one the URL
    must be https (TLS then vouches for the server, not for the file); an http:// or file:// URL needs the pin.
    The archive goes through `kerastl.net` (cache, atomic and resumable, verified, redirects checked,
    size-limited safe extraction, `--offline`). The manifest's own sha256 of the weights, inside the same
    archive, is only a corruption check: whoever can swap the archive can swap it too.

    Raises:
        UsageError: the fragment is not `sha256=` and 64 hex digits.
        KerastlError: the download fails or is refused (an unpinned non-https URL, a pin mismatch, an unsafe
            archive), or the archive holds no backbone manifest.
    """
    from kerastl.net import fetch_and_extract, split_pin

    try:
        url, pin = split_pin(url)
    except UsageError as error:
        raise UsageError(f"a url: backbone pins its archive as #sha256=<64 hex digits>. Received: "
                         f"#{url.partition('#')[2]}") from error
    root = fetch_and_extract(url, sha256=pin, subdir="backbones")
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for candidate in candidates:
        if (candidate / MANIFEST).is_file():
            return candidate
    raise KerastlError(f"{url} holds no {MANIFEST}; a released backbone is an archive of a saved_models/NAME "
                       "directory")


def _load_manifest_dir(spec, path: Path, from_scratch, trust, *, image_size=None) -> Backbone:
    manifest = read_manifest(path)
    input_record = manifest["input"] if isinstance(manifest["input"], dict) else {}
    # Refused from the manifest, before the weights are read: its input size is fixed.
    refuse_image_size(spec, image_size, input_record.get("shape") or ())
    weights = manifest.get("weights", {})
    if not isinstance(weights, dict):
        raise KerastlError(f"{path / MANIFEST}: 'weights' must be an object; regenerate it with `kerastl pretrain`")
    weights_file = _file_in_dir(path, weights.get("file", BACKBONE_FILE), "weights.file")
    if not weights_file.is_file():
        raise KerastlError(f"{path} has a manifest but no {weights_file.name}; re-run its pretrain command")
    # A corruption check only: this sha256 sits beside the file it describes (in a downloaded archive, the
    # same archive), so it cannot tell a tampered backbone from a genuine one. The archive's pin does that.
    expected = weights.get("sha256")
    if expected:
        from kerastl.net import sha256_file

        actual = sha256_file(weights_file)
        if actual != expected:
            raise KerastlError(
                f"{weights_file} does not match the sha256 in its manifest ({actual[:12]}... != "
                f"{expected[:12]}...); restore the file or re-run its pretrain command"
            )
    model = load_keras_file(weights_file, trust=trust)
    backbone = _from_keras_model(spec, model, manifest, from_scratch)
    backbone.manifest = manifest
    return backbone


def _file_in_dir(directory: Path, name, field: str) -> Path:
    """`directory/name` for a manifest's file field, refused unless it stays inside `directory`: a relative
    path without `..`, and no symlink resolving outside. A downloaded archive's manifest is not trusted to
    point at files elsewhere on the disk.

    Raises:
        KerastlError: `name` is not a string, is absolute, has a `..` component or resolves outside.
    """
    manifest_path = directory / MANIFEST
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise KerastlError(f"{manifest_path}: {field} must be a file name inside {directory}. Received: {name!r}")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
        raise KerastlError(f"{manifest_path}: {field} {name!r} points outside its directory; a manifest names "
                           "files inside it only (fix the manifest or get the backbone from a trusted source)")
    candidate = directory / name
    root = os.path.realpath(directory)
    resolved = os.path.realpath(candidate)
    if resolved != root and not resolved.startswith(root.rstrip(os.sep) + os.sep):
        raise KerastlError(f"{manifest_path}: {field} {name!r} is a link that resolves outside its directory "
                           f"({resolved}); a manifest names files inside it only")
    return candidate


def read_manifest(path: Path) -> dict:
    """Reads `path/manifest.json`.

    Raises:
        KerastlError: the manifest is missing, is not JSON, or lacks `modality`/`input`.
    """
    manifest_path = Path(path) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise KerastlError(f"{manifest_path} is missing; a saved_models/ entry needs a manifest") from None
    except ValueError as error:
        raise KerastlError(f"{manifest_path} is not valid JSON ({error}); fix or regenerate it") from None
    for key in ("modality", "input"):
        if key not in manifest:
            raise KerastlError(f"{manifest_path} lacks '{key}'; regenerate it with `kerastl pretrain`")
    return manifest
