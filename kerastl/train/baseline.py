"""The classical baseline every fine-tuning run fits beside the network: a logistic regression on the input
type's classical features (pixels, log-spectrum statistics, TF-IDF: `Modality.classical_features`), trained on
the same training examples and scored on the same held-out ones, in seconds.

It answers the question a user of transfer learning has to ask: did the pretrained network buy anything over a
linear model of the raw input? On the issue's real sets it sometimes did not (text and audio before #12).

The regression is `kerastl.train.probe.fit_probe` (L-BFGS, its L2 penalty chosen by stratified k-fold
cross-validation on the training examples, over a shorter grid than the head's so that it stays in seconds).
Dense features are standardised on the training examples first (as scikit-learn's StandardScaler would); a
sparse TF-IDF matrix is already normalised and stays sparse.
"""

from __future__ import annotations

import time

# A shorter grid than the head's (kerastl.train.probe.C_GRID): a baseline fits in seconds on thousands of
# 3,072-pixel images.
BASELINE_GRID = (1e-3, 1e-2, 0.1, 1.0, 10.0)


def classical_baseline(spec, train_files, train_labels, eval_files, eval_labels, *, class_weight=None,
                       seed: int = 0) -> dict | None:
    """Fits the modality's classical baseline on the training files and scores it on `eval_files`.

    Args:
        spec: the model's `InputSpec` (its modality decides the features; its shape the image size and colour,
            its sample rate the audio's).
        train_files, train_labels: the run's training examples (integer labels).
        eval_files, eval_labels: the examples the run's accuracy is measured on.
        class_weight: as the run uses them.
        seed: seeds the folds.

    Returns:
        `{"method", "accuracy", "evaluated_on": N, "l2_c", "seconds"}`, or None when the modality has no
        classical baseline, there is nothing to evaluate on, or the training set has a single class.
    """
    import numpy as np
    import scipy.sparse

    from kerastl.core.modality import get
    from kerastl.train.probe import fit_probe

    modality = get(spec.modality)
    labels = np.asarray(train_labels)
    if modality.classical_baseline is None or not len(eval_files) or np.unique(labels).size < 2:
        return None
    start = time.perf_counter()
    train_x, eval_x = modality.classical_features(spec, list(train_files), list(eval_files))
    if not scipy.sparse.issparse(train_x):
        train_x, eval_x = np.asarray(train_x, "float64"), np.asarray(eval_x, "float64")
        mean, std = train_x.mean(axis=0), train_x.std(axis=0)
        std[std == 0] = 1.0
        train_x, eval_x = (train_x - mean) / std, (eval_x - mean) / std
    num_classes = int(max(labels.max(), np.max(eval_labels)) + 1)
    fit = fit_probe(train_x, labels, num_classes, class_weight=class_weight, seed=seed, grid=BASELINE_GRID)
    logits = np.asarray(eval_x @ fit.kernel) + fit.bias
    accuracy = float((logits.argmax(axis=1) == np.asarray(eval_labels)).mean())
    return {"method": modality.classical_baseline, "accuracy": round(accuracy, 6), "evaluated_on": len(eval_files),
            "l2_c": fit.c, "seconds": round(time.perf_counter() - start, 3)}
