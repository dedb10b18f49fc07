"""`--augment` on Option 1's fast path (`kerastl.train.views`): the features of K views of every training example
are computed once and cached (view 0 the example itself), keyed on K, the seed and the plain features; the head
trains on them by steps or as a probe whose folds keep an example's views together."""

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl import data
from kerastl.cli import main
from kerastl.core.records import InputSpec
from kerastl.errors import UsageError
from kerastl.train import views
from kerastl.train.options import FinetuneConfig, HParams
from tests.conftest import make_image_folder, one_line_error


@pytest.fixture(scope="module")
def classifier_and_training(image_folder, tiny_backbone_path):
    import keras

    from kerastl.train.head import build_classifier

    classifier = build_classifier(keras.saving.load_model(tiny_backbone_path), 3, seed=0)
    scan = data.scan_folder(image_folder)
    files = [p for paths in scan.files for p in paths]
    labels = [label for label, paths in enumerate(scan.files) for _ in paths]
    spec = InputSpec(modality="image", shape=(16, 16, 3))
    training = data.training_examples(spec, files, labels, augment=True)
    plain = classifier.feature_model.predict(data.make_dataset(spec, files, labels, batch_size=8), verbose=0)
    return classifier, training, plain


def test_k_views_give_k_rows_per_example_and_view_0_is_the_plain_example(classifier_and_training):
    classifier, training, plain = classifier_and_training
    features = views.compute_views(classifier.feature_model, training, plain, views=3, seed=1)
    assert features.shape == (len(plain), 3, plain.shape[1])
    assert features.reshape(-1, plain.shape[1]).shape[0] == 3 * len(plain)
    np.testing.assert_array_equal(features[:, 0], plain)
    for view in (1, 2):
        assert not np.allclose(features[:, view], plain)
    assert not np.allclose(features[:, 1], features[:, 2])
    # A view is the augmented example's features: recompute one by hand.
    inputs, _, augment = training
    first = classifier.feature_model.predict(augment(inputs[:views.VIEW_BATCH], views.view_key(1, 2, 0)), verbose=0)
    np.testing.assert_allclose(features[:len(first), 2], first, rtol=1e-5, atol=1e-5)
    # Stateless: the same (seed, K) gives the same views.
    np.testing.assert_array_equal(features, views.compute_views(classifier.feature_model, training, plain, views=3,
                                                                seed=1))


def test_one_view_is_the_plain_features(classifier_and_training):
    classifier, training, plain = classifier_and_training
    np.testing.assert_array_equal(views.compute_views(classifier.feature_model, training, plain, views=1, seed=0)[:, 0],
                                  plain)


def test_the_cache_is_keyed_on_k_the_seed_and_the_features(classifier_and_training, tmp_path):
    classifier, training, plain = classifier_and_training

    def cached(k, seed, features=plain):
        return views.cached_views(tmp_path, classifier.feature_model, training, features, views=k, seed=seed)

    first, loaded = cached(2, 0)
    assert not loaded and len(list(tmp_path.glob("views-*.npy"))) == 1
    again, loaded = cached(2, 0)
    assert loaded
    np.testing.assert_array_equal(first, again)
    for k, seed, features in ((3, 0, plain), (2, 1, plain), (2, 0, plain + 1.0)):
        fresh, loaded = cached(k, seed, features)
        assert not loaded and fresh.shape[1] == k
    assert len(list(tmp_path.glob("views-*.npy"))) == 4
    assert not list(tmp_path.glob("*.part"))


def test_pick_view_draws_one_view_per_example_statelessly():
    batch = np.arange(4 * 3 * 2, dtype="float32").reshape(4, 3, 2)
    key = np.array([5, 7], dtype="int64")
    picked = views.pick_view(batch, key).numpy()
    assert picked.shape == (4, 2)
    for row, example in zip(picked, batch):
        assert any(np.array_equal(row, view) for view in example)
    np.testing.assert_array_equal(picked, views.pick_view(batch, key).numpy())


def test_probe_folds_keep_the_views_of_an_example_together(monkeypatch):
    """With groups, the folds are grouped by example (no example's views on both sides of a fold), and counted by
    the smallest class's examples rather than its rows."""
    import sklearn.model_selection

    from kerastl.train import probe

    rng = np.random.default_rng(0)
    examples, k = 12, 4
    labels = np.repeat(np.arange(examples) % 2, k)
    groups = np.repeat(np.arange(examples), k)
    features = rng.normal(size=(examples * k, 5)) + labels[:, None]
    seen = []
    real = sklearn.model_selection.StratifiedGroupKFold.split

    def spy(self, x, y, g):
        for train, held in real(self, x, y, g):
            seen.append((set(g[train]), set(g[held])))
            yield train, held

    monkeypatch.setattr(sklearn.model_selection.StratifiedGroupKFold, "split", spy)
    fit = probe.fit_probe(features, labels, 2, groups=groups, grid=(0.1, 1.0))
    assert fit.folds == 5 and len(seen) == 5
    for train, held in seen:
        assert not train & held


