"""Optional dependencies: each feature checks only the packages it uses, and names them with their extra.

The core install (fine-tune, evaluate, predict, SavedModel export, pre-training) needs nothing from here. The
`tflite` extra (`pip install "kerastl[tflite]"`) brings what TFLite export uses; which part needs which
package:

- `ai-edge-litert`: the LiteRT interpreter that runs every exported file to verify it;
- `flatbuffers` and `mediapipe` (whose wheel carries the TFLite metadata schema): the metadata of image,
  audio and text files, which MediaPipe Tasks reads, and (text) the check of the file in MediaPipe's
  TextClassifier;
- `litert-quantizer` (the maintained continuation of `ai-edge-quantizer`): `--quantize dynamic` for audio,
  which must leave the log-mel front end in float32. Image and text exports never import it.

The `kerashub` extra (`pip install "kerastl[kerashub]"`) brings the `kerashub:` backbone source
(`kerastl.backbones.kerashub`) and what a model holding keras-hub layers needs to load:

- `keras-hub`: the backbones, image converters and text preprocessors;
- `tensorflow-text`: the ops of keras-hub's tokenizers (inside text models and their SavedModels);
- `safetensors`: the weights of Hugging Face transformers and timm checkpoints, which keras-hub converts;
- `kagglehub` and `huggingface-hub`: keras-hub's downloads, and the caches kerastl looks into offline.

No TensorFlow import here: the CLI checks before doing any work.
"""

from __future__ import annotations

import importlib.util

from kerastl.errors import KerastlError

# import name -> (distribution on PyPI, extra that installs it)
PACKAGES = {
    "ai_edge_litert": ("ai-edge-litert", "tflite"),
    "flatbuffers": ("flatbuffers", "tflite"),
    "mediapipe": ("mediapipe", "tflite"),
    "litert_quantizer": ("litert-quantizer", "tflite"),
    "keras_hub": ("keras-hub", "kerashub"),
    "tensorflow_text": ("tensorflow-text", "kerashub"),
    "safetensors": ("safetensors", "kerashub"),
    "kagglehub": ("kagglehub", "kerashub"),
    "huggingface_hub": ("huggingface-hub", "kerashub"),
}


def missing(*modules: str) -> list[str]:
    """The distributions of `modules` (import names, keys of `PACKAGES`) that are not installed."""
    return [PACKAGES[module][0] for module in modules if importlib.util.find_spec(module) is None]


def require(feature: str, *modules: str) -> None:
    """Checks that the packages `feature` imports are installed.

    Raises:
        KerastlError: one line naming the feature, the missing distributions and the extra to install, e.g.
            `audio dynamic-range quantization needs litert-quantizer, which is not installed here; run
            pip install "kerastl[tflite]"`.
    """
    absent = missing(*modules)
    if absent:
        extras = sorted({PACKAGES[m][1] for m in modules if PACKAGES[m][0] in absent})
        install = " ".join(f'"kerastl[{extra}]"' for extra in extras)
        verb = "is" if len(absent) == 1 else "are"
        raise KerastlError(f"{feature} needs {', '.join(absent)}, which {verb} not installed here; run "
                           f"pip install {install}")
