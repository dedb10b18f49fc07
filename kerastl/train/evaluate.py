"""How well a classifier does: loading a fine-tuned model, metrics, `evaluate` and `predict`."""

from __future__ import annotations

import json
from pathlib import Path

from kerastl.errors import KerastlError
from kerastl.reporting.text import with_article

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.png"


def classification_metrics(y_true, probabilities, class_names) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows: true, columns: predicted).

    Returns a JSON-able dict: `{"accuracy", "n", "per_class": {name: {...}}, "confusion_matrix", "class_names"}`.
    """
    import numpy as np

    y_true = np.asarray(y_true, dtype=int)
    k = len(class_names)
    y_pred = np.asarray(probabilities).argmax(axis=-1) if len(y_true) else np.zeros(0, int)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        tp = int(confusion[i, i])
        support = int(confusion[i].sum())
        predicted = int(confusion[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                           "support": support}
    n = len(y_true)
    return {
        "accuracy": round(float((y_true == y_pred).mean()), 6) if n else None,
        "n": n,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
    }


def read_labels(path) -> list[str]:
    """Class names, one per line, in output order."""
    labels = [line.rstrip("\r\n") for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [label for label in labels if label]


def output_record(directory, names) -> dict:
    """`{name: {"sha256", "bytes"}}` of the files `names` in `directory`: what metrics.json records of the set
    it was written with (`check_output_set`)."""
    from kerastl.net import sha256_file

    directory = Path(directory)
    return {name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
            for name in names}


def check_output_set(model_path) -> None:
    """Refuses a model.keras or labels.txt that is not the one its metrics.json was written with, so a stale
    labels.txt with the right number of classes cannot relabel a model silently. Models without such a record
    (older kerastl, a .keras file of your own) pass.

    Raises:
        KerastlError: a recorded file is missing or has another sha256.
    """
    from kerastl.net import sha256_file

    model_path = Path(model_path)
    metrics_path = model_path.parent / METRICS_FILE
    try:
        record = json.loads(metrics_path.read_text(encoding="utf-8")).get("outputs")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(record, dict) or model_path.name not in record:
        return
    for name, expected in record.items():
        path = model_path.parent / name
        if not isinstance(expected, dict) or not path.is_file() or sha256_file(path) != expected.get("sha256"):
            raise KerastlError(f"{path} is not the file written with {metrics_path} (its sha256 differs or it is "
                               "missing): the files there come from different runs; restore the set that "
                               "`kerastl finetune` wrote together, or run it again")


def load_classifier(path, *, trust: bool = False):
    """Loads a `kerastl finetune` output directory or a `.keras` file.

    Returns `(model, class_names)`. The class names come from `labels.txt` (in the directory, or beside the
    `.keras` file); without one they are "0".."K-1".

    Raises:
        KerastlError: nothing loadable at `path`, labels.txt disagrees with the model's output width, or
            model.keras and labels.txt are not the pair metrics.json was written with (`check_output_set`).
    """
    from kerastl.backbones import load_keras_file
    from kerastl.core.atomic import recover_around

    path = Path(path)
    recover_around(path)  # a set whose commit a kill interrupted is completed before it is read
    model_path = path / MODEL_FILE if path.is_dir() else path
    if path.is_dir() and not model_path.is_file():
        raise KerastlError(f"{path} has no {MODEL_FILE}; give a `kerastl finetune` output directory or a .keras file")
    check_output_set(model_path)
    model = load_keras_file(model_path, trust=trust)
    width = int(model.output.shape[-1])
    labels_path = model_path.parent / LABELS_FILE
    labels = read_labels(labels_path) if labels_path.is_file() else [str(i) for i in range(width)]
    if len(labels) != width:
        raise KerastlError(f"{labels_path} lists {len(labels)} classes but the model outputs {width}; "
                           "restore the labels.txt written with the model")
    return model, labels


def _require_class_scores(model, path) -> None:
    """Raises KerastlError unless `model` outputs one score per class, (batch, classes): a backbone's feature map
    would otherwise be read as hundreds of "classes"."""
    shape = tuple(model.output.shape)
    if len(shape) != 2:
        raise KerastlError(f"{path} outputs shape {shape}, not class scores (batch, classes): it is a backbone or "
                           "another kind of model; give a `kerastl finetune` output")


def evaluate(model_path, data_dir, *, batch_size: int = 64, trust: bool = False) -> dict:
    """Evaluates a classifier on a class-per-folder directory, matching classes by folder name to its labels.

    Folders whose names the model does not know are an error (their images cannot be scored); classes of the
    model that have no folder are simply absent from the data. Undecodable files are skipped and listed.

    Returns `classification_metrics(...)` plus `"skipped"` (path and reason per skipped file).

    Raises:
        KerastlError: a folder names a class the model does not have, or the data cannot be read.
    """
    import numpy as np

    from kerastl.data import (
        check_data_type,
        class_indices,
        drop_undecodable,
        input_spec,
        load_inputs,
        scan_folder,
    )

    model, labels = load_classifier(model_path, trust=trust)
    _require_class_scores(model, model_path)
    spec = input_spec(model)
    check_data_type(data_dir, spec.modality, subject=f"the model takes {spec.modality} input",
                    fix=f"evaluate it on a folder of {spec.modality} files")
    # One class folder is enough here: scoring a model on some of its classes is a fair question.
    scan = drop_undecodable(scan_folder(data_dir, spec.modality, min_classes=1))
    known = class_indices(data_dir, scan.class_names, labels)
    files = [p for paths in scan.files for p in paths]
    y_true = [i for i, paths in zip(known, scan.files) for _ in paths]
    inputs = load_inputs(spec, files, batch_size=batch_size)
    probabilities = model.predict(inputs, batch_size=batch_size, verbose=0)
    metrics = classification_metrics(np.asarray(y_true), probabilities, labels)
    # Report only the classes present in the folder.
    metrics["per_class"] = {labels[i]: metrics["per_class"][labels[i]] for i in known}
    metrics["skipped"] = [{"path": p, "reason": r} for p, r in scan.skipped]
    return metrics


def predict(model_path, files, *, batch_size: int = 64, trust: bool = False) -> list[tuple[str, str, float]]:
    """Classifies image, WAV or text files (the model's input type). Returns `(path, label, probability)` per
    file, in order.

    Raises:
        KerastlError: a file is missing or cannot be decoded (named, with the reason).
    """
    from kerastl.core.modality import get
    from kerastl.data import decode_error, input_spec, load_inputs

    model, labels = load_classifier(model_path, trust=trust)
    _require_class_scores(model, model_path)
    spec = input_spec(model)
    files = [Path(f) for f in files]
    for path in files:
        if not path.is_file():
            raise KerastlError(f"{'not a file' if path.exists() else 'file not found'}: {path}")
        error = decode_error(path, spec.modality)
        if error:
            kinds = ", ".join(ext.lstrip(".") for ext in get(spec.modality).extensions)
            raise KerastlError(f"cannot decode {path} as {with_article(spec.modality)} file ({error}); the model "
                               f"takes {kinds} files")
    inputs = load_inputs(spec, files, batch_size=batch_size)
    probabilities = model.predict(inputs, batch_size=batch_size, verbose=0)
    best = probabilities.argmax(axis=-1)
    return [(str(path), labels[i], float(probabilities[row, i])) for row, (path, i) in enumerate(zip(files, best))]
