"""Backbone specs: keras:, hub:, paths and saved_models/ manifests, preprocessing records, cuts."""

import importlib
import json

import numpy as np
import pytest

from kerastl.backbones import (
    KERAS_PREPROCESSING,
    keras_application_names,
    list_saved_backbones,
    load_backbone,
)
from kerastl.errors import KerastlError, UsageError
from kerastl.inputs.image import ImagePreprocessing


def test_preprocessing_table_matches_keras_applications():
    """Every keras.applications module is mapped, and each mode equals the module's own preprocess_input."""
    import keras

    modules = {getattr(keras.applications, n).__module__.rsplit(".", 1)[-1] for n in dir(keras.applications)
               if n[:1].isupper() and callable(getattr(keras.applications, n))}
    assert modules <= set(KERAS_PREPROCESSING), modules - set(KERAS_PREPROCESSING)
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    for module, mode in KERAS_PREPROCESSING.items():
        reference = importlib.import_module(f"keras.src.applications.{module}").preprocess_input(x.copy())
        ours = ImagePreprocessing(mode=mode)(x).numpy()
        np.testing.assert_allclose(ours, np.asarray(reference), rtol=1e-5, atol=1e-4, err_msg=module)


def test_keras_application_backbone_record():
    backbone = load_backbone("keras:MobileNetV3Small", weights="none", image_size=32)
    assert backbone.modality == "image"
    assert backbone.input_shape == (32, 32, 3)
    assert backbone.preprocessing["mode"] == "none"
    assert backbone.feature_width == backbone.model.output.shape[-1] == 576
    assert backbone.model.layers[1].name == "preprocessing"
    assert "keras:MobileNetV2" in [f"keras:{n}" for n in keras_application_names()]


def test_keras_application_cut_in_the_middle():
    backbone = load_backbone("keras:VGG16", weights="none", image_size=32, cut="block4_pool")
    assert backbone.feature_width == 512
    assert backbone.model.output.shape[1:3] == (2, 2)
    assert backbone.spec.endswith("@block4_pool")


def test_bad_cut_names_close_layers():
    with pytest.raises(UsageError, match="block4_pool"):
        load_backbone("keras:VGG16", weights="none", image_size=32, cut="block4_pol")


def test_offline_imagenet_error_names_file_and_place(tmp_path):
    """KERASTL_OFFLINE is set for every test (conftest): the weights are not cached, so one line says what to
    fetch and where to put it."""
    from kerastl.net import cache_dir

    with pytest.raises(KerastlError) as error:
        load_backbone("keras:MobileNetV2", weights="imagenet", image_size=96)
    message = str(error.value)
    assert "\n" not in message
    assert "https://storage.googleapis.com/" in message and "mobilenet_v2" in message
    assert f"put it at {cache_dir()}/keras/models/" in message


