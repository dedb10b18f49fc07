"""kerastl's own architectures: the backbones `kerastl pretrain --arch` builds besides keras.applications.

- `smallnet-s|m|l`: a small convolutional family sized for low-resolution input (28–64 px) that trains fast on
  a CPU. VGG-style stages of two 3×3 convolutions with BatchNormalization and ReLU, halving the resolution
  between stages with max pooling. At 28×28 the `s` variant costs about 29 MFLOP·2 per image forward. Images
  and (on log-mel spectrograms, `build_audio_backbone`) audio use it.
- `textcnn-s|m|l`: the text encoders of `build_text_backbone` (see `kerastl.inputs.text`).
"""

from __future__ import annotations

from kerastl.errors import UsageError

# name -> channel widths per stage
SMALLNETS = {
    "smallnet-s": (32, 64, 128),
    "smallnet-m": (48, 96, 192),
    "smallnet-l": (64, 128, 256),
}


def smallnet_features(name: str, x, *, name_prefix: str = ""):
    """Applies the feature extractor `name` (no pooling, no classifier) to the symbolic tensor `x` and returns
    its feature map, so that the layers join the caller's functional model directly (no nested model).

    Raises:
        UsageError: unknown name, or an input smaller than 8 px.
    """
    import keras

    if name not in SMALLNETS:
        raise UsageError(f"unknown small architecture '{name}'; choose one of {', '.join(SMALLNETS)}")
    if min(x.shape[1:3]) < 8:
        raise UsageError(f"{name} needs inputs of at least 8x8. Received: {tuple(x.shape[1:])}")
    widths = SMALLNETS[name]
    for stage, width in enumerate(widths, start=1):
        if stage > 1:
            x = keras.layers.MaxPooling2D(2, name=f"{name_prefix}pool{stage - 1}")(x)
        for conv in (1, 2):
            tag = f"{name_prefix}stage{stage}_conv{conv}"
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=tag)(x)
            x = keras.layers.BatchNormalization(name=f"{tag}_bn")(x)
            x = keras.layers.ReLU(name=f"{tag}_relu")(x)
    return x


def build_audio_backbone(arch: str, *, sample_rate: int, num_samples: int, mean: float = 0.0, std: float = 1.0,
                         front_end: dict | None = None):
    """Raw waveforms → `LogMelSpectrogram` → `arch` features (a time x frequency feature map), one flat
    functional model (its layers are its own, for top:N and --cut).

    Raises:
        UsageError: an unknown architecture, or a clip too short for it.
    """
    import keras

    from kerastl.inputs.audio import AUDIO_ARCHS, DEFAULT_FRONT_END, LogMelSpectrogram

    if arch not in AUDIO_ARCHS:
        raise UsageError(f"unknown audio --arch '{arch}'; use one of {', '.join(AUDIO_ARCHS)}")
    options = dict(DEFAULT_FRONT_END, **(front_end or {}))
    inputs = keras.Input((int(num_samples),), name="waveforms")
    front = LogMelSpectrogram(sample_rate=sample_rate, mean=mean, std=std, name="log_mel", **options)
    if front.num_frames(num_samples) < 8:
        raise UsageError(f"clips of {num_samples} samples give {front.num_frames(num_samples)} frames; "
                         f"{arch} needs at least 8: use longer clips (--clip-seconds)")
    features = smallnet_features(arch, front(inputs))
    return keras.Model(inputs, features, name=f"audio_{arch.replace('-', '_')}")


def build_text_backbone(arch: str, vocabulary, *, sequence_length: int | None = None, standardize: str | None = None):
    """Raw strings (batch,) → tokenizer → `arch` encoder → a feature vector (batch, width). The tokenizer
    standardizes as `standardize` says (default `kerastl.inputs.text.STANDARDIZE`; `LEGACY_STANDARDIZE` for the
    rule of the backbones built before it).

    Raises:
        UsageError: an unknown architecture or an empty vocabulary.
    """
    import keras

    from kerastl.inputs.text import (
        DEFAULT_SEQUENCE_LENGTH,
        STANDARDIZE,
        TEXT_ARCHS,
        WORD_DROPOUT,
        MaskedAveragePooling1D,
        make_tokenizer,
    )

    sequence_length = DEFAULT_SEQUENCE_LENGTH if sequence_length is None else sequence_length

    if arch not in TEXT_ARCHS:
        raise UsageError(f"unknown text --arch '{arch}'; use one of {', '.join(TEXT_ARCHS)}")
    if not vocabulary:
        raise UsageError("the text backbone needs a vocabulary; the pre-training corpus gave none")
    embed, width = TEXT_ARCHS[arch]
    tokenizer = make_tokenizer(list(vocabulary), vocabulary_size=len(vocabulary) + 2,
                               sequence_length=sequence_length, standardize=standardize or STANDARDIZE)
    inputs = keras.Input((), dtype="string", name="texts")
    ids = tokenizer(inputs)
    embedded = keras.layers.Embedding(len(vocabulary) + 2, embed, name="embedding")(ids)
    if arch in WORD_DROPOUT:
        # Drops whole words (every channel of a token) while training.
        embedded = keras.layers.Dropout(WORD_DROPOUT[arch], noise_shape=(None, int(sequence_length), 1),
                                        name="word_dropout")(embedded)
    x = keras.layers.Conv1D(width, 3, padding="same", activation="relu", name="conv1")(embedded)
    x = keras.layers.Conv1D(width, 3, padding="same", dilation_rate=2, activation="relu", name="conv2")(x)
    # The mean word vector beside the mean phrase features: a new output layer on frozen features can then
    # weigh words it never saw in its few examples by their pretrained neighbours.
    features = keras.layers.Concatenate(name="features")([
        MaskedAveragePooling1D(name="mean_words")([embedded, ids]),
        MaskedAveragePooling1D(name="mean_phrases")([x, ids])])
    return keras.Model(inputs, features, name=f"text_{arch.replace('-', '_')}")
