"""Bench: does MediaPipe Tasks' TextClassifier, running kerastl's text .tflite files on raw strings, agree with Keras?

MediaPipe tokenises each string itself, by the regex tokenizer and vocabulary in the file's metadata
(kerastl.export.metadata.text_classifier); Keras by the model's own `TextVectorization`. Two tokenizers:

- legacy: the shipped text backbone as it is (saved_models/pydocs-files-textcnn-l, Keras'
  "lower_and_strip_punctuation"): MediaPipe's nearest regex splits where Keras deletes punctuation and joins
  ("set_trainable" is two tokens for MediaPipe, "settrainable" for Keras) and finds no spelling for a word in
  mixed case ("TensorFlow");
- fold_case: the same backbone, the same vocabulary and weights, with its tokenizer's standardization set to
  kerastl's `fold_case_and_split_punctuation` (what `kerastl pretrain` builds now), which MediaPipe reproduces
  exactly. The network was trained on the legacy tokens, so this also shows what the other tokenization costs
  a backbone that was not retrained for it.

For each tokenizer and each of two real text tasks a classifier is fine-tuned (`head`: the backbone frozen, a
new output layer, i.e. a linear probe of the backbone) and exported by `kerastl.export.export` (float32 TFLite
with MediaPipe metadata), which verifies the file in the LiteRT interpreter and in MediaPipe on the held-out
20%. Beside it: a TF-IDF + logistic regression baseline on the same split. Then, without labels, MediaPipe's
top-1 agreement with Keras on every text of two large real sets: all Debian fortune cookies and the Python
standard library's docstring paragraphs (`corpus:python-docs`); for the legacy tokenizer, each text on which the
token ids differ is put down to the cases the export report lists (punctuation inside a word, a word in other
mixed case, a NUL), and any text left unexplained is counted.

Tasks: which library a docstring paragraph comes from (tools/bench_fewshot_audio_text.py's eight libraries,
`--per-class` each); which Debian `fortunes` file a fortune cookie comes from (eight files, `--per-class`
each; `apt-get download fortunes`, BSD licence, unpacked under --work, nothing committed). Latency: median of
single-text calls, one thread: LiteRT `invoke` on token ids against MediaPipe `classify` on the raw string
(tokenising included).

    python tools/bench_text_mediapipe.py [--per-class 100] [--epochs 10] [--json tools/results_text_mediapipe.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# tools/ is on sys.path when run as a script.
from bench_fewshot_audio_text import library_docstrings

SHIPPED = Path(__file__).resolve().parents[1] / "saved_models" / "pydocs-files-textcnn-l" / "backbone.keras"
FORTUNE_FILES = ("computers", "food", "law", "politics", "science", "sports", "songs-poems", "work")
# ASCII punctuation between two characters that are neither whitespace nor ASCII punctuation: a word Keras'
# legacy rule joins and MediaPipe splits.
_INSIDE_PUNCTUATION = re.compile(r"[^\t\n\x0b\x0c\r !-/:-@\[-`{-~][!-/:-@\[-`{-~]+(?=[^\t\n\x0b\x0c\r !-/:-@\[-`{-~])")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/kerastl-bench-text-mediapipe")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", default=None, help="also write the raw figures to this file")
    return parser.parse_args()


# ------------------------------------------------------------------------------------------------- data


def fortune_cookies(work: Path) -> dict[str, list[str]]:
    """Debian's `fortunes` package, downloaded with apt-get and unpacked under `work`: file name -> its
    cookies (the texts between `%` lines, stripped, empty ones dropped)."""
    root = work / "fortunes-deb"
    data = root / "usr" / "share" / "games" / "fortunes"
    if not data.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "fortunes"], cwd=root, check=True, capture_output=True)
        deb = next(root.glob("fortunes_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    cookies = {}
    for path in sorted(data.iterdir()):
        if path.suffix or not path.is_file() or path.is_symlink():
            continue  # .dat indexes, .u8 links
        text = path.read_text(encoding="utf-8", errors="replace")
        cookies[path.name] = [c.strip() for c in re.split(r"^%$", text, flags=re.MULTILINE) if c.strip()]
    return cookies


def fortune_folder(root: Path, cookies: dict, per_class: int) -> Path:
    if not root.is_dir():
        for name in FORTUNE_FILES:
            (root / name).mkdir(parents=True)
            for i, cookie in enumerate(cookies[name][:per_class]):
                (root / name / f"{i:03d}.txt").write_text(cookie + "\n", encoding="utf-8")
    return root


def refolded_backbone(out: Path) -> Path:
    """The shipped backbone with its tokenizer's standardization set to kerastl's `FOLD_CASE` (config.json
    edited inside the .keras archive; vocabulary and weights untouched)."""
    if out.is_file():
        return out
    with zipfile.ZipFile(SHIPPED) as source:
        members = {name: source.read(name) for name in source.namelist()}
    config = json.loads(members["config.json"])
    layers = [layer for layer in config["config"]["layers"] if layer["class_name"] == "TextVectorization"]
    assert len(layers) == 1 and layers[0]["config"]["standardize"] == "lower_and_strip_punctuation"
    layers[0]["config"]["standardize"] = {"module": "builtins", "class_name": "function",
                                          "config": "kerastl>fold_case_and_split_punctuation",
                                          "registered_name": "function"}
    members["config.json"] = json.dumps(config).encode("utf-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())
    return out


# ------------------------------------------------------------------------------------------------- runs


def tfidf_baseline(data: Path) -> float:
    """TF-IDF (words and bigrams, sublinear tf) + logistic regression on finetune's split of `data`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from kerastl.data import drop_undecodable, scan_folder, split
    from kerastl.inputs.text import load_texts

    parts = split(drop_undecodable(scan_folder(data, "text")), seed=0)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vectorizer.fit_transform(load_texts(parts.train_files))
    classifier = LogisticRegression(max_iter=2000, C=10.0).fit(x_train, parts.train_labels)
    predicted = classifier.predict(vectorizer.transform(load_texts(parts.val_files)))
    return float((predicted == parts.val_labels).mean())


