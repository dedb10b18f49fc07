"""kerastl.export.metadata.add_text_classifier_metadata with a `BertTokenizer`: MediaPipe Tasks' TextClassifier
runs the TFLite file of a classifier on a `kerashub:` BERT backbone on raw strings.

Two tiny BERT backbones built here (a keras-hub preset and a Hugging Face transformers directory, both lower-case
WordPiece, from tests/test_kerashub.py) get kerastl's head, a few epochs on two topics, and are converted as
`kerastl export` converts them (`token_ids`, `padding_mask`, `segment_ids`, int32, reordered by the converter).
With the metadata, MediaPipe must return our labels and Keras' scores on ASCII texts (mixed case, punctuation,
unknown words, longer than the sequence), and on every text the scores of the TFLite file fed
`kerastl.inputs.packed_text.mediapipe_bert_inputs` (the statement of MediaPipe's tokenizer), including where it
differs from keras-hub's (full-width letters, zero-width and vertical-tab separators). Bad inputs to the writer and
tokenizers MediaPipe cannot follow (cased; DistilBERT's two inputs) are refused in one line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerastl.errors import KerastlError

from .test_kerashub import FILLER, TOPICS, VOCABULARY, hf_bert_directory, tiny_bert_preset

keras_hub = pytest.importorskip("keras_hub", reason="the kerashub extra (pip install -e '.[test]') is not installed")
# mediapipe is in the test extra: these MediaPipe TextClassifier checks must run, not skip.
from mediapipe.tasks.python import BaseOptions
from mediapipe.tasks.python.text import TextClassifier, TextClassifierOptions

LABELS = sorted(TOPICS)
# ASCII texts: MediaPipe's BertTokenizer gives keras-hub's ids for every one.
ASCII_TEXTS = [
    "",
    "Rain and WIND today.",
    "The COACH saw a Goal, the team scored!",
    "rain,rain;rain...storm-wind (snow) [ball] {match} <team> 'goal' \"score\"",
    "storms rained; goals scored; clouds",  # ##s, ##ed
    "zebra quokka xylophone unknownword rainzzz",  # unknown words and an unknown tail
    "The coach's team wasn't here: 3 goals, 2.5 matches, 100% sunny @home #snow $5 ^_^ `x` ~y | a\\b",
    "tabs\tand\nlines\rand\ffeeds   between rain and snow",
    "[CLS] [SEP] [PAD] [UNK] [MASK] ##s ##ed",
    " ".join(["rain", "goal"] * 30),  # longer than the sequence: cut
    "a" * 150 + " rain",  # a word over 100 bytes is [UNK]
]
# Where MediaPipe's rules part from keras-hub's (see mediapipe_bert_rule's differs_when).
DIFFERENT = [
    "ＲＡＩＮ and ｗｉｎｄ",  # keras-hub's NFKC_Casefold makes them rain, wind; MediaPipe keeps full-width letters
    "rain\u200bwind snow",  # keras-hub splits at the zero-width space (\p{Cf}); MediaPipe keeps it in the word
    "rain\x0bwind snow",  # a vertical tab: keras-hub splits (\p{Cc}); RE2's \s does not match it
]
OTHER = [
    "café Naïve ÉCOLE rain",  # unknown either way in this vocabulary
    "snow雨wind。goal",  # ideographs and CJK punctuation are words of their own in both
    "a goal\x00 rain rain",  # MediaPipe cuts at the NUL
]


def training_texts(seed=0, per_class=20):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, topic in enumerate(LABELS):
        for _ in range(per_class):
            words = list(rng.choice(TOPICS[topic], 3)) + list(rng.choice(FILLER, 3))
            rng.shuffle(words)
            texts.append(" ".join(words).capitalize() + ".")
            labels.append(label)
    return texts, np.asarray(labels)


def classifier(spec):
    """kerastl's classifier on the backbone `spec`, trained for a few epochs on the two topics."""
    import keras

    from kerastl.backbones import load_backbone
    from kerastl.train.head import build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier(load_backbone(spec).model, len(LABELS), seed=0, zero_init=False).model
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    texts, labels = training_texts()
    model.fit(np.asarray(texts, dtype=object), labels, epochs=4, batch_size=8, verbose=0)
    return model


