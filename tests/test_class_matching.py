"""One unknown-class rule for `evaluate` and export's verification set (`kerastl.data.class_indices`): class
folder names match a model's labels up to Unicode normalisation, so a folder copied through macOS (NFD names)
is accepted by both, and a class the model never saw is refused by both in one line."""

import unicodedata

import keras
import pytest

from kerastl.data import class_indices
from kerastl.errors import KerastlError

from .conftest import make_image_folder

LABELS = ["café", "thé"]  # NFC, as labels.txt holds them after a Linux run


def tiny_classifier():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(len(LABELS), activation="softmax")(x))


def test_class_indices_match_up_to_normalisation():
    nfd = [unicodedata.normalize("NFD", name) for name in reversed(LABELS)]
    assert nfd != list(reversed(LABELS))
    assert class_indices("data", nfd, LABELS) == [1, 0]
    with pytest.raises(KerastlError, match="not trained on: tea; the model knows café, thé"):
        class_indices("data", ["café", "tea"], LABELS)


def test_export_verification_accepts_a_decomposed_folder(tmp_path):
    from kerastl.export import verification_set

    nfd = [unicodedata.normalize("NFD", name) for name in LABELS]
    data = make_image_folder(tmp_path / "nfd", classes=tuple(nfd), per_class=4)
    samples = verification_set(data, LABELS, tiny_classifier())
    assert sorted(set(samples.y_true.tolist())) == [0, 1]
    other = make_image_folder(tmp_path / "other", classes=("café", "tea"), per_class=4)
    with pytest.raises(KerastlError, match="not trained on: tea"):
        verification_set(other, LABELS, tiny_classifier())