def causes(text: str) -> list[str]:
    """Which of the legacy rule's listed differences `text` holds."""
    from kerastl.inputs.text_rules import DELIMITER_REGEX, FOLD_CASE_REGEX

    found = []
    if "\0" in text:
        found.append("nul")
    if _INSIDE_PUNCTUATION.search(text.split("\0", 1)[0]):
        found.append("punctuation_inside_word")
    tokens = [t for t in re.split(DELIMITER_REGEX, text) if t]
    if any(re.search("[A-Z]", t) and not re.fullmatch(FOLD_CASE_REGEX, t) for t in tokens):
        found.append("mixed_case_word")
    return found


def agreement(model, tflite: Path, texts) -> dict:
    """MediaPipe against Keras on unlabelled `texts`: top-1 agreement, same token ids, and (for an inexact
    tokenizer) the texts with other ids by listed cause."""
    import numpy as np

    from kerastl.export import verify_text_classifier
    from kerastl.inputs.text import mediapipe_id_agreement, mediapipe_tokenizer, tokenize
    from kerastl.inputs.text_rules import mediapipe_ids

    texts = np.asarray(texts, dtype=object)
    reference = model.predict(texts, batch_size=256, verbose=0)
    figures = verify_text_classifier(tflite, texts, reference=reference)
    record = mediapipe_tokenizer(model)
    figures["same_ids"] = mediapipe_id_agreement(model, texts, record)
    keras_ids = tokenize(model, texts)
    length = keras_ids.shape[1]
    differing = [str(t) for t, ids in zip(texts, keras_ids.tolist())
                 if mediapipe_ids(str(t), record["delim_regex_pattern"], record["vocabulary"], length) != ids]
    tally = {"punctuation_inside_word": 0, "mixed_case_word": 0, "nul": 0, "unexplained": 0}
    for text in differing:
        found = causes(text)
        for cause in found:
            tally[cause] += 1
        tally["unexplained"] += not found
    figures["texts_with_other_ids"] = len(differing)
    figures["by_cause"] = tally
    return figures


def oov_share(model, texts) -> float:
    """The share of the (non-padding) token ids of `texts` that are out of vocabulary (id 1)."""
    from kerastl.inputs.text import tokenize

    ids = tokenize(model, texts)
    return float((ids == 1).sum() / max((ids > 0).sum(), 1))


