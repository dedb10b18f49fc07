"""Built-in synthetic audio sources for supervised pre-training, generated inside the tf.data graph.

`synthetic_audio_dataset(name, ...)` is the audio counterpart of `kerastl.pretraining.synthetic_image.synthetic_dataset`: an
endless `tf.data.Dataset` of `(waveform, label)` pairs rendered by stateless random ops (Philox), no files,
as many classes as asked for. What class c sounds like is a pure function of `(seed, c)`; how one sample
of it differs, of `(seed, split, element index)`.

Sources (see `SOURCES`):

* ``"pseudowords"``: each class is a random pseudo-word of 1-3 syllables. A syllable is an optional onset
  (a plosive burst or a fricative: noise of a class-specific colour) and a vowel: a harmonic source whose
  harmonics are shaped by three formants that glide from a start to an end frequency (diphthongs), with a
  pitch contour. Each sample is spoken by a random "speaker": fundamental frequency (85-255 Hz), vocal-tract
  length (formants scaled by 0.85-1.18), speaking rate (0.8-1.25x), per-formant and per-duration jitter,
  position in the clip, loudness and background noise (20-70 dB below the peak). So a class varies the way
  one spoken word varies between speakers: the source is built for transfer to spoken-word recognition.
  It is formant synthesis, as espeak-ng is: tools/bench_fewshot_audio_text.py measures transfer to espeak-ng
  words, which makes that benchmark an optimistic stand-in for human speech.

How it is fast: the spectral envelope and pitch are computed at a 10 ms control rate, then resized to the
sample rate; the harmonics are summed in one batched tensor over a chunk of `_CHUNK` elements.
"""

from __future__ import annotations

import math

import tensorflow as tf

from kerastl.errors import UsageError
from kerastl.pretraining.synthetic_image import _fold, _normal, _uniform

SOURCES: dict[str, str] = {
    "pseudowords": (
        "random pseudo-words of 1-3 formant-synthesised syllables (plosive/fricative onsets, gliding "
        "vowel formants, pitch contours) spoken by random speakers (pitch, vocal-tract length, rate, "
        "noise); for spoken words"
    ),
}

SPLITS = ("train", "validation", "test")
_CLASS_TAG = 0x5EED_A0D1
_SAMPLE_TAG = 0x5EED_A5A3
_CHUNK = 32
_SYLLABLES = 3
_HARMONICS = 32
_CONTROL_RATE = 100.0  # control frames per second
_PER_SYLLABLE = 13
_PARAMS = 1 + _SYLLABLES * _PER_SYLLABLE


def _pseudoword_class(key):
    """The prototype of one pseudo-word class as a flat float32 vector of _PARAMS numbers."""
    k = [_fold(key, i) for i in range(4)]
    count = 1.0 + tf.reduce_sum(tf.cast(_uniform(k[0], []) > tf.constant([0.35, 0.75]), tf.float32))
    u = _uniform(k[1], [_SYLLABLES, 8])
    onset_kind = tf.where(u[:, 0] < 0.3, 0.0, tf.where(u[:, 0] < 0.65, 1.0, 2.0))  # none, burst, fricative
    colour = u[:, 1]
    onset_seconds = tf.where(onset_kind == 1.0, 0.01 + 0.02 * u[:, 2], 0.06 + 0.10 * u[:, 2])
    vowel_seconds = 0.08 + 0.17 * u[:, 3]
    gap_seconds = 0.02 + 0.06 * u[:, 4]
    slope = -0.3 + 0.6 * u[:, 5]
    stress = 0.6 + 0.4 * u[:, 6]
    # Formant start points over the vowel space, and a glide for about half of the vowels (diphthongs).
    f = _uniform(k[2], [_SYLLABLES, 3])
    start = tf.stack([250.0 + 650.0 * f[:, 0], 700.0 + 1800.0 * f[:, 1], 2000.0 + 1200.0 * f[:, 2]], -1)
    glide = tf.where(u[:, 7:8] < 0.5, 0.0, 1.0) * _normal(k[3], [_SYLLABLES, 3]) * tf.constant([150.0, 400.0, 200.0])
    end = tf.clip_by_value(start + glide, [200.0, 600.0, 1800.0], [1000.0, 2700.0, 3400.0])
    per_syllable = tf.concat([tf.stack([onset_kind, colour, onset_seconds, vowel_seconds, gap_seconds, slope,
                                        stress], -1), start, end], -1)  # (S, 13)
    return tf.concat([[count], tf.reshape(per_syllable, [-1])], 0)


