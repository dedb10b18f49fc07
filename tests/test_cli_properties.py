"""Every bad CLI input, generated: each exits 2 (usage) or 1 (runtime) with one `Error: ...` line on stderr and
no traceback; `--debug` (the group's flag, before the command) adds the traceback.

The strategies generate only invalid values, for options whose checks run before any training or export:
option parsing, config validation, backbone and model resolution, data scanning. A valid value slipping
through would start a run and fail the `exit_code in (1, 2)` assertion, so the strategies filter through the
same parsers the CLI uses (int(), float(), parse_strategy, the Keras application names).
"""

import math
import os

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerastl.cli import main

from .conftest import make_image_folder, make_tiny_backbone

# The autouse cache fixture is function-scoped; sharing one cache across a test's examples is harmless.
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Anything a shell can pass as one argument: no NUL, no lone surrogates.
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Valid inputs to pair with the invalid one, and files that are not what they are named. The working
    directory and saved_models/ are empty temporary directories, so that a generated bare word names nothing."""
    import keras

    root = tmp_path_factory.mktemp("cli")
    data = make_image_folder(root / "data", per_class=3)
    backbone = root / "tiny.keras"
    make_tiny_backbone().save(backbone)
    model = root / "model"
    model.mkdir()
    tiny = make_tiny_backbone()
    pooled = keras.layers.GlobalAveragePooling2D()(tiny.output)
    keras.Model(tiny.input, keras.layers.Dense(3, activation="softmax", name="predictions")(pooled)).save(
        model / "model.keras")
    (model / "labels.txt").write_text("circles\nhorizontal\nvertical\n")
    garbage = root / "garbage.keras"
    garbage.write_text("not a zip archive")
    h5 = root / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    plain = root / "plain.txt"
    plain.write_text("just text")
    empty = root / "empty"
    empty.mkdir()
    (root / "cwd").mkdir()
    (root / "saved_models").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root / "cwd")
        patch.setenv("KERASTL_SAVED_MODELS", str(root / "saved_models"))
        patch.setenv("KERASTL_OFFLINE", "1")
        yield {"root": root, "data": data, "backbone": backbone, "model": model, "garbage": garbage, "h5": h5,
               "plain": plain, "empty": empty, "never": root / "never-written"}
    assert not (root / "never-written").exists(), "a generated case ran to completion"


def _run(*args, debug=False):
    argv = (["--debug"] if debug else []) + [str(a) for a in args]
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def _assert_one_line(result, codes=(1, 2)):
    assert result.exit_code in codes, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output, result.output


# ----------------------------------------------------------------------------------------------- values


def _fails(parse):
    """A filter keeping the strings that `parse` (int, float, parse_strategy, ...) refuses."""
    def check(text):
        try:
            parse(text)
        except Exception:  # noqa: BLE001  (any refusal by the parser counts as invalid)
            return True
        return False
    return check


def bad_ints(minimum, maximum=None):
    """Strings that click's IntRange(minimum, maximum) refuses: out of range, or not an integer at all."""
    out_of_range = [st.integers(max_value=minimum - 1)]
    if maximum is not None:
        out_of_range.append(st.integers(min_value=maximum + 1))
    return st.one_of(*[s.map(str) for s in out_of_range], TEXT.filter(_fails(int)),
                     st.sampled_from(["1.5", "1e3", "0x10", "", "ten", "nan", "inf", "--", "½"]))


def bad_floats(low, high, *, low_open=False, high_open=False):
    """Strings that a float option in [low, high] (ends open as given) must refuse, nan and infinities included."""
    # Filters rather than exclude_min/max: -0.0 must not pass for "below 0".
    below = st.floats(max_value=low, allow_nan=False).filter(lambda x: x <= low if low_open else x < low)
    above = st.floats(min_value=high, allow_nan=False).filter(lambda x: x >= high if high_open else x > high)
    return st.one_of(below.map(repr), above.map(repr), TEXT.filter(_fails(float)),
                     st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "1e999", "", "0,5", "1/2"]))


def bad_choice(choices):
    return st.one_of(TEXT.filter(lambda s: s not in choices),
                     st.sampled_from([c.upper() for c in choices if c.upper() not in choices]
                                     + [c + " " for c in choices] + [c[:-1] for c in choices if c[:-1]]))


