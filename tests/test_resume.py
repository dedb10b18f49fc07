"""Only the same run resumes from a backup: another run into the same --out (other data, settings or backbone)
discards it, says so in one line and starts afresh, for finetune's OUT/.kerastl-backup and pretrain's
.NAME.backup alike; and a resumed pre-training records the whole run in its manifest."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kerastl.cli import main
from kerastl.train import resume as checkpointing

from .conftest import make_image_folder


class Killed(BaseException):
    """Stands for a kill after training, before the outputs are written (the backups are then complete)."""


# ---------------------------------------------------------------------------------------------------------
# The shared mechanism


def test_claim_backup_keeps_the_same_run_and_discards_another(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=2)
    files = sorted(p for p in data.rglob("*") if p.is_file())
    same = dict(options={"cut": None}, config={"epochs": 3}, data_files=files, backbone={"spec": "x"})
    fingerprint = checkpointing.run_fingerprint("finetune", **same)
    directory = tmp_path / "backup"
    assert checkpointing.claim_backup(directory, fingerprint) is None
    (directory / "latest.weights.h5").write_bytes(b"state")
    assert checkpointing.claim_backup(directory, checkpointing.run_fingerprint("finetune", **same)) is None
    assert (directory / "latest.weights.h5").read_bytes() == b"state"

    # One data file rewritten (another size): another run.
    files[0].write_bytes(files[0].read_bytes() + b"\0")
    other = checkpointing.run_fingerprint("finetune", **same)
    note = checkpointing.claim_backup(directory, other)
    assert note is not None and "\n" not in note and "the data files differ" in note and "starting afresh" in note
    assert not (directory / "latest.weights.h5").exists()
    assert checkpointing.claim_backup(directory, other) is None

    changed = dict(same, config={"epochs": 4})
    note = checkpointing.claim_backup(directory, checkpointing.run_fingerprint("finetune", **changed))
    assert "the settings differ" in note and "data" not in note
    note = checkpointing.claim_backup(directory, checkpointing.run_fingerprint("pretrain", **changed))
    assert "the command or its options differ" in note


def test_a_backup_without_a_fingerprint_is_not_resumed(tmp_path):
    directory = tmp_path / "backup"
    directory.mkdir()
    (directory / "training_metadata.json").write_text('{"epoch": 3}')  # an older kerastl's backup
    fingerprint = checkpointing.run_fingerprint("finetune", options={}, config={})
    note = checkpointing.claim_backup(directory, fingerprint)
    assert "records no run" in note
    assert checkpointing.completed_epochs(directory) == 0


# ---------------------------------------------------------------------------------------------------------
# finetune


@pytest.fixture()
def killed_before_outputs(monkeypatch):
    """Makes the next finetune stop after training, with its backups in place (as a kill would leave them)."""
    import kerastl.train.finetune

    real = kerastl.train.finetune.save_outputs

    def kill(*args, **kwargs):
        raise Killed()

    def arm():
        monkeypatch.setattr(kerastl.train.finetune, "save_outputs", kill)

    def disarm():
        monkeypatch.setattr(kerastl.train.finetune, "save_outputs", real)

    return arm, disarm


def _run(data, backbone, out, **overrides):
    from kerastl.train.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(strategy="head", epochs=2, batch_size=8, seed=0, **overrides)
    return finetune(data, str(backbone), out=out, config=config, verbose=0)


def test_finetune_resumes_only_its_own_run(tmp_path, tiny_backbone_path, killed_before_outputs):
    """The review's reproduction (A1.3): kill `--data A --out r`, run `--data B --out r` with the same class
    count. Before, B restored A's finished head and trained nothing; now it trains from epoch 1."""
    arm, disarm = killed_before_outputs
    data_a = make_image_folder(tmp_path / "a", per_class=6, seed=1)
    data_b = make_image_folder(tmp_path / "b", per_class=6, seed=2)
    out = tmp_path / "r"
    arm()
    with pytest.raises(Killed):
        _run(data_a, tiny_backbone_path, out)
    assert checkpointing.completed_epochs(checkpointing.backup_dir(out, "head")) == 2

    # The same run resumes: both epochs are done, so nothing is trained again, and nothing is said.
    disarm()
    same = _run(data_a, tiny_backbone_path, out)
    assert same.metrics["history"] == [] and same.metrics["notes"] == []

    arm()
    with pytest.raises(Killed):
        _run(data_a, tiny_backbone_path, out)
    disarm()
    other = _run(data_b, tiny_backbone_path, out)
    assert [row["epoch"] for row in other.metrics["history"]] == [1, 2]  # trained afresh on B
    [note] = other.metrics["notes"]
    assert "not resuming" in note and "the data files differ" in note and str(out) in note
    assert not (out / checkpointing.BACKUP_DIR).exists()  # removed once the outputs are in place


