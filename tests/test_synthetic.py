"""Tests of kerastl.pretraining.synthetic_image: the built-in, in-graph synthetic pre-training sources."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.errors import KerastlError
from kerastl.pretraining.synthetic_image import SOURCES, _class_table, synthetic_dataset


def take(ds, n):
    """The first n elements of an unbatched dataset as numpy (images, labels)."""
    images, labels = next(iter(ds.batch(n)))
    return images.numpy(), labels.numpy()


def test_sources_registry_lists_glyphs():
    assert "glyphs" in SOURCES
    assert all(isinstance(v, str) and v for v in SOURCES.values())


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_element_spec_shapes_dtypes_and_range(name):
    ds = synthetic_dataset(name, num_classes=10, image_size=32, channels=3)
    image_spec, label_spec = ds.element_spec
    assert image_spec.shape == (32, 32, 3) and image_spec.dtype == tf.float32
    assert label_spec.shape == () and label_spec.dtype == tf.int32
    images, labels = take(ds, 100)
    assert images.shape == (100, 32, 32, 3)
    assert images.min() >= 0.0 and images.max() <= 255.0
    # Bright ink on a dark background: mostly dark, but every image has some bright ink.
    assert np.median(images) < 30.0
    assert (images.reshape(100, -1).max(axis=1) > 120.0).all()
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # channels repeat the grey image
    assert labels.min() >= 0 and labels.max() < 10


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_same_arguments_give_the_same_stream(name):
    a = take(synthetic_dataset(name, num_classes=50, seed=3), 80)
    b = take(synthetic_dataset(name, num_classes=50, seed=3), 80)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_each_element_is_a_function_of_its_index():
    # Elements are rendered in chunks internally; skipping into the middle of one must not shift
    # anything.
    ds = synthetic_dataset("glyphs", num_classes=20, seed=1)
    images, labels = take(ds, 150)
    tail_images, tail_labels = take(ds.skip(70), 80)
    np.testing.assert_array_equal(images[70:], tail_images)
    np.testing.assert_array_equal(labels[70:], tail_labels)


def test_splits_and_seeds_give_different_samples():
    train = take(synthetic_dataset("glyphs", seed=0, split="train"), 64)[0]
    val = take(synthetic_dataset("glyphs", seed=0, split="validation"), 64)[0]
    other = take(synthetic_dataset("glyphs", seed=1, split="train"), 64)[0]
    assert np.abs(train - val).mean() > 5.0
    assert np.abs(train - other).mean() > 5.0


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_class_prototypes_depend_only_on_seed_and_class(name):
    small = _class_table(name, 10, seed=4).numpy()
    large = _class_table(name, 1000, seed=4).numpy()
    np.testing.assert_array_equal(small, large[:10])
    assert not np.array_equal(small, _class_table(name, 10, seed=5).numpy())
    assert len(np.unique(large, axis=0)) == 1000  # every class is a different prototype


def nearest_centroid_accuracy(train, test, num_classes):
    """Accuracy of a nearest-class-mean classifier on blurred pixels, trained on `train`."""

    def features(images):
        x = tf.nn.avg_pool2d(images, 4, 2, "SAME").numpy()  # blur away small misalignments
        return x.reshape(len(x), -1)

    (xa, ya), (xb, yb) = train, test
    fa, fb = features(xa), features(xb)
    centroids = np.stack([fa[ya == c].mean(axis=0) for c in range(num_classes)])
    predictions = ((fb[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(axis=1)
    return (predictions == yb).mean()


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_validation_shows_the_classes_of_train(name):
    # Same classes: a classifier fit on "train" samples recognises "validation" samples far above
    # the 10% of chance; the classes of another seed are, by the same classifier, near chance.
    train = take(synthetic_dataset(name, num_classes=10, seed=0), 400)
    val = take(synthetic_dataset(name, num_classes=10, seed=0, split="validation"), 200)
    foreign = take(synthetic_dataset(name, num_classes=10, seed=99, split="validation"), 200)
    assert nearest_centroid_accuracy(train, val, 10) > 0.5
    assert nearest_centroid_accuracy(train, foreign, 10) < 0.3


def test_labels_cover_the_range():
    labels = take(synthetic_dataset("glyphs", num_classes=7), 300)[1]
    assert set(labels.tolist()) == set(range(7))


def test_supports_thousands_of_classes():
    labels = take(synthetic_dataset("glyphs", num_classes=5000), 512)[1]
    assert labels.min() >= 0 and labels.max() < 5000
    assert labels.max() > 1000
    assert len(set(labels.tolist())) > 400  # uniform over 5000 classes: few repeats in 512


def test_small_images_render():
    images = take(synthetic_dataset("glyphs", num_classes=3, image_size=8), 10)[0]
    assert images.shape == (10, 8, 8, 1) and images.max() > 0.0


def test_unknown_source_names_the_available_ones():
    with pytest.raises(KerastlError) as err:
        synthetic_dataset("mnist")
    message = str(err.value)
    assert "'mnist'" in message and "glyphs" in message and "\n" not in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 1},
        {"num_classes": 0},
        {"num_classes": 2.5},
        {"image_size": 7},
        {"channels": 0},
        {"split": "val"},
        {"seed": "0"},
        {"seed": 2**64},
    ],
)
def test_invalid_arguments_raise_one_line_errors(kwargs):
    with pytest.raises(KerastlError) as err:
        synthetic_dataset("glyphs", **kwargs)
    assert "\n" not in str(err.value)
