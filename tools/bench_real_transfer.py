"""Does transfer pay on real data nobody on the project made? Few-shot accuracy per modality, side by side with
training from scratch, a classical baseline and a linear probe of the same backbone, over several seeds.

A real set is one `RealTask` in `TASKS`, under its modality: a function that builds the labelled
class-per-folder set from an installed package (into a temporary directory; nothing is committed), the name of
its classical baseline and the function computing that baseline's input features. `--modality image` runs
both image sets (colour: the default EfficientNet-Lite0; grayscale: the default glyph backbone); audio and
text are measured by tools/bench_real_audio.py and tools/bench_real_text.py and will be folded in as entries.

Image: the stamps of Tux Paint, Debian's `tuxpaint-stamps-default` (GPL-2; mostly cut-out photographs of real
objects, animals and plants, some clip art), installed with

    apt-get install --no-install-recommends tuxpaint-stamps-default

(or, without root, `apt-get download tuxpaint-stamps-default && dpkg -x tuxpaint-stamps-default_*.deb DIR`
and `--tuxpaint-stamps DIR/usr/share/tuxpaint/stamps`). A class is a top-level stamp category (animals, food,
household, plants, seasonal, symbols, town, vehicles: every category with at least `--min-per-class` PNG
stamps, anywhere below it); byte-identical files are kept once; at most `--per-class` stamps per class are
drawn at random (seed 0). Each stamp's transparency is composited on white and the result written as an RGB
PNG (kerastl reads PNGs as RGB, which would otherwise keep whatever colour the transparent pixels hold).
None of them is an ImageNet photo, so EfficientNet-Lite0 never saw them. The JSON records the package,
version, licence, how classes were formed, and every file used.

Grayscale images (`image-grayscale`): scikit-learn's handwritten digits (1,797 8×8 scans by 43 people, UCI
optdigits, CC BY 4.0), as kerastl's `digits_folder` writes them, at most `--per-class` per digit drawn at random
(seed 0); classical baseline: the 64 raw pixels. The glyph backbone was pre-trained on synthetic pen strokes,
none of them digits; the project did tune on these digits before (tools/bench_fewshot.py set the auto rule).

For each seed, each class's stamps are shuffled; the first `max(shots) + 1` form the labelled pool and all the
others are held out, so every method and both label counts are scored on the same held-out images. For N
labelled images per class, the run's folder holds the first N + 1 of the pool: kerastl finetune trains on N
and validates on the one left (its own seeded split); the baselines train on exactly those N files
(`kerastl.data.split` with the same seed), and every method is scored once on the held-out images:

- `head`, `full`, `auto`: `kerastl.finetune` with `strategy` head, full (head phase, then every layer at a
  tenth of the learning rate) and auto, each with kerastl's default settings (10 epochs per phase, batch 32,
  Adam at 1e-3) unless `--epochs`/`--batch-size`/`--learning-rate` say otherwise. `auto` is always the shipped
  default, only `shots` and `seed` set. When it resolves to a strategy already run with every other setting
  equal (full, from one label per class), that run is its run: the row is reused, marked `same_run_as`, and
  the table says so.
- `scratch`: `from_scratch=True`, the same architecture from random weights, every layer trained for as many
  epochs as Option 2's two phases (`--scratch-epochs`), its BatchNormalization statistics then recomputed on
  the training images, as tools/bench_fewshot_audio_text.py does (both figures are kept).
- `classical`: the modality's classical baseline (image: pixels resized to 32x32 RGB, standardised,
  LogisticRegression);
- `probe`: LogisticRegression on the frozen pooled backbone features (the features kerastl's head sees),
  computed once per image.

Both logistic regressions choose C from a grid by stratified cross-validation on the N training images per
class (min(N, 5) folds), standardising inside each fold.

    python tools/bench_real_transfer.py --modality image           # measure; writes the JSON
    python tools/bench_real_transfer.py --print-readme             # the README table, from the JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TOOLS = Path(__file__).resolve().parent
RESULTS = TOOLS / "results_real_transfer.json"
METHODS = ("head", "full", "auto", "scratch", "classical", "probe")
# Up to 100: with fewer examples than features the classes are separable, and larger C change little
# but the solver's time.
C_GRID = [10.0 ** k for k in range(-4, 3)]


@dataclasses.dataclass(frozen=True)
class RealTask:
    """One real benchmark set.

    Attributes:
        name: its key in `TASKS` and in the JSON (`--task`).
        modality: the kerastl modality name (the `--modality` choice).
        build: `build(root, args) -> provenance`: writes the class-per-folder set into `root` and returns
            what the JSON records about it (package, version, licence, how classes were formed, files).
        classical: the classical baseline's name, as the table prints it.
        classical_features: `classical_features(files) -> (n, d) array`: the baseline's input features.
    """

    name: str
    modality: str
    build: Callable[[Path, argparse.Namespace], dict]
    classical: str
    classical_features: Callable[[list], object]


# ------------------------------------------------------------------------------------------------ image

TUXPAINT_PACKAGE = "tuxpaint-stamps-default"
TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")


def _package_version(stamps: Path) -> str:
    """The installed Debian package's version: dpkg's record, else the first line of the changelog that a
    `dpkg -x` unpacking leaves beside the stamps."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", TUXPAINT_PACKAGE], capture_output=True,
                             text=True, check=False)
        if out.returncode == 0 and out.stdout.strip() and stamps.resolve() == TUXPAINT_STAMPS.resolve():
            return out.stdout.strip()
    except OSError:
        pass
    changelog = stamps.parents[1] / "doc" / TUXPAINT_PACKAGE / "changelog.Debian.gz"
    if changelog.is_file():
        with gzip.open(changelog, "rt", encoding="utf-8") as handle:
            return handle.readline().split("(")[1].split(")")[0]
    return "unknown"


