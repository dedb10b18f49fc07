"""kerastl.export and `kerastl export`: SavedModel and TFLite round trips, MediaPipe, the accuracy gate,
atomic writes and the CLI's error paths.

Two tiny classifiers (16x16, RGB and grayscale) are fine-tuned once per module on the shared three-class
image folder. Their 6 held-out images are few, so agreement is asserted exactly only where the numbers are
exact (float32) and with tolerances elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from click.testing import CliRunner

from kerastl import export as export_module
from kerastl.cli import main
from kerastl.data import drop_undecodable, load_images, scan_folder, split
from kerastl.errors import KerastlError, UsageError
from kerastl.export import ExportRejected, export, output_paths
from kerastl.export import metadata as tflite_metadata
from kerastl.export import tflite as tflite_module
from kerastl.train.evaluate import load_classifier

from .conftest import make_image_folder, make_tiny_backbone

LABELS = ["circles", "horizontal", "vertical"]
# Per quantization: tolerance on probabilities against Keras.
# int8: one uint8 output step is 0.004, but the head's standardised features give large logits, so a borderline
# image can move by several steps (measured up to 0.066 on the tiny test model).
ATOL = {"none": 1e-5, "float16": 5e-3, "dynamic": 5e-2, "int8": 0.08, "int8-per-tensor": 0.08}


def _finetune(image_folder, backbone_path, out):
    from kerastl.train.finetune import FinetuneConfig, finetune

    # Head-only training on cached features is cheap; enough epochs that the model is right on its
    # held-out images, so accuracy comparisons mean something.
    config = FinetuneConfig(strategy="head", epochs=30, learning_rate=0.03, batch_size=8)
    result = finetune(image_folder, str(backbone_path), out=out, config=config, verbose=0)
    assert result.metrics["accuracy"] >= 0.8, result.metrics["accuracy"]
    return out


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, image_folder, tiny_backbone_path):
    return _finetune(image_folder, tiny_backbone_path, tmp_path_factory.mktemp("rgb") / "run")


@pytest.fixture(scope="module")
def gray_classifier(tmp_path_factory, image_folder):
    path = tmp_path_factory.mktemp("gray") / "tiny-gray.keras"
    make_tiny_backbone((16, 16, 1)).save(path)
    return _finetune(image_folder, path, path.parent / "run")


@pytest.fixture(scope="module")
def held_out(image_folder):
    """The validation files (seed 0) with their labels, and their RGB pixels as kerastl decodes them."""
    parts = split(drop_undecodable(scan_folder(image_folder)))
    rgb = load_images(parts.val_files, image_size=(16, 16), channels=3)
    return parts.val_files, np.asarray(parts.val_labels), rgb


def keras_probabilities(run_dir, rgb):
    model, _ = load_classifier(run_dir)
    pixels = rgb if model.input.shape[-1] == 3 else export_module.to_grayscale(rgb)
    return model.predict(pixels, verbose=0)


def litert_probabilities(path, rgb):
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for image in rgb:
        if inp["dtype"] == np.uint8:
            image = np.clip(np.round(image), 0, 255)
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interpreter.invoke()
        scores = interpreter.get_tensor(out["index"])[0].astype("float32")
        if out["dtype"] == np.uint8:
            scale, zero_point = out["quantization"]
            scores = scale * (scores - zero_point)
        rows.append(scores)
    return np.stack(rows), inp


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, code, *words):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: "), result.output
    for word in words:
        assert word in lines[-1], lines[-1]
    assert "Traceback" not in result.output


def leftovers(directory):
    """Hidden names in `directory`: the temporary ones atomic writes use (".NAME.kerastl-new...", ".NAME.kerastl-old",
    ".NAME.kerastl-commit") must not outlive an export."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------------------
# SavedModel


