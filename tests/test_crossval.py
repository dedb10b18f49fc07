"""Cross-validation and the measured `auto` (kerastl.train.crossval), through the public API and the CLI."""

import json

import pytest
from click.testing import CliRunner

from kerastl.cli import main
from kerastl.data import scan_folder, split
from kerastl.errors import UsageError
from kerastl.train import crossval
from kerastl.train.finetune import FinetuneConfig, finetune
from kerastl.train.options import HParams

# A short run: cross-validation trains every candidate k + 1 times.
QUICK = dict(epochs=3, head_epochs=2, batch_size=8, learning_rate=1e-2, folds=3)


def _all_in_training(image_folder):
    return split(scan_folder(image_folder, "image"), validation_fraction=0.0, seed=0)


def test_folds_are_stratified_and_partition_the_examples(image_folder):
    parts = _all_in_training(image_folder)
    folds = crossval.folds(parts, 3, seed=1)
    held = [f for fold in folds for f in fold.val_files]
    assert sorted(held) == sorted(parts.train_files)  # every example held out exactly once
    for fold in folds:
        assert not set(fold.val_files) & set(fold.train_files)
        assert sorted(fold.train_files + fold.val_files) == sorted(parts.train_files)
        assert [fold.val_labels.count(c) for c in range(3)] == [4, 4, 4]  # 12 per class, 3 folds
    assert crossval.folds(parts, 3, seed=1) == folds  # seeded


def test_wanted_only_when_asked_and_without_a_fixed_split():
    assert not crossval.wanted(HParams(), 10)
    assert crossval.wanted(HParams(cross_validation=True), 10)
    assert not crossval.wanted(HParams(cross_validation=True), 1)  # a class of one cannot be held out
    assert crossval.fixed_fraction(HParams()) == 0.2
    assert crossval.fixed_fraction(HParams(validation_fraction=0.3)) == 0.3


@pytest.mark.parametrize("fixed", [dict(validation_fraction=0.2), dict(shots=3)])
def test_a_fixed_split_and_cross_validation_are_refused_together(fixed):
    with pytest.raises(UsageError, match="--cross-validation uses every label"):
        HParams(cross_validation=True, **fixed).validate()


def test_auto_measures_head_top_and_full_and_refits_on_every_label(image_folder, tiny_backbone_path, tmp_path):
    config = FinetuneConfig(cross_validation=True, budget=3600.0, **QUICK)
    result = finetune(image_folder, str(tiny_backbone_path), config=config, out=tmp_path / "run", verbose=0)
    m = result.metrics
    record = m["cross_validation"]
    names = [c["candidate"] for c in record["candidates"]]
    assert names[:3] == ["head", "top:1", "full"]  # auto's candidates, then the learning-rate stage
    assert record["evaluation"] == "3-fold cross-validation"
    assert all(c["folds"] == 3 for c in record["candidates"])
    assert record["chosen"] in names and not record["skipped"]
    chosen = next(c for c in record["candidates"] if c["candidate"] == record["chosen"])
    assert m["strategy"] == record["chosen"].split(" @ ")[0]
    assert m["auto_rule"].startswith("measured by 3-fold cross-validation: head ")
    # The saved model was refit on all 36 examples; the accuracy is the pooled out-of-fold estimate.
    assert m["train_examples"] == 36 and m["n"] == 36
    assert "estimate" in m["evaluated_on"]
    assert m["accuracy"] == pytest.approx(chosen["accuracy_mean"], abs=1e-3)  # equal folds: pooled = mean
    # The refit's phases take the folds' median best epochs.
    for phase, epochs in chosen["epochs"].items():
        assert m["phases"][phase]["budget"]["epochs"] == epochs
        assert "median best epoch" in m["phases"][phase]["budget"]["rule"]
    assert m["baseline"]["folds"] == 3 and m["baseline"]["evaluated_on"] == 36
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["cross_validation"] == record


def test_the_budget_keeps_the_head_and_reports_what_it_skipped(image_folder, tiny_backbone_path):
    config = FinetuneConfig(cross_validation=True, budget=0.01, **QUICK)
    m = finetune(image_folder, str(tiny_backbone_path), config=config, verbose=0).metrics
    record = m["cross_validation"]
    assert [c["candidate"] for c in record["candidates"]] == ["head"]
    skipped = {s["candidate"]: s["reason"] for s in record["skipped"]}
    assert set(skipped) == {"top:1", "full", "head @ lr x0.333", "head @ lr x3"}
    assert "would not fit the 0.01 s budget" in skipped["full"]
    assert m["strategy"] == "head"


def test_a_strategy_asked_for_is_kept_and_cross_validation_tunes_its_rate(image_folder, tiny_backbone_path):
    config = FinetuneConfig(strategy="head", cross_validation=True, budget=3600.0, **QUICK)
    m = finetune(image_folder, str(tiny_backbone_path), config=config, verbose=0).metrics
    names = [c["candidate"] for c in m["cross_validation"]["candidates"]]
    assert names == ["head", "head @ lr x0.333", "head @ lr x3"]
    assert m["strategy"] == "head" and m["auto_rule"] is None
    assert m["learning_rate_factor"] in (1.0, 1 / 3, 3.0)


def test_cli_summary_says_the_accuracy_is_an_estimate(image_folder, tiny_backbone_path, tmp_path):
    result = CliRunner().invoke(main, [
        "finetune", "--data", str(image_folder), "--backbone", str(tiny_backbone_path), "--out", str(tmp_path / "cli"),
        "--cross-validation", "--folds", "3", "--budget", "3600", "--epochs", "2", "--head-epochs", "1",
        "--batch-size", "8", "--strategy", "head", "--head-solver", "probe"])
    assert result.exit_code == 0, result.output
    assert "after 3-fold cross-validation" in result.output
    assert "(cross-validated estimate)" in result.output
    assert "on the same folds" in result.output
    # A probe-solved head has no learning rate to tune.
    m = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert [c["candidate"] for c in m["cross_validation"]["candidates"]] == ["head"]


def test_cli_refuses_cross_validation_with_a_fixed_split(image_folder, tiny_backbone_path, tmp_path):
    result = CliRunner().invoke(main, [
        "finetune", "--data", str(image_folder), "--backbone", str(tiny_backbone_path), "--out", str(tmp_path / "x"),
        "--cross-validation", "--validation-split", "0.3"])
    assert result.exit_code != 0
    assert "--cross-validation uses every label" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_export_verification_knows_a_cross_validated_model_held_nothing_out(tmp_path):
    from kerastl.export.verify import _training_split

    (tmp_path / "metrics.json").write_text(json.dumps({"config": {"cross_validation": True, "seed": 3,
                                                                   "validation_fraction": None, "shots": None}}))
    assert _training_split(tmp_path, None) == {"seed": 3, "validation_fraction": 0.0, "shots": None}
    (tmp_path / "metrics.json").write_text(json.dumps({"config": {"cross_validation": False, "seed": 3,
                                                                   "validation_fraction": None, "shots": None}}))
    assert _training_split(tmp_path, None)["validation_fraction"] == 0.2
