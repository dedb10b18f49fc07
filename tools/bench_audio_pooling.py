"""How the default audio backbone's frames are best pooled over time: mean against max, on real recordings.

The shipped audio backbone (saved_models/sfx-cnn9) ends at a sequence of 512-wide frames, and kerastl's head
pools them (`pooling`). aiSFX's own embedding is their maximum over time; kerastl's default is the mean. This
tool measures both as tools/bench_real_transfer.py's `probe` column does (a cross-validated logistic
regression on the frozen pooled features) on its two real audio sets (Hydrogen's drum samples, Asterisk's
speech prompts), on the same splits and held-out clips, beside the same classical baseline (log-spectrum
statistics + logistic regression), in one run:

    python tools/bench_audio_pooling.py [--shots 5 10] [--seeds 3] [--json tools/results_audio_pooling.json]

Prints one table per set (accuracy in %, mean ± population std over seeds) and the mean − max differences;
raw runs go in the JSON, one bench_real_transfer record per (set, pooling).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))
import bench_real_transfer as bench

RESULTS = TOOLS / "results_audio_pooling.json"
POOLINGS = ("avg", "max")
SETS = ("drums", "speech")


def table(records: dict, shots: list[int]) -> list[str]:
    """The printed tables: per set, the probe with each pooling and the classical baseline, at each count."""
    lines = []
    for name in SETS:
        if name not in records:
            continue
        lines += ["", f"{name} ({records[name]['avg']['backbone']}): accuracy %, mean ± std over seeds", "",
                  "| labels per class | probe, mean over time | probe, max over time | classical | mean − max |",
                  "|---|---|---|---|---|"]
        for n in shots:
            cell = {}
            for pooling in POOLINGS:
                summary = records[name][pooling]["summary"][str(n)]
                cell[pooling] = summary["probe"]
                cell["classical"] = summary["classical"]
            lines.append(f"| {n} | " + " | ".join(
                f"{100 * cell[k]['mean']:.1f} ± {100 * cell[k]['std']:.1f}" for k in ("avg", "max", "classical"))
                + f" | {100 * (cell['avg']['mean'] - cell['max']['mean']):+.1f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--deb-cache", default=str(bench.DEB_CACHE))
    parser.add_argument("--debs", type=Path, nargs="*", default=[])
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.debs = [d.resolve() for d in args.debs]
    common = dict(backbone=None, epochs=None, batch_size=None, learning_rate=None, head_solver=None,
                  scratch_epochs=None, min_per_class=None, methods=["classical", "probe"],
                  tuxpaint_stamps=None)
    records = {}
    for name in SETS:
        task = bench.TASKS[name]
        records[name] = {}
        for pooling in POOLINGS:
            run = argparse.Namespace(**vars(args), **common, pooling=pooling)
            run.min_per_class = max(run.shots) + 21  # bench_real_transfer's default: >= 20 held out per class
            records[name][pooling] = bench.measure(task, run, lambda record: None)
            Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    print("\n".join(table(records, args.shots)))
    differences = [records[s]["avg"]["summary"][str(n)]["probe"]["mean"]
                   - records[s]["max"]["summary"][str(n)]["probe"]["mean"] for s in SETS for n in args.shots]
    print(f"\nmean − max over sets and counts: {100 * statistics.mean(differences):+.1f} points "
          f"(raw runs: {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