def _ramp(t, start, end, attack, release):
    """1 inside [start, end] with linear ramps of `attack`/`release` seconds, 0 outside; broadcasts."""
    rise = tf.clip_by_value((t - start) / attack, 0.0, 1.0)
    fall = tf.clip_by_value((end - t) / release, 0.0, 1.0)
    return rise * fall


def _render_pseudowords(params, key, sample_rate: int, num_samples: int):
    """Waveforms (C, num_samples), float32 in [-1, 1], of one sample of each class in params."""
    c = tf.shape(params)[0]
    seconds = num_samples / sample_rate
    frames = math.ceil(seconds * _CONTROL_RATE) + 1
    count = params[:, 0]
    syl = tf.reshape(params[:, 1:], [-1, _SYLLABLES, _PER_SYLLABLE])
    used = tf.cast(tf.range(_SYLLABLES, dtype=tf.float32)[None] < count[:, None], tf.float32)  # (C, S)
    onset_kind, colour = syl[..., 0], syl[..., 1]
    has_onset = tf.cast(onset_kind > 0.5, tf.float32)

    # The speaker.
    u = _uniform(_fold(key, 0), [c, 6])
    f0 = 85.0 * tf.exp(u[:, 0] * math.log(255.0 / 85.0))
    tract = 0.85 + 0.33 * u[:, 1]
    rate = 0.8 + 0.45 * u[:, 2]
    level = 0.3 + 0.6 * u[:, 3]
    snr_db = 20.0 + 50.0 * u[:, 4]
    jitter = 1.0 + _normal(_fold(key, 1), [c, _SYLLABLES, 9], 0.05)
    formants = syl[..., 7:13] * jitter[..., :6] * tract[:, None, None]  # (C, S, 6): 3 start, 3 end
    durations = syl[..., 2:5] * jitter[..., 6:9] / rate[:, None, None] * used[..., None]  # onset, vowel, gap
    onset_len = durations[..., 0] * has_onset
    lengths = onset_len + durations[..., 1] + durations[..., 2]
    total = tf.reduce_sum(lengths, -1)
    slack = tf.maximum(seconds - total - 0.1, 0.0)
    offset = 0.05 + slack * _uniform(_fold(key, 2), [c])
    starts = offset[:, None] + tf.cumsum(lengths, axis=-1, exclusive=True)  # (C, S)
    vowel_start = starts + onset_len
    vowel_end = vowel_start + durations[..., 1]

    t = tf.range(frames, dtype=tf.float32)[None, None, :] / _CONTROL_RATE  # (1, 1, F)
    vowel_env = _ramp(t, vowel_start[..., None], vowel_end[..., None], 0.02, 0.04) * (used * syl[..., 6])[..., None]
    progress = tf.clip_by_value((t - vowel_start[..., None]) / (durations[..., 1:2] + 1e-3), 0.0, 1.0)  # (C,S,F)
    formant_t = formants[..., None, :3] + (formants[..., None, 3:] - formants[..., None, :3]) * progress[..., None]
    pitch = 1.0 + tf.reduce_sum(vowel_env * syl[..., 5:6] * (progress - 0.5), axis=1)  # (C, F)
    pitch *= 1.0 - 0.12 * t[:, 0] / seconds  # declination over the clip
    f0_t = f0[:, None] * pitch  # (C, F)

    # Harmonic amplitudes (C, K, F): each syllable's formant resonances sampled at k * f0, weighted by its
    # envelope (syllables do not overlap, so the sum picks the one sounding).
    k = tf.range(1, _HARMONICS + 1, dtype=tf.float32)[None, :, None]  # (1, K, 1)
    harmonic_hz = k * f0_t[:, None, :]  # (C, K, F)
    bandwidth = tf.constant([90.0, 120.0, 170.0])
    gain = tf.constant([1.0, 0.55, 0.3])
    distance = (harmonic_hz[:, None, :, :, None] - formant_t[:, :, None, :, :]) / bandwidth  # (C, S, K, F, 3)
    resonance = tf.reduce_sum(gain * tf.exp(-0.5 * distance * distance), -1) + 0.02
    amplitude = tf.reduce_sum(resonance * vowel_env[:, :, None, :], axis=1) / tf.sqrt(k)  # (C, K, F)
    amplitude *= tf.cast(harmonic_hz < 0.45 * sample_rate, tf.float32)

    # To the sample rate: envelopes and pitch by bilinear resizing, phase by integrating the pitch.
    amplitude = tf.image.resize(amplitude[..., None], [_HARMONICS, num_samples])[..., 0]
    f0_samples = tf.image.resize(f0_t[:, None, :, None], [1, num_samples])[:, 0, :, 0]  # (C, T)
    phase = 2.0 * math.pi * tf.cumsum(f0_samples, axis=-1) / sample_rate
    phase += _uniform(_fold(key, 3), [c, 1], 0.0, 2.0 * math.pi)
    voiced = tf.reduce_sum(amplitude * tf.sin(k[..., 0][..., None] * phase[:, None, :]), axis=1)

    # Onsets: noise coloured between low (a 4-tap average) and hissy (a first difference) per syllable.
    onset_env = _ramp(t, starts[..., None], vowel_start[..., None] + 0.01, 0.005, 0.01)
    burst_gain = tf.where(onset_kind > 1.5, 0.35, 0.8) * has_onset * used * syl[..., 6]
    high_w = tf.reduce_sum(onset_env * (burst_gain * colour)[..., None], 1)
    low_w = tf.reduce_sum(onset_env * (burst_gain * (1.0 - colour))[..., None], 1)
    breath = 0.05 * tf.reduce_sum(vowel_env, 1)
    weights = tf.image.resize(tf.stack([high_w, low_w + breath], -1)[:, None], [1, num_samples])[:, 0]  # (C,T,2)
    noise = _normal(_fold(key, 4), [c, num_samples + 3])
    high = noise[:, 3:] - noise[:, 2:-1]
    low = (noise[:, 3:] + noise[:, 2:-1] + noise[:, 1:-2] + noise[:, :-3]) / 2.0
    rms_voiced = tf.sqrt(tf.reduce_mean(voiced * voiced, -1, keepdims=True) + 1e-8)
    signal = voiced + rms_voiced * (weights[..., 0] * high + weights[..., 1] * low)

    signal = signal / (tf.reduce_max(tf.abs(signal), -1, keepdims=True) + 1e-6) * level[:, None]
    background = _normal(_fold(key, 5), [c, num_samples]) * (level * 10.0 ** (-snr_db / 20.0))[:, None]
    return tf.clip_by_value(signal + background, -1.0, 1.0)


