"""What a classifier to export takes, for every format: its `kerastl.data.InputSpec` (image, audio or
text) and, for images, the fixed (height, width, channels) the exported files are built for."""

from __future__ import annotations

from kerastl.errors import KerastlError


def model_input(model):
    """The `kerastl.data.InputSpec` of a classifier to export (image, audio or text).

    Raises:
        KerastlError: the model does not take one fixed-size image, one waveform or one string per example.
    """
    from kerastl.core.modality import get
    from kerastl.data import input_spec

    spec = input_spec(model)
    get(spec.modality).check_input(model, spec)
    return spec


def image_input_shape(model) -> tuple[int, int, int]:
    """(height, width, channels) of a classifier's image input.

    Raises:
        KerastlError: the model does not take one fixed-size image of 1 or 3 channels.
    """
    if len(model.inputs) != 1:
        raise KerastlError(f"the model has {len(model.inputs)} inputs; export handles classifiers with one")
    shape = tuple(model.input.shape[1:])
    if len(shape) != 3 or any(d is None for d in shape) or shape[2] not in (1, 3):
        raise KerastlError(f"the model takes inputs of shape {shape}; export needs a fixed (height, width, 1 or 3) "
                           "image input, as `kerastl finetune` models have")
    return int(shape[0]), int(shape[1]), int(shape[2])
