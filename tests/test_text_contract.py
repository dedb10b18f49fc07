"""The text TFLite contract: `kerastl.inputs.text.tokenizer_rules` states exactly what Keras' tokenizer does, so that a
tokenizer written from the record alone, in plain Python `re`, gives Keras' ids. Fixtures hold what a naive
app gets wrong: snake_case words (Keras deletes `_`), non-ASCII punctuation (Keras keeps it), accented capitals
(Keras lower-cases A-Z only) and non-ASCII whitespace (Keras does not split on it)."""

import json
import re

import keras
import numpy as np

from kerastl.inputs import text

FIXTURES = [
    "Call set_trainable_by_pattern (model, 'conv*') before fit.",
    "ÉCOLE, École and école — three words? «Guillemets» and “quotes” it’s… ¿Qué? ¡Hola!",
    "foo-bar a.b.c [UNK] x's 3.14 ÄÖÜ ΣΑΣ İstanbul naïve café ﬁ",
    "tabs\tand\nlines\rand\x0bvertical\x0cfeeds   many  spaces",
    "no\u00a0break\u3000ideographic\u2003em space",
    "",
    "!!! ... ___",
    " ".join(f"word{i}" for i in range(40)),  # longer than the sequence: truncated
]


def tokenizer_model(vocabulary, sequence_length):
    layer = text.make_tokenizer(list(vocabulary), vocabulary_size=len(vocabulary) + 2,
                                sequence_length=sequence_length)
    inputs = keras.Input((), dtype="string")
    return keras.Model(inputs, layer(inputs))


def app_tokenizer(rules, vocabulary):
    """What an app writes from the report's record and vocabulary file: no TensorFlow, no Keras."""
    assert rules["exact"] and rules["steps"] == ["lowercase", "strip", "split", "lookup", "truncate", "pad"]
    assert rules["lowercase"].startswith("ASCII only")
    ids_of = {token: i for i, token in enumerate(vocabulary)}
    length = rules["sequence_length"]

    def tokenize(sentence):
        sentence = re.sub("[A-Z]", lambda m: m.group().lower(), sentence)
        sentence = re.sub(rules["strip_regex"], "", sentence)
        tokens = [t for t in re.split(rules["split_regex"], sentence) if t][:length]
        ids = [ids_of.get(t, rules["oov_id"]) for t in tokens]
        return ids + [rules["pad_id"]] * (length - len(ids))

    return tokenize


def record_of(vocabulary, sequence_length):
    model = tokenizer_model(vocabulary, sequence_length)
    rules = text.tokenizer_rules(model)
    json.dumps(rules)  # the report is JSON
    return model, rules, text.vocabulary_of(model)


def test_reference_tokenizer_from_the_record_gives_keras_ids():
    vocabulary = ["settrainablebypattern", "école", "École", "«guillemets»", "“quotes”", "it’s…", "¿qué", "foobar",
                  "abc", "unk", "xs", "314", "ÄÖÜ", "ΣΑΣ", "naïve", "no\u00a0break\u3000ideographic\u2003em",
                  "tabs", "lines", "vertical", "feeds", "spaces", "call", "fit", "word3", "ﬁ", "İstanbul"]
    model, rules, vocab = record_of(vocabulary, 12)
    expected = text.tokenize(model, FIXTURES)
    app = app_tokenizer(rules, vocab)
    assert [app(s) for s in FIXTURES] == expected.tolist()
    # The fixtures do exercise the rules: snake_case joins, non-ASCII punctuation and É stay.
    assert expected[0][1] == vocab.index("settrainablebypattern")
    assert vocab.index("École") in expected[1] and vocab.index("«guillemets»") in expected[1]


def test_the_naive_app_tokenizer_disagrees_with_keras():
    """Why the record exists: `str.lower()` and `[^\\w\\s]` (the test's former reference) keep `_`, strip “ ”
    and lower-case É, so they give other ids than the model was trained on."""
    vocabulary = ["settrainablebypattern", "set_trainable_by_pattern", "école", "École", "quotes", "“quotes”"]
    model, _, vocab = record_of(vocabulary, 4)
    ids_of = {t: i for i, t in enumerate(vocab)}
    sentence = "set_trainable_by_pattern École “quotes”"
    naive = [ids_of.get(w, 1) for w in re.sub(r"[^\w\s]", "", sentence.lower()).split()]
    keras_ids = text.tokenize(model, [sentence])[0][:3].tolist()
    assert keras_ids == [ids_of["settrainablebypattern"], ids_of["École"], ids_of["“quotes”"]]
    assert naive != keras_ids


def test_the_record_holds_for_every_character():
    """Each code point up to U+30FF (and a few beyond) in three positions: the record's rules give the tokens
    Keras gives. A token Keras made differently would be out of vocabulary (id 1) where the app finds it."""
    points = [c for c in range(1, 0x3100) if not 0xD800 <= c <= 0xDFFF] + [0xFEFF, 0x1E9E, 0x1F600, 0xFF3F]
    probes = [f"Ab{chr(c)}Cd {chr(c)}Ef{chr(c)}" for c in points]
    _, rules, _ = record_of(["x"], 8)
    tokens = set()
    for probe in probes:
        probe = re.sub("[A-Z]", lambda m: m.group().lower(), probe)
        probe = re.sub(rules["strip_regex"], "", probe)
        tokens.update(t for t in re.split(rules["split_regex"], probe) if t)
    tokens.discard("[UNK]")
    model, rules, vocab = record_of(sorted(tokens), 8)
    app = app_tokenizer(rules, vocab)
    expected = text.tokenize(model, probes).tolist()
    wrong = [(hex(c), probe) for c, probe, ids in zip(points, probes, expected) if app(probe) != ids]
    assert not wrong, wrong[:10]


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