def bad_strategies():
    from kerastl.train.strategies import parse_strategy

    near = ["top:0", "top:-1", "top:", "top:1.5", "top: 3", "top:x", "top", "heads", "ful", "auto:1", "head,full",
            "option1", "Top:0", "full!", "", "none"]
    return st.one_of(TEXT, st.sampled_from(near), st.integers().map(lambda n: f"top:{n}" if n < 1 else f"top:{n}x")
                     ).filter(_fails(parse_strategy))


BARE_WORD = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,15}", fullmatch=True).filter(lambda w: w not in (".", ".."))


def bad_backbone_specs(world, *, inspect=False):
    """Backbone specs that resolve to nothing usable (for `inspect`, a fine-tuned model directory is valid)."""
    from kerastl.backbones import keras_application_names

    names = set(keras_application_names())
    return st.one_of(
        BARE_WORD,  # ambiguous: keras:? hub:? a path?
        st.one_of(BARE_WORD, TEXT).filter(lambda n: n.strip() not in names).map(lambda n: f"keras:{n}"),
        st.sampled_from(["hub:", "hub:/no/such/module", "hub:https://example.invalid/m/1", "hub:ftp://x/y",
                         "hub:file:///etc", f"hub:{world['plain']}", f"hub:{world['empty']}"]),
        TEXT.map(lambda n: f"/nonexistent/{n}.keras"),
        st.sampled_from([world["garbage"], world["h5"], world["plain"], world["empty"], "", "  ", world["data"]]
                        + ([] if inspect else [world["model"]])).map(str),
    )


def missing_paths(world):
    return TEXT.map(lambda n: str(world["root"] / "missing" / (n.replace("/", "_") or "x")))


# --------------------------------------------------------------------------------------------- finetune


FINETUNE_NUMBERS = {
    "--epochs": bad_ints(1), "--batch-size": bad_ints(1), "--shots": bad_ints(1), "--head-epochs": bad_ints(0),
    "--image-size": bad_ints(8, 1024), "--seed": TEXT.filter(_fails(int)),
    # "auto" is a learning rate too (the range test's suggestion).
    "--learning-rate": bad_floats(0, 10, low_open=True).filter(lambda v: v != "auto"),
    "--validation-split": bad_floats(0, 1, high_open=True),
    "--label-smoothing": bad_floats(0, 1, high_open=True), "--layer-decay": bad_floats(0, 1, low_open=True),
}


def _finetune_args(world, **options):
    args = {"--data": world["data"], "--backbone": world["backbone"], "--strategy": "head", "--epochs": "1",
            "--batch-size": "8", "--out": world["never"]}
    args.update(options)
    return ["finetune", *[str(x) for pair in args.items() for x in pair]]


@FAST
@given(data=st.data())
def test_finetune_bad_numbers(world, data):
    option = data.draw(st.sampled_from(sorted(FINETUNE_NUMBERS)))
    value = data.draw(FINETUNE_NUMBERS[option])
    _assert_one_line(_run(*_finetune_args(world, **{option: value})), codes=(2,))


LR_FIND_NUMBERS = {
    "--lr-min": bad_floats(0, 10, low_open=True), "--lr-max": bad_floats(0, 100, low_open=True),
    "--steps": bad_ints(10, 10_000), "--batch-size": bad_ints(1), "--shots": bad_ints(1),
    "--validation-split": bad_floats(0, 1, high_open=True),
}


@FAST
@given(data=st.data())
def test_lr_find_bad_numbers(world, data):
    option = data.draw(st.sampled_from(sorted(LR_FIND_NUMBERS)))
    value = data.draw(LR_FIND_NUMBERS[option])
    args = {"--backbone": world["backbone"], "--steps": "10", option: value, "--out": world["never"]}
    result = _run("lr-find", str(world["data"]), *[str(x) for pair in args.items() for x in pair])
    _assert_one_line(result, codes=(2,))


@FAST
@given(strategy=bad_strategies())
def test_finetune_bad_strategy(world, strategy):
    result = _run(*_finetune_args(world, **{"--strategy": strategy}))
    _assert_one_line(result, codes=(2,))
    assert "--strategy" in result.stderr


