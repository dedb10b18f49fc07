"""`add_text_classifier_metadata`: the metadata MediaPipe Tasks' TextClassifier reads, so that it runs a
token-id model on raw strings, tokenising them itself as the metadata says.

One writer for every tokenizer MediaPipe's text tasks know; the tokenizer is a record
(`RegexTokenizer` today) and `_TOKENIZER_INPUTS` maps its type to the function that checks the
model's inputs against it and describes them. A word-level model has one int32 input of token ids
and a regex tokenizer on it. A BERT-family model would be a `BertTokenizer` record (its WordPiece
vocabulary) with a function describing its three inputs (ids, mask, segment ids, matched by tensor
name) and the tokenizer as a process unit of the subgraph (`_build_metadata`'s
``input_process_units``); MediaPipe tells the two kinds apart by the number of int32 inputs
(tasks/cc/text/utils/text_model_utils.cc).

What MediaPipe does with a string for a regex-tokenizer model (its sources tasks/cc/text/tokenizers/
regex_tokenizer.cc, tokenizer_utils.cc, text/utils/vocab_utils.cc and calculators/tensor/
regex_preprocessor_calculator.cc; tests/test_tflite_metadata_text.py checks each point against the
installed mediapipe):

- the text is cut at its first NUL character (the C API takes NUL-terminated strings);
- it is split at every match of ``delim_regex_pattern`` (RE2, UTF-8): the tokens are the pieces
  between matches, empty pieces dropped; nothing is lower-cased or otherwise changed;
- each token is looked up, exactly, in the vocabulary file: one ``<token> <id>`` per line (split at
  spaces, so a token holds none; empty lines skipped; several tokens may share an id); a token not
  in it gets the id of ``<UNKNOWN>``;
- the ids fill the model's (1, N) int32 input, N read from the input tensor's shape: an optional
  ``<START>`` id first (only if the vocabulary has that token), then the first tokens, the rest
  ``<PAD>``'s id. ``<PAD>`` and ``<UNKNOWN>`` are required (tokenizer_utils.cc refuses the model
  without them; this writer checks first).

The output is read as the image and audio writers describe it: one [1, classes] score tensor, the
class names from the packed ``labels.txt`` (`TENSOR_AXIS_LABELS`), no score calibration.
"""

from __future__ import annotations

import dataclasses
import re
from types import ModuleType
from typing import Any

from kerastl.errors import KerastlError
from kerastl.export.metadata.pack import _build_metadata, _pack_model
from kerastl.export.metadata.schema import (
    _check_labels,
    _check_row_input,
    _check_scores_output,
    _open_for_writing,
    _shape,
    _single_input_and_output,
)

#: Name of the vocabulary file packed by `add_text_classifier_metadata` for a `RegexTokenizer`.
VOCABULARY_FILE_NAME = "vocab.txt"
#: The special tokens MediaPipe's RegexTokenizer looks up by name.
PAD_TOKEN, UNKNOWN_TOKEN, START_TOKEN = "<PAD>", "<UNKNOWN>", "<START>"
# RegexTokenizerOptions were added to the metadata schema in 1.2.1 (metadata_schema.fbs), the
# newest field this writer populates (VOCABULARY files: 1.0.1).
_REGEX_MIN_PARSER_VERSION = "1.2.1"
_INT32_MAX = 2**31 - 1
# Strings an RE2-like delimiter must not match emptily anywhere in (see `_check_delimiter`).
_EMPTY_MATCH_PROBES = ("", "a", "a b", "A.b-c_d", "é ü", "1 2\t3\n")


@dataclasses.dataclass(frozen=True)
class RegexTokenizer:
    """A word-level tokenizer as MediaPipe's RegexTokenizer runs it (see the module docstring).

    Attributes:
        delim_regex_pattern: the RE2 pattern of the delimiters between tokens. It must not match the
            empty string (MediaPipe's split loop would never end).
        vocabulary: token -> id, in the order of the file's lines. It must hold `PAD_TOKEN` and
            `UNKNOWN_TOKEN`; a `START_TOKEN` makes MediaPipe put its id before the text's tokens.
            A token is a non-empty string without a space or line break; an id a whole number in
            0..2**31-1.
        file_name: the name the vocabulary file is packed under.
    """

    delim_regex_pattern: str
    vocabulary: dict
    file_name: str = VOCABULARY_FILE_NAME

    def vocabulary_file(self) -> bytes:
        """The vocabulary file's bytes: ``<token> <id>`` per line, UTF-8."""
        return "".join(f"{token} {index}\n" for token, index in self.vocabulary.items()).encode("utf-8")


