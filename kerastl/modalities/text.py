"""Text: the text `Modality`. Raw strings in, the tokenizer inside the model: kerastl's `TextVectorization`
(`kerastl.inputs.text`) or a keras-hub preprocessor (`kerastl.inputs.packed_text.PackedTokenizer`, the `kerashub:`
backbones). String ops have no builtin TFLite kernels, so the TFLite file is the model after its tokenizer, with
its vocabulary written beside it: taking int32 token ids, or for a keras-hub preprocessor its three int32 inputs
(`token_ids`, `padding_mask`, `segment_ids`), as BERT models on phones take them. The hooks below are the one place
that tells the two tokenizers apart."""

from __future__ import annotations

import os

from kerastl.core.modality import Companion, Modality, register
from kerastl.core.records import InputSpec
from kerastl.errors import KerastlError, UsageError

TEXT_EXTENSIONS = (".txt",)
# Words for synthetic texts when a model's vocabulary is inside a hub module.
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
        """Full integer: the masked means over token positions do not survive 8-bit activations. The shipped text
        backbone fine-tuned on eight libraries' docstrings: 72.4% in float32, 13.2% in int8 (chance is 12.5%),
        with 9.2% top-1 agreement (tools/bench_export_audio_text.py). Dynamic keeps 99.3%."""
        if quantize not in self.quantizations:
            raise UsageError(f"--quantize {quantize} makes text models answer at chance (8-bit averages over token "
                             "positions); use --quantize dynamic (int8 weights, 4x smaller) or float16")

    companion_files = (Companion(key="vocabulary", file_name="vocabulary.txt", suffix=".vocab.txt",
                                 report_key="tokenizer"),)

    def companion_contents(self, model):
        from kerastl.export.tflite import write_vocabulary
        from kerastl.inputs.packed_text import packed_rules, packed_tokenizer_of, packed_vocabulary
        from kerastl.inputs.text import tokenizer_rules, vocabulary_of

        if packed_tokenizer_of(model) is not None:
            vocabulary = packed_vocabulary(model)
            report = {**packed_rules(model),
                      "why": "TFLite has no builtin kernels for the tokenizer's string ops, so the .tflite file is the "
                             "model after its keras-hub preprocessor; tokenize with the vocabulary file as the rules "
                             "say (the SavedModel takes raw strings, with tensorflow-text's ops inside: import "
                             "tensorflow_text before loading it)"}
            return {"vocabulary": (lambda path: write_vocabulary(vocabulary, path), report)}
        vocabulary = vocabulary_of(model)
        report = {
            **tokenizer_rules(model),
            "input": "token ids, int32 (1, sequence_length), padded with 0 and cut at sequence_length",
            "why": "TFLite has no builtin kernels for the tokenizer's string ops, so the .tflite file is the model "
                   "after its tokenizer; tokenize with the vocabulary file as the rules say (the SavedModel takes "
                   "raw strings)",
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


TEXT = register(Text())
