"""Audio backbones on real recordings: sfx-cnn9 (aiSFX) and speech-embedding against the espeak backbone,
training from scratch, a classical baseline and linear probes, side by side, at few labels per class, over
several seeds.

Data (real recordings nobody on the project made, from Debian packages, built into --data as 16 kHz mono WAV,
never into the repository):
- drums: `hydrogen-drumkits`: the samples of Hydrogen's drum kits, labelled by instrument from each kit's
  drumkit.xml name (or the file name): kick, snare, closed hi-hat, open hi-hat, tom, crash, ride, clap (8
  classes; every velocity layer of an instrument is one clip). Each clip is the first `--seconds` from its
  onset (the first sample within 40 dB of its peak), since a crash or a ride rings far longer than a clip.
- speech: `asterisk-core-sounds-{en,es,fr,it,ru}-wav`: the telephone prompts of Asterisk (8 kHz recordings
  of one professional voice per language: Allison in en-US and es-MX, June in fr-CA, Carlo in it-IT, an
  IVR voice in ru-RU), labelled by language (5 classes): which language (and voice) a prompt is in.
  kerastl centre-crops each to `--seconds`.

For N labelled examples per class and each seed, every method sees the same split: finetune's (`N` to train
and one to validate each epoch, chosen by `tools/bench_fewshot_audio_text.few_shot_folder`), accuracy on all
the other clips:
- `<backbone> head` / `<backbone> full`: `kerastl.finetune` Option 1 (head on cached features) and Option 2
  (the head, then every layer at a tenth of the learning rate), the budgets of tools/bench_fewshot.py;
- `scratch`: the espeak backbone's architecture (smallnet-s on kerastl's log-mel) from random weights, every
  layer trained, BatchNormalization statistics recomputed on the training clips;
- `<backbone> probe`: scikit-learn's StandardScaler + LogisticRegression on the frozen backbone's features
  averaged over time (what the head sees), trained on the same N clips per class;
- `log-spectrum + LR`: the same logistic regression on the mean and standard deviation over time of each band
  of the 40-band log-mel spectrogram (kerastl's default audio front end).

    python tools/bench_real_audio.py [--data /tmp/kerastl-real-audio] [--debs DEB ...] [--sets drums speech]
        [--shots 5 10] [--seeds 3] [--json tools/results_real_audio.json]

Without --debs, the packages are fetched with `apt-get download` into --data (Debian's registry). Decoding
FLAC and AIFF needs the `soundfile` package (`pip install soundfile`).

tools/bench_real_transfer.py builds its `drums` and `speech` sets with this module's `debian_packages`,
`build_drums`, `build_speech` and `Features`, and measures them beside the image and text sets with every
column of issue #12 (this tool compares the two audio backbones with its own training budgets).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

# tools/ is on sys.path when run as a script.
from bench_fewshot import budget, method_config
from bench_fewshot_audio_text import accuracy_on, few_shot_folder, recalibrate_batchnorm

RATE = 16000
#: Seconds of each clip (drums from their onset) and of the classical features' window.
CLIP_SECONDS = 1.0
DRUM_PACKAGES = ["hydrogen-drumkits"]
SPEECH_LANGUAGES = ["en", "es", "fr", "it", "ru"]
SPEECH_PACKAGES = [f"asterisk-core-sounds-{lang}-wav" for lang in SPEECH_LANGUAGES]
# Order matters: the first pattern that matches an instrument's name (else its file name) labels it.
DRUM_CLASSES = [
    ("clap", r"clap"),
    ("hihat_open", r"(hi.?hat|\bhh|hat\b).*\b(open|opened|op)\b|\bohh|hhopen|openhat|hihatopen|\bho_\d"),
    ("hihat_closed", r"(hi.?hat|\bhh|hat\b).*\b(closed|cl)\b|closed.?hh|\bchh|hhclosed|closehihat|hihatclosed"),
    ("kick", r"kick|bass.?drum|^bd\b|^bd_|\bbd_\d"),
    ("snare", r"snare|^sd_\d|^sn_?\d"),
    ("tom", r"\btom|tom\d|floortom|^t[12]_\d|^ft_\d"),
    ("crash", r"crash(?!.*ride)|china|splash|^cc_\d"),
    ("ride", r"ride(?!.*crash)(?!.*(bell|cup))|^rc_\d|^rd\d?_"),
]
SKIP_DRUM = re.compile(r"stick|rim|roll|pedal|foot|bell|cup|semi|free|choke|swish|side")


# ------------------------------------------------------------------------------------------------ data


def debian_packages(names: list[str], debs: list[Path], work: Path) -> dict:
    """Unpacks the .deb files of `names` (from `debs`, else `apt-get download`) into `work/root`; returns
    {package: version}.

    Raises:
        SystemExit: a package is neither given nor downloadable.
    """
    given = {subprocess.run(["dpkg-deb", "-f", str(d), "Package"], capture_output=True, text=True,
                            check=True).stdout.strip(): d for d in debs}
    missing = [n for n in names if n not in given]
    if missing:
        done = subprocess.run(["apt-get", "download", *missing], cwd=work, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"error: apt-get download {' '.join(missing)} failed "
                             f"({done.stderr.strip().splitlines()[-1:]}); pass --debs with the .deb files")
        for name in missing:
            given[name] = next(work.glob(f"{name}_*.deb"))
    versions = {}
    for name in names:
        versions[name] = subprocess.run(["dpkg-deb", "-f", str(given[name]), "Version"], capture_output=True,
                                        text=True, check=True).stdout.strip()
        subprocess.run(["dpkg", "-x", str(given[name]), str(work / "root")], check=True)
    return versions


def decode(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the rate of a WAV, FLAC or AIFF file (libsndfile via `soundfile`)."""
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)


