"""The text TFLite contract: `kerastl.inputs.text.tokenizer_rules` states exactly what Keras' tokenizer does, so that a
tokenizer written from the record alone, in plain Python `re`, gives Keras' ids, for kerastl's own
standardization (`fold_case_and_split_punctuation`) and for Keras' "lower_and_strip_punctuation" of the backbones
built before it. Fixtures hold what a naive app gets wrong: snake_case words (the legacy rule deletes `_`, the
new one splits there), non-ASCII punctuation (kept), accented capitals (lower-cased A-Z only), mixed case (the new
rule keeps "TensorFlow" as spelled), a NUL (the new rule drops the rest) and non-ASCII whitespace (no split)."""

import json
import re

import keras
import numpy as np
import pytest

from kerastl.inputs import text

FIXTURES = [
    "Call set_trainable_by_pattern (model, 'conv*') before fit.",
    "ÉCOLE, École and école — three words? «Guillemets» and “quotes” it’s… ¿Qué? ¡Hola!",
    "foo-bar a.b.c [UNK] x's 3.14 ÄÖÜ ΣΑΣ İstanbul naïve café ﬁ",
    "TensorFlow tensorflow TENSORFLOW Tensorflow iPhone McDonald 3D “Word” A1b",
    "tabs\tand\nlines\rand\x0bvertical\x0cfeeds   many  spaces",
    "no\u00a0break\u3000ideographic\u2003em space",
    "",
    "!!! ... ___",
    "before the NUL\x00after it",
    " ".join(f"word{i}" for i in range(40)),  # longer than the sequence: truncated
]
MODES = [text.FOLD_CASE, text.LEGACY_STANDARDIZE]


def tokenizer_model(vocabulary, sequence_length, standardize=text.STANDARDIZE):
    layer = text.make_tokenizer(list(vocabulary), vocabulary_size=len(vocabulary) + 2,
                                sequence_length=sequence_length, standardize=standardize)
    inputs = keras.Input((), dtype="string")
    return keras.Model(inputs, layer(inputs))


def app_tokens(rules, sentence):
    """What an app writes from the report's record: no TensorFlow, no Keras. The tokens of `sentence`."""
    assert rules["exact"]
    if rules["steps"] == ["cut_at_nul", "split", "fold_case", "lookup", "truncate", "pad"]:
        sentence = sentence.split("\0", 1)[0]
        tokens = [t for t in re.split(rules["split_regex"], sentence) if t]
        return [re.sub("[A-Z]", lambda m: m.group().lower(), t) if re.fullmatch(rules["fold_case_regex"], t) else t
                for t in tokens]
    assert rules["steps"] == ["lowercase", "strip", "split", "lookup", "truncate", "pad"]
    assert rules["lowercase"].startswith("ASCII only")
    sentence = re.sub("[A-Z]", lambda m: m.group().lower(), sentence)
    sentence = re.sub(rules["strip_regex"], "", sentence)
    return [t for t in re.split(rules["split_regex"], sentence) if t]


def app_tokenizer(rules, vocabulary):
    """`app_tokens`, looked up in the vocabulary file's lines and cut or padded to the sequence length."""
    ids_of = {token: i for i, token in enumerate(vocabulary)}
    length = rules["sequence_length"]

    def tokenize(sentence):
        ids = [ids_of.get(t, rules["oov_id"]) for t in app_tokens(rules, sentence)[:length]]
        return ids + [rules["pad_id"]] * (length - len(ids))

    return tokenize


def record_of(vocabulary, sequence_length, standardize=text.STANDARDIZE):
    model = tokenizer_model(vocabulary, sequence_length, standardize)
    rules = text.tokenizer_rules(model)
    json.dumps(rules)  # the report is JSON
    return model, rules, text.vocabulary_of(model)


VOCABULARY = ["settrainablebypattern", "set", "trainable", "école", "École", "«guillemets»", "«Guillemets»",
              "“quotes”", "it’s…", "¿qué", "foobar", "foo", "bar", "abc", "unk", "xs", "314", "ÄÖÜ", "ΣΑΣ", "naïve",
              "no\u00a0break\u3000ideographic\u2003em", "tabs", "lines", "vertical", "feeds", "spaces", "call",
              "fit", "word3", "ﬁ", "İstanbul", "tensorflow", "TensorFlow", "iPhone", "3d", "“word”", "a1b", "after",
              "nul", "before"]


@pytest.mark.parametrize("standardize", MODES)
def test_reference_tokenizer_from_the_record_gives_keras_ids(standardize):
    model, rules, vocab = record_of(VOCABULARY, 12, standardize)
    expected = text.tokenize(model, FIXTURES)
    app = app_tokenizer(rules, vocab)
    assert [app(s) for s in FIXTURES] == expected.tolist()
    assert rules["standardize"] == standardize
    # The fixtures do exercise the rules: snake_case joins or splits, non-ASCII punctuation and É stay.
    if standardize == text.LEGACY_STANDARDIZE:
        assert expected[0][1] == vocab.index("settrainablebypattern")
        assert vocab.index("«guillemets»") in expected[1]
    else:
        assert expected[0][1:3].tolist() == [vocab.index("set"), vocab.index("trainable")]
        assert vocab.index("«Guillemets»") not in expected[1] and vocab.index("«guillemets»") in expected[1]
        assert expected[3][:6].tolist() == [vocab.index(w) for w in ["TensorFlow"] + ["tensorflow"] * 3 + ["iPhone"]] \
            + [1]  # McDonald: not in the vocabulary, as spelled
        assert expected[8].tolist()[:3] == [vocab.index("before"), 1, vocab.index("nul")] and expected[8][3] == 0
    assert vocab.index("École") in expected[1]


