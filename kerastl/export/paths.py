"""Where an export writes: the names inside a `--format all` directory, and `output_paths`, which maps
`--out` to the files of each format and refuses targets it must not replace."""

from __future__ import annotations

from pathlib import Path

from kerastl.errors import KerastlError, UsageError

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
REPORT_FILE = "export_report.json"


def output_paths(out, format: str) -> dict:
    """Where `export` writes: {"saved_model": dir, "tflite": file, "report": file}, only the formats asked.

    - `format="all"`: `out` is a directory receiving `saved_model/`, `model.tflite` and `export_report.json`.
    - `format="tflite"`: `out` is the .tflite file; the report is `<out without .tflite>.report.json` beside it.
    - `format="saved_model"`: `out` is the SavedModel directory; the report is `<out>.report.json` beside it.

    Raises:
        UsageError: a .tflite target whose name does not end in .tflite.
        KerastlError: a target exists and is something else, e.g. a directory that is not a SavedModel (which
            is never replaced, so that `--out` pointing at a wrong directory cannot delete it).
    """
    out = Path(out)
    if format == "all":
        if out.exists() and not out.is_dir():
            raise KerastlError(f"--out {out} is a file; with --format all give a directory (it receives "
                               f"{SAVED_MODEL_DIR}/, {TFLITE_FILE} and {REPORT_FILE})")
        paths = {"saved_model": out / SAVED_MODEL_DIR, "tflite": out / TFLITE_FILE, "report": out / REPORT_FILE}
    elif format == "tflite":
        if out.suffix != ".tflite":
            raise UsageError(f"--out must name a .tflite file with --format tflite (e.g. {out.name}.tflite). "
                             f"Received: {out}")
        paths = {"tflite": out, "report": out.with_name(out.stem + ".report.json")}
    else:
        paths = {"saved_model": out, "report": out.with_name(out.name + ".report.json")}
    if "tflite" in paths and paths["tflite"].is_dir():
        raise KerastlError(f"{paths['tflite']} is a directory; give a .tflite file path for --out")
    target = paths.get("saved_model")
    if target is not None and target.exists():
        if not target.is_dir():
            raise KerastlError(f"{target} is a file; give a directory path for the SavedModel")
        if any(target.iterdir()) and not (target / "saved_model.pb").is_file():
            raise KerastlError(f"{target} is a non-empty directory that is not a SavedModel; give a new path "
                               "(an existing SavedModel there would be replaced, other directories never are)")
    return paths
