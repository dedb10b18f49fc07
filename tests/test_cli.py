"""The CLI through click's CliRunner: the contract's commands, outputs and one-line error paths."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kerastl.cli import main


def _invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def _assert_one_line_error(result, code, match):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: "), result.output
    assert match in lines[-1], lines[-1]
    assert "Traceback" not in result.output


def test_help_does_not_import_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from kerastl.cli import main; "
            "r = CliRunner().invoke(main, ['finetune', '--help']); assert r.exit_code == 0, r.output; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, image_folder, tiny_backbone_path):
    out = tmp_path_factory.mktemp("run") / "out"
    result = _invoke("finetune", "--data", image_folder, "--backbone", tiny_backbone_path, "--strategy", "full",
                     "--epochs", 2, "--batch-size", 8, "--seed", 3, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_finetune_writes_the_contract_files(finetuned, image_folder):
    out, output = finetuned
    for name in ("model.keras", "labels.txt", "metrics.json", "report.png"):
        assert (out / name).is_file(), name
    assert (out / "labels.txt").read_text().splitlines() == ["circles", "horizontal", "vertical"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "full" and metrics["config"]["seed"] == 3
    assert set(metrics["per_class"]) == {"circles", "horizontal", "vertical"}
    assert "accuracy" in output and "model.keras" in output and "precision" in output
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    # The saved model loads in plain Keras (no kerastl layer needed for its BatchNormalization).
    assert "InferenceBatchNormalization" not in (out / "model.keras").read_bytes().decode("latin-1")


def test_evaluate_json(finetuned, image_folder):
    out, _ = finetuned
    result = _invoke("evaluate", out, "--data", image_folder, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # The patterns are separable: chance is 1/3, and the fine-tuned model gets nearly all 36 (0.97 when written).
    assert report["n"] == 36 and report["accuracy"] >= 0.8, report["accuracy"]
    assert sum(row["support"] for row in report["per_class"].values()) == 36
    assert set(report["per_class"]) == {"circles", "horizontal", "vertical"}
    # A .keras file works too (labels.txt beside it).
    assert _invoke("evaluate", out / "model.keras", "--data", image_folder, "--json").exit_code == 0


def test_evaluate_refuses_unknown_classes(finetuned, tmp_path):
    from .conftest import make_image_folder

    out, _ = finetuned
    other = make_image_folder(tmp_path / "other", classes=("circles", "triangles"), per_class=2)
    _assert_one_line_error(_invoke("evaluate", out, "--data", other), 1, "triangles")


def test_predict_one_line_per_file(finetuned, image_folder):
    out, _ = finetuned
    files = sorted((image_folder / "circles").iterdir())[:3]
    result = _invoke("predict", out, *files)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3
    rows = [line.split("\t") for line in lines]
    assert [row[0] for row in rows] == [str(f) for f in files]
    assert all(label in ("circles", "horizontal", "vertical") and 1 / 3 <= float(p) <= 1 for _, label, p in rows)
    assert sum(label == "circles" for _, label, _ in rows) >= 2, rows  # the model is right on most circles


def test_predict_missing_and_bad_files(finetuned, tmp_path):
    out, _ = finetuned
    _assert_one_line_error(_invoke("predict", out, tmp_path / "nope.png"), 1, "file not found")
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    _assert_one_line_error(_invoke("predict", out, bad), 1, "cannot decode")


def test_inspect_model_and_spec(finetuned):
    out, _ = finetuned
    result = _invoke("inspect", out)
    assert result.exit_code == 0, result.output
    assert "predictions" in result.output and "backbone/conv1" in result.output and "trainable" in result.output
    result = _invoke("inspect", "keras:MobileNetV3Small", "--image-size", 32)
    assert result.exit_code == 0, result.output
    assert "preprocessing" in result.output


def test_backbones_lists_keras_apps_and_saved_models():
    result = _invoke("backbones")
    assert result.exit_code == 0, result.output
    assert "keras:MobileNetV2" in result.output and "saved_models/" in result.output
    assert "modality" in result.output


@pytest.mark.parametrize("args, code, match", [
    (["finetune"], 2, "--out"),
    (["finetune", "--strategy", "sideways", "--out", "x"], 2, "--strategy"),
    (["finetune", "--epochs", "0", "--out", "x"], 2, "--epochs"),
    (["finetune", "--distribute", "sideways", "--out", "x"], 2, "--distribute"),
    (["finetune", "--learning-rate", "-1", "--out", "x"], 2, "--learning-rate"),
    (["finetune", "--augment", "--augment-views", "0", "--out", "x"], 2, "--augment-views"),
    (["finetune", "--label-smoothing", "1", "--out", "x"], 2, "--label-smoothing"),
    (["finetune", "--layer-decay", "0", "--out", "x"], 2, "--layer-decay"),
    (["finetune", "--layer-decay", "0.8", "--strategy", "head", "--out", "x"], 2, "--layer-decay sets"),
    (["finetune", "--mixup", "-0.5", "--out", "x"], 2, "--mixup"),
    (["finetune", "--cutmix", "inf", "--out", "x"], 2, "--cutmix must be a number >= 0"),
    (["finetune", "--mixup", "0.2", "--head-solver", "probe", "--out", "x"], 2, "--mixup and --cutmix"),
    (["finetune", "--backbone", "MobileNetV2", "--out", "x"], 2, "ambiguous"),
    (["finetune", "--data", "/no/such/dir", "--backbone", "keras:MobileNetV2", "--weights", "none", "--from-scratch",
      "--out", "x"], 1, "not found"),
    (["finetune", "--backbone", "keras:MobileNetV2", "--weights", "none", "--strategy", "full", "--out", "x"],
     2, "--from-scratch"),
    (["evaluate", "/no/such/model", "--data", "."], 1, "not found"),
    (["nonsense"], 2, "No such command"),
])
def test_error_paths_are_one_line(args, code, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _assert_one_line_error(_invoke(*args), code, match)


def test_finetune_on_wav_folder_names_both_types(tmp_path, tiny_backbone_path):
    for cls in ("yes", "no"):
        (tmp_path / "audio" / cls).mkdir(parents=True)
        (tmp_path / "audio" / cls / "a.wav").write_bytes(b"RIFF....WAVE")
    result = _invoke("finetune", "--data", tmp_path / "audio", "--backbone", tiny_backbone_path, "--out",
                     tmp_path / "out")
    _assert_one_line_error(result, 1, "audio files but")
    assert "image backbone" in result.output
    assert not (tmp_path / "out").exists()


def test_a_file_as_out_is_refused_and_left_alone(tmp_path, image_folder, tiny_backbone_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    result = _invoke("finetune", "--data", image_folder, "--backbone", tiny_backbone_path, "--strategy", "head",
                     "--epochs", 1, "--out", target)
    _assert_one_line_error(result, 1, "is a file")
    assert target.read_text() == "keep me"