def test_saved_model_round_trip(classifier, image_folder, held_out, tmp_path):
    _, y_true, rgb = held_out
    report = export(classifier, format="saved_model", data=image_folder, out=tmp_path / "sm")
    expected = keras_probabilities(classifier, rgb)

    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert set(loaded.signatures) >= {"serving_default", "serving_float"}
    serving = loaded.signatures["serving_default"]
    assert serving.structured_input_signature[1]["images"].dtype == tf.uint8
    assert set(serving.structured_outputs) == {"probabilities", "class_index", "class_name"}
    # Two batch sizes through each signature: uint8 and float pixels give Keras' probabilities.
    pixels = np.clip(np.round(rgb), 0, 255)
    expected_rounded = keras_probabilities(classifier, pixels)
    for n in (1, len(rgb)):
        result = serving(images=tf.constant(pixels[:n].astype(np.uint8)))
        np.testing.assert_allclose(result["probabilities"].numpy(), expected_rounded[:n], atol=1e-5)
        result = loaded.signatures["serving_float"](images=tf.constant(rgb[:n]))
        np.testing.assert_allclose(result["probabilities"].numpy(), expected[:n], atol=1e-5)
        index = result["class_index"].numpy()
        np.testing.assert_array_equal(index, expected[:n].argmax(-1))
        assert [name.decode() for name in result["class_name"].numpy()] == [LABELS[i] for i in index]
    # The labels travel with the model as an asset.
    assert (tmp_path / "sm" / "assets" / "labels.txt").read_text().splitlines() == LABELS

    figures = report["exports"]["saved_model"]
    assert figures["top1_agreement"] == 1.0 and figures["max_abs_diff"] < 1e-5
    assert figures["accuracy"] == report["keras"]["accuracy"] == pytest.approx((expected.argmax(-1) == y_true).mean())
    assert json.loads((tmp_path / "sm.report.json").read_text()) == json.loads(json.dumps(report))


def test_saved_model_of_grayscale_model_keeps_one_channel(gray_classifier, held_out, tmp_path):
    _, _, rgb = held_out
    export(gray_classifier, format="saved_model", out=tmp_path / "sm")
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_float"]
    gray = export_module.to_grayscale(rgb)
    np.testing.assert_allclose(serve(images=tf.constant(gray))["probabilities"].numpy(),
                               keras_probabilities(gray_classifier, rgb), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# TFLite


@pytest.mark.parametrize("quantize", ["none", "float16", "dynamic", "int8", "int8-per-tensor"])
def test_tflite_round_trip(classifier, image_folder, held_out, tmp_path, quantize):
    _, y_true, rgb = held_out
    target = tmp_path / f"model_{quantize}.tflite"
    report = export(classifier, format="tflite", quantize=quantize, data=image_folder, out=target)
    expected = keras_probabilities(classifier, rgb)

    probabilities, inp = litert_probabilities(target, rgb)
    np.testing.assert_allclose(probabilities, expected, atol=ATOL[quantize])
    assert list(inp["shape"]) == [1, 16, 16, 3]
    if quantize.startswith("int8"):
        assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)  # raw pixel bytes
    else:
        assert inp["dtype"] == np.float32

    metadata = tflite_metadata.read_metadata(target.read_bytes())
    assert metadata["inputs"][0]["color_space"] == "RGB"
    expected_norm = None if quantize.startswith("int8") else {"mean": [0.0], "std": [1.0]}
    assert metadata["inputs"][0]["normalization"] == expected_norm
    assert tflite_metadata.read_associated_files(target.read_bytes()) == {"labels.txt": b"".join(
        label.encode() + b"\n" for label in LABELS)}

    figures = report["exports"]["tflite"]
    assert figures["quantize"] == quantize and figures["n"] == len(rgb)
    assert figures["bytes"] == target.stat().st_size
    assert figures["max_abs_diff"] == pytest.approx(np.abs(probabilities - expected).max(), abs=1e-6)
    assert figures["top1_agreement"] == (probabilities.argmax(-1) == expected.argmax(-1)).mean()
    assert figures["accuracy"] == pytest.approx((probabilities.argmax(-1) == y_true).mean())
    assert figures["median_latency_ms"] > 0
    assert (tmp_path / f"model_{quantize}.report.json").is_file()
    assert leftovers(tmp_path) == []


def test_quantized_files_are_smaller(classifier, image_folder, tmp_path):
    sizes = {q: export(classifier, quantize=q, data=image_folder, out=tmp_path / f"{q}.tflite")
             ["exports"]["tflite"]["bytes"] for q in ("none", "int8", "int8-per-tensor")}
    assert sizes["int8"] < 0.7 * sizes["none"]  # the tiny model's metadata and graph dilute the 4x
    # One scale and zero point per weight tensor instead of one per output channel.
    assert sizes["int8-per-tensor"] < sizes["int8"]
    assert _weight_scales(tmp_path / "int8-per-tensor.tflite") == {1}
    assert max(_weight_scales(tmp_path / "int8.tflite")) > 1


