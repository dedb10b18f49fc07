"""Text: the text `Modality`. Raw strings in, the tokenizer inside the model: kerastl's `TextVectorization`
(`kerastl.inputs.text`) or a keras-hub preprocessor (`kerastl.inputs.packed_text.PackedTokenizer`, the `kerashub:`
backbones). String ops have no builtin TFLite kernels, so the TFLite file is the model after its tokenizer, with
its vocabulary written beside it: taking int32 token ids, or for a keras-hub preprocessor its three int32 inputs
(`token_ids`, `padding_mask`, `segment_ids`), as BERT models on phones take them. A word-level file's MediaPipe
metadata holds the regex tokenizer and vocabulary with which MediaPipe's TextClassifier turns raw strings into
those ids (`kerastl.inputs.text.mediapipe_tokenizer`); a keras-hub WordPiece file's holds MediaPipe's
BertTokenizer and the WordPiece vocabulary (`kerastl.inputs.packed_text.mediapipe_bert_rule`: refused, with the
reason in the report, for the rules MediaPipe cannot reproduce, such as a cased tokenizer). The export report says
how often MediaPipe then agrees with Keras, measured by MediaPipe itself. The hooks below are the one place that
tells the tokenizers apart."""

from __future__ import annotations

import os

from kerastl.core.modality import Companion, Modality, register
from kerastl.core.records import InputSpec
from kerastl.errors import KerastlError, UsageError

TEXT_EXTENSIONS = (".txt",)
# Words for synthetic texts when a model's vocabulary is inside a hub module.
# Below this top-1 agreement between MediaPipe and Keras, the export report calls MediaPipe's approximation poor.
POOR_AGREEMENT = 0.95
_COMMON_WORDS = ("the of and to in is that for it as with was on be by this are from or have an they which one "
                 "you were all we when there can been has more if will their would what about time new first")


