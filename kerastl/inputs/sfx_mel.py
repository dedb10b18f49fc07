"""The log-mel front end of aiSFX (Ma and Lerch, ISMIR 2022, "Representation learning for the automatic
indexing of sound effects libraries"), for the `sfx-cnn9` backbone (tools/import_aisfx.py).

aiSFX computes, at 44.1 kHz (`aisfx.spectrogram.spectrogram_librosa` and `aisfx.preprocessing`):

1. the waveform divided by its peak (a silent clip is left as it is);
2. librosa's `melspectrogram`: a centred STFT (the clip zero-padded by n_fft // 2 on both sides) with a
   2048-sample periodic Hann window every 1024 samples, the power spectrum, 96 HTK-mel triangles from 0 to
   22,050 Hz, each normalised to unit sum (`norm=1.0`);
3. `log10(10000 * mel + 1)`, divided by 9.4578 (the largest value over its training sets, `spec_norm="original"`).

`SfxLogMel` is that computation from its definition. At 16 kHz (the rate of kerastl's audio) it keeps the
same times and frequencies: a 743-sample window (46.4 ms) every 372 samples (23.2 ms) in a 1024-point DFT,
the same 96 triangles in Hz (those above 8 kHz get no energy, as a band-limited recording has none), each
of unit sum as at 44.1 kHz (see `sfx_mel_filters`), and the power scaled by `power_scale` so that a sound
below 8 kHz gives the same mel values at either rate (see `power_scale_for`). The DFT is one strided
`Conv1D` with fixed cos/sin kernels, as in `LogMelSpectrogram`: builtin TFLite ops only.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerastl.inputs.framed_dft import FramedMel, mel_power

TRAIN_SAMPLE_RATE, TRAIN_WINDOW, TRAIN_HOP, TRAIN_N_FFT = 44100, 2048, 1024, 2048


def _hz_to_htk(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype="float64") / 700.0)


def _htk_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype="float64") / 2595.0) - 1.0)


def _triangles(freqs: np.ndarray, num_mels: int, fmin: float, fmax: float) -> np.ndarray:
    edges = _htk_to_hz(np.linspace(_hz_to_htk(fmin), _hz_to_htk(fmax), num_mels + 2))
    rising = (freqs[:, None] - edges[None, :-2]) / np.diff(edges)[None, :-1]
    falling = (edges[None, 2:] - freqs[:, None]) / np.diff(edges)[None, 1:]
    return np.maximum(0.0, np.minimum(rising, falling))


def sfx_mel_filters(sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float,
                    norm_sample_rate: int = TRAIN_SAMPLE_RATE, norm_n_fft: int = TRAIN_N_FFT) -> np.ndarray:
    """HTK-mel triangles (n_fft // 2 + 1, num_mels), float32, on the bins of an `n_fft`-point DFT at
    `sample_rate`, each divided by its sum on the `norm_n_fft`-point grid at `norm_sample_rate` times the ratio
    of the two bin widths. At the training grid that is librosa's `mel(htk=True, norm=1.0)`; on another grid a
    band below the Nyquist frequency sums to 1 as well, and a band that the Nyquist frequency cuts keeps the
    weights of its lower part (not renormalised to 1). `fmax` may exceed the Nyquist frequency: the bands beyond
    it are 0."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    reference = _triangles(np.linspace(0.0, norm_sample_rate / 2.0, norm_n_fft // 2 + 1), num_mels, fmin, fmax)
    sums = reference.sum(axis=0) * (norm_sample_rate / norm_n_fft) / (sample_rate / n_fft)
    return (_triangles(freqs, num_mels, fmin, fmax) / np.maximum(sums, 1e-12)[None]).astype("float32")


def power_scale_for(sample_rate: int, window_length: int) -> float:
    """The factor that gives a sound below the Nyquist frequency the same mel power at `sample_rate` (with a
    window as long in time) as at 44.1 kHz with 2048 samples: a tone's power in a unit-sum band grows as the
    sample rate times the window's energy (sum of its squares)."""
    def energy(length):
        n = np.arange(length)
        return float(np.sum((0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)) ** 2))

    return (TRAIN_SAMPLE_RATE * energy(TRAIN_WINDOW)) / (sample_rate * energy(window_length))


@keras.saving.register_keras_serializable(package="kerastl")
class SfxLogMel(FramedMel):
    """Raw waveforms (batch, samples) in [-1, 1] → aiSFX log-mel frames (batch, frames, mels, 1), see the module
    docstring. No weights: the DFT kernel and the filters are rebuilt from the config. Always float32. The first
    layer of the sfx-cnn9 backbone; it records the sample rate as `LogMelSpectrogram` does
    (`kerastl.inputs.audio.sample_rate_of`).

    Raises:
        ValueError: a non-positive size, a window longer than the DFT, or fmin not below fmax.
    """

    def __init__(self, sample_rate=16000, n_fft=1024, window_length=743, frame_step=372, num_mels=96, fmin=0.0,
                 fmax=22050.0, power_scale=None, log_gain=10000.0, norm_max=9.457798957824707,
                 peak_normalize=True, **kwargs):
        super().__init__(sample_rate, n_fft, window_length, frame_step, num_mels, fmin, fmax, **kwargs)
        if not 0 <= float(fmin) < float(fmax):
            raise ValueError(f"SfxLogMel needs 0 <= fmin < fmax. Received: fmin={fmin}, fmax={fmax}")
        self.power_scale = (power_scale_for(self.sample_rate, self.window_length) if power_scale is None
                            else float(power_scale))
        self.log_gain, self.norm_max = float(log_gain), float(norm_max)
        self.peak_normalize = bool(peak_normalize)
        self._filters = sfx_mel_filters(self.sample_rate, self.n_fft, self.num_mels, self.fmin, self.fmax)

    def num_frames(self, samples: int) -> int:
        return 1 + int(samples) // self.frame_step

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.peak_normalize:
            peak = ops.max(ops.abs(x), axis=1, keepdims=True)
            x = x / ops.where(peak > 0, peak, ops.ones_like(peak))
        pad = self.n_fft // 2
        x = ops.expand_dims(ops.pad(x, [[0, 0], [pad, pad]]), -1)
        mel = mel_power(x, self._kernel, self._filters, self.frame_step) * self.power_scale
        logmel = ops.log(mel * self.log_gain + 1.0) * (1.0 / (np.log(10.0) * self.norm_max))
        return ops.expand_dims(logmel, -1)

    def forward_flops(self) -> int:
        """FLOPs per example: the DFT convolution and the mel matmul (for compute reports)."""
        frames = self.num_frames(int(self.input.shape[1]))
        return 2 * frames * (self.n_fft * 2 * self._bins + self._bins * self.num_mels)

    def get_config(self):
        return {**super().get_config(), "power_scale": self.power_scale, "log_gain": self.log_gain,
                "norm_max": self.norm_max, "peak_normalize": self.peak_normalize}

    def to_record(self) -> dict:
        """The JSON-able preprocessing record that manifests carry."""
        config = self.get_config()
        keys = ("sample_rate", "n_fft", "window_length", "frame_step", "num_mels", "fmin", "fmax", "power_scale",
                "log_gain", "norm_max", "peak_normalize")
        return {"mode": "sfx_log_mel", **{key: config[key] for key in keys}}
