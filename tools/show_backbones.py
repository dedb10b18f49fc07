"""Prints the figures of the shipped backbones, read from their manifests (which `kerastl pretrain` wrote as
it trained them): what the README's backbone tables and pre-training table quote.

    python tools/show_backbones.py            # markdown tables
    python tools/show_backbones.py --json F   # also the raw figures
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def figures(manifest: dict) -> dict:
    pretraining = manifest.get("pretraining", {})
    compute = manifest.get("compute", {})
    metrics = manifest.get("metrics", {})
    return {
        "name": Path(manifest["path"]).name,
        "modality": manifest.get("modality"),
        "default": bool(manifest.get("default")),
        "input_shape": manifest.get("input", {}).get("shape"),
        "feature_width": manifest.get("feature_width"),
        "source": pretraining.get("source"),
        "classes": pretraining.get("classes"),
        "examples_seen": pretraining.get("examples_seen"),
        "weights_mb": manifest.get("weights", {}).get("bytes", 0) / 1e6,
        "val_accuracy": metrics.get("val_accuracy"),
        "train_minutes": manifest.get("train_seconds", 0) / 60,
        "precision": pretraining.get("precision"),
        "jit_compile": pretraining.get("jit_compile"),
        "execution_measurements": pretraining.get("execution_measurements", []),
        "achieved_gflops": compute.get("achieved_flops_per_second", 0) / 1e9,
        "peak_gflops": compute.get("matmul_peak_flops_per_second", 0) / 1e9,
        "peak_dtype": compute.get("peak_dtype"),
        "utilisation": compute.get("utilisation"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kerastl.backbones import list_saved_backbones

    rows = [figures(m) for m in list_saved_backbones()]
    print("| backbone | modality | input | features | pretrained on | classes | examples seen | size | "
          "validation accuracy | training time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        accuracy = f"{r['val_accuracy']:.1%}" if r["val_accuracy"] is not None else "–"
        seen = f"{r['examples_seen']:,}" if r["examples_seen"] else "–"
        print(f"| {r['name']}{' (default)' if r['default'] else ''} | {r['modality']} | "
              f"{'×'.join(map(str, r['input_shape'] or [])) or 'string'} | {r['feature_width']} | {r['source']} | "
              f"{'–' if r['classes'] is None else format(r['classes'], ',')} | {seen} | {r['weights_mb']:.1f} MB | {accuracy} | "
              f"{r['train_minutes']:.0f} min |")
    print()
    for r in rows:
        if not r["execution_measurements"]:
            continue
        steps = ", ".join(f"{m['policy']}{'+XLA' if m['jit_compile'] else ''} {m['step_seconds']:.3f} s"
                          for m in r["execution_measurements"])
        print(f"- {r['name']}: `--precision auto` step times {steps} -> {r['precision']}"
              f"{' with' if r['jit_compile'] else ', no'} XLA; {r['achieved_gflops']:.1f} GFLOP/s achieved = "
              f"{r['utilisation']:.0%} of the measured {r['peak_dtype']} matmul peak ({r['peak_gflops']:.1f} "
              "GFLOP/s)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
