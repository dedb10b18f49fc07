"""Bad data, end to end through the CLI: a run either goes on and lists every file it left out (metrics.json
`skipped`, path and reason) or stops with one line, never a traceback.

Damaged files are grouped so that each modality costs one fine-tuning run: a folder holding every kind of
damage, next to unusual but valid files that must be kept.
"""

import json
import os
import struct
import unicodedata
import warnings
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kerastl import data as kdata
from kerastl.cli import main
from kerastl.inputs import image as image_inputs
from kerastl.inputs import text as text_inputs

from .conftest import make_image_folder

UNICODE_CLASS = "縦縞-vértical"  # index 1 in make_image_folder: vertical stripes


def _invoke(*args):
    return CliRunner().invoke(main, [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args],
                              catch_exceptions=False)


def _assert_one_line_error(result, code, *needles):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def _finetune(data, backbone, out):
    return _invoke("finetune", "--data", data, "--backbone", backbone, "--strategy", "head", "--epochs", 1,
                   "--batch-size", 8, "--out", out)


def _skipped(metrics_or_report) -> dict:
    """{file name relative to its class folder's parent: reason}."""
    return {"/".join(entry["path"].split("/")[-2:]): entry["reason"] for entry in metrics_or_report["skipped"]}


# ------------------------------------------------------------------------------------------- file makers


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height and holds no pixels: what a decompression bomb shows a reader
    before decoding (the real ones decode, to gigabytes)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _png_16bit(path, colour_type, channels, rng, width=12, height=10):
    """A real 16-bit PNG (RGB: colour type 2, RGBA: 6), which Pillow cannot write."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + rng.integers(0, 256, width * channels * 2, dtype=np.uint8).tobytes()
                    for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _unusual_images(folder, rng):
    """Valid images of every odd kind: each must be kept. Returns their names."""
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    made = {
        "grey16.png": lambda p: Image.fromarray(rng.integers(0, 65535, (20, 24)).astype(np.uint16)).save(p),
        "rgb16.png": lambda p: _png_16bit(p, 2, 3, rng),
        "rgba16.png": lambda p: _png_16bit(p, 6, 4, rng),
        "cmyk.jpg": lambda p: image.convert("CMYK").save(p),
        "grey.jpg": lambda p: image.convert("L").save(p),
        "progressive.jpg": lambda p: image.save(p, progressive=True),
        "rgba.png": lambda p: image.convert("RGBA").save(p),
        "grey-alpha.png": lambda p: image.convert("LA").save(p),
        "palette.png": lambda p: image.convert("P").save(p),
        "one-bit.png": lambda p: image.convert("1").save(p),
        "rgba.bmp": lambda p: image.convert("RGBA").save(p),
        "animated.gif": lambda p: image.convert("P").save(p, save_all=True,
                                                          append_images=[image.rotate(90).convert("P")]),
        "png-named.jpg": lambda p: image.save(p, format="PNG"),
        "UPPER.PNG": lambda p: image.save(p),
        "ünïcødé 名前.png": lambda p: image.save(p),
    }
    for name, save in made.items():
        save(folder / name)
    (folder / "nested").mkdir()
    image.save(folder / "nested" / "deeper.png")
    return [*made, "nested/deeper.png"]


def _damaged_images(folder, good_png, good_jpg):
    """Every kind of damage: each must be skipped. Returns {name: what its reason must contain}."""
    (folder / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (folder / "truncated.jpg").write_bytes(good_jpg[: len(good_jpg) // 2])
    # Its start-of-scan marker turned into a comment: the header parses, the pixels cannot be decoded. (Damage
    # inside the entropy-coded pixels mostly decodes, to noise: libjpeg resynchronises.)
    (folder / "corrupted.jpg").write_bytes(good_jpg.replace(b"\xff\xda", b"\xff\xfe"))
    (folder / "text.jpg").write_text("this is text, not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    _png_header_only(folder / "bomb-67mp.png", 8200, 8200)  # over kerastl's limit only
    _png_header_only(folder / "bomb-100mp.png", 10_000, 10_000)  # Pillow warns (DecompressionBombWarning)
    _png_header_only(folder / "bomb-400mp.png", 20_000, 20_000)  # Pillow raises (DecompressionBombError)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "._000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS resource fork, .png named
    (folder / "notes.txt").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "000-checkpoint.png").write_bytes(good_png)
    os.mkfifo(folder / "pipe.png")  # reading it would block forever
    os.symlink(folder / "gone.png", folder / "dead-link.png")
    damaged = {}
    try:  # a name that is not UTF-8 (Linux file systems allow any bytes; macOS refuses them)
        (folder / os.fsdecode(b"latin1-\xe9t\xe9.png")).write_bytes(good_png)
        damaged["latin1-\\xe9t\\xe9.png"] = "not valid UTF-8"
    except OSError:
        pass
    return damaged | {
        "truncated.png": "", "truncated.jpg": "", "corrupted.jpg": "", "text.jpg": "Unknown image file format",
        "empty.png": "empty",
        "bomb-67mp.png": "megapixel limit", "bomb-100mp.png": "megapixel limit", "bomb-400mp.png": "megapixel limit",
        ".DS_Store": "hidden", "._000.png": "hidden", ".ipynb_checkpoints": "hidden folder",
        "notes.txt": "not a jpg", "Thumbs.db": "not a jpg",
        "pipe.png": "not a regular file", "dead-link.png": "not a regular file",
    }


# ------------------------------------------------------------------------------------------------ images


@pytest.fixture(scope="module")
def damaged_run(tmp_path_factory, tiny_backbone_path):
    """One fine-tuning run on a folder holding every kind of image damage and every odd valid kind."""
    base = tmp_path_factory.mktemp("damaged")
    root = make_image_folder(base / "data", classes=("circles", UNICODE_CLASS, "horizontal"), per_class=6)
    rng = np.random.default_rng(0)
    folder = root / "circles"
    good_png, good_jpg = (folder / "000.png").read_bytes(), (folder / "001.jpg").read_bytes()
    kept = _unusual_images(root / UNICODE_CLASS, rng)
    damaged = _damaged_images(folder, good_png, good_jpg)
    (root / "README.md").write_text("a stray file beside the class folders")
    (root / ".git").mkdir()
    result = _finetune(root, tiny_backbone_path, base / "out")
    return root, base / "out", result, kept, damaged


def test_damaged_images_are_skipped_and_listed(damaged_run):
    _, out, result, kept, damaged = damaged_run
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and not result.stderr.strip(), result.stderr
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    skipped = _skipped(metrics)
    expected = {f"circles/{name}" for name in damaged} | {"data/README.md", "data/.git"}
    assert set(skipped) == expected  # nothing valid was dropped, nothing damaged slipped through
    for name, needle in damaged.items():
        reason = skipped[f"circles/{name}"]
        assert needle in reason and "\n" not in reason and "{{function_node" not in reason, (name, reason)
    assert skipped["data/README.md"] == "not in a class folder"
    # Every valid file trained or validated: 6 generated per class plus the unusual ones.
    assert metrics["train_examples"] + metrics["n"] == 3 * 6 + len(kept)
    assert f"skipped {len(expected)} files" in result.stdout
    # metrics.json is UTF-8 with the names as they are; the non-UTF-8 file name is escaped, not lost.
    assert UNICODE_CLASS in (out / "metrics.json").read_text(encoding="utf-8")
    assert (out / "labels.txt").read_text(encoding="utf-8").splitlines() == ["circles", "horizontal",
                                                                              UNICODE_CLASS]


def test_evaluate_and_predict_on_the_damaged_folder(damaged_run):
    root, out, _, kept, damaged = damaged_run
    result = _invoke("evaluate", out, "--data", root, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 3 * 6 + len(kept)
    assert set(report["per_class"]) == {"circles", "horizontal", UNICODE_CLASS}
    assert {f"circles/{name}" for name in damaged} <= set(_skipped(report))
    # Human-readable form: one summary line for what was skipped.
    result = _invoke("evaluate", out, "--data", root)
    assert result.exit_code == 0 and "skipped" in result.stdout, result.output

    unicode_file = root / UNICODE_CLASS / "ünïcødé 名前.png"
    result = _invoke("predict", out, unicode_file, root / UNICODE_CLASS / "grey16.png")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] == str(unicode_file)
    assert lines[0].split("\t")[1] in ("circles", "horizontal", UNICODE_CLASS)
    _assert_one_line_error(_invoke("predict", out, root / "circles" / "bomb-400mp.png"), 1, "megapixel limit")
    _assert_one_line_error(_invoke("predict", out, root / "circles" / "truncated.jpg"), 1, "cannot decode")
    _assert_one_line_error(_invoke("predict", out, root / "circles" / "text.jpg"), 1, "cannot decode")


def test_evaluate_with_other_class_sets(damaged_run, tmp_path):
    _, out, _, _, _ = damaged_run
    # A class the model never saw: its images cannot be scored.
    other = make_image_folder(tmp_path / "unknown", classes=("circles", "triangles"), per_class=2)
    _assert_one_line_error(_invoke("evaluate", out, "--data", other), 1, "triangles", "not trained on")
    # A subset of the model's classes, down to one: a fair question ("how well does it do on circles?").
    subset = make_image_folder(tmp_path / "subset", classes=("circles",), per_class=3)
    result = _invoke("evaluate", out, "--data", subset, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 3 and set(report["per_class"]) == {"circles"}
    # The Unicode class name decomposed (NFD), as a folder copied through macOS has it.
    nfd = unicodedata.normalize("NFD", UNICODE_CLASS)
    assert nfd != UNICODE_CLASS
    decomposed = make_image_folder(tmp_path / "nfd", classes=(nfd, "horizontal"), per_class=2)
    result = _invoke("evaluate", out, "--data", decomposed, "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["per_class"]) == {UNICODE_CLASS, "horizontal"}
    # No class folder at all, and an empty one.
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "flat" / "a.png")
    _assert_one_line_error(_invoke("evaluate", out, "--data", tmp_path / "flat"), 1, "found none")
    (other / "triangles").rename(other / "horizontal")
    (other / "empty").mkdir()
    _assert_one_line_error(_invoke("evaluate", out, "--data", other), 1, "'empty'", "no image files")


def _layout_empty_class(root):
    make_image_folder(root, per_class=2)
    (root / "empty").mkdir()
    (root / "empty" / ".DS_Store").write_bytes(b"junk")  # hidden files do not count
    return "'empty'", "no image files"


def _layout_single_class(root):
    make_image_folder(root, classes=("only",), per_class=4)
    return "at least 2 classes", "only 'only'"


def _layout_flat(root):
    root.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 80, 0, 0)).save(root / f"{i}.png")
    return "found none", "subfolder per class"


def _layout_all_damaged(root):
    make_image_folder(root, per_class=2)
    for path in (root / "circles").iterdir():
        path.write_bytes(path.read_bytes()[:40])
    return "'circles'", "could be decoded"


def _layout_newline_class(root):
    make_image_folder(root, classes=("ok", "two\nlines"), per_class=2)
    return "control character", "rename the folder"


def _layout_non_utf8_class(root):
    make_image_folder(root, classes=("ok", os.fsdecode(b"caf\xe9")), per_class=2)
    return "not valid UTF-8", "rename the folder"


def _layout_only_other_files(root):
    make_image_folder(root, per_class=2)
    for path in (root / "circles").iterdir():
        path.rename(path.with_suffix(".tiff"))
    return "'circles'", "no image files"


@pytest.mark.parametrize("layout", [_layout_empty_class, _layout_single_class, _layout_flat, _layout_all_damaged,
                                    _layout_newline_class, _layout_non_utf8_class, _layout_only_other_files],
                         ids=lambda f: f.__name__[len("_layout_"):])
def test_unusable_folders_stop_with_one_line(layout, tmp_path, tiny_backbone_path):
    needles = layout(tmp_path / "data")
    result = _finetune(tmp_path / "data", tiny_backbone_path, tmp_path / "out")
    _assert_one_line_error(result, 1, *needles)
    assert not (tmp_path / "out").exists()


def test_data_that_is_not_a_folder(tmp_path, tiny_backbone_path):
    (tmp_path / "file.png").write_bytes(b"x")
    _assert_one_line_error(_finetune(tmp_path / "file.png", tiny_backbone_path, tmp_path / "out"), 2, "--data")
    _assert_one_line_error(_finetune(tmp_path / "missing", tiny_backbone_path, tmp_path / "out"), 1, "not found")
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(_finetune(tmp_path / "empty", tiny_backbone_path, tmp_path / "out"), 1, "found none")


# ----------------------------------------------------------------------------- the pixel limit, directly


def test_pixel_limit_reads_only_the_header(tmp_path, monkeypatch):
    """A decodable image over the limit is refused before TensorFlow's decoder sees it, and Pillow's own
    decompression-bomb warning and error never escape."""
    import tensorflow as tf

    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    assert kdata.decode_error(path) is None
    monkeypatch.setattr(image_inputs, "MAX_IMAGE_PIXELS", 1000)

    def decoder_reached(*args, **kwargs):
        raise AssertionError("the decoder ran on an image over the limit")

    monkeypatch.setattr(tf.io, "decode_image", decoder_reached)
    assert "40x30 = 0.0012 megapixels" in kdata.decode_error(path)
    monkeypatch.undo()
    for width, height in ((10_000, 10_000), (20_000, 20_000)):  # Pillow warns, then raises
        _png_header_only(tmp_path / "bomb.png", width, height)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert "megapixel limit" in kdata.decode_error(tmp_path / "bomb.png")


def test_pillow_limit_lowered_by_the_user_is_respected(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    assert "refused by Pillow" in kdata.decode_error(tmp_path / "a.png")


# ----------------------------------------------------------------------------------------- audio and text


def _tiny_audio_backbone(path):
    import keras

    from kerastl.inputs.audio import LogMelSpectrogram

    inputs = keras.Input((2000,), name="waveforms")  # 0.25 s at 8 kHz
    x = LogMelSpectrogram(sample_rate=8000, frame_length=200, frame_step=160, num_mels=8, fmin=60.0, fmax=3800.0,
                          name="log_mel")(inputs)
    keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(x), name="tiny_audio").save(path)
    return path


def _tiny_text_backbone(path):
    import keras

    inputs = keras.Input((), dtype="string", name="texts")
    tokenizer = keras.layers.TextVectorization(output_sequence_length=8, name="tokenizer",
                                               vocabulary=["cat", "dog", "sun", "rain"])
    x = keras.layers.Embedding(6, 4, name="embedding")(tokenizer(inputs))
    keras.Model(inputs, x, name="tiny_text").save(path)
    return path


def _wav(path, rate, samples):
    from scipy.io import wavfile

    wavfile.write(path, rate, samples)


def _damaged_wavs(folder):
    """Returns {name: what its reason must contain}; valid odd kinds are written too (see the test)."""
    t = np.arange(2000) / 8000
    tone = (np.sin(2 * np.pi * 440 * t) * 20000).astype(np.int16)
    good = (folder / "0.wav").read_bytes()
    (folder / "truncated-header.wav").write_bytes(good[:30])
    corrupted = bytearray(good)
    corrupted[20:24] = b"\xff\xff\xff\xff"  # format tag and channels
    (folder / "corrupted.wav").write_bytes(bytes(corrupted))
    (folder / "text.wav").write_text("this is text, not a wav")
    (folder / "empty.wav").write_bytes(b"")
    _wav(folder / "no-samples.wav", 8000, tone[:0])
    _wav(folder / "rate-1hz.wav", 1, tone)  # resampling it to 8 kHz would make 16 million samples
    _wav(folder / "long.wav", 1000, np.zeros(650_000, np.int16))  # 650 s
    (folder / ".hidden.wav").write_bytes(good)
    (folder / "notes.txt").write_text("not audio")
    return {"truncated-header.wav": "", "corrupted.wav": "format", "text.wav": "not understood",
            "empty.wav": "", "no-samples.wav": "no audio samples", "rate-1hz.wav": "sample rate",
            "long.wav": "600 s limit", ".hidden.wav": "hidden", "notes.txt": "not a wav"}


def test_damaged_wav_files_are_skipped_and_listed(tmp_path):
    backbone = _tiny_audio_backbone(tmp_path / "audio.keras")
    t = np.arange(2000) / 8000
    for name, f0 in (("low", 200), ("high", 1500)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(5):
            _wav(tmp_path / "data" / name / f"{i}.wav", 8000,
                 (np.sin(2 * np.pi * f0 * (1 + 0.05 * i) * t) * 20000).astype(np.int16))
    folder = tmp_path / "data" / "low"
    tone = np.sin(2 * np.pi * 200 * np.arange(8000) / 8000)
    _wav(folder / "stereo.wav", 8000, (np.stack([tone, tone], 1) * 20000).astype(np.int16))
    _wav(folder / "8bit.wav", 8000, (tone * 100 + 128).astype(np.uint8))
    _wav(folder / "float32.wav", 8000, (tone * 0.5).astype(np.float32))
    _wav(folder / "int32.wav", 8000, (tone * 2e9).astype(np.int32))
    _wav(folder / "44k.wav", 44100, (np.sin(2 * np.pi * 200 * np.arange(11025) / 44100) * 20000).astype(np.int16))
    damaged = _damaged_wavs(folder)
    result = _finetune(tmp_path / "data", backbone, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and not result.stderr.strip(), result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    skipped = _skipped(metrics)
    assert set(skipped) == {f"low/{name}" for name in damaged}
    for name, needle in damaged.items():
        assert needle in skipped[f"low/{name}"], (name, skipped[f"low/{name}"])
    assert metrics["train_examples"] + metrics["n"] == 10 + 5


def test_float_wav_with_nan_samples_is_skipped(tmp_path):
    _wav(tmp_path / "nan.wav", 8000, np.full(2000, np.nan, np.float32))
    _wav(tmp_path / "inf.wav", 8000, np.concatenate([np.zeros(1999, np.float32), [np.inf]]).astype(np.float32))
    assert "NaN or infinite" in kdata.decode_error(tmp_path / "nan.wav", "audio")
    assert "NaN or infinite" in kdata.decode_error(tmp_path / "inf.wav", "audio")


def test_damaged_text_files_are_skipped_and_listed(tmp_path):
    backbone = _tiny_text_backbone(tmp_path / "text.keras")
    rng = np.random.default_rng(0)
    for name, words in (("pets", ["cat", "dog"]), ("weather", ["sun", "rain"])):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "data" / name / f"{i}.txt").write_text(" ".join(rng.choice(words, 6)))
    folder = tmp_path / "data" / "pets"
    (folder / "bom.txt").write_bytes("\ufeffcat dog cat".encode("utf-8"))
    (folder / "crlf.txt").write_bytes(b"cat\r\ndog\r\n")
    (folder / "unicode.txt").write_text("chat 猫 🐈 cat", encoding="utf-8")
    (folder / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (folder / "utf16.txt").write_text("cat dog", encoding="utf-16")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blank.txt").write_text(" \n\t \n")
    (folder / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))  # binary
    with open(folder / "huge.txt", "wb") as file:  # one byte over the limit
        file.truncate(text_inputs.MAX_TEXT_BYTES + 1)
    (folder / "picture.png").write_bytes(b"\x89PNG")
    damaged = {"latin1.txt": "not UTF-8", "utf16.txt": "not UTF-8", "empty.txt": "empty", "blank.txt": "empty",
               "image.txt": "not UTF-8", "huge.txt": "MiB limit", "picture.png": "not a txt"}
    result = _finetune(tmp_path / "data", backbone, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and not result.stderr.strip(), result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    skipped = _skipped(metrics)
    assert set(skipped) == {f"pets/{name}" for name in damaged}
    for name, needle in damaged.items():
        assert needle in skipped[f"pets/{name}"], (name, skipped[f"pets/{name}"])
    assert metrics["train_examples"] + metrics["n"] == 10 + 3