def tuxpaint_stamps(root: Path, args: argparse.Namespace) -> dict:
    """The Tux Paint stamps as a class-per-folder set of RGB PNGs in `root` (see the module docstring)."""
    from PIL import Image

    stamps = Path(args.tuxpaint_stamps)
    if not stamps.is_dir():
        sys.exit(f"the image benchmark needs Tux Paint's stamps: {stamps} is missing; run `apt-get install "
                 f"--no-install-recommends {TUXPAINT_PACKAGE}` or pass --tuxpaint-stamps DIR")
    rng = random.Random(0)
    classes, files = {}, {}
    for category in sorted(p for p in stamps.iterdir() if p.is_dir()):
        seen, unique = set(), []
        for path in sorted(category.rglob("*.png")):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                unique.append(path)
        if len(unique) < args.min_per_class:
            continue
        rng.shuffle(unique)
        chosen = sorted(unique[:args.per_class])
        classes[category.name] = {"available": len(unique), "used": len(chosen)}
        (root / category.name).mkdir(parents=True)
        files[category.name] = []
        for path in chosen:
            relative = path.relative_to(stamps).as_posix()
            rgba = Image.open(path).convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            flat.save(root / category.name / (relative.replace("/", "__")), format="PNG")
            files[category.name].append(relative)
    if len(classes) < 6:
        sys.exit(f"{stamps} has only {len(classes)} stamp categories with >= {args.min_per_class} PNGs; is it "
                 f"Tux Paint's stamps directory?")
    return {
        "name": "Tux Paint stamps by category",
        "package": f"debian:{TUXPAINT_PACKAGE}",
        "version": _package_version(stamps),
        "license": "GPL-2 (debian/copyright: Files: *, Copyright 2002-2022 Bill Kendrick)",
        "install": f"apt-get install --no-install-recommends {TUXPAINT_PACKAGE}",
        "content": "stamps for a children's paint program: mostly cut-out photographs of real objects, animals "
                   "and plants, some clip art; none from ImageNet",
        "classes_formed": f"class = top-level stamp category; PNG stamps anywhere below it, byte-identical "
                          f"files kept once; categories with >= {args.min_per_class} PNGs kept; at most "
                          f"{args.per_class} per class drawn at random (seed 0); transparency composited on "
                          "white, saved as RGB PNG",
        "classes": classes,
        "files": files,
    }


def pixel_features(files, size: int = 32, mode: str = "RGB"):
    """Each image resized whole to `size`x`size` (as kerastl resizes to the backbone's input) in PIL `mode`,
    flattened."""
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.open(f).convert(mode).resize((size, size), Image.BILINEAR),
                                dtype="float32").ravel() for f in files])