def write_clip(data: np.ndarray, rate: int, out: Path, *, seconds: float | None, from_onset: bool) -> bool:
    """Writes `data` as 16 kHz mono 16-bit WAV (resampled, from its onset and cut to `seconds` if asked, peak
    kept below full scale); False for a silent or empty recording."""
    import math

    from scipy import signal
    from scipy.io import wavfile

    if rate != RATE:
        common = math.gcd(rate, RATE)
        data = signal.resample_poly(data, RATE // common, rate // common)
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak < 1e-4:
        return False
    if from_onset:
        data = data[int(np.argmax(np.abs(data) >= peak * 0.01)):]
    if seconds is not None:
        data = data[:round(seconds * RATE)]
    data = data / max(1.0, float(np.abs(data).max()) / 0.99)
    out.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(out, RATE, (data * 32767).astype("int16"))
    return True


def drum_label(name: str) -> str | None:
    name = name.lower().replace("-", " ")
    if SKIP_DRUM.search(name):
        return None
    for label, pattern in DRUM_CLASSES:
        if re.search(pattern, name):
            return label
    return None


def drum_files(kits: Path):
    """(kit, file, label) for every labelled sample of every kit under `kits`."""
    for kit in sorted(p for p in kits.iterdir() if p.is_dir()):
        names = {}
        xml = kit / "drumkit.xml"
        if xml.is_file():
            root = ET.parse(xml).getroot()
            for element in root.iter():
                if element.tag.rsplit("}", 1)[-1] != "instrument":
                    continue
                children = {c.tag.rsplit("}", 1)[-1]: c for c in element}
                name = (children.get("name").text or "") if "name" in children else ""
                for node in element.iter():
                    if node.tag.rsplit("}", 1)[-1] == "filename" and node.text:
                        names[Path(node.text).name] = name
        for file in sorted(kit.iterdir()):
            if file.suffix.lower() not in (".wav", ".flac", ".aiff", ".aif"):
                continue
            instrument = names.get(file.name, "")
            label = drum_label(instrument) if instrument.strip() and not instrument.strip().isdigit() else None
            label = label or drum_label(file.stem)
            if label:
                yield kit.name, file, label


def build_drums(root: Path, out: Path, per_class: int, seconds: float, seed: int) -> dict:
    """The drums set in `out/<label>/`, at most `per_class` clips per label (a seeded draw); returns counts."""
    by_label = {}
    for kit, file, label in drum_files(root / "usr/share/hydrogen/data/drumkits"):
        by_label.setdefault(label, []).append((kit, file))
    rng, counts = random.Random(seed), {}
    for label, items in sorted(by_label.items()):
        rng.shuffle(items)
        written = 0
        for kit, file in items:
            if written >= per_class:
                break
            data, rate = decode(file)
            name = re.sub(r"[^A-Za-z0-9]+", "_", f"{kit}-{file.stem}") + ".wav"
            written += write_clip(data, rate, out / label / name, seconds=seconds, from_onset=True)
        counts[label] = written
    return counts


def build_speech(root: Path, out: Path, per_class: int, seed: int) -> dict:
    """The speech set in `out/<language>/`: `per_class` prompts of at least 0.5 s per language."""
    rng, counts = random.Random(seed), {}
    sounds = root / "usr/share/asterisk/sounds"
    for lang in SPEECH_LANGUAGES:
        files = sorted(p for d in sounds.glob(f"{lang}_*") for p in d.rglob("*.wav"))
        rng.shuffle(files)
        written = 0
        for file in files:
            if written >= per_class:
                break
            data, rate = decode(file)
            if len(data) < 0.5 * rate:
                continue
            name = re.sub(r"[^A-Za-z0-9]+", "_", str(file.relative_to(sounds).with_suffix(""))) + ".wav"
            written += write_clip(data, rate, out / lang / name, seconds=None, from_onset=False)
        counts[lang] = written
    return counts


def prepare(args) -> dict:
    """Builds the requested sets in args.data (once; kept for later runs); returns their descriptions."""
    sets = {}
    for name in args.sets:
        folder = args.data / name
        info_path = args.data / f"{name}.json"
        if not info_path.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            packages = DRUM_PACKAGES if name == "drums" else SPEECH_PACKAGES
            with tempfile.TemporaryDirectory(dir=args.data) as tmp:
                versions = debian_packages(packages, args.debs, Path(tmp))
                if name == "drums":
                    counts = build_drums(Path(tmp) / "root", folder, args.per_class, args.seconds, 0)
                else:
                    counts = build_speech(Path(tmp) / "root", folder, args.per_class, 0)
            info_path.write_text(json.dumps({"packages": versions, "clips": counts}, indent=1))
        sets[name] = {"folder": folder, **json.loads(info_path.read_text())}
    return sets


# ------------------------------------------------------------------------------------------------ methods


def split_files(folder: Path, shots: int, seed: int):
    """The training files and labels finetune draws from `folder` for (shots, seed)."""
    from kerastl.data import drop_undecodable, scan_folder, split

    parts = split(drop_undecodable(scan_folder(folder, "audio")), shots=shots, seed=seed)
    return parts.train_files, parts.train_labels, parts.class_names


def logistic_regression(train_x, train_y, test_x) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    return model.fit(train_x, train_y).predict(test_x)


class Features:
    """Per-file feature vectors of a whole set, computed once: a frozen backbone's features averaged over time
    (`spec`), or the log-spectrum statistics (`spec=None`)."""

    def __init__(self, spec: str | None, files: list[Path], seconds: float):
        from kerastl.inputs.audio import LogMelSpectrogram, load_waveforms, sample_rate_of

        if spec is None:
            clips = load_waveforms(files, sample_rate=RATE, num_samples=round(seconds * RATE))
            logmel = np.asarray(LogMelSpectrogram(sample_rate=RATE)(clips))[..., 0]
            vectors = np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)], axis=1)
        else:
            from kerastl.backbones import load_backbone

            model = load_backbone(spec).model
            clips = load_waveforms(files, sample_rate=sample_rate_of(model), num_samples=int(model.input.shape[1]))
            out = np.asarray(model.predict(clips, batch_size=32, verbose=0))
            vectors = out.reshape(len(files), -1, out.shape[-1]).mean(axis=1)
        self.index = {str(f): i for i, f in enumerate(files)}
        self.vectors = vectors

    def of(self, files) -> np.ndarray:
        return self.vectors[[self.index[str(Path(f).resolve())] for f in files]]


