"""What the audio-backbone importers (tools/import_aisfx.py, tools/import_speech_embedding.py) share: their
common command line (--wheel, --clip-seconds, --check-wav, --out, --default), the clips a converted backbone
is verified on (real recordings given with --check-wav, else `synthetic_clips`), and how the verified backbone
is written (`save_backbone`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

SYNTHETIC_SOURCE = "synthetic_clips (tones, noise bursts, silence)"


def import_arguments(description: str, wheel: str, out: Path) -> argparse.ArgumentParser:
    """The importers' shared parser: `wheel` is the file name --wheel stands in for, `out` the default --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--wheel", type=Path, default=None, help=f"A local {wheel} (default: pip download it).")
    parser.add_argument("--clip-seconds", type=float, default=1.0)
    parser.add_argument("--check-wav", type=Path, nargs="*", default=[], help="Real recordings to verify on.")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--default", action="store_true", help='Mark it "default": true in the manifest.')
    return parser


def synthetic_clips(num_samples: int, sample_rate: int, band: tuple[float, float], n: int = 4,
                    seed: int = 0) -> np.ndarray:
    """`n` clips of `num_samples`: three tones each (frequencies drawn from `band`, in Hz), noise bursts, digital
    silence after 40 % + 15 % per clip, at several levels: for checks without recordings. Deterministic in
    `seed`; float32, (n, num_samples), peaks within [0.05, 0.9]."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    clips = []
    for i in range(n):
        x = sum(np.sin(2 * np.pi * rng.uniform(*band) * t + rng.uniform(0, 6)) for _ in range(3))
        x = x + rng.normal(0, 0.3, num_samples) * (rng.uniform(size=num_samples) < 0.3)
        x = x * np.where(np.arange(num_samples) < num_samples * (0.4 + 0.15 * i), 1.0, 0.0)  # digital silence after
        clips.append(rng.uniform(0.05, 0.9) * x / np.abs(x).max())
    return np.stack(clips).astype("float32")


def check_clips(wavs: list[Path], num_samples: int, sample_rate: int,
                band: tuple[float, float]) -> tuple[np.ndarray, str]:
    """`(clips, where they come from)`: the recordings `wavs` (resampled to `sample_rate`, cut or padded to
    `num_samples`), or `synthetic_clips` when there are none.

    Raises:
        SystemExit: some of `wavs` do not exist (one line naming up to three).
    """
    if not wavs:
        return synthetic_clips(num_samples, sample_rate, band), SYNTHETIC_SOURCE
    from kerastl.inputs.audio import load_waveforms

    missing = [str(p) for p in wavs if not p.is_file()]
    if missing:
        raise SystemExit(f"error: --check-wav files not found: {', '.join(missing[:3])}")
    clips = load_waveforms(wavs, sample_rate=sample_rate, num_samples=num_samples)
    return clips, f"{len(clips)} recordings: " + ", ".join(p.name for p in wavs[:8])


def save_backbone(model, out: Path, manifest_for: Callable[[Path], dict], features: str) -> Path:
    """Writes `out`/backbone.keras and `out`/manifest.json (`manifest_for(path of the saved model)`: it records
    the saved file's sha256), prints one line (`features` says what the backbone gives), returns the model's path."""
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "backbone.keras"
    model.save(model_path)
    (out / "manifest.json").write_text(json.dumps(manifest_for(model_path), indent=2) + "\n")
    print(f"saved {model_path} ({model_path.stat().st_size / 1e6:.2f} MB, {model.count_params()} parameters, "
          f"{features}) and {out / 'manifest.json'}")
    return model_path
