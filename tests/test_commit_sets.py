"""Multi-file outputs commit as one set: a failure injected at every rename (and at the directory swap) leaves
exactly the old set or exactly the new one, byte for byte, for finetune's save_outputs and for export()."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kerastl.core import atomic
from kerastl.errors import KerastlError


class Killed(BaseException):
    """Stands for a kill: not an Exception, so nothing that catches errors swallows it."""


def snapshot(directory: Path) -> dict:
    """Every file and directory under `directory`, with file bytes (hidden staging names excluded only by the
    callers' expectations: they are part of the snapshot)."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def visible(directory: Path) -> dict:
    """The snapshot without kerastl's temporary names (a killed run may leave those; they are not outputs)."""
    return {name: data for name, data in snapshot(directory).items()
            if not any(part.endswith((atomic.JOURNAL, atomic.JOURNAL + ".tmp")) or atomic.STAGED in part
                       or atomic.OLD in part for part in Path(name).parts)}


def count_commit_steps(monkeypatch):
    """Counts the steps that change names on disk (os.replace, os.rename, atomic.exchange, and atomic's removal
    of staged or old entries); returns the counter and a function that makes the k-th step (from 1) raise
    Killed before it changes anything."""
    state = {"calls": 0, "fail_at": None}
    real = {"replace": os.replace, "rename": os.rename, "exchange": atomic.exchange, "remove": atomic._remove}

    def wrap(name):
        def step(*args, **kwargs):
            state["calls"] += 1
            if state["fail_at"] == state["calls"]:
                raise Killed(f"killed at {name} #{state['calls']}")
            return real[name](*args, **kwargs)
        return step

    monkeypatch.setattr(os, "replace", wrap("replace"))
    monkeypatch.setattr(os, "rename", wrap("rename"))
    monkeypatch.setattr(atomic, "exchange", wrap("exchange"))
    monkeypatch.setattr(atomic, "_remove", wrap("remove"))

    def fail_at(k):
        state["calls"], state["fail_at"] = 0, k

    return state, fail_at


def check_every_step(monkeypatch, write, target: Path, *, old_of, exchange_supported=True):
    """Runs `write(version)` into the set at `target` with a failure at every commit step k; after each, the
    set (as kerastl reads it: `recover_around` first) is exactly the old one or exactly the new one. Returns
    the outcomes per k."""
    if not exchange_supported:
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    state, fail_at = count_commit_steps(monkeypatch)
    directory = old_of(target)
    fail_at(None)
    write("old")
    old = visible(directory)
    fail_at(None)
    write("new")
    new = visible(directory)
    steps = state["calls"]  # of a write over an existing set
    assert old != new and steps >= 1
    outcomes = []
    for k in range(1, steps + 1):
        fail_at(None)
        write("old")
        assert visible(directory) == old
        fail_at(k)
        with pytest.raises(Killed):
            write("new")
        fail_at(None)
        before_recovery = visible(directory)
        atomic.recover_around(target)
        after = visible(directory)
        assert after in (old, new), f"a mix after a failure at commit step {k} of {steps}"
        outcomes.append("old" if after == old else "new")
        if exchange_supported and before_recovery in (old, new):
            outcomes[-1] += " (before recovery too)"
    # A later run is clean again: no temporary name left.
    fail_at(None)
    write("new")
    assert visible(directory) == new and snapshot(directory) == new
    return outcomes


# ---------------------------------------------------------------------------------------------------------
# finetune's save_outputs


class FakeModel:
    """Saves fixed bytes, so that two saves of one version are byte-identical (Keras stamps the time)."""

    def __init__(self, version):
        self.version = version

    def save(self, path):
        Path(path).write_bytes(f"model {self.version}".encode() * 100)


@pytest.fixture()
def fake_save(monkeypatch):
    import kerastl.core.graph
    import kerastl.reporting.plots

    monkeypatch.setattr(kerastl.core.graph, "restore_batchnorm", lambda model: model)
    monkeypatch.setattr(kerastl.reporting.plots, "plot_report",
                        lambda history, metrics, path, title: Path(path).write_bytes(f"png {title}".encode()))

    def write(out, version):
        from kerastl.train.finetune import save_outputs

        labels = ["a", "b"] if version == "old" else ["b", "a"]
        return save_outputs(out, FakeModel(version), labels, {"strategy": version, "history": []})

    return write


@pytest.mark.parametrize("mode", ["renameat2-exchange", "journal-fallback", "cwd-inside-out"])
def test_save_outputs_is_one_set_at_every_step(tmp_path, monkeypatch, fake_save, mode):
    out = tmp_path / "run"
    out.mkdir()
    exchange_supported = mode == "renameat2-exchange"
    if mode == "cwd-inside-out":
        # `--out .`: swapping the directory would leave the shell in a deleted one; files commit inside it.
        monkeypatch.chdir(out)
    (out / "notes.txt").write_text("mine")  # a user's file in --out survives every outcome
    (out / ".kerastl-backup").mkdir()
    (out / ".kerastl-backup" / "state").write_text("backup")
    outcomes = check_every_step(monkeypatch, lambda version: fake_save(out, version), out,
                                old_of=lambda target: target, exchange_supported=mode != "journal-fallback")
    assert outcomes[-1].startswith("new") and any(o.startswith("old") for o in outcomes)
    if exchange_supported:
        # One atomic swap: old or new on disk at every moment, for every program, not only after recovery.
        assert all(o.endswith("(before recovery too)") for o in outcomes), outcomes
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / ".kerastl-backup" / "state").read_text() == "backup"
    if mode == "cwd-inside-out":
        assert Path.cwd() == out.resolve() and (Path.cwd() / "model.keras").is_file()


