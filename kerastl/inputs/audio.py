"""Audio input: WAV files in, raw waveforms through the model, a log-mel front end baked into it.

An audio backbone takes raw mono waveforms, float32 in [-1, 1] of shape (batch, samples) at its sample rate,
as image backbones take raw pixels. Its first layer, `LogMelSpectrogram`, turns them into standardised
log-mel spectrograms, so that an exported SavedModel or TFLite file takes waveforms too and the front end
cannot drift between training and deployment.

The front end is built from ops that every TFLite runtime has: the short-time Fourier transform is one strided
`Conv1D` whose fixed kernels are the Hann-windowed cosine and sine of each frequency bin (a DFT as a
convolution), followed by a square, a matmul with the mel filter bank and a log. `tf.signal.stft` would need
TFLite's RFFT and complex ops; this needs none, and matches it to float precision (tests/test_audio.py).

Files: `read_wav` reads PCM or float WAV files of any sample rate and channel count, mixes them down to mono,
resamples to the backbone's rate (polyphase, scipy) and centre-crops or zero-pads to its length.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
from keras import ops

from kerastl.errors import KerastlError
from kerastl.inputs.sfx_mel import SfxLogMel
from kerastl.inputs.speech_mel import SpeechEmbeddingMel

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_CLIP_SECONDS = 1.0
# 25 ms windows every 20 ms, 40 mel bands from 60 Hz to 7.6 kHz: the usual keyword-spotting front end,
# at half the frame rate of speech recognisers (word classes need less time resolution).
DEFAULT_FRONT_END = {"frame_length": 400, "frame_step": 320, "num_mels": 40, "fmin": 60.0, "fmax": 7600.0}
LOG_OFFSET = 1e-3  # a noise floor near -50 dBFS: digital silence and a quiet room look alike
# Architectures that `kerastl pretrain` builds on the log-mel spectrogram: the kerastl.backbones.archs family
# (2-D convolutions over time x frequency).
AUDIO_ARCHS = ("smallnet-s", "smallnet-m", "smallnet-l")


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype="float64") / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype="float64") / 2595.0) - 1.0)


def mel_filter_bank(num_bins: int, sample_rate: int, num_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters, float32 of shape (num_bins, num_mels): edges evenly spaced on the HTK mel scale
    and triangles linear in Hz between them (librosa's `htk=True` filters, unnormalised).
    `tf.signal.linear_to_mel_weight_matrix` has the same edges but draws the triangles linear in mel, which
    differs by under 0.01 (tests/test_audio.py)."""
    freqs = np.linspace(0.0, sample_rate / 2.0, num_bins)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), num_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower[None]) / (centre - lower)[None]
    falling = (upper[None] - freqs[:, None]) / (upper - centre)[None]
    return np.maximum(0.0, np.minimum(rising, falling)).astype("float32")


def dft_kernel(frame_length: int) -> np.ndarray:
    """Conv1D kernel (frame_length, 1, 2 * bins): Hann-windowed cos and -sin of each DFT bin, so that a strided
    convolution of a waveform gives the real and imaginary parts of its STFT."""
    n = np.arange(frame_length)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / frame_length)  # periodic Hann, as tf.signal.hann_window
    bins = frame_length // 2 + 1
    angle = 2.0 * np.pi * np.outer(n, np.arange(bins)) / frame_length
    kernel = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) * window[:, None]
    return kernel[:, None, :].astype("float32")


