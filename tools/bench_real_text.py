"""Few-shot topic classification of real English text: kerastl's text backbones against TF-IDF + logistic
regression and linear probes, side by side in one run, over several seeds.

Data: fortune cookies by topic from the Debian package `fortunes` (fortune-mod's data files, written by many
people over decades; nobody on this project made them): the files computers, science, politics, sports, food,
love, law and medicine, one fortune per text (entries are separated by a line "%"), at most `--per-class`
per topic drawn with seed 0. None of it is in the distillation corpus (tools/english_corpus.py) or in the
shipped textcnn's pre-training corpus (Python docstrings). `apt-get download fortunes` + `dpkg -x` into a
scratch directory; nothing is kept.

For N labelled texts per class, mean ± std over seeds (each seed draws N + 1 texts per class: finetune trains
on N and validates each epoch on the one left; accuracy is measured on all the other texts):
- `<backbone> head` / `full`: `kerastl finetune --strategy head` (frozen backbone, new output layer) and
  `full` (the head first, then every layer at a tenth of the learning rate), as tools/bench_fewshot.py runs
  them;
- `<backbone> scratch`: the same architecture with random initial weights, every layer trained;
- `<backbone> probe C=..`: scikit-learn's LogisticRegression on the backbone's frozen features of the same N
  texts (standardised), for each C of `--cs`;
- `tfidf C=..`: TfidfVectorizer (sublinear tf, unigrams and bigrams) + LogisticRegression on the raw texts of
  the same N texts, for each C;
- `teacher probe C=..`: the same probe on all-MiniLM-L6-v2's sentence embeddings (tools/minilm_teacher.py), a
  reference for what the distilled backbone imitates (90 MB, not shipped).

Every C is shown, so the best baseline on the test texts is visible too (an optimistic choice for it).

    python tools/bench_real_text.py [--backbones SPEC ...] [--shots 5 10] [--seeds 5] [--json tools/results_real_text.json]

tools/bench_real_transfer.py builds its `text` and `text-bert` sets with `fortunes_folder` and measures them
beside the image and audio sets with every column of issue #12 (TF-IDF's C chosen by cross-validation there).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

# tools/ is on sys.path when run as a script.
from bench_fewshot_audio_text import few_shot_folder, run_one

TOPICS = ("computers", "science", "politics", "sports", "food", "love", "law", "medicine")
PACKAGE = "fortunes"


def fortunes_folder(root: Path, per_class: int, seed: int = 0) -> tuple[Path, dict]:
    """A class-per-folder .txt set of `TOPICS` from the `fortunes` package; returns it and its record."""
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{PACKAGE}_*.deb")):
        subprocess.run(["apt-get", "download", PACKAGE], cwd=debs, check=True, capture_output=True)
    deb = max(debs.glob(f"{PACKAGE}_*.deb"))
    unpacked = root / "unpacked"
    subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                             text=True).stdout.strip()
    rng = random.Random(seed)
    data, counts = root / "data", {}
    for topic in TOPICS:
        raw = (unpacked / "usr/share/games/fortunes" / topic).read_text(encoding="utf-8", errors="replace")
        texts = sorted({t.strip() for t in raw.split("\n%\n") if len(t.split()) >= 3})
        rng.shuffle(texts)
        counts[topic] = {"available": len(texts), "used": min(per_class, len(texts))}
        (data / topic).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts[:per_class]):
            (data / topic / f"{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
    return data, {"package": PACKAGE, "version": version, "topics": counts, "per_class": per_class}


def training_split(folder: Path, shots: int, seed: int):
    """The N training files per class that finetune uses for `folder` (its own seeded split)."""
    from kerastl.data import drop_undecodable, scan_folder, split

    parts = split(drop_undecodable(scan_folder(folder, "text")), shots=shots, seed=seed)
    return parts.train_files, [parts.class_names[i] for i in parts.train_labels]


def read_all(files) -> list[str]:
    from kerastl.inputs.text import read_text

    return [read_text(f) for f in files]


def logistic(train_x, train_y, test_x, test_y, c: float, scale: bool) -> float:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if scale:
        scaler = StandardScaler().fit(train_x)
        train_x, test_x = scaler.transform(train_x), scaler.transform(test_x)
    model = LogisticRegression(C=c, max_iter=5000).fit(train_x, train_y)
    return float(np.mean(model.predict(test_x) == np.asarray(test_y)))


def tfidf_scores(train_texts, train_y, test_texts, test_y, cs) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    train_x = vectorizer.fit_transform(train_texts)
    test_x = vectorizer.transform(test_texts)
    return {f"tfidf C={c:g}": logistic(train_x, train_y, test_x, test_y, c, scale=False) for c in cs}


class FeatureCache:
    """Frozen features of every text for one feature extractor, computed once per run."""

    def __init__(self, name: str, extract):
        self.name, self.extract, self.cache = name, extract, {}

    def __call__(self, files, texts):
        import numpy as np

        missing = [(f, t) for f, t in zip(files, texts) if str(Path(f).resolve()) not in self.cache]
        if missing:
            features = self.extract([t for _, t in missing])
            for (f, _), row in zip(missing, features):
                self.cache[str(Path(f).resolve())] = row
        return np.stack([self.cache[str(Path(f).resolve())] for f in files])


def backbone_extractor(spec: str):
    import numpy as np

    from kerastl.backbones import load_backbone

    model = load_backbone(spec).model

    def extract(texts):
        return np.asarray(model.predict(np.asarray(texts, dtype=object), batch_size=64, verbose=0))

    return extract


def teacher_extractor():
    import minilm_teacher

    teacher = minilm_teacher.Teacher()
    minilm_teacher.check(teacher)
    return lambda texts: teacher.encode(texts, batch_size=32)


def short_name(spec: str) -> str:
    return Path(spec).name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=None,
                        help="Text backbones to compare. Default: the shipped default text backbone and "
                             "saved_models/pydocs-files-textcnn-l.")
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=100, help="Fortunes per topic (fewer where a topic has "
                                                                   "fewer).")
    parser.add_argument("--cs", type=float, nargs="+", default=[1.0, 10.0, 100.0],
                        help="LogisticRegression C values of the TF-IDF baseline and the probes.")
    parser.add_argument("--methods", nargs="+", default=["head", "full", "scratch"],
                        choices=["head", "full", "scratch"])
    parser.add_argument("--no-teacher", action="store_true", help="Skip the teacher's probe.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=120, help="Optimizer steps per training phase.")
    parser.add_argument("--json", default=None, help="Also write the raw numbers to this file.")
    args = parser.parse_args()

    from kerastl.backbones import default_backbone_spec
    from kerastl.backbones.saved import saved_models_dir

    specs = args.backbones or list(dict.fromkeys(
        [default_backbone_spec("text"), str(saved_models_dir() / "pydocs-files-textcnn-l")]))
    work = Path(tempfile.mkdtemp(prefix="kerastl-realtext-"))
    data, record = fortunes_folder(work / "fortunes", args.per_class)
    classes = len(TOPICS)
    extractors = [FeatureCache(short_name(s), backbone_extractor(s)) for s in specs]
    if not args.no_teacher:
        extractors.append(FeatureCache("teacher", teacher_extractor()))
    results: dict[str, dict[str, list[float]]] = {}
    start = time.perf_counter()

    def add(shots, name, value):
        results.setdefault(str(shots), {}).setdefault(name, []).append(value)

    for shots in args.shots:
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                folder, held_out, names = few_shot_folder(data, Path(tmp) / "data", shots, seed)
                train_files, train_names = training_split(folder, shots, seed)
                train_texts, test_texts = read_all(train_files), read_all(held_out)
                for name, value in tfidf_scores(train_texts, train_names, test_texts, names, args.cs).items():
                    add(shots, name, value)
                for extractor in extractors:
                    train_x, test_x = extractor(train_files, train_texts), extractor(held_out, test_texts)
                    for c in args.cs:
                        add(shots, f"{extractor.name} probe C={c:g}",
                            logistic(train_x, train_names, test_x, names, c, scale=True))
            for spec in specs:
                for method in args.methods:
                    value = run_one(method, shots, seed, spec, data, classes, args)
                    add(shots, f"{short_name(spec)} {method}", value)
            print(f"  shots={shots} seed={seed}: " + ", ".join(
                f"{k} {v[-1]:.3f}" for k, v in results[str(shots)].items()) +
                f" ({time.perf_counter() - start:.0f} s)", flush=True)
    shutil.rmtree(work, ignore_errors=True)

    def cell(scores):
        return f"{100 * statistics.mean(scores):.1f} ± {100 * statistics.pstdev(scores):.1f}"

    print()
    print(f"Fortune cookies by topic ({classes} topics of the Debian package fortunes {record['version']}, "
          f"at most {args.per_class} per topic); N labelled texts per class, all others held out; accuracy in %, "
          f"mean ± std over {args.seeds} seeds; measured side by side in one run.")
    names = list(results[str(args.shots[0])])
    print()
    print("| method | " + " | ".join(f"N={s}" for s in args.shots) + " |")
    print("|---|" + "---|" * len(args.shots))
    for name in names:
        print(f"| {name} | " + " | ".join(cell(results[str(s)][name]) for s in args.shots) + " |")
    print()
    print("Ratios to TF-IDF + logistic regression (mean accuracy / mean accuracy of `tfidf C=1`, and of the best C "
          "on the test texts):")
    print()
    print("| method | " + " | ".join(f"N={s} / C=1 | N={s} / best C" for s in args.shots) + " |")
    print("|---|" + "---|---|" * len(args.shots))
    for name in names:
        if name.startswith("tfidf"):
            continue
        cells = []
        for s in args.shots:
            r = results[str(s)]
            mean = statistics.mean(r[name])
            best = max(statistics.mean(v) for k, v in r.items() if k.startswith("tfidf"))
            cells += [f"{mean / statistics.mean(r['tfidf C=1']):.2f}", f"{mean / best:.2f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        out = {"task": record, "backbones": specs, "seeds": args.seeds, "shots": args.shots,
               "steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
               "cs": args.cs, "seconds": round(time.perf_counter() - start, 1), "results": results}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
