"""Text input: `.txt` files in, raw strings through the model, the tokenizer and its vocabulary baked into it.

A text backbone takes raw strings, a batch of shape (batch,), as image backbones take raw pixels. Its first
layer is a `keras.layers.TextVectorization` (named "tokenizer") holding the vocabulary of its pre-training
corpus, so the vocabulary travels inside `backbone.keras`, every fine-tuned `model.keras` and every exported
SavedModel, which therefore takes raw strings too.

TFLite has no builtin kernels for string splitting and lookup, so a text classifier cannot become a .tflite
file that takes strings. `tokenized_model(model)` gives what can be converted instead: the same classifier
from token ids (int64, (batch, sequence_length)), plus the vocabulary and the tokenizer's exact rule
(`tokenizer_rules`), so that an app tokenises before calling it; tests/test_text_contract.py checks that a
tokenizer written from the record alone gives Keras' ids. MediaPipe's TextClassifier tokenises itself, by the
regex tokenizer and vocabulary file in the .tflite file's metadata (`mediapipe_tokenizer`): the tokenizer of the
backbones kerastl builds (`STANDARDIZE`, `fold_case_and_split_punctuation`) is one it reproduces exactly;
for the backbones built before (Keras' "lower_and_strip_punctuation") it is the nearest, and the export report
says how often MediaPipe agrees.

The `textcnn-*` encoders: embedding → two 1-D convolutions (the second dilated); the backbone outputs the
average over the real tokens (`MaskedAveragePooling1D`, so padding does not dilute short texts) of both the word
vectors and the convolution features, concatenated. `textcnn-s` (64-wide word vectors, 128-wide convolutions)
and `textcnn-m` (96, 192); `textcnn-l` has 192-wide word vectors (128-wide convolutions, 320 features) and
word dropout: while training, each token's vector is zeroed with probability 0.3 (`WORD_DROPOUT`), so the
classifier cannot lean on a few memorised words and the mean word vector has to carry the topic of the rest.
Both are meant for a new output layer on frozen features: the shipped text backbone with them beats training
from scratch on tools/bench_fewshot_audio_text.py's text task (README table).

The default text backbone, saved_models/english-minilm-distil, is built by tools/distill_text.py with the same
tokenizer, `ZeroPadding` and `MaskedAveragePooling1D`: a student of all-MiniLM-L6-v2 that outputs a 384-wide
sentence embedding.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import ops

from kerastl.errors import KerastlError
from kerastl.inputs.text_rules import (  # noqa: F401 (KERAS_* and LEGACY_STANDARDIZE re-exported)
    FOLD_CASE,
    FOLD_CASE_REGEX,
    KERAS_SPLIT_REGEX,
    KERAS_STRIP_REGEX,
    LEGACY_STANDARDIZE,
    PUNCTUATION_REGEX,
    mediapipe_ids,
    mediapipe_rule,
    mediapipe_vocabulary,
    rules_of,
)

DEFAULT_SEQUENCE_LENGTH = 64
DEFAULT_VOCABULARY_SIZE = 16000
SPLIT = "whitespace"
# name -> (embedding width, convolution width)
TEXT_ARCHS = {"textcnn-s": (64, 128), "textcnn-m": (96, 192), "textcnn-l": (192, 128)}
# name -> the share of whole words dropped in training (word dropout), for the archs that use it
WORD_DROPOUT = {"textcnn-l": 0.3}


@keras.saving.register_keras_serializable(package="kerastl")
class MaskedAveragePooling1D(keras.layers.Layer):
    """Average of `features` (batch, steps, width) over the steps whose token id (batch, steps) is not 0
    (padding). A text of only padding gives zeros."""

    def call(self, inputs):
        features, ids = inputs
        mask = ops.cast(ops.not_equal(ids, 0), features.dtype)[..., None]
        total = ops.sum(features * mask, axis=1)
        return total / ops.maximum(ops.sum(mask, axis=1), 1.0)

    def compute_output_shape(self, input_shape):
        features_shape = input_shape[0]
        return (features_shape[0], features_shape[2])


@keras.saving.register_keras_serializable(package="kerastl")
class ZeroPadding(keras.layers.Layer):
    """`features` (batch, steps, width) with the steps whose token id (batch, steps) is 0 (padding) set to zero.

    Placed before a convolution, it makes the padding positions look like the convolution's own zero
    padding, so a text's features do not depend on how far it is padded: the same text padded to 64 tokens
    or cut to its own length gives the same output (the distilled text backbone trains on batches trimmed to
    their longest text, and serves at the tokenizer's fixed length).
    """

    def call(self, inputs):
        features, ids = inputs
        return features * ops.cast(ops.not_equal(ids, 0), features.dtype)[..., None]

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def read_text(path) -> str:
    """The contents of a UTF-8 text file (a BOM is dropped).

    Raises:
        KerastlError: the file cannot be read, is not UTF-8, or holds only whitespace.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise KerastlError(f"{path} is not UTF-8 text (byte {error.start}); re-save it as UTF-8") from None
    except OSError as error:
        raise KerastlError(f"cannot read {path}: {error.strerror}") from None
    if not text.strip():
        raise KerastlError(f"{path} is empty")
    return text


def decode_error(path) -> str | None:
    """Why `path` cannot be read as text, or None."""
    try:
        read_text(path)
    except KerastlError as error:
        return str(error)[:200]
    return None


def load_texts(files) -> np.ndarray:
    """Reads `files` into a numpy array of Python strings (object dtype), in order."""
    texts = np.empty(len(files), dtype=object)  # np.asarray would make a fixed-width str array
    texts[:] = [read_text(f) for f in files]
    return texts


def text_reader():
    """`(read, signature)` for streaming: `read(path)` is a graph function giving one file's text as
    `read_text` gives it (tf.string, ()), `signature` its tf.TensorSpec. The file is read in Python
    (`tf.numpy_function`), so a BOM and line endings are handled as `load_texts` handles them."""
    import tensorflow as tf

    def read_one(path):
        return np.asarray(read_text(path.decode("utf-8", "surrogateescape")).encode("utf-8"), dtype=object)

    def read(path):
        return tf.ensure_shape(tf.numpy_function(read_one, [path], tf.string, stateful=False), ())

    return read, tf.TensorSpec((), tf.string)




# ---------------------------------------------------------------------------------------------- tokenizer


# The standardization of the text backbones kerastl builds (`STANDARDIZE`): what MediaPipe's regex tokenizer
# reproduces exactly, so that a phone running the .tflite file on raw strings gets Keras' token ids
# (`mediapipe_tokenizer`). A regex can split a text but not delete characters inside a token and join the pieces,
# nor lower-case: so ASCII punctuation splits ("set_trainable" is "set" "trainable", where Keras'
# "lower_and_strip_punctuation" made one token "settrainable"), and only the three spellings of a word that a
# vocabulary file can list (lower case, Capitalized, ALL CAPS) are folded to lower case; a word in other mixed
# case ("TensorFlow", "iPhone") is a token of its own, as spelled. Everything from a NUL character on is dropped,
# since MediaPipe's C API reads the text as a NUL-terminated string. (kerastl.inputs.text_rules states the rules.)
STANDARDIZE = FOLD_CASE


@keras.saving.register_keras_serializable(package="kerastl", name=FOLD_CASE)
def fold_case_and_split_punctuation(texts):
    """The `FOLD_CASE` standardization, as a `TextVectorization` `standardize` callable: `texts` (tf.string, any
    shape) with everything from a NUL on dropped, each ASCII punctuation character replaced by a space, and each
    whitespace-separated token matching `FOLD_CASE_REGEX` lower-cased (A-Z only), the tokens joined by single
    spaces. `TextVectorization` then splits on whitespace."""
    import tensorflow as tf

    texts = tf.strings.regex_replace(texts, r"(?s)\x00.*", "")
    texts = tf.strings.regex_replace(texts, PUNCTUATION_REGEX, " ")
    tokens = tf.strings.split(texts)
    fold = tf.strings.regex_full_match(tokens, FOLD_CASE_REGEX)
    tokens = tf.ragged.map_flat_values(lambda t, f: tf.where(f, tf.strings.lower(t), t), tokens, fold)
    return tf.strings.reduce_join(tokens, axis=-1, separator=" ")


def make_tokenizer(vocabulary=None, *, vocabulary_size: int = DEFAULT_VOCABULARY_SIZE,
                   sequence_length: int = DEFAULT_SEQUENCE_LENGTH, standardize: str = STANDARDIZE):
    """The `TextVectorization` layer of kerastl's text backbones: standardize (`STANDARDIZE`, or one of Keras'
    own modes such as `LEGACY_STANDARDIZE`, which the backbones built before it use), split on whitespace, look up
    (0 = padding, 1 = out of vocabulary), pad or truncate to `sequence_length`."""
    return keras.layers.TextVectorization(
        max_tokens=int(vocabulary_size),
        standardize=fold_case_and_split_punctuation if standardize == FOLD_CASE else standardize,
        split=SPLIT, output_mode="int", output_sequence_length=int(sequence_length), vocabulary=vocabulary,
        name="tokenizer")


def standardize_name(tokenizer) -> str | None:
    """The standardization of a `TextVectorization` layer as a name: Keras' own mode strings, `FOLD_CASE`, or
    another callable's registered name (or repr), None for none."""
    value = tokenizer.get_config().get("standardize")
    if value is None or isinstance(value, str):
        return value
    if value is fold_case_and_split_punctuation:
        return FOLD_CASE
    return keras.saving.get_registered_name(value) if callable(value) else repr(value)


def build_vocabulary(texts, *, vocabulary_size: int = DEFAULT_VOCABULARY_SIZE,
                     sequence_length: int = DEFAULT_SEQUENCE_LENGTH) -> list[str]:
    """The `vocabulary_size - 2` most frequent tokens of `texts` (without the padding and OOV entries, which
    `TextVectorization` adds), most frequent first. `texts` is a sequence of strings or a tf.data.Dataset of
    scalar strings (streamed: adapting counts tokens batch by batch)."""
    import tensorflow as tf

    tokenizer = make_tokenizer(vocabulary_size=vocabulary_size, sequence_length=sequence_length)
    if not isinstance(texts, tf.data.Dataset):
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string))
    tokenizer.adapt(texts.batch(512))
    return [str(token) for token in tokenizer.get_vocabulary()[2:]]


