"""The records that travel between packages: what a backbone is (`Backbone`) and what a model takes
(`InputSpec`). Plain data, no TensorFlow import."""

from __future__ import annotations

import dataclasses

from kerastl.errors import KerastlError


@dataclasses.dataclass
class Backbone:
    """A pretrained network minus its output layer, and what a user needs to feed it.

    Attributes:
        model: a Keras model from raw pixels (0–255, shape `input_shape`) to features (a feature map or a vector).
        spec: the spec it was resolved from.
        modality: the input type, `image` here; fine-tuning refuses data of another type.
        input_shape: `(height, width, channels)`.
        preprocessing: the record of what the first layer does to raw pixels (see `ImagePreprocessing`).
        feature_width: the width of the pooled features the new output layer sees.
        weights: `imagenet`, `none`, `pretrained` (our manifests, hub modules) or a weights file path.
        manifest: the manifest of a `saved_models/` backbone, else None.
        notes: what loading changed that the user should hear about (e.g. which classifier top was cut);
            `finetune` records them in its metrics and the CLI prints them.
        refusal: why the backbone cannot be used as it is, unless `--cut` names the feature layer (a model that
            ends in a softmax whose classifier layer kerastl cannot find); `load_backbone` raises it.
    """

    model: object
    spec: str
    modality: str
    input_shape: tuple
    preprocessing: dict
    feature_width: int
    weights: str
    manifest: dict | None = None
    notes: list = dataclasses.field(default_factory=list)
    refusal: str | None = None

    def record(self) -> dict:
        """The JSON-able description written into metrics and export metadata."""
        return {
            "spec": self.spec,
            "modality": self.modality,
            "input_shape": list(self.input_shape),
            "preprocessing": self.preprocessing,
            "feature_width": self.feature_width,
            "weights": self.weights,
            "notes": list(self.notes),
        }


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model takes, for reading files into it.

    Attributes:
        modality: image, audio or text.
        shape: the input shape without the batch: (H, W, C) pixels, (samples,) waveforms, () strings.
        sample_rate: audio only, the waveform's sample rate.
    """

    modality: str
    shape: tuple
    sample_rate: int | None = None


class UndeclaredInput(KerastlError):
    """A model whose input could be audio but carries no marker saying so (see `input_spec`)."""