class Text(Modality):
    name = "text"
    extensions = TEXT_EXTENSIONS
    noun = "text"
    plural = "texts"
    input_form = "strings of shape ()"
    default_backbone_hint = "hub:<dir>"
    pretrain_hint = "kerastl pretrain --data corpus:python-docs-wide-files --arch textcnn-l --out saved_models/NAME"
    classical_baseline = "TF-IDF + logistic regression"

    def decode_error(self, path):
        from kerastl.inputs.text import decode_error, text_size_error

        return text_size_error(path) or decode_error(path)

    def claims(self, model):
        if "string" not in str(model.input.dtype):
            return None
        return InputSpec(self.name, tuple(None if d is None else int(d) for d in model.input.shape[1:]))

    def preprocessing_record(self, model):
        from kerastl.inputs.packed_text import packed_tokenizer_of
        from kerastl.inputs.text import preprocessing_record

        packer = packed_tokenizer_of(model)
        return preprocessing_record(model) if packer is None else packer.record()

    # ---------------------------------------------------------------------------------------------- data
    def decoded_bytes(self, spec, files):
        """The bytes of the texts: their file sizes, an upper bound of their UTF-8 without a BOM."""
        return sum(os.path.getsize(f) for f in files)

    def load(self, spec, files, *, batch_size=64):
        from kerastl.inputs.text import load_texts

        return load_texts(files)

    def classical_features(self, spec, train_files, other_files):
        from sklearn.feature_extraction.text import TfidfVectorizer

        # Word unigrams and bigrams with sublinear term frequencies: the usual strong linear text baseline.
        vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
        train = vectorizer.fit_transform([str(t) for t in self.load(spec, train_files)])
        return train, vectorizer.transform([str(t) for t in self.load(spec, other_files)])

    def reader(self, spec):
        from kerastl.inputs.text import text_reader

        return text_reader()

    def augmentation(self):
        raise UsageError("--augment applies to images and audio; text has no input augmentation (the word "
                         "dropout of textcnn-l is part of the model): drop --augment")

    # ---------------------------------------------------------------------------------------------- hub
    def hub_claims(self, signature, declared):
        return signature is not None and signature.dtype == "string"

    def hub_backbone(self, spec, hub, *, image_size=None):
        """A TF-Hub text embedding module (raw strings (batch,) → (batch, width) or (batch, steps, width)); the
        module tokenises inside itself.

        Raises:
            KerastlError: the module does not return a vector or a sequence of vectors per string.
        """
        import keras

        from kerastl.backbones.models import graph_backbone

        inputs = keras.Input((), dtype="string", name="texts")
        return graph_backbone(spec, self.name, inputs, hub(inputs), preprocessing={"mode": "hub_module"},
                              weights="pretrained", name="hub_text_backbone", ranks=(2, 3))

    # ---------------------------------------------------------------------------------------------- export
    def serving_signatures(self, model):
        from kerastl.inputs.text import serving_signature

        return [("serving_default", serving_signature(model))]

    def check_tflite(self, model):
        """A text model tokenising inside a TF-Hub module has no TFLite form: its string ops have no builtin
        kernels and kerastl cannot split the tokenizer off. Nor has one with a keras-hub tokenizer other than
        WordPiece, whose rules kerastl does not state (`kerastl.inputs.packed_text.tflite_refusal`)."""
        from kerastl.inputs.packed_text import packed_tokenizer_of, tflite_refusal
        from kerastl.inputs.text import tokenizer_of

        refusal = tflite_refusal(model)
        if refusal:
            raise KerastlError(refusal)
        if tokenizer_of(model) is None and packed_tokenizer_of(model) is None:
            raise KerastlError("this text model tokenises inside a TF-Hub module, whose string ops TFLite cannot "
                               "run and kerastl cannot split off; export it with --format saved_model")

    def tflite_model(self, model):
        """The model after its tokenizer: from int32 token ids (1, sequence_length), or for a keras-hub
        preprocessor from its packed inputs, one int32 (1, sequence_length) tensor each (a list of specs)."""
        import tensorflow as tf

        from kerastl.inputs.packed_text import packed_model, packed_tokenizer_of
        from kerastl.inputs.text import tokenized_model

        self.check_tflite(model)
        if packed_tokenizer_of(model) is not None:
            packed = packed_model(model)
            return packed, [tf.TensorSpec((1, int(each.shape[1])), tf.int32, name=each.name.split(":")[0])
                            for each in packed.inputs]
        ids_model = tokenized_model(model)[0]
        # int32 ids: what mobile tokenizers produce and TFLite's gather takes natively.
        return ids_model, tf.TensorSpec((1, int(ids_model.input.shape[1])), tf.int32, name="token_ids")

    def tflite_inputs(self, model, inputs):
        """Token ids (N, sequence_length), or for a keras-hub preprocessor `{name: (N, sequence_length)}` of its
        packed inputs; None for a hub module's model."""
        from kerastl.inputs.packed_text import pack, packed_tokenizer_of
        from kerastl.inputs.text import tokenize, tokenizer_of

        if packed_tokenizer_of(model) is not None:
            return pack(model, inputs)
        if tokenizer_of(model) is None:
            return None  # no TFLite form (`check_tflite`)
        return tokenize(model, inputs).astype("int32")

    def check_quantization(self, quantize):
        """Full integer: the masked means over token positions lose to 8-bit activations. Fine-tuned on eight
        libraries' docstrings (tools/bench_export_audio_text.py): the textcnn backbone, 72.4% in float32, 13.2%
        in int8 (chance is 12.5%, top-1 agreement 9.2%); the default english-minilm-distil, 77.0% in float32,
        73.0% in int8 (agreement 94.1%), where dynamic keeps 98.7%. So dynamic is what text models get."""
        if quantize not in self.quantizations:
            raise UsageError(f"--quantize {quantize} makes text models lose accuracy (8-bit averages over token "
                             "positions: 4 to 59 points measured); use --quantize dynamic (int8 weights, 4x "
                             "smaller) or float16")

    def tflite_packages(self, quantize):
        return ["flatbuffers", "mediapipe"]

    def tflite_metadata(self, blob, model, labels, *, quantize):
        """MediaPipe TextClassifier metadata: the regex tokenizer and vocabulary that give the model's token ids
        (exactly for `FOLD_CASE` tokenizers), or for a keras-hub WordPiece model MediaPipe's BertTokenizer and the
        WordPiece vocabulary, and the labels. A tokenizer MediaPipe cannot follow gets none (the report's
        `tokenizer.mediapipe.why` says so)."""
        from kerastl.export import metadata

        record = _mediapipe_record(model)
        if not record["supported"]:
            return blob
        kind = "float32" if quantize == "none" else quantize
        if record["tokenizer"] == "BertTokenizer":
            tokenizer = metadata.BertTokenizer(tuple(record["vocabulary"]))
            how = "MediaPipe's BertTokenizer with the WordPiece vocabulary of the metadata"
        else:
            tokenizer = metadata.RegexTokenizer(record["delim_regex_pattern"], record["vocabulary"])
            how = "the regex tokenizer of the input's metadata"
        return metadata.add_text_classifier_metadata(
            blob, labels=list(labels), tokenizer=tokenizer, name=f"{model.name} ({kind})",
            description=f"Text classifier exported by kerastl: {len(labels)} classes, raw strings in "
                        f"(tokenised by {how}).")

    def task_figures(self, blob, model, inputs, *, reference, y_true):
        """MediaPipe's TextClassifier on the raw texts (`kerastl.export.verify.verify_text_classifier`), with
        `tokenizer` (the metadata's `RegexTokenizer` or `BertTokenizer`), `same_ids`, the share of texts whose
        token ids by MediaPipe's rule (`kerastl.inputs.text_rules.mediapipe_ids`; for a keras-hub model its three
        inputs by `kerastl.inputs.packed_text.mediapipe_bert_inputs`) are Keras' own, and a one-line `note` when
        MediaPipe's tokenizer only approximates the model's (a regex one not exact; a BERT one that gave other ids
        for some of these texts). None without metadata (a tokenizer MediaPipe cannot follow)."""
        from kerastl.export.verify import verify_text_classifier
        from kerastl.inputs.packed_text import mediapipe_bert_agreement
        from kerastl.inputs.text import mediapipe_id_agreement

        record = _mediapipe_record(model)
        if not record["supported"]:
            return None
        figures = verify_text_classifier(blob, inputs, reference=reference, y_true=y_true)
        figures["tokenizer"] = record["tokenizer"]
        figures["exact_tokenizer"] = record["exact"]
        if record["tokenizer"] == "BertTokenizer":
            figures["same_ids"] = mediapipe_bert_agreement(model, inputs)
            if figures["same_ids"] is not None and figures["same_ids"] < 1:
                agreement = figures["top1_agreement"]
                poor = agreement is not None and agreement < POOR_AGREEMENT
                figures["note"] = (
                    f"{'poor MediaPipe agreement: ' if poor else ''}MediaPipe's BertTokenizer gives other word "
                    f"pieces than keras-hub's for {1 - figures['same_ids']:.2%} of {figures['n']} texts (it "
                    "lower-cases A-Z only and keeps accents and control characters; see tokenizer.mediapipe."
                    f"differs_when): its top-1 agrees with Keras on {_percent(agreement)}")
            return figures
        figures["same_ids"] = mediapipe_id_agreement(model, inputs, record)
        if not record["exact"]:
            agreement = figures["top1_agreement"]
            poor = agreement is not None and agreement < POOR_AGREEMENT
            figures["note"] = (
                f"{'poor MediaPipe agreement: ' if poor else ''}MediaPipe's regex tokenizer only approximates this "
                f"model's ({record['standardize']}): its top-1 agrees with Keras on {_percent(agreement)} of "
                f"{figures['n']} texts (same token ids for {_percent(figures['same_ids'])}); a backbone made by "
                "kerastl pretrain tokenises as MediaPipe does, exactly")
        return figures

    companion_files = (Companion(key="vocabulary", file_name="vocabulary.txt", suffix=".vocab.txt",
                                 report_key="tokenizer"),)

    def companion_contents(self, model):
        from kerastl.export.metadata import VOCABULARY_FILE_NAME
        from kerastl.export.tflite import write_vocabulary
        from kerastl.inputs.packed_text import packed_rules, packed_tokenizer_of, packed_vocabulary
        from kerastl.inputs.text import tokenizer_rules, vocabulary_of

        mediapipe = _mediapipe_record(model)
        if mediapipe["supported"]:
            lines = len(mediapipe.pop("vocabulary"))
            # Inside the .tflite file, after its flatbuffer, beside labels.txt.
            mediapipe.update(vocabulary_file=VOCABULARY_FILE_NAME, vocabulary_lines=lines)
        if packed_tokenizer_of(model) is not None:
            vocabulary = packed_vocabulary(model)
            report = {**packed_rules(model),
                      "why": "TFLite has no builtin kernels for the tokenizer's string ops, so the .tflite file is the "
                             "model after its keras-hub preprocessor; tokenize with the vocabulary file as the rules "
                             "say, or run it with MediaPipe's TextClassifier, which tokenises raw strings by the file's "
                             "metadata (`mediapipe`: its BertTokenizer and the vocabulary packed in the .tflite file; "
                             "the SavedModel takes raw strings, with tensorflow-text's ops inside: import "
                             "tensorflow_text before loading it)",
                      "mediapipe": mediapipe}
            return {"vocabulary": (lambda path: write_vocabulary(vocabulary, path), report)}
        vocabulary = vocabulary_of(model)
        report = {
            **tokenizer_rules(model),
            "input": "token ids, int32 (1, sequence_length), padded with 0 and cut at sequence_length",
            "why": "TFLite has no builtin kernels for the tokenizer's string ops, so the .tflite file is the model "
                   "after its tokenizer; tokenize with the vocabulary file as the rules say (the SavedModel takes "
                   "raw strings), or run it with MediaPipe's TextClassifier, which tokenises raw strings by the "
                   "file's metadata (`mediapipe`: its regex and the vocabulary file packed in the .tflite file)",
            "mediapipe": mediapipe,
        }
        return {"vocabulary": (lambda path: write_vocabulary(vocabulary, path), report)}

    def synthetic_inputs(self, model, spec, n, *, seed=0):
        """Strings of random words from the model's vocabulary (whole words of a WordPiece one; common English
        words for a hub module, whose vocabulary is hidden)."""
        import numpy as np

        from kerastl.inputs.packed_text import packed_tokenizer_of, packed_vocabulary
        from kerastl.inputs.text import vocabulary_of

        rng = np.random.default_rng(seed)
        if packed_tokenizer_of(model) is not None:
            # Whole words of the WordPiece vocabulary: not continuation pieces, not [CLS]-style specials.
            words = [w for w in packed_vocabulary(model) if w.isalpha()] or _COMMON_WORDS.split()
        else:
            words = vocabulary_of(model)[2:] or _COMMON_WORDS.split()
        return np.asarray([" ".join(rng.choice(words, rng.integers(3, 40))) for _ in range(n)], dtype=object)

    # ---------------------------------------------------------------------------------------------- pretraining
    def pretraining_source(self, config, channels, global_batch):
        from kerastl.pretraining.other_sources import text_source

        return text_source(config, global_batch)

    def pretraining_model(self, config, source, channels):
        from kerastl.pretraining.other_sources import text_model_factory

        return text_model_factory(config, source)


def _mediapipe_record(model) -> dict:
    """How MediaPipe's TextClassifier tokenises for the model's TFLite file, with `tokenizer` (the metadata's
    `RegexTokenizer` or `BertTokenizer`): `kerastl.inputs.text.mediapipe_tokenizer(model)`, or for a keras-hub
    preprocessor `kerastl.inputs.packed_text.mediapipe_bert_rule(model)`, refused (`supported` False, `why`) when
    the metadata writer would refuse its vocabulary."""
    from kerastl.export.metadata import check_bert_vocabulary
    from kerastl.inputs.packed_text import mediapipe_bert_rule, packed_tokenizer_of
    from kerastl.inputs.text import mediapipe_tokenizer

    if packed_tokenizer_of(model) is None:
        return {"tokenizer": "RegexTokenizer", **mediapipe_tokenizer(model)}
    record = mediapipe_bert_rule(model)
    if record["supported"]:
        try:
            check_bert_vocabulary(record["vocabulary"])
        except KerastlError as error:
            return {"tokenizer": record["tokenizer"], "supported": False, "why": str(error).rstrip(".")}
    return record


def _percent(fraction) -> str:
    return "-" if fraction is None else f"{fraction:.2%}"


TEXT = register(Text())
