"""The `kerashub:<preset>` source: a keras-hub backbone with its preset's preprocessing baked in front of it.

`<preset>` is anything keras-hub's `from_preset` loads: a built-in preset name (`bert_tiny_en_uncased`,
`resnet_18_imagenet`), a Kaggle handle (`kaggle://keras/bert/keras/bert_tiny_en_uncased/2`), a Hugging Face
repository (`hf://google-bert/bert-base-uncased`), or a local directory in any format keras-hub reads: a
keras-hub preset (`Backbone.save_to_preset`), a Hugging Face transformers checkpoint (config.json with a
`model_type`, model.safetensors, the tokenizer files) or a timm one (config.json with an `architecture`,
model.safetensors). keras-hub converts the last two itself.

The input type is read from the backbone's inputs, never from a name:

- One image input: an image backbone. The model takes raw pixels (0-255, fixed height x width x 3): the
  preset's `ImageConverter` rescaling (`x * scale + offset`, per channel) becomes kerastl's own
  `ImagePreprocessing` layer, the marker the image modality claims, then the backbone's graph. The converter's
  resize is the identity at the input size (kerastl's decoder resizes every image to it), so it is left out; the
  input size is the converter's, or `--image-size` for backbones whose size is free.
- Inputs `token_ids`, `padding_mask` (and `segment_ids`): a text encoder (the BERT family). The model takes raw
  strings: the preset's `TextClassifierPreprocessor` (tokenizer and packer, tf.text ops) in a
  `kerastl.inputs.packed_text.PackedTokenizer`, then the encoder, then the mean of `sequence_output` over the
  real tokens (padding masked out). The mean rather than BERT's pooled `[CLS]` output: every keras-hub text
  encoder has a sequence output but not all have a pooler (DistilBERT, RoBERTa), BERT's pooler was trained for
  next-sentence prediction, and a masked mean is the stronger frozen sentence feature (Sentence-BERT, Reimers
  and Gurevych 2019), which `--strategy head` relies on. The unused pooler is left out of the model, so that
  `top:N` counts the transformer layers. The sequence length is `DEFAULT_SEQUENCE_LENGTH` (at most the preset's
  own and the encoder's maximum), or `#sequence_length=N` after the preset.
- Anything else (encoder-decoder audio models such as Whisper and Moonshine, multimodal backbones) is refused in
  one line: kerastl has no keras-hub audio backbone, see README.

Both kinds hold the backbone's layers as a plain functional graph, not keras-hub's `Backbone` subclass, so the
strategies (`head` with cached features, `full`, `top:N`, layer patterns) see its layers as they see any other
backbone's, and `model.keras` reloads in safe mode: keras-hub's layers are registered serializables.

keras-hub, tensorflow-text, safetensors, kagglehub and huggingface-hub are the `kerashub` extra, imported only
here and by a model that holds keras-hub layers. Downloads are keras-hub's own (kagglehub, huggingface_hub) into
their caches; offline (`KERASTL_OFFLINE`) or without network, a preset that is not cached fails at once with one
line naming the source, the cache directory to put it in, and the local-directory alternative.
"""

from __future__ import annotations

import contextlib
import difflib
import io
from pathlib import Path

from kerastl.backbones.models import DEFAULT_IMAGE_SIZE, graph_backbone, refuse_weights
from kerastl.core.records import Backbone
from kerastl.errors import KerastlError, UsageError

#: Default number of word pieces per text (`[CLS]` and `[SEP]` included): BERT's usual fine-tuning length.
DEFAULT_SEQUENCE_LENGTH = 128
#: The packages of the `kerashub` extra.
MODULES = ("keras_hub", "tensorflow_text", "safetensors", "kagglehub", "huggingface_hub")
KAGGLE_HOST = "api.kaggle.com"
HF_HOST = "huggingface.co"