def _weight_scales(path) -> set:
    """The numbers of scales the int8 tensors have (activations always have one; weights one per channel
    unless quantized per tensor)."""
    from ai_edge_litert.interpreter import Interpreter

    return {len(t["quantization_parameters"]["scales"]) for t in Interpreter(str(path)).get_tensor_details()
            if t["dtype"] == np.int8}


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_grayscale_model_tflite_takes_rgb(gray_classifier, image_folder, held_out, tmp_path, quantize):
    _, _, rgb = held_out
    target = tmp_path / "gray.tflite"
    report = export(gray_classifier, quantize=quantize, data=image_folder, out=target)
    probabilities, inp = litert_probabilities(target, rgb)
    assert list(inp["shape"]) == [1, 16, 16, 3]
    np.testing.assert_allclose(probabilities, keras_probabilities(gray_classifier, rgb), atol=ATOL[quantize])
    assert tflite_metadata.read_metadata(target.read_bytes())["inputs"][0]["color_space"] == "RGB"
    assert report["exports"]["tflite"]["rgb_input_for_grayscale_model"] is True


def test_without_data_checks_synthetic_images(classifier, tmp_path):
    report = export(classifier, format="all", out=tmp_path / "deploy")
    assert report["verified_on"]["source"] == "synthetic"
    assert report["keras"]["accuracy"] is None
    for figures in report["exports"].values():
        assert figures["accuracy"] is None and figures["top1_agreement"] == 1.0
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == ["export_report.json", "model.tflite",
                                                                     "saved_model"]


def test_loaded_model_with_labels(classifier, tmp_path):
    model, _ = load_classifier(classifier)
    export(model, labels=["a", "b", "c"], out=tmp_path / "m.tflite")
    assert tflite_metadata.read_associated_files((tmp_path / "m.tflite").read_bytes()) == {"labels.txt": b"a\nb\nc\n"}
    with pytest.raises(KerastlError, match="2 labels"):
        export(model, labels=["a", "b"], out=tmp_path / "m.tflite")


# ---------------------------------------------------------------------------------------------------------
# MediaPipe Tasks


@pytest.mark.parametrize(("which", "quantize"), [("rgb", "none"), ("rgb", "int8"), ("rgb", "int8-per-tensor"),
                                                 ("gray", "none"), ("gray", "int8")])
def test_mediapipe_image_classifier_agrees_with_keras(request, image_folder, held_out, tmp_path, which,
                                                      quantize):
    from mediapipe import Image as MpImage
    from mediapipe.tasks.python import BaseOptions, vision

    run_dir = request.getfixturevalue("classifier" if which == "rgb" else "gray_classifier")
    files, _, rgb = held_out
    target = tmp_path / "model.tflite"
    export(run_dir, quantize=quantize, data=image_folder, out=target)
    expected = keras_probabilities(run_dir, rgb)

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(target)))
    assert any(Path(f).suffix == ".png" for f in files)  # the score comparison below is not vacuous
    with vision.ImageClassifier.create_from_options(options) as mediapipe_classifier:
        for path, keras_scores in zip(files, expected):
            result = mediapipe_classifier.classify(MpImage.create_from_file(str(path)))
            categories = result.classifications[0].categories
            scores = {c.category_name: c.score for c in categories}
            assert sorted(scores) == LABELS  # our class names, from the packed labels.txt
            assert max(scores, key=scores.get) == LABELS[int(keras_scores.argmax())], path
            if Path(path).suffix == ".png":  # lossless: MediaPipe and TensorFlow decode the same pixels (not so JPEG)
                np.testing.assert_allclose([scores[label] for label in LABELS], keras_scores,
                                           atol=ATOL[quantize] + 0.02)


# ---------------------------------------------------------------------------------------------------------
# The accuracy gate and atomic writes


@pytest.fixture
def broken_conversion(monkeypatch):
    """Makes the exported TFLite model a worse classifier than Keras': the class scores are rotated by one,
    as a faulty conversion might, so that verification measures a real accuracy drop."""
    real = export_module.rgb_input_model

    def rotated(model):
        model = real(model)
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        kernel, bias = clone.layers[-1].get_weights()
        clone.layers[-1].set_weights([np.roll(kernel, 1, axis=-1), np.roll(bias, 1)])
        return clone

    monkeypatch.setattr(tflite_module, "rgb_input_model", rotated)  # lite_model calls it