def tokenizer_of(model):
    """The first `TextVectorization` layer of `model` (descending into nested models), or None."""
    from kerastl.core.graph import walk_layers

    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.TextVectorization):
            return layer
    return None


def vocabulary_of(model) -> list[str]:
    """The token list of the model's tokenizer: index i is the token of id i ("" pads, "[UNK]" is any word not
    in it). Empty without a `TextVectorization` layer."""
    tokenizer = tokenizer_of(model)
    return [] if tokenizer is None else [str(token) for token in tokenizer.get_vocabulary()]


def tokenizer_rules(model) -> dict:
    """The exact rule that turns a string into the token ids of `model`'s tokenizer, as a JSON-able dict,
    so that an app without TensorFlow reproduces the ids (export's report records it).

    Steps, in order (`steps`): for `FOLD_CASE`, `cut_at_nul`, `split` (at runs of `split_regex`, whitespace and
    ASCII punctuation), `fold_case` (by `fold_case_regex`); for Keras' own modes, `lowercase`, `strip` (by
    `strip_regex`), `split` (by `split_regex`); then `lookup` (a token's id is its 0-based line in the
    vocabulary file, `oov_id` when absent) and `truncate`/`pad` to `sequence_length` with `pad_id`. Each rule is
    stated in words beside its regex (Python `re` and RE2 read the regexes alike). `exact` is False, with the
    reason in `note`, when the tokenizer uses a setting this record cannot state (a custom standardize or split
    function, n-grams, ...). `{"mode": "none"}` without a `TextVectorization` layer.
    """
    tokenizer = tokenizer_of(model)
    if tokenizer is None:
        return {"mode": "none"}
    return rules_of(tokenizer.get_config(), standardize_name(tokenizer), int(tokenizer.vocabulary_size()))


