"""kerastl: transfer learning with Keras 3 and TensorFlow.

Step 1, `pretrain`: supervised pre-training of a backbone on a large dataset of the same input type.
Step 2, `finetune`: keep every layer but the output layer, add a new one for your classes, and train either
only that layer (Option 1, `strategy="head"`) or every layer from the pretrained values (Option 2, "full").

Public names are imported lazily, so that `import kerastl` (and `kerastl --help`) does not import TensorFlow.
"""

from __future__ import annotations

import importlib

from kerastl.errors import KerastlError, UsageError

__version__ = "0.1.0"

_LAZY = {
    "Backbone": "kerastl.backbones",
    "load_backbone": "kerastl.backbones",
    "build_classifier": "kerastl.train.head",
    "Classifier": "kerastl.train.head",
    "parse_strategy": "kerastl.train.strategies",
    "set_trainable_by_pattern": "kerastl.train.strategies",
    "FinetuneConfig": "kerastl.train.options",
    "HParams": "kerastl.train.options",
    "ModelOptions": "kerastl.train.options",
    "FinetuneResult": "kerastl.train.finetune",
    "finetune": "kerastl.train.finetune",
    "evaluate": "kerastl.train.evaluate",
    "predict": "kerastl.train.evaluate",
    "load_classifier": "kerastl.train.evaluate",
    "lr_find": "kerastl.train.lr_find",
    "PretrainConfig": "kerastl.pretraining.run",
    "pretrain": "kerastl.pretraining.run",
    "digits_folder": "kerastl.data",
}

__all__ = [
    "Backbone",
    "Classifier",
    "FinetuneConfig",
    "FinetuneResult",
    "HParams",
    "KerastlError",
    "ModelOptions",
    "PretrainConfig",
    "UsageError",
    "__version__",
    "build_classifier",
    "digits_folder",
    "evaluate",
    "finetune",
    "load_backbone",
    "load_classifier",
    "lr_find",
    "parse_strategy",
    "predict",
    "pretrain",
    "set_trainable_by_pattern",
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerastl' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
