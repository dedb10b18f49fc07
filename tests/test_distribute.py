"""Fine-tuning under tf.distribute (`--distribute`): mirrored on this machine's one CPU replica is the default
run, two MultiWorkerMirroredStrategy workers on 127.0.0.1 fine-tune in step and only the chief writes, and the
bad inputs are one line."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from kerastl.cli import main
from kerastl.errors import UsageError
from kerastl.train.finetune import finetune
from kerastl.train.options import HParams, ModelOptions

TINY = dict(epochs=2, head_epochs=1, batch_size=8, deterministic=True, baseline=False)


def test_mirrored_on_one_replica_is_the_default_run(image_folder, tiny_backbone_path):
    """One CPU: MirroredStrategy has one replica, the global batch is --batch-size, and the run (full: the head
    on cached features, then every layer) is the default strategy's, metric for metric and weight for weight."""
    from kerastl.train.resume import weights_sha256

    runs = {}
    for name in (None, "mirrored"):
        result = finetune(image_folder, str(tiny_backbone_path), hparams=HParams(**TINY, distribute=name),
                          model_options=ModelOptions(strategy="full"), verbose=0)
        runs[name] = result.metrics, weights_sha256(result.model)
    (default, default_digest), (mirrored, mirrored_digest) = runs[None], runs["mirrored"]
    assert mirrored["history"] == default["history"]
    assert mirrored["accuracy"] == default["accuracy"] and mirrored["per_class"] == default["per_class"]
    assert mirrored_digest == default_digest
    assert default["distribute"] is None
    assert mirrored["distribute"] == {"strategy": "mirrored", "replicas": 1, "workers": 1,
                                      "batch_size_per_replica": 8, "global_batch": 8}


def test_a_backbone_loaded_outside_the_scope_is_refused(image_folder, tiny_backbone_path):
    from kerastl.backbones import load_backbone

    backbone = load_backbone(str(tiny_backbone_path))
    with pytest.raises(UsageError, match="give the backbone as a spec"):
        finetune(image_folder, backbone, hparams=HParams(**TINY, distribute="mirrored"), verbose=0)


@pytest.mark.parametrize("args, env, code, match", [
    (["--distribute", "sideways"], None, 2, "--distribute"),
    (["--distribute", "multiworker"], None, 1, "--distribute multiworker needs TF_CONFIG"),
    (["--distribute", "multiworker"], "{not json", 1, "TF_CONFIG is not valid JSON"),
])
def test_bad_distribute_is_one_line(args, env, code, match, image_folder, tiny_backbone_path, tmp_path,
                                    monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if env is not None:
        monkeypatch.setenv("TF_CONFIG", env)
    result = CliRunner().invoke(main, ["finetune", "--data", str(image_folder), "--backbone",
                                       str(tiny_backbone_path), *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == code, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and match in last, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _two_workers(command_for, tmp_path):
    """Runs `command_for(index)` as worker 0 and worker 1 of a two-worker cluster on 127.0.0.1; returns their
    outputs once both have finished successfully."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(command_for(index), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, env=env, cwd=tmp_path))
    outputs = []
    deadline = time.time() + 900
    try:
        for process in processes:
            stdout, _ = process.communicate(timeout=max(1, deadline - time.time()))
            outputs.append(stdout)
            assert process.returncode == 0, stdout[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return outputs


@pytest.mark.slow
def test_two_workers_fine_tune_full_and_only_the_chief_writes(tmp_path, image_folder, tiny_backbone_path):
    """`kerastl finetune --distribute multiworker --strategy full --head-solver probe` on two workers: each
    caches the frozen features and solves the probe, the chief's head goes to both, the full phase trains under
    strategy.run with a global batch of 2 × 8; the chief writes the outputs, the worker's directory is gone."""
    out = tmp_path / "run"

    def command(index):
        return [sys.executable, "-m", "kerastl.cli", "finetune", "--data", str(image_folder), "--backbone",
                str(tiny_backbone_path), "--strategy", "full", "--head-solver", "probe", "--epochs", "2",
                "--batch-size", "8", "--no-early-stopping", "--distribute", "multiworker", "--out", str(out)]

    _two_workers(command, tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distribute"] == {"strategy": "multiworker", "replicas": 2, "workers": 2,
                                     "batch_size_per_replica": 8, "global_batch": 16}
    assert metrics["phases"]["head"] == {"solver": "probe"} and metrics["head_fit"]
    assert [row["phase"] for row in metrics["history"]] == ["full", "full"]
    assert not (out / ".kerastl-backup").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no worker directory is left
    from kerastl.train.evaluate import predict

    files = sorted(image_folder.rglob("*.png"))[:3]
    rows = predict(out, files)
    assert len(rows) == 3 and all(0.0 <= probability <= 1.0 for _, _, probability in rows)


DRIVER = """
import sys
import kerastl
from kerastl.train.resume import weights_sha256
result = kerastl.finetune(sys.argv[1], sys.argv[2], out=sys.argv[3], verbose=0,
                          hparams=kerastl.HParams(epochs=3, batch_size=8, baseline=False, distribute="multiworker"),
                          model_options=kerastl.ModelOptions(strategy="head") if sys.argv[4] == "head" else
                          kerastl.ModelOptions(from_scratch=True))
print("files", sorted(result.files))
print("weights", weights_sha256(result.model))
"""


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["head", "from-scratch"])
def test_two_workers_end_in_step(strategy, tmp_path, image_folder, tiny_backbone_path):
    """Through the API: Option 1's head trains on the cached features with the distributed step (each worker
    caches them, the batches are split between the workers); from scratch, every layer trains and the
    BatchNormalization statistics each worker updates on its share are averaged after every epoch. Both workers
    end with the same weights (statistics included), and only the chief reports files."""
    (tmp_path / "driver.py").write_text(DRIVER)

    def command(index):
        return [sys.executable, str(tmp_path / "driver.py"), str(image_folder), str(tiny_backbone_path),
                str(tmp_path / "run"), strategy]

    outputs = _two_workers(command, tmp_path)
    digests = [next(line.split()[-1] for line in text.splitlines() if line.startswith("weights")) for text in outputs]
    assert digests[0] == digests[1]
    files = [next(line for line in text.splitlines() if line.startswith("files")) for text in outputs]
    assert files == ["files ['labels', 'metrics', 'model', 'report']", "files []"], files
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["strategy"] == strategy and metrics["history"][0]["phase"] == strategy