def test_gate_passes_a_faithful_export(classifier, image_folder, tmp_path):
    report = export(classifier, data=image_folder, max_accuracy_drop=0.0, out=tmp_path / "m.tflite")
    assert report["passed"] is True and report["exports"]["tflite"]["accuracy_drop"] == 0.0


def test_gate_rejects_and_keeps_the_previous_export(classifier, image_folder, tmp_path, broken_conversion):
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"previous")
    with pytest.raises(ExportRejected) as excinfo:
        export(classifier, format="all", data=image_folder, max_accuracy_drop=0.05, out=out)
    message = str(excinfo.value)
    assert "\n" not in message and "tflite none accuracy" in message and "nothing was written" in message
    assert excinfo.value.report["passed"] is False
    assert excinfo.value.report["exports"]["tflite"]["accuracy_drop"] > 0.05
    assert excinfo.value.report["exports"]["saved_model"]["accuracy_drop"] == 0.0  # the SavedModel was fine
    # Nothing was kept: not the good SavedModel either, and no report.
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite"]
    assert (out / "model.tflite").read_bytes() == b"previous"


def test_gate_through_the_cli(classifier, image_folder, tmp_path, broken_conversion):
    target = tmp_path / "m.tflite"
    result = invoke("export", classifier, "--format", "tflite", "--data", image_folder,
                    "--max-accuracy-drop", "0.1", "--out", target)
    assert_one_line_error(result, 1, "--max-accuracy-drop 0.1", "nothing was written")
    assert "top-1 = Keras" in result.output  # the figures are printed before the error
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def previous_export(classifier, tmp_path_factory):
    out = tmp_path_factory.mktemp("previous") / "deploy"
    export(classifier, format="all", out=out)
    return out


@pytest.mark.parametrize("where", ["conversion", "swap", "fallback-rename"])
@pytest.mark.parametrize("failure", [RuntimeError("converter exploded"), KeyboardInterrupt()])
def test_failure_mid_export_leaves_previous_files_untouched(classifier, previous_export, tmp_path, monkeypatch,
                                                            failure, where):
    """A failure while converting, at the one directory swap that commits the set, or (where the swap is not
    supported) at the rename that moves the old set aside, leaves exactly the previous set. Every other commit
    step, for every form, is covered by tests/test_commit_sets.py."""
    from kerastl.core import atomic

    out = tmp_path / "deploy"
    shutil.copytree(previous_export, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise failure

    if where == "conversion":
        # The metadata step comes after the SavedModel is written and the TFLite file converted.
        monkeypatch.setattr(tflite_metadata, "add_image_classifier_metadata", fail)
    elif where == "swap":
        monkeypatch.setattr(atomic, "exchange", fail)
    else:
        real_replace = os.replace

        def replace(src, dst):
            if Path(dst).name.endswith(atomic.OLD):
                raise failure
            return real_replace(src, dst)

        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(type(failure)):
        export(classifier, format="all", out=out)
    monkeypatch.undo()
    atomic.recover_around(out)  # what the next kerastl command does first: the journal rolls forward
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    if where == "fallback-rename":
        # The set was committed (the journal written) before the failure: the new set, complete.
        assert sorted(after) == sorted(before)
        assert json.loads((out / "export_report.json").read_text())["passed"] is True
    else:
        assert after == before
    assert leftovers(out) == []


def test_failure_leaves_no_file_when_there_was_none(classifier, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tflite_metadata, "add_image_classifier_metadata", fail)
    with pytest.raises(RuntimeError):
        export(classifier, out=tmp_path / "m.tflite")
    # Nor directories that the export would have created.
    with pytest.raises(RuntimeError):
        export(classifier, format="all", out=tmp_path / "new" / "deploy")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# Options and the CLI


def test_cli_export_prints_the_report(classifier, image_folder, tmp_path):
    result = invoke("export", classifier, "--format", "all", "--quantize", "dynamic", "--data", image_folder,
                    "--out", tmp_path / "deploy")
    assert result.exit_code == 0, result.output
    assert "held-out images" in result.output and "tflite dynamic" in result.output
    assert "saved_model" in result.output and "export_report.json" in result.output
    report = json.loads((tmp_path / "deploy" / "export_report.json").read_text())
    assert report["quantize"] == "dynamic" and set(report["exports"]) == {"saved_model", "tflite"}


def test_cli_export_of_a_keras_file(classifier, tmp_path):
    result = invoke("export", classifier / "model.keras", "--format", "tflite", "--out", tmp_path / "m.tflite")
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.output
    # labels.txt beside the .keras file is found.
    assert b"circles" in tflite_metadata.read_associated_files((tmp_path / "m.tflite").read_bytes())["labels.txt"]


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--format", "tflite", "--quantize", "int8"], 2, ["--quantize int8 needs --data"]),
    (["--format", "onnx"], 2, ["--format", "onnx"]),
    (["--format", "tflite", "--quantize", "int4"], 2, ["--quantize", "int4"]),
    (["--format", "saved_model", "--quantize", "float16"], 2, ["applies to TFLite"]),
    (["--format", "tflite", "--max-accuracy-drop", "0.01"], 2, ["--max-accuracy-drop needs --data"]),
    (["--format", "tflite", "--max-accuracy-drop", "5", "--data", "."], 2, ["--max-accuracy-drop"]),
])
def test_cli_usage_errors(classifier, tmp_path, args, code, words):
    result = invoke("export", classifier, *args, "--out", tmp_path / "m.tflite")
    assert_one_line_error(result, code, *words)
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_format_or_out(classifier, tmp_path):
    assert_one_line_error(invoke("export", classifier, "--out", tmp_path / "m.tflite"), 2, "--format")
    assert_one_line_error(invoke("export", classifier, "--format", "tflite"), 2, "--out")


