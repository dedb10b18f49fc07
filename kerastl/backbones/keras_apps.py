"""The `keras:<Name>` source: a `keras.applications` constructor built with `include_top=False` behind its own
preprocessing layer, the preprocessing mode of each application module, and Keras' weight downloads routed
through kerastl's verified cache (trust on first use for the files Keras pins no hash for).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from pathlib import Path

from kerastl.backbones.models import DEFAULT_IMAGE_SIZE, image_backbone
from kerastl.core.records import Backbone
from kerastl.errors import KerastlError, UsageError

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


def keras_source(spec, rest, *, weights, image_size, from_scratch, trust) -> Backbone:
    """The `keras:` resolver: `rest` names a `keras.applications` constructor (see `_load_keras_application`)."""
    return _load_keras_application(spec, weights, image_size, from_scratch)


def _load_keras_application(spec, weights, image_size, from_scratch) -> Backbone:
    import keras

    from kerastl.inputs.image import ImagePreprocessing

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
    return image_backbone(spec, inputs, model.output, preprocess, weights, name=name.lower())


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
