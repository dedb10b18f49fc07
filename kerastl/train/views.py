"""Option 1 under `--augment` without running the frozen backbone every epoch: the backbone's pooled features of
`K = HParams.augment_views` views of every training example are computed once and cached, and the head trains
on them.

- View 0 is the example itself (the features the head's standardisation is adapted on); view v >= 1 is the
  modality's one stateless augmentation (`kerastl.data.augmentation`) keyed on `view_key(seed, v, batch)`, so
  a view depends only on (seed, v) and the example's place in the training set, in a resumed process too.
  Text has no augmentation, so `--augment` on text is refused before this (`kerastl.data.training_examples`).
- Optimizer steps (`head_solver="steps"`): each epoch is still one pass over the N examples, and each example
  in a batch is shown one of its K views, drawn statelessly from the batch's key (`pick_view`). An epoch
  therefore keeps its meaning (N examples, the same step budget, schedule and early-stopping patience as the
  plain augmented `fit`); only the backbone no longer runs in it.
- The probe (`head_solver="probe"`): the K views are K labelled rows per example, and its cross-validation
  folds are grouped by example (`probe_inputs`), so the views of one example never straddle a fold.

With an output directory the views are kept in the run's backup directory (`cached_views`), under a key made of
the seed, K and the sha256 of the unaugmented features (which changes with the backbone, the data or their
order), so a resumed run reads them instead of recomputing them, and any change of K or seed recomputes them.
They go with the other backups once the run has written its outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: The default K. The one-off cost is K - 1 backbone passes over the training set (view 0 is computed anyway,
#: to adapt the standardisation), about what K - 1 epochs of the plain augmented `fit` spend in the backbone;
#: the default budget runs at least `kerastl.train.schedule.DEFAULT_EPOCHS` = 10 epochs, so 8 views cost less
#: than the epochs they replace while every example still gets 7 distinct augmentations. Memory is
#: N x K x width float32 (1,437 digits x 8 x 1,280: 59 MB).
DEFAULT_VIEWS = 8
# Examples per backbone call while computing views. Fixed (not the run's batch size) so that a view depends
# only on (seed, view): a batch's augmentation draws depend on its key and the batch's composition.
VIEW_BATCH = 64
# Views are keyed as epochs `VIEW_EPOCHS + view` of `kerastl.data.augmentation_key`, far from the epochs of
# full/top:N fine-tuning, so a view never repeats a batch augmentation of those phases.
VIEW_EPOCHS = 1 << 20
_FILE = "views-{key}.npy"


def view_key(seed: int, view, batch):
    """The stateless augmentation key of view `view`'s batch `batch` (see `VIEW_EPOCHS`)."""
    from kerastl.data import augmentation_key

    return augmentation_key(seed, VIEW_EPOCHS + view, batch)


