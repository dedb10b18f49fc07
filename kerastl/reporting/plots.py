"""The training report image: learning curves and the validation confusion matrix."""

from __future__ import annotations


def plot_report(history: list[dict], metrics: dict, path, *, title: str = "") -> None:
    """Writes a PNG with the loss and accuracy curves of every phase and the confusion matrix.

    Args:
        history: one dict per epoch with `phase`, `epoch`, `loss`, `accuracy` and, when validated,
            `val_loss`, `val_accuracy`.
        metrics: `kerastl.train.evaluate.classification_metrics` output.
        path: the PNG path (written as is; callers make it atomic).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    steps = np.arange(1, len(history) + 1)
    for ax, key in zip(axes[:2], ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [h.get(prefix + key) for h in history]
            if any(v is not None for v in values):
                ax.plot(steps, [np.nan if v is None else v for v in values], style,
                        label="validation" if prefix else "training")
        # Mark where one training phase hands over to the next (head → full fine-tuning).
        for i in range(1, len(history)):
            if history[i]["phase"] != history[i - 1]["phase"]:
                ax.axvline(i + 0.5, color="grey", lw=0.8)
                ax.text(i + 0.6, ax.get_ylim()[1], history[i]["phase"], va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        if history:
            ax.legend()
    confusion = np.asarray(metrics.get("confusion_matrix") or [[0]])
    names = metrics.get("class_names") or []
    ax = axes[2]
    ax.imshow(confusion, cmap="Blues")
    if len(names) <= 30:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        if len(names) <= 15:
            for (i, j), value in np.ndenumerate(confusion):
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > confusion.max() / 2 else "black")
    accuracy = metrics.get("accuracy")
    ax.set_title("confusion (validation)" + (f", accuracy {accuracy:.1%}" if accuracy is not None else ""))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


def plot_lr_find(lrs, losses, suggestion: float, path, *, title: str = "", stopped: str | None = None) -> None:
    """Writes a PNG of a learning-rate range test: the smoothed loss against the learning rate (log axis), the
    suggested rate marked by a vertical line and a dot on the curve.

    Args:
        lrs, losses: the rates tried and the smoothed loss after each (`kerastl.train.range_test.RangeTest`).
        suggestion: the suggested rate.
        path: the PNG path (written as is; callers make it atomic).
        stopped: why the test ended ("diverged" or "steps"), shown in the legend.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    import numpy as np

    lrs = np.asarray(lrs, dtype=float)
    losses = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses, "-", label="smoothed training loss" + (f" ({stopped})" if stopped else ""))
    ax.set_xscale("log")
    ax.axvline(suggestion, color="tab:red", lw=1, ls="--", label=f"suggestion {suggestion:.2e}")
    if lrs.size:
        at = int(np.argmin(np.abs(np.log(lrs) - np.log(suggestion))))
        ax.plot([lrs[at]], [losses[at]], "o", color="tab:red")
    finite = losses[np.isfinite(losses)]
    if finite.size:
        # The divergent tail can be orders of magnitude above the rest: keep the descent readable.
        low = float(finite.min())
        high = float(min(finite.max(), 1.1 * max(finite[0], 4 * low)))
        ax.set_ylim(low - 0.05 * (high - low + 1e-12), high + 0.05 * (high - low + 1e-12))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
