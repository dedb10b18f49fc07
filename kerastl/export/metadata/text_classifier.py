"""`add_text_classifier_metadata`: the metadata MediaPipe Tasks' TextClassifier reads, so that it runs a
token-id model on raw strings, tokenising them itself as the metadata says.

One writer for every tokenizer MediaPipe's text tasks know; the tokenizer is a record (`RegexTokenizer`,
`BertTokenizer`) and `_TOKENIZER_INPUTS` maps its type to the function that checks the model's inputs against it
and describes them. A word-level model has one int32 input of token ids and a regex tokenizer on it; a BERT-family
model three int32 inputs (ids, mask, segment ids, found by name) and the tokenizer as the subgraph's first input
process unit. MediaPipe tells the two kinds apart by the number of int32 inputs (tasks/cc/text/utils/
text_model_utils.cc: 3 is BERT, 1 is regex).

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

What MediaPipe does with a string for a BERT model (tasks/cc/text/tokenizers/bert_tokenizer.{h,cc},
tokenizer_utils.cc, text/utils/vocab_utils.cc, components/processors/text_preprocessing_graph.cc and
calculators/tensor/bert_preprocessor_calculator.cc; tests/test_tflite_metadata_bert.py checks it against the
installed mediapipe). `BertTokenizerOptions` hold only the vocabulary file; everything else is fixed:

- the text is cut at its first NUL character, and its ASCII letters A-Z are lower-cased (`absl::AsciiStrToLower`:
  nothing else, no Unicode case folding, no accent stripping, no normalisation);
- it is split (tensorflow-text's RegexSplit, RE2) at runs of ASCII whitespace (RE2's ``\\s``: space, tab, line
  feed, form feed, carriage return; not vertical tab, not other control characters), at each ASCII punctuation
  character (``[!-/:-@[-`{-~]``), each Unicode punctuation character (``\\p{P}``) and each CJK ideograph
  (BERT's ranges); punctuation and ideographs stay as words of their own
  (`kerastl.inputs.packed_text.MEDIAPIPE_BERT_SPLIT` and `MEDIAPIPE_BERT_KEEP`);
- each word goes through tensorflow-text's WordPiece (greedy longest match from the word's start, continuation
  pieces prefixed ``##``); a word over 100 bytes, or one with a part no piece matches, is ``[UNK]``;
- the vocabulary file is one token per line, id = line number (empty lines skipped, a trailing carriage return
  dropped; a repeated token takes its last line's id);
- the ids are ``[CLS]``, the first N - 2 pieces, ``[SEP]``, then 0 up to N (the tokens looked up by these names),
  N read from the inputs' shape (all three the same [1, N]); the mask is 1 over the framed tokens, 0 after; the
  segment ids are all 0. A special token missing from the vocabulary would silently become id 0, so this writer
  requires ``[CLS]``, ``[SEP]`` and ``[UNK]``.

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
#: The tokens MediaPipe's BertTokenizer and BertPreprocessor use by name: the frame and the unknown word piece.
BERT_CLS_TOKEN, BERT_SEP_TOKEN, BERT_UNKNOWN_TOKEN = "[CLS]", "[SEP]", "[UNK]"
#: The names MediaPipe's BertPreprocessor finds the three inputs' metadata by (bert_preprocessor_calculator.cc).
BERT_INPUT_METADATA_NAMES = ("ids", "mask", "segment_ids")
# RegexTokenizerOptions were added to the metadata schema in 1.2.1 (metadata_schema.fbs), the
# newest field this writer populates (VOCABULARY files: 1.0.1).
_REGEX_MIN_PARSER_VERSION = "1.2.1"
# BertTokenizerOptions and SubGraphMetadata.input_process_units: 1.1.0.
_BERT_MIN_PARSER_VERSION = "1.1.0"
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


@dataclasses.dataclass(frozen=True)
class BertTokenizer:
    """A WordPiece tokenizer as MediaPipe's BertTokenizer runs it (see the module docstring), and the model inputs
    it fills.

    Attributes:
        vocabulary: the WordPiece vocabulary, token i having id i (a sequence of strings). It must hold
            `BERT_CLS_TOKEN`, `BERT_SEP_TOKEN` and `BERT_UNKNOWN_TOKEN`; every token must be non-empty, distinct,
            and free of line breaks (the file is one token per line).
        ids_input, mask_input, segment_ids_input: the model's inputs of token ids, of the mask (1 for tokens, 0 for
            padding) and of segment ids, each a name of the TFLite signature's inputs (``token_ids``) or an input
            tensor's name (``serving_default_token_ids:0``).
        file_name: the name the vocabulary file is packed under.
    """

    vocabulary: tuple
    ids_input: str = "token_ids"
    mask_input: str = "padding_mask"
    segment_ids_input: str = "segment_ids"
    file_name: str = VOCABULARY_FILE_NAME

    def vocabulary_file(self) -> bytes:
        """The vocabulary file's bytes: one token per line, UTF-8."""
        return "".join(f"{token}\n" for token in self.vocabulary).encode("utf-8")