_IMPLEMENTATIONS = {"pseudowords": (_pseudoword_class, _PARAMS, _render_pseudowords)}


def _class_table(name: str, num_classes: int, seed: int):
    make_class, num_params, _ = _IMPLEMENTATIONS[name]
    root = _fold(tf.constant([seed, 0], tf.int64), _CLASS_TAG)
    table = (tf.data.Dataset.range(num_classes)
             .map(lambda c: make_class(_fold(root, c)), num_parallel_calls=tf.data.AUTOTUNE)
             .batch(num_classes).get_single_element())
    return tf.ensure_shape(table, [num_classes, num_params])


def synthetic_audio_dataset(name: str, *, num_classes: int = 1000, sample_rate: int = 16000,
                            num_samples: int = 16000, seed: int = 0, split: str = "train"):
    """An endless dataset of `(waveform, label)` pairs from the synthetic audio source `name`.

    Each element is a mono waveform, float32 in [-1, 1] of shape (num_samples,) at `sample_rate`, and its
    label, an int32 scalar drawn uniformly from [0, num_classes). Class c depends only on (seed, c); samples on
    (seed, split, index). Neither batched nor prefetched.

    Raises:
        UsageError: an unknown source or split, num_classes < 2, sample_rate < 8000, or num_samples shorter
            than 0.25 s.
    """
    if name not in SOURCES:
        raise UsageError(f"unknown synthetic audio source {name!r}; use one of: {', '.join(sorted(SOURCES))}")
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    if int(num_classes) < 2:
        raise UsageError(f"num_classes must be at least 2, got {num_classes}; ask for more classes")
    if int(sample_rate) < 8000:
        raise UsageError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    if int(num_samples) < sample_rate // 4:
        raise UsageError(f"clips must last at least 0.25 s, got {num_samples} samples at {sample_rate} Hz")
    _, _, render = _IMPLEMENTATIONS[name]
    table = _class_table(name, int(num_classes), int(seed))
    sample_root = _fold(_fold(tf.constant([seed, 0], tf.int64), _SAMPLE_TAG), SPLITS.index(split))

    def render_chunk(chunk):
        key = _fold(sample_root, chunk)
        labels = tf.random.stateless_uniform([_CHUNK], seed=_fold(key, 0), minval=0, maxval=int(num_classes),
                                             dtype=tf.int32, alg="philox")
        waves = render(tf.gather(table, labels), _fold(key, 1), int(sample_rate), int(num_samples))
        return tf.ensure_shape(waves, [_CHUNK, int(num_samples)]), labels

    return (tf.data.Dataset.counter(dtype=tf.int64)
            .map(render_chunk, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .unbatch())
