"""Tests for kerastl.backbones.hub_layer: TF-Hub TF2 SavedModels inside Keras 3 functional models.

The modules are made the way TF-Hub publishers made them: a small tf_keras model saved with
tf.saved_model.save (no TF_USE_LEGACY_KERAS; tf_keras imports fine beside Keras 3). All offline;
the download test serves a tarball from a local http.server.
"""

import functools
import http.server
import pathlib
import shutil
import tarfile
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.backbones.hub_layer import HubLayer, resolve_handle
from kerastl.errors import KerastlError

SIZE = 32
FEATURES = 4
CLASSES = 3


def _publish(model, path):
    tf.saved_model.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def feature_vector_dir(tmp_path_factory):
    """Image feature vector: Conv2D + BatchNormalization (non-trivial statistics) + Dropout + GAP."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((SIZE, SIZE, 3))
    x = tf_keras.layers.Conv2D(FEATURES, 3, name="conv")(inputs)
    bn = tf_keras.layers.BatchNormalization(name="bn")
    x = bn(x)
    x = tf_keras.layers.ReLU()(x)
    # Dropout would make outputs random if the module ran in training mode.
    x = tf_keras.layers.Dropout(0.5)(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, x)
    bn.moving_mean.assign(np.linspace(-0.2, 0.2, FEATURES))
    bn.moving_variance.assign(np.linspace(0.5, 1.5, FEATURES))
    return _publish(model, tmp_path_factory.mktemp("hub") / "feature_vector")


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """Image classifier returning logits, as hub 'classification' modules do."""
    import tf_keras

    tf_keras.utils.set_random_seed(1)
    inputs = tf_keras.Input((SIZE, SIZE, 3))
    x = tf_keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    logits = tf_keras.layers.Dense(CLASSES, name="logits")(x)
    return _publish(tf_keras.Model(inputs, logits), tmp_path_factory.mktemp("hub") / "classifier")


def _data(n=32, seed=0):
    """Images whose label (bright or dark red channel) a feature vector + Dense head can learn."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, SIZE, SIZE, 3)).astype("float32")
    y = (np.arange(n) % 2).astype("int32")
    x[y == 1, :, :, 0] += 0.5
    return x, y


def _model(handle, trainable, seed=0):
    keras.utils.set_random_seed(seed)
    hub = HubLayer(handle, trainable=trainable, name="hub")
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(2, name="head")(hub(inputs))
    return keras.Model(inputs, outputs), hub


