"""Does transfer help? Few-shot accuracy on scikit-learn's real handwritten digits, over several seeds.

For N labelled images per class (the rest of the 1,797 held out), compares, as mean ± std over seeds:
- from scratch: the backbone's architecture with random initial weights, every layer trained;
- Option 1 (`head`): the pretrained backbone frozen, a new output layer trained;
- Option 2 (`full`): the head first, then every layer at a tenth of the learning rate;
- `auto`: what `--strategy auto` picks for N (it resolves to head or full; the run is the same).

Prints a markdown table (pasted into the README) and, with --json, the raw numbers.

    python tools/bench_fewshot.py [--backbone SPEC] [--shots 5 10 50] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def budget(shots: int, classes: int, batch_size: int, steps: int) -> int:
    """Epochs giving about `steps` optimizer steps, so that small and large label sets train comparably."""
    per_epoch = max(1, -(-shots * classes // batch_size))
    return max(10, -(-steps // per_epoch))


def method_config(method: str, epochs: int, **common):
    """The `FinetuneConfig` of a compared method ("scratch", "head" or "full") for `epochs` per phase."""
    from kerastl.train.finetune import FinetuneConfig

    if method == "scratch":
        # The same architecture and the same total number of epochs as Option 2's two phases.
        return FinetuneConfig(strategy="full", from_scratch=True, epochs=2 * epochs, **common)
    if method == "head":
        return FinetuneConfig(strategy="head", epochs=2 * epochs, **common)
    return FinetuneConfig(strategy="full", epochs=epochs, head_epochs=epochs, **common)


def run_one(method: str, shots: int, seed: int, spec: str, data, args) -> float:
    from kerastl.train.finetune import finetune

    config = method_config(method, budget(shots, 10, args.batch_size, args.steps), shots=shots, seed=seed,
                           batch_size=args.batch_size, learning_rate=args.learning_rate, validate_each_epoch=False)
    result = finetune(data, spec, config=config, verbose=0)
    return float(result.metrics["accuracy"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=None, help="Backbone spec. Default: the shipped default backbone.")
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 50])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=300, help="Optimizer steps per training phase.")
    parser.add_argument("--json", default=None, help="Also write the raw numbers to this file.")
    parser.add_argument("--from-json", default=None,
                        help="Print the table from numbers an earlier run wrote with --json (no training).")
    args = parser.parse_args()

    from kerastl.backbones import default_backbone_spec
    from kerastl.data import digits_folder
    from kerastl.train.strategies import AUTO_FULL_MIN_PER_CLASS, Strategy, resolve_auto

    # The digits are grayscale: the default for them is the grayscale glyph backbone.
    spec = args.backbone or default_backbone_spec("image", digits_folder())
    results = {}
    if args.from_json:
        with open(args.from_json) as handle:
            saved = json.load(handle)
        spec = saved.pop("_backbone", spec)
        results = {(int(k.split("/")[0]), k.split("/")[1]): v for k, v in saved.items()}
        args.shots = sorted({s for s, _ in results})
        args.seeds = len(next(iter(results.values())))
    else:
        data = digits_folder()
        start = time.perf_counter()
        for shots in args.shots:
            for method in ("scratch", "head", "full"):
                scores = [run_one(method, shots, seed, spec, data, args) for seed in range(args.seeds)]
                results[(shots, method)] = scores
                print(f"  shots={shots:<3} {method:<8} {statistics.mean(scores):.4f} ± "
                      f"{statistics.pstdev(scores):.4f} ({time.perf_counter() - start:.0f} s)", flush=True)

    def cell(scores):
        return f"{100 * statistics.mean(scores):.1f} ± {100 * statistics.pstdev(scores):.1f}"

    print()
    print(f"Backbone `{spec}`; scikit-learn digits (8×8 scans resized to the backbone's input), N labelled images "
          f"per class, all other images held out; accuracy in %, mean ± std over {args.seeds} seeds.")
    print()
    # auto is not trained separately: it is one of head and full, chosen by a rule, so the table names the pick
    # rather than repeating that column's scores as if they were measured.
    print("| labels per class | from scratch | Option 1 (head) | Option 2 (full) | auto picks | transfer gain (best − scratch) |")
    print("|---|---|---|---|---|---|")
    for shots in args.shots:
        picked = resolve_auto(Strategy("auto"), shots).kind
        best = max(statistics.mean(results[(shots, m)]) for m in ("head", "full"))
        gain = 100 * (best - statistics.mean(results[(shots, "scratch")]))
        print(f"| {shots} | {cell(results[(shots, 'scratch')])} | {cell(results[(shots, 'head')])} | "
              f"{cell(results[(shots, 'full')])} | {picked} | {gain:+.1f} |")
    print()
    print(f"auto rule: full from {AUTO_FULL_MIN_PER_CLASS} labelled images per class, head below.")
    if args.json:
        with open(args.json, "w") as handle:
            raw = {f"{s}/{m}": v for (s, m), v in results.items()}
            json.dump({"_backbone": spec, **raw}, handle, indent=1)


if __name__ == "__main__":
    main()