def kerashub_source(spec, rest, *, weights, image_size, from_scratch, trust) -> Backbone:
    """The `kerashub:` resolver: `rest` is a preset (see the module docstring), optionally followed by
    `#sequence_length=N` for text presets.

    Raises:
        UsageError: an unknown preset name (with close names), a malformed handle or option, `--image-size` for a
            text preset or a fixed-size image backbone, or a backbone of an input type kerastl cannot use.
        KerastlError: the extra is missing, the preset is not cached while offline or without network, or
            keras-hub cannot load it (its first line).
    """
    from kerastl import extras

    refuse_weights(spec, weights)
    preset, options = _split_options(spec, rest)
    extras.require("kerashub: backbones", *MODULES)
    keras_hub = _import_keras_hub()
    location = locate_preset(preset, keras_hub)
    backbone = _call(spec, lambda: keras_hub.models.Backbone.from_preset(location, load_weights=not from_scratch))
    weights = "none" if from_scratch else "pretrained"
    inputs = backbone.input
    if isinstance(inputs, dict) and "token_ids" in inputs:
        if image_size is not None:
            raise UsageError(f"--image-size applies to image backbones; {spec} is a text encoder: drop it")
        return _text_backbone(spec, keras_hub, location, backbone, options, weights)
    if not isinstance(inputs, dict) and len(inputs.shape) == 4:
        if options:
            raise UsageError(f"{spec} is an image backbone; #{'&'.join(options)} applies to text presets")
        return _image_backbone(spec, keras_hub, location, backbone, image_size, weights)
    names = sorted(inputs) if isinstance(inputs, dict) else [getattr(inputs, "name", "?")]
    raise UsageError(f"{spec} is a {type(backbone).__name__} taking {', '.join(names)}; kerashub: takes image "
                     "backbones (one image input) and text encoders (token_ids, padding_mask); keras-hub's audio "
                     "models (Whisper, Moonshine) are encoder-decoders kerastl does not use as backbones")


def _split_options(spec, rest) -> tuple[str, dict]:
    """`bert_tiny_en_uncased#sequence_length=64` → `("bert_tiny_en_uncased", {"sequence_length": 64})`.

    Raises:
        UsageError: an empty preset, an unknown option or a non-integer length.
    """
    preset, _, fragment = rest.partition("#")
    preset = preset.strip()
    if not preset:
        raise UsageError("kerashub: needs a preset: a keras-hub preset name, kaggle://..., hf://... or a directory")
    options = {}
    for part in filter(None, fragment.split("&")):
        key, _, value = part.partition("=")
        if key != "sequence_length" or not value.isdigit() or int(value) < 4:
            raise UsageError(f"{spec}: the one option after # is sequence_length=N (N >= 4). Received: #{part}")
        options[key] = int(value)
    return preset, options


def _import_keras_hub():
    # Whatever keras-hub prints does not belong in kerastl's output, which `--json` readers parse.
    with contextlib.redirect_stdout(io.StringIO()):
        import keras_hub
    return keras_hub


def _call(spec, load):
    """`load()`, with keras-hub's errors (ValueError, FileNotFoundError, ImportError, connection errors) as one
    line naming the spec."""
    import re

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return load()
    except KerastlError:
        raise
    except Exception as error:  # noqa: BLE001  (keras-hub and its download clients raise many types)
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Keras' messages carry terminal bold codes
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
        raise KerastlError(f"cannot load {spec} with keras-hub: {first[:300]}") from None


# ------------------------------------------------------------------------------------------------ presets