def _compile(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def _values(variables):
    return {v.path: np.array(v.numpy()) for v in variables}


def _publisher_output(handle, x):
    return tf.saved_model.load(str(handle))(tf.constant(x), training=False).numpy()


def test_feature_vector_inside_functional_model(feature_vector_dir):
    model, hub = _model(feature_vector_dir, trainable=False)
    assert model.output_shape == (None, 2)
    assert hub.compute_output_shape((None, SIZE, SIZE, 3)) == (None, FEATURES)
    x, _ = _data(5)
    # The layer computes what the published module computes in inference mode, at any batch size.
    np.testing.assert_allclose(hub(x).numpy(), _publisher_output(feature_vector_dir, x), atol=1e-6)
    assert model.predict(x[:3], verbose=0).shape == (3, 2)
    assert model.predict(x, verbose=0).shape == (5, 2)
    # Clean Keras names (no ':0', no '/'), in the layer's name scope; BN statistics non-trainable.
    names = [v.name for v in hub.weights]
    assert "conv_kernel" in names and "bn_moving_mean" in names
    assert all(":" not in n and "/" not in n for n in names)
    assert all(v.path == f"hub/{v.name}" for v in hub.weights)
    assert hub.trainable_weights == [] and len(hub.non_trainable_weights) == 6
    # Inference mode always: dropout in the module is off even when the model trains.
    np.testing.assert_array_equal(model(x, training=True).numpy(), model(x, training=False).numpy())
    # A layer rebuilt from its config alone (as clone_model does) loads the handle on first call.
    clone = keras.models.clone_model(model)
    assert clone.predict(x, verbose=0).shape == (5, 2)


def test_finetune_with_adam(feature_vector_dir):
    model, hub = _model(feature_vector_dir, trainable=True)
    assert len(hub.trainable_weights) == 4  # conv kernel and bias, BN gamma and beta
    before = _values(hub.weights)
    x, y = _data()
    _compile(model, keras.optimizers.Adam(0.02))
    history = model.fit(x, y, batch_size=8, epochs=6, verbose=0)
    after = _values(hub.weights)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    for v in hub.weights:
        changed = not np.allclose(before[v.path], after[v.path])
        # Trainable weights move; BatchNormalization's moving statistics never do.
        assert changed == ("moving" not in v.name), v.path
    np.testing.assert_allclose(
        after["hub/bn_moving_mean"], np.linspace(-0.2, 0.2, FEATURES), atol=1e-7
    )
    # The module's restored functions read the trained variables themselves.
    x5 = x[:5]
    assert not np.allclose(hub(x5).numpy(), _publisher_output(feature_vector_dir, x5), atol=1e-4)
    slots = [v.path for v in model.optimizer.variables if "conv_kernel" in v.path]
    assert slots and all(":" not in p for p in slots)


def test_frozen_layer_keeps_its_weights(feature_vector_dir):
    model, hub = _model(feature_vector_dir, trainable=False)
    before = _values(hub.weights)
    head_before = _values(model.get_layer("head").weights)
    x, y = _data()
    _compile(model, keras.optimizers.Adam(0.02))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for path, value in _values(hub.weights).items():
        np.testing.assert_array_equal(value, before[path])
    head_after = _values(model.get_layer("head").weights)
    assert not np.allclose(head_after["head/kernel"], head_before["head/kernel"])


def test_finetune_with_sgd_momentum(feature_vector_dir):
    model, hub = _model(feature_vector_dir, trainable=True)
    before = _values(hub.trainable_weights)
    x, y = _data()
    _compile(model, keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    after = _values(hub.trainable_weights)
    assert not np.allclose(after["hub/conv_kernel"], before["hub/conv_kernel"])
    assert any("momentum" in v.path for v in model.optimizer.variables)


def test_keras_file_round_trip_is_self_contained(feature_vector_dir, tmp_path):
    # Build from a copy of the module, and delete the copy before loading: the .keras file must
    # carry the SavedModel itself.
    handle = tmp_path / "module"
    shutil.copytree(feature_vector_dir, handle)
    model, hub = _model(handle, trainable=True)
    x, y = _data()
    _compile(model, keras.optimizers.Adam(0.02))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    shutil.rmtree(handle)

    # Keras' safe mode cannot vet the embedded graph, so the layer refuses it; the user's trust loads it.
    with pytest.raises(KerastlError, match="--trust"):
        keras.saving.load_model(path, safe_mode=True)
    loaded = keras.saving.load_model(path, safe_mode=False)
    layer = loaded.get_layer("hub")
    assert isinstance(layer, HubLayer) and layer.trainable
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    for path_, value in _values(hub.weights).items():
        np.testing.assert_array_equal(_values(layer.weights)[path_], value)
    # The optimizer is rebuilt before the module is bound on loading; training must go on.
    before = _values(layer.trainable_weights)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(
        _values(layer.trainable_weights)["hub/conv_kernel"], before["hub/conv_kernel"]
    )
    # And the loaded model saves again (its module now lives in a private copy).
    again = tmp_path / "again.keras"
    loaded.save(again)
    reloaded = keras.saving.load_model(again, safe_mode=False)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-6
    )


def test_export_saved_model_and_tflite(feature_vector_dir, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model, _ = _model(feature_vector_dir, trainable=True)
    x, y = _data()
    _compile(model, keras.optimizers.Adam(0.02))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    x4 = x[:4]
    expected = model.predict(x4, verbose=0)

    export_dir = tmp_path / "exported"
    model.export(str(export_dir), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(export_dir))
    np.testing.assert_allclose(reloaded.serve(tf.constant(x4)).numpy(), expected, atol=1e-5)

    tflite = tf.lite.TFLiteConverter.from_saved_model(str(export_dir)).convert()
    interpreter = Interpreter(model_content=tflite)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], x4.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x4)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_saved_hub_classifier_loads_in_a_fresh_process(feature_vector_dir, tmp_path):
    """`kerastl evaluate/predict/export` load the .keras file in a new process, where nothing has imported
    kerastl.backbones.hub_layer yet: the HubLayer class must still be found (it once was not)."""
    import subprocess
    import sys

    model, _ = _model(feature_vector_dir, trainable=False)
    path = tmp_path / "model.keras"
    model.save(path)
    x, _ = _data(2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))
    script = ("import sys, numpy as np; from kerastl.backbones import load_keras_file; "
              "m = load_keras_file(sys.argv[1], trust=True); "
              "np.testing.assert_allclose(m.predict(np.load(sys.argv[2]), verbose=0), np.load(sys.argv[3]), atol=1e-5)")
    result = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "x.npy"),
                             str(tmp_path / "expected.npy")], check=False, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_classifier_module_logits(classifier_dir):
    x, _ = _data(4)
    reference = _publisher_output(classifier_dir, x)
    inputs = keras.Input((SIZE, SIZE, 3))
    logits = HubLayer(classifier_dir)(inputs)
    probabilities = keras.layers.Softmax()(logits)
    model = keras.Model(inputs, probabilities)
    assert model.output_shape == (None, CLASSES)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), tf.nn.softmax(reference).numpy(), atol=1e-6
    )

    # The serving signature returns a dict; its only key is picked, or the one named.
    by_signature = HubLayer(classifier_dir, signature="serving_default")
    np.testing.assert_allclose(by_signature(x).numpy(), reference, atol=1e-6)
    named = HubLayer(classifier_dir, signature="serving_default", output_key="logits")
    np.testing.assert_allclose(named(x).numpy(), reference, atol=1e-6)
    for kwargs in (
        {"signature": "serving_default", "output_key": "nope"},
        {"output_key": "logits"},  # __call__ returns a tensor, not a dict
        {"signature": "nope"},
    ):
        with pytest.raises(KerastlError) as info:
            HubLayer(classifier_dir, **kwargs)
        assert "\n" not in str(info.value)