@FAST
@given(optimizer=bad_choice(["adam", "sgd"]))
def test_finetune_bad_optimizer(world, optimizer):
    _assert_one_line(_run(*_finetune_args(world, **{"--optimizer": optimizer})), codes=(2,))


@FAST
@given(distribute=bad_choice(["mirrored", "multiworker"]))
def test_finetune_bad_distribute(world, distribute):
    result = _run(*_finetune_args(world, **{"--distribute": distribute}))
    _assert_one_line(result, codes=(2,))
    assert "--distribute" in result.stderr


@FAST
@given(data=st.data())
def test_finetune_bad_backbone_spec(world, data):
    spec = data.draw(bad_backbone_specs(world))
    _assert_one_line(_run(*_finetune_args(world, **{"--backbone": spec})))


@FAST
@given(data=st.data())
def test_finetune_bad_weights_and_cut(world, data):
    if data.draw(st.booleans()):
        spec = data.draw(st.sampled_from(["keras:MobileNetV2", str(world["backbone"])]))
        weights = data.draw(TEXT.filter(lambda w: w not in ("imagenet", "none", "pretrained")))
        _assert_one_line(_run(*_finetune_args(world, **{"--backbone": spec, "--weights": weights})), codes=(2,))
    else:
        layers = {"pixels", "preprocessing", "conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3"}
        cut = data.draw(TEXT.filter(lambda c: c and c not in layers))
        result = _run(*_finetune_args(world, **{"--cut": cut}))
        _assert_one_line(result, codes=(2,))
        assert "--cut" in result.stderr


@FAST
@given(data=st.data())
def test_finetune_bad_paths(world, data):
    kind = data.draw(st.sampled_from(["missing data", "data is a file", "out is a file", "empty"]))
    if kind == "missing data":
        args = _finetune_args(world, **{"--data": data.draw(missing_paths(world))})
    elif kind == "data is a file":
        args = _finetune_args(world, **{"--data": data.draw(st.sampled_from([world["plain"], world["garbage"]]))})
    elif kind == "out is a file":
        args = _finetune_args(world, **{"--out": world["plain"]})
    else:
        args = _finetune_args(world, **{data.draw(st.sampled_from(["--data", "--out"])): ""})
    _assert_one_line(_run(*args))
    assert world["plain"].read_text() == "just text"


# --------------------------------------------------------------------------- evaluate, predict, inspect


def bad_models(world):
    return st.one_of(missing_paths(world), st.sampled_from(
        [world["garbage"], world["h5"], world["plain"], world["empty"], world["data"], world["backbone"], ""]
    ).map(str))


@FAST
@given(data=st.data())
def test_evaluate_bad_inputs(world, data):
    kind = data.draw(st.sampled_from(["model", "data", "batch size"]))
    model, folder, batch = str(world["model"]), str(world["data"]), "4"
    if kind == "model":
        model = data.draw(bad_models(world))
    elif kind == "data":
        folder = data.draw(st.one_of(missing_paths(world), st.sampled_from(
            [str(world["plain"]), str(world["empty"]), "", str(world["root"])])))
    else:
        batch = data.draw(bad_ints(1))
    _assert_one_line(_run("evaluate", model, "--data", folder, "--batch-size", batch))


@FAST
@given(data=st.data())
def test_predict_bad_inputs(world, data):
    image = world["data"] / "circles" / "000.png"
    if data.draw(st.booleans()):
        args = [data.draw(bad_models(world)), image]
    else:
        files = data.draw(st.lists(st.one_of(missing_paths(world), st.sampled_from(
            [str(world["plain"]), str(world["garbage"]), str(world["empty"]), ""])), min_size=1, max_size=3))
        args = [world["model"], image, *files]
    _assert_one_line(_run("predict", *args))


def test_predict_without_files_is_a_usage_error(world):
    _assert_one_line(_run("predict", world["model"]), codes=(2,))


def test_a_backbone_is_not_a_classifier(world):
    image = world["data"] / "circles" / "000.png"
    for args in (["predict", world["backbone"], image], ["evaluate", world["backbone"], "--data", world["data"]]):
        result = _run(*args)
        _assert_one_line(result, codes=(1,))
        assert "not class scores" in result.stderr