def locate_preset(preset: str, keras_hub=None) -> str:
    """What keras-hub's `from_preset` is given for `preset`: a local directory as it is; a built-in name as its
    Kaggle handle; a Kaggle or Hugging Face handle as it is when its host answers, or its cache directory when
    offline (`KERASTL_OFFLINE`) or unreachable and the preset is cached there.

    Raises:
        UsageError: an unknown preset name (the message suggests close ones) or a malformed handle.
        KerastlError: a missing directory, or a preset that is not cached while offline or without network
            (one line: where keras-hub downloads it from, the cache directory it goes into, and the local
            directory alternative).
    """
    path = Path(preset).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise UsageError(f"kerashub:{preset} is a file; a keras-hub preset is a directory (config.json and weights)")
    if preset.startswith("hf://"):
        return _huggingface(preset)
    if preset.startswith("kaggle://"):
        return _kaggle(preset, preset)
    if "://" in preset:
        raise UsageError(f"kerashub:{preset}: keras-hub presets are names, kaggle://..., hf://... or directories")
    if "/" in preset or preset.startswith((".", "~")):
        raise KerastlError(f"keras-hub preset directory not found: {preset}")
    if keras_hub is None:
        keras_hub = _import_keras_hub()
    builtin = keras_hub.models.Backbone.presets  # every backbone's built-in presets, with their Kaggle handles
    if preset not in builtin:
        close = difflib.get_close_matches(preset, list(builtin), n=3)
        hint = f" Close names: {', '.join('kerashub:' + c for c in close)}." if close else ""
        raise UsageError(f"unknown keras-hub preset '{preset}'.{hint} keras-hub lists its presets with "
                         "keras_hub.models.Backbone.presets; a directory needs a path (./NAME)")
    return _kaggle(preset, builtin[preset]["kaggle_handle"])


def _unreachable(preset, host) -> str | None:
    """Why `preset` cannot be downloaded now ("offline (KERASTL_OFFLINE is set)", "cannot reach HOST"), or
    None."""
    from kerastl.net import is_offline, reachable

    if is_offline():
        return "offline (KERASTL_OFFLINE is set)"
    if not reachable(host):
        return f"cannot reach {host} (no network?)"
    return None


def _not_cached(preset, reason, source, cache, fetch) -> KerastlError:
    return KerastlError(f"{reason} and the keras-hub preset {preset} is not cached: keras-hub downloads it from "
                        f"{source} into {cache}; run `{fetch}` on a connected machine and copy that directory "
                        f"there, or pass kerashub:<a local copy of the preset directory>")


def _kaggle(preset, handle) -> str:
    """A Kaggle handle, or its kagglehub cache directory when it cannot be downloaded and is cached."""
    from kagglehub.config import get_cache_folder

    parts = handle.removeprefix("kaggle://").split("/")
    if len(parts) not in (4, 5) or not all(parts):
        raise UsageError(f"kerashub:{preset}: Kaggle handles are kaggle://OWNER/MODEL/FRAMEWORK/VARIATION[/VERSION]")
    models = Path(get_cache_folder()) / "models"
    reason = _unreachable(preset, KAGGLE_HOST)
    if reason is None:
        return handle
    if len(parts) == 4:
        # Only the Kaggle API knows the latest version; what is cached is listed.
        folder = models.joinpath(*parts)
        cached = sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file()) if folder.is_dir() else []
        listed = f" (cached: {', '.join(cached)})" if cached else ""
        raise KerastlError(f"{reason}: {handle} names no version, which only the Kaggle API can resolve; name one, "
                           f"{handle}/N{listed}, or pass kerashub:<a local preset directory>")
    cache = models.joinpath(*parts)
    if (cache / "config.json").is_file():
        return str(cache)
    raise _not_cached(preset, reason, handle, cache, f"python -c \"import kagglehub; "
                                                      f"kagglehub.model_download('{'/'.join(parts)}')\"")


def _huggingface(preset) -> str:
    """An `hf://` handle, or its snapshot in the Hugging Face cache when it cannot be downloaded and is cached."""
    import huggingface_hub
    from huggingface_hub import constants

    repo = preset.removeprefix("hf://").strip("/")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UsageError(f"kerashub:{preset}: Hugging Face handles are hf://OWNER/NAME")
    reason = _unreachable(preset, HF_HOST)
    if reason is None:
        return preset
    cached = huggingface_hub.try_to_load_from_cache(repo, "config.json")
    if isinstance(cached, str):
        return str(Path(cached).parent)
    cache = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    raise _not_cached(preset, reason, f"https://{HF_HOST}/{repo}", cache,
                      f"python -c \"import huggingface_hub; huggingface_hub.snapshot_download('{repo}')\"")


