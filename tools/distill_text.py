"""Distils all-MiniLM-L6-v2 into a small kerastl text backbone, trained on general English from Debian packages.

The student is a kerastl text backbone (raw strings in, a `TextVectorization` tokenizer inside, so the TFLite
split and the vocabulary companion work as for every text model): word vectors → `ZeroPadding` → two 1-D
convolutions (the second dilated, padding zeroed between them) → the masked means of the word vectors and of
the convolution features → Dense(384) → `UnitNormalization`. Its output is a 384-wide, L2-normalised sentence
embedding trained to equal the teacher's (`tools/minilm_teacher.py`: mean-pooled, normalised, as
sentence-transformers gives it): the loss is the cosine distance between the two.

Steps, each kept in `--work` and skipped when its output is there, so a killed run resumes:
1. corpus: `tools/english_corpus.py` (WordNet glosses, GCIDE senses, man pages, Debian package descriptions);
   the last `--validation` texts are held out to report the distillation cosine (the benchmark's evaluation
   texts, fortune cookies, are in none of the sources);
2. vocabulary: the `--vocabulary-size` most frequent tokens of the training texts under kerastl's tokenizer rule;
3. teacher: its embedding of every text (in chunks of 8192), and of every vocabulary word alone;
4. init: the word vectors start as the teacher's embedding of each word, reduced by PCA to `--embed` dimensions,
   and the output layer as the PCA's inverse, so that the untrained student already gives the mean of its
   words' teacher embeddings (as model2vec does); the convolutions start small;
5. train: Adam with a cosine-decayed learning rate; batches hold texts of similar length and are cut to their
   longest text (`ZeroPadding` makes that exact), the whole training model saved after each epoch;
6. write: the backbone as `--out`/backbone.keras with a manifest (teacher package, version, file hashes and
   license; corpus packages and versions; this command) via kerastl's `write_backbone`.

    python tools/distill_text.py --work /tmp/kerastl-distill --out saved_models/english-minilm-distil [--default]

Needs the teacher's packages (see tools/minilm_teacher.py); the corpus needs apt-get, dpkg and man.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import english_corpus
import minilm_teacher
import numpy as np

CHUNK = 8192
ARCH = "distil-cnn"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _atomic_save(path: Path, array) -> None:
    part = path.with_name(path.name + ".part.npy")
    np.save(part, array)
    os.replace(part, path)


# ------------------------------------------------------------------------------------------------- student


def encoder_layers(vocabulary_size: int, embed: int, width: int, out: int = minilm_teacher.WIDTH) -> dict:
    """The student's trained layers, by name (shared by the training model and the saved backbone)."""
    import keras

    from kerastl.inputs.text import MaskedAveragePooling1D, ZeroPadding

    return {
        "embedding": keras.layers.Embedding(vocabulary_size, embed, name="embedding"),
        "pad0": ZeroPadding(name="zero_padding"),
        "conv1": keras.layers.Conv1D(width, 3, padding="same", activation="relu", name="conv1"),
        "pad1": ZeroPadding(name="zero_padding_conv1"),
        "conv2": keras.layers.Conv1D(width, 3, padding="same", dilation_rate=2, activation="relu", name="conv2"),
        "words": MaskedAveragePooling1D(name="mean_words"),
        "phrases": MaskedAveragePooling1D(name="mean_phrases"),
        "pooled": keras.layers.Concatenate(name="pooled"),
        "projection": keras.layers.Dense(out, name="projection"),
        "features": keras.layers.UnitNormalization(name="features"),
    }


def encode_ids(layers: dict, ids):
    embedded = layers["embedding"](ids)
    x = layers["conv1"](layers["pad0"]([embedded, ids]))
    x = layers["conv2"](layers["pad1"]([x, ids]))
    pooled = layers["pooled"]([layers["words"]([embedded, ids]), layers["phrases"]([x, ids])])
    return layers["features"](layers["projection"](pooled))


def build_backbone(vocabulary, layers: dict, sequence_length: int):
    """Raw strings (batch,) → tokenizer → the encoder → (batch, 384)."""
    import keras

    from kerastl.inputs.text import make_tokenizer

    tokenizer = make_tokenizer(list(vocabulary), vocabulary_size=len(vocabulary) + 2,
                               sequence_length=sequence_length)
    texts = keras.Input((), dtype="string", name="texts")
    return keras.Model(texts, encode_ids(layers, tokenizer(texts)), name="text_distil_cnn")


