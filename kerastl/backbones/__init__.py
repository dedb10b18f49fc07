"""Backbones: pretrained networks without their output layer, with the record that travels with them.

One function, `load_backbone(spec)`, resolves every kind of backbone. A spec names its source explicitly:

- `keras:<Name>`: a `keras.applications` constructor (MobileNetV2, EfficientNetB0, ResNet50, VGG16, ...) built
  with `include_top=False`; weights are `imagenet` (through Keras' cache), `none`, or a local weights file.
- `hub:<url-or-dir>`: a TF-Hub TF2 SavedModel (feature vector or classifier) wrapped by `kerastl.backbones.hub_layer.HubLayer`.
- `url:<https-url>[#sha256=<hex>]`: one of our released backbones, an archive of a `saved_models/NAME`
  directory, downloaded and verified through `kerastl.net`.
- a path: a `.keras` file, a SavedModel directory, or one of our pretrained backbones in `saved_models/`
  (a directory with a `manifest.json`).

A bare word such as `MobileNetV2` is ambiguous (a Keras application? a folder?) and is refused, as timm
refuses an ambiguous model name.

The returned `Backbone` takes raw pixels (0–255): its preprocessing is its first layer, so that a classifier
built on it, and every export of that classifier, takes raw pixels too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import os
import re
from pathlib import Path

from kerastl.core.records import Backbone
from kerastl.errors import KerastlError, UsageError

MANIFEST = "manifest.json"
BACKBONE_FILE = "backbone.keras"
DEFAULT_IMAGE_SIZE = 224

# `preprocess_input` mode of each keras.applications module (keras/src/applications/*.py). "none" means the
# application preprocesses inside the model. tests/test_backbones.py checks this table against Keras itself.
KERAS_PREPROCESSING = {
    "convnext": "none",
    "densenet": "torch",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "inception_resnet_v2": "tf",
    "inception_v3": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "mobilenet_v3": "none",
    "nasnet": "tf",
    "resnet": "caffe",
    "resnet_v2": "tf",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "xception": "tf",
}




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


def keras_application_names() -> list[str]:
    """The `keras.applications` constructors that `keras:<Name>` accepts."""
    import keras

    names = []
    for name in dir(keras.applications):
        obj = getattr(keras.applications, name)
        if name[:1].isupper() and callable(obj) and _keras_module(obj) in KERAS_PREPROCESSING:
            names.append(name)
    return sorted(names)


def _keras_module(constructor) -> str:
    return getattr(constructor, "__module__", "").rsplit(".", 1)[-1]


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


def default_backbone_spec(modality: str = "image") -> str:
    """The backbone `kerastl finetune` uses when none is given: the backbone of `modality` in `saved_models/`
    whose manifest is marked `"default": true` (else the first of that modality).

    Raises:
        KerastlError: no backbone of that modality is shipped in `saved_models/`.
    """
    images = [m for m in list_saved_backbones() if m.get("modality") == modality]
    if not images:
        example = {"image": "keras:MobileNetV2"}.get(modality, "hub:<dir>")
        raise KerastlError(
            f"no pretrained {modality} backbone found in {saved_models_dir()}; pass --backbone SPEC "
            f"(e.g. {example}) or run `kerastl pretrain` first"
        )
    images.sort(key=lambda m: not m.get("default", False))
    return images[0]["path"]


# How to make a backbone of each input type when saved_models/ has none (kerastl's built-in sources).
_PRETRAIN_HINTS = {
    "image": "kerastl pretrain --data synthetic:glyphs --arch smallnet-s --out saved_models/NAME",
    "audio": "kerastl pretrain --data synthetic:pseudowords --arch smallnet-s --out saved_models/NAME",
    "text": "kerastl pretrain --data corpus:python-docs-wide-files --arch textcnn-l --out saved_models/NAME",
}


def suggest_backbone(modality: str) -> str:
    """A short instruction naming a backbone of `modality`: the default one in `saved_models/` if there is
    one, else how to pretrain one."""
    try:
        path = default_backbone_spec(modality)
    except KerastlError:
        hint = _PRETRAIN_HINTS.get(modality)
        return (f"pretrain {modality} backbone with `{hint}`" if hint else
                "pick a backbone of the data's type (`kerastl backbones` shows each one's modality)")
    name = Path(path).name
    return f"use a {modality} backbone such as --backbone saved_models/{name} (`kerastl backbones` lists them)"


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
        spec: `keras:<Name>`, `hub:<url-or-dir>`, or a path (see the module docstring).
        weights: for `keras:` specs, `imagenet` (default), `none`, or a path to a local weights file. Other
            sources carry their own weights; passing `imagenet` with them is an error.
        cut: name of a layer at which to cut the network (its output becomes the features); a layer inside a
            nested model is named `outer/inner` as `kerastl inspect` lists it, or by its own name if unique.
        image_size: square input size for sources whose size is free (keras applications, hub modules).
        from_scratch: the same architecture with random initial weights (the no-transfer baseline).
        trust: allow `.keras` files to run arbitrary code (Lambda layers); see SECURITY.md.

    Raises:
        UsageError: the spec, weights, cut or image size is invalid (the message names what was received), a
            hub module's input type is ambiguous and undeclared, or a loaded classifier's top cannot be found
            (the message lists candidate `--cut` layers).
        KerastlError: the source cannot be loaded (missing file, offline without cached weights, ...).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("empty backbone spec; use keras:<Name>, hub:<url-or-dir> or a path")
    spec = spec.strip()
    if image_size is not None and not 8 <= int(image_size) <= 1024:
        raise UsageError(f"--image-size must be between 8 and 1024. Received: {image_size}")
    if spec.startswith("keras:"):
        backbone = _load_keras_application(spec, weights, image_size, from_scratch)
    else:
        if weights not in (None, "pretrained"):
            raise UsageError(
                f"--weights applies to keras: backbones only; {spec} carries its own weights. "
                f"Received: --weights {weights}"
            )
        if spec.startswith("hub:"):
            backbone = _load_savedmodel(spec, spec[len("hub:") :], image_size, from_scratch)
        elif spec.startswith("url:"):
            backbone = _load_manifest_dir(spec, fetch_released(spec[len("url:") :]), from_scratch, trust)
        else:
            backbone = _load_path(spec, image_size, from_scratch, trust)
    if cut:
        backbone = cut_backbone(backbone, cut)
    if backbone.refusal:
        raise UsageError(backbone.refusal)
    return backbone


def _load_keras_application(spec, weights, image_size, from_scratch) -> Backbone:
    import keras

    from kerastl.modalities.image import ImagePreprocessing

    name = spec[len("keras:") :]
    names = keras_application_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join('keras:' + c for c in close)}?" if close else ""
        raise UsageError(f"unknown Keras application '{name}'.{hint} `kerastl backbones` lists them all")
    constructor = getattr(keras.applications, name)
    weights = "imagenet" if weights is None else weights
    if from_scratch:
        weights = "none"
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise UsageError(f"--weights must be imagenet, none or an existing weights file. Received: {weights}")
    size = int(image_size or DEFAULT_IMAGE_SIZE)
    mode = KERAS_PREPROCESSING[_keras_module(constructor)]
    inputs = keras.Input((size, size, 3), name="pixels")
    preprocess = ImagePreprocessing(mode=mode, name="preprocessing")
    try:
        with _keras_downloads_through_cache():
            model = constructor(
                include_top=False,
                weights=None if weights == "none" else weights,
                input_shape=(size, size, 3),
                input_tensor=preprocess(inputs),
            )
    except KerastlError:
        raise
    except Exception as error:  # Keras raises bare Exception/ValueError for fetch failures and bad sizes
        raise _keras_application_error(name, weights, size, error) from error
    return _image_backbone(spec, inputs, model.output, preprocess, weights, name=name.lower())


@contextlib.contextmanager
def _keras_downloads_through_cache():
    """Routes `keras.applications` weight downloads through `kerastl.net`.

    Keras' `get_file` writes in place and extracts archives itself; ours downloads atomically and resumably
    into `$KERASTL_CACHE/keras/`, honours `KERASTL_OFFLINE` with a one-line error naming the URL and the path
    to place the file at, and checks the hash Keras pins for the file (sha256, or md5 for older files).
    Some applications pin nothing (MobileNetV2, for one): their file's sha256 is recorded on first download
    beside it in the cache, and a different file under that URL is refused afterwards (trust on first use).
    """
    from keras.src.utils import file_utils

    original = file_utils.get_file

    def get_file(fname=None, origin=None, md5_hash=None, file_hash=None, cache_subdir="datasets", **kwargs):
        from kerastl.net import fetch

        pin = file_hash or md5_hash
        sha256 = pin if pin and len(pin) == 64 else None
        path = fetch(origin, sha256=sha256, subdir=f"keras/{cache_subdir}", filename=fname,
                     trust_on_first_use=not pin)
        if pin and not sha256 and not file_utils.validate_file(str(path), pin, algorithm="md5"):
            path.unlink()
            raise KerastlError(f"{origin} does not match the md5 Keras pins for it ({pin}); the bad file was "
                               "deleted: fetch it again")
        return str(path)

    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = original


def _image_backbone(spec, inputs, features, preprocess, weights, *, name) -> Backbone:
    """The `Backbone` of an image model from raw-pixel `inputs` (its first layer `preprocess`) to `features`."""
    import keras

    return Backbone(
        model=keras.Model(inputs, features, name=name),
        spec=spec,
        modality="image",
        input_shape=tuple(int(d) for d in inputs.shape[1:]),
        preprocessing=preprocess.to_record(),
        feature_width=int(features.shape[-1]),
        weights=weights,
    )


def _keras_application_error(name, weights, size, error) -> KerastlError:
    message = str(error)
    fetch = re.search(r"URL fetch failure on (\S+?): ", message)
    if fetch:
        from keras.src.backend import config

        url = fetch.group(1)
        target = Path(os.path.expanduser(config.keras_home())) / "models" / os.path.basename(url)
        return KerastlError(
            f"cannot download the {weights} weights of keras:{name} (offline?): fetch {url} and place it at "
            f"{target}, or pass --weights none or --weights PATH"
        )
    first_line = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return UsageError(f"cannot build keras:{name} at {size}x{size} with weights={weights}: {first_line}")


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
        return _load_manifest_dir(spec, path, from_scratch, trust)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _load_savedmodel(spec, str(path), image_size, from_scratch)
    if path.is_file() and path.suffix in (".keras", ".h5", ".hdf5"):
        model = load_keras_file(path, trust=trust)
        return _from_keras_model(spec, model, None, from_scratch)
    raise UsageError(
        f"{spec} is not a backbone: expected a .keras file, a SavedModel directory (saved_model.pb) or a "
        f"directory with {MANIFEST}"
    )


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


def _load_manifest_dir(spec, path: Path, from_scratch, trust) -> Backbone:
    manifest = read_manifest(path)
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


def load_keras_file(path, *, trust: bool = False):
    """Loads a `.keras` model with `safe_mode=True` unless `trust` is set.

    Without `trust` the file is first copied to a private temporary file, and the copy is what is vetted and
    loaded (so the file cannot change between the check and the load). Its `config.json` is parsed as Keras
    parses it and every `class_name` and `registered_name` in it, nested layers included, is checked:
    a layer that runs a SavedModel graph or other code safe mode cannot vet (`GRAPH_LAYERS`) is refused,
    whatever its spelling in the JSON. An archive kerastl cannot read that way is refused too. With `trust`,
    HubLayers may load (`kerastl.backbones.hub_layer.trusted_loading`) and Keras loads with `safe_mode=False`.

    Raises:
        KerastlError: the file is missing, unreadable, corrupt, holds a graph-running layer (without `trust`),
            or holds code that safe mode refuses.
    """
    import shutil
    import tempfile

    import keras

    import kerastl.backbones.hub_layer
    import kerastl.core.graph

    # The custom layers a kerastl model may hold must be registered before Keras reads its config; a hub:
    # classifier (HubLayer) loaded in a fresh process failed to deserialize without kerastl.backbones.hub_layer.
    import kerastl.modalities.audio
    import kerastl.modalities.text

    path = Path(path)
    if not path.is_file():
        raise KerastlError(f"model file not found: {path}")
    if path.suffix in (".h5", ".hdf5"):
        # Keras ignores safe_mode for full-model .h5 files (CVE-2025-9905): their Lambda layers run on load.
        if not trust:
            raise KerastlError(
                f"{path} is a full-model .h5 file, which Keras loads without safe mode (its code runs); pass "
                "--trust only if you trust whoever made it, or re-save it as .keras"
            )
    elif path.suffix != ".keras":
        raise KerastlError(f"{path}: model files are .keras (or, with --trust, full-model .h5)")
    with contextlib.ExitStack() as stack:
        source = path
        if trust:
            stack.enter_context(kerastl.backbones.hub_layer.trusted_loading())
        else:
            private = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kerastl-load-")))
            source = private / "model.keras"
            try:
                shutil.copyfile(path, source)
            except OSError as error:
                raise KerastlError(f"cannot read {path} ({error}); check its permissions") from None
            _refuse_graph_layers(source, shown=path)
        try:
            return keras.saving.load_model(source, safe_mode=not trust, compile=False)
        except KerastlError:
            raise
        except Exception as error:  # noqa: BLE001  (Keras raises many types for bad files; each becomes one line)
            message = str(error)
            if "safe_mode" in message or "Lambda" in message:
                raise KerastlError(
                    f"{path} contains code (e.g. a Lambda layer) that safe mode refuses to run; pass --trust "
                    "only if you trust whoever made the file, since loading it then executes their code"
                ) from None
            first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
            raise KerastlError(f"cannot load {path}: {first}") from None


#: Layers that run a SavedModel graph or other code that Keras' safe mode cannot vet, refused in a `.keras` file
#: without --trust: kerastl's HubLayer (an embedded or downloaded TF-Hub module) and PerWaveform (which wraps
#: one); Keras' TFSMLayer (a SavedModel; CVE-2026-1462), TorchModuleWrapper (a pickled torch module), JaxLayer
#: and FlaxLayer (arbitrary JAX functions and modules); tensorflow_hub's KerasLayer. Compared case-insensitively
#: with the last part of each `class_name` and `registered_name` (`kerastl>HubLayer`, `keras.layers.TFSMLayer`).
GRAPH_LAYERS = frozenset(
    name.lower()
    for name in ("HubLayer", "PerWaveform", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer", "KerasLayer")
)


def _refuse_graph_layers(path: Path, *, shown: Path) -> None:
    """Refuses a `.keras` archive whose parsed config names a `GRAPH_LAYERS` class anywhere, or that cannot be
    read as Keras reads it (not a zip, no single `config.json`, not JSON). Fails closed: what this cannot
    parse is not waved through to Keras.

    Raises:
        KerastlError: one line naming the file, the problem and `--trust`.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            entries = [info for info in archive.infolist() if info.filename == "config.json"]
            if len(entries) != 1:
                what = "no config.json" if not entries else "several config.json entries"
                raise KerastlError(f"{shown} is not a valid .keras file ({what}); re-save the model with Keras 3")
            if entries[0].file_size > 64 << 20:
                raise KerastlError(f"{shown} has a config.json over 64 MiB, which no model needs; refusing it")
            text = archive.read(entries[0]).decode("utf-8")
        # Pairs, not dicts: a duplicated key is checked in each of its copies, not only the one json keeps.
        config = json.loads(text, object_pairs_hook=lambda pairs: ("object", pairs))
    except KerastlError:
        raise
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, ValueError, RecursionError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise KerastlError(f"{shown} is not a readable .keras file ({reason}); refusing it, since its layers "
                           "cannot be checked: re-save the model with Keras 3") from None
    found = _graph_layer_in(config)
    if found:
        raise KerastlError(
            f"{shown} holds a {found} layer, whose SavedModel graph or code runs when it loads (safe mode cannot "
            "vet it); pass --trust only if you made the file or trust whoever did"
        )