def to_tflite(model) -> bytes:
    """The packed-input file as `kerastl export` converts it, without metadata."""
    import tempfile
    from pathlib import Path

    from kerastl.export.tflite import lite_model

    converted, signature = lite_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        converted.export(str(path), format="litert", verbose=False, input_signature=[signature])
        return path.read_bytes()


@pytest.fixture(scope="module", params=["preset", "hugging_face"])
def exported(request, tmp_path_factory):
    from kerastl.export.metadata import BertTokenizer, add_text_classifier_metadata
    from kerastl.inputs.packed_text import mediapipe_bert_rule

    if request.param == "preset":
        root = tiny_bert_preset(tmp_path_factory.mktemp("presets") / "tiny_bert")
    else:
        root = hf_bert_directory(tmp_path_factory.mktemp("hf") / "bert-tiny")[0]
    model = classifier(f"kerashub:{root}")
    blob = to_tflite(model)
    record = mediapipe_bert_rule(model)
    with_metadata = add_text_classifier_metadata(blob, labels=LABELS,
                                                 tokenizer=BertTokenizer(tuple(record["vocabulary"])))
    return {"keras": model, "tflite": blob, "model": with_metadata, "record": record}


def mediapipe_scores(model: bytes, texts):
    """MediaPipe's scores (in label order) and the category names it returned, per text."""
    options = TextClassifierOptions(base_options=BaseOptions(model_asset_buffer=model), max_results=len(LABELS))
    scores, names = [], []
    with TextClassifier.create_from_options(options) as classifier:
        for text in texts:
            categories = classifier.classify(text).classifications[0].categories
            row = np.zeros(len(LABELS), "float32")
            for category in categories:
                row[category.index] = category.score
            scores.append(row)
            names.append(sorted(category.category_name for category in categories))
    return np.stack(scores), names


def litert_scores(model: bytes, packed: dict) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model).get_signature_runner()
    rows = len(next(iter(packed.values())))
    return np.stack([next(iter(runner(**{k: v[i:i + 1] for k, v in packed.items()}).values()))[0]
                     for i in range(rows)])


# ---------------------------------------------------------------------------------------------
# MediaPipe end to end


def test_mediapipe_gives_keras_labels_and_scores_on_ascii_text(exported):
    texts = ASCII_TEXTS + training_texts(seed=1, per_class=10)[0]
    expected = exported["keras"].predict(np.asarray(texts, dtype=object), verbose=0)
    scores, names = mediapipe_scores(exported["model"], texts)
    assert all(n == LABELS for n in names)
    np.testing.assert_array_equal(scores.argmax(-1), expected.argmax(-1))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    # The model has learnt something, so agreeing is not trivial: the held-out topics are told apart.
    y = training_texts(seed=1, per_class=10)[1]
    assert (scores[len(ASCII_TEXTS):].argmax(-1) == y).mean() >= 0.8
    assert np.ptp(scores[:, 0]) > 0.2


def test_mediapipe_bert_inputs_predict_what_mediapipe_computes(exported):
    """MediaPipe's scores are the TFLite file's on `mediapipe_bert_inputs`, for every text; those are keras-hub's
    own packed inputs for the ASCII texts and not for the listed differences."""
    from kerastl.inputs.packed_text import (
        mediapipe_bert_inputs,
        pack,
        packed_tokenizer_of,
        packed_vocabulary,
    )

    texts = ASCII_TEXTS + DIFFERENT + OTHER
    length = packed_tokenizer_of(exported["keras"]).sequence_length  # 16 (preset), 32 (max positions)
    by_mediapipe = mediapipe_bert_inputs(texts, packed_vocabulary(exported["keras"]), length)
    scores, _ = mediapipe_scores(exported["model"], texts)
    np.testing.assert_allclose(scores, litert_scores(exported["tflite"], by_mediapipe), atol=1e-6)
    own = pack(exported["keras"], texts)
    same = np.all([(own[k] == by_mediapipe[k]).all(axis=1) for k in own], axis=0)
    n = len(ASCII_TEXTS)
    assert same[:n].all() and not same[n:n + len(DIFFERENT)].any()
    # The frame: [CLS] first, [SEP] last, 0 after; mask 1 over the framed tokens; segment ids 0.
    long = ASCII_TEXTS.index(" ".join(["rain", "goal"] * 30))
    ids = by_mediapipe["token_ids"][long]
    assert ids[0] == VOCABULARY.index("[CLS]") and ids[-1] == VOCABULARY.index("[SEP]")
    assert by_mediapipe["padding_mask"][long].all() and not by_mediapipe["segment_ids"].any()
    assert by_mediapipe["token_ids"][0].tolist()[:3] == [VOCABULARY.index("[CLS]"), VOCABULARY.index("[SEP]"), 0]
    assert by_mediapipe["token_ids"][ASCII_TEXTS.index("a" * 150 + " rain")][1] == VOCABULARY.index("[UNK]")