def add_text_classifier_metadata(
    model: bytes,
    *,
    labels: list[str],
    tokenizer: RegexTokenizer | BertTokenizer,
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
    ``tokenizer.file_name`` (type `VOCABULARY`); ``min_parser_version`` is 1.2.1, the schema version
    that added regex tokenizers. For a `BertTokenizer` the model must take three int32 tensors of
    one shape [1, N] (a fixed N >= 2), as the TFLite file of a keras-hub BERT-family classifier does: they
    are described, in the subgraph's input order, as ``ids``, ``mask`` and ``segment_ids`` (the names
    MediaPipe finds them by), and the subgraph gets one input process unit, `BertTokenizerOptions` with
    the vocabulary packed as ``tokenizer.file_name`` (type `VOCABULARY`); ``min_parser_version`` is
    1.1.0. The output is described as class probabilities, with ``labels`` packed as ``labels.txt``
    (type `TENSOR_AXIS_LABELS`). Metadata already in ``model`` is replaced, together with any files
    packed after it; other model metadata entries are kept. The output is deterministic.

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
            0..2**31-1; for a BERT tokenizer, the model has not exactly three int32 inputs of one fixed
            shape [1, N >= 2] and one output, an input name matches no input (or two names one input), or the
            vocabulary is empty, lacks ``[CLS]``, ``[SEP]`` or ``[UNK]``, or has a token that is not a
            string, empty, repeated or holds a line break; the labels are not one distinct one-line name per
            class; or mediapipe (which provides the metadata schema) is not installed.
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


# ---------------------------------------------------------------------------------------------
# BERT tokenizer


def _bert_inputs(tokenizer: BertTokenizer, root: Any, schema: ModuleType, meta_fb: ModuleType):
    """`(input_mds, subgraph process units, packed files, min parser version, output tensor)` of a BERT-family
    model, after checking its three inputs and the tokenizer."""
    graph = root.Subgraphs(0)
    if graph.InputsLength() != 3 or graph.OutputsLength() != 1:
        raise KerastlError(f"The TFLite model has {graph.InputsLength()} inputs and {graph.OutputsLength()} outputs; "
                           "a text classifier with a BERT tokenizer needs exactly three (token ids, mask, segment "
                           "ids) and one output.")
    inputs = [graph.Tensors(graph.Inputs(i)) for i in range(3)]
    for tensor in inputs:
        _check_ids_input(tensor, schema)
    lengths = {_shape(tensor)[1] for tensor in inputs}
    if len(lengths) != 1 or min(lengths) < 2:
        raise KerastlError(f"The TFLite model's inputs have lengths {sorted(lengths)}; MediaPipe fills three inputs of "
                           "one length N >= 2 ([CLS] and [SEP] included), so convert them with one sequence_length.")
    check_bert_vocabulary(tokenizer.vocabulary)
    if not isinstance(tokenizer.file_name, str) or not tokenizer.file_name or "/" in tokenizer.file_name:
        raise KerastlError(f"file_name {tokenizer.file_name!r} is not a plain file name; pass e.g. 'vocab.txt'.")
    wanted = {tokenizer.ids_input: "ids", tokenizer.mask_input: "mask", tokenizer.segment_ids_input: "segment_ids"}
    positions = {name: _input_position(root, name) for name in wanted}
    if len(wanted) != 3 or len(set(positions.values())) != 3:
        raise KerastlError(f"the input names {list(wanted)} do not name three different inputs; pass the names of "
                           "the token ids, mask and segment ids inputs.")
    by_position = {position: wanted[name] for name, position in positions.items()}
    descriptions = {"ids": "Token ids of the input text: [CLS], its WordPiece ids, [SEP], then 0.",
                    "mask": "Mask with 1 for real tokens and 0 for padding tokens.",
                    "segment_ids": "0 for the first sequence (MediaPipe classifies one text: all 0)."}
    input_mds = []
    for position in range(3):
        # Ordered as the subgraph's inputs: MediaPipe takes a metadata entry's index as its input's index.
        md = meta_fb.TensorMetadataT()
        md.name = by_position[position]
        md.description = descriptions[md.name]
        md.content = meta_fb.ContentT()
        md.content.contentPropertiesType = meta_fb.ContentProperties.FeatureProperties
        md.content.contentProperties = meta_fb.FeaturePropertiesT()
        input_mds.append(md)

    vocab = meta_fb.AssociatedFileT()
    vocab.name = tokenizer.file_name
    vocab.description = "WordPiece vocabulary: one token per line, the token of line i has id i."
    vocab.type = meta_fb.AssociatedFileType.VOCABULARY
    unit = meta_fb.ProcessUnitT()
    unit.optionsType = meta_fb.ProcessUnitOptions.BertTokenizerOptions
    unit.options = meta_fb.BertTokenizerOptionsT()
    unit.options.vocabFile = [vocab]
    files = ((tokenizer.file_name, tokenizer.vocabulary_file()),)
    return input_mds, [unit], files, _BERT_MIN_PARSER_VERSION, graph.Tensors(graph.Outputs(0))