def test_cli_missing_model(tmp_path):
    result = invoke("export", tmp_path / "nothing-here", "--format", "tflite", "--out", tmp_path / "m.tflite")
    assert_one_line_error(result, 1, "not found", "nothing-here")


def test_cli_bad_out_paths(classifier, tmp_path):
    assert_one_line_error(invoke("export", classifier, "--format", "tflite", "--out", tmp_path / "m.bin"), 2,
                          ".tflite")
    # A directory that is not a SavedModel is never replaced: here, the finetune output itself.
    before = sorted(p.name for p in classifier.iterdir())
    assert_one_line_error(invoke("export", classifier, "--format", "saved_model", "--out", classifier), 1,
                          "not a SavedModel")
    assert sorted(p.name for p in classifier.iterdir()) == before


def test_cli_data_with_unknown_classes(classifier, tmp_path):
    data = make_image_folder(tmp_path / "other", classes=("circles", "triangles"), per_class=3)
    result = invoke("export", classifier, "--format", "tflite", "--data", data, "--out", tmp_path / "m.tflite")
    assert_one_line_error(result, 1, "triangles", "remove or rename")


def test_missing_tflite_packages(classifier, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ai_edge_litert" else real(name, *a))
    result = invoke("export", classifier, "--format", "tflite", "--out", tmp_path / "m.tflite")
    assert_one_line_error(result, 1, "ai-edge-litert", 'pip install "kerastl[tflite]"')
    # A SavedModel does not need them.
    assert invoke("export", classifier, "--format", "saved_model", "--out", tmp_path / "sm").exit_code == 0


QUANTIZERS = ("litert_quantizer", "ai_edge_quantizer")  # the maintained name and the one it continues


def test_image_tflite_export_does_not_need_the_quantizer(classifier, tmp_path, monkeypatch):
    """litert-quantizer serves audio dynamic-range quantization only; without it an image model still exports,
    quantized too (a fresh `pip install kerastl[test]` once lacked it and every export test failed)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in QUANTIZERS else real(name, *a))
    for name in QUANTIZERS:  # an import of either would now fail
        monkeypatch.setitem(sys.modules, name, None)
    result = invoke("export", classifier, "--format", "tflite", "--quantize", "dynamic", "--out",
                    tmp_path / "m.tflite")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.tflite").stat().st_size > 0


def test_output_paths():
    assert output_paths("a/m.tflite", "tflite") == {"tflite": Path("a/m.tflite"), "report": Path("a/m.report.json")}
    paths = output_paths("deploy", "all")
    assert [str(p) for p in paths.values()] == ["deploy/saved_model", "deploy/model.tflite",
                                                 "deploy/export_report.json"]
    assert str(output_paths("sm", "saved_model")["report"]) == "sm.report.json"
    with pytest.raises(UsageError):
        output_paths("m.keras", "tflite")


def test_export_help_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from kerastl.cli import main; "
            "r = CliRunner().invoke(main, ['export', '--help']); assert r.exit_code == 0, r.output; "
            "assert 'max-accuracy-drop' in r.output; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
