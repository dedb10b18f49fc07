"""Loading `.keras` files safely: a private copy whose parsed config is walked for layers that run a SavedModel
graph or other code safe mode cannot vet (`GRAPH_LAYERS`), refused without `--trust`, failing closed on what
cannot be parsed.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from kerastl.errors import KerastlError


def load_keras_file(path, *, trust: bool = False):
    """Loads a `.keras` model with `safe_mode=True` unless `trust` is set.

    Without `trust` the file is first copied to a private temporary file, and the copy is what is vetted and
    loaded (so the file cannot change between the check and the load). Its `config.json` is parsed as Keras
    parses it and every `class_name` and `registered_name` in it, nested layers included, is checked:
    a layer that runs a SavedModel graph or other code safe mode cannot vet (`GRAPH_LAYERS`) is refused,
    whatever its spelling in the JSON. An archive kerastl cannot read that way is refused too. With `trust`,
    HubLayers may load (`kerastl.backbones.hub_layer.trusted_loading`) and Keras loads with `safe_mode=False`.

    A config naming keras-hub classes (a `kerashub:` backbone's layers) needs the `kerashub` extra; Keras imports
    keras-hub's modules itself as it reads them, so keras-hub is imported only for such files.

    Raises:
        KerastlError: the file is missing, unreadable, corrupt, holds a graph-running layer (without `trust`),
            holds code that safe mode refuses, or needs an extra that is not installed (one line naming it).
    """
    import shutil
    import tempfile

    import keras

    # Every module defining a layer a kerastl model may hold (`kerastl>Name`, the registered classes) must be
    # imported before Keras reads the config: a hub: classifier loaded in a fresh process failed to deserialize
    # without hub_layer, and the shipped backbones without modalities.image. tests/test_packaging.py checks
    # that this list names every module that registers one.
    import kerastl.backbones.hub_layer
    import kerastl.core.graph
    import kerastl.inputs.audio
    import kerastl.inputs.image
    import kerastl.inputs.packed_text
    import kerastl.inputs.sfx_mel
    import kerastl.inputs.speech_mel
    import kerastl.inputs.text

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
            _require_packages(_refuse_graph_layers(source, shown=path), shown=path)
        try:
            return keras.saving.load_model(source, safe_mode=not trust, compile=False)
        except KerastlError:
            raise
        except Exception as error:  # noqa: BLE001  (Keras raises many types for bad files; each becomes one line)
            missing = _missing_extra(error)
            if missing:
                raise KerastlError(f"{path} holds layers of {missing}") from None
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


def _require_packages(config, *, shown: Path) -> None:
    """Checks that the optional packages whose classes the parsed config names are installed: keras-hub's
    (`module` `keras_hub.*` or `registered_name` `keras_hub>*`), with tensorflow-text for its tokenizers.

    Raises:
        KerastlError: one line naming the file, the missing packages and the extra (`kerastl.extras.require`).
    """
    from kerastl import extras

    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple) and node[:1] == ("object",):
            for key, value in node[1]:
                if key in ("module", "registered_name") and isinstance(value, str) and \
                        value.startswith(("keras_hub.", "keras_hub>")):
                    extras.require(f"{shown} (it holds keras-hub layers)", "keras_hub", "tensorflow_text")
                    return
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _missing_extra(error) -> str | None:
    """For an import error of an optional package (`kerastl.extras.PACKAGES`): "<distribution>, which is not
    installed here; run pip install ..."; else None."""
    from kerastl import extras

    while error is not None:
        if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in extras.PACKAGES:
            module = error.name.split(".")[0]
            dist, extra = extras.PACKAGES[module]
            return f"{dist}, which is not installed here; run pip install \"kerastl[{extra}]\""
        error = error.__cause__ or error.__context__
    return None


def _refuse_graph_layers(path: Path, *, shown: Path):
    """Refuses a `.keras` archive whose parsed config names a `GRAPH_LAYERS` class anywhere, or that cannot be
    read as Keras reads it (not a zip, no single `config.json`, not JSON), and returns the parsed config
    (objects as `("object", pairs)`). Fails closed: what this cannot parse is not waved through to Keras.

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
    return config


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
