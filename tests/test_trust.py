"""Trust is decided on the parsed config.json of a .keras file, and fails closed (SECURITY.md).

Most files here are crafted: a tiny Dense model's .keras archive with its config.json rewritten, since the check
runs before Keras reads anything. The hub tests use a real (tiny) SavedModel.
"""

import json
import shutil
import zipfile

import pytest

from kerastl.errors import KerastlError

from .conftest import one_line_error


@pytest.fixture(scope="module")
def dense_keras(tmp_path_factory):
    import keras

    path = tmp_path_factory.mktemp("dense") / "dense.keras"
    x = keras.Input((4,))
    keras.Model(x, keras.layers.Dense(2, name="out")(x)).save(path)
    return path


def _rewrite(source, target, edit):
    """Copies the .keras archive `source` to `target`, with config.json replaced by `edit(config_text)`."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "config.json":
                data = edit(data.decode()).encode()
            zout.writestr(info, data)
    return target


def _with_layer(config_text, layer):
    """Inserts `layer` (a layer config dict) into the functional model's layer list, unconnected."""
    config = json.loads(config_text)
    config["config"]["layers"].append(layer)
    return json.dumps(config)


def _hub_layer_config(class_name="HubLayer", registered_name="kerastl>HubLayer", handle="/nonexistent"):
    return {"module": "kerastl.backbones.hub_layer", "class_name": class_name, "registered_name": registered_name,
            "config": {"name": "hub", "handle": handle}, "name": "hub", "inbound_nodes": []}


@pytest.mark.parametrize("class_name, registered_name", [
    ("HubLayer", "kerastl>HubLayer"),
    ("Hub\\u004cayer", "kerastl>Hub\\u004cayer"),  # JSON escapes: what Keras' json.loads turns into HubLayer
    ("Other", "kerastl>Hub\\u004cayer"),  # Keras resolves a registered class by registered_name alone
    ("Hub\\u004cayer", None),
    ("hublayer", "kerastl>hublayer"),
])
def test_every_spelling_of_a_hub_layer_is_refused(tmp_path, dense_keras, class_name, registered_name):
    from kerastl.backbones import load_keras_file

    def edit(text):
        layer = json.dumps(_hub_layer_config("CLASS", "REGISTERED"))
        layer = layer.replace('"CLASS"', f'"{class_name}"')
        layer = layer.replace('"REGISTERED"', "null" if registered_name is None else f'"{registered_name}"')
        config = json.loads(text)
        config["config"]["layers"].append("PLACEHOLDER")
        # Raw text, so the escapes reach the file exactly as written.
        return json.dumps(config).replace('"PLACEHOLDER"', layer)

    path = _rewrite(dense_keras, tmp_path / "escaped.keras", edit)
    assert "\\u004c" in zipfile.ZipFile(path).read("config.json").decode() or "\\" not in class_name
    with pytest.raises(KerastlError, match="--trust") as error:
        load_keras_file(path)
    assert "\n" not in str(error.value)


def test_inspect_refuses_the_escaped_spelling_in_one_line(tmp_path, hub_keras):
    """The issue's reproduction: a real hub-holding file, "HubLayer" rewritten as "Hub\\u004cayer"."""
    from click.testing import CliRunner

    from kerastl.cli import main

    path = _rewrite(hub_keras, tmp_path / "escaped.keras", lambda text: text.replace("HubLayer", "Hub\\u004cayer"))
    result = CliRunner().invoke(main, ["inspect", str(path)])
    one_line_error(result, 1, "HubLayer", "--trust")


@pytest.mark.parametrize("layer", [
    # Keras' own SavedModel layer, named through its module.
    {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"filepath": "/x"}, "registered_name": None},
    # A hub module wrapped by audio's PerWaveform.
    {"module": "kerastl.inputs.audio", "class_name": "PerWaveform", "registered_name": "kerastl>PerWaveform",
     "config": {"name": "per_waveform", "module": _hub_layer_config()}},
    # A hub layer inside a Sequential inside the functional model.
    {"module": "keras", "class_name": "Sequential", "registered_name": None,
     "config": {"name": "inner", "layers": [_hub_layer_config()]}},
    {"module": "keras.layers", "class_name": "TorchModuleWrapper", "config": {}, "registered_name": None},
    {"module": "keras.layers", "class_name": "JaxLayer", "config": {}, "registered_name": None},
])
def test_graph_running_layers_are_refused_at_any_depth(tmp_path, dense_keras, layer):
    from kerastl.backbones import load_keras_file

    path = _rewrite(dense_keras, tmp_path / "nested.keras", lambda text: _with_layer(text, layer))
    with pytest.raises(KerastlError, match="--trust"):
        load_keras_file(path)


def test_a_duplicated_key_is_checked_in_every_copy(tmp_path, dense_keras):
    """JSON keeps the last of duplicated keys; the check must not look at the other one only."""
    from kerastl.backbones import load_keras_file

    hub = json.dumps(_hub_layer_config())
    decoy = json.dumps({"class_name": "Dense", "config": {}})

    def edit(text):
        config = json.loads(text)
        config["config"]["layers"].append("PLACEHOLDER")
        return json.dumps(config).replace('"PLACEHOLDER"', hub[:-1] + ', "config": ' + decoy + "}")

    path = _rewrite(dense_keras, tmp_path / "dup.keras", edit)
    with pytest.raises(KerastlError, match="HubLayer"):
        load_keras_file(path)


