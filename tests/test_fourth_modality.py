"""A fourth modality is one module: fixed-length sensor series stored as `.npy` files (steps x channels), defined
and registered here, runs through finetune -> evaluate -> predict -> export (SavedModel and TFLite) with no edit
anywhere in kerastl. Everything the three built-in modalities differ in is asked of `kerastl.core.modality`."""

import numpy as np
import pytest

STEPS, CHANNELS = 32, 3
CLASSES = ("rest", "walk", "run")


def _series(label: int, rng) -> np.ndarray:
    """An accelerometer-like series: a sine whose frequency is the class, in noise."""
    t = np.arange(STEPS) / STEPS
    frequency = (1.0, 3.0, 6.0)[label]
    phase = rng.uniform(0, 2 * np.pi, CHANNELS)
    wave = np.sin(2 * np.pi * frequency * t[:, None] + phase[None, :])
    return (wave + rng.normal(0, 0.2, (STEPS, CHANNELS))).astype("float32")


def _make_modality():
    """The module a user would write: a marker layer baked into models, and the `Modality`."""
    import keras

    from kerastl.core.modality import Modality
    from kerastl.core.records import InputSpec

    @keras.saving.register_keras_serializable(package="sensor_series_test")
    class SeriesInput(keras.layers.Layer):
        """Identity marker: the model takes sensor series (the registry reads it, not the shape)."""

        def call(self, inputs):
            return inputs

    class Series(Modality):
        name = "series"
        extensions = (".npy",)
        noun = "series"
        plural = "series"
        input_form = "sensor series of shape (steps, channels)"

        def decode_error(self, path):
            try:
                value = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as error:
                return f"not a .npy array ({error})"[:200]
            if value.ndim != 2 or not np.issubdtype(value.dtype, np.number):
                return f"a series is a numeric (steps, channels) array, not {value.dtype} {value.shape}"
            return None

        def claims(self, model):
            from kerastl.core.graph import walk_layers

            if any(isinstance(layer, SeriesInput) for layer in walk_layers(model)):
                return InputSpec(self.name, tuple(int(d) for d in model.input.shape[1:]))
            return None

        def load(self, spec, files, *, batch_size=64):
            arrays = [np.load(f, allow_pickle=False).astype("float32")[: spec.shape[0]] for f in files]
            return np.stack(arrays) if arrays else np.zeros((0, *spec.shape), "float32")

    return Series(), SeriesInput


@pytest.fixture
def series_modality():
    from kerastl.core import modality

    instance, marker = _make_modality()
    modality.register(instance)
    yield instance, marker
    modality.unregister(instance.name)


def _folder(root, per_class, seed):
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            np.save(root / name / f"{i:02d}.npy", _series(label, rng))
    return root


def _backbone(path, marker):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((STEPS, CHANNELS), name="series")
    x = marker(name="series_input")(inputs)
    x = keras.layers.Conv1D(16, 5, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.Conv1D(16, 5, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    keras.Model(inputs, x, name="series_backbone").save(path)
    return path


def test_registered_modality_runs_finetune_evaluate_predict_export(tmp_path, series_modality):
    import kerastl
    from kerastl.core.modality import get
    from kerastl.data import detect_modality

    instance, marker = series_modality
    data = _folder(tmp_path / "data", per_class=16, seed=0)
    held_out = _folder(tmp_path / "held_out", per_class=6, seed=1)
    assert detect_modality(data) == "series" and get("series") is instance
    backbone = _backbone(tmp_path / "series_backbone.keras", marker)

    config = kerastl.FinetuneConfig(strategy="full", epochs=15, batch_size=16, learning_rate=1e-2,
                                    validation_fraction=0.25)
    result = kerastl.finetune(data, str(backbone), out=tmp_path / "run", config=config, verbose=0)
    assert result.metrics["backbone"]["modality"] == "series"
    assert result.metrics["accuracy"] > 0.6, result.metrics["accuracy"]

    metrics = kerastl.evaluate(tmp_path / "run" / "model.keras", held_out)
    assert metrics["accuracy"] > 0.6, metrics

    files = sorted((held_out / "run").glob("*.npy"))
    predictions = kerastl.predict(tmp_path / "run" / "model.keras", files)
    assert [path for path, _, _ in predictions] == [str(f) for f in files]
    assert sum(label == "run" for _, label, _ in predictions) >= len(files) // 2

    from kerastl.export import export

    report = export(tmp_path / "run", format="all", data=data, out=tmp_path / "exported")
    assert report["modality"] == "series" and report["passed"]
    for name in ("saved_model", "tflite"):
        assert report["exports"][name]["top1_agreement"] >= 0.99, report["exports"][name]
    assert (tmp_path / "exported" / "model.tflite").is_file()
    assert (tmp_path / "exported" / "saved_model" / "saved_model.pb").is_file()


def test_registered_modality_refuses_what_it_does_not_offer(tmp_path, series_modality):
    from kerastl.core.modality import get
    from kerastl.errors import UsageError

    series = get("series")
    with pytest.raises(UsageError, match="--augment has no series augmentation"):
        series.augmentation()
    with pytest.raises(UsageError, match="--quantize int8 is not offered for series models"):
        series.check_quantization("int8")
    (tmp_path / "bad").write_text("not an array")
    assert "not a .npy array" in series.decode_error(tmp_path / "bad")


def test_registering_a_taken_extension_or_name_is_refused(series_modality):
    from kerastl.core import modality

    instance, _ = series_modality
    with pytest.raises(ValueError, match="already registered"):
        modality.register(instance)

    class Clash(modality.Modality):
        name = "clash"
        extensions = (".wav",)

    with pytest.raises(ValueError, match="already belong to modality 'audio'"):
        modality.register(Clash())
