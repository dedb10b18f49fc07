"""Text through a keras-hub preprocessor: raw strings in, the preset's tokenizer and packer baked into the model
as one layer (`PackedTokenizer`), so that `model.keras` and the SavedModel take raw strings as kerastl's own text
models do.

A keras-hub text classifier preprocessor (`BertTextClassifierPreprocessor`, ...) turns a string into the
inputs of its backbone: WordPiece token ids framed by `[CLS]` and `[SEP]` and padded to `sequence_length`, a
padding mask and (BERT) segment ids. Placed directly in a functional model it cannot be reloaded: its
vocabulary is a file asset that Keras restores only after the model is rebuilt, and rebuilding calls the
tokenizer symbolically, which fails without a vocabulary. `PackedTokenizer` holds the preprocessor and states its
output shapes itself (`compute_output_spec`), so the rebuild never runs the tokenizer and the vocabulary arrives
with the other assets. Its outputs are int32 `(batch, sequence_length)` tensors, in the order of `PACKED_INPUTS`.

For TFLite, which has no kernels for the tokenizer's string ops, `packed_model` gives the classifier from those
int32 tensors (one input each: `token_ids`, `padding_mask`, `segment_ids`), `packed_vocabulary` the WordPiece
vocabulary written beside it, and `packed_rules` the tokenizer's rules, so that an app makes the same ids. `pack`
runs the model's own preprocessor for checking. `mediapipe_bert_rule` says whether MediaPipe's BertTokenizer
(which the file's metadata then names) reproduces the tokenizer, and where it differs; `mediapipe_bert_inputs`
is what MediaPipe feeds the file for a string, computed by the same tensorflow-text ops MediaPipe runs.

keras-hub is imported only when a model holds this layer: it is in the `kerashub` extra.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from kerastl.errors import KerastlError

#: The outputs a keras-hub text preprocessor may give, in the order a TFLite file takes them.
PACKED_INPUTS = ("token_ids", "padding_mask", "segment_ids")
# MediaPipe's BertTokenizer (tasks/cc/text/tokenizers/bert_tokenizer.h): the RE2 pattern it splits a text at, and
# the part of it kept as words (punctuation and CJK ideographs; runs of whitespace are dropped).
_CJK = (r"[\x{4E00}-\x{9FFF}]|[\x{3400}-\x{4DBF}]|[\x{20000}-\x{2A6DF}]|[\x{2A700}-\x{2B73F}]|"
        r"[\x{2B740}-\x{2B81F}]|[\x{2B820}-\x{2CEAF}]|[\x{F900}-\x{FAFF}]|[\x{2F800}-\x{2FA1F}]")
MEDIAPIPE_BERT_KEEP = r"([!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]|" + _CJK + ")"
MEDIAPIPE_BERT_SPLIT = r"(\s+|[!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]|" + _CJK + ")"
# What MediaPipe's BertPreprocessor writes by name: the frame, and tensorflow-text WordPiece's unknown piece.
_MEDIAPIPE_FRAME, _MEDIAPIPE_UNKNOWN, _MEDIAPIPE_SUFFIX = ("[CLS]", "[SEP]"), "[UNK]", "##"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def require_keras_hub(feature: str) -> None:
    """Raises KerastlError (one line naming the `kerashub` extra) unless keras-hub and tensorflow-text import."""
    from kerastl import extras

    extras.require(feature, "keras_hub", "tensorflow_text")


@keras.saving.register_keras_serializable(package="kerastl")
class PackedTokenizer(keras.layers.Layer):
    """Raw strings (batch,) → a list of int32 (batch, sequence_length) tensors, one per key of `packed_keys` (a
    subset of `PACKED_INPUTS`, in its order), by the keras-hub text preprocessor it holds. A list, not a dict: a
    functional model keeps a list's order when it is saved and rebuilt, and renames the keys of a dict.

    Args:
        preprocessor: a keras-hub `TextClassifierPreprocessor` (tokenizer and packer) with a fixed
            `sequence_length`.
        outputs: the keys to give, of those the preprocessor returns (default: all of `PACKED_INPUTS` it
            returns, found by running it on one string).

    Raises:
        KerastlError: the preprocessor has no fixed sequence length, or returns keys other than
            `PACKED_INPUTS`.
    """

    def __init__(self, preprocessor, outputs=None, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.preprocessor = preprocessor
        self.sequence_length = int(getattr(preprocessor, "sequence_length", 0) or 0)
        if not self.sequence_length:
            raise KerastlError(f"{type(preprocessor).__name__} has no fixed sequence_length; kerastl needs one")
        if outputs is None:
            import tensorflow as tf

            outputs = [key for key in PACKED_INPUTS if key in preprocessor(tf.constant(["a"]))]
        unknown = [key for key in outputs if key not in PACKED_INPUTS]
        if unknown or "token_ids" not in outputs:
            raise KerastlError(f"{type(preprocessor).__name__} gives {list(outputs)}; kerastl takes text "
                               f"preprocessors giving {', '.join(PACKED_INPUTS)}")
        self.packed_keys = [key for key in PACKED_INPUTS if key in outputs]

    def build(self, input_shape=None):
        # Nothing to build: the preprocessor builds its packer on its first real call, once its vocabulary is
        # there (a model being reloaded gets it only after every layer is built).
        self.built = True

    def call(self, texts):
        from keras import ops

        packed = self.preprocessor(texts)
        return [ops.cast(packed[key], "int32") for key in self.packed_keys]

    def compute_output_spec(self, texts):
        batch = texts.shape[0] if texts.shape else None
        return [keras.KerasTensor((batch, self.sequence_length), "int32", name=key) for key in self.packed_keys]

    def get_config(self):
        config = super().get_config()
        config.update(preprocessor=keras.saving.serialize_keras_object(self.preprocessor), outputs=self.packed_keys)
        return config

    @classmethod
    def from_config(cls, config):
        # keras-hub registers its classes when imported; Keras would import the module a config names, but the
        # missing extra should be one line, not an import error deep inside deserialisation.
        require_keras_hub("this model's tokenizer (a keras-hub preprocessor)")
        import keras_hub  # noqa: F401

        config = dict(config)
        config["preprocessor"] = keras.saving.deserialize_keras_object(config["preprocessor"])
        return cls(**config)

    # ------------------------------------------------------------------------------------------ description
    @property
    def tokenizer(self):
        return self.preprocessor.tokenizer

    def record(self) -> dict:
        """The JSON-able record of what the layer does (manifests, metrics): the preprocessor, its tokenizer and
        sequence length."""
        tokenizer = self.tokenizer
        return {"mode": "keras_hub", "preprocessor": type(self.preprocessor).__name__,
                "tokenizer": type(tokenizer).__name__, "lowercase": getattr(tokenizer, "lowercase", None),
                "sequence_length": self.sequence_length, "vocabulary_size": int(tokenizer.vocabulary_size()),
                "outputs": list(self.packed_keys)}


def packed_tokenizer_of(model):
    """The `PackedTokenizer` of `model` (descending into nested models), or None. Without keras-hub imported no
    model can hold one, so this never imports it."""
    from kerastl.core.graph import walk_layers

    if "keras_hub" not in sys.modules:
        return None
    return next((layer for layer in walk_layers(model) if isinstance(layer, PackedTokenizer)), None)


def _word_piece(model):
    """The model's tokenizer if it is a WordPiece one (BERT's), else None."""
    packer = packed_tokenizer_of(model)
    if packer is None:
        return None
    import keras_hub

    tokenizer = packer.tokenizer
    return tokenizer if isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer) else None


def tflite_refusal(model) -> str | None:
    """Why the model's keras-hub tokenizer cannot be split off for TFLite (not WordPiece: kerastl writes the
    vocabulary and rules of WordPiece only), or None."""
    packer = packed_tokenizer_of(model)
    if packer is None or _word_piece(model) is not None:
        return None
    return (f"the TFLite form of a text model takes token ids with the tokenizer's vocabulary beside it; kerastl "
            f"states the rules of WordPiece tokenizers only, and this one is a {type(packer.tokenizer).__name__}: "
            "export it with --format saved_model")


def packed_vocabulary(model) -> list[str]:
    """The WordPiece vocabulary: line i is the token of id i (`[PAD]`, `[UNK]`, `[CLS]`... where the preset
    has them)."""
    return [str(token) for token in _word_piece(model).get_vocabulary()]


def packed_rules(model) -> dict:
    """The rules that turn a string into the TFLite file's inputs, JSON-able (the export report's `tokenizer`),
    as keras-hub's `WordPieceTokenizer` applies them, in `steps` order: a space around each CJK ideograph
    (`cjk_regex`), accents stripped (NFD, then every nonspacing mark deleted), a split on whitespace and control
    characters (`split_regex`) keeping each punctuation character and ideograph as a word (`keep_regex`),
    Unicode case folding of each word, greedy longest-match WordPiece with the suffix marker (a word with no
    match, or over 100 bytes, is the unknown token), then the frame `start pieces end`, truncation and padding
    to `sequence_length`. Steps the tokenizer is configured without are left out. The regexes are keras-hub's
    own (RE2 syntax, `\\p{...}` Unicode classes)."""
    # The regexes the tokenizer runs, from its own module.
    from keras_hub.src.tokenizers import word_piece_tokenizer as rules

    packer = packed_tokenizer_of(model)
    tokenizer = _word_piece(model)
    vocabulary = tokenizer.get_vocabulary()

    def special(name):
        # The tokenizer's special tokens (`start_token`, `start_token_id`, ...), which the packer frames with.
        return getattr(tokenizer, f"{name}_token", None), getattr(tokenizer, f"{name}_token_id", None)

    (start, start_id), (end, end_id), (pad, pad_id) = special("start"), special("end"), special("pad")
    length = packer.sequence_length
    cjk = bool(tokenizer.split and getattr(tokenizer, "split_on_cjk", True))
    steps = [step for step, on in (("cjk_spacing", cjk), ("strip_accents", tokenizer.strip_accents),
                                   ("split", tokenizer.split), ("lowercase", tokenizer.lowercase),
                                   ("wordpiece", True), ("frame", True), ("truncate", True), ("pad", True)) if on]
    inputs = ", ".join(f"{key} int32 (1, {length})" for key in packer.packed_keys)
    return {
        "mode": "keras_hub_wordpiece",
        "preprocessor": type(packer.preprocessor).__name__,
        "tokenizer": type(tokenizer).__name__,
        "steps": steps,
        "cjk_regex": rules.CJK_REGEX if cjk else None,
        "strip_accents": "NFD, then delete every nonspacing mark (\\p{Mn})" if tokenizer.strip_accents else "none",
        "split_regex": rules.WHITESPACE_REGEX + "|" + rules.PUNCTUATION_REGEX + ("|" + rules.CJK_REGEX if cjk else "")
        if tokenizer.split else None,
        "keep_regex": rules.PUNCTUATION_REGEX + ("|" + rules.CJK_REGEX if cjk else "") if tokenizer.split else None,
        "split": "split at every match of split_regex; matches of keep_regex stay as words of their own, the "
                 "rest (whitespace, control characters) is dropped" if tokenizer.split else "none",
        "lowercase": "Unicode case folding (NFKC_Casefold, tf_text.case_fold_utf8) of each word, not only A-Z"
        if tokenizer.lowercase else "none: the case is kept",
        "wordpiece": f"greedy longest match from the start of each word, continuation pieces prefixed with "
                     f"{tokenizer.suffix_indicator!r}; a word with no match, or over 100 bytes, is "
                     f"{tokenizer.oov_token}",
        "suffix_indicator": tokenizer.suffix_indicator,
        "oov_token": tokenizer.oov_token, "oov_id": vocabulary.index(tokenizer.oov_token),
        "start_token": start, "start_id": start_id, "end_token": end, "end_id": end_id,
        "pad_token": pad, "pad_id": pad_id,
        "sequence_length": length,
        "frame": f"{start} pieces {end}",
        "truncate": f"keep the first {length - 2} word pieces before framing them",
        "pad": f"append {pad} ({pad_id}) up to {length} ids",
        "padding_mask": "1 for the framed tokens, 0 for padding" if "padding_mask" in packer.packed_keys else None,
        "segment_ids": "0 everywhere (one text per example)" if "segment_ids" in packer.packed_keys else None,
        "inputs": inputs,
        "vocabulary_size": len(vocabulary),
        "summary": f"the TFLite file takes {inputs}, not strings (TFLite has no string kernels): tokenize with "
                   f"{{vocabulary_file}} by WordPiece{' (case-folded)' if tokenizer.lowercase else ''}, framed as "
                   f"{start} pieces {end}, {pad} ({pad_id}) pads",
    }


def packed_model(model):
    """What a text classifier holding a `PackedTokenizer` becomes for TFLite: the same classifier from the
    packed int32 tensors, one input per key (`token_ids`, `padding_mask`, `segment_ids`, in that order, each
    (batch, sequence_length)), sharing its layers and weights.

    Raises:
        KerastlError: the model holds no `PackedTokenizer`, or is not the chain that
            `kerastl.train.head.build_classifier` makes.
    """
    from kerastl.inputs.text import model_after

    packer = packed_tokenizer_of(model)
    if packer is None:
        raise KerastlError(f"{model.name} holds no keras-hub preprocessor to split off")
    inputs = [keras.Input((packer.sequence_length,), dtype="int32", name=key) for key in packer.packed_keys]
    return model_after(model, packer, inputs, inputs)


def pack(model, texts) -> dict:
    """The packed int32 tensors of `texts` by the model's own preprocessor: `{key: (len(texts), sequence_length)}`,
    as the TFLite file takes them."""
    import tensorflow as tf

    packer = packed_tokenizer_of(model)
    packed = packer(tf.constant(np.asarray(list(texts), dtype=object).astype(str).tolist(), tf.string))
    return {key: np.asarray(value).astype("int32") for key, value in zip(packer.packed_keys, packed)}


# ---------------------------------------------------------------------------------------------- MediaPipe


def mediapipe_bert_rule(model) -> dict:
    """Whether MediaPipe's BertTokenizer (`kerastl.export.metadata.text_classifier`'s docstring says what it does)
    gives the model's TFLite inputs for a string: `{"supported": True, "tokenizer": "BertTokenizer", "exact":
    False, "exact_on", "differs_when", "vocabulary"}` (`exact_on`: the texts it gives the model's own ids for;
    `differs_when`: the characters where keras-hub's rules and MediaPipe's part), else `{"supported": False,
    "tokenizer": "BertTokenizer", "why"}`, the one rule MediaPipe cannot reproduce: not a WordPiece tokenizer,
    not three inputs, cased (MediaPipe lower-cases every text), no splitting, special tokens other than [CLS],
    [SEP], [UNK] and the ``##`` suffix, which MediaPipe uses by name, or padding with another id than 0. The
    vocabulary's own checks are the metadata writer's (`kerastl.export.metadata.check_bert_vocabulary`)."""
    packer, tokenizer = packed_tokenizer_of(model), _word_piece(model)
    record = {"tokenizer": "BertTokenizer"}
    if tokenizer is None:
        return {**record, "supported": False, "why": tflite_refusal(model) or "the model holds no WordPiece tokenizer"}
    name = type(tokenizer).__name__
    keys = list(packer.packed_keys)
    start, end = getattr(tokenizer, "start_token", None), getattr(tokenizer, "end_token", None)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    preprocessor = type(packer.preprocessor).__name__
    refusals = (
        (keys != list(PACKED_INPUTS),
         (f"MediaPipe's BERT models take three int32 inputs (ids, mask, segment ids); {preprocessor} gives "
         f"{len(keys)} ({', '.join(keys)})")),
        (not tokenizer.lowercase,
         (f"MediaPipe lower-cases every text (A-Z) and this {name} is cased (lowercase=False): every capitalised "
         "word would get another id")),
        (not tokenizer.split,
         f"MediaPipe splits every text at whitespace and punctuation, and this {name} does not split (split=False)"),
        (tokenizer.suffix_indicator != _MEDIAPIPE_SUFFIX,
         (f"MediaPipe's WordPiece marks continuation pieces with '##', this {name} with "
         f"{tokenizer.suffix_indicator!r}")),
        (tokenizer.oov_token != _MEDIAPIPE_UNKNOWN,
         f"MediaPipe writes [UNK] for unknown words, this {name} {tokenizer.oov_token!r}"),
        ((start, end) != _MEDIAPIPE_FRAME,
         f"MediaPipe frames every text with [CLS] and [SEP], this {name} with {start!r} and {end!r}"),
        (pad_id != 0, f"MediaPipe pads with id 0, this {name} with {pad_id!r} ({getattr(tokenizer, 'pad_token', None)})"),
    )
    why = next((reason for failed, reason in refusals if failed), None)
    if why:
        return {**record, "supported": False, "why": why}
    folding = "case-folds Unicode (NFKC_Casefold: É is é, ß is ss, ﬁ is fi)" + (
        " and strips accents" if tokenizer.strip_accents else "")
    control = ("an ASCII control character other than tab, line feed, form feed and carriage return, or a Unicode "
               "format character (\\p{Cf}, e.g. U+200B): keras-hub splits at it, MediaPipe keeps it inside the word "
               "(and cuts the text at a NUL)")
    differs = [f"a non-ASCII letter: keras-hub {folding}; MediaPipe lower-cases A-Z only", control]
    if not getattr(tokenizer, "split_on_cjk", True):
        differs.append("a CJK ideograph: MediaPipe splits each off as a word, this tokenizer (split_on_cjk=False) "
                       "does not")
    if getattr(tokenizer, "special_tokens_in_strings", False):
        differs.append("a special token spelled in the text ([CLS], [MASK], ...): keras-hub keeps it as one token, "
                       "MediaPipe splits it at its brackets")
    return {**record, "supported": True, "exact": False,
            "exact_on": "texts of printable ASCII characters, spaces, tabs, line feeds, form feeds and carriage "
                        "returns: MediaPipe gives the model's own ids",
            "differs_when": differs, "vocabulary": packed_vocabulary(model)}


def mediapipe_bert_inputs(texts, vocabulary, sequence_length: int) -> dict:
    """What MediaPipe's BertPreprocessor feeds a BERT model for each of `texts`: `{key: (len(texts),
    sequence_length) int32}` for `PACKED_INPUTS`. The text is cut at a NUL and lower-cased A-Z, split by
    tensorflow-text's `regex_split` at `MEDIAPIPE_BERT_SPLIT` keeping `MEDIAPIPE_BERT_KEEP`, and its words go
    through tensorflow-text's `WordpieceTokenizer` (the ops MediaPipe's C++ calls: RegexSplit and WordpieceTokenize,
    ``##``, 100 bytes a word, [UNK]); then [CLS] pieces [SEP], cut to `sequence_length`, padded with 0."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    vocabulary = [str(token) for token in vocabulary]
    cleaned = [str(text).split("\x00", 1)[0].translate(_ASCII_LOWER) for text in texts]
    if not cleaned:
        return {key: np.zeros((0, sequence_length), "int32") for key in PACKED_INPUTS}
    words = tf_text.regex_split(tf.constant(cleaned, tf.string), MEDIAPIPE_BERT_SPLIT, MEDIAPIPE_BERT_KEEP)
    # MediaPipe's vocabulary map keeps a repeated token's last id (the writer refuses repeats anyway).
    ids = {token: index for index, token in enumerate(vocabulary)}
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(list(ids)), tf.constant(list(ids.values()), tf.int64)), default_value=-1)
    wordpiece = tf_text.WordpieceTokenizer(table, suffix_indicator=_MEDIAPIPE_SUFFIX, max_bytes_per_word=100,
                                           token_out_type=tf.int64, unknown_token=_MEDIAPIPE_UNKNOWN)
    pieces = wordpiece.tokenize(words).merge_dims(1, 2).to_list()
    out = {key: np.zeros((len(cleaned), sequence_length), "int32") for key in PACKED_INPUTS}
    for row, text_pieces in enumerate(pieces):
        framed = [ids.get(_MEDIAPIPE_FRAME[0], 0), *text_pieces[:max(sequence_length - 2, 0)],
                  ids.get(_MEDIAPIPE_FRAME[1], 0)][:sequence_length]
        out["token_ids"][row, :len(framed)] = framed
        out["padding_mask"][row, :len(framed)] = 1
    return out


def mediapipe_bert_agreement(model, texts) -> float | None:
    """The share of `texts` for which MediaPipe's BertTokenizer (`mediapipe_bert_inputs`) gives the model's own
    packed inputs (`pack`); None for no texts."""
    if not len(texts):
        return None
    packer = packed_tokenizer_of(model)
    expected = pack(model, texts)
    by_mediapipe = mediapipe_bert_inputs(texts, packed_vocabulary(model), packer.sequence_length)
    same = np.ones(len(texts), bool)
    for key in packer.packed_keys:
        same &= (expected[key] == by_mediapipe[key]).all(axis=1)
    return round(float(same.mean()), 6)