def preprocessing_record(model) -> dict:
    """The tokenizer record that manifests carry (the vocabulary itself stays in the model)."""
    tokenizer = tokenizer_of(model)
    if tokenizer is None:
        return {"mode": "none"}
    config = tokenizer.get_config()
    return {"mode": "text_vectorization", "standardize": standardize_name(tokenizer), "split": config.get("split"),
            "sequence_length": config.get("output_sequence_length"),
            "vocabulary_size": int(tokenizer.vocabulary_size())}


# ------------------------------------------------------------------------------------------------- export


def serving_signature(model):
    """The input a SavedModel of a text classifier takes: `texts`, tf.string of shape (batch,). For
    `kerastl.export`."""
    import tensorflow as tf

    return tf.TensorSpec((None,), tf.string, name="texts")


def tokenized_model(model):
    """What a text classifier becomes for TFLite: `(ids_model, vocabulary, tokenizer)`.

    `ids_model` is `model` minus its tokenizer, from token ids (int64, (batch, sequence_length)) to the same
    outputs, sharing its layers and weights; `vocabulary` is the token list (index i is id i: "" is padding,
    "[UNK]" out of vocabulary); `tokenizer` is the record of how to turn a string into ids
    (`tokenizer_rules`). `tokenize(model, texts)` does it in Python for checking.

    Raises:
        KerastlError: the model has no `TextVectorization` layer, or is not the chain that
            `kerastl.train.head.build_classifier` makes (backbone, then pooling/dropout/output layers).
    """
    tokenizer = tokenizer_of(model)
    if tokenizer is None:
        raise KerastlError(f"{model.name} has no TextVectorization layer; only models that tokenise inside can be "
                           "split into a token-id model and a vocabulary")
    sequence_length = int(tokenizer.get_config()["output_sequence_length"] or 0)
    if not sequence_length:
        raise KerastlError("the tokenizer has no fixed output_sequence_length; TFLite needs a fixed input length")
    ids = keras.Input((sequence_length,), dtype="int64", name="token_ids")
    return model_after(model, tokenizer, ids, ids), vocabulary_of(model), tokenizer_rules(model)


