"""Writes a class-per-folder WAV set of English words spoken by espeak-ng, offline: a speech pre-training source.

The words are the most frequent alphabetic words (3-12 letters) of the Python standard library's docstrings
(`kerastl.pretraining.corpora`, `python-docs`), minus the ten keywords that tools/bench_fewshot_audio_text.py
classifies (yes, no, up, down, left, right, on, off, stop, go) and their homophones (write, know, ...), so that
a backbone pretrained on this set has never heard a benchmark word. Each word is spoken `--clips` times, each
time by a random English voice and variant (male/female), speed (120-220 words per minute) and pitch (20-80).
Everything is seeded: the same arguments give the same files.

    python tools/make_spoken_words.py --words 300 --clips 30 --out DIR
    kerastl pretrain --data DIR --arch smallnet-s ...

Needs espeak-ng (`apt-get install espeak-ng`).
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# Words espeak-ng says exactly as a keyword.
HOMOPHONES = ("write", "rite", "wright", "know", "noh")
VOICES = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan")
VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5")


def frequent_words(count: int) -> list[str]:
    """The `count` most frequent words of the python-docs corpus, keywords and homophones excluded."""
    from kerastl.pretraining.corpora import corpus_examples

    texts, _, _, _ = corpus_examples("python-docs")
    counts = collections.Counter(w for text in texts for w in re.findall(r"\b[a-z]{3,12}\b", text.lower()))
    excluded = set(KEYWORDS) | set(HOMOPHONES)
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in excluded]
    return words[:count]


def speak(words, root: Path, clips: int, seed: int = 0, workers: int = 2) -> Path:
    """`clips` WAV files per word in `root/WORD/NNN.wav`, each by a random voice, variant, speed and pitch."""
    if not shutil.which("espeak-ng"):
        sys.exit("needs espeak-ng: apt-get install espeak-ng")
    rng = random.Random(seed)
    jobs = []
    for word in words:
        (root / word).mkdir(parents=True, exist_ok=True)
        for i in range(clips):
            voice = rng.choice(VOICES) + rng.choice(VARIANTS)
            jobs.append(["espeak-ng", "-w", str(root / word / f"{i:03d}.wav"), "-v", voice,
                         "-s", str(rng.randint(120, 220)), "-p", str(rng.randint(20, 80)), word])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda job: subprocess.run(job, check=True, capture_output=True), jobs))
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--clips", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    words = frequent_words(args.words)
    speak(words, args.out, args.clips, args.seed)
    print(f"{len(words)} words x {args.clips} clips in {args.out} ({words[0]}, {words[1]}, ... {words[-1]})")


if __name__ == "__main__":
    main()