def test_save_outputs_failure_before_the_commit_leaves_the_old_set(tmp_path, monkeypatch, fake_save):
    import kerastl.reporting.plots

    out = tmp_path / "run"
    fake_save(out, "old")
    old = snapshot(out)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(kerastl.reporting.plots, "plot_report", broken)
    with pytest.raises(RuntimeError):
        fake_save(out, "new")
    assert snapshot(out) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging left


def test_a_refused_swap_is_one_line_and_leaves_the_old_set(tmp_path, monkeypatch, fake_save):
    """renameat2 is supported but fails (a mount point, another file system): one KerastlError, nothing lost,
    no staging left behind."""
    import errno

    out = tmp_path / "run"
    fake_save(out, "old")
    old = snapshot(out)

    def refuse(a, b):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(a), None, str(b))

    monkeypatch.setattr(atomic, "exchange", refuse)
    with pytest.raises(KerastlError) as raised:
        fake_save(out, "new")
    assert "\n" not in str(raised.value) and "previous files are untouched" in str(raised.value)
    assert snapshot(out) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_stale_labels_with_the_same_class_count_are_refused(tmp_path):
    """A labels.txt from another run (same number of classes) beside a model no longer passes evaluation."""
    import keras

    from kerastl.train.evaluate import load_classifier
    from kerastl.train.finetune import save_outputs

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    out = tmp_path / "run"
    save_outputs(out, model, ["cat", "dog"], {"strategy": "head", "history": []})
    assert load_classifier(out)[1] == ["cat", "dog"]
    (out / "labels.txt").write_text("dog\ncat\n")  # what an older run into another directory left
    with pytest.raises(KerastlError, match="labels.txt is not the file written with"):
        load_classifier(out)
    with pytest.raises(KerastlError, match="come from different runs"):
        load_classifier(out / "model.keras")


# ---------------------------------------------------------------------------------------------------------
# export()


@pytest.fixture(scope="module")
def tiny_classifier():
    import keras

    from .conftest import make_tiny_backbone

    backbone = make_tiny_backbone()
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    return keras.Model(backbone.input, keras.layers.Dense(3, activation="softmax", name="predictions")(x))


@pytest.fixture()
def fake_conversion(monkeypatch):
    """Conversion and verification replaced by fixed bytes and figures: this tests the commit, and a version
    string decides what is written."""
    from kerastl import export as export_module

    version = {"now": "old"}
    figures = {"n": 1, "top1_agreement": 1.0, "accuracy": None, "max_abs_diff": 0.0, "bytes": 1}

    def write_saved_model(model, labels, out):
        Path(out, "variables").mkdir(parents=True)
        Path(out, "saved_model.pb").write_bytes(f"pb {version['now']}".encode())
        Path(out, "variables", "variables.index").write_bytes(f"index {version['now']}".encode())

    monkeypatch.setattr(export_module, "write_saved_model", write_saved_model)
    monkeypatch.setattr(export_module, "verify_saved_model", lambda *a, **k: dict(figures))
    monkeypatch.setattr(export_module, "convert_tflite", lambda *a, **k: f"tflite {version['now']}".encode())
    monkeypatch.setattr(export_module, "verify_tflite", lambda *a, **k: dict(figures))

    def run(model, format, out, now):
        version["now"] = now
        return export_module.export(model, format=format, out=out, labels=[f"{now}{i}" for i in range(3)])

    return run


@pytest.mark.parametrize("form", ["all", "all-journal-fallback", "tflite", "saved_model"])
def test_export_is_one_set_at_every_step(tmp_path, monkeypatch, tiny_classifier, fake_conversion, form):
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "README-mine.txt").write_text("mine")
    format = form.split("-")[0]
    target = {"all": folder, "tflite": folder / "m.tflite", "saved_model": folder / "sm"}[format]
    if format == "tflite":
        # A previous text export's vocabulary goes with the set it belonged to: removed with it, not left
        # beside a new image model (a set of three renames).
        real_fake = fake_conversion

        def run(model, format, out, now):
            if now == "old":
                report = real_fake(model, format, out, now)
                Path(out).with_name("m.vocab.txt").write_text("old vocabulary\n")
                return report
            return real_fake(model, format, out, now)

        write = lambda version: run(tiny_classifier, format, target, version)
    else:
        write = lambda version: fake_conversion(tiny_classifier, format, target, version)
    outcomes = check_every_step(monkeypatch, write, target, old_of=lambda t: folder,
                                exchange_supported=form != "all-journal-fallback")
    assert outcomes[-1].startswith("new") and any(o.startswith("old") for o in outcomes)
    if form == "all":
        assert all(o.endswith("(before recovery too)") for o in outcomes), outcomes
    assert (folder / "README-mine.txt").read_text() == "mine"
    if format == "tflite":
        assert not (folder / "m.vocab.txt").exists()
        report = json.loads((folder / "m.report.json").read_text())
        assert report["labels"] == ["new0", "new1", "new2"]


def test_a_later_export_completes_an_interrupted_one_first(tmp_path, monkeypatch, tiny_classifier,
                                                          fake_conversion):
    """After a kill between the renames, other programs may see a mix until kerastl runs there: any kerastl
    command touching the folder completes the journalled set first (here: the next export's own start)."""
    target = tmp_path / "m.tflite"
    fake_conversion(tiny_classifier, "tflite", target, "old")
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "m.report.json":
            raise Killed("killed between the .tflite's rename and the report's")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        fake_conversion(tiny_classifier, "tflite", target, "new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_bytes() == b"tflite new"
    assert json.loads(target.with_name("m.report.json").read_text())["labels"][0] == "old0"  # the window
    fake_conversion(tiny_classifier, "tflite", tmp_path / "other.tflite", "other")
    assert json.loads(target.with_name("m.report.json").read_text())["labels"][0] == "new0"