def test_the_naive_app_tokenizer_disagrees_with_keras():
    """Why the record exists: `str.lower()` and `[^\\w\\s]` (the test's former reference) keep `_`, strip “ ”
    and lower-case É, so they give other ids than the model was trained on."""
    vocabulary = ["settrainablebypattern", "set_trainable_by_pattern", "école", "École", "quotes", "“quotes”"]
    model, _, vocab = record_of(vocabulary, 4, text.LEGACY_STANDARDIZE)
    ids_of = {t: i for i, t in enumerate(vocab)}
    sentence = "set_trainable_by_pattern École “quotes”"
    naive = [ids_of.get(w, 1) for w in re.sub(r"[^\w\s]", "", sentence.lower()).split()]
    keras_ids = text.tokenize(model, [sentence])[0][:3].tolist()
    assert keras_ids == [ids_of["settrainablebypattern"], ids_of["École"], ids_of["“quotes”"]]
    assert naive != keras_ids


@pytest.mark.parametrize("standardize", MODES)
def test_the_record_holds_for_every_character(standardize):
    """Each probe of `sweep_probes`: the record's rules give the tokens Keras gives. A token Keras made differently
    would be out of vocabulary (id 1) where the app finds it."""
    points, probes = sweep_probes()
    _, rules, _ = record_of(["x"], 8, standardize)
    tokens = set()
    for probe in probes:
        tokens.update(app_tokens(rules, probe))
    tokens.discard("[UNK]")
    model, rules, vocab = record_of(sorted(tokens), 8, standardize)
    app = app_tokenizer(rules, vocab)
    expected = text.tokenize(model, probes).tolist()
    wrong = [(hex(c), probe) for c, probe, ids in zip(points, probes, expected) if app(probe) != ids]
    assert not wrong, wrong[:10]


def sweep_probes():
    """Each code point up to U+30FF (and a few beyond) in three positions and three spellings."""
    points = [c for c in range(0x3100) if not 0xD800 <= c <= 0xDFFF] + [0xFEFF, 0x1E9E, 0x1F600, 0xFF3F]
    return points, [f"Ab{chr(c)}Cd {chr(c)}Ef{chr(c)} GH{chr(c)}I j{chr(c)}Kl" for c in points]


def test_mediapipe_rule_gives_keras_ids_for_every_character():
    """kerastl's tokenizer and MediaPipe's regex tokenizer with the vocabulary file kerastl writes for it
    (`mediapipe_tokenizer`, stated in Python by `text_rules.mediapipe_ids`) give the same ids for every probe:
    the three spellings of each word, and nothing else, map to its id. (tests/test_tflite_metadata_text.py runs
    MediaPipe itself on these probes.)"""
    from kerastl.inputs.text_rules import mediapipe_ids

    _, probes = sweep_probes()
    _, rules, _ = record_of(["x"], 8)
    tokens = sorted({t for probe in probes for t in app_tokens(rules, probe)} - {"[UNK]"})
    # Half the words in the vocabulary, so that both look-ups and misses are exercised.
    model, _, _ = record_of(tokens[::2], 8)
    record = text.mediapipe_tokenizer(model)
    assert record["exact"] and record["differs_when"] == []
    expected = text.tokenize(model, probes).tolist()
    got = [mediapipe_ids(p, record["delim_regex_pattern"], record["vocabulary"], 8) for p in probes]
    wrong = [(probe, a, b) for probe, a, b in zip(probes, got, expected) if a != b]
    assert not wrong, wrong[:5]
    assert sum(1 in ids for ids in expected) > len(probes) / 2  # misses are exercised


def test_the_record_names_keras_own_regex():
    """The strip regex is Keras' own, character for character: a Keras that changes it fails here."""
    import inspect

    from keras.src.layers.preprocessing import text_vectorization

    assert text.KERAS_STRIP_REGEX in inspect.getsource(text_vectorization)


def test_a_rule_the_record_cannot_state_is_not_called_exact():
    """A model without a tokenizer has no record; a custom split function is flagged, not described wrongly.
    (The export report's `tokenizer` entry is this record: tests/test_text.py tokenizes from it.)"""
    assert text.tokenizer_rules(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])) == {"mode": "none"}
    layer = keras.layers.TextVectorization(split=lambda s: s, output_mode="int", output_sequence_length=4,
                                           vocabulary=["a"])
    inputs = keras.Input((), dtype="string")
    rules = text.tokenizer_rules(keras.Model(inputs, layer(inputs)))
    assert rules["exact"] is False and "split" in rules["note"]
    np.testing.assert_equal(rules["pad_id"], 0)
