"""SavedModel export (servers), as keras/src/export/saved_model.py: `serving_inputs`, `write_saved_model`
and the atomic `export_saved_model`.

TF Serving's `serving_default` signature returns `probabilities` (batch, classes), `class_index` (int64)
and `class_name` (string); the class names travel as the asset `assets/labels.txt` (read into a lookup
table when the model loads). Its input: images, `images` uint8 (batch, H, W, C) (`serving_float`: the same
for float32 pixels in [0, 255]); audio, `waveforms` float32 (batch, samples) in [-1, 1] at the model's
sample rate; text, `texts` tf.string (batch,).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kerastl.export.inputs import model_input
from kerastl.export.paths import output_paths

LABELS_ASSET = "labels.txt"


def serving_inputs(model) -> list:
    """The SavedModel's signatures as `[(name, tf.TensorSpec)]`, the one `verify_saved_model` calls last
    (`Modality.serving_signatures`): for images `serving_default` (uint8) and `serving_float` (float32 pixels
    0-255); for audio and text one `serving_default` taking waveforms or strings."""
    from kerastl.core.modality import get

    return get(model_input(model).modality).serving_signatures(model)


def write_saved_model(model, labels: list[str], path) -> None:
    """Writes the SavedModel described in the module docstring to `path` (not atomically; see
    `export_saved_model`)."""
    import keras
    import tensorflow as tf

    endpoints = serving_inputs(model)
    with tempfile.TemporaryDirectory() as tmp:
        # The asset keeps its file name inside the SavedModel: assets/labels.txt.
        labels_file = Path(tmp) / LABELS_ASSET
        labels_file.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(str(labels_file), tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                                          tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
            default_value="")
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.track(table)  # tables are resources Keras cannot discover through the endpoint functions

        def outputs(inputs):
            if inputs.dtype.is_integer:
                inputs = tf.cast(inputs, tf.float32)
            probabilities = model(inputs, training=False)
            index = tf.argmax(probabilities, axis=-1)
            return {"probabilities": probabilities, "class_index": index, "class_name": table.lookup(index)}

        for name, signature in endpoints:
            archive.add_endpoint(name, outputs, input_signature=[signature])
        archive.write_out(str(path), verbose=False)


def export_saved_model(model, out, *, labels: list[str]) -> Path:
    """Writes `model` as a SavedModel directory at `out`, atomically (a previous one is replaced only once the
    new one is complete). Returns `out` as a Path.

    Raises:
        KerastlError: the model is not a classifier of fixed-size images, waveforms or strings, or `out` is not
            replaceable (see `output_paths`).
    """
    from kerastl.core.atomic import atomic_path, recover_around

    recover_around(out)
    out = output_paths(out, "saved_model")["saved_model"]
    with atomic_path(out, directory=True) as tmp:
        write_saved_model(model, labels, tmp)
    return out
