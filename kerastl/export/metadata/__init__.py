"""TFLite model metadata for image, audio and text classifiers, in the form MediaPipe Tasks reads.

MediaPipe's `ImageClassifier` refuses a float model without `NormalizationOptions` metadata,
and takes class names only from a labels file packed with the model (without one, every category
name is None). Its `AudioClassifier` refuses a model without metadata at all: it takes the sample
rate and channel count of the input from the input tensor's `AudioProperties`, and class names
from the same kind of labels file. The tools that used to write that metadata no longer work:
mediapipe's own `metadata_writers` fails to import (it needs a C extension the wheels no longer
ship), and tflite-support is unmaintained. This package reimplements what tflite-support's
`MetadataPopulator` does:

1. serialize a `ModelMetadata` flatbuffer (file identifier ``M001``),
2. store it as a model buffer referenced from the model's ``metadata`` vector under the name
   ``TFLITE_METADATA`` (other entries, such as the converter's ``min_runtime_version``, are kept),
3. append the associated files (``labels.txt``, and a text model's vocabulary) as an uncompressed zip archive after the
   flatbuffer, so the model file is also a valid zip.

The flatbuffer code is the generated Python that ships in the installed wheels: the TFLite model
schema from TensorFlow (or mediapipe) and the metadata schema from mediapipe. They are loaded by
file path, because importing the `mediapipe` package runs its native bindings, which we don't
need for reading or writing bytes.

MediaPipe's `TextClassifier` needs metadata for a model of int32 token ids: the tokenizer that
turns a string into them (a regex tokenizer with its vocabulary file, for word-level models; a BERT
tokenizer with its WordPiece vocabulary, for BERT-family models and their three inputs) and the labels.

Split as tflite-support's `metadata_writers` are: `schema` (the generated flatbuffer modules and
the checks every writer needs), `image_classifier`, `audio_classifier` and `text_classifier` (one
writer per task), `pack` (the metadata flatbuffer, the repacked model, the appended files, `inline_buffers`) and
`read` (the reader).
"""

from kerastl.export.metadata.audio_classifier import add_audio_classifier_metadata
from kerastl.export.metadata.image_classifier import add_image_classifier_metadata
from kerastl.export.metadata.pack import LABELS_FILE_NAME, inline_buffers
from kerastl.export.metadata.read import read_associated_files, read_metadata
from kerastl.export.metadata.text_classifier import (
    VOCABULARY_FILE_NAME,
    BertTokenizer,
    RegexTokenizer,
    add_text_classifier_metadata,
    check_bert_vocabulary,
)

__all__ = [
    "LABELS_FILE_NAME",
    "VOCABULARY_FILE_NAME",
    "BertTokenizer",
    "RegexTokenizer",
    "add_audio_classifier_metadata",
    "add_image_classifier_metadata",
    "add_text_classifier_metadata",
    "check_bert_vocabulary",
    "inline_buffers",
    "read_associated_files",
    "read_metadata",
]
