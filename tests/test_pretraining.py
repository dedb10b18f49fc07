"""Pre-training: every source kind, manifest round trip, resume after kill -9, two workers, error lines."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl.backbones import load_backbone
from kerastl.cli import main
from kerastl.errors import KerastlError, UsageError
from kerastl.pretraining.run import PretrainConfig, pretrain

TINY = dict(arch="smallnet-s", image_size=16, classes=10, epochs=2, steps_per_epoch=3, batch_size=16,
            validation_steps=1, precision="float32", jit_compile=False)


def _check_manifest(out, source):
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("modality", "input", "preprocessing", "pretraining", "command", "hardware", "metrics",
                "weights", "compute", "train_seconds", "started"):
        assert key in manifest, key
    assert manifest["pretraining"]["source"] == source
    from kerastl.net import sha256_file

    assert manifest["weights"]["sha256"] == sha256_file(out / "backbone.keras")
    return manifest


def test_synthetic_source_and_manifest_round_trip(tmp_path):
    out = tmp_path / "saved" / "glyphs-tiny"
    result = pretrain(PretrainConfig(source="synthetic:glyphs", **TINY), out, verbose=0, command="test")
    manifest = _check_manifest(out, "synthetic:glyphs")
    assert manifest["modality"] == "image" and manifest["input"]["shape"] == [16, 16, 1]
    assert manifest["pretraining"]["classes"] == 10
    assert manifest["compute"]["utilisation"] > 0
    backbone = load_backbone(str(out))
    assert backbone.input_shape == (16, 16, 1) and backbone.feature_width == 128
    assert backbone.preprocessing["mean"] == manifest["preprocessing"]["mean"]
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(backbone.model.predict(x, verbose=0), result.backbone.predict(x, verbose=0),
                               atol=1e-4)
    # No backup or partial directory is left behind.
    assert sorted(p.name for p in out.parent.iterdir()) == [".logs", "glyphs-tiny"]


def test_folder_source(tmp_path, image_folder):
    out = tmp_path / "folder-tiny"
    pretrain(PretrainConfig(source=str(image_folder), **TINY), out, verbose=0)
    manifest = _check_manifest(out, str(image_folder))
    assert manifest["pretraining"]["classes"] == 3 and manifest["input"]["shape"] == [16, 16, 3]


def test_tfds_source_reads_prepared_data(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))

    class KerastlTinyShapes(tfds.core.GeneratorBasedBuilder):
        """Ten tiny images of two classes, prepared locally: what a user's prepared TFDS data looks like."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(12, 12, 3)),
                "label": tfds.features.ClassLabel(names=["dark", "bright"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(20), "test": self._generate_examples(6)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": np.full((12, 12, 3), 200 * (i % 2), np.uint8), "label": i % 2}

    KerastlTinyShapes(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    out = tmp_path / "tfds-tiny"
    pretrain(PretrainConfig(source="tfds:kerastl_tiny_shapes:train", **TINY), out, verbose=0)
    manifest = _check_manifest(out, "tfds:kerastl_tiny_shapes:train")
    assert manifest["pretraining"]["classes"] == 2


def test_tfds_not_prepared_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(KerastlError) as error:
        pretrain(PretrainConfig(source="tfds:mnist", **TINY), tmp_path / "out", verbose=0)
    assert "\n" not in str(error.value) and "tfds build mnist" in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, code, match", [
    (["--data", "synthetic:nonsense", "--arch", "smallnet-s"], 2, "nonsense"),
    (["--data", "/no/such/dir", "--arch", "smallnet-s"], 2, "--data must be"),
    (["--data", "synthetic:glyphs", "--arch", "ResNet9000"], 2, "unknown --arch"),
    (["--data", "synthetic:glyphs", "--arch", "smallnet-s", "--classes", "1"], 2, "--classes"),
    (["--data", "synthetic:glyphs", "--arch", "smallnet-s", "--precision", "half"], 2, "--precision"),
    (["--data", "synthetic:glyphs", "--arch", "smallnet-s", "--strategy", "multiworker"], 1, "TF_CONFIG"),
])
def test_error_paths_are_one_line(args, code, match, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["pretrain", *args, "--image-size", "16", "--steps", "1",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == code, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and match in last, result.output
    assert "Traceback" not in result.output


def test_config_validation():
    with pytest.raises(UsageError, match="--batch-size"):
        PretrainConfig(source="synthetic:glyphs", batch_size=0).validate()


def _cli(*args, env=None, **kwargs):
    return [sys.executable, "-m", "kerastl.cli", *map(str, args)]


@pytest.mark.slow
def test_resume_after_kill(tmp_path):
    """kill -9 mid-run, then the same command again: it continues from its last epoch backup and, in
    deterministic mode, ends with exactly the weights of an uninterrupted run."""
    def command(out):
        return _cli("pretrain", "--data", "synthetic:glyphs", "--arch", "smallnet-s", "--image-size", 16,
                    "--classes", 10, "--epochs", 6, "--steps-per-epoch", 40, "--batch-size", 16,
                    "--precision", "float32", "--no-xla", "--validation-steps", 1, "--deterministic", "--out", out)

    def digest(stdout):
        return next(line.split()[-1] for line in stdout.splitlines() if line.startswith("weights digest"))

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    reference = subprocess.run(command(tmp_path / "saved" / "uninterrupted"), capture_output=True, text=True,
                               env=env, timeout=600, check=False)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    out = tmp_path / "saved" / "resume"
    first = subprocess.Popen(command(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in first.stdout:
        seen.append(line)
        if line.startswith("Epoch 3/6"):  # epochs 1 and 2 are backed up
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, "".join(seen)
    assert not out.exists()
    second = subprocess.run(command(out), capture_output=True, text=True, env=env, timeout=600, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Epoch 1/6" not in second.stdout and "Epoch 3/6" in second.stdout, second.stdout
    manifest = _check_manifest(out, "synthetic:glyphs")
    assert manifest["pretraining"]["epochs"] == 6
    assert not (out.parent / ".resume.backup").exists()
    assert digest(second.stdout) == digest(reference.stdout)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_end_with_identical_weights(tmp_path):
    """MultiWorkerMirroredStrategy over two processes on 127.0.0.1, custom step under strategy.run."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        command = _cli("pretrain", "--data", "synthetic:glyphs", "--arch", "smallnet-s", "--image-size", 16,
                       "--classes", 10, "--epochs", 3, "--steps-per-epoch", 8, "--batch-size", 32,
                       "--learning-rate", 3e-3, "--precision", "float32", "--strategy", "multiworker",
                       "--out", tmp_path / "saved" / "two-workers")
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          env=env))
    outputs = []
    deadline = time.time() + 600
    for process in processes:
        stdout, _ = process.communicate(timeout=max(1, deadline - time.time()))
        outputs.append(stdout)
        assert process.returncode == 0, stdout[-3000:]
    digests = [next(line.split()[-1] for line in out.splitlines() if line.startswith("weights digest"))
               for out in outputs]
    assert digests[0] == digests[1], digests
    manifest = _check_manifest(tmp_path / "saved" / "two-workers", "synthetic:glyphs")
    assert manifest["pretraining"]["replicas"] == 2
    losses = manifest["loss_history"]
    assert losses[-1] < losses[0], losses
    # Only the chief writes the backbone.
    assert sorted(p.name for p in (tmp_path / "saved").iterdir() if not p.name.startswith(".")) == ["two-workers"]
