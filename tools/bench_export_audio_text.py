"""Bench: what each TFLite quantization does to audio and text classifiers, and why kerastl refuses some.

For each modality a classifier is fine-tuned from the default shipped backbone (Option 2, `full`) on the data of
tools/bench_fewshot_audio_text.py, then exported by `kerastl.export.export` in every quantization kerastl
offers for it, each checked on the 20% held-out examples. Beside them, the variants kerastl does not produce
are converted here directly with TFLite's converter and verified the same way (`verify_tflite`), to show the
measurements behind `kerastl.export.check_quantization` and `quantize_dynamic_except`:

- audio: `dynamic` by TFLite's converter, which also quantizes the log-mel front end (kerastl quantizes the
  network only, through litert-quantizer), and full-integer int8, front end included (refused);
- text: full-integer int8 of the token-id model (refused).

Data: audio, the ten Speech Commands keywords spoken by espeak-ng (`--clips` per word, random voices, speeds
and pitches); text, the first docstring paragraphs of eight libraries (`--per-class` per library). Latency is the
median of single-example invokes, one thread; the ratios are to float32 in the same run.

    python tools/bench_export_audio_text.py [--modality audio text] [--clips 40] [--per-class 100] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# tools/ is on sys.path when run as a script.
from bench_fewshot_audio_text import library_docstrings, spoken_words


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", nargs="+", default=["audio", "text"], choices=["audio", "text"])
    parser.add_argument("--work", default="/tmp/kerastl-bench-export-audio-text")
    parser.add_argument("--clips", type=int, default=40, help="clips per keyword (audio)")
    parser.add_argument("--per-class", type=int, default=100, help="paragraphs per library (text)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", default=None, help="also write the raw figures to this file")
    return parser.parse_args()


def direct(model, data_samples, reference, y_true, *, int8: bool = False):
    """Converts `model`'s TFLite form with TFLite's own dynamic-range (or, with `int8`, full-integer)
    quantization, which leaves nothing out, and verifies it."""
    import numpy as np
    import tensorflow as tf

    from kerastl.export import lite_model, verify_tflite

    converted, signature = lite_model(model)
    options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
               "optimizations": [tf.lite.Optimize.DEFAULT]}
    if int8:
        calibration = np.asarray(data_samples.calibration, dtype=signature.dtype.as_numpy_dtype)
        options["representative_dataset"] = lambda: ([x[None]] for x in calibration)
        options["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        converted.export(str(path), format="litert", verbose=False, input_signature=[signature], **options)
        return verify_tflite(path.read_bytes(), data_samples.tflite_inputs, reference=reference, y_true=y_true)


def bench(modality: str, args, work: Path) -> list[tuple]:
    from kerastl.backbones import default_backbone_spec
    from kerastl.export import export, verification_set
    from kerastl.train.evaluate import load_classifier
    from kerastl.train.finetune import FinetuneConfig, finetune

    data = work / f"{modality}-data"
    if not data.is_dir():
        if modality == "audio":
            spoken_words(data, args.clips)
        else:
            library_docstrings(data, args.per_class)
    spec = default_backbone_spec(modality)
    # A fine-tuned run is kept in --work for the next invocation, keyed by the backbone it was trained from:
    # once the default backbone changes, the old run is not the default's any more.
    run = work / f"{modality}-run-{Path(spec).name}"
    if not (run / "model.keras").is_file():
        finetune(data, spec, out=run, verbose=0,
                 config=FinetuneConfig(strategy="full", epochs=args.epochs, head_epochs=args.epochs, seed=0))
    rows = []
    for quantize in ("none", "float16", "dynamic"):
        report = export(run, format="tflite", quantize=quantize, data=data, out=work / f"{modality}-{quantize}.tflite")
        rows.append((f"{quantize if quantize != 'none' else 'float32'} (kerastl)", report["exports"]["tflite"]))
    keras_accuracy = report["keras"]["accuracy"]
    model, labels = load_classifier(run)
    samples = verification_set(data, labels, model, calibrate=True)
    reference = model.predict(samples.inputs, verbose=0)
    if modality == "audio":
        rows.append(("dynamic, front end too (TFLite converter)",
                     direct(model, samples, reference, samples.y_true)))
    rows.append(("int8, everything (refused)", direct(model, samples, reference, samples.y_true, int8=True)))
    return keras_accuracy, samples.description["n"], rows, Path(spec).name


def main():
    args = parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    raw = {}
    for modality in args.modality:
        keras_accuracy, n, rows, backbone = bench(modality, args, work)
        raw[modality] = {"backbone": backbone, "keras_accuracy": keras_accuracy, "n": n,
                         "rows": {name: f for name, f in rows}}
        base = rows[0][1]
        print(f"\n{modality} ({backbone}): {n} held-out examples, Keras accuracy {keras_accuracy:.2%}\n")
        print("| TFLite | size | size ratio | median latency | latency ratio | top-1 = Keras | accuracy | max abs diff |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, f in rows:
            print(f"| {name} | {f['bytes'] / 1e6:.2f} MB | {f['bytes'] / base['bytes']:.3f} | "
                  f"{f['median_latency_ms']:.3f} ms | {f['median_latency_ms'] / base['median_latency_ms']:.2f} | "
                  f"{f['top1_agreement']:.2%} | {f['accuracy']:.2%} | {f['max_abs_diff']:.3g} |", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
