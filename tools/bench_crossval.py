"""Does cross-validation use scarce labels better than a fixed split? Measured on real data nobody here made.

For N labelled images per class of scikit-learn's handwritten digits (1,797 real 8x8 scans, bundled with
scikit-learn; the shipped glyph backbone was pre-trained on rendered fonts, not on them), each seed draws the
N per class and a disjoint held-out test set (`--test` per class), and runs, with the default backbone and
`--strategy auto`:
- `split`: the default, a fixed 20% validation split (the model trains on the other 80%);
- `cv`: `--cross-validation` (`kerastl.train.crossval`): k-fold comparison of head, top:N and full, then a
  refit on all N per class.
Both are scored on the same held-out images; `cv` also reports its own out-of-fold estimate, to show how far
that estimate is from the held-out accuracy. Also the wall time per run.

Prints a markdown table of means over seeds, with the difference cv - split, and writes the raw runs as JSON.

    python tools/bench_crossval.py [--shots 5 10] [--seeds 2] [--json tools/results_crossval.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def draw(source: Path, root: Path, shots: int, test: int, seed: int) -> tuple[Path, Path]:
    """Copies `shots` labelled and `test` held-out images per class of `source` into two folders."""
    rng = random.Random(seed)
    labelled, held = root / "labelled", root / "test"
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        rng.shuffle(files)
        for target, chosen in ((labelled, files[:shots]), (held, files[shots:shots + test])):
            (target / folder.name).mkdir(parents=True, exist_ok=True)
            for path in chosen:
                shutil.copy(path, target / folder.name / path.name)
    return labelled, held


def run(method: str, labelled: Path, held: Path, out: Path, seed: int, budget: float) -> dict:
    from kerastl.train.evaluate import evaluate
    from kerastl.train.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(seed=seed, cross_validation=method == "cv", budget=budget)
    start = time.perf_counter()
    result = finetune(labelled, None, config=config, out=out, verbose=0)
    seconds = time.perf_counter() - start
    m = result.metrics
    record = {"method": method, "seed": seed, "strategy": m["strategy"], "seconds": round(seconds, 1),
              "test_accuracy": evaluate(out, held)["accuracy"], "trained_on": m["train_examples"]}
    if m.get("cross_validation"):
        record["cv_estimate"] = m["accuracy"]
        record["cross_validation"] = m["cross_validation"]
    return record


def table(rows: list, shots_list: list) -> list[str]:
    lines = [("| labels per class | split (20% held out): test % | cv + refit: test % | cv − split | cv's own "
             "estimate % | s per run, split / cv |"), "|---|---|---|---|---|---|"]
    for shots in shots_list:
        by = {m: [r for r in rows if r["shots"] == shots and r["method"] == m] for m in ("split", "cv")}
        if not by["split"] or not by["cv"]:
            continue
        mean = {m: 100 * statistics.fmean(r["test_accuracy"] for r in by[m]) for m in by}
        spread = {m: 100 * statistics.pstdev([r["test_accuracy"] for r in by[m]]) for m in by}
        estimate = 100 * statistics.fmean(r["cv_estimate"] for r in by["cv"])
        seconds = {m: statistics.fmean(r["seconds"] for r in by[m]) for m in by}
        lines.append(f"| {shots} | {mean['split']:.1f} ± {spread['split']:.1f} | {mean['cv']:.1f} ± "
                     f"{spread['cv']:.1f} | {mean['cv'] - mean['split']:+.1f} | {estimate:.1f} | "
                     f"{seconds['split']:.0f} / {seconds['cv']:.0f} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--test", type=int, default=50, help="Held-out test images per class.")
    parser.add_argument("--budget", type=float, default=600.0, help="--budget of the cv runs (seconds).")
    parser.add_argument("--json", default="tools/results_crossval.json")
    args = parser.parse_args()

    from kerastl.data import digits_folder

    source = digits_folder()
    rows = []
    for shots in args.shots:
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                labelled, held = draw(source, Path(tmp), shots, args.test, seed)
                for method in ("split", "cv"):
                    record = run(method, labelled, held, Path(tmp) / f"out-{method}", seed, args.budget)
                    rows.append({"shots": shots, **record})
                    print(json.dumps({k: v for k, v in rows[-1].items() if k != "cross_validation"}), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"runs": rows, "args": vars(args)}, indent=1) + "\n")
    print("\n".join(table(rows, args.shots)))


if __name__ == "__main__":
    main()
