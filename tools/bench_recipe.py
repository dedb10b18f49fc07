"""Do the recipe's regularisers help? Label smoothing, layer-wise learning-rate decay, mixup and cutmix against
the plain full fine-tuning recipe, side by side on scikit-learn's real handwritten digits.

For N labelled images per class (the rest of the 1,797 held out), every method runs on the same split and
seeds with the shipped default backbone: `full` (kerastl's defaults: the head, then every layer at a tenth of
the rate, warmup + cosine over at least --min-steps steps), `full` with one regulariser each, and beside them
the linear probe of the same backbone (`--head-solver probe`) and the classical baseline (pixels + logistic
regression, which every run reports). Prints mean ± std accuracy over seeds and each method's mean paired
difference from `full`; `--json` keeps the raw numbers.

    python tools/bench_recipe.py [--shots 5] [--seeds 3] [--json tools/results_recipe.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

METHODS = {
    "full": {},
    "full + label smoothing 0.1": {"label_smoothing": 0.1},
    "full + layer decay 0.8": {"layer_decay": 0.8},
    "full + mixup 0.2": {"mixup": 0.2},
    "full + cutmix 1.0": {"cutmix": 1.0},
    "linear probe": {"strategy": "head", "head_solver": "probe"},
}


def run_one(method: str, shots: int, seed: int, data, args) -> dict:
    from kerastl.train.finetune import finetune
    from kerastl.train.options import FinetuneConfig

    settings = {"strategy": "full", **METHODS[method]}
    config = FinetuneConfig(shots=shots, seed=seed, min_steps=args.min_steps, validate_each_epoch=False,
                            **settings)
    start = time.perf_counter()
    result = finetune(data, args.backbone, config=config, verbose=0)
    baseline = result.metrics.get("baseline") or {}
    return {"method": method, "shots": shots, "seed": seed, "accuracy": float(result.metrics["accuracy"]),
            "baseline_accuracy": baseline.get("accuracy"), "seconds": round(time.perf_counter() - start, 1),
            "backbone": result.metrics["backbone"].get("spec")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=None, help="Backbone spec. Default: the shipped default backbone.")
    parser.add_argument("--shots", type=int, nargs="+", default=[5])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--min-steps", type=int, default=300)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--json", default=None, help="Also write the raw numbers to this file.")
    args = parser.parse_args()

    from kerastl.data import digits_folder

    data = digits_folder()
    rows = []
    for shots in args.shots:
        for seed in range(args.seeds):
            for method in args.methods:
                rows.append(run_one(method, shots, seed, data, args))
                print(json.dumps(rows[-1]), flush=True)
                if args.json:  # kept after every run, so a stopped benchmark leaves what it measured
                    with open(args.json, "w", encoding="utf-8") as handle:
                        json.dump({"args": vars(args), "rows": rows}, handle, indent=1)

    print()
    print("| shots | method | accuracy (mean ± std) | paired difference from full | seconds per run |")
    print("|---|---|---|---|---|")
    for shots in args.shots:
        by = {m: {r["seed"]: r for r in rows if r["method"] == m and r["shots"] == shots} for m in args.methods}
        for method in args.methods:
            values = [r["accuracy"] for r in by[method].values()]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            diff = ""
            if "full" in by and method != "full":
                pairs = [by[method][s]["accuracy"] - by["full"][s]["accuracy"] for s in by[method] if s in by["full"]]
                diff = f"{statistics.mean(pairs):+.2%}" if pairs else ""
            seconds = statistics.mean(r["seconds"] for r in by[method].values())
            print(f"| {shots} | {method} | {statistics.mean(values):.2%} ± {spread:.2%} | {diff} | {seconds:.0f} |")
        baselines = [r["baseline_accuracy"] for r in rows if r["shots"] == shots and r["baseline_accuracy"] is not None]
        if baselines:
            print(f"| {shots} | classical baseline (pixels + logistic regression) | "
                  f"{statistics.mean(baselines):.2%} | | |")


if __name__ == "__main__":
    main()
