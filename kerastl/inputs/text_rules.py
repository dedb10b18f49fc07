"""The rules of kerastl's text tokenizers in plain Python: what a `TextVectorization` layer's settings do to a
string, stated for apps (`rules_of`, the export report's `tokenizer` record), and how MediaPipe's regex tokenizer
reproduces them on a phone (`mediapipe_rule`, `mediapipe_vocabulary`, `mediapipe_ids`). No TensorFlow here:
`kerastl.inputs.text` applies these to a model's tokenizer; tests/test_text_contract.py checks them against Keras
character by character, tests/test_tflite_metadata_text.py against MediaPipe.

Two standardizations matter. `LEGACY_STANDARDIZE` is Keras' "lower_and_strip_punctuation", which the backbones
built before `FOLD_CASE` use: ASCII lower-casing, the 32 ASCII punctuation characters deleted, then a whitespace
split. `FOLD_CASE` is what kerastl builds now (`kerastl.inputs.text.fold_case_and_split_punctuation`): the text
cut at its first NUL, split at runs of ASCII whitespace and punctuation, and a token lower-cased when it is
spelled in lower case, Capitalized or ALL CAPS. MediaPipe's RegexTokenizer splits at a delimiter regex and looks
each token up as it is, in a vocabulary file that may list several spellings per id
(kerastl.export.metadata.text_classifier): for `FOLD_CASE` the delimiter is `DELIMITER_REGEX` and the file lists
the three spellings of each word, which gives Keras' ids for every text; for the legacy rule the same file is the
nearest, and `mediapipe_rule` lists where it differs.
"""

from __future__ import annotations

import re
import string

FOLD_CASE = "fold_case_and_split_punctuation"
LEGACY_STANDARDIZE = "lower_and_strip_punctuation"
# The 32 ASCII punctuation characters (Python's `string.punctuation`) as four ranges, and with the six ASCII
# whitespace characters the delimiters between tokens. RE2 (TensorFlow, MediaPipe) and Python's `re` read both alike.
PUNCTUATION_REGEX = r"[!-/:-@\[-`{-~]"
DELIMITER_REGEX = r"[\t\n\x0b\x0c\r !-/:-@\[-`{-~]+"
# A token matching this in full is lower-cased: no ASCII a-z ("WORD", "3D"), or an ASCII capital as its first
# ASCII letter and no other capital ("Word", "“Word”", "¿Qué"). (A token without ASCII capitals is its own lower
# case.) Those are the spellings a vocabulary file can list beside the word: ALL CAPS and Capitalized.
FOLD_CASE_REGEX = r"[^a-z]*|[^A-Za-z]*[A-Z][^A-Z]*"

# What `TextVectorization`'s "lower_and_strip_punctuation" and "whitespace" do, verified character by character
# (tests/test_text_contract.py). Keras lower-cases with `tf.strings.lower` without an encoding, which maps
# A-Z only: "É" and "Σ" stay capitals, where an app's `str.lower()` would change them. Its strip regex
# (keras/src/layers/preprocessing/text_vectorization.py) is exactly the 32 ASCII punctuation characters of
# Python's `string.punctuation`, "_" included, and it runs before the split, so "set_trainable" becomes one token
# "settrainable" and "foo-bar" becomes "foobar". `tf.strings.split` splits on the six ASCII whitespace
# characters only; U+00A0 or U+3000 stay inside a token.
KERAS_STRIP_REGEX = r"""[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']"""
KERAS_SPLIT_REGEX = r"[\t\n\x0b\x0c\r ]+"
_LOWERCASE_RULE = ("ASCII only: A-Z become a-z and every other character is kept as it is (tf.strings.lower "
                   "without an encoding), so 'ÉCOLE' becomes 'École'; do not use a Unicode lower()")
_STRIP_RULE = ("delete every match of strip_regex, i.e. each of the 32 ASCII punctuation characters "
               "(Python's string.punctuation, '_' included), after lower-casing and before splitting: "
               "'set_trainable_by_pattern' becomes 'settrainablebypattern', 'foo-bar' 'foobar'; non-ASCII "
               "punctuation such as “ ” ’ — « » … ¿ is kept, as part of the token it touches")
_SPLIT_RULE = ("split on runs of split_regex (space, tab, LF, VT, FF, CR only; leading and trailing runs "
               "give no token); other whitespace such as U+00A0 or U+3000 stays inside a token")