def model_after(model, layer, feed, inputs):
    """`model` from the output of its tokenizer `layer` onwards, applied to `feed` (a tensor standing for that
    output, or a list of them for a list output) and returned as a model from `inputs`, sharing its layers and
    weights.

    Raises:
        KerastlError: the model is not the chain that `kerastl.train.head.build_classifier` makes (backbone, then
            pooling/dropout/output layers).
    """
    from kerastl.core.graph import walk_layers

    owner = next((each for each in walk_layers(model) if isinstance(each, keras.Model) and layer in each.layers),
                 model)
    # The owner's graph from the tokenizer's output (one tensor, or a list of them) onwards, applied to the new
    # input.
    tail = keras.Model(layer.output, owner.output, name=f"{owner.name}_from_ids")
    x = tail(feed)
    if owner is not model:
        after = [each for each in model.layers if not isinstance(each, keras.layers.InputLayer)]
        if not after or after[0] is not owner:
            raise KerastlError("the text model is not a backbone followed by a chain of layers; rebuild it with "
                               "kerastl.train.head.build_classifier")
        for each in after[1:]:
            x = each(x)
    return keras.Model(inputs, x, name=f"{model.name}_from_ids")


def mediapipe_tokenizer(model) -> dict:
    """How MediaPipe's TextClassifier tokenises raw strings for the model's TFLite file (see
    kerastl.inputs.text_rules): `mediapipe_rule`'s record (`supported`; then `delim_regex_pattern`, `case`,
    `exact`, `differs_when`, else `why`), with `vocabulary` (token -> id, `mediapipe_vocabulary`) when supported.
    `exact` is True for `FOLD_CASE` tokenizers: every text gets Keras' ids.

    Raises:
        KerastlError: the model has no `TextVectorization` layer.
    """
    tokenizer = tokenizer_of(model)
    if tokenizer is None:
        raise KerastlError(f"{model.name} has no TextVectorization layer, so MediaPipe has no tokenizer to mirror")
    record = mediapipe_rule(tokenizer.get_config(), standardize_name(tokenizer))
    if record["supported"]:
        record["vocabulary"] = mediapipe_vocabulary(vocabulary_of(model), record)
    return record


def mediapipe_id_agreement(model, texts, record) -> float | None:
    """The share of `texts` whose token ids by MediaPipe's regex tokenizer (`record`, from `mediapipe_tokenizer`)
    are the model's own (`tokenize`); None for no texts."""
    if not len(texts):
        return None
    expected = tokenize(model, texts)
    same = [mediapipe_ids(str(text), record["delim_regex_pattern"], record["vocabulary"], ids.shape[0]) == ids.tolist()
            for text, ids in zip(texts, expected)]
    return round(float(np.mean(same)), 6)


def tokenize(model, texts) -> np.ndarray:
    """Token ids (int64, (len(texts), sequence_length)) of `texts` by the model's own tokenizer."""
    tokenizer = tokenizer_of(model)
    return np.asarray(tokenizer(np.asarray(list(texts), dtype=object))).astype("int64")


# Texts are read whole and kept in memory; the tokenizer keeps only the first few hundred tokens anyway.
MAX_TEXT_BYTES = 8 << 20


def text_size_error(path) -> str | None:
    """Why the text file at `path` is too large to read (over `MAX_TEXT_BYTES`), or None."""
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    if size > MAX_TEXT_BYTES:
        return f"text of {size / 2**20:.0f} MiB, over the {MAX_TEXT_BYTES >> 20} MiB limit " \
               "(kerastl.inputs.text.MAX_TEXT_BYTES); split it"
    return None