def test_finetune_cli_says_in_one_line_that_a_different_command_starts_afresh(tmp_path, tiny_backbone_path,
                                                                             killed_before_outputs):
    arm, disarm = killed_before_outputs
    data = make_image_folder(tmp_path / "a", per_class=6, seed=1)
    out = tmp_path / "r"
    arm()
    with pytest.raises(Killed):
        _run(data, tiny_backbone_path, out)
    disarm()
    result = CliRunner().invoke(main, ["finetune", "--data", str(data), "--backbone", str(tiny_backbone_path),
                                       "--strategy", "head", "--epochs", "2", "--batch-size", "8",
                                       "--learning-rate", "0.01", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note  ")]
    assert len(notes) == 1 and "not resuming" in notes[0] and "the settings differ" in notes[0], result.output
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]


# ---------------------------------------------------------------------------------------------------------
# pretrain


def _pretrain_config(**overrides):
    from kerastl.pretraining.run import PretrainConfig

    values = dict(source="synthetic:glyphs", arch="smallnet-s", image_size=16, classes=4, epochs=3,
                  steps_per_epoch=2, batch_size=8, validation_steps=1, precision="float32", jit_compile=False,
                  seed=0)
    values.update(overrides)
    return PretrainConfig(**values)


class _KillAtEpoch:
    """Stops `model.fit` after the given epoch's backup is written, as a kill there would."""

    def __init__(self, monkeypatch, epoch):
        import keras

        real = keras.callbacks.BackupAndRestore.on_epoch_end

        def on_epoch_end(callback, index, logs=None):
            real(callback, index, logs)
            if index + 1 == epoch:
                raise Killed()

        monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", on_epoch_end)


@pytest.mark.slow
def test_pretrain_resume_records_the_whole_run_and_only_resumes_the_same_run(tmp_path, monkeypatch):
    """A1.14 and A1.3 for pre-training: after a resume the manifest's loss curve has every epoch, and
    `examples_seen` and `train_seconds` describe the same epochs; another run discards the backup."""
    import keras

    from kerastl.pretraining.run import pretrain

    out = tmp_path / "saved_models" / "glyphs-t"
    backup = out.parent / f".{out.name}.backup"
    with monkeypatch.context() as patch:
        _KillAtEpoch(patch, 2)
        with pytest.raises(Killed):
            pretrain(_pretrain_config(), out, verbose=0)
    assert checkpointing.completed_epochs(backup) == 2
    first = checkpointing.read_progress(backup, 2)
    first_losses = first["loss"]
    assert len(first_losses) == 2

    resumed = pretrain(_pretrain_config(), out, verbose=0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert resumed.notes == []
    assert manifest["loss_history"][:2] == first_losses and len(manifest["loss_history"]) == 3
    assert manifest["pretraining"]["resumed_from_epoch"] == 2
    assert manifest["pretraining"]["examples_seen"] == 3 * 2 * 8
    assert manifest["train_seconds"] >= round(first["seconds"][-1], 1)  # the first process's epochs included
    # The utilisation is computed from the epochs this process ran, in the seconds it took.
    assert manifest["compute"]["examples_this_process"] == 1 * 2 * 8
    # From the API, the recorded command is the equivalent CLI command, not the host's sys.argv.
    assert manifest["command"].startswith("kerastl pretrain --data synthetic:glyphs --arch smallnet-s")
    assert manifest["command"].endswith(f"--out {out}")
    for flag in ("--image-size 16", "--classes 4", "--epochs 3", "--steps-per-epoch 2", "--batch-size 8",
                 "--validation-steps 1", "--precision float32", "--no-xla"):
        assert flag in manifest["command"]
    assert " -p " not in manifest["command"] and "-q" not in manifest["command"].split()  # pytest's own argv
    assert not backup.exists()

    # Another run (other settings) into the same --out: the backup of the first is not resumed.
    with monkeypatch.context() as patch:
        _KillAtEpoch(patch, 2)
        with pytest.raises(Killed):
            pretrain(_pretrain_config(), out, verbose=0)
    keras.mixed_precision.set_global_policy("float32")
    other = pretrain(_pretrain_config(learning_rate=1e-3), out, verbose=0)
    assert len(other.notes) == 1 and "the settings differ" in other.notes[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pretraining"]["resumed_from_epoch"] == 0 and len(manifest["loss_history"]) == 3