def _input_position(root: Any, name: Any) -> int:
    """The position among subgraph 0's inputs of the input called `name` in the first signature, or of the input
    tensor of that name."""
    graph = root.Subgraphs(0)
    indices = [graph.Inputs(i) for i in range(graph.InputsLength())]
    if isinstance(name, str):
        for s in range(root.SignatureDefsLength()):
            signature = root.SignatureDefs(s)
            for j in range(signature.InputsLength()):
                entry = signature.Inputs(j)
                if _decoded(entry.Name()) == name and signature.SubgraphIndex() == 0 and entry.TensorIndex() in indices:
                    return indices.index(entry.TensorIndex())
        for position, index in enumerate(indices):
            if _decoded(graph.Tensors(index).Name()) == name:
                return position
    known = [_decoded(graph.Tensors(index).Name()) for index in indices]
    raise KerastlError(f"the TFLite model has no input named {name!r} (its inputs: {', '.join(known)}); pass the "
                       "signature's or the tensor's name.")


def _decoded(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def check_bert_vocabulary(vocabulary: Any) -> None:
    """Checks a WordPiece vocabulary against MediaPipe's BertTokenizer: the file is one token per line with ids by
    line number, empty lines are skipped and a repeated token takes its last id, and [CLS], [SEP] and [UNK] are
    looked up by name.

    Raises:
        KerastlError: not a non-empty sequence of strings; a token empty, repeated or holding a line break; or
            [CLS], [SEP] or [UNK] missing (one line each).
    """
    if isinstance(vocabulary, (str, bytes, dict)) or not hasattr(vocabulary, "__len__") or not len(vocabulary):
        raise KerastlError("vocabulary must be a non-empty list of WordPiece tokens, token i having id i.")
    seen = set()
    for index, token in enumerate(vocabulary):
        if not isinstance(token, str) or not token or "\n" in token or "\r" in token:
            raise KerastlError(f"vocabulary token {index} ({token!r}) is empty, not a string, or holds a line break; "
                               "MediaPipe reads one token per line and skips empty lines, shifting every later id.")
        if token in seen:
            raise KerastlError(f"vocabulary token {token!r} is repeated (again at id {index}); MediaPipe would give "
                               "it its last id, the model its first: make every token distinct.")
        seen.add(token)
    missing = [t for t in (BERT_CLS_TOKEN, BERT_SEP_TOKEN, BERT_UNKNOWN_TOKEN) if t not in seen]
    if missing:
        raise KerastlError(f"the vocabulary has no {' or '.join(missing)}; MediaPipe's BertTokenizer frames every text "
                           "with [CLS] and [SEP] and writes [UNK] for unknown words, looked up by these names.")


_TOKENIZER_INPUTS = {RegexTokenizer: _regex_inputs, BertTokenizer: _bert_inputs}
