"""The layers of Google's speech_embedding model: its log-mel front end, as openWakeWord computes it, and the
activation of its convolutions (`ClippedLeakyReLU`).

Google's speech_embedding (Lin et al., 2020, "Training keyword spotters with limited and synthesized speech
data") computes 32 log-mel bands from 60 Hz to 3,800 Hz every 10 ms over 25 ms windows. openWakeWord runs its
embedding network on a re-implementation of that front end (a torchlibrosa melspectrogram, shipped as
`melspectrogram.tflite`) followed by `x / 10 + 2` in Python. `SpeechEmbeddingMel` is that computation, rebuilt
from its definition and checked against the TFLite file by tools/import_speech_embedding.py:

1. waveforms in [-1, 1] are scaled by 32768 (openWakeWord feeds 16-bit sample values as floats);
2. a 512-point DFT every 160 samples, no centring, a 400-sample periodic Hann window centred in the 512
   (one strided `Conv1D` with fixed cos/sin kernels, as `LogMelSpectrogram`: builtin TFLite ops only);
3. the power spectrum times 32 Slaney-normalised mel filters on the Slaney mel scale (librosa's defaults);
4. `10 * log10(max(mel, 1e-10))`, floored 80 dB below the clip's loudest value (librosa's `power_to_db` with
   `top_db=80`; the TFLite file takes that maximum over its whole input, i.e. over the clip at batch size 1,
   and this layer takes it per clip so that a prediction never depends on the rest of the batch);
5. `x / 10 + 2`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerastl.inputs.framed_dft import FramedMel, mel_power


def _hz_to_slaney_mel(hz):
    hz = np.asarray(hz, dtype="float64")
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _slaney_mel_to_hz(mel):
    mel = np.asarray(mel, dtype="float64")
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))


def slaney_mel_filters(sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Mel filters, float32 (n_fft // 2 + 1, num_mels), as `librosa.filters.mel` makes them by default (Slaney
    mel scale, triangles linear in Hz, each scaled to unit area: `norm="slaney"`)."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), num_mels + 2))
    ramps = edges[:, None] - freqs[None]
    rising = -ramps[:-2] / np.diff(edges)[:-1, None]
    falling = ramps[2:] / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.T.astype("float32")


@keras.saving.register_keras_serializable(package="kerastl")
class SpeechEmbeddingMel(FramedMel):
    """Raw waveforms (batch, samples) in [-1, 1] → speech_embedding log-mel frames (batch, frames, mels, 1),
    see the module docstring. No weights: the DFT kernel and the filters are rebuilt from the config. Always
    float32. The first layer of the speech-embedding backbone, it records the sample rate as
    `LogMelSpectrogram` does (`kerastl.inputs.audio.sample_rate_of`).

    Raises:
        ValueError: a non-positive size, a window longer than the DFT, or `fmax` above the Nyquist frequency.
    """

    def __init__(self, sample_rate=16000, n_fft=512, window_length=400, frame_step=160, num_mels=32, fmin=60.0,
                 fmax=3800.0, input_scale=32768.0, amin=1e-10, top_db=80.0, scale=0.1, offset=2.0, **kwargs):
        super().__init__(sample_rate, n_fft, window_length, frame_step, num_mels, fmin, fmax, **kwargs)
        if not 0 <= float(fmin) < float(fmax) <= sample_rate / 2:
            raise ValueError(f"SpeechEmbeddingMel needs 0 <= fmin < fmax <= sample_rate / 2. Received: fmin={fmin}, "
                             f"fmax={fmax}, sample_rate={sample_rate}")
        self.input_scale, self.amin, self.top_db = float(input_scale), float(amin), float(top_db)
        self.scale, self.offset = float(scale), float(offset)
        self._filters = slaney_mel_filters(self.sample_rate, self.n_fft, self.num_mels, self.fmin, self.fmax)

    def num_frames(self, samples: int) -> int:
        return 1 + (int(samples) - self.n_fft) // self.frame_step

    def call(self, inputs):
        x = ops.expand_dims(ops.cast(inputs, "float32") * self.input_scale, -1)
        mel = mel_power(x, self._kernel, self._filters, self.frame_step)
        db = ops.log(ops.maximum(mel, self.amin)) * (10.0 / np.log(10.0))
        db = ops.maximum(db, ops.max(db, axis=(1, 2), keepdims=True) - self.top_db)
        return ops.expand_dims(db * self.scale + self.offset, -1)

    def get_config(self):
        return {**super().get_config(), "input_scale": self.input_scale, "amin": self.amin,
                "top_db": self.top_db, "scale": self.scale, "offset": self.offset}

    def to_record(self) -> dict:
        """The JSON-able preprocessing record that manifests carry."""
        keys = ("sample_rate", "n_fft", "window_length", "frame_step", "num_mels", "fmin", "fmax", "input_scale",
                "amin", "top_db", "scale", "offset")
        config = self.get_config()
        return {"mode": "speech_embedding_mel", **{key: config[key] for key in keys}}


@keras.saving.register_keras_serializable(package="kerastl")
class ClippedLeakyReLU(keras.layers.Layer):
    """`max(leaky_relu(x, negative_slope), floor)`: the activation after every convolution of speech_embedding
    (slope 0.2, floor -0.4), a leaky ReLU whose negative side stops at `floor`. No weights.

    Raises:
        ValueError: `floor` above 0 (the floor would cut into the positive side).
    """

    def __init__(self, negative_slope=0.2, floor=-0.4, **kwargs):
        super().__init__(**kwargs)
        if float(floor) > 0:
            raise ValueError(f"ClippedLeakyReLU floor must be <= 0. Received: floor={floor}")
        self.negative_slope, self.floor = float(negative_slope), float(floor)

    def call(self, inputs):
        return ops.maximum(ops.leaky_relu(inputs, self.negative_slope), self.floor)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope, "floor": self.floor}