def build_training_model(layers: dict):
    """Token ids of any length (batch, steps) → the encoder; the model that trains."""
    import keras

    ids = keras.Input((None,), dtype="int64", name="token_ids")
    return keras.Model(ids, encode_ids(layers, ids), name="distil_training")


# --------------------------------------------------------------------------------------------------- steps


def step_corpus(work: Path, args) -> list[str]:
    path = work / "corpus.txt"
    if not path.is_file():
        log("corpus: building from Debian packages")
        texts, record = english_corpus.build(work / "debian", {
            "wordnet": args.wordnet, "gcide": args.gcide, "manpages": args.manpages,
            "debian-descriptions": args.descriptions}, seed=args.seed)
        (work / "corpus.json").write_text(json.dumps(record, indent=1))
        part = path.with_name("corpus.txt.part")
        part.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        os.replace(part, path)
    texts = path.read_text(encoding="utf-8").split("\n")[:-1]
    log(f"corpus: {len(texts)} texts")
    return texts


def step_vocabulary(work: Path, train_texts, args) -> list[str]:
    from kerastl.inputs.text import build_vocabulary

    path = work / "vocabulary.txt"
    if not path.is_file():
        log("vocabulary: counting tokens")
        words = build_vocabulary(train_texts, vocabulary_size=args.vocabulary_size,
                                 sequence_length=args.sequence_length)
        path.with_name("vocabulary.txt.part").write_text("".join(w + "\n" for w in words), encoding="utf-8")
        os.replace(path.with_name("vocabulary.txt.part"), path)
    words = path.read_text(encoding="utf-8").split("\n")[:-1]
    log(f"vocabulary: {len(words)} tokens (+ padding and OOV)")
    return words


def step_teacher(work: Path, texts, words, args) -> tuple[np.ndarray, np.ndarray]:
    directory = work / "teacher"
    directory.mkdir(exist_ok=True)
    teacher = None
    chunks = []
    start = time.perf_counter()
    for index, first in enumerate(range(0, len(texts), CHUNK)):
        path = directory / f"targets-{index:05d}.npy"
        if not path.is_file():
            if teacher is None:
                teacher = minilm_teacher.Teacher(max_length=args.teacher_max_length)
                minilm_teacher.check(teacher)
            _atomic_save(path, teacher.encode(texts[first:first + CHUNK], batch_size=64))
            done = min(first + CHUNK, len(texts))
            log(f"teacher: {done}/{len(texts)} texts ({time.perf_counter() - start:.0f} s)")
        chunks.append(np.load(path))
    words_path = directory / "words.npy"
    if not words_path.is_file():
        teacher = teacher or minilm_teacher.Teacher(max_length=args.teacher_max_length)
        _atomic_save(words_path, teacher.encode(words, batch_size=256))
        log("teacher: vocabulary words embedded")
    return np.concatenate(chunks), np.load(words_path)


def initial_weights(word_vectors: np.ndarray, embed: int, layers: dict, seed: int) -> None:
    """Word vectors from the teacher's word embeddings by PCA; the output layer inverts the PCA for the mean
    word vector and starts near zero for the convolution features."""
    mean = word_vectors.mean(axis=0)
    _, _, components = np.linalg.svd(word_vectors - mean, full_matrices=False)
    components = components[:embed]  # (embed, 384)
    coordinates = (word_vectors - mean) @ components.T  # (words, embed)
    # Rows 0 (padding) and 1 (out of vocabulary) start at the origin, i.e. at the mean word.
    table = np.concatenate([np.zeros((2, embed)), coordinates]).astype("float32")
    layers["embedding"].set_weights([table])
    kernel = layers["projection"].get_weights()[0]
    rng = np.random.default_rng(seed)
    kernel = kernel * 0.1
    kernel[:embed] = components + rng.normal(0, 1e-3, components.shape)
    layers["projection"].set_weights([kernel.astype("float32"), mean.astype("float32")])