def test_a_plain_model_still_loads_in_safe_mode(dense_keras):
    from kerastl.backbones import load_keras_file

    assert load_keras_file(dense_keras).output.shape[-1] == 2


@pytest.mark.parametrize("make, needle", [
    (lambda path, src: path.write_bytes(b"not a zip at all"), "not a readable"),
    (lambda path, src: zipfile.ZipFile(path, "w").writestr("metadata.json", "{}"), "no config.json"),
    (lambda path, src: _rewrite(src, path, lambda text: text[: len(text) // 2]), "not a readable"),
    (lambda path, src: _rewrite(src, path, lambda text: "\udcff"), "not a readable"),
])
def test_an_unreadable_config_is_refused_not_waved_through(tmp_path, dense_keras, make, needle):
    from kerastl.backbones import load_keras_file

    path = tmp_path / "bad.keras"
    try:
        make(path, dense_keras)
    except UnicodeEncodeError:  # the lone surrogate: write invalid UTF-8 bytes directly instead
        with zipfile.ZipFile(dense_keras) as zin, zipfile.ZipFile(path, "w") as zout:
            for info in zin.infolist():
                zout.writestr(info, b"\xff\xfe" if info.filename == "config.json" else zin.read(info))
    with pytest.raises(KerastlError, match=needle) as error:
        load_keras_file(path)
    assert "\n" not in str(error.value)


def test_two_config_entries_are_refused(tmp_path, dense_keras):
    from kerastl.backbones import load_keras_file

    path = tmp_path / "two.keras"
    shutil.copy(dense_keras, path)
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as archive:  # zipfile warns about the duplicate
        archive.writestr("config.json", json.dumps({"class_name": "Dense"}))
    with pytest.raises(KerastlError, match="several config.json"):
        load_keras_file(path)


# ------------------------------------------------------------------------------------------------------------
# Defence in depth inside kerastl.backbones.hub_layer: a HubLayer never deserialises, binds or resolves in Keras' safe mode.


@pytest.fixture(scope="module")
def hub_module(tmp_path_factory):
    import tensorflow as tf
    import tf_keras

    inputs = tf_keras.Input((8, 8, 3))
    path = tmp_path_factory.mktemp("hub") / "module"
    tf.saved_model.save(tf_keras.Model(inputs, tf_keras.layers.GlobalAveragePooling2D()(inputs)), str(path))
    return path


@pytest.fixture(scope="module")
def hub_keras(hub_module, tmp_path_factory):
    import keras

    from kerastl.backbones.hub_layer import HubLayer

    path = tmp_path_factory.mktemp("hubfile") / "hub.keras"
    x = keras.Input((8, 8, 3))
    keras.Model(x, HubLayer(str(hub_module), name="hub")(x)).save(path)
    return path


def test_keras_safe_mode_load_of_a_hub_layer_is_refused_by_the_layer_itself(hub_keras):
    """Even called directly (not through load_keras_file), Keras' safe-mode load never binds the graph."""
    import keras

    with pytest.raises(Exception, match="safe mode.*--trust") as error:
        keras.saving.load_model(hub_keras)  # safe_mode=True is Keras' default
    assert "HubLayer" in str(error.value)
    # With the user's trust the same file loads.
    from kerastl.backbones import load_keras_file

    assert load_keras_file(hub_keras, trust=True).output.shape[-1] == 3


def test_a_hub_handle_is_never_resolved_in_safe_mode(tmp_path, hub_keras, monkeypatch):
    """A config naming a download handle (and no embedded copy) must not reach the network in safe mode."""
    import keras

    import kerastl.backbones.hub_layer

    calls = []
    monkeypatch.setattr(kerastl.backbones.hub_layer, "resolve_handle", lambda handle: calls.append(handle) or str(handle))

    def edit(text):
        config = json.loads(text)
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "HubLayer":
                layer["config"]["handle"] = "https://127.0.0.1:9/module#sha256=" + "0" * 64
                layer["config"].pop("module_state")  # a hand-written config: loads from the handle at once
        return json.dumps(config)

    path = _rewrite(hub_keras, tmp_path / "remote.keras", edit)
    with pytest.raises(Exception, match="safe mode"):
        keras.saving.load_model(path, safe_mode=True)
    assert calls == []


def test_clone_of_an_in_memory_hub_model_still_works(hub_module):
    """Rebuilding from an in-memory model is not a load: fine-tuning's clones must keep working."""
    import keras
    import numpy as np

    from kerastl.backbones.hub_layer import HubLayer

    x = keras.Input((8, 8, 3))
    model = keras.Model(x, HubLayer(str(hub_module))(x))
    clone = keras.models.clone_model(model)
    assert clone.predict(np.ones((1, 8, 8, 3), "float32"), verbose=0).shape == (1, 3)
