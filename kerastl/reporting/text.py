"""What the user reads as text: each command's summary and tables, as functions returning lines.

The library never prints: the CLI echoes these lines one by one, and API users may print, log or ignore them.
Every function takes the records the library returns (finetune's and pretrain's results, evaluate's metrics,
predict's rows, export's report) and imports nothing heavier than `json`.
"""

from __future__ import annotations

import json


def with_article(noun: str) -> str:
    """`noun` after its indefinite article: "an image", "an audio", "a text"."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def no_data_lines() -> list[str]:
    """The note `kerastl finetune` prints when no --data is given and the bundled digits are used."""
    return ["No --data: using scikit-learn's bundled handwritten digits (1,797 images, 10 classes)."]


def finetune_summary_lines(result) -> list[str]:
    """After fine-tuning: notes, backbone, strategy, example counts, accuracy with the per-class table, skipped
    files, and the files written (`result` is a `FinetuneResult`)."""
    m = result.metrics
    lines = [""]
    for note in m.get("notes", []):
        lines.append(f"note  {note}")
    lines.append(f"backbone  {m['backbone']['spec']}  ({m['backbone']['weights']} weights, "
                 f"{m['backbone']['feature_width']} features)")
    for note in m["backbone"].get("notes", []):
        lines.append(f"note      {note}")
    lines.append(f"strategy  {m['strategy']}" + (f"  [auto: {m['auto_rule']}]" if m.get("auto_rule") else ""))
    cv = m.get("cross_validation")
    folds = cv is not None and cv["evaluation"] != "the validation split"
    if folds:
        lines.append(f"trained on all {m['train_examples']} examples after {cv['evaluation']}; the accuracy "
                     f"below is its estimate from {m['n']} out-of-fold predictions, not a held-out test")
    else:
        lines.append(f"trained on {m['train_examples']} examples; evaluated on {m['n']} held-out examples")
    lines.extend(comparison_lines(cv))
    lines.extend(found_rate_lines(m.get("lr_find")))
    if m["accuracy"] is not None:
        lines.append(f"accuracy  {m['accuracy']:.2%}" + (" (cross-validated estimate)" if folds else ""))
        lines.extend(per_class_lines(m["per_class"]))
    base = m.get("baseline")
    if base and m["accuracy"] is not None:
        verdict = ("transfer beat it" if base["margin"] > 0 else
                   "transfer did not beat it" if base["margin"] < 0 else "a tie")
        lines.append(f"baseline  {base['method']}: {base['accuracy']:.2%} on the same "
                     f"{'folds' if base.get('folds') else 'split'}; {verdict} "
                     f"({100 * base['margin']:+.1f} points)")
    if m["skipped"]:
        lines.append(f"skipped {len(m['skipped'])} files (each listed with the reason in metrics.json), e.g. "
                     f"{m['skipped'][0]['path']}: {m['skipped'][0]['reason']}")
    for key, path in result.files.items():
        lines.append(f"{key:<8}  {path}")
    return lines


def comparison_lines(record: dict | None) -> list[str]:
    """After fine-tuning: what cross-validation or auto's comparison measured (`metrics["cross_validation"]`):
    each candidate's held-out accuracy (mean ± std over folds) and what the budget skipped."""
    if not record:
        return []
    lines = [(f"measured  by {record['evaluation']} in {record['seconds']:.0f} s (budget "
             f"{record['budget_seconds']:g} s); chosen: {record['chosen']}")]
    for c in record["candidates"]:
        spread = f" ± {100 * c['accuracy_std']:.1f}" if c["folds"] > 1 else ""
        lines.append(f"  {c['candidate']:<24} {100 * c['accuracy_mean']:5.1f}%{spread}  ({c['seconds']:.0f} s)")
    for s in record["skipped"]:
        lines.append(f"  {s['candidate']:<24} skipped: {s['reason']}")
    return lines