def compute_views(feature_model, training, plain_features, *, views: int, seed: int):
    """The features of `views` views of every training example, as an (N, views, width) float32 array.

    Args:
        feature_model: inputs → pooled features (`Classifier.feature_model`, the backbone frozen).
        training: `(inputs, labels, transform)` as `kerastl.data.training_examples(..., augment=True)` gives
            it: in-memory inputs and the augmentation, or file paths and read-then-augment.
        plain_features: (N, width), the features of the unaugmented examples in order: view 0.
        views: K >= 1.
        seed: the run's seed.
    """
    import numpy as np
    import tensorflow as tf

    plain = np.asarray(plain_features, dtype="float32")
    n, width = plain.shape
    result = np.empty((n, int(views), width), dtype="float32")
    result[:, 0] = plain
    if views > 1 and n:
        inputs, _, transform = training
        # Strings (paths) come as numpy object arrays, which tf.constant does not take as they are.
        inputs = tf.constant(list(inputs), tf.string) if np.asarray(inputs).dtype == object else tf.constant(inputs)
        batches = tf.data.Dataset.range(n).batch(VIEW_BATCH).enumerate()

        def one_view(view):
            return batches.map(lambda index, ids: transform(tf.gather(inputs, ids), view_key(seed, view, index)),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

        stream = tf.data.Dataset.range(1, int(views)).flat_map(one_view)
        # flat_map hides the length, which Keras' predict otherwise reports as running out of data.
        count = (int(views) - 1) * -(-n // VIEW_BATCH)
        stream = stream.apply(tf.data.experimental.assert_cardinality(count)).prefetch(tf.data.AUTOTUNE)
        augmented = np.asarray(feature_model.predict(stream, verbose=0), dtype="float32")
        result[:, 1:] = augmented.reshape(int(views) - 1, n, width).transpose(1, 0, 2)
    return result


def cache_key(plain_features, *, views: int, seed: int) -> str:
    """What the cached views of a run depend on: K, the seed, the view batching and the unaugmented features."""
    import numpy as np

    plain = np.ascontiguousarray(np.asarray(plain_features, dtype="float32"))
    record = {"views": int(views), "seed": int(seed), "view_batch": VIEW_BATCH, "shape": list(plain.shape),
              "features_sha256": hashlib.sha256(plain.tobytes()).hexdigest()}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]


def cached_views(directory, feature_model, training, plain_features, *, views: int, seed: int):
    """`compute_views`, kept as `directory/views-<cache_key>.npy` (None: not kept).

    Returns:
        `(features, loaded)`: the (N, K, width) array, and whether it was read from `directory`.
    """
    import numpy as np

    if directory is None:
        return compute_views(feature_model, training, plain_features, views=views, seed=seed), False
    path = Path(directory) / _FILE.format(key=cache_key(plain_features, views=views, seed=seed))
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False), True
        except (OSError, ValueError):
            pass  # unreadable (written by another numpy, or damaged): recompute it
    features = compute_views(feature_model, training, plain_features, views=views, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as handle:
        np.save(handle, features, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return features, False


def training_views(classifier, training, plain_features, *, views: int, seed: int, out=None, timing=None):
    """The head's training features under augmentation: `cached_views` in `out`'s backup directory, with
    `timing["view_cache_seconds"]` (and `timing["view_cache"]`: "computed" or "loaded") recorded."""
    import time

    from kerastl.train.resume import BACKUP_DIR

    start = time.perf_counter()
    directory = None if out is None else Path(out) / BACKUP_DIR
    features, loaded = cached_views(directory, classifier.feature_model, training, plain_features, views=views,
                                    seed=seed)
    if timing is not None:
        timing["view_cache_seconds"] = round(time.perf_counter() - start, 3)
        timing["view_cache"] = f"{'loaded' if loaded else 'computed'} {views} views"
    return features


def pick_view(batch, key):
    """For `kerastl.train.resume.epoch_batches`: a batch of (b, K, width) views → (b, width), one view per
    example drawn uniformly from the batch's stateless key (which follows the seed, the epoch and the batch)."""
    import tensorflow as tf

    count = tf.shape(batch)[1]
    choice = tf.random.stateless_uniform([tf.shape(batch)[0]], seed=key, minval=0, maxval=count, dtype=tf.int32)
    return tf.gather(batch, choice, axis=1, batch_dims=1)


def probe_inputs(classifier, features, labels) -> dict:
    """`features`, `labels` and `groups` for `kerastl.train.probe.fit_probe`: the standardised features with
    their labels, and for (N, K, width) views every view as a row with its example's label and the example's
    index as its group (None for plain (N, width) features)."""
    import numpy as np

    from kerastl.train.probe import standardised

    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim == 2:
        return {"features": standardised(classifier, features), "labels": labels, "groups": None}
    n, k, width = features.shape
    return {"features": standardised(classifier, features.reshape(n * k, width)), "labels": np.repeat(labels, k),
            "groups": np.repeat(np.arange(n), k)}