def test_finetune_head_with_two_augmented_views(tmp_path, tiny_backbone_path):
    """`--augment --augment-views 2` on the head strategy trains on the view cache (the backbone does not run
    every epoch), deterministically for a seed, with or without an output directory; one view (the plain
    example) trains another head."""
    from kerastl.train.finetune import finetune

    folder = make_image_folder(tmp_path / "images", per_class=8)
    config = FinetuneConfig(strategy="head", epochs=3, batch_size=8, augment=True, augment_views=2, seed=2,
                            deterministic=True, baseline=False)
    a = finetune(folder, str(tiny_backbone_path), config=config, out=tmp_path / "a", verbose=0)
    b = finetune(folder, str(tiny_backbone_path), config=config, verbose=0)
    timing = a.metrics["timing"]
    assert "feature_cache_seconds" in timing and timing["view_cache"] == "computed 2 views"
    assert a.metrics["config"]["augment_views"] == 2
    np.testing.assert_array_equal(a.model.get_layer("predictions").kernel.numpy(),
                                  b.model.get_layer("predictions").kernel.numpy())
    plain = finetune(folder, str(tiny_backbone_path), config=FinetuneConfig(
        strategy="head", epochs=3, batch_size=8, augment=True, augment_views=1, seed=2, deterministic=True,
        baseline=False), verbose=0)
    assert not np.array_equal(plain.model.get_layer("predictions").kernel.numpy(),
                              a.model.get_layer("predictions").kernel.numpy())
    assert len(a.metrics["history"]) == 3


def test_finetune_resumes_from_the_cached_views(tmp_path, tiny_backbone_path, monkeypatch):
    """A run killed before its outputs resumes with the views it cached (not recomputed) and ends with the
    uninterrupted run's weights."""
    import kerastl.train.finetune
    from kerastl.train.finetune import finetune

    folder = make_image_folder(tmp_path / "images", per_class=8)
    config = FinetuneConfig(strategy="head", epochs=2, batch_size=8, augment=True, augment_views=3, seed=1,
                            deterministic=True, baseline=False, early_stopping=False)
    whole = finetune(folder, str(tiny_backbone_path), config=config, verbose=0)

    real = kerastl.train.finetune.save_outputs

    def kill(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kerastl.train.finetune, "save_outputs", kill)
    with pytest.raises(KeyboardInterrupt):
        finetune(folder, str(tiny_backbone_path), config=config, out=tmp_path / "out", verbose=0)
    monkeypatch.setattr(kerastl.train.finetune, "save_outputs", real)
    computed = []
    monkeypatch.setattr(views, "compute_views", lambda *a, **k: computed.append(1))
    resumed = finetune(folder, str(tiny_backbone_path), config=config, out=tmp_path / "out", verbose=0)
    assert not computed and resumed.metrics["timing"]["view_cache"] == "loaded 3 views"
    np.testing.assert_array_equal(whole.model.get_layer("predictions").kernel.numpy(),
                                  resumed.model.get_layer("predictions").kernel.numpy())


def test_probe_on_augmented_views(tmp_path, tiny_backbone_path):
    from kerastl.train.finetune import finetune

    folder = make_image_folder(tmp_path / "images", per_class=8)
    result = finetune(folder, str(tiny_backbone_path), config=FinetuneConfig(
        strategy="head", augment=True, augment_views=2, head_solver="probe", seed=0, baseline=False), verbose=0)
    assert result.metrics["head_fit"]["folds"] >= 2
    assert result.metrics["timing"]["view_cache"] == "computed 2 views"


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_bad_view_counts_are_refused(value):
    with pytest.raises(UsageError, match=rf"^--augment-views must be an integer >= 1\. Received: {value}$"):
        HParams(augment=True, augment_views=value).validate()


def test_cli_refuses_zero_views_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["finetune", "--augment", "--augment-views", "0", "--out", "x"],
                                catch_exceptions=False)
    one_line_error(result, 2, "--augment-views")


def test_text_has_no_views_to_augment(tmp_path):
    with pytest.raises(UsageError, match="drop --augment"):
        data.training_examples(InputSpec(modality="text", shape=()), [tmp_path / "a.txt"], [0], augment=True)