def grayscale_pixels(files):
    """The digits' 8×8 pixels as they are (resizing 8×8 to 8×8 changes nothing)."""
    return pixel_features(files, size=8, mode="L")


def sklearn_digits(root: Path, args: argparse.Namespace) -> dict:
    """scikit-learn's digits as a class-per-folder PNG set in `root` (see the module docstring)."""
    import sklearn

    from kerastl.data import digits_folder

    every = digits_folder(root.parent / "digits-all")
    rng = random.Random(0)
    classes, files = {}, {}
    for folder in sorted(every.iterdir(), key=lambda p: int(p.name)):
        paths = sorted(folder.iterdir())
        rng.shuffle(paths)
        chosen = sorted(paths[:args.per_class])
        (root / folder.name).mkdir(parents=True)
        for path in chosen:
            shutil.copyfile(path, root / folder.name / path.name)
        classes[folder.name] = {"available": len(paths), "used": len(chosen)}
        files[folder.name] = [path.name for path in chosen]
    return {
        "name": "scikit-learn's handwritten digits",
        "package": "pypi:scikit-learn",
        "version": sklearn.__version__,
        "license": "CC-BY-4.0 (UCI optdigits; scikit-learn itself BSD-3-Clause)",
        "install": "pip install scikit-learn",
        "content": "1,797 8×8 scans of digits written by 43 people; the glyph backbone was pre-trained on "
                   "synthetic pen strokes, none of them digits; tools/bench_fewshot.py tuned the auto rule on "
                   "them",
        "classes_formed": f"class = digit; at most {args.per_class} per class drawn at random (seed 0); 0-16 ink "
                          "levels scaled to 0-255 (kerastl.data.digits_folder)",
        "classes": classes,
        "files": files,
    }


TASKS = {
    "image": RealTask("image", "image", tuxpaint_stamps, "pixels 32×32 + logistic regression", pixel_features),
    "image-grayscale": RealTask("image-grayscale", "image", sklearn_digits, "pixels 8×8 + logistic regression",
                                grayscale_pixels),
}


# ------------------------------------------------------------------------------------------------ methods


