"""tools/bench_real_transfer.py: the real image set it builds, when `auto` reuses a run, and the README table
printed from the committed results."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_real_transfer", ROOT / "tools" / "bench_real_transfer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being defined
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


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
    assert bench.finetune_config("scratch", 5, 0, defaults).epochs == 20
    assert bench.finetune_config("scratch", 5, 0, defaults).from_scratch


def test_the_readme_table_is_the_one_printed_from_the_results(bench):
    saved = json.loads((ROOT / "tools" / "results_real_transfer.json").read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for modality, record in saved.items():
        assert "\n".join(bench.table_lines(record)) in readme, modality
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