def found_rate_lines(found: dict | None) -> list[str]:
    """After fine-tuning: one line naming the learning rate the range test found for each phase it ran
    before (`metrics["lr_find"]`); none when no phase ran it."""
    if not found:
        return []
    rates = ", ".join(f"{phase} {record['suggestion']:.2e}" for phase, record in found.items())
    rule = next(iter(found.values()))["rule"]
    return [f"learning rate  found by the range test: {rates} ({rule}; curves under lr_find in metrics.json)"]


def lr_find_lines(result) -> list[str]:
    """`kerastl lr-find`'s output: the suggestion in one line (phase, rule, the range covered and how the test
    ended), then the files written (`result` is a `kerastl.train.lr_find.LRFindResult`)."""
    test = result.record["range_test"]
    ended = "the loss diverged" if test["stopped"] == "diverged" else "all steps taken"
    lines = [(f"suggested learning rate {test['suggestion']:.2e} for the {result.phase} phase of "
              f"{result.record['backbone']} ({test['rule']}; {test['steps']} steps from {test['lr_min']:.0e} to "
              f"{test['lr_max_reached']:.2e}, {ended})")]
    for key, path in result.files.items():
        lines.append(f"{key:<8}  {path}")
    return lines


def per_class_lines(per_class: dict) -> list[str]:
    """The per-class table: precision, recall, f1 and support, one row per class, indented by two spaces."""
    width = max([len(name) for name in per_class] + [5])
    lines = [f"  {'class':<{width}}  precision  recall  f1     support"]
    for name, row in per_class.items():
        lines.append(f"  {name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:.3f}  "
                     f"{row['support']:7d}")
    return lines


def evaluate_lines(metrics: dict) -> list[str]:
    """`kerastl evaluate`'s summary: accuracy on n examples, the per-class table, and skipped files (one
    example; `--json` lists them all)."""
    lines = [f"accuracy  {metrics['accuracy']:.2%}  on {metrics['n']} examples"]
    lines.extend(per_class_lines(metrics["per_class"]))
    if metrics["skipped"]:
        lines.append(f"skipped {len(metrics['skipped'])} files (--json lists them), e.g. "
                     f"{metrics['skipped'][0]['path']}: {metrics['skipped'][0]['reason']}")
    return lines


def evaluate_json_lines(metrics: dict) -> list[str]:
    """`kerastl evaluate --json`: one line, `{"accuracy", "n", "per_class", "skipped"}` as JSON."""
    return [json.dumps({"accuracy": metrics["accuracy"], "n": metrics["n"],
                        "per_class": metrics["per_class"], "skipped": metrics["skipped"]},
                       ensure_ascii=False)]


def predict_lines(predictions) -> list[str]:
    """One tab-separated line per file: path, label and probability (`predictions` as `predict` returns
    them: `(path, label, probability)` rows)."""
    return [f"{path}\t{label}\t{probability:.4f}" for path, label, probability in predictions]


def pretrain_summary_lines(result) -> list[str]:
    """After pre-training: notes, weights digest, precision and XLA, achieved compute, final metrics, and how to
    use the backbone (`result` is a `PretrainResult`)."""
    manifest = result.manifest
    lines = [""]
    for note in result.notes:
        lines.append(f"note  {note}")
    lines.append(f"weights digest  {result.weights_digest}")
    lines.append(f"precision  {manifest['pretraining']['precision']}, XLA {manifest['pretraining']['jit_compile']}")
    compute = manifest["compute"]
    if compute.get("utilisation") is not None:
        lines.append(f"compute  {compute['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s achieved, "
                     f"{compute['utilisation']:.0%} of the measured {compute['peak_dtype']} matmul peak")
    lines.append("metrics  " + ", ".join(f"{k} {v}" for k, v in manifest["metrics"].items()))
    if result.out is not None:
        lines.append(f"backbone  {result.out}  (use: kerastl finetune --backbone {result.out})")
    return lines


def export_lines(report: dict) -> list[str]:
    """After a successful export: the report table (`report_lines`), then the files written."""
    lines = report_lines(report)
    for key, path in report["files"].items():
        lines.append(f"{key:<12}  {path}")
    return lines