@FAST
@given(data=st.data())
def test_inspect_bad_targets(world, data):
    if data.draw(st.booleans()):
        _assert_one_line(_run("inspect", data.draw(bad_backbone_specs(world, inspect=True))))
    else:
        size = data.draw(bad_ints(8, 1024))
        _assert_one_line(_run("inspect", "keras:MobileNetV2", "--image-size", size), codes=(2,))


# --------------------------------------------------------------------------------------------- pretrain


PRETRAIN_OPTIONS = {
    "--image-size": bad_ints(8, 1024), "--classes": bad_ints(2), "--epochs": bad_ints(1), "--steps": bad_ints(1),
    "--steps-per-epoch": bad_ints(1), "--batch-size": bad_ints(1), "--validation-steps": bad_ints(1),
    "--seed": TEXT.filter(_fails(int)), "--sample-rate": bad_ints(8000, 96000),
    "--sequence-length": bad_ints(4, 4096), "--vocabulary-size": bad_ints(100, 1_000_000),
    "--learning-rate": bad_floats(0, 10, low_open=True), "--clip-seconds": bad_floats(0.25, 30),
    "--precision": bad_choice(["auto", "float32", "mixed"]), "--strategy": bad_choice(["auto", "mirrored",
                                                                                       "multiworker"]),
    "--channels": bad_choice(["1", "3"]),
}


def _pretrain_args(world, **options):
    args = {"--data": "synthetic:glyphs", "--arch": "smallnet-s", "--classes": "4", "--steps": "1",
            "--batch-size": "4", "--precision": "float32", "--out": world["never"]}
    args.update(options)
    return ["pretrain", *[str(x) for pair in args.items() for x in pair], "--no-xla"]


@FAST
@given(data=st.data())
def test_pretrain_bad_options(world, data):
    option = data.draw(st.sampled_from(sorted(PRETRAIN_OPTIONS)))
    value = data.draw(PRETRAIN_OPTIONS[option])
    _assert_one_line(_run(*_pretrain_args(world, **{option: value})), codes=(2,))


@FAST
@given(data=st.data())
def test_pretrain_bad_sources(world, data):
    source = data.draw(st.one_of(
        missing_paths(world),
        st.sampled_from(["", "foo:bar", "synthetic:", "corpus:", "http://example.invalid/data", str(world["plain"]),
                         str(world["empty"])]),
        BARE_WORD.filter(lambda n: n not in ("glyphs", "fractals", "pseudowords")).map(lambda n: f"synthetic:{n}"),
        BARE_WORD.filter(lambda n: n != "python-docs").map(lambda n: f"corpus:{n}"),
    ))
    _assert_one_line(_run(*_pretrain_args(world, **{"--data": source})))


@FEW
@given(arch=st.one_of(BARE_WORD, TEXT))
def test_pretrain_bad_arch(world, arch):
    from kerastl.backbones import keras_application_names
    from kerastl.backbones.archs import SMALLNETS

    valid = set(keras_application_names()) | set(SMALLNETS)
    if arch.removeprefix("keras:") in valid:
        return
    # A tiny folder: the source is read before the architecture is built.
    result = _run(*_pretrain_args(world, **{"--data": world["data"], "--arch": arch, "--image-size": "16"}))
    _assert_one_line(result, codes=(2,))
    assert "--arch" in result.stderr


def test_pretrain_unknown_tfds_dataset(world):
    _assert_one_line(_run(*_pretrain_args(world, **{"--data": "tfds:no_such_dataset_kerastl"})))


def test_pretrain_out_is_a_file(world):
    _assert_one_line(_run(*_pretrain_args(world, **{"--out": world["plain"]})), codes=(1,))


# ----------------------------------------------------------------------------------------------- export


