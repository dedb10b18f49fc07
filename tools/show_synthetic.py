"""Write a PNG grid of samples from a kerastl synthetic source: one row per class.

    python tools/show_synthetic.py OUT.png [--source glyphs] [--classes 10] [--samples 10]
        [--image-size 28] [--seed 0] [--split train] [--first-class 0]

Class c of a source looks the same whatever num_classes is (its prototype depends only on the seed
and c), so the tool draws the stream with num_classes = first_class + classes and keeps the first
samples of each of the classes it shows.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kerastl.pretraining.synthetic_image import SOURCES, synthetic_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="path of the PNG to write")
    parser.add_argument("--source", default="glyphs", choices=sorted(SOURCES))
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--first-class", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train")
    parser.add_argument("--zoom", type=int, default=3, help="pixel repeat factor of the PNG")
    args = parser.parse_args(argv)

    total = args.first_class + args.classes
    ds = synthetic_dataset(
        args.source,
        num_classes=total,
        image_size=args.image_size,
        seed=args.seed,
        split=args.split,
    ).batch(256)
    rows: dict[int, list[np.ndarray]] = {c: [] for c in range(args.first_class, total)}
    for images, labels in ds:
        for image, label in zip(images.numpy(), labels.numpy()):
            if label in rows and len(rows[label]) < args.samples:
                rows[label].append(image[..., 0])
        if all(len(r) == args.samples for r in rows.values()):
            break

    size, pad = args.image_size, 2
    canvas = np.full(
        (args.classes * (size + pad) + pad, args.samples * (size + pad) + pad), 90, np.uint8
    )
    for r, c in enumerate(sorted(rows)):
        for s, image in enumerate(rows[c]):
            y, x = pad + r * (size + pad), pad + s * (size + pad)
            canvas[y : y + size, x : x + size] = np.clip(image, 0, 255).astype(np.uint8)
    canvas = np.kron(canvas, np.ones((args.zoom, args.zoom), np.uint8))
    Image.fromarray(canvas, mode="L").save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
