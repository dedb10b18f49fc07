"""General English text from Debian packages, for distilling a sentence encoder: short texts, one per line.

Sources (each unpacked with `apt-get download` + `dpkg -x` into a scratch directory; nothing is kept in the
repository, and the packages' versions are recorded):

- `wordnet-base`: the gloss of every synset of data.noun, data.verb, data.adj and data.adv (its definition and
  its quoted examples), e.g. "the destruction of an enemy plane or ship or tank or missile; \"the pilot reported
  two kills during the mission\"". License: the WordNet 3.0 license (permissive, with notice).
- `dict-gcide`: the GNU Collaborative International Dictionary of English (dictd format; the .dict.dz is gzip):
  each numbered sense, note and quotation of each entry, headword line, etymology, source tags ("[1913
  Webster]") and markup dropped. License: GPL-2+.
- `manpages`, `manpages-dev`: the Linux man-pages, rendered by the system's `man -l` (groff) to plain text;
  the paragraphs of each page, cut into pieces of whole sentences. License: mostly GPL-2+ and BSD-style
  (per page; see the packages' copyright files).
- Debian package descriptions: the short and the first paragraph of the long description of every package in
  the apt lists (`apt-cache dumpavail`). License: each package's own.

Texts are whitespace-normalised, 5 to `MAX_WORDS` words, mostly letters, deduplicated; `build()` mixes the
sources with a seed. The evaluation set of tools/bench_real_text.py (fortune cookies, package `fortunes`) is
none of these.

    python tools/english_corpus.py --work /tmp/kerastl-english --out /tmp/kerastl-english/corpus.txt
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import subprocess
import sys
from pathlib import Path

PACKAGES = ("wordnet-base", "dict-gcide", "manpages", "manpages-dev")
MAX_WORDS = 60
MIN_WORDS = 5


def _clean(text: str) -> str:
    return " ".join(text.split())


def _good(text: str) -> bool:
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    letters = sum(ch.isalpha() for ch in text)
    return letters >= 0.7 * sum(not ch.isspace() for ch in text)


def _pieces(paragraph: str, limit: int = MAX_WORDS):
    """Whole sentences of `paragraph`, grouped into pieces of at most `limit` words (a longer sentence is cut)."""
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z(\"'])", paragraph)
    piece: list[str] = []
    for sentence in sentences:
        words = sentence.split()
        while len(words) > limit:
            if piece:
                yield " ".join(piece)
                piece = []
            yield " ".join(words[:limit])
            words = words[limit:]
        if len(piece) + len(words) > limit:
            yield " ".join(piece)
            piece = []
        piece += words
    if piece:
        yield " ".join(piece)


def unpack(work: Path) -> dict[str, str]:
    """Downloads and unpacks `PACKAGES` into work/root; returns {package: version}."""
    debs, root = work / "debs", work / "root"
    debs.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    versions = {}
    for package in PACKAGES:
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
            found = sorted(debs.glob(f"{package}_*.deb"))
        deb = found[-1]
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        versions[package] = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                                           capture_output=True, text=True).stdout.strip()
    return versions


def wordnet_glosses(root: Path):
    for part in ("noun", "verb", "adj", "adv"):
        for line in (root / "usr/share/wordnet" / f"data.{part}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # the license header
            yield _clean(line.split(" | ", 1)[1])


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SOURCE_TAG = re.compile(r"\[(?:[^\[\]]*(?:Webster|WordNet|PJC|Century|Obs\.|R\.|Chambers|Oxford|Elem|Colloq)"
                         r"[^\[\]]*)\]")
# GCIDE's ASCII escapes for accented letters: [e^] [=a] ["o] ['e] [ae] [oe] ...
_ACCENT = re.compile(r"\[(?:[\"'`=^~.]?([a-zA-Z]{1,2})[\"'`=^~.]?|([a-zA-Z]{1,2})[\"'`=^~.])\]")


def _b64(text: str) -> int:
    value = 0
    for ch in text:
        value = value * 64 + _B64.index(ch)
    return value


def gcide_senses(root: Path):
    directory = root / "usr/share/dictd"
    with gzip.open(directory / "gcide.dict.dz") as handle:  # dictzip is gzip with an index in its header
        data = handle.read()
    spans = set()
    for line in (directory / "gcide.index").read_text(encoding="utf-8").splitlines():
        word, offset, length = line.split("\t")[:3]
        if not word.startswith("00-database"):
            spans.add((_b64(offset), _b64(length)))
    for offset, length in sorted(spans):
        entry = data[offset:offset + length].decode("utf-8", "replace")
        lines = entry.split("\n")
        # The headword line, and the etymology when its brackets run on to the next lines.
        depth = lines[0].count("[") - lines[0].count("]")
        lines = lines[1:]
        while depth > 0 and lines:
            depth += lines[0].count("[") - lines[0].count("]")
            lines = lines[1:]
        for block in re.split(r"\n\s*\n", "\n".join(lines)):
            text = _SOURCE_TAG.sub(" ", block)
            text = re.sub(r"--[A-Z][\w.' ]{0,40}?(?:\.|$)", " ", text)  # "--Milton." citations
            text = _ACCENT.sub(lambda m: m.group(1) or m.group(2), text)
            text = re.sub(r"^\s*(?:\d+\.|\([a-z]\)|Note:|Syn\.|Syn:)\s*", "", text.strip())
            text = re.sub(r"\((?:Arch|Naut|Zool|Bot|Chem|Med|Law|Mus|Math|Anat|Mil|Geol|Astron|Physics|Cookery|"
                          r"Script|Her|Eccl|Gram|Rhet|Logic|Com|Mech|Elec|Print)\.\)", " ", text)
            text = _clean(text.replace("{", "").replace("}", "").replace("\\", ""))
            if text:
                yield from _pieces(text)


def man_paragraphs(root: Path):
    pages = sorted(p for p in (root / "usr/share/man").rglob("*.gz") if p.is_file() and not p.is_symlink())
    for page in pages:
        rendered = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                                  env={"MANWIDTH": "4000", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                  check=False).stdout
        rendered = subprocess.run(["col", "-bx"], input=rendered, capture_output=True, text=True,
                                  check=False).stdout
        for paragraph in re.split(r"\n\s*\n", rendered):
            lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
            if len(lines) != 1:
                continue  # headings, synopses, code and tables come as several short lines
            yield from _pieces(_clean(lines[0]))


def package_descriptions():
    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    for record in dump.split("\n\n"):
        match = re.search(r"^Description: (.*)\n((?: .*\n?)*)", record, re.MULTILINE)
        if not match:
            continue
        short = match.group(1).strip()
        long_lines = []
        for line in match.group(2).splitlines():
            if line.strip() == ".":
                break
            long_lines.append(line.strip())
        short = short[0].upper() + short[1:] if short else short
        text = _clean(f"{short}. {' '.join(long_lines)}")
        yield from _pieces(text)


def apt_release() -> str:
    lists = sorted(Path("/var/lib/apt/lists").glob("*_InRelease"))
    found = []
    for path in lists:
        head = path.read_text(errors="replace")[:3000]
        suite = re.search(r"^Suite: (.*)$", head, re.MULTILINE)
        date = re.search(r"^Date: (.*)$", head, re.MULTILINE)
        found.append(f"{path.name.split('_dists_')[-1].replace('_InRelease', '')}"
                     f" ({suite.group(1) if suite else '?'}, {date.group(1) if date else '?'})")
    return "; ".join(found)


def build(work: Path, per_source: dict[str, int], seed: int = 0) -> tuple[list[str], dict]:
    """The mixed corpus and its record: at most per_source[name] texts of each source, drawn with `seed`."""
    versions = unpack(work)
    root = work / "root"
    sources = {"wordnet": wordnet_glosses(root), "gcide": gcide_senses(root), "manpages": man_paragraphs(root),
               "debian-descriptions": package_descriptions()}
    rng = random.Random(seed)
    seen, texts, counts = set(), [], {}
    for name, generator in sources.items():
        kept = []
        for text in generator:
            key = text.lower()
            if _good(text) and key not in seen:
                seen.add(key)
                kept.append(text)
        rng.shuffle(kept)
        counts[name] = {"available": len(kept), "kept": min(len(kept), per_source.get(name, len(kept)))}
        texts += kept[:per_source.get(name, len(kept))]
        print(f"  {name}: {len(kept)} texts, {counts[name]['kept']} kept", flush=True)
    rng.shuffle(texts)
    record = {"packages": versions, "apt_lists": apt_release(), "sources": counts, "seed": seed,
              "words": [MIN_WORDS, MAX_WORDS], "texts": len(texts)}
    return texts, record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kerastl-english"))
    parser.add_argument("--out", type=Path, default=None, help="Default: WORK/corpus.txt (+ corpus.json).")
    parser.add_argument("--wordnet", type=int, default=80000)
    parser.add_argument("--gcide", type=int, default=80000)
    parser.add_argument("--manpages", type=int, default=20000)
    parser.add_argument("--descriptions", type=int, default=40000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out or args.work / "corpus.txt"
    texts, record = build(args.work, {"wordnet": args.wordnet, "gcide": args.gcide, "manpages": args.manpages,
                                      "debian-descriptions": args.descriptions}, args.seed)
    if any("\n" in t for t in texts):
        sys.exit("a text holds a newline")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(f"{len(texts)} texts -> {out}")


if __name__ == "__main__":
    main()
