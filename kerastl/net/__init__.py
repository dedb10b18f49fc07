"""Download, verify, cache and safely unpack files that other people published.

Everything kerastl fetches from the network (keras.applications weights, TF-Hub modules, our own
released backbones) goes through this package. Models are programs, so the rules are strict:

* Only https downloads go without a pin. An http or file URL needs a sha256 given by the caller
  (from the user's spec or a table in kerastl, never from inside the file it checks), and every
  redirect hop is checked again: it must stay https unless the download is pinned, and it passes
  the caller's host check (``check_url``), so a trusted host cannot hand the request elsewhere.
* A file appears under its final cache name only once it is complete and, when a sha256 is given,
  verified; it is written to ``<final>.part`` beside it and moved into place with ``os.replace``.
  A file fetched without any pin can be recorded on first download (``trust_on_first_use``): its
  sha256 is kept beside it and a changed file is refused afterwards.
* Archives are unpacked by our own code, which refuses absolute names, ``..`` components, links
  that resolve outside the destination and device or FIFO members (Keras' ``get_file`` had a tar
  path-traversal CVE, CVE-2025-12060), an archive may unpack to at most ``MAX_EXTRACT_BYTES``
  bytes in ``MAX_EXTRACT_MEMBERS`` members, and an unpacked tree appears under its final name only
  when complete.
* Offline, or when the network fails, the error names the URL and the exact path to put the file
  at, so users behind a firewall can copy it in by hand.

Three modules, imports pointing one way (cache <- archive <- download):

* ``cache``: where a URL's file lives (``cache_dir``, ``cache_path``), the offline switch, the lock
  file, and the small helpers the other two share;
* ``archive``: safe unpacking (``extract_archive``) with its size and member limits;
* ``download``: resumable verified downloads (``fetch``), the https/pin policy and redirect checks,
  ``split_pin``, trust on first use, and ``fetch_and_extract``.

Pure standard library on purpose: importing this package must not import TensorFlow or Keras.
"""

from __future__ import annotations

from kerastl.net.archive import MAX_EXTRACT_BYTES, MAX_EXTRACT_MEMBERS, extract_archive
from kerastl.net.cache import cache_dir, cache_path, is_offline, reachable, sha256_file
from kerastl.net.download import fetch, fetch_and_extract, split_pin

__all__ = [
    "MAX_EXTRACT_BYTES",
    "MAX_EXTRACT_MEMBERS",
    "cache_dir",
    "cache_path",
    "extract_archive",
    "fetch",
    "fetch_and_extract",
    "is_offline",
    "reachable",
    "sha256_file",
    "split_pin",
]
