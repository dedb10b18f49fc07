"""What `kerastl inspect` and `kerastl backbones` show: a fine-tuned model's or a backbone's layers, and every
backbone kerastl knows. It loads what it describes (through `kerastl.train` and `kerastl.backbones`) and lays it
out with `kerastl.reporting.inspect`, so it sits above both, beside the CLI."""

from __future__ import annotations

from pathlib import Path

from kerastl.reporting.inspect import format_table, layer_table


def describe_target(target: str, *, image_size=None, trust: bool = False) -> list[str]:
    """The layer table of a fine-tuned model (directory or `.keras` file) or of a backbone spec.

    Keras applications are built without downloading weights: the architecture is what is inspected.

    Raises:
        KerastlError / UsageError: as `load_classifier` or `load_backbone`.
    """
    from kerastl.backbones import load_backbone
    from kerastl.train.evaluate import MODEL_FILE, load_classifier

    path = Path(target)
    if (path.is_dir() and (path / MODEL_FILE).is_file()) or (path.is_file() and path.suffix == ".keras"):
        model, labels = load_classifier(path, trust=trust)
        title = f"{target}: {len(labels)} classes"
    else:
        backbone = load_backbone(target, weights="none" if target.startswith("keras:") else None,
                                 image_size=image_size, trust=trust)
        model = backbone.model
        title = (f"{backbone.spec}: {backbone.modality}, input {backbone.input_shape}, "
                 f"{backbone.feature_width} features, preprocessing {backbone.preprocessing.get('mode')}")
    rows = [(n, t, s, f"{p:,}", "yes" if tr else "no") for n, t, s, p, tr in layer_table(model)]
    total = sum(int(w.numpy().size) for w in model.weights)
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    return [title, *format_table(rows, ("layer", "type", "output shape", "params", "trainable")),
            f"total params {total:,}, trainable {trainable:,}"]


def _input_text(spec: dict) -> str:
    """A manifest's input in a few characters: 28x28x1, 16000 @ 16000 Hz, string."""
    if spec.get("dtype") == "string":
        return "string"
    shape = "x".join(str(d) for d in spec.get("shape", []))
    return f"{shape} @ {spec['sample_rate']} Hz" if spec.get("sample_rate") else shape


def _default_text(manifest: dict) -> str:
    """`default`, or `default (rgb)` for a default that applies to data of one colour (see
    `kerastl.backbones.default_backbone_spec`)."""
    if not manifest.get("default"):
        return ""
    record = manifest.get("input")
    color = record.get("color") if isinstance(record, dict) else None
    return f"default ({color})" if color else "default"


def describe_backbones() -> list[str]:
    """Our `saved_models/` backbones (with modality, input and pretraining source), then Keras applications, then
    the TF-Hub and keras-hub sources (which need no import to describe)."""
    from kerastl.backbones import (
        KERAS_PREPROCESSING,
        _keras_module,
        keras_application_names,
        list_saved_backbones,
    )
    from kerastl.backbones.kerashub import describe as kerashub_line

    lines = ["Pretrained backbones in saved_models/ (use the path as --backbone):"]
    saved = list_saved_backbones()
    rows = []
    for m in saved:
        pre = m.get("pretraining", {})
        # An imported backbone (not pretrained by kerastl) names its source without a class count.
        classes = f" ({pre['classes']} classes)" if pre.get("classes") is not None else ""
        rows.append((m["path"], m.get("modality", "?"), _input_text(m["input"]),
                     str(m.get("feature_width", "?")), f"{pre.get('source', '?')}{classes}",
                     _default_text(m)))
    if rows:
        lines += ["  " + r for r in format_table(rows, ("spec", "modality", "input", "features", "pretrained on",
                                                         ""))]
    else:
        lines.append("  (none yet: run `kerastl pretrain`)")
    import keras

    lines.append("")
    lines.append("Keras applications (image; --weights imagenet|none|PATH; any --image-size):")
    rows = [(f"keras:{name}", "image",
             KERAS_PREPROCESSING[_keras_module(getattr(keras.applications, name))]) for name in
            keras_application_names()]
    lines += ["  " + r for r in format_table(rows, ("spec", "modality", "preprocessing"))]
    lines.append("")
    lines.append("TF-Hub TF2 SavedModels: hub:<url-or-local-dir>: image feature vectors or classifiers, text "
                 "embeddings taking strings, and audio modules taking 16 kHz waveforms, declared as "
                 "hub:<url-or-local-dir>#modality=audio.")
    lines.append("")
    lines.append(kerashub_line())
    return lines
