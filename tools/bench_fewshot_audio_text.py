"""Does transfer help for audio and text? Few-shot accuracy against training from scratch, over several seeds.

Audio: spoken words by espeak-ng (`apt-get install espeak-ng`): the ten Speech Commands keywords (yes, no, up,
down, left, right, on, off, stop, go) as classes, each spoken `--clips` times by a random English voice and
variant (male/female), speed (120-220 words per minute) and pitch (20-80), so the held-out clips are other
"speakers" than the training ones (tools/make_spoken_words.py, seed 1). Backbone: the shipped audio backbone,
pretrained on 300 other words spoken by espeak-ng (none of the keywords or their homophones). Training and
test speech come from the same synthesiser, so this measures transfer to new words and new voice settings,
an optimistic stand-in for transfer to human speech.

Text: which library a docstring paragraph comes from, for eight third-party libraries installed beside kerastl
(matplotlib.pyplot, scipy.stats, scipy.signal, scipy.optimize, scipy.linalg + numpy.linalg, PIL, click,
sklearn.metrics): the first paragraph (>= 5 words) of each function's, class' and module's docstring, read
with `ast` (nothing imported), up to `--per-class` per library. Backbone: the shipped text backbone, pretrained
on `corpus:python-docs-wide-files` (docstrings of the standard library and of the TensorFlow stack, labelled
by source file; none of these eight libraries): other text, other labels.

For N labelled examples per class, as mean ± std over seeds (each seed draws N + 1 examples per class: finetune
trains on N and validates each epoch on the one left; accuracy is measured once, on all the other examples):
- from scratch: the backbone's architecture with random initial weights (the tokenizer and the log-mel front
  end, which hold no trained weights, are kept), every layer trained, then its BatchNormalization statistics
  recomputed on the training examples (see `recalibrate_batchnorm`; both figures are printed);
- Option 1 (`head`): the pretrained backbone frozen, a new output layer trained;
- Option 2 (`full`): the head first, then every layer at a tenth of the learning rate.

    python tools/bench_fewshot_audio_text.py [--modality audio text] [--shots 5 10 20] [--seeds 3]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# tools/ is on sys.path when run as a script.
from bench_fewshot import budget, method_config
from make_spoken_words import KEYWORDS, speak

LIBRARIES = {
    "matplotlib.pyplot": ["matplotlib/pyplot.py"],
    "scipy.stats": ["scipy/stats"],
    "scipy.signal": ["scipy/signal"],
    "scipy.optimize": ["scipy/optimize"],
    "linalg": ["scipy/linalg", "numpy/linalg"],
    "PIL": ["PIL"],
    "click": ["click"],
    "sklearn.metrics": ["sklearn/metrics"],
}


def spoken_words(root: Path, clips: int, seed: int = 1) -> Path:
    """`clips` WAV files per keyword, each by a random voice, variant, speed and pitch (seeded apart from the
    pre-training words' seed 0)."""
    return speak(KEYWORDS, root, clips, seed)


def _first_paragraphs(path: Path):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                text = " ".join(re.split(r"\n\s*\n", doc.strip())[0].split())
                if len(text.split()) >= 5:
                    yield text


def library_docstrings(root: Path, per_class: int, seed: int = 0) -> Path:
    """A class-per-folder .txt set: docstring first paragraphs of each library in `LIBRARIES`."""
    import importlib.util

    rng = random.Random(seed)
    for label, places in LIBRARIES.items():
        texts = []
        for place in places:
            top = place.split("/")[0]
            spec = importlib.util.find_spec(top)
            if spec is None or not spec.submodule_search_locations:
                sys.exit(f"the text benchmark needs the {top} package installed")
            base = Path(next(iter(spec.submodule_search_locations))).parent / place
            files = [base] if base.is_file() else sorted(p for p in base.rglob("*.py") if "tests" not in p.parts)
            for file in files:
                texts += list(_first_paragraphs(file))
        texts = sorted(set(texts))
        rng.shuffle(texts)
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts[:per_class]):
            (root / label / f"{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
    return root


def few_shot_folder(data: Path, dest: Path, shots: int, seed: int) -> tuple[Path, list, list]:
    """Links `shots + 1` random files per class of `data` into `dest` (finetune trains on `shots` of them and
    validates each epoch on the one left, cheaply); returns `dest` and the held-out files (all the others) with
    their class names."""
    rng = random.Random(seed)
    held_out, names = [], []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        rng.shuffle(files)
        (dest / folder.name).mkdir(parents=True)
        for file in files[:shots + 1]:
            (dest / folder.name / file.name).symlink_to(file)
        held_out += files[shots + 1:]
        names += [folder.name] * len(files[shots + 1:])
    return dest, held_out, names


def recalibrate_batchnorm(model, folder: Path, shots: int, seed: int, batch_size: int) -> None:
    """Recomputes BatchNormalization's moving statistics as the exact mean over the training examples, with
    the trained weights fixed.

    Training from scratch moves the weights fast at a constant learning rate, so the moving averages
    (momentum 0.99) lag behind the weights they normalise, and inference-mode accuracy suffers for it after a
    few hundred steps. Pretrained backbones keep their statistics frozen; this gives the baseline the same
    well-matched statistics, so that the comparison is about the weights.
    """
    import keras

    from kerastl.core.graph import walk_layers
    from kerastl.data import drop_undecodable, input_spec, make_dataset, scan_folder, split

    spec = input_spec(model)
    parts = split(drop_undecodable(scan_folder(folder, spec.modality)), shots=shots, seed=seed)  # as finetune
    norms = [layer for layer in walk_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for i, (x, _) in enumerate(make_dataset(spec, parts.train_files, parts.train_labels, batch_size=batch_size)):
        for layer in norms:
            layer.momentum = i / (i + 1)  # a running mean over the batches: the first replaces, the rest average
        model(x, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


def accuracy_on(model, class_names, files, names) -> float:
    import numpy as np

    from kerastl.data import input_spec, load_inputs

    probabilities = model.predict(load_inputs(input_spec(model), files), batch_size=64, verbose=0)
    return float((probabilities.argmax(-1) == np.asarray([class_names.index(n) for n in names])).mean())


def run_one(method: str, shots: int, seed: int, spec: str, data: Path, classes: int, args) -> float:
    from kerastl.train.finetune import finetune

    config = method_config(method, budget(shots, classes, args.batch_size, args.steps), shots=shots, seed=seed,
                           batch_size=args.batch_size, learning_rate=args.learning_rate)
    with tempfile.TemporaryDirectory() as tmp:
        folder, held_out, names = few_shot_folder(data, Path(tmp) / "data", shots, seed)
        result = finetune(folder, spec, config=config, verbose=0)
        accuracy = accuracy_on(result.model, result.class_names, held_out, names)
        if method == "scratch":
            recalibrate_batchnorm(result.model, folder, shots, seed, args.batch_size)
            recalibrated = accuracy_on(result.model, result.class_names, held_out, names)
            print(f"    scratch seed {seed}: {accuracy:.4f} with the moving statistics, {recalibrated:.4f} "
                  "recalibrated", flush=True)
            accuracy = recalibrated
    return accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", nargs="+", default=["audio", "text"], choices=["audio", "text"])
    parser.add_argument("--audio-backbone", default=None, help="Default: the shipped default audio backbone.")
    parser.add_argument("--text-backbone", default=None, help="Default: the shipped default text backbone.")
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--clips", type=int, default=40, help="Spoken clips per keyword.")
    parser.add_argument("--per-class", type=int, default=60, help="Docstring paragraphs per library.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=120, help="Optimizer steps per training phase.")
    parser.add_argument("--json", default=None, help="Also write the raw numbers to this file.")
    args = parser.parse_args()

    from kerastl.backbones import default_backbone_spec

    results, tables = {}, []
    work = Path(tempfile.mkdtemp(prefix="kerastl-bench-"))
    start = time.perf_counter()
    for modality in args.modality:
        if modality == "audio":
            data = spoken_words(work / "words", args.clips)
            spec = args.audio_backbone or default_backbone_spec("audio")
            task = (f"espeak-ng keywords ({len(KEYWORDS)} classes, {args.clips} clips each by random voices, "
                    "speeds and pitches)")
        else:
            data = library_docstrings(work / "docs", args.per_class)
            spec = args.text_backbone or default_backbone_spec("text")
            task = f"library of a docstring paragraph ({len(LIBRARIES)} libraries, {args.per_class} paragraphs each)"
        classes = sum(1 for p in data.iterdir() if p.is_dir())
        for shots in args.shots:
            for method in ("scratch", "head", "full"):
                scores = [run_one(method, shots, seed, spec, data, classes, args) for seed in range(args.seeds)]
                results[(modality, shots, method)] = scores
                print(f"  {modality} shots={shots:<3} {method:<8} {statistics.mean(scores):.4f} ± "
                      f"{statistics.pstdev(scores):.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
        tables.append((modality, spec, task))
    shutil.rmtree(work, ignore_errors=True)

    def cell(scores):
        return f"{100 * statistics.mean(scores):.1f} ± {100 * statistics.pstdev(scores):.1f}"

    for modality, spec, task in tables:
        print()
        print(f"{modality}: backbone `{spec}`; {task}; N labelled examples per class, all others held out; accuracy "
              f"in %, mean ± std over {args.seeds} seeds.")
        print()
        print("| labels per class | from scratch | Option 1 (head) | Option 2 (full) | transfer gain (best − scratch) |")
        print("|---|---|---|---|---|")
        for shots in args.shots:
            r = {m: results[(modality, shots, m)] for m in ("scratch", "head", "full")}
            best = max(statistics.mean(r["head"]), statistics.mean(r["full"]))
            gain = 100 * (best - statistics.mean(r["scratch"]))
            print(f"| {shots} | {cell(r['scratch'])} | {cell(r['head'])} | {cell(r['full'])} | {gain:+.1f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({f"{m}/{s}/{k}": v for (m, s, k), v in results.items()}, handle, indent=1)


if __name__ == "__main__":
    main()