def test_imagenet_weights_come_from_our_verified_cache(tmp_path, monkeypatch):
    """A cached weights file is used offline, and checked against the hash Keras pins for it."""
    import hashlib

    import keras

    from kerastl.net import cache_path

    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    reference.save_weights(tmp_path / "w.weights.h5")
    # ResNet50 pins an md5 for its no-top file; plant a file under that name with a wrong hash first.
    from keras.src.applications import resnet

    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    target = cache_path(resnet.BASE_WEIGHTS_PATH + name, subdir="keras/models", filename=name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"not the weights")
    with pytest.raises(KerastlError, match="does not match the md5"):
        load_backbone("keras:ResNet50", weights="imagenet", image_size=32)
    assert not target.exists()
    # Real weights in Keras' legacy .h5 layout, pinned by their md5: loaded from the cache, offline.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(target, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    monkeypatch.setitem(resnet.WEIGHTS_HASHES, "resnet50",
                        (resnet.WEIGHTS_HASHES["resnet50"][0], hashlib.md5(target.read_bytes()).hexdigest()))
    backbone = load_backbone("keras:ResNet50", weights="imagenet", image_size=32)
    assert backbone.weights == "imagenet"
    for ours, theirs in zip(backbone.model.weights, reference.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("spec, match", [
    ("MobileNetV2", "ambiguous"),
    ("keras:MobileNetV9", "Did you mean"),
    ("keras:", "unknown Keras application"),
    ("", "empty"),
    ("./no/such/dir", "not found"),
])
def test_bad_specs(spec, match):
    with pytest.raises(KerastlError, match=match):
        load_backbone(spec)


def test_weights_only_for_keras_specs(tiny_backbone_path):
    with pytest.raises(UsageError, match="--weights applies to keras"):
        load_backbone(str(tiny_backbone_path), weights="imagenet")


def test_keras_file_backbone_drops_a_softmax_classifier_top(tmp_path, tiny_backbone_path):
    """The classifier top (pooling, then a Dense softmax) goes; tests/test_guards.py covers other tops and a
    Dense projection that must stay."""
    import keras

    base = keras.saving.load_model(tiny_backbone_path)
    pooled = keras.layers.GlobalAveragePooling2D()(base.output)
    classifier = keras.Model(base.input, keras.layers.Dense(5, activation="softmax", name="old_output")(pooled))
    classifier.save(tmp_path / "classifier.keras")
    backbone = load_backbone(str(tmp_path / "classifier.keras"))
    assert "old_output" not in [layer.name for layer in backbone.model.layers]
    assert backbone.model.layers[-1].name == "conv3" and backbone.feature_width == 16
    assert backbone.preprocessing["mode"] == "scale"


def _manifest_dir(root, tiny_backbone_path, **extra):
    import shutil

    from kerastl.net import sha256_file

    folder = root / "tiny-pretrained"
    folder.mkdir()
    shutil.copy(tiny_backbone_path, folder / "backbone.keras")
    manifest = {"name": "tiny-pretrained", "modality": "image", "input": {"shape": [16, 16, 3]},
                "preprocessing": {"mode": "scale", "scale": 1 / 255}, "feature_width": 16,
                "pretraining": {"source": "synthetic:glyphs", "classes": 10},
                "weights": {"file": "backbone.keras", "sha256": sha256_file(folder / "backbone.keras")}}
    manifest.update(extra)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_saved_models_manifest_round_trip(tmp_path, tiny_backbone_path, monkeypatch):
    monkeypatch.setenv("KERASTL_SAVED_MODELS", str(tmp_path))
    folder = _manifest_dir(tmp_path, tiny_backbone_path, default=True)
    backbone = load_backbone("saved_models/tiny-pretrained")
    assert backbone.manifest["pretraining"]["source"] == "synthetic:glyphs"
    assert backbone.input_shape == (16, 16, 3)
    assert [m["path"] for m in list_saved_backbones()] == [str(folder)]
    from kerastl.backbones import default_backbone_spec

    assert default_backbone_spec() == str(folder)


def test_manifest_sha256_mismatch_is_refused(tmp_path, tiny_backbone_path):
    folder = _manifest_dir(tmp_path, tiny_backbone_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["weights"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KerastlError, match="does not match the sha256"):
        load_backbone(str(folder))


def test_no_default_backbone_is_a_clear_error(tmp_path, monkeypatch):
    from kerastl.backbones import default_backbone_spec

    monkeypatch.setenv("KERASTL_SAVED_MODELS", str(tmp_path))
    with pytest.raises(KerastlError, match="no pretrained image backbone"):
        default_backbone_spec()


def test_shipped_backbones_have_complete_manifests():
    """Every backbone we ship loads, matches its manifest's sha256, and documents how it was made."""
    for manifest in list_saved_backbones():
        backbone = load_backbone(manifest["path"])
        assert backbone.input_shape == tuple(manifest["input"]["shape"])
        assert backbone.feature_width == manifest["feature_width"]
        for key in ("modality", "preprocessing", "pretraining", "command", "hardware", "metrics", "weights"):
            assert key in manifest, (manifest["path"], key)
        assert manifest["weights"]["bytes"] <= 20 * 2**20


def test_hub_backbone_finetunes_with_adam(tmp_path, image_folder):
    """A TF-Hub-format SavedModel (tf_keras, tf.saved_model.save) as a backbone, fine-tuned with Adam."""
    import tensorflow as tf
    import tf_keras

    inputs = tf_keras.Input((16, 16, 3))
    x = tf_keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    tf.saved_model.save(tf_keras.Model(inputs, x), str(tmp_path / "module"))

    from kerastl.train.finetune import FinetuneConfig, finetune

    backbone = load_backbone(f"hub:{tmp_path / 'module'}", image_size=16)
    before = [v.numpy().copy() for v in backbone.model.trainable_weights]
    result = finetune(image_folder, backbone, config=FinetuneConfig(strategy="full", epochs=1, head_epochs=1,
                                                                   batch_size=8, optimizer="adam"), verbose=0)
    after = [v.numpy() for v in result.model.get_layer("backbone").trainable_weights]
    assert before and any(not np.allclose(b, a) for b, a in zip(before, after))
    assert result.metrics["backbone"]["spec"].startswith("hub:")


def test_keras_file_with_embedded_savedmodel_needs_trust(tmp_path):
    """A .keras file holding a hub layer carries a SavedModel graph: refused in safe mode, loaded with trust."""
    import zipfile

    import keras
    import tensorflow as tf
    import tf_keras

    from kerastl.backbones import load_keras_file
    from kerastl.backbones.hub_layer import HubLayer

    inputs = tf_keras.Input((8, 8, 3))
    tf.saved_model.save(tf_keras.Model(inputs, tf_keras.layers.GlobalAveragePooling2D()(inputs)),
                        str(tmp_path / "module"))
    x = keras.Input((8, 8, 3))
    keras.Model(x, HubLayer(str(tmp_path / "module"))(x)).save(tmp_path / "hub.keras")
    # The same file with the class spelled through JSON escapes, which Keras' json.loads decodes to HubLayer.
    with zipfile.ZipFile(tmp_path / "hub.keras") as source, \
            zipfile.ZipFile(tmp_path / "escaped.keras", "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "config.json":
                data = data.replace(b"HubLayer", b"Hub\\u004cayer")
                assert b"HubLayer" not in data
            target.writestr(info, data)
    for name in ("hub.keras", "escaped.keras"):
        with pytest.raises(KerastlError, match="--trust"):
            load_keras_file(tmp_path / name)
        assert load_keras_file(tmp_path / name, trust=True).output.shape[-1] == 3


def test_lambda_layers_are_refused_without_trust(tmp_path):
    import keras

    from kerastl.backbones import load_keras_file

    x = keras.Input((4,))
    keras.Model(x, keras.layers.Lambda(lambda t: t * 2)(x)).save(tmp_path / "lambda.keras")
    with pytest.raises(KerastlError, match="--trust"):
        load_keras_file(tmp_path / "lambda.keras")


def test_released_backbone_downloads_verified_from_a_local_server(tmp_path, tiny_backbone_path, monkeypatch):
    """url: specs fetch a released saved_models/NAME archive through kerastl.net (127.0.0.1 server)."""
    import functools
    import hashlib
    import http.server
    import tarfile
    import threading

    folder = _manifest_dir(tmp_path, tiny_backbone_path)
    served = tmp_path / "www"
    served.mkdir()
    with tarfile.open(served / "tiny.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="tiny-pretrained")
    sha = hashlib.sha256((served / "tiny.tar.gz").read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/tiny.tar.gz"
    try:
        monkeypatch.setenv("KERASTL_OFFLINE", "0")
        with pytest.raises(KerastlError, match="sha256|hash"):
            load_backbone(f"url:{url}#sha256={'0' * 64}")
        backbone = load_backbone(f"url:{url}#sha256={sha}")
        assert backbone.input_shape == (16, 16, 3) and backbone.manifest["name"] == "tiny-pretrained"
        monkeypatch.setenv("KERASTL_OFFLINE", "1")  # served from the cache from now on
        assert load_backbone(f"url:{url}#sha256={sha}").feature_width == 16
        with pytest.raises(UsageError, match="sha256="):
            load_backbone(f"url:{url}#md5=abc")
    finally:
        server.shutdown()


def test_full_model_h5_needs_trust(tmp_path, tiny_backbone_path):
    import keras

    keras.saving.load_model(tiny_backbone_path).save(tmp_path / "legacy.h5")
    with pytest.raises(KerastlError, match="--trust"):
        load_backbone(str(tmp_path / "legacy.h5"))
    assert load_backbone(str(tmp_path / "legacy.h5"), trust=True).feature_width == 16