def _graph_name(backbone) -> str:
    """The backbone's class in snake case (`BertBackbone` → `bert_backbone`, `ResNetBackbone` →
    `res_net_backbone`, as Keras names a first instance): its nested graph's name, the same in every process
    (Keras numbers later instances `_1`, `_2`, ...), so that `--cut outer/inner` and layer patterns stay put."""
    import re

    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", type(backbone).__name__)  # Keras' own to_snake_case
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


# ------------------------------------------------------------------------------------------------ images


def _image_backbone(spec, keras_hub, location, backbone, image_size, weights) -> Backbone:
    import keras

    from kerastl.inputs.image import ImagePreprocessing

    converter = _call(spec, lambda: keras_hub.layers.ImageConverter.from_preset(location))
    if converter is None:
        raise KerastlError(f"{spec} has no image converter (its pixels' scale and offset), so kerastl cannot know "
                           "what the backbone expects; save one with the preset (ImageConverter.save_to_preset)")
    fixed = tuple(backbone.input.shape[1:3])
    size = _image_size(spec, image_size, converter.image_size, fixed)
    preprocess = ImagePreprocessing(**_rescaling(spec, converter), name="preprocessing")
    graph = keras.Model(backbone.input, backbone.output, name=_graph_name(backbone))
    if isinstance(graph.output, dict):
        raise UsageError(f"{spec} returns several outputs ({', '.join(sorted(graph.output))}); kerashub: takes "
                         "image backbones with one feature output")
    inputs = keras.Input((*size, int(backbone.input.shape[-1] or 3)), name="pixels")
    converter_size = list(converter.image_size) if converter.image_size else None
    resize = ("kerastl's decoder resizes each image to the input size (bilinear, antialiased); the converter's "
              "resize is the identity there and is not in the model")
    if converter_size and converter_size != list(size):
        resize += f"; the backbone runs at {size[0]}x{size[1]} (--image-size), not the converter's " \
                  f"{converter_size[0]}x{converter_size[1]}"
    record = {**preprocess.to_record(), "converter": type(converter).__name__,
              "converter_image_size": converter_size, "interpolation": converter.interpolation, "resize": resize}
    return graph_backbone(spec, "image", inputs, graph(preprocess(inputs)), preprocessing=record, weights=weights,
                          name=f"kerashub_{_graph_name(backbone)}", ranks=(3, 4))


def _image_size(spec, requested, converter_size, fixed) -> tuple[int, int]:
    """The input (height, width): the backbone's own size if it is built for one (position embeddings, ViT),
    else `--image-size`, else the converter's size, else `DEFAULT_IMAGE_SIZE`.

    Raises:
        UsageError: an `--image-size` other than the fixed size of a backbone built for one.
    """
    fixed = None if None in fixed else tuple(int(d) for d in fixed)
    if requested is not None:
        size = (int(requested), int(requested))
        if fixed is not None and size != fixed:
            raise UsageError(f"{spec} takes {fixed[0]}x{fixed[1]} images only; drop --image-size {requested}")
        return size
    if fixed is not None:
        return fixed
    if converter_size and None not in converter_size:
        return int(converter_size[0]), int(converter_size[1])
    return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE


def _rescaling(spec, converter) -> dict:
    """`ImagePreprocessing` arguments doing what the converter's `x * scale + offset` does (scale and offset
    scalars or per channel): `scale` alone for a single scale, `(x * scale - mean)` with `mean = -offset` for a
    single scale and an offset, else `(x - mean) / std` with `mean = -offset / scale`, `std = 1 / scale`.

    Raises:
        KerastlError: a zero scale, or a per-channel value for other than 1 or 3 channels.
    """
    def channels(value):
        if value is None:
            return None
        values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        if len(values) not in (1, 3):
            raise KerastlError(f"{spec}: the image converter's scale/offset {value} is not for 1 or 3 channels")
        return values

    scale, offset = channels(converter.scale), channels(converter.offset)
    if scale is None and offset is None:
        return {"mode": "none"}
    if scale is not None and any(s == 0 for s in scale):
        raise KerastlError(f"{spec}: the image converter's scale {converter.scale} has a zero")
    if scale is None or len(scale) == 1:
        single = 1.0 if scale is None else scale[0]
        return {"mode": "scale", "scale": single, "mean": None if offset is None else [-o for o in offset]}
    offset = offset or [0.0]
    offset = offset * 3 if len(offset) == 1 else offset
    return {"mode": "scale", "scale": 1.0, "mean": [-o / s for o, s in zip(offset, scale)],
            "std": [1.0 / s for s in scale]}