def logistic_regression(train_x, train_y, test_x, test_y, seed: int) -> tuple[float, float]:
    """Held-out accuracy of standardise + LogisticRegression with C chosen by stratified CV on the training
    examples; returns (accuracy, chosen C)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = min(5, int(np.bincount(train_y).min()))
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
                          {"logisticregression__C": C_GRID},
                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed), n_jobs=1)
    search.fit(train_x, train_y)
    accuracy = float((search.predict(test_x) == test_y).mean())
    return accuracy, float(search.best_params_["logisticregression__C"])


def pooled_features(spec: str, files) -> object:
    """The frozen backbone's pooled features of `files`, as kerastl's head sees them (before its
    standardisation): the same decoding, resizing, preprocessing and pooling."""
    from kerastl.backbones import load_backbone
    from kerastl.data import input_spec, load_inputs
    from kerastl.train.head import build_classifier
    from kerastl.train.strategies import prepare_backbone

    backbone = load_backbone(spec)
    classifier = build_classifier(prepare_backbone(backbone.model), 2)
    return classifier.feature_model.predict(load_inputs(input_spec(backbone.model), files), batch_size=32,
                                            verbose=0)


def finetune_config(method: str, shots: int, seed: int, args):
    """The `FinetuneConfig` of a finetune method: kerastl's defaults with `shots` and `seed`, and the bench's
    `--epochs`/`--batch-size`/`--learning-rate` where given (never for `auto`, which is always the default)."""
    from kerastl.train.finetune import FinetuneConfig

    if method == "auto":
        # The shipped default: what `kerastl finetune DATA --shots N --seed S` does.
        return FinetuneConfig(shots=shots, seed=seed)
    common = {key: value for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                            ("learning_rate", args.learning_rate)) if value is not None}
    common.update(shots=shots, seed=seed)
    if method in ("head", "full") and args.head_solver is not None:
        common["head_solver"] = args.head_solver
    if method == "scratch":
        # The same architecture and as many epochs as Option 2's two phases (head, then every layer).
        epochs = args.scratch_epochs or (2 * common["epochs"] if "epochs" in common else None)
        return FinetuneConfig(**{**common, "epochs": epochs}, strategy="full", from_scratch=True)
    return FinetuneConfig(strategy=method, **common)


def same_run(method: str, shots: int, seed: int, args, done: dict) -> str | None:
    """The method already run on this split whose run `method`'s is: `auto` resolved (to head or full) with
    every other setting equal. Re-running it would repeat the same computation, so its row is reused."""
    from kerastl.train.strategies import parse_strategy, resolve_auto

    if method != "auto":
        return None
    resolved = dataclasses.replace(finetune_config("auto", shots, seed, args),
                                   strategy=resolve_auto(parse_strategy("auto"), shots).kind)
    for other in done:
        if other != "auto" and finetune_config(other, shots, seed, args) == resolved:
            return other
    return None


def accuracy_on(model, class_names, files, names) -> float:
    import numpy as np

    from kerastl.data import input_spec, load_inputs

    probabilities = model.predict(load_inputs(input_spec(model), files), batch_size=32, verbose=0)
    return float((probabilities.argmax(-1) == np.asarray([class_names.index(n) for n in names])).mean())


def run_finetune(method: str, folder: Path, shots: int, seed: int, spec: str, held_out, names, args) -> dict:
    from kerastl.train.finetune import finetune

    config = finetune_config(method, shots, seed, args)
    result = finetune(folder, spec, config=config, verbose=0)
    row = {"accuracy": accuracy_on(result.model, result.class_names, held_out, names),
           "strategy": result.metrics["strategy"], "epochs": config.epochs, "head_epochs": config.head_epochs,
           "batch_size": config.batch_size, "learning_rate": config.learning_rate,
           "timing": result.metrics["timing"]}
    if method == "scratch":
        from bench_fewshot_audio_text import recalibrate_batchnorm

        row["accuracy_moving_statistics"] = row["accuracy"]
        recalibrate_batchnorm(result.model, folder, shots, seed, config.batch_size)
        row["accuracy"] = accuracy_on(result.model, result.class_names, held_out, names)
    return row


def measure(task: RealTask, args, save: Callable[[dict], None]) -> dict:
    """Runs every method for every label count and seed on `task`'s real set; returns the JSON record, and
    hands the record so far to `save` after each split (a long run killed part-way keeps what it measured)."""
    import numpy as np

    from kerastl.backbones import default_backbone_spec
    from kerastl.data import scan_folder, split

    work = Path(tempfile.mkdtemp(prefix="kerastl-real-"))
    try:
        data = work / "data"
        dataset = task.build(data, args)
        spec = args.backbone or default_backbone_spec(task.modality, data)
        shown = spec
        if Path(spec).is_absolute() and Path(spec).is_relative_to(TOOLS.parent):
            shown = Path(spec).relative_to(TOOLS.parent).as_posix()  # saved_models/NAME, as the README names it
        class_names = sorted(p.name for p in data.iterdir() if p.is_dir())
        every = [f for c in class_names for f in sorted((data / c).iterdir())]
        index = {f: i for i, f in enumerate(every)}
        start = time.perf_counter()
        classical = task.classical_features(every)
        classical_seconds = time.perf_counter() - start
        start = time.perf_counter()
        features = pooled_features(spec, every)
        feature_seconds = time.perf_counter() - start
        print(f"{task.name}: {len(every)} files, {len(class_names)} classes, backbone {shown}; pooled "
              f"features {feature_seconds:.0f} s", flush=True)
        runs = []
        pool_size = max(args.shots) + 1
        record = {
            "task": task.name,
            "modality": task.modality,
            "backbone": shown,
            "dataset": dataset,
            "classical": task.classical,
            "held_out_per_seed": None,
            "shared_seconds": {"classical_features": round(classical_seconds, 2),
                               "pooled_features": round(feature_seconds, 2)},
            "settings": {"shots": args.shots, "seeds": args.seeds, "epochs": args.epochs,
                         "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                         "scratch_epochs": args.scratch_epochs, "C_grid": C_GRID,
                         "finetune": "FinetuneConfig(strategy=..., shots=N, seed=S) with the settings above "
                                     "(null: kerastl's default); auto always FinetuneConfig(shots=N, seed=S)"},
            "runs": runs,
        }
        for seed in range(args.seeds):
            rng = random.Random(seed)
            order = {}
            for name in class_names:
                files = sorted((data / name).iterdir())
                rng.shuffle(files)
                order[name] = files
            held_out = [f for name in class_names for f in order[name][pool_size:]]
            held_names = [f.parent.name for f in held_out]
            test_rows = [index[f] for f in held_out]
            test_y = np.asarray([class_names.index(n) for n in held_names])
            for shots in args.shots:
                folder = work / f"seed{seed}-shots{shots}"
                for name in class_names:
                    (folder / name).mkdir(parents=True)
                    for f in order[name][:shots + 1]:
                        (folder / name / f.name).symlink_to(f)
                parts = split(scan_folder(folder, task.modality), shots=shots, seed=seed)  # as finetune splits
                train_rows = [index[data / Path(p).parent.name / Path(p).name] for p in parts.train_files]
                train_y = np.asarray(parts.train_labels)
                done = {}
                for method in args.methods:
                    begin = time.perf_counter()
                    reused = same_run(method, shots, seed, args, done)
                    if reused:
                        row = {**done[reused], "same_run_as": reused}
                    elif method in ("classical", "probe"):
                        x = classical if method == "classical" else features
                        accuracy, c = logistic_regression(x[train_rows], train_y, x[test_rows], test_y, seed)
                        row = {"accuracy": accuracy, "C": c}
                    else:
                        row = run_finetune(method, folder, shots, seed, spec, held_out, held_names, args)
                    if not reused:
                        row.update(seconds=round(time.perf_counter() - begin, 2))
                    row.update(method=method, shots=shots, seed=seed, held_out=len(held_out))
                    done[method] = row
                    runs.append(row)
                    print(f"  seed {seed} shots {shots:<2} {method:<9} {row['accuracy']:.4f} "
                          f"({row['seconds']:.0f} s)", flush=True)
                shutil.rmtree(folder)
                record["held_out_per_seed"] = len(held_out)
                record["summary"] = summarise(runs)
                save(record)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarise(runs) -> dict:
    """Per label count and method: mean and population std of accuracy over seeds, mean wall seconds."""
    summary = {}
    for shots in sorted({r["shots"] for r in runs}):
        summary[str(shots)] = {}
        for method in METHODS:
            rows = [r for r in runs if r["shots"] == shots and r["method"] == method]
            if rows:
                accuracies = [r["accuracy"] for r in rows]
                summary[str(shots)][method] = {
                    "mean": round(statistics.mean(accuracies), 4),
                    "std": round(statistics.pstdev(accuracies), 4),
                    "seconds": round(statistics.mean(r["seconds"] for r in rows), 1),
                    "seeds": len(rows),
                }
    return summary


# ------------------------------------------------------------------------------------------------ tables

HEADERS = {"head": "head", "full": "full", "auto": "auto (default)", "scratch": "from scratch",
           "classical": "classical", "probe": "linear probe"}


def table_lines(record: dict) -> list[str]:
    """One modality's record as markdown: mean ± std accuracy (%) per column and the gaps to the classical
    baseline, then the mean wall seconds per run and the shared costs."""
    summary = record["summary"]
    methods = [m for m in METHODS if any(m in summary[s] for s in summary)]
    data = record["dataset"]
    seeds = max(v["seeds"] for s in summary.values() for v in s.values())
    licence = data["license"].split(" ")[0]
    lines = [(f"{record.get('task', record['modality'])}: {data['name']} ({data['package']} {data['version']}, {licence}), "
              f"{len(data['classes'])} classes ({', '.join(data['classes'])}), "
              f"{record['held_out_per_seed']} held-out images per seed; backbone `{record['backbone']}`; "
              f"classical = {record['classical']}; accuracy in %, mean ± std over {seeds} seeds."), ""]
    lines.append("| labels per class | " + " | ".join(HEADERS[m] for m in methods) +
                 " | default − classical | probe − classical |")
    lines.append("|---" * (len(methods) + 3) + "|")
    for shots, row in summary.items():
        cells = [f"{100 * row[m]['mean']:.1f} ± {100 * row[m]['std']:.1f}" if m in row else "" for m in methods]
        gaps = []
        for m in ("auto", "probe"):
            gaps.append(f"{100 * (row[m]['mean'] - row['classical']['mean']):+.1f}"
                        if m in row and "classical" in row else "")
        lines.append(f"| {shots} | " + " | ".join(cells + gaps) + " |")
    reused = sorted({(r["method"], r["same_run_as"], r["strategy"]) for r in record["runs"] if r.get("same_run_as")})
    for method, other, strategy in reused:
        lines += ["", (f"{method} resolved to {strategy} with every other setting equal to the {other} column's, "
                       "so its runs are that column's (one computation, not two).")]
    lines += ["", "Wall seconds per run (mean; 2 shared CPU cores):", ""]
    lines.append("| labels per class | " + " | ".join(HEADERS[m] for m in methods) + " |")
    lines.append("|---" * (len(methods) + 1) + "|")
    for shots, row in summary.items():
        lines.append(f"| {shots} | " + " | ".join(f"{row[m]['seconds']:.1f}" if m in row else ""
                                                  for m in methods) + " |")
    shared = record["shared_seconds"]
    lines += ["", (f"Once per run of the tool: pooled features of all {sum(c['used'] for c in data['classes'].values())} "
                   f"images {shared['pooled_features']:.0f} s, classical features {shared['classical_features']:.0f} s; "
                   f"whole measurement {record['wall_seconds'] / 60:.0f} min.")]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modalities = sorted({task.modality for task in TASKS.values()})
    parser.add_argument("--modality", nargs="+", default=modalities, choices=modalities)
    parser.add_argument("--task", nargs="+", default=None, choices=list(TASKS),
                        help="Only these sets of the modalities. Default: all of them.")
    parser.add_argument("--backbone", default=None, help="Default: the shipped default backbone for the data.")
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--epochs", type=int, default=None, help="head/full/scratch epochs per phase. Default: "
                        "kerastl's.")
    parser.add_argument("--batch-size", type=int, default=None, help="Default: kerastl's.")
    parser.add_argument("--learning-rate", type=float, default=None, help="Default: kerastl's.")
    parser.add_argument("--head-solver", default=None, choices=("steps", "probe"),
                        help="head and full: how the head is fitted on cached features. Default: kerastl's.")
    parser.add_argument("--scratch-epochs", type=int, default=None, help="Default: twice the epochs.")
    parser.add_argument("--per-class", type=int, default=40, help="At most this many images per class.")
    parser.add_argument("--min-per-class", type=int, default=None,
                        help="Classes with fewer images are left out. Default: max(shots) + 21, so that >= 20 "
                        "per class are held out.")
    parser.add_argument("--tuxpaint-stamps", default=str(TUXPAINT_STAMPS))
    parser.add_argument("--json", default=str(RESULTS), help="Where the raw results go (one record per set, merged into what the file holds).")
    parser.add_argument("--print-readme", action="store_true",
                        help="Print the README table from the JSON (no training).")
    args = parser.parse_args()
    tasks = [name for name, task in TASKS.items() if task.modality in args.modality and
             (args.task is None or name in args.task)]

    path = Path(args.json)
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if args.print_readme:
        if not saved:
            sys.exit(f"{path} holds no results; run the benchmark first")
        for name in tasks:
            if name in saved:
                print("\n".join(table_lines(saved[name])))
                print()
        return
    if args.min_per_class is None:
        args.min_per_class = max(args.shots) + 21
    if args.min_per_class < max(args.shots) + 21:
        sys.exit(f"--min-per-class {args.min_per_class} leaves fewer than 20 held-out images per class at "
                 f"{max(args.shots)} shots; raise it to {max(args.shots) + 21}")
    start = time.perf_counter()
    def save(record):
        record["wall_seconds"] = round(time.perf_counter() - start, 1)
        saved[record["task"]] = record
        path.write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    for name in tasks:
        record = measure(TASKS[name], args, save)
        print()
        print("\n".join(table_lines(record)))
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s; raw results in {path}")


if __name__ == "__main__":
    main()