def add_text_classifier_metadata(
    model: bytes,
    *,
    labels: list[str],
    tokenizer: RegexTokenizer,
    name: str = "kerastl text classifier",
    description: str = "",
    version: str = "1",
    author: str = "kerastl",
    license: str = "",  # the metadata field is called "license"
) -> bytes:
    """Returns a copy of a TFLite text classifier with metadata that MediaPipe Tasks' TextClassifier
    accepts, so that it classifies raw strings.

    For a `RegexTokenizer` the model must take one int32 tensor of token ids of shape [1, N] (a fixed
    N) and return [1, classes] scores, as kerastl's text classifiers converted with
    ``kerastl.modalities.text.Text.tflite_model`` do. The input tensor gets a `RegexTokenizerOptions`
    process unit with ``tokenizer.delim_regex_pattern`` and the vocabulary packed as
    ``tokenizer.file_name`` (type `VOCABULARY`); the output is described as class probabilities,
    with ``labels`` packed as ``labels.txt`` (type `TENSOR_AXIS_LABELS`). ``min_parser_version``
    is 1.2.1, the schema version that added regex tokenizers. Metadata already in ``model`` is
    replaced, together with any files packed after it; other model metadata entries are kept. The
    output is deterministic.

    The metadata says how MediaPipe tokenises (module docstring); whether that gives the ids the
    model was trained on is the caller's business (`kerastl.inputs.text.mediapipe_tokenizer`).

    Raises:
        KerastlError: ``model`` is not a TFLite flatbuffer, or stores its weights outside the
            flatbuffer; ``tokenizer`` is not a tokenizer record this writer knows; its main
            subgraph does not have exactly one input and one output; the input is not [1, N] of
            int32 with a fixed N; the output is not [1, classes] (any number of leading 1s) of
            float32 or uint8; the delimiter pattern is empty, not valid RE2, or matches the empty
            string; the vocabulary lacks ``<PAD>`` or ``<UNKNOWN>``, or has a token that is empty,
            not a string, or holds a space or line break, or an id that is not a whole number in
            0..2**31-1; the labels are not one distinct one-line name per class; or mediapipe
            (which provides the metadata schema) is not installed.
    """
    model, schema, meta_fb, root = _open_for_writing(model)
    describe = _TOKENIZER_INPUTS.get(type(tokenizer))
    if describe is None:
        known = ", ".join(t.__name__ for t in _TOKENIZER_INPUTS)
        raise KerastlError(f"tokenizer is a {type(tokenizer).__name__}; pass one of {known}.")
    input_mds, process_units, files, min_parser_version, output = describe(tokenizer, root, schema, meta_fb)
    num_classes = _check_scores_output(output, schema, "a text classifier")
    _check_labels(labels, num_classes)

    metadata_buf = _build_metadata(
        meta_fb,
        name=name,
        description=description,
        version=version,
        author=author,
        license=license,
        subgraph_name="text_classifier",
        input_mds=input_mds,
        input_process_units=process_units,
        num_classes=num_classes,
        min_parser_version=min_parser_version,
    )
    return _pack_model(model, metadata_buf, labels, schema, files=files)


# ---------------------------------------------------------------------------------------------
# Regex tokenizer


