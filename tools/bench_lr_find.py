"""Does a from-scratch run gain from finding its own learning rate? Measured on scikit-learn's real handwritten
digits (issue #13 item 6).

For N labelled images per class (the rest of the 1,797 held out) and each seed, side by side in one run:
- scratch @ 1e-3: the backbone's architecture from random weights at the fixed default rate;
- scratch @ found: the same run with `learning_rate="auto"`: the range test (`kerastl.train.range_test`)
  picks the rate first;
and, for context on the same split, the classical baseline (logistic regression on pixels, which every run
reports) and a linear probe of the same pretrained backbone (`--strategy head --head-solver probe`).
Every run uses finetune's defaults otherwise (step budget, warmup + cosine, early stopping).

Prints a markdown table (mean ± std over seeds, and the found-over-fixed accuracy ratio per seed) and writes
the raw numbers to --json.

    python tools/bench_lr_find.py [--shots 5] [--seeds 3] [--json tools/results_lr_find_digits.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARMS = {
    "scratch@1e-3": dict(strategy="full", from_scratch=True, learning_rate=1e-3),
    "scratch@found": dict(strategy="full", from_scratch=True, learning_rate="auto"),
    "probe": dict(strategy="head", head_solver="probe"),
}


def _force_fixed_rate():
    """The fixed arm must train at exactly 1e-3, whatever the from-scratch default is: with
    `SCRATCH_FINDS_RATE` on, a from-scratch run at the default rate would find its own."""
    from kerastl.train import range_test

    range_test.SCRATCH_FINDS_RATE = False


def run_one(arm: str, shots: int, seed: int, data) -> dict:
    from kerastl.train.finetune import finetune
    from kerastl.train.options import FinetuneConfig

    config = FinetuneConfig(shots=shots, seed=seed, **ARMS[arm])
    start = time.perf_counter()
    result = finetune(data, None, config=config, verbose=0)
    m = result.metrics
    found = m.get("lr_find") or {}
    return {"accuracy": float(m["accuracy"]), "n": int(m["n"]), "seconds": round(time.perf_counter() - start, 1),
            "learning_rate": found["from-scratch"]["suggestion"] if "from-scratch" in found else
            ARMS[arm].get("learning_rate"),
            "baseline_accuracy": (m.get("baseline") or {}).get("accuracy"),
            "epochs_run": {k: v.get("epochs_run") for k, v in m["phases"].items()},
            "backbone": m["backbone"]["spec"]}


def _cell(values) -> str:
    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{statistics.mean(values):.1%} ± {statistics.stdev(values):.1%}"


def table(results: dict, shots: list, seeds: int) -> list[str]:
    lines = [("| shots | classical baseline | linear probe | scratch @ 1e-3 | scratch @ found | found rates | "
              "found / fixed (per seed) |"), "|---|---|---|---|---|---|---|"]
    for n in shots:
        runs = {arm: results[f"{n}/{arm}"] for arm in ARMS}
        base = [r["baseline_accuracy"] for r in runs["scratch@1e-3"]]
        ratios = [f["accuracy"] / x["accuracy"] for f, x in zip(runs["scratch@found"], runs["scratch@1e-3"])]
        rates = ", ".join(f"{r['learning_rate']:.1e}" for r in runs["scratch@found"])
        lines.append(f"| {n} | {_cell(base)} | {_cell([r['accuracy'] for r in runs['probe']])} | "
                     f"{_cell([r['accuracy'] for r in runs['scratch@1e-3']])} | "
                     f"{_cell([r['accuracy'] for r in runs['scratch@found']])} | {rates} | "
                     f"{', '.join(f'{r:.3f}' for r in ratios)} |")
    lines.append(f"\n{seeds} seeds; held out: every digit not among the N per class (1,797 images in all).")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[5])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", default=None, help="Write the raw numbers to this file.")
    args = parser.parse_args()

    from kerastl.data import digits_folder

    _force_fixed_rate()
    data = digits_folder()
    results = {}
    for n in args.shots:
        for arm in ARMS:
            results[f"{n}/{arm}"] = []
            for seed in range(args.seeds):
                row = run_one(arm, n, seed, data)
                results[f"{n}/{arm}"].append(row)
                print(f"shots {n} {arm:<14} seed {seed}: {row['accuracy']:.1%} (rate {row['learning_rate']}, "
                      f"{row['seconds']} s)", flush=True)
                if args.json:  # written after every run, so a long run killed half-way keeps what it measured
                    with open(args.json, "w") as handle:
                        json.dump(results, handle, indent=1)
    print("\n".join(table(results, args.shots, args.seeds)))


if __name__ == "__main__":
    main()
