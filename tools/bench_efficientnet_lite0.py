"""Bench: the shipped EfficientNet-Lite0 backbone (saved_models/efficientnet-lite0-imagenet) measured as shipped:
file size, the ImageNet top 5 of real photos, single-image latency of Keras and of its float32 TFLite export,
side by side in one run.

The ImageNet classifier is the shipped backbone plus the 1000-class layer of the installed package
(`tools/import_efficientnet_lite0.py imagenet_classifier`); the photos are the ones installed packages ship
(`REAL_PHOTOS` there), read as kerastl reads training images (whole image resized to 224×224). Three ways of
computing the same network are compared on them, to show which padding and normalisation the weights expect:

- `shipped`: TensorFlow SAME padding, `(x - 127) / 128` (what the backbone does);
- `imagenet-mean-std`: the same with torchvision's ImageNet mean/std, as the weight package's README demo feeds;
- `symmetric-padding`: PyTorch's `padding=k//2` on the stride-2 layers instead of SAME.

For each: top-5 hits (an accepted class among the top 5) and the mean probability given to the accepted
classes. Latency: one image at a time, Keras (a tf.function of the classifier) and LiteRT interleaved so that
load from other processes hits both alike; medians. The TFLite file is made by kerastl's `convert_tflite`
(with MediaPipe metadata), and MediaPipe's ImageClassifier classifies the photos with it too.

    python tools/bench_efficientnet_lite0.py --json tools/results_efficientnet_lite0.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _importer():
    spec = importlib.util.spec_from_file_location("import_efficientnet_lite0",
                                                  ROOT / "tools" / "import_efficientnet_lite0.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def symmetric_padding_copy(model):
    """`model` with each stride-2 convolution padded as PyTorch's `padding=k//2` (zero padding then 'valid')
    instead of TensorFlow SAME, weights copied: the padding the weights were not trained with."""
    import keras

    def clone(layer):
        config = layer.get_config()
        strided = isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) and \
            tuple(config["strides"]) == (2, 2)
        if not strided:
            return layer.__class__.from_config(config)
        config["padding"] = "valid"
        return keras.Sequential([keras.layers.ZeroPadding2D(config["kernel_size"][0] // 2),
                                 layer.__class__.from_config(config)], name=f"{layer.name}_symmetric")

    copy = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, copy.layers):
        if old.weights:
            target = new.layers[-1] if isinstance(new, keras.Sequential) else new
            target.set_weights(old.get_weights())
    return copy


def torch_normalised_copy(model):
    """`model` with its preprocessing replaced by torchvision's ImageNet mean/std (`mode="torch"`)."""
    import keras

    from kerastl.inputs.image import ImagePreprocessing

    def clone(layer):
        if isinstance(layer, ImagePreprocessing):
            return ImagePreprocessing(mode="torch", name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def top5_rows(probabilities, synsets, names, photos):
    import numpy as np

    rows = []
    for (key, wanted), row in zip(photos.items(), probabilities):
        top = np.argsort(row)[::-1][:5]
        rows.append({
            "photo": f"{key[0]}:{key[1]}",
            "top5": [{"synset": synsets[i], "name": names[i] if names else synsets[i],
                      "probability": round(float(row[i]), 4)} for i in top],
            "hit": bool({synsets[i] for i in top} & set(wanted)),
            "accepted_probability": round(float(sum(row[synsets.index(s)] for s in wanted)), 4),
        })
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="latency passes over the photos")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow and LiteRT threads")
    parser.add_argument("--json", default=None, help="also write the raw figures to this file")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import tensorflow as tf

    # Before any op runs: the same thread count for both runtimes.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from kerastl.export.tflite import convert_tflite
    from kerastl.inputs.image import load_images

    importer = _importer()
    photos = importer.REAL_PHOTOS
    from kerastl.backbones import load_backbone

    state = importer.read_legacy_torch(importer.package_weights()[0])
    backbone = load_backbone(str(ROOT / "saved_models" / importer.NAME))
    classifier = importer.imagenet_classifier(backbone.model, state)
    synsets, names = importer.imagenet_synsets(), importer.imagenet_names()
    files = [importer.photo_path(*key) for key in photos]
    pixels = load_images(files, image_size=(224, 224), channels=3)
    manifest = backbone.manifest
    results = {
        "backbone": f"saved_models/{manifest['name']}",
        "backbone_bytes": manifest["weights"]["bytes"],
        "backbone_parameters": int(sum(np.prod(w.shape) for w in backbone.model.weights)),
        "classifier_parameters": int(sum(np.prod(w.shape) for w in classifier.weights)),
        "names_from": "keras-hub IMAGENET_NAMES" if names else "WordNet ids (keras-hub not installed)",
        "threads": args.threads,
    }

    variants = {"shipped": classifier,
                "imagenet-mean-std": importer.imagenet_classifier(torch_normalised_copy(backbone.model), state),
                "symmetric-padding": importer.imagenet_classifier(symmetric_padding_copy(backbone.model), state)}
    results["variants"] = {}
    for name, model in variants.items():
        rows = top5_rows(model.predict(pixels, verbose=0), synsets, names, photos)
        results["variants"][name] = {"hits": sum(r["hit"] for r in rows), "photos": len(rows),
                                     "mean_accepted_probability": round(
                                         statistics.mean(r["accepted_probability"] for r in rows), 4),
                                     "rows": rows}

    start = time.perf_counter()
    # ImageNet repeats two names (crane the bird and the machine, maillot twice); labels must be distinct.
    labels = [n if (names or synsets).count(n) == 1 else f"{n} ({s})" for n, s in zip(names or synsets, synsets)]
    blob = convert_tflite(classifier, labels=labels)
    results["tflite_convert_seconds"] = round(time.perf_counter() - start, 1)
    results["tflite_bytes"] = len(blob)
    interpreter = Interpreter(model_content=blob, num_threads=args.threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run_tflite(x):
        interpreter.set_tensor(inp["index"], x[None])
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])[0]

    keras_call = tf.function(lambda x: classifier(x, training=False))
    tflite_probabilities = np.stack([run_tflite(x) for x in pixels])
    keras_probabilities = np.concatenate([keras_call(x[None]).numpy() for x in pixels])
    results["tflite_max_abs_diff"] = float(np.abs(tflite_probabilities - keras_probabilities).max())
    results["tflite_top1_agreement"] = float(np.mean(tflite_probabilities.argmax(1) ==
                                                     keras_probabilities.argmax(1)))
    times = {"keras": [], "tflite": []}
    for _ in range(args.rounds):
        for x in pixels:
            start = time.perf_counter()
            keras_call(x[None]).numpy()
            times["keras"].append(time.perf_counter() - start)
            start = time.perf_counter()
            run_tflite(x)
            times["tflite"].append(time.perf_counter() - start)
    results["latency_ms"] = {k: round(1000 * statistics.median(v), 2) for k, v in times.items()}
    results["latency_runs"] = len(times["keras"])

    try:
        from mediapipe import Image as MpImage
        from mediapipe.tasks.python import BaseOptions, vision

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.tflite"
            path.write_bytes(blob)
            options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                                    max_results=5)
            with vision.ImageClassifier.create_from_options(options) as mediapipe:
                results["mediapipe_top1"] = {
                    f"{key[0]}:{key[1]}": mediapipe.classify(MpImage.create_from_file(str(f)))
                    .classifications[0].categories[0].category_name for key, f in zip(photos, files)}
    except ImportError:
        results["mediapipe_top1"] = None

    print(f"backbone {results['backbone']}: {results['backbone_bytes'] / 1e6:.1f} MB "
          f"({results['backbone_parameters']:,} parameters; with the ImageNet classifier "
          f"{results['classifier_parameters']:,}); TFLite float32 classifier {results['tflite_bytes'] / 1e6:.1f} MB")
    print()
    print("| variant | top-5 hits | mean probability of the accepted classes |")
    print("|---|---|---|")
    for name, variant in results["variants"].items():
        print(f"| {name} | {variant['hits']}/{variant['photos']} | {variant['mean_accepted_probability']:.3f} |")
    print()
    print("| photo | top 5 (shipped) | hit |")
    print("|---|---|---|")
    for row in results["variants"]["shipped"]["rows"]:
        top = ", ".join(f"{t['name']} {t['probability']:.2f}" for t in row["top5"])
        print(f"| {row['photo']} | {top} | {'yes' if row['hit'] else 'NO'} |")
    print()
    keras_ms, tflite_ms = results["latency_ms"]["keras"], results["latency_ms"]["tflite"]
    print(f"single-image latency, {args.threads} thread(s), median of {results['latency_runs']}: Keras "
          f"{keras_ms:.1f} ms, TFLite float32 {tflite_ms:.1f} ms ({tflite_ms / keras_ms:.2f}x); TFLite vs Keras "
          f"top-1 agreement {results['tflite_top1_agreement']:.0%}, max |dp| {results['tflite_max_abs_diff']:.1e}")
    if results["mediapipe_top1"]:
        print("MediaPipe ImageClassifier top 1: " + ", ".join(f"{k.split(':')[1]} {v}"
                                                            for k, v in results["mediapipe_top1"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