def test_metadata_names_the_three_inputs_in_the_subgraphs_order(exported):
    """The converter reorders the inputs (segment_ids first here): the metadata follows the subgraph's order, named
    as MediaPipe finds them; the tokenizer is the subgraph's process unit; the vocabulary is packed line by line."""
    from kerastl.export.metadata import read_associated_files, read_metadata
    from kerastl.export.metadata.schema import _root_model

    summary = read_metadata(exported["model"])
    assert json.loads(json.dumps(summary)) == summary
    assert summary["min_parser_version"] == "1.1.0"
    graph = _root_model(exported["model"]).Subgraphs(0)
    tensor_names = [graph.Tensors(graph.Inputs(i)).Name().decode() for i in range(3)]
    names = {"ids": "token_ids", "mask": "padding_mask", "segment_ids": "segment_ids"}
    assert [f"serving_default_{names[t['name']]}:0" for t in summary["inputs"]] == tensor_names
    assert tensor_names[0] != "serving_default_token_ids:0"  # the order is not the Keras one: a real check
    assert summary["input_process_units"] == [{"type": "bert", "vocabulary_files": ["vocab.txt"]}]
    assert all(t["tokenizer"] is None for t in summary["inputs"]) and summary["label_files"] == ["labels.txt"]
    files = read_associated_files(exported["model"])
    assert files["vocab.txt"].decode("utf-8").split("\n")[:-1] == VOCABULARY
    assert files["labels.txt"] == "".join(f"{label}\n" for label in LABELS).encode()


def test_rule_record(exported):
    record = exported["record"]
    assert record["supported"] and record["tokenizer"] == "BertTokenizer" and not record["exact"]
    assert "ASCII" in record["exact_on"] and len(record["differs_when"]) == 2