def finetune_accuracy(method: str, shots: int, seed: int, spec: str, data: Path, classes: int, args) -> float:
    from kerastl.train.finetune import finetune

    config = method_config(method, budget(shots, classes, args.batch_size, args.steps), shots=shots, seed=seed,
                           batch_size=args.batch_size, learning_rate=args.learning_rate)
    with tempfile.TemporaryDirectory() as tmp:
        folder, held_out, names = few_shot_folder(data, Path(tmp) / "data", shots, seed)
        result = finetune(folder, spec, config=config, verbose=0)
        if method == "scratch":
            recalibrate_batchnorm(result.model, folder, shots, seed, args.batch_size)
        return accuracy_on(result.model, result.class_names, held_out, names)


def sklearn_accuracy(features: Features, shots: int, seed: int, data: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folder, held_out, names = few_shot_folder(data, Path(tmp) / "data", shots, seed)
        train_files, train_labels, classes = split_files(folder, shots, seed)
        train = features.of([Path(f).resolve() for f in train_files])
        test = features.of([Path(f).resolve() for f in held_out])
        predicted = logistic_regression(train, np.asarray(train_labels), test)
        return float(np.mean([classes[int(p)] == n for p, n in zip(predicted, names)]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/kerastl-real-audio"))
    parser.add_argument("--debs", type=Path, nargs="*", default=[])
    parser.add_argument("--sets", nargs="+", default=["drums", "speech"], choices=["drums", "speech"])
    parser.add_argument("--per-class", type=int, default=60, help="Clips per class, at most.")
    parser.add_argument("--seconds", type=float, default=CLIP_SECONDS, help="Drum clips are cut to this from their onset.")
    parser.add_argument("--speech-backbone", default="saved_models/speech-embedding")
    parser.add_argument("--espeak-backbone", default="saved_models/espeak-words-smallnet-s")
    parser.add_argument("--sfx-backbone", default="saved_models/sfx-cnn9")
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=None, help="A subset of the methods (default: all).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=120, help="Optimizer steps per training phase.")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results_real_audio.json"))
    parser.add_argument("--keep", type=Path, default=None,
                        help="A results JSON of an earlier run with the same settings: its raw runs of the methods "
                             "not run now are kept in --json (and in the tables), marked with that run's command.")
    args = parser.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    args.debs = [d.resolve() for d in args.debs]

    backbones = {"sfx-cnn9": args.sfx_backbone, "speech-embedding": args.speech_backbone,
                 "espeak": args.espeak_backbone}
    methods = [f"{b} {m}" for b in backbones for m in ("head", "full", "probe")] + ["scratch", "log-spectrum + LR"]
    methods = [m for m in methods if args.methods is None or m in args.methods]
    sets = prepare(args)
    settings = {"seeds": args.seeds, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                "steps": args.steps, "seconds": args.seconds, "per_class": args.per_class}
    results, start = {}, time.perf_counter()
    kept, kept_from = {}, None
    if args.keep is not None:
        earlier = json.loads(args.keep.read_text())
        if earlier["settings"] != settings:
            raise SystemExit(f"error: --keep {args.keep} was run with {earlier['settings']}, not {settings}")
        kept_from = {"command": earlier["command"], "seconds": earlier["seconds"]}
        for key, scores in earlier["accuracy"].items():
            name, shots, method = key.split("/", 2)
            if method not in methods and name in sets and int(shots) in args.shots:
                kept[(name, int(shots), method)] = scores
        backbones = {**{b: s for b, s in earlier["backbones"].items()
                        if any(m.startswith(b + " ") for (_, _, m) in kept)}, **backbones}

    def write_json():
        payload = {
            "command": "python tools/bench_real_audio.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "backbones": backbones,
            "sets": {name: {"packages": info["packages"], "clips": info["clips"]} for name, info in sets.items()},
            "settings": settings,
            "accuracy": {f"{n}/{s}/{m}": v for (n, s, m), v in {**kept, **results}.items()},
            "seconds": round(time.perf_counter() - start, 1),
        }
        if kept_from is not None:
            payload["kept"] = {**kept_from, "methods": sorted({m for (_, _, m) in kept})}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")

    for name, info in sets.items():
        data = info["folder"]
        files = sorted(p.resolve() for p in data.glob("*/*.wav"))
        classes = len(info["clips"])
        print(f"{name}: {len(files)} clips, {classes} classes {info['clips']}, from {info['packages']}", flush=True)
        cache = {}
        for shots in args.shots:
            for method in methods:
                scores = []
                for seed in range(args.seeds):
                    backbone, _, kind = method.rpartition(" ")
                    if method == "log-spectrum + LR" or kind == "probe":
                        key = None if method == "log-spectrum + LR" else backbones[backbone]
                        if key not in cache:
                            cache[key] = Features(key, files, args.seconds)
                        scores.append(sklearn_accuracy(cache[key], shots, seed, data))
                    else:
                        spec = backbones["espeak"] if method == "scratch" else backbones[backbone]
                        scores.append(finetune_accuracy(kind, shots, seed, spec, data, classes, args))
                results[(name, shots, method)] = scores
                write_json()  # after every method, so that a long run's finished cells are never lost
                print(f"  {name} shots={shots:<3} {method:<24} {statistics.mean(scores):.4f} ± "
                      f"{statistics.pstdev(scores):.4f} ({time.perf_counter() - start:.0f} s)", flush=True)

    def cell(scores):
        return f"{100 * statistics.mean(scores):.1f} ± {100 * statistics.pstdev(scores):.1f}"

    table = {**kept, **results}
    shown = methods + sorted({m for (_, _, m) in kept}, key=lambda m: (m in ("scratch", "log-spectrum + LR"), m))
    for name, info in sets.items():
        print()
        print(f"{name}: {sum(info['clips'].values())} clips in {len(info['clips'])} classes, from "
              f"{', '.join(f'{p} {v}' for p, v in info['packages'].items())}; accuracy in % on the held-out clips, "
              f"mean ± std over {args.seeds} seeds.")
        print()
        print("| method | " + " | ".join(f"{s} labels per class" for s in args.shots) + " |")
        print("|---|" + "---|" * len(args.shots))
        for method in shown:
            if all((name, s, method) in table for s in args.shots):
                print(f"| {method} | " + " | ".join(cell(table[(name, s, method)]) for s in args.shots) + " |")
    write_json()
    return 0


if __name__ == "__main__":
    sys.exit(main())