def _regex_inputs(tokenizer: RegexTokenizer, root: Any, schema: ModuleType, meta_fb: ModuleType):
    """`(input_mds, subgraph process units, packed files, min parser version, output tensor)` of a
    word-level model, after checking its one input and the tokenizer."""
    ids, output = _single_input_and_output(root, "a text classifier with a regex tokenizer", "one token-id input")
    _check_ids_input(ids, schema)
    _check_delimiter(tokenizer.delim_regex_pattern)
    _check_vocabulary(tokenizer.vocabulary)
    if not isinstance(tokenizer.file_name, str) or not tokenizer.file_name or "/" in tokenizer.file_name:
        raise KerastlError(f"file_name {tokenizer.file_name!r} is not a plain file name; pass e.g. 'vocab.txt'.")

    vocab = meta_fb.AssociatedFileT()
    vocab.name = tokenizer.file_name
    vocab.description = "Vocabulary: one '<token> <id>' per line; <PAD> pads, <UNKNOWN> is any other token."
    vocab.type = meta_fb.AssociatedFileType.VOCABULARY
    unit = meta_fb.ProcessUnitT()
    unit.optionsType = meta_fb.ProcessUnitOptions.RegexTokenizerOptions
    unit.options = meta_fb.RegexTokenizerOptionsT()
    unit.options.delimRegexPattern = tokenizer.delim_regex_pattern
    unit.options.vocabFile = [vocab]

    # Named and described as tflite-support's RegexTokenizer writer did; MediaPipe reads only the unit.
    ids_md = meta_fb.TensorMetadataT()
    ids_md.name = "input_text"
    ids_md.description = (f"Token ids of the input text ({_shape(ids)[1]} int32, padded with <PAD>): "
                          "MediaPipe splits the text at the delimiter pattern and looks each token up.")
    ids_md.content = meta_fb.ContentT()
    ids_md.content.contentPropertiesType = meta_fb.ContentProperties.FeatureProperties
    ids_md.content.contentProperties = meta_fb.FeaturePropertiesT()
    ids_md.processUnits = [unit]
    files = ((tokenizer.file_name, tokenizer.vocabulary_file()),)
    return [ids_md], None, files, _REGEX_MIN_PARSER_VERSION, output


def _check_ids_input(ids: Any, schema: ModuleType) -> None:
    """MediaPipe reads N as the input's second dimension and writes int32 ids (text_preprocessing_graph.cc)."""
    _check_row_input(
        ids, schema, dtype="INT32", wanted="a text classifier needs token ids [1, N]",
        shape_fix="convert with batch size 1 and a fixed sequence length",
        length_fix="MediaPipe fills a fixed number of token ids, so build the tokenizer with a fixed "
                   "output_sequence_length",
        dtype_fix="MediaPipe writes INT32 token ids, so convert with an int32 input signature")


def _check_delimiter(pattern: Any) -> None:
    """The pattern must be RE2 (the engine MediaPipe uses; TensorFlow's string ops use it too) and must not
    match an empty string: MediaPipe's split loop consumes each match, and an empty one consumes nothing."""
    if not isinstance(pattern, str) or not pattern:
        raise KerastlError(f"delim_regex_pattern is {pattern!r}; pass the RE2 pattern of the token delimiters.")
    import tensorflow as tf

    try:
        tf.strings.regex_full_match("", pattern)
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise KerastlError(f"delim_regex_pattern {pattern!r} is not valid RE2 ({str(error).splitlines()[0]})") from None
    try:
        compiled = re.compile(pattern)
    except re.error:
        compiled = None  # RE2-only syntax (\p{P}, ...): Python cannot probe it; RE2 accepted it above
    if compiled is not None and any(m.start() == m.end() for probe in _EMPTY_MATCH_PROBES
                                    for m in compiled.finditer(probe)):
        raise KerastlError(f"delim_regex_pattern {pattern!r} matches the empty string, which never ends "
                           "MediaPipe's split; make every match at least one character (e.g. [ ]+, not [ ]*).")


def _check_vocabulary(vocabulary: Any) -> None:
    if not isinstance(vocabulary, dict) or not vocabulary:
        raise KerastlError("vocabulary must be a non-empty dict of token -> id.")
    for token, index in vocabulary.items():
        if not isinstance(token, str) or not token or any(c in token for c in " \n\r"):
            raise KerastlError(f"vocabulary token {token!r} is empty, not a string, or holds a space or line break, "
                               "which the '<token> <id>' lines cannot carry.")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= _INT32_MAX:
            raise KerastlError(f"vocabulary id {index!r} of {token!r} is not a whole number in 0..2**31-1.")
    missing = [t for t in (PAD_TOKEN, UNKNOWN_TOKEN) if t not in vocabulary]
    if missing:
        raise KerastlError(f"the vocabulary has no {' or '.join(missing)}; MediaPipe's RegexTokenizer requires "
                           "both (the ids of padding and of unknown tokens).")


_TOKENIZER_INPUTS = {RegexTokenizer: _regex_inputs}