def batches(ids: np.ndarray, lengths: np.ndarray, targets: np.ndarray, batch_size: int, seed: int):
    """One epoch of (ids, targets) batches: shuffled, then sorted by length within groups of 50 batches, each
    batch cut to its longest text, the batch order shuffled."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    group = batch_size * 50
    cut = []
    for first in range(0, len(order), group):
        part = order[first:first + group]
        part = part[np.argsort(lengths[part], kind="stable")]
        cut += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    for index in rng.permutation(len(cut)):
        rows = cut[index]
        width = max(1, int(lengths[rows].max()))
        yield ids[rows, :width], targets[rows]


def mean_cosine(model, ids, targets, batch_size=512) -> float:
    predictions = model.predict(ids, batch_size=batch_size, verbose=0)
    return float(np.mean(np.sum(predictions * targets, axis=1)))


def step_train(work: Path, train_ids, train_lengths, train_targets, val_ids, val_targets, layers, args):
    import keras
    import tensorflow as tf

    directory = work / "train"
    directory.mkdir(exist_ok=True)
    state_path, checkpoint = directory / "state.json", directory / "model.keras"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"epoch": 0, "history": []}
    steps_per_epoch = -(-len(train_ids) // args.batch_size)
    if state["epoch"] and checkpoint.is_file():
        model = keras.saving.load_model(checkpoint)
        for layer in layers.values():
            layer.set_weights(model.get_layer(layer.name).get_weights())
        log(f"train: resumed after epoch {state['epoch']}")
    else:
        model = build_training_model(layers)
        schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps_per_epoch * args.epochs,
                                                          warmup_target=None)
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss=keras.losses.CosineSimilarity())
        cosine = mean_cosine(model, val_ids, val_targets)
        state["history"].append({"epoch": 0, "val_cosine": round(cosine, 5)})
        log(f"train: before training, validation cosine {cosine:.4f}")
    signature = (tf.TensorSpec((None, None), tf.int64), tf.TensorSpec((None, minilm_teacher.WIDTH), tf.float32))
    start = time.perf_counter()
    for epoch in range(state["epoch"], args.epochs):
        data = tf.data.Dataset.from_generator(
            lambda e=epoch: batches(train_ids, train_lengths, train_targets, args.batch_size, args.seed + e),
            output_signature=signature).prefetch(4)
        history = model.fit(data, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        cosine = mean_cosine(model, val_ids, val_targets)
        state["epoch"] = epoch + 1
        state["history"].append({"epoch": epoch + 1, "loss": round(float(history.history["loss"][-1]), 5),
                                 "val_cosine": round(cosine, 5)})
        state["train_seconds"] = round(state.get("train_seconds", 0.0) + time.perf_counter() - start, 1)
        start = time.perf_counter()
        model.save(directory / "model.part.keras")
        os.replace(directory / "model.part.keras", checkpoint)
        state_path.write_text(json.dumps(state, indent=1))
        log(f"train: epoch {epoch + 1}/{args.epochs}: loss {history.history['loss'][-1]:.4f}, validation cosine "
            f"{cosine:.4f} ({state['train_seconds']:.0f} s in all)")
    for layer in layers.values():
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return state


def command_line() -> str:
    return " ".join(shlex.quote(word) for word in ["python", "tools/distill_text.py", *sys.argv[1:]])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kerastl-distill"))
    parser.add_argument("--out", type=Path, default=Path("saved_models/english-minilm-distil"))
    parser.add_argument("--name", default=None, help="Default: the --out directory's name.")
    parser.add_argument("--default", action="store_true", help='Mark it "default": true in its manifest.')
    parser.add_argument("--wordnet", type=int, default=80000)
    parser.add_argument("--gcide", type=int, default=80000)
    parser.add_argument("--manpages", type=int, default=20000)
    parser.add_argument("--descriptions", type=int, default=40000)
    parser.add_argument("--validation", type=int, default=2048, help="Corpus texts held out (the last ones).")
    parser.add_argument("--vocabulary-size", type=int, default=24000)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--embed", type=int, default=160)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--teacher-max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-after", choices=["corpus", "teacher", "train"], default=None)
    args = parser.parse_args()

    import keras

    from kerastl.inputs.text import tokenize  # noqa: F401  (the tokenizer rule the backbone keeps)
    from kerastl.pretraining.execution import hardware_summary
    from kerastl.pretraining.run import write_backbone

    keras.utils.set_random_seed(args.seed)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    texts = step_corpus(work, args)
    if args.stop_after == "corpus":
        return
    train_texts, val_texts = texts[:-args.validation], texts[-args.validation:]
    words = step_vocabulary(work, train_texts, args)
    targets, word_vectors = step_teacher(work, texts, words, args)
    if args.stop_after == "teacher":
        return

    layers = encoder_layers(len(words) + 2, args.embed, args.width)
    backbone = build_backbone(words, layers, args.sequence_length)
    initial_weights(word_vectors, args.embed, layers, args.seed)
    tokenizer = backbone.get_layer("tokenizer")
    ids = np.concatenate([np.asarray(tokenizer(np.asarray(texts[i:i + 8192], dtype=object)))
                          for i in range(0, len(texts), 8192)]).astype("int64")
    lengths = (ids != 0).sum(axis=1)
    n = len(train_texts)
    state = step_train(work, ids[:n], lengths[:n], targets[:n], ids[n:], targets[n:], layers, args)
    if args.stop_after == "train":
        return

    backbone = build_backbone(words, layers, args.sequence_length)
    check = np.asarray(backbone(np.asarray(val_texts[:256], dtype=object)))
    gap = float(np.abs(check - build_training_model(layers).predict(ids[n:n + 256], verbose=0)).max())
    corpus = json.loads((work / "corpus.json").read_text())
    name = args.name or args.out.name
    final = state["history"][-1]
    description = (f"{ARCH} (word vectors {args.embed} wide over {len(words) + 2} tokens, two 1-D convolutions of "
                   f"{args.width}, masked means, Dense 384, L2-normalised) distilled from all-MiniLM-L6-v2 "
                   f"(PyPI {minilm_teacher.PACKAGE}): its output is trained to equal the teacher's sentence "
                   f"embedding (cosine loss) on {n} general English texts from Debian packages (WordNet glosses, "
                   "GCIDE dictionary senses, Linux man pages, Debian package descriptions); validation cosine "
                   f"with the teacher {final['val_cosine']:.3f} on {len(val_texts)} held-out texts"
                   + ("; the default text backbone" if args.default else ""))
    manifest = {
        "format_version": 1, "name": name, "modality": "text", "description": description,
        "default": bool(args.default),
        "input": {"shape": [], "dtype": "string", "encoding": "utf-8", "layout": "text",
                  "sequence_length": args.sequence_length},
        "preprocessing": {"mode": "text_vectorization", "standardize": "lower_and_strip_punctuation",
                          "split": "whitespace", "sequence_length": args.sequence_length,
                          "vocabulary_size": len(words) + 2,
                          "vocabulary_source": "the most frequent tokens of the distillation corpus"},
        "feature_width": minilm_teacher.WIDTH, "arch": ARCH,
        "architecture": {"embed": args.embed, "width": args.width, "output": "L2-normalised 384-wide embedding",
                         "parameters": int(backbone.count_params())},
        "license": "Apache-2.0",
        "license_note": ("the weights are trained from all-MiniLM-L6-v2 (Apache-2.0); the training texts are "
                         "only read, not shipped: WordNet 3.0 license, GCIDE GPL-2+, Linux man-pages GPL-2+ and "
                         "BSD-style, Debian package descriptions under each package's license. The vocabulary "
                         "inside the model is a list of frequent words of those texts."),
        "pretraining": {
            "source": f"distill:{minilm_teacher.UPSTREAM}",
            "source_description": f"the sentence embeddings of {minilm_teacher.UPSTREAM} on {n} English texts of "
                                  "Debian packages (tools/english_corpus.py)",
            "method": "distillation", "loss": "cosine distance to the teacher's embedding",
            "teacher": dict(minilm_teacher.provenance(), pooling="mean over real tokens, L2-normalised",
                            max_length=args.teacher_max_length,
                            check="reproduces the sentence-transformers documentation's similarities for this "
                                  "model to within 2e-4 (tools/minilm_teacher.py)"),
            "corpus": dict(corpus, training_texts=n, validation_texts=len(val_texts)),
            "initialisation": "word vectors: PCA of the teacher's embedding of each vocabulary word; output "
                              "layer: the PCA's inverse (model2vec-style start)",
            "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "schedule": "cosine decay", "seed": args.seed, "examples_seen": n * args.epochs,
            "precision": "float32"},
        "metrics": {"val_cosine": final["val_cosine"], "loss": final.get("loss"),
                    "val_cosine_before_training": state["history"][0]["val_cosine"],
                    "fixed_vs_trimmed_length_max_abs_diff": gap},
        "history": state["history"],
        "command": command_line(),
        "hardware": hardware_summary(),
        "started": started,
        "train_seconds": state.get("train_seconds"),
        "weights": {"file": "backbone.keras"},
    }
    manifest = write_backbone(backbone, manifest, args.out)
    log(f"wrote {args.out} ({manifest['weights']['bytes'] / 2**20:.1f} MiB, validation cosine "
        f"{final['val_cosine']:.4f}, fixed vs trimmed length max diff {gap:.2e})")


if __name__ == "__main__":
    main()