_CUT_RULE = "drop everything from the first NUL character (U+0000) on"
_DELIMITER_RULE = ("split on runs of split_regex: the six ASCII whitespace characters (space, tab, LF, VT, FF, "
                   "CR) and the 32 ASCII punctuation characters (Python's string.punctuation, '_' included), so "
                   "'set_trainable' is 'set' 'trainable' and \"don't\" is 'don' 't'; the pieces between them are "
                   "the tokens (leading and trailing runs give none); non-ASCII punctuation and whitespace (“ ” "
                   "’ … U+00A0) stay inside the token they touch")
_FOLD_RULE = ("a token matching fold_case_regex in full (no ASCII a-z, or an ASCII capital as its first ASCII "
              "letter and no other ASCII capital: 'WORD', 'Word', 'word', '3D', '“Word”') becomes its ASCII lower "
              "case (A-Z to a-z only, so 'ÉCOLE' becomes 'École'); any other token ('TensorFlow', 'iPhone') is "
              "kept as it is spelled")

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def rules_of(config: dict, standardize: str | None, vocabulary_size: int) -> dict:
    """The exact rule that turns a string into the token ids of a `TextVectorization` layer with `config`
    (its `get_config()`) and standardization `standardize` (`kerastl.inputs.text.standardize_name`), as a
    JSON-able dict; see `kerastl.inputs.text.tokenizer_rules`."""
    split_mode = config.get("split")
    rules = {"mode": "text_vectorization", "standardize": standardize, "split": split_mode}
    unknown = []
    if standardize == FOLD_CASE:
        rules.update(steps=["cut_at_nul", "split", "fold_case", "lookup", "truncate", "pad"], cut_at_nul=_CUT_RULE,
                     fold_case_regex=FOLD_CASE_REGEX, fold_case=_FOLD_RULE)
    else:
        rules["steps"] = ["lowercase", "strip", "split", "lookup", "truncate", "pad"]
        if standardize in ("lower", LEGACY_STANDARDIZE):
            rules["lowercase"] = _LOWERCASE_RULE
        elif standardize in (None, "strip_punctuation"):
            rules["lowercase"] = "none: the case is kept"
        else:
            unknown.append(f"standardize={standardize!r}")
        if standardize in ("strip_punctuation", LEGACY_STANDARDIZE):
            rules.update(strip_regex=KERAS_STRIP_REGEX, strip=_STRIP_RULE)
        elif standardize in (None, "lower"):
            rules.update(strip_regex=None, strip="none: punctuation is kept")
    if split_mode == "whitespace" and standardize == FOLD_CASE:
        # The whitespace split after the standardization's punctuation-to-space: one split at both.
        rules.update(split_regex=DELIMITER_REGEX, split_rule=_DELIMITER_RULE)
    elif split_mode == "whitespace":
        rules.update(split_regex=KERAS_SPLIT_REGEX, split_rule=_SPLIT_RULE)
    elif split_mode == "character":
        rules.update(split_regex=None, split_rule="one token per Unicode code point (UTF-8)")
    elif split_mode is None:
        rules.update(split_regex=None, split_rule="none: the whole standardised string is one token")
    else:
        unknown.append(f"split={split_mode!r}")
    if config.get("ngrams"):
        unknown.append(f"ngrams={config['ngrams']!r}")
    if config.get("output_mode") != "int":
        unknown.append(f"output_mode={config.get('output_mode')!r}")
    length = config.get("output_sequence_length")
    rules.update(
        lookup="a token's id is its 0-based line number in the vocabulary file (exact match, after the steps "
               "above); a token not in it gets oov_id",
        pad_id=0, oov_id=1, sequence_length=length,
        truncate=f"keep the first {length} tokens" if length else "none",
        pad=f"append pad_id after the last token up to {length} ids" if length else "none",
        vocabulary_size=int(vocabulary_size),
        exact=not unknown)
    if unknown:
        rules["note"] = f"the tokenizer uses {', '.join(unknown)}, which this record does not state"
    return rules


def fold_case(token: str) -> str:
    """`FOLD_CASE`'s case rule on one token (see `FOLD_CASE_REGEX`)."""
    return token.translate(_ASCII_LOWER) if re.fullmatch(FOLD_CASE_REGEX, token) else token


# ---------------------------------------------------------------------------------------------- MediaPipe

PAD_ID, OOV_ID = 0, 1
_NUL_DIFFERS = "a text holding a NUL character: MediaPipe reads it only up to there"
_CASE_DIFFERS = ("a word in mixed case other than Capitalized or ALL CAPS ('TensorFlow', 'iPhone', 'McDonald'): "
                 "Keras lower-cases it, MediaPipe finds no such spelling in its vocabulary and gives <UNKNOWN>")
_STRIP_DIFFERS = ("a word with ASCII punctuation inside (\"don't\", 'set_trainable', '3.14', 'e.g.'): Keras deletes "
                  "the punctuation and joins the pieces into one token, MediaPipe splits there")