def test_module_without_training_argument(tmp_path):
    class Module(tf.Module):
        def __init__(self):
            self.w = tf.Variable([[1.0], [2.0]], name="dense/w")

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
        def __call__(self, x):
            return {"default": tf.matmul(x, self.w), "other": x}

    path = tmp_path / "plain"
    tf.saved_model.save(Module(), str(path))
    layer = HubLayer(path, trainable=True)
    assert [v.name for v in layer.trainable_weights] == ["dense_w"]
    inputs = keras.Input((2,))
    model = keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, 1)
    np.testing.assert_allclose(model.predict(np.array([[1.0, 1.0]]), verbose=0), [[3.0]])
    with pytest.raises(KerastlError, match="does not accept inputs"):
        layer(keras.Input((3,)))


def test_bad_handles(tmp_path):
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    (tmp_path / "empty").mkdir()
    # A TF1 (hub.Module-style) SavedModel: a MetaGraph without an object graph.
    tf1 = saved_model_pb2.SavedModel(meta_graphs=[meta_graph_pb2.MetaGraphDef()])
    (tmp_path / "tf1").mkdir()
    (tmp_path / "tf1" / "saved_model.pb").write_bytes(tf1.SerializeToString())
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "saved_model.pb").write_bytes(b"\xff not a protobuf")
    cases = {
        tmp_path / "missing": "does not exist",
        tmp_path / "empty": "no saved_model.pb",
        tmp_path / "tf1": "TF1 SavedModel",
        tmp_path / "garbage": "cannot read",
        "ftp://example.com/module": "unsupported TF-Hub handle",
        "": "invalid TF-Hub handle",
    }
    for handle, fragment in cases.items():
        with pytest.raises(KerastlError) as info:
            HubLayer(handle)
        message = str(info.value)
        assert fragment in message and "\n" not in message


class _Server:
    """A local http.server in a thread that records the paths requested."""

    def __init__(self, directory):
        self.requests = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_resolve_handle_downloads_hub_tarball(feature_vector_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KERASTL_CACHE", str(cache))
    monkeypatch.delenv("KERASTL_OFFLINE", raising=False)  # conftest sets it
    served = tmp_path / "served"
    served.mkdir()
    # TF-Hub's compressed format: the SavedModel's files at the top of a .tar.gz.
    with tarfile.open(served / "module", "w:gz") as tar:
        for item in sorted(feature_vector_dir.iterdir()):
            tar.add(item, arcname=item.name)
    shutil.copy(served / "module", served / "module.tar.gz")

    # Plain http needs the tarball's sha256 pinned in the handle (https would not).
    import hashlib

    pin = "#sha256=" + hashlib.sha256((served / "module").read_bytes()).hexdigest()
    assert resolve_handle(str(feature_vector_dir)) == str(feature_vector_dir)
    with _Server(served) as server:
        local = resolve_handle(f"{server.url}/module{pin}")
        assert server.requests == ["/module?tf-hub-format=compressed"]
        assert cache in pathlib.Path(local).parents
        # Cached: no second request.
        assert resolve_handle(f"{server.url}/module{pin}") == local
        assert len(server.requests) == 1
        tarball = resolve_handle(f"{server.url}/module.tar.gz{pin}")
        assert server.requests[-1] == "/module.tar.gz"
        layer = HubLayer(f"{server.url}/module{pin}")
    x, _ = _data(2)
    np.testing.assert_allclose(layer(x).numpy(), _publisher_output(tarball, x), atol=1e-6)
    assert layer.get_config()["handle"] == f"{server.url}/module{pin}"

    monkeypatch.setenv("KERASTL_OFFLINE", "1")
    with pytest.raises(KerastlError, match="offline"):
        resolve_handle(f"http://127.0.0.1:9/not-cached{pin}")


def test_trusted_hub_hosts(monkeypatch):
    from kerastl.backbones.hub_handles import _check_trusted_host

    monkeypatch.setenv("KERASTL_TRUSTED_HUB_HOSTS", "tfhub.dev, .kaggle.com")
    _check_trusted_host("https://tfhub.dev/google/x/1")
    _check_trusted_host("https://www.kaggle.com/models/x")
    with pytest.raises(KerastlError, match="not in KERASTL_TRUSTED_HUB_HOSTS"):
        resolve_handle("https://evil.example/module.tar.gz")
    monkeypatch.delenv("KERASTL_TRUSTED_HUB_HOSTS")
    _check_trusted_host("https://evil.example/module.tar.gz")  # no list: no restriction
