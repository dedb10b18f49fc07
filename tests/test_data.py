"""Class-per-folder data: scanning, decoding, stratified seeded splits, few-shot sampling, class weights."""

import numpy as np
import pytest
from PIL import Image

from kerastl.data import (
    class_weights,
    detect_modality,
    digits_folder,
    drop_undecodable,
    image_dataset,
    scan_folder,
    split,
)
from kerastl.errors import KerastlError, UsageError

from .conftest import make_image_folder


def test_scan_ignores_hidden_and_other_files(tmp_path):
    root = make_image_folder(tmp_path, per_class=4)
    (root / "circles" / ".DS_Store").write_bytes(b"junk")
    (root / "circles" / "notes.txt").write_text("not an image")
    (root / ".hidden_class").mkdir()
    (root / "README.md").write_text("stray")
    scan = scan_folder(root)
    assert scan.class_names == ["circles", "horizontal", "vertical"]
    assert scan.counts == {"circles": 4, "horizontal": 4, "vertical": 4}
    assert {p.name for p in scan.ignored} == {".DS_Store", "notes.txt", "README.md"}


def test_undecodable_files_are_skipped_and_listed(tmp_path):
    root = make_image_folder(tmp_path, per_class=4)
    (root / "circles" / "fake.jpg").write_text("this is text, not a jpeg")
    good = (root / "circles" / "000.png").read_bytes()
    (root / "circles" / "truncated.png").write_bytes(good[: len(good) // 2])
    scan = drop_undecodable(scan_folder(root))
    skipped = {p.rsplit("/", 1)[-1] for p, _ in scan.skipped}
    assert skipped == {"fake.jpg", "truncated.png"}
    assert scan.counts["circles"] == 4


def test_image_kinds_decode_to_the_backbone_channels(tmp_path):
    root = tmp_path / "kinds"
    rgb = (np.random.default_rng(0).uniform(0, 255, (20, 30, 3))).astype("uint8")
    for name, image in {"grey.png": Image.fromarray(rgb[..., 0]), "rgba.png": Image.fromarray(rgb).convert("RGBA"),
                        "rgb.bmp": Image.fromarray(rgb), "anim.gif": Image.fromarray(rgb).convert("P"),
                        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK")}.items():
        for cls in ("a", "b"):
            (root / cls).mkdir(parents=True, exist_ok=True)
            image.save(root / cls / name)
    scan = drop_undecodable(scan_folder(root))
    assert not scan.skipped
    files = [p for paths in scan.files for p in paths]
    for channels in (1, 3):
        batch, _ = next(iter(image_dataset(files, [0] * len(files), image_size=(8, 8), channels=channels,
                                           batch_size=len(files))))
        assert batch.shape == (len(files), 8, 8, channels)
        assert float(np.max(batch)) <= 255.0 and float(np.min(batch)) >= 0.0


def test_split_is_stratified_and_seeded(tmp_path):
    scan = scan_folder(make_image_folder(tmp_path, per_class=10))
    a = split(scan, validation_fraction=0.2, seed=1)
    b = split(scan, validation_fraction=0.2, seed=1)
    c = split(scan, validation_fraction=0.2, seed=2)
    assert a.train_files == b.train_files and a.val_files == b.val_files
    assert a.val_files != c.val_files
    assert [a.val_labels.count(i) for i in range(3)] == [2, 2, 2]
    assert not set(a.train_files) & set(a.val_files)


def test_shots_train_on_n_per_class_and_validate_on_the_rest(tmp_path):
    scan = scan_folder(make_image_folder(tmp_path, per_class=10))
    parts = split(scan, shots=3, seed=0)
    assert parts.train_counts() == [3, 3, 3]
    assert len(parts.val_files) == 21
    with pytest.raises(KerastlError, match="--shots 10 needs at least 11"):
        split(scan, shots=10)
    with pytest.raises(UsageError):
        split(scan, shots=0)


def test_empty_class_and_single_class_are_errors(tmp_path):
    root = make_image_folder(tmp_path / "a", per_class=2)
    (root / "empty").mkdir()
    with pytest.raises(KerastlError, match="'empty'.*no image files"):
        scan_folder(root)
    single = make_image_folder(tmp_path / "b", classes=("only",), per_class=2)
    with pytest.raises(KerastlError, match="at least 2 classes"):
        scan_folder(single)
    with pytest.raises(KerastlError, match="not found"):
        scan_folder(tmp_path / "missing")


def test_class_weights_only_when_imbalanced():
    assert class_weights([0, 0, 1, 1], 2) is None
    weights = class_weights([0] * 8 + [1] * 2, 2)
    assert weights[1] == pytest.approx(4 * weights[0])


def test_unicode_class_names(tmp_path):
    root = make_image_folder(tmp_path, classes=("chat", "çà-ü", "日本"), per_class=2)
    assert scan_folder(root).class_names == sorted(["chat", "çà-ü", "日本"])


def test_digits_folder_is_the_real_sklearn_set(tmp_path):
    root = digits_folder(tmp_path / "digits")
    scan = scan_folder(root)
    assert scan.class_names == [str(d) for d in range(10)]
    assert sum(scan.counts.values()) == 1797
    assert detect_modality(root) == "image"
    assert digits_folder(tmp_path / "digits") == root  # written once
