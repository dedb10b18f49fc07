"""Built-in labelled data sets: scikit-learn's handwritten digits as a class-per-folder PNG set
(`digits_folder`)."""

from __future__ import annotations

import os
from pathlib import Path


def digits_folder(dest=None) -> Path:
    """Writes scikit-learn's bundled handwritten digits (1,797 real 8×8 scans, 10 classes) as a class-per-folder
    PNG set, once, and returns its path: `dest`, else the kerastl cache's `datasets/sklearn-digits`.

    Pixels are the 0–16 ink levels scaled to 0–255: bright ink on a dark background, as in MNIST.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from kerastl.net import cache_dir

    dest = Path(dest) if dest else cache_dir() / "datasets" / "sklearn-digits"
    # The set is written elsewhere and renamed into place whole, so a `dest` that exists is complete (and a
    # marker file inside it would only show up as a stray file in every report).
    if dest.is_dir():
        return dest
    digits = load_digits()
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    for index, (image, target) in enumerate(zip(digits.images, digits.target)):
        folder = tmp / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.round(image * (255.0 / 16.0)), 0, 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"{index:04d}.png")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, dest)  # atomic: a concurrent or killed writer never leaves a half set under `dest`
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():  # another process may have won the race; that is fine
            raise
    return dest