# ------------------------------------------------------------------------------------------------ text


def _text_backbone(spec, keras_hub, location, backbone, options, weights) -> Backbone:
    import keras
    import tensorflow as tf

    from kerastl.inputs.packed_text import PACKED_INPUTS, PackedTokenizer
    from kerastl.inputs.text import MaskedAveragePooling1D

    preprocessor = _call(spec, lambda: keras_hub.models.TextClassifierPreprocessor.from_preset(location))
    preprocessor.sequence_length = _sequence_length(spec, options, preprocessor, backbone)
    wanted = [key for key in PACKED_INPUTS if key in backbone.input]
    given = set(preprocessor(tf.constant(["a"])))
    if not set(backbone.input) <= set(wanted) <= given:
        raise UsageError(f"{spec}: the encoder takes {', '.join(sorted(backbone.input))} and its preprocessor gives "
                         f"{', '.join(sorted(given))}; kerashub: text encoders take token_ids and padding_mask "
                         "(and segment_ids)")
    if "padding_mask" not in wanted:
        raise UsageError(f"{spec}: the encoder takes no padding_mask, which the masked mean over tokens needs")
    output = backbone.output
    sequence = output.get("sequence_output") if isinstance(output, dict) else output
    if sequence is None or len(sequence.shape) != 3:
        raise UsageError(f"{spec} gives no (batch, tokens, features) sequence output; kerashub: text encoders "
                         "must (BERT's sequence_output)")
    # The graph up to the sequence output only: BERT's pooler, unused, would count as a layer for top:N.
    encoder = keras.Model(backbone.input, sequence, name=_graph_name(backbone))
    texts = keras.Input((), dtype="string", name="texts")
    packer = PackedTokenizer(preprocessor, outputs=wanted, name="tokenizer")
    packed = dict(zip(packer.packed_keys, packer(texts)))
    features = MaskedAveragePooling1D(name="masked_mean")([encoder({k: packed[k] for k in wanted}),
                                                          packed["padding_mask"]])
    record = {**packer.record(), "encoder": type(backbone).__name__,
              "pooling": "mean of sequence_output over the tokens of padding_mask"}
    return graph_backbone(spec, "text", texts, features, preprocessing=record, weights=weights,
                          name=f"kerashub_{_graph_name(backbone)}", ranks=(2,))


def _sequence_length(spec, options, preprocessor, backbone) -> int:
    """`#sequence_length=N`, else `DEFAULT_SEQUENCE_LENGTH` capped at the preset's own length and the encoder's
    maximum.

    Raises:
        UsageError: N above the encoder's maximum (its position embeddings).
    """
    maximum = getattr(backbone, "max_sequence_length", None)
    if "sequence_length" in options:
        length = options["sequence_length"]
        if maximum is not None and length > int(maximum):
            raise UsageError(f"{spec}: sequence_length={length} exceeds the encoder's maximum of {maximum}")
        return length
    caps = [DEFAULT_SEQUENCE_LENGTH, getattr(preprocessor, "sequence_length", None), maximum]
    return int(min(int(c) for c in caps if c))


def describe() -> str:
    """One line for `kerastl backbones`: the spec forms, and whether the extra is installed."""
    from kerastl import extras

    absent = extras.missing(*MODULES)
    state = f" (needs pip install \"kerastl[kerashub]\": {', '.join(absent)} missing)" if absent else ""
    return ("keras-hub presets: kerashub:<name>|kaggle://...|hf://...|<dir> (keras-hub preset, Hugging Face "
            "transformers or timm checkpoint): image backbones with their image converter, text encoders (BERT "
            f"family) with their tokenizer, #sequence_length=N (default {DEFAULT_SEQUENCE_LENGTH}){state}.")