def mediapipe_rule(config: dict, standardize: str | None) -> dict:
    """How MediaPipe's regex tokenizer comes closest to a `TextVectorization` layer with `config` and
    standardization `standardize`: `{"supported": True, "standardize", "delim_regex_pattern", "case" ("fold",
    "lower" or "keep": which spellings of a vocabulary word MediaPipe's file lists), "exact" (every text gets
    Keras' ids), "differs_when" (the texts that do not, in words)}`, or `{"supported": False, "why"}` for a
    tokenizer that no delimiter regex approaches (a split other than whitespace, n-grams, an output other than
    ids, a custom standardization, no fixed sequence length)."""
    why = []
    if config.get("split") != "whitespace":
        why.append(f"split={config.get('split')!r} (MediaPipe splits at a delimiter regex)")
    if config.get("ngrams"):
        why.append(f"ngrams={config['ngrams']!r}")
    if config.get("output_mode") != "int":
        why.append(f"output_mode={config.get('output_mode')!r}")
    if not config.get("output_sequence_length"):
        why.append("no fixed output_sequence_length")
    if standardize not in (FOLD_CASE, LEGACY_STANDARDIZE, "lower", "strip_punctuation", None):
        why.append(f"standardize={standardize!r}")
    if why:
        return {"supported": False, "why": f"the tokenizer has {', '.join(why)}, which no regex tokenizer reproduces"}
    differs = []
    if standardize != FOLD_CASE:
        differs.append(_NUL_DIFFERS)
    if standardize in ("lower", LEGACY_STANDARDIZE):
        differs.append(_CASE_DIFFERS)
    if standardize in ("strip_punctuation", LEGACY_STANDARDIZE):
        differs.append(_STRIP_DIFFERS)
    # Stripped punctuation can only be a delimiter; kept punctuation stays inside tokens, as in Keras.
    delimiter = DELIMITER_REGEX if standardize in (FOLD_CASE, LEGACY_STANDARDIZE, "strip_punctuation") \
        else KERAS_SPLIT_REGEX
    case = "fold" if standardize == FOLD_CASE else "lower" if standardize in ("lower", LEGACY_STANDARDIZE) \
        else "keep"
    return {"supported": True, "standardize": standardize, "delim_regex_pattern": delimiter, "case": case,
            "exact": not differs, "differs_when": differs}


def mediapipe_vocabulary(vocabulary: list[str], rule: dict) -> dict:
    """MediaPipe's vocabulary (token -> id) for a Keras vocabulary (index i the token of id i; "" and "[UNK]"
    first) under `rule` (`mediapipe_rule`): `<PAD>` 0, `<UNKNOWN>` 1, then for each word its spellings that
    Keras turns into it (the word itself, ALL CAPS and Capitalized, i.e. its first ASCII letter upper-cased,
    each kept only if Keras' case rule maps it back to the word), so that every token MediaPipe sees gets the id
    Keras gives it. A word that holds a delimiter is one Keras never produces after its split; it is left out."""
    delimiter = re.compile(rule["delim_regex_pattern"])
    keras_of = {"fold": fold_case, "lower": lambda t: t.translate(_ASCII_LOWER), "keep": lambda t: t}[rule["case"]]
    mapping = {"<PAD>": PAD_ID, "<UNKNOWN>": OOV_ID}
    for index, word in enumerate(vocabulary[2:], start=2):
        if not word or delimiter.search(word):
            continue
        spellings = (word,) if rule["case"] == "keep" else (
            word, word.translate(_ASCII_UPPER), re.sub("[a-z]", lambda m: m.group().upper(), word, count=1))
        for spelling in spellings:
            if keras_of(spelling) == word:
                mapping.setdefault(spelling, index)
    return mapping


def mediapipe_ids(text: str, delim_regex_pattern: str, vocabulary: dict, sequence_length: int) -> list[int]:
    """The token ids MediaPipe's regex tokenizer gives `text` (its RegexPreprocessorCalculator, re-stated in
    Python: cut at NUL, split at the delimiter, empty pieces dropped, exact look-up with `<UNKNOWN>`'s id for a
    miss, an optional `<START>` first, the first `sequence_length` ids padded with `<PAD>`'s)."""
    text = text.split("\0", 1)[0]
    tokens = [t for t in re.split(f"(?:{delim_regex_pattern})", text) if t]
    start = [vocabulary["<START>"]] if "<START>" in vocabulary else []
    ids = (start + [vocabulary.get(t, vocabulary["<UNKNOWN>"]) for t in tokens])[:sequence_length]
    return ids + [vocabulary["<PAD>"]] * (sequence_length - len(ids))
