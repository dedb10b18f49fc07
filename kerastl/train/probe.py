"""Option 1's head fitted as a linear probe: a multinomial logistic regression solved to its optimum on the
cached features, with the L2 penalty chosen by stratified k-fold cross-validation, then written into the
head's Dense layer.

Why not gradient steps: the head on frozen features is a convex problem, and with few labels a fixed budget of
Adam steps from zero weights stops wherever the budget ends, at an implicit and untuned regularisation. A
user's own .keras ImageNet network cut in the middle, 10 labels per class: kerastl's SGD head 67.6%, scikit-
learn's LogisticRegression on the same cached features 74.6% (issue #13). Solving the problem (L-BFGS, as
scikit-learn's linear probes and CLIP's evaluation do) and picking the penalty by cross-validation on the
user's own training examples closes that gap without a validation split.

The probe sees the features after the head's fixed standardisation (`Classifier.adapt`), so its solution is
the Dense layer's weights as they are: `softmax(standardised @ kernel + bias)` is the probe's
`predict_proba`. Dropout is the identity at inference, so the saved model predicts what the probe predicts.
"""

from __future__ import annotations

import dataclasses

# The penalty grid (scikit-learn's C, the inverse of the L2 strength, on the mean log-loss). Standardised
# features of width 100-1,300 at 5-50 examples per class are separable at any C above ~1e-2; the grid runs
# from a strong pull towards zero to almost none. Cross-validation picks from it; the ends are reported.
C_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Folds of the penalty's cross-validation (fewer when the smallest class has fewer examples).
MAX_FOLDS = 5
# L-BFGS iterations: enough to converge on the widest shipped features (1,280) at every C in the grid.
MAX_ITER = 2000


@dataclasses.dataclass
class ProbeFit:
    """What `fit_probe` found.

    Attributes:
        kernel: (width, classes) float32 weights for the head's Dense layer.
        bias: (classes,) float32.
        c: the chosen inverse L2 strength (scikit-learn's C).
        folds: the folds of its cross-validation; 0 when a class had a single example (then C is `default_c`,
            not chosen).
        cv_accuracy: mean and std of the held-out fold accuracy at the chosen C (None without folds).
        cv_by_c: {C: mean held-out log-loss} for every C tried.
    """

    kernel: object
    bias: object
    c: float
    folds: int
    cv_accuracy: tuple | None
    cv_by_c: dict

    def record(self) -> dict:
        """The fit as metrics.json reports it."""
        return {
            "solver": "lbfgs multinomial logistic regression",
            "l2_c": self.c,
            "folds": self.folds,
            "cv_accuracy_mean": None if self.cv_accuracy is None else round(self.cv_accuracy[0], 4),
            "cv_accuracy_std": None if self.cv_accuracy is None else round(self.cv_accuracy[1], 4),
            "cv_log_loss_by_c": {f"{c:g}": round(v, 4) for c, v in self.cv_by_c.items()},
            "chosen_by": "cross-validation" if self.folds else "default (a class has one example)",
        }


def _solver(c: float, class_weight, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=MAX_ITER, class_weight=class_weight, random_state=seed)


def fit_probe(features, labels, num_classes: int, *, class_weight: dict | None = None, seed: int = 0,
              grid=C_GRID, default_c: float = 1.0, groups=None) -> ProbeFit:
    """Fits the head as a multinomial logistic regression on standardised features.

    Args:
        features: (N, width) standardised pooled features (what the head's Dense layer sees), or any features
            for a linear classifier (`kerastl.train.baseline`), a scipy sparse matrix included.
        labels: N integer labels in [0, num_classes).
        num_classes: the head's width; a class without examples gets a bias far below the others.
        class_weight: {label: weight} as Keras takes it (None: unweighted).
        seed: seeds the folds.
        grid: the C values to cross-validate.
        default_c: the C used when cross-validation is impossible (a class with one example).
        groups: N group ids (e.g. the example each augmented view came from, `kerastl.train.views`): the
            folds then keep each group whole, and are counted by the groups of the smallest class.

    Returns:
        A `ProbeFit` whose `kernel` and `bias` go into the Dense layer as they are.

    Raises:
        ValueError: fewer than 2 distinct labels among `labels` (finetune refuses such data before this).
    """
    import warnings

    import numpy as np
    import scipy.sparse
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    # A TF-IDF matrix stays sparse: the solver takes it as it is.
    x = features.tocsr() if scipy.sparse.issparse(features) else np.asarray(features, dtype="float64")
    y = np.asarray(labels, dtype="int64")
    present = np.unique(y)
    if present.size < 2:
        raise ValueError(f"a probe needs at least 2 classes with examples; got labels {present.tolist()}")
    weights = None if class_weight is None else {int(k): float(v) for k, v in class_weight.items()}
    if groups is None:
        folds = min(MAX_FOLDS, int(np.bincount(y)[present].min()))
    else:
        groups = np.asarray(groups)
        folds = min(MAX_FOLDS, min(np.unique(groups[y == label]).size for label in present))
    cv_by_c, accuracy_by_c = {}, {}
    from threadpoolctl import threadpool_limits

    # One BLAS thread: these are small matrices, and OpenBLAS' threads spin while TensorFlow's hold the cores
    # (the 5 x 5 folds of a 50-image baseline took 415 s with them on 2 busy cores, 7 s without).
    with warnings.catch_warnings(), threadpool_limits(1):
        # A separable few-shot set drives the weights up slowly at large C; the grid's other values cover it.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if folds >= 2:
            if groups is None:
                splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y))
            else:
                splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
                splits = list(splitter.split(x, y, groups))
            for c in grid:
                losses, accuracies = [], []
                for train, held in splits:
                    solver = _solver(c, weights, seed).fit(x[train], y[train])
                    proba = solver.predict_proba(x[held])
                    losses.append(log_loss(y[held], proba, labels=solver.classes_))
                    accuracies.append(float((solver.classes_[proba.argmax(1)] == y[held]).mean()))
                cv_by_c[c] = float(np.mean(losses))
                accuracy_by_c[c] = (float(np.mean(accuracies)), float(np.std(accuracies)))
            c = min(grid, key=lambda value: (cv_by_c[value], -value))
        else:
            folds, c = 0, default_c
        solver = _solver(c, weights, seed).fit(x, y)

    kernel = np.zeros((x.shape[1], num_classes), dtype="float32")
    # A class the training set lacks never wins: its logit sits far below the others'.
    bias = np.full((num_classes,), -1e4, dtype="float32")
    coef, intercept = solver.coef_, solver.intercept_
    if len(solver.classes_) == 2:
        # scikit-learn keeps one row for two classes (the second class's logit minus the first's); the
        # softmax of (-z/2, z/2) is the sigmoid of z.
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    kernel[:, solver.classes_] = coef.T
    bias[solver.classes_] = intercept
    return ProbeFit(kernel=kernel, bias=bias, c=float(c), folds=folds,
                    cv_accuracy=accuracy_by_c.get(c), cv_by_c=cv_by_c)


def standardised(classifier, features):
    """`features` (N, width) after the head's fixed standardisation (`Classifier.adapt` set it)."""
    import numpy as np

    norm = classifier.model.get_layer("feature_norm")
    return np.asarray(norm(np.asarray(features, dtype="float32")))


def set_head(classifier, fit: ProbeFit) -> None:
    """Writes `fit` into the classifier's Dense layer (shared by `model` and `head_model`)."""
    classifier.predictions.set_weights([fit.kernel, fit.bias])
