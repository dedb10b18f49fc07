"""Size and single-clip latency of audio classifiers on the shipped audio backbones, side by side.

For each backbone, the classifier finetune builds (`kerastl.train.head.build_classifier`, 8 classes, a random
head on features standardised over the clips: latency does not depend on the weights) is measured as:
- Keras: the median wall time of one clip through `tf.function(model)` (graph mode, as a SavedModel serves);
- TFLite: kerastl's float32 and dynamic-range files (`kerastl.export.tflite.convert_tflite`, MediaPipe metadata
  included), the median `invoke()` of one clip with one thread (`kerastl.export.verify.verify_tflite`).
Clips: kerastl's synthetic clips for audio (tones in noise), on which the TFLite files' agreement with Keras is
also reported. Ratios are to the first backbone, in the same run; the machine's load average is recorded.

    python tools/bench_audio_latency.py [--backbones saved_models/sfx-cnn9 saved_models/speech-embedding
        saved_models/espeak-words-smallnet-s] [--runs 200] [--json tools/results_audio_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def keras_latency_ms(model, clip, runs: int) -> float:
    import tensorflow as tf

    serve = tf.function(lambda x: model(x, training=False))
    x = tf.constant(clip[None])
    for _ in range(10):
        serve(x).numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        serve(x).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(spec: str, runs: int) -> dict:
    import numpy as np

    from kerastl.backbones import load_backbone
    from kerastl.core.modality import get
    from kerastl.data import input_spec
    from kerastl.export.tflite import convert_tflite
    from kerastl.export.verify import verify_tflite
    from kerastl.train.head import build_classifier

    backbone = load_backbone(spec)
    # A random head (not the zero start finetune gives a pretrained backbone) on standardised features, as
    # finetune standardises them (`Classifier.adapt`), so that the outputs vary at a trained head's scale and
    # the TFLite files' agreement with Keras means something.
    classifier = build_classifier(backbone.model, 8, seed=0, zero_init=False)
    model = classifier.model
    labels = [f"class{i}" for i in range(8)]
    clips = get("audio").synthetic_inputs(model, input_spec(model), runs, seed=0)
    classifier.adapt(classifier.feature_model.predict(clips, verbose=0))
    reference = model.predict(clips, verbose=0)
    row = {"backbone": spec, "parameters": int(backbone.model.count_params()),
           "backbone_file_bytes": None, "keras_ms": keras_latency_ms(model, clips[0], runs)}
    manifest = Path(spec) / "manifest.json"
    if manifest.is_file():
        row["backbone_file_bytes"] = json.loads(manifest.read_text())["weights"]["bytes"]
    for quantize in ("none", "dynamic"):
        blob = convert_tflite(model, labels=labels, quantize=quantize)
        figures = verify_tflite(blob, clips, reference=reference, y_true=np.argmax(reference, -1))
        name = "float32" if quantize == "none" else quantize
        row[f"tflite_{name}_bytes"] = figures["bytes"]
        row[f"tflite_{name}_ms"] = figures["median_latency_ms"]
        row[f"tflite_{name}_top1_agreement"] = figures["top1_agreement"]
        row[f"tflite_{name}_max_abs_diff"] = figures["max_abs_diff"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+",
                        default=["saved_models/sfx-cnn9", "saved_models/speech-embedding",
                                 "saved_models/espeak-words-smallnet-s"])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results_audio_latency.json"))
    args = parser.parse_args(argv)
    load = os.getloadavg()
    rows = [measure(spec, args.runs) for spec in args.backbones]
    base = rows[0]
    print(f"\nsingle-clip latency, median of {args.runs}; ratios to {base['backbone']}; load average "
          f"{load[0]:.1f} on {os.cpu_count()} cores at the start\n")
    print("| backbone | parameters | .keras | Keras | TFLite float32 | TFLite dynamic | TFLite sizes (f32, dyn) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        size = "?" if r["backbone_file_bytes"] is None else f"{r['backbone_file_bytes'] / 1e6:.2f} MB"
        print(f"| {r['backbone']} | {r['parameters']:,} | {size} | {r['keras_ms']:.2f} ms "
              f"({r['keras_ms'] / base['keras_ms']:.2f}) | {r['tflite_float32_ms']:.2f} ms "
              f"({r['tflite_float32_ms'] / base['tflite_float32_ms']:.2f}) | {r['tflite_dynamic_ms']:.2f} ms "
              f"({r['tflite_dynamic_ms'] / base['tflite_dynamic_ms']:.2f}) | {r['tflite_float32_bytes'] / 1e6:.2f} MB, "
              f"{r['tflite_dynamic_bytes'] / 1e6:.2f} MB |")
    payload = {"command": "python tools/bench_audio_latency.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "runs": args.runs, "cpu_count": os.cpu_count(), "load_average_at_start": load, "rows": rows}
    args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
