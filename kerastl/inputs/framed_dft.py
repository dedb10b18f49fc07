"""What the imported audio front ends share (`speech_mel.SpeechEmbeddingMel`, `sfx_mel.SfxLogMel`): a
windowed DFT as one strided `Conv1D` with fixed cos/sin kernels (builtin TFLite ops only), its power spectrum
through mel filters, the checks of the frame sizes, and `FramedMel`, the layer base that holds the frame
settings."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def padded_dft_kernel(n_fft: int, window_length: int) -> np.ndarray:
    """Conv1D kernel (n_fft, 1, 2 * (n_fft // 2 + 1)): the cos and -sin of each DFT bin times a periodic Hann
    window of `window_length` centred in `n_fft` samples (as `torch.stft` and librosa pad a shorter window)."""
    n = np.arange(window_length)
    window = np.zeros(n_fft)
    start = (n_fft - window_length) // 2
    window[start:start + window_length] = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / window_length)
    angle = 2.0 * np.pi * np.outer(np.arange(n_fft), np.arange(n_fft // 2 + 1)) / n_fft
    kernel = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) * window[:, None]
    return kernel[:, None, :].astype("float32")


def check_frame_sizes(layer: str, *, sample_rate, n_fft, window_length, frame_step, num_mels) -> None:
    """Raises ValueError, naming `layer`, for a non-positive size or a window longer than the DFT."""
    if min(int(sample_rate), int(n_fft), int(window_length), int(frame_step), int(num_mels)) <= 0:
        raise ValueError(f"{layer} sizes must be positive. Received: sample_rate={sample_rate}, "
                         f"n_fft={n_fft}, window_length={window_length}, frame_step={frame_step}, "
                         f"num_mels={num_mels}")
    if int(window_length) > int(n_fft):
        raise ValueError(f"{layer} needs window_length <= n_fft. Received: window_length={window_length}, "
                         f"n_fft={n_fft}")


def mel_power(frames, kernel, filters, frame_step: int):
    """(batch, samples, 1) float32 → (batch, frames, mels): each frame's DFT power through `filters`
    (bins, mels), the DFT being `kernel` (`padded_dft_kernel`) applied every `frame_step` samples."""
    bins = int(kernel.shape[-1]) // 2
    spectrum = ops.conv(frames, ops.convert_to_tensor(kernel), strides=frame_step, padding="valid")
    real, imag = spectrum[..., :bins], spectrum[..., bins:]
    return ops.matmul(real * real + imag * imag, ops.convert_to_tensor(filters))


class FramedMel(keras.layers.Layer):
    """Base of a waveform → (batch, frames, mels, 1) front end with no weights, always float32: it checks and
    keeps the frame settings, builds the DFT kernel (`padded_dft_kernel`), and gives the output shape and the
    shared part of the config. A subclass sets `_filters` and defines `num_frames` and `call`.

    Raises:
        ValueError: a non-positive size or a window longer than the DFT (`check_frame_sizes`).
    """

    def __init__(self, sample_rate, n_fft, window_length, frame_step, num_mels, fmin, fmax, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        check_frame_sizes(type(self).__name__, sample_rate=sample_rate, n_fft=n_fft, window_length=window_length,
                          frame_step=frame_step, num_mels=num_mels)
        self.sample_rate, self.n_fft, self.window_length = int(sample_rate), int(n_fft), int(window_length)
        self.frame_step, self.num_mels = int(frame_step), int(num_mels)
        self.fmin, self.fmax = float(fmin), float(fmax)
        self._bins = self.n_fft // 2 + 1
        self._kernel = padded_dft_kernel(self.n_fft, self.window_length)

    def num_frames(self, samples: int) -> int:
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        frames = None if input_shape[1] is None else self.num_frames(input_shape[1])
        return (input_shape[0], frames, self.num_mels, 1)

    def get_config(self):
        return {**super().get_config(), "sample_rate": self.sample_rate, "n_fft": self.n_fft,
                "window_length": self.window_length, "frame_step": self.frame_step, "num_mels": self.num_mels,
                "fmin": self.fmin, "fmax": self.fmax}