@FAST
@given(data=st.data())
def test_export_bad_options(world, data):
    """Each case has exactly one fault, so a valid export never starts."""
    fault = data.draw(st.sampled_from(["format", "quantize", "saved_model quantized", "int8 without data",
                                       "drop without data", "drop out of range", "model", "tflite suffix"]))
    fmt = data.draw(st.sampled_from(["saved_model", "tflite", "all"]))
    quantize = "none"
    model, extra = world["model"], []
    out = world["never"] / "model.tflite" if fmt == "tflite" else world["never"]
    if fault == "format":
        fmt = data.draw(bad_choice(["saved_model", "tflite", "all"]))
    elif fault == "quantize":
        quantize = data.draw(bad_choice(["none", "float16", "dynamic", "int8", "int8-per-tensor"]))
    elif fault == "saved_model quantized":
        fmt, out = "saved_model", world["never"]
        quantize = data.draw(st.sampled_from(["float16", "dynamic", "int8"]))
    elif fault == "int8 without data":
        fmt, quantize, out = "all", "int8", world["never"]
    elif fault == "drop without data":
        extra = ["--max-accuracy-drop", data.draw(st.sampled_from(["0", "0.01", "1"]))]
    elif fault == "drop out of range":
        extra = ["--max-accuracy-drop", data.draw(bad_floats(0, 1)), "--data", world["data"]]
    elif fault == "model":
        # Not the backbone file: export.py does not check that a model outputs class scores (a known gap).
        model = data.draw(bad_models(world).filter(lambda m: m != str(world["backbone"])))
    else:
        fmt = "tflite"
        out = world["never"] / data.draw(TEXT.filter(lambda n: "/" not in n and not n.endswith(".tflite")))
    result = _run("export", model, "--format", fmt, "--quantize", quantize, "--out", out, *extra)
    _assert_one_line(result)


# ---------------------------------------------------------------------------------- any argv, and --debug


TOKENS = ["finetune", "evaluate", "predict", "inspect", "pretrain", "export", "backbones", "--data", "--backbone",
          "--out", "--strategy", "--epochs", "--format", "--quantize", "--arch", "--image-size", "--trust",
          "--batch-size", "--json", "--offline", "-1", "0", "nan", "keras:", "hub:", "top:0", "x.keras", "--"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.one_of(st.sampled_from(TOKENS), TEXT), max_size=6))
def test_any_argv_never_shows_a_traceback(world, argv):
    """Junk argument lists: help and listings may succeed; everything else fails in one line."""
    if not argv or "--help" in argv or "-h" in argv or "--version" in argv:
        return  # help (bare `kerastl` shows it too: test_bare_kerastl_shows_the_help)
    result = _run(*argv)
    if result.exit_code == 0:
        return
    _assert_one_line(result)


def test_bare_kerastl_shows_the_help():
    result = _run()
    assert result.exit_code == 2
    assert result.stderr.startswith("Usage:") and "Commands:" in result.stderr and "Error" not in result.stderr


def test_debug_shows_the_traceback_of_a_runtime_error(world):
    result = _run("evaluate", world["root"] / "missing-model", "--data", world["data"], debug=True)
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: model file not found")
    # The same error without --debug: one line.
    _assert_one_line(_run("evaluate", world["root"] / "missing-model", "--data", world["data"]), codes=(1,))


def test_debug_only_counts_before_the_command(world):
    """`--debug` after the command is an unknown option or another option's value, not the group's flag."""
    result = _run("evaluate", "--debug", world["model"], "--data", world["data"])
    _assert_one_line(result, codes=(2,))
    result = _run("evaluate", world["root"] / "missing-model", "--data", "--debug")
    _assert_one_line(result, codes=(1,))


def test_nan_is_not_a_number_anywhere(world):
    """click.FloatRange lets nan through its bounds check; every float option refuses it while parsing."""
    for args in (_finetune_args(world, **{"--learning-rate": "nan"}),
                 _finetune_args(world, **{"--validation-split": "nan"}),
                 _pretrain_args(world, **{"--clip-seconds": "nan"}),
                 ["export", world["model"], "--format", "tflite", "--max-accuracy-drop", "nan", "--data",
                  world["data"], "--out", world["never"] / "m.tflite"]):
        result = _run(*args)
        _assert_one_line(result, codes=(2,))
        assert "is not a number" in result.stderr
    assert math.isnan(float("nan"))  # the premise


def test_empty_paths_are_refused(world):
    """"" is the current directory to Python: `--out "$UNSET"` must not write the run into it."""
    for args in (_finetune_args(world, **{"--out": ""}), ["evaluate", "", "--data", world["data"]],
                 ["predict", world["model"], ""], _pretrain_args(world, **{"--data": ""})):
        result = _run(*args)
        _assert_one_line(result, codes=(2,))
        assert "empty path" in result.stderr
    assert not any(os.scandir("."))  # nothing written into the working directory
