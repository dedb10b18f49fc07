"""Deployment: a fine-tuned classifier as a TensorFlow SavedModel (servers) or a LiteRT/TFLite file (phones).

Both formats take the raw input (pixels, waveforms or strings), because kerastl models carry their
preprocessing as their first layers (rescaling, the log-mel front end, the tokenizer), so what runs on the
server or phone is exactly what Keras evaluated.

The package holds one module per format, as keras/src/export does:

- `saved_model`: the SavedModel (servers), `export_saved_model`;
- `tflite`: the LiteRT/TFLite file (phones), `convert_tflite`, `export_tflite`;
- `quantize`: the TFLite quantizations and which input types allow them;
- `verify`: each export checked against Keras (`verify_tflite`, `verify_saved_model`);
- `metadata`: the MediaPipe metadata packed into image, audio and text TFLite files;
- `inputs`, `paths`, `errors`: what every format shares (the model's input, where files go, errors).

`export` ties it together: every export is checked against Keras on held-out inputs (`verify_tflite`,
`verify_saved_model`), an optional accuracy gate decides whether it is kept, and files appear under their
final names only once everything has passed.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from kerastl.core.modality import get
from kerastl.errors import KerastlError, UsageError
from kerastl.export import metadata
from kerastl.export.errors import ExportRejected
from kerastl.export.inputs import (
    image_input_shape,
    model_input,
)
from kerastl.export.paths import (
    REPORT_FILE,
    SAVED_MODEL_DIR,
    TFLITE_FILE,
    output_paths,
)
from kerastl.export.quantize import (
    FULL_INTEGER,
    QUANTIZATIONS,
    check_quantization,
    quantize_dynamic_except,
    require_tflite_dependencies,
)
from kerastl.export.saved_model import (
    LABELS_ASSET,
    export_saved_model,
    serving_inputs,
    write_saved_model,
)
from kerastl.export.tflite import (
    LUMINANCE_WEIGHTS,
    VOCABULARY_FILE,
    companion_paths,
    convert_tflite,
    export_tflite,
    lite_model,
    rgb_input_model,
    tflite_inputs,
    vocabulary_path,
    write_vocabulary,
)
from kerastl.export.verify import (
    INTERPRETER_THREADS,
    MAX_CALIBRATION_EXAMPLES,
    MAX_VERIFY_EXAMPLES,
    SYNTHETIC_INPUTS,
    VerificationSet,
    _training_split,
    compare,
    synthetic_images,
    synthetic_inputs,
    to_grayscale,
    verification_set,
    verify_saved_model,
    verify_text_classifier,
    verify_tflite,
)

__all__ = [
    "FORMATS", "FULL_INTEGER", "INTERPRETER_THREADS", "LABELS_ASSET", "LUMINANCE_WEIGHTS",
    "MAX_CALIBRATION_EXAMPLES", "MAX_VERIFY_EXAMPLES", "QUANTIZATIONS", "REPORT_FILE",
    "SAVED_MODEL_DIR", "SYNTHETIC_INPUTS", "TFLITE_FILE", "VOCABULARY_FILE", "ExportRejected",
    "VerificationSet", "check_options", "check_quantization", "compare", "convert_tflite", "export",
    "export_saved_model", "export_tflite", "image_input_shape", "lite_model", "metadata",
    "model_input", "output_paths", "quantize_dynamic_except",
    "require_tflite_dependencies", "rgb_input_model", "serving_inputs", "synthetic_images",
    "synthetic_inputs", "tflite_inputs", "to_grayscale", "verification_set", "verify_saved_model",
    "verify_text_classifier", "verify_tflite", "vocabulary_path", "write_saved_model", "write_vocabulary",
]

FORMATS = ("saved_model", "tflite", "all")


# ---------------------------------------------------------------------------------------------------------
# Checks made before any work


def check_options(format: str, quantize: str, data, max_accuracy_drop) -> None:
    """Raises UsageError naming the first invalid or inconsistent option."""
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}. Received: {format}")
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received: {quantize}")
    if format == "saved_model" and quantize != "none":
        raise UsageError(f"--quantize {quantize} applies to TFLite; a SavedModel keeps float32 weights: use "
                         "--format tflite or all")
    if quantize in FULL_INTEGER and data is None:
        raise UsageError(f"--quantize {quantize} needs --data DIR: full-integer quantization calibrates on "
                         "representative inputs; give the class-per-folder directory the model was trained on")
    if max_accuracy_drop is not None:
        if not 0.0 <= float(max_accuracy_drop) <= 1.0:
            raise UsageError("--max-accuracy-drop is a fraction in [0, 1] (0.01 = one percentage point). "
                             f"Received: {max_accuracy_drop}")
        if data is None:
            raise UsageError("--max-accuracy-drop needs --data DIR: accuracy is measured on labelled "
                             "held-out images")


# ---------------------------------------------------------------------------------------------------------
# The command


def export(model, *, format: str = "tflite", quantize: str = "none", data=None, max_accuracy_drop=None, out,
           labels: list[str] | None = None, trust: bool = False, seed: int | None = None) -> dict:
    """Exports a classifier (image, audio or text) for serving (SavedModel) and/or phones (TFLite), checks it
    against Keras and returns the report.

    Args:
        model: a `kerastl finetune` output directory, a .keras file, or a loaded Keras model.
        format: saved_model, tflite or all.
        quantize: one of `QUANTIZATIONS` (TFLite only; int8 and int8-per-tensor need `data`).
        data: the class-per-folder directory of the model's input type. Exports are checked on its held-out
            part (the validation split that `kerastl finetune --seed 0` made) and int8 calibrates on its
            training part. Without it, exports are checked on synthetic inputs, for agreement with Keras only.
        max_accuracy_drop: a fraction (0.01 = one point); if any export's accuracy is lower than Keras' by
            more, nothing is written and `ExportRejected` is raised. Needs `data`.
        out: see `output_paths`: the .tflite file, the SavedModel directory, or for `all` a directory
            receiving saved_model/, model.tflite and export_report.json. A text model's TFLite file gets its
            vocabulary beside it (`vocabulary_path`).
        labels: class names of a loaded `model` (default: those in labels.txt, or "0".."K-1").
        trust: allow model files that run code (Lambda layers).
        seed: the split's seed. Default: the seed, validation split and shots recorded in the finetune
            directory's metrics.json (so that "held out" means what `finetune` held out), else 0.

    Returns:
        The report (also written as JSON, see `output_paths`): `modality`, `keras` and per-format `exports`
        figures from `verify_saved_model` and `verify_tflite` (for text, with `mediapipe`: the same file run by
        MediaPipe's TextClassifier on the raw texts, `Modality.task_figures`), `verified_on`, `files`, `passed`,
        and for text `tokenizer` (how to turn a string into the TFLite file's token ids, and how MediaPipe does).
        The accuracy gate applies to the formats' own figures, not to MediaPipe's.

    The files are one set: written under temporary names, fsynced, and committed together only once every
    export has been converted, verified and passed the gate (`_staged_outputs`). A failed export leaves the
    previous set untouched and no partial file. A killed one leaves the previous set or the new one, complete,
    never a mix: for `format="all"` on disk at every moment (one atomic directory swap, see `kerastl.core.atomic`);
    for a .tflite or SavedModel target beside other files, as kerastl sees it: a commit journal, which the
    next kerastl command reading or writing there completes first (a kill inside the few milliseconds of the
    renames leaves other programs a mix until that command runs).

    Raises:
        UsageError: an invalid option or combination (named).
        ExportRejected: an export's accuracy dropped by more than `max_accuracy_drop`.
        KerastlError: the model, data or output path is unusable, the data is of another input type than the
            model, a package is missing, or conversion fails.
    """
    from kerastl.core.atomic import recover_around

    check_options(format, quantize, data, max_accuracy_drop)
    recover_around(out)  # complete an export a kill interrupted, before looking at what is there
    targets = output_paths(out, format)
    keras_model, labels, source = _load(model, labels, trust)
    spec = model_input(keras_model)
    check_quantization(spec.modality, quantize)
    if "tflite" in targets:
        require_tflite_dependencies(spec.modality, quantize)
    modality = get(spec.modality)
    companions = {}
    if "tflite" in targets:
        modality.check_tflite(keras_model)
        companions = modality.companion_contents(keras_model)
        targets.update({key: path for key, path in companion_paths(targets["tflite"], format, modality).items()
                        if key in companions})
    samples = verification_set(data, labels, keras_model, calibrate=quantize in FULL_INTEGER,
                               **_training_split(model, seed))
    reference = keras_model.predict(samples.inputs, batch_size=64, verbose=0)

    report = {
        "model": source,
        "modality": spec.modality,
        "labels": list(labels),
        "input_shape": list(spec.shape),
        "format": format,
        "quantize": quantize,
        "verified_on": samples.description,
        "keras": _keras_figures(reference, samples.y_true),
        "exports": {},
        "max_accuracy_drop": max_accuracy_drop,
        "passed": None,
        "files": {key: str(path) for key, path in targets.items()},
    }
    if spec.sample_rate is not None:
        report["sample_rate"] = spec.sample_rate
    created = _missing_directories(targets.values())
    with _removed_if_empty_on_failure(created), _staged_outputs(targets, format) as staged:
        if "saved_model" in targets:
            write_saved_model(keras_model, labels, staged["saved_model"])
            figures = verify_saved_model(staged["saved_model"], samples.inputs, reference=reference,
                                         y_true=samples.y_true, signature=serving_inputs(keras_model)[-1][0])
            report["exports"]["saved_model"] = _with_drop(figures, report["keras"])
        if "tflite" in targets:
            blob = convert_tflite(keras_model, labels=labels, quantize=quantize, calibration=samples.calibration)
            staged["tflite"].write_bytes(blob)
            figures = verify_tflite(blob, samples.tflite_inputs, reference=reference, y_true=samples.y_true)
            figures["quantize"] = quantize
            figures.update(modality.tflite_figures(spec))
            task = modality.task_figures(blob, keras_model, samples.inputs, reference=reference,
                                         y_true=samples.y_true)
            if task is not None:
                figures["mediapipe"] = task
            report["exports"]["tflite"] = _with_drop(figures, report["keras"])
            for key, (write, about) in companions.items():
                write(staged[key])
                companion = next(c for c in modality.companion_files if c.key == key)
                if companion.report_key:
                    report[companion.report_key] = {**about, f"{key}_file": targets[key].name}
        failures = _gate(report["exports"], max_accuracy_drop)
        report["passed"] = not failures
        if failures:
            raise ExportRejected(
                f"{'; '.join(failures)}, more than --max-accuracy-drop {max_accuracy_drop:g}; nothing was written "
                "(try a milder --quantize, or more --data to calibrate int8)", report)
        staged["report"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


# What an export owns: for `all`, names in its directory (and every modality's companion files, see
# `_owned_names`); else the siblings of its target (a vocabulary that a previous text export left beside
# NAME.tflite goes with the set it belonged to).
_ALL_NAMES = (SAVED_MODEL_DIR, TFLITE_FILE, REPORT_FILE)


def _owned_names() -> tuple:
    from kerastl.core.modality import all_modalities

    return _ALL_NAMES + tuple(c.file_name for m in all_modalities() for c in m.companion_files)


def _commit_order(targets: dict) -> list:
    """saved_model, tflite, its companions, and the report, describing the rest, last."""
    companions = [key for key in targets if key not in ("saved_model", "tflite", "report")]
    return [key for key in ("saved_model", "tflite", *companions, "report") if key in targets]


@contextlib.contextmanager
def _staged_outputs(targets: dict, format: str):
    """Yields `{key: where to write it}` for `targets`; when the block ends without an exception, they all
    become the targets as one set (`kerastl.core.atomic`); on any exception, nothing is kept.

    `format="all"`: the new directory is staged beside `--out` and swapped with it; files in `--out` that the
    export does not write are kept. Other formats: each file is staged beside its target and the set committed
    through a journal.
    """
    from kerastl.core import atomic

    if format == "all":
        out = targets["report"].parent
        with atomic.staged_directory(out) as directory:
            yield {key: directory / path.name for key, path in targets.items()}
        atomic.commit_directory(directory, out, owned=_owned_names())
        return
    parent = targets["report"].parent
    parent.mkdir(parents=True, exist_ok=True)
    staged = {key: atomic.staged_path(path) for key, path in targets.items()}
    for path in staged.values():
        atomic.discard(path)
    try:
        yield staged
    except BaseException:
        for path in staged.values():
            atomic.discard(path)
        raise
    order = _commit_order(targets)
    entries = [(staged[key], targets[key]) for key in order]
    if "tflite" in targets:
        # Companions an earlier export of another modality left beside the .tflite leave with its set.
        stale = [path for key, path in companion_paths(targets["tflite"], format).items() if key not in targets]
        after = order.index("tflite") + 1
        entries[after:after] = [(None, path) for path in stale if path.exists()]
    atomic.commit_set(entries)


def _missing_directories(paths) -> list[Path]:
    """The directories that writing `paths` will create, deepest first."""
    missing = []
    for path in paths:
        parent = Path(path).parent
        while not parent.exists() and parent not in missing:
            missing.append(parent)
            parent = parent.parent
    return sorted(missing, key=lambda p: len(p.parts), reverse=True)


@contextlib.contextmanager
def _removed_if_empty_on_failure(directories):
    # A failed export into a new --out directory should not leave an empty one behind.
    try:
        yield
    except BaseException:
        for directory in directories:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only succeeds when empty
        raise


def _load(model, labels, trust):
    from kerastl.train.evaluate import load_classifier

    if isinstance(model, (str, os.PathLike)):
        keras_model, file_labels = load_classifier(model, trust=trust)
        return keras_model, list(labels or file_labels), str(model)
    width = int(model.output.shape[-1])
    labels = list(labels) if labels is not None else [str(i) for i in range(width)]
    if len(labels) != width:
        raise KerastlError(f"{len(labels)} labels for a model with {width} outputs; pass one label per output")
    return model, labels, model.name


def _keras_figures(reference, y_true) -> dict:
    import numpy as np

    accuracy = None
    if y_true is not None and len(y_true):
        accuracy = round(float((np.asarray(reference).argmax(-1) == y_true).mean()), 6)
    return {"accuracy": accuracy}


def _with_drop(figures: dict, keras_figures: dict) -> dict:
    drop = None
    if figures.get("accuracy") is not None and keras_figures["accuracy"] is not None:
        drop = round(keras_figures["accuracy"] - figures["accuracy"], 6)
    return {**figures, "accuracy_drop": drop}


def _gate(exports: dict, max_accuracy_drop) -> list[str]:
    if max_accuracy_drop is None:
        return []
    failures = []
    for name, figures in exports.items():
        drop = figures.get("accuracy_drop")
        if drop is not None and drop > max_accuracy_drop + 1e-9:
            label = name if name != "tflite" else f"tflite {figures['quantize']}"
            failures.append(f"{label} accuracy {figures['accuracy']:.2%} is {drop * 100:.2f} points below Keras'")
    return failures