def report_lines(report: dict) -> list[str]:
    """The report as a short table: one row per export with size, top-1 agreement with Keras, accuracy,
    maximum probability difference and median single-image latency."""
    verified = report["verified_on"]
    keras_accuracy = report["keras"]["accuracy"]
    noun = verified.get("examples", "examples")
    if verified["source"] == "synthetic":
        where = f"{verified['n']} synthetic {noun} (no --data: agreement with Keras only)"
    else:
        kind = "held-out" if verified["held_out"] else "training (no held-out part)"
        where = f"{verified['n']} {kind} {noun} of {verified['source']}"
    lines = [f"verified on {where}" + (f"; Keras accuracy {keras_accuracy:.2%}" if keras_accuracy is not None else "")]
    lines.append(f"  {'export':<16}  {'size':>9}  {'top-1 = Keras':>13}  {'accuracy':>8}  {'max |dp|':>8}  "
                 f"{'latency':>10}")
    for name, figures in report["exports"].items():
        label = name if name != "tflite" else f"tflite {figures['quantize']}"
        lines.append(_export_row(label, figures))
        if figures.get("mediapipe"):
            # The same file in MediaPipe's TextClassifier, on the raw texts: its own tokenizer, from the metadata.
            lines.append(_export_row("  via MediaPipe", {**figures["mediapipe"], "bytes": None}))
    tflite = report["exports"].get("tflite")
    if tflite and tflite.get("rgb_input_for_grayscale_model"):
        lines.append("  the TFLite file takes RGB and converts it to grayscale inside (MediaPipe runs only RGB models)")
    tokenizer = report.get("tokenizer")
    if tokenizer and tokenizer.get("summary"):
        lines.append("  " + tokenizer["summary"].replace("{vocabulary_file}", tokenizer.get("vocabulary_file", "the vocabulary")))
    elif tokenizer:
        lines.append(f"  the TFLite file takes token ids ({tokenizer['sequence_length']} int32 per text), not strings "
                     f"(TFLite has no string kernels): tokenize with {tokenizer['vocabulary_file']} by the report's "
                     f"tokenizer rules ({tokenizer['standardize']}; id 1 for unknown words, 0 pads)")
    mediapipe = (tokenizer or {}).get("mediapipe") or {}
    if mediapipe.get("supported"):
        if mediapipe.get("tokenizer") == "BertTokenizer":
            lines.append("  MediaPipe's TextClassifier runs it on raw strings: its metadata holds a BertTokenizer and "
                         f"{mediapipe['vocabulary_file']} (the model's own ids on ASCII text; see differs_when)")
        else:
            exact = "the model's own ids" if mediapipe["exact"] else "the nearest regex to the model's tokenizer"
            lines.append("  MediaPipe's TextClassifier runs it on raw strings: its metadata holds a regex tokenizer "
                         f"and {mediapipe['vocabulary_file']} ({exact})")
    elif mediapipe:
        lines.append(f"  no MediaPipe metadata: {mediapipe['why']}")
    note = ((tflite or {}).get("mediapipe") or {}).get("note")
    if note:
        lines.append(f"  {note}")
    return lines


def _export_row(label: str, figures: dict) -> str:
    accuracy = "-" if figures.get("accuracy") is None else f"{figures['accuracy']:.2%}"
    agreement = "-" if figures.get("top1_agreement") is None else f"{figures['top1_agreement']:.2%}"
    diff = "-" if figures.get("max_abs_diff") is None else f"{figures['max_abs_diff']:.2g}"
    latency = "-" if figures.get("median_latency_ms") is None else f"{figures['median_latency_ms']:.3g} ms"
    size = "-" if figures.get("bytes") is None else _size(figures["bytes"])
    return f"  {label:<16}  {size:>9}  {agreement:>13}  {accuracy:>8}  {diff:>8}  {latency:>10}"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}"