def _graph_layer_in(config) -> str | None:
    """The first `GRAPH_LAYERS` name the parsed config refers to, else None: as the value of any `class_name`
    or `registered_name` key, at any depth (functional, sequential, nested models, wrappers such as
    PerWaveform's `module`), or as any string in the registered form `package>Name`, which Keras also resolves
    from a plain string. Other strings (layer names, vocabularies) are data, not classes. Walks iteratively,
    so nesting depth is no limit."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple) and node[:1] == ("object",):
            for key, value in node[1]:
                if key in ("class_name", "registered_name") and not isinstance(value, (str, type(None))):
                    return f"{key}={value!r}"  # not a name Keras could resolve: refuse rather than guess
                if key in ("class_name", "registered_name") and isinstance(value, str):
                    name = _class_part(value)
                    if name.lower() in GRAPH_LAYERS:
                        return name
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and ">" in node:
            name = _class_part(node)
            if name.lower() in GRAPH_LAYERS:
                return name
    return None


def _class_part(name: str) -> str:
    # "kerastl>HubLayer", "keras.layers.TFSMLayer", "HubLayer": the class is the last part.
    return re.split(r"[>.]", name.strip())[-1]


def _from_keras_model(spec, model, manifest, from_scratch) -> Backbone:
    import keras

    from kerastl.core.graph import walk_layers
    from kerastl.modalities.image import ImagePreprocessing

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
        model = _with_modality_marker(model, modality, manifest)
    else:
        modality = _modality_of(model)
        if modality == "audio":
            from kerastl.modalities.audio import preprocessing_record

            preprocessing = preprocessing_record(model)
        elif modality == "text":
            from kerastl.modalities.text import preprocessing_record

            preprocessing = preprocessing_record(model)
        else:
            pre = [layer for layer in walk_layers(model) if isinstance(layer, ImagePreprocessing)]
            preprocessing = pre[0].to_record() if pre else {"mode": "none"}
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


def _with_modality_marker(model, modality, manifest):
    """A manifest's audio backbone whose model has no sample-rate layer gets an `audio.Waveform` marker first,
    so that the model itself says what it takes (`kerastl.data.input_spec` reads markers, not shapes)."""
    if modality != "audio":
        return model
    from kerastl.modalities.audio import DEFAULT_SAMPLE_RATE, Waveform, sample_rate_of

    if sample_rate_of(model) is not None or len(model.input.shape) != 2:
        return model
    import keras

    rate = int(manifest.get("input", {}).get("sample_rate") or DEFAULT_SAMPLE_RATE)
    inputs = keras.Input(model.input.shape[1:], name="waveforms")
    return keras.Model(inputs, model(Waveform(rate, name="waveform")(inputs)), name=model.name)


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
    """image, audio or text from the markers `kerastl.data.input_spec` reads (a string input, a sample-rate
    layer, an image shape), else "unknown" (finetune then refuses the backbone in one line)."""
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