@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_quantized_files_carry_the_metadata_too(exported, quantize):
    """`convert_tflite` writes the metadata for every quantization text allows: MediaPipe's scores are the quantized
    file's own on keras-hub's ids."""
    from kerastl.export.tflite import convert_tflite
    from kerastl.inputs.packed_text import pack

    blob = convert_tflite(exported["keras"], labels=LABELS, quantize=quantize)
    scores, names = mediapipe_scores(blob, ASCII_TEXTS)
    assert all(n == LABELS for n in names)
    np.testing.assert_allclose(scores, litert_scores(blob, pack(exported["keras"], ASCII_TEXTS)), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("change, message", [
    (lambda v: v[:3] + v[4:], "no [SEP]"),  # [SEP] dropped
    (lambda v: [t for t in v if t != "[UNK]"], "no [UNK]"),
    (lambda v: v + ["rain"], "'rain' is repeated"),
    (lambda v: v[:5] + [""] + v[5:], "is empty"),
    (lambda v: v[:5] + ["two\nlines"] + v[5:], "line break"),
    (lambda v: v[:5] + ["cr\r"] + v[5:], "line break"),
    (lambda v: [], "non-empty list"),
    (lambda v: "vocab.txt", "non-empty list"),
])
def test_writer_refuses_vocabularies_mediapipe_reads_otherwise(exported, change, message):
    from kerastl.export.metadata import BertTokenizer, add_text_classifier_metadata

    with pytest.raises(KerastlError) as error:
        add_text_classifier_metadata(exported["tflite"], labels=LABELS, tokenizer=BertTokenizer(change(VOCABULARY)))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("names, message", [
    ({"ids_input": "input_word_ids"}, "no input named 'input_word_ids'"),
    ({"mask_input": "token_ids"}, "do not name three different inputs"),
    ({"segment_ids_input": "serving_default_token_ids:0"}, "do not name three different inputs"),
])
def test_writer_refuses_input_names_that_miss(exported, names, message):
    from kerastl.export.metadata import BertTokenizer, add_text_classifier_metadata

    with pytest.raises(KerastlError) as error:
        add_text_classifier_metadata(exported["tflite"], labels=LABELS,
                                     tokenizer=BertTokenizer(tuple(VOCABULARY), **names))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_tensor_names_work_as_input_names(exported):
    from kerastl.export.metadata import BertTokenizer, add_text_classifier_metadata

    tokenizer = BertTokenizer(tuple(VOCABULARY), ids_input="serving_default_token_ids:0",
                              mask_input="serving_default_padding_mask:0",
                              segment_ids_input="serving_default_segment_ids:0")
    assert add_text_classifier_metadata(exported["tflite"], labels=LABELS, tokenizer=tokenizer) == exported["model"]


def test_writer_refuses_models_without_three_inputs(exported, tmp_path):
    """A one-input (regex) model, and the labels and tokenizer records, are checked in one line each."""
    import keras

    from kerastl.export.metadata import BertTokenizer, RegexTokenizer, add_text_classifier_metadata

    ids = keras.Input((8,), dtype="int32", name="token_ids")
    one_input = keras.Model(ids, keras.layers.Dense(2, activation="softmax")(
        keras.layers.Embedding(len(VOCABULARY), 4)(ids)[:, 0]))
    one_input.export(str(tmp_path / "one.tflite"), format="litert", verbose=False)
    with pytest.raises(KerastlError, match="1 inputs and 1 outputs; a text classifier with a BERT tokenizer"):
        add_text_classifier_metadata((tmp_path / "one.tflite").read_bytes(), labels=LABELS,
                                     tokenizer=BertTokenizer(tuple(VOCABULARY)))
    with pytest.raises(KerastlError, match="3 inputs and 1 outputs; a text classifier with a regex tokenizer"):
        add_text_classifier_metadata(exported["tflite"], labels=LABELS,
                                     tokenizer=RegexTokenizer("[ ]+", {"<PAD>": 0, "<UNKNOWN>": 1}))
    with pytest.raises(KerastlError, match="Got 3 labels"):
        add_text_classifier_metadata(exported["tflite"], labels=LABELS + ["third"],
                                     tokenizer=BertTokenizer(tuple(VOCABULARY)))
    with pytest.raises(KerastlError, match="tokenizer is a dict; pass one of RegexTokenizer, BertTokenizer"):
        add_text_classifier_metadata(exported["tflite"], labels=LABELS, tokenizer={"vocabulary": VOCABULARY})


def tiny_distilbert_preset(root):
    """A keras-hub DistilBERT preset: WordPiece like BERT, but no segment ids (two inputs)."""
    tokenizer = keras_hub.tokenizers.DistilBertTokenizer(vocabulary=VOCABULARY, lowercase=True)
    preprocessor = keras_hub.models.DistilBertTextClassifierPreprocessor(tokenizer, sequence_length=16)
    backbone = keras_hub.models.DistilBertBackbone(vocabulary_size=len(VOCABULARY), num_layers=1, num_heads=2,
                                                   hidden_dim=8, intermediate_dim=16, max_sequence_length=32)
    backbone.save_to_preset(str(root))
    preprocessor.save_to_preset(str(root))
    return root


@pytest.mark.parametrize("kind, why", [
    ("cased", "is cased (lowercase=False)"),  # MediaPipe lower-cases every text
    ("distilbert", "three int32 inputs (ids, mask, segment ids); DistilBertTextClassifierPreprocessor gives 2"),
])
def test_tokenizers_mediapipe_cannot_follow_get_no_metadata_and_the_report_says_why(tmp_path, kind, why):
    """The file exports without metadata, and the export report's tokenizer.mediapipe.why says why in one line."""
    from kerastl.export.metadata import read_metadata
    from kerastl.export.tflite import convert_tflite
    from kerastl.modalities.text import TEXT

    root = (tiny_bert_preset(tmp_path / kind, lowercase=False) if kind == "cased"
            else tiny_distilbert_preset(tmp_path / kind))
    model = classifier(f"kerashub:{root}")
    record = TEXT.companion_contents(model)["vocabulary"][1]["mediapipe"]
    assert not record["supported"] and why in record["why"] and "\n" not in record["why"]
    blob = convert_tflite(model, labels=LABELS)
    with pytest.raises(KerastlError, match="no TFLITE_METADATA"):
        read_metadata(blob)
    assert TEXT.task_figures(blob, model, ["Rain"], reference=np.zeros((1, 2)), y_true=None) is None