def bench_task(name: str, data: Path, backbone: Path, tokenizer: str, args, work: Path) -> dict:
    from kerastl.export import export
    from kerastl.train.finetune import FinetuneConfig, finetune

    run = work / f"{name}-{tokenizer}-run"
    if not (run / "model.keras").is_file():
        finetune(data, str(backbone), out=run, verbose=0,
                 config=FinetuneConfig(strategy="head", epochs=args.epochs, seed=0))
    tflite = work / f"{name}-{tokenizer}.tflite"
    report = export(run, format="tflite", data=data, out=tflite)
    return {"report": report, "run": run, "tflite": tflite}


def main():
    args = parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kerastl.pretraining.corpora import corpus_examples
    from kerastl.train.evaluate import load_classifier

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cookies = fortune_cookies(work)
    tasks = {"docstrings": work / "docstrings-data", "fortunes": work / "fortunes-data"}
    if not tasks["docstrings"].is_dir():
        library_docstrings(tasks["docstrings"], args.per_class)
    fortune_folder(tasks["fortunes"], cookies, args.per_class)
    unlabelled = {"fortunes (all)": [c for name in sorted(cookies) for c in cookies[name]],
                  "python-docs": list(corpus_examples("python-docs")[0])}
    backbones = {"legacy": SHIPPED, "fold_case": refolded_backbone(work / "refolded.keras")}
    raw = {"tasks": {}, "unlabelled": {}, "baseline_tfidf": {}}
    for task, data in tasks.items():
        raw["baseline_tfidf"][task] = round(tfidf_baseline(data), 6)
        for tokenizer, backbone in backbones.items():
            result = bench_task(task, data, backbone, tokenizer, args, work)
            report = result["report"]
            model, _ = load_classifier(result["run"])
            raw["tasks"][f"{task}/{tokenizer}"] = {
                "keras_accuracy": report["keras"]["accuracy"], "tflite": report["exports"]["tflite"],
                "tokenizer": {k: v for k, v in report["tokenizer"]["mediapipe"].items()}}
            # The unlabelled set of the same kind as the task, run by the task's model.
            kind = "fortunes (all)" if task == "fortunes" else "python-docs"
            figures = agreement(model, result["tflite"], unlabelled[kind])
            figures["oov_share"] = round(oov_share(model, unlabelled[kind]), 6)
            raw["unlabelled"][f"{kind}/{tokenizer}"] = figures
            print(f"done {task}/{tokenizer} ({time.perf_counter() - started:.0f} s)", flush=True)

    print("\nHeld-out texts (20% of each task): accuracy, and MediaPipe (raw strings) against Keras\n")
    print("| task | tokenizer | n | TF-IDF+LR | Keras | LiteRT | MediaPipe | MediaPipe top-1 = Keras | same ids | "
          "max abs diff | LiteRT ms | MediaPipe ms | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, row in raw["tasks"].items():
        task, tokenizer = key.split("/")
        lite, mp = row["tflite"], row["tflite"]["mediapipe"]
        print(f"| {task} | {tokenizer} | {mp['n']} | {raw['baseline_tfidf'][task]:.2%} | {row['keras_accuracy']:.2%} | "
              f"{lite['accuracy']:.2%} | {mp['accuracy']:.2%} | {mp['top1_agreement']:.2%} | {mp['same_ids']:.2%} | "
              f"{mp['max_abs_diff']:.3g} | {lite['median_latency_ms']:.3f} | {mp['median_latency_ms']:.3f} | "
              f"{mp['median_latency_ms'] / lite['median_latency_ms']:.2f} |")
    print("\nUnlabelled real texts: MediaPipe against Keras (the task's model)\n")
    print("| texts | tokenizer | n | top-1 = Keras | same ids | other ids | inside punctuation | mixed case | NUL | "
          "unexplained | OOV share | MediaPipe ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, f in raw["unlabelled"].items():
        kind, tokenizer = key.rsplit("/", 1)
        c = f["by_cause"]
        print(f"| {kind} | {tokenizer} | {f['n']} | {f['top1_agreement']:.2%} | {f['same_ids']:.2%} | "
              f"{f['texts_with_other_ids']} | {c['punctuation_inside_word']} | {c['mixed_case_word']} | {c['nul']} | "
              f"{c['unexplained']} | {f['oov_share']:.2%} | {f['median_latency_ms']:.3f} |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