@keras.saving.register_keras_serializable(package="kerastl")
class LogMelSpectrogram(keras.layers.Layer):
    """Raw waveforms (batch, samples) in [-1, 1] → standardised log-mel spectrograms (batch, frames, mels, 1).

    `(log(mel_power + log_offset) - mean) / std`, with `mean` and `std` the scalars measured on the pre-training data.
    The layer has no weights: the DFT kernel and the mel filter bank are constants rebuilt from the config.
    It always computes in float32 (a bfloat16 STFT loses the quiet parts of a recording).

    Raises:
        ValueError: a non-positive size, `fmax` above the Nyquist frequency, or `std` of 0.
    """

    def __init__(self, sample_rate=DEFAULT_SAMPLE_RATE, frame_length=400, frame_step=320, num_mels=40,
                 fmin=60.0, fmax=7600.0, mean=0.0, std=1.0, log_offset=LOG_OFFSET, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if min(int(sample_rate), int(frame_length), int(frame_step), int(num_mels)) <= 0:
            raise ValueError(f"LogMelSpectrogram sizes must be positive. Received: sample_rate={sample_rate}, "
                             f"frame_length={frame_length}, frame_step={frame_step}, num_mels={num_mels}")
        if not 0 <= float(fmin) < float(fmax) <= sample_rate / 2:
            raise ValueError(f"LogMelSpectrogram needs 0 <= fmin < fmax <= sample_rate / 2. Received: "
                             f"fmin={fmin}, fmax={fmax}, sample_rate={sample_rate}")
        if float(std) == 0:
            raise ValueError("LogMelSpectrogram std must be non-zero. Received: std=0")
        self.sample_rate = int(sample_rate)
        self.frame_length = int(frame_length)
        self.frame_step = int(frame_step)
        self.num_mels = int(num_mels)
        self.fmin = float(fmin)
        self.fmax = float(fmax)
        self.mean = float(mean)
        self.std = float(std)
        self.log_offset = float(log_offset)
        self._bins = self.frame_length // 2 + 1
        self._kernel = dft_kernel(self.frame_length)
        self._filters = mel_filter_bank(self._bins, self.sample_rate, self.num_mels, self.fmin, self.fmax)

    def num_frames(self, samples: int) -> int:
        return 1 + (int(samples) - self.frame_length) // self.frame_step

    def call(self, inputs):
        x = ops.expand_dims(ops.cast(inputs, "float32"), -1)
        spectrum = ops.conv(x, ops.convert_to_tensor(self._kernel), strides=self.frame_step, padding="valid")
        real, imag = spectrum[..., : self._bins], spectrum[..., self._bins:]
        mel = ops.matmul(real * real + imag * imag, ops.convert_to_tensor(self._filters))
        logmel = (ops.log(mel + self.log_offset) - self.mean) / self.std
        return ops.expand_dims(logmel, -1)

    def forward_flops(self) -> int:
        """FLOPs per example: the DFT convolution and the mel matmul (for pre-training's compute report)."""
        frames = self.num_frames(int(self.input.shape[1]))
        return 2 * frames * (self.frame_length * 2 * self._bins + self._bins * self.num_mels)

    def compute_output_shape(self, input_shape):
        frames = None if input_shape[1] is None else self.num_frames(input_shape[1])
        return (input_shape[0], frames, self.num_mels, 1)

    def get_config(self):
        config = super().get_config()
        config.update(sample_rate=self.sample_rate, frame_length=self.frame_length, frame_step=self.frame_step,
                      num_mels=self.num_mels, fmin=self.fmin, fmax=self.fmax, mean=self.mean, std=self.std,
                      log_offset=self.log_offset)
        return config

    def to_record(self) -> dict:
        """The JSON-able preprocessing record that manifests carry."""
        return {"mode": "log_mel", "sample_rate": self.sample_rate, "frame_length": self.frame_length,
                "frame_step": self.frame_step, "num_mels": self.num_mels, "fmin": self.fmin, "fmax": self.fmax,
                "log_offset": self.log_offset, "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="kerastl")
class Waveform(keras.layers.Layer):
    """Identity on raw waveforms that records their sample rate in the model, for backbones whose front end
    is opaque (TF-Hub audio modules): whoever loads the model learns at which rate to feed it."""

    def __init__(self, sample_rate=DEFAULT_SAMPLE_RATE, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)

    def call(self, inputs):
        return ops.cast(inputs, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "sample_rate": self.sample_rate}

    def to_record(self) -> dict:
        return {"mode": "waveform", "sample_rate": self.sample_rate}


# The layers that compute a spectrogram from raw waveforms inside a model: each records the sample rate, and
# export keeps them float32 under dynamic-range quantization (`kerastl.export.quantize.front_end_layers`).
FRONT_END_LAYERS = (LogMelSpectrogram, SpeechEmbeddingMel, SfxLogMel)
# The layers that mark a model's input as waveforms at a sample rate: the front ends, and `Waveform` for
# models whose front end is opaque.
MARKER_LAYERS = (*FRONT_END_LAYERS, Waveform)


def sample_rate_of(model) -> int | None:
    """The sample rate a model's audio input expects (from its first `MARKER_LAYERS` layer)."""
    from kerastl.core.graph import walk_layers

    for layer in walk_layers(model):
        if isinstance(layer, MARKER_LAYERS):
            return layer.sample_rate
    return None


def preprocessing_record(model) -> dict:
    """The front-end record of an audio model (its first `MARKER_LAYERS` layer)."""
    from kerastl.core.graph import walk_layers

    for layer in walk_layers(model):
        if isinstance(layer, MARKER_LAYERS):
            return layer.to_record()
    return {"mode": "none"}


# ------------------------------------------------------------------------------------------------ files


def _to_float(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        return (data.astype("float32") - 128.0) / 128.0
    if np.issubdtype(data.dtype, np.integer):
        return data.astype("float32") / float(-np.iinfo(data.dtype).min)
    return data.astype("float32")


def fit_length(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """Centre-crops or symmetrically zero-pads a 1-D waveform to `num_samples`."""
    n = len(waveform)
    if n >= num_samples:
        start = (n - num_samples) // 2
        return waveform[start:start + num_samples]
    before = (num_samples - n) // 2
    return np.pad(waveform, (before, num_samples - n - before))


def read_wav(path, sample_rate: int, num_samples: int) -> np.ndarray:
    """A WAV file as float32 mono in [-1, 1], resampled to `sample_rate`, cropped or padded to `num_samples`.

    Channels are averaged (stereo is mixed down). Integer PCM is scaled by its full range, float WAV kept.

    Raises:
        KerastlError: the file is not a readable WAV file, holds no samples, or holds NaN/infinite samples.
    """
    import warnings

    from scipy import signal
    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns about unknown chunks (LIST, etc.), which it skips
            rate, data = wavfile.read(str(path))
    except Exception as error:  # noqa: BLE001  (ValueError, EOFError, struct.error: damaged or non-WAV files)
        raise KerastlError(f"cannot read {path} as WAV: {str(error).strip().splitlines()[0][:150] or 'unknown'}"
                           ) from None
    data = _to_float(np.asarray(data))
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.size == 0:
        raise KerastlError(f"{path} holds no audio samples")
    if not np.all(np.isfinite(data)):
        # A float WAV can hold NaN or infinity; one such sample turns the whole training loss into NaN.
        raise KerastlError(f"{path} holds NaN or infinite samples; re-export the recording")
    if rate != sample_rate:
        common = math.gcd(int(rate), int(sample_rate))
        data = signal.resample_poly(data, sample_rate // common, int(rate) // common).astype("float32")
    return np.clip(fit_length(data, num_samples), -1.0, 1.0).astype("float32")


def decode_error(path) -> str | None:
    """Why `path` cannot be read as audio, or None."""
    try:
        read_wav(path, DEFAULT_SAMPLE_RATE, 16)
    except KerastlError as error:
        return str(error).split(": ", 1)[-1][:200]
    return None


def load_waveforms(files, *, sample_rate: int, num_samples: int, workers: int | None = None) -> np.ndarray:
    """Reads `files` into one float32 array (N, num_samples), in order (see `read_wav`)."""
    files = [Path(f) for f in files]
    if not files:
        return np.zeros((0, num_samples), "float32")
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        waves = list(pool.map(lambda f: read_wav(f, sample_rate, num_samples), files))
    return np.stack(waves)


def wav_reader(sample_rate: int, num_samples: int):
    """`(read, signature)` for streaming: `read(path)` is a graph function giving one WAV file's waveform as
    `read_wav` gives it (float32, (num_samples,)), `signature` its tf.TensorSpec. The file is read in Python
    (`tf.numpy_function`), as `load_waveforms` reads it, so both give the same samples."""
    import tensorflow as tf

    def read_one(path):
        return read_wav(path.decode("utf-8", "surrogateescape"), sample_rate, num_samples)

    def read(path):
        wave = tf.numpy_function(read_one, [path], tf.float32, stateful=False)
        return tf.ensure_shape(wave, (num_samples,))

    return read, tf.TensorSpec((num_samples,), tf.float32)


def augment_waveforms(x, key):
    """The audio augmentation, the only one (in memory and streaming alike): a graph function on a batch
    (B, samples) giving each waveform a random time shift (up to a tenth of the clip, at most 1,600 samples:
    100 ms at 16 kHz; zero filled) and gain (-6 to +3 dB), clipped to [-1, 1].

    Stateless: the draws are `tf.random.stateless_uniform` keyed on `key` (a shape-[2] int seed,
    `kerastl.data.augmentation_key(seed, epoch, batch)`), so the same key gives the same batch bit for bit, in
    a resumed process too. Training set only, so exported models carry none of it.
    """
    import tensorflow as tf

    batch, samples = tf.shape(x)[0], tf.shape(x)[1]
    u = tf.random.stateless_uniform([batch, 2], seed=key)
    max_shift = tf.minimum(1600, samples // 10)
    span = tf.cast(2 * max_shift + 1, tf.float32)
    shift = tf.minimum(tf.cast(tf.floor(u[:, 0] * span), tf.int32), 2 * max_shift) - max_shift
    index = tf.range(samples)[None, :] - shift[:, None]
    valid = (index >= 0) & (index < samples)
    shifted = tf.where(valid, tf.gather(x, tf.clip_by_value(index, 0, samples - 1), batch_dims=1), 0.0)
    gain = 10.0 ** ((u[:, 1:] * 9.0 - 6.0) / 20.0)
    return tf.clip_by_value(shifted * gain, -1.0, 1.0)




# ------------------------------------------------------------------------------------------ backbones




def logmel_statistics(waveforms, front_end: dict | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE):
    """Mean and std (scalars) of the log-mel energies of a batch of waveforms: the standardisation that
    pre-training bakes into the front end."""
    options = dict(DEFAULT_FRONT_END, **(front_end or {}))
    raw = LogMelSpectrogram(sample_rate=sample_rate, **options)
    values = np.asarray(raw(np.asarray(waveforms, "float32")))
    return round(float(values.mean()), 5), round(max(float(values.std()), 1e-3), 5)


def band_statistics(waveforms, sample_rate: int = DEFAULT_SAMPLE_RATE, batch_size: int = 256) -> np.ndarray:
    """(N, 2 * bands): the mean and the standard deviation over time of each band of the default log-mel
    spectrogram (`DEFAULT_FRONT_END`) of each waveform: the classical audio baseline's features, which ignore
    when in the clip a sound happens. Below 16 kHz the bands stop at the Nyquist frequency."""
    options = dict(DEFAULT_FRONT_END, fmax=min(DEFAULT_FRONT_END["fmax"], sample_rate / 2))
    raw = LogMelSpectrogram(sample_rate=sample_rate, **options)
    rows = []
    waveforms = np.asarray(waveforms, "float32")
    for start in range(0, len(waveforms), batch_size):
        logmel = np.asarray(raw(waveforms[start:start + batch_size]))[..., 0]  # (batch, frames, bands)
        rows.append(np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 2 * DEFAULT_FRONT_END["num_mels"]), "float32")


@keras.saving.register_keras_serializable(package="kerastl")
class PerWaveform(keras.layers.Layer):
    """Runs a module that takes ONE waveform (samples,), as YAMNet does, on each waveform of a batch
    (`tf.map_fn`), and returns the frame-wise output at `output_index` averaged over frames: (batch, width).

    For modules returning several outputs (YAMNet: scores (frames, 521), embeddings (frames, 1024), log-mel
    (frames, 64)), `output_index=None` picks the widest one, the embeddings.

    Raises:
        KerastlError: the module's outputs are not frame-wise (frames, width) tensors.
    """

    def __init__(self, module, output_index=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(module, dict):
            module = keras.saving.deserialize_keras_object(module)
        self.module = module
        specs = module.compute_output_spec(keras.KerasTensor((None,), dtype="float32"))
        outputs = list(specs) if isinstance(specs, (list, tuple)) else [specs]
        if any(len(o.shape) != 2 for o in outputs):
            raise KerastlError(f"the module returns {[tuple(o.shape) for o in outputs]} for one waveform; "
                               "kerastl needs frame-wise outputs of shape (frames, width)")
        if output_index is None:
            output_index = max(range(len(outputs)), key=lambda i: outputs[i].shape[-1] or 0)
        self.output_index = int(output_index)
        self._several = isinstance(specs, (list, tuple))
        self.width = int(outputs[self.output_index].shape[-1])

    def call(self, inputs):
        import tensorflow as tf

        def one(waveform):
            out = self.module(waveform)
            out = out[self.output_index] if self._several else out
            return tf.reduce_mean(tf.cast(out, tf.float32), axis=0)

        return tf.map_fn(one, tf.cast(inputs, tf.float32), fn_output_signature=tf.TensorSpec((self.width,),
                                                                                             tf.float32))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.width)

    def get_config(self):
        return {**super().get_config(), "module": keras.saving.serialize_keras_object(self.module),
                "output_index": self.output_index}


# ------------------------------------------------------------------------------------------------ export


def serving_signature(model):
    """The input a SavedModel of an audio classifier takes: `waveforms`, float32 (batch, samples) in [-1, 1]
    at `sample_rate_of(model)`. For `kerastl.export`."""
    import tensorflow as tf

    return tf.TensorSpec((None, int(model.input.shape[1])), tf.float32, name="waveforms")


def tflite_signature(model):
    """The (1, samples) float32 input signature a TFLite audio classifier is converted with: the front end is
    builtin ops only, so the whole model converts and the .tflite file takes raw waveforms."""
    import tensorflow as tf

    return tf.TensorSpec((1, int(model.input.shape[1])), tf.float32, name="waveforms")


# A WAV file is resampled whole before it is cropped to the clip: 10 minutes bounds that memory. A rate below
# 1 kHz is a damaged header, and resampling it up to the model's rate multiplies the samples (16,000 times
# for a header claiming 1 Hz).
MAX_AUDIO_SECONDS = 600
MIN_AUDIO_SAMPLE_RATE = 1000


def wav_header_error(path) -> str | None:
    """Why the WAV file at `path` would cost too much to read (a sample rate below `MIN_AUDIO_SAMPLE_RATE`, or
    longer than `MAX_AUDIO_SECONDS`), from its header and size, or None. Headers this cannot parse are left to
    the WAV reader, which names the problem."""
    import struct

    path = Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(1 << 16)
        size = path.stat().st_size
    except OSError:
        return None
    if head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        return None
    endian = ">" if head[:4] == b"RIFX" else "<"
    at = 12
    while at + 8 <= len(head):  # walk the chunks to "fmt "
        chunk, length = head[at:at + 4], struct.unpack(endian + "I", head[at + 4:at + 8])[0]
        if chunk == b"fmt " and at + 24 <= len(head):
            channels, rate = struct.unpack(endian + "HI", head[at + 10:at + 16])
            block = struct.unpack(endian + "H", head[at + 20:at + 22])[0] or max(1, channels)
            if rate < MIN_AUDIO_SAMPLE_RATE:
                return f"sample rate of {rate} Hz, below {MIN_AUDIO_SAMPLE_RATE} Hz: a damaged header"
            seconds = size / (block * rate)  # an upper bound: the file holds at most size / block frames
            if seconds > MAX_AUDIO_SECONDS:
                return (f"audio of up to {seconds:.0f} s, over the {MAX_AUDIO_SECONDS} s limit "
                        "(kerastl.inputs.audio.MAX_AUDIO_SECONDS); cut it into clips")
            return None
        at += 8 + length + (length & 1)
    return None
