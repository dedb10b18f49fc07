"""The download cache: where the file for a URL lives, the offline switch, and the lock file.

Also the argument checks and small helpers that ``kerastl.net``'s fetch and archive modules share:
cache paths and file names, hashing, writing bookkeeping files, and one-line error messages. Pure
standard library: importing this module must not import TensorFlow or Keras.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from kerastl.errors import KerastlError, UsageError, one_line

__all__ = ["cache_dir", "cache_path", "is_offline", "reachable", "sha256_file"]

_CHUNK = 1 << 16
# Suffixes of the files kerastl.net keeps beside a cached file; a cached file's own name must not
# end in one, or it could be mistaken for (or overwrite) another file's bookkeeping.
_PART, _LOCK, _EXTRACTED, _COMPLETE = ".part", ".lock", ".extracted", ".complete"
# Beside a file fetched without a pin: the sha256 it had on first download (trust on first use).
_RECORDED = ".sha256"
_RESERVED_SUFFIXES = (_PART, _LOCK, _EXTRACTED, _COMPLETE, _RECORDED, ".tmp")
_MAX_NAME = 128
_SCHEMES = ("http", "https", "file")


# --------------------------------------------------------------------------------------------------
# Cache layout and environment


def cache_dir() -> Path:
    """Return the root of kerastl's download cache (it need not exist yet).

    ``$KERASTL_CACHE`` if set and non-empty; else ``$XDG_CACHE_HOME/kerastl`` if that is set; else
    ``~/.cache/kerastl``. Raises nothing.
    """
    explicit = os.environ.get("KERASTL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(os.path.expanduser(xdg)):
        return Path(xdg).expanduser() / "kerastl"
    return Path.home() / ".cache" / "kerastl"


def is_offline() -> bool:
    """Return True when ``$KERASTL_OFFLINE`` is 1, true or yes (any case). Raises nothing."""
    return os.environ.get("KERASTL_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def reachable(host: str, *, port: int = 443, timeout: float = 5.0) -> bool:
    """Return whether a TCP connection to ``host:port`` opens within ``timeout`` seconds. Raises nothing.

    For downloads made by other libraries (keras-hub's kagglehub and huggingface_hub, which retry a dead
    network for tens of seconds): asked first, a machine without network fails at once with kerastl's line.
    """
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cache_path(url: str, *, subdir: str = "downloads", filename: str | None = None) -> Path:
    """Return where the file for ``url`` lives in the cache: ``cache_dir()/subdir/<hash>/<name>``.

    ``<hash>`` is the first 16 hex digits of the URL's sha256 (fragment removed), so two URLs with
    the same basename never collide. ``<name>`` is ``filename`` if given, else the percent-decoded
    basename of the URL's path with characters other than letters, digits and ``._-+`` replaced by
    ``_`` (the query string never takes part), or ``download`` if nothing is left. Nothing is
    created on disk.

    Raises UsageError if ``url`` is not an http, https or file URL, if ``subdir`` is absolute or
    has ``..`` components, or if ``filename`` is not a plain file name.
    """
    url = _check_url(url)
    sub = _check_subdir(subdir)
    if filename is None:
        name = _sanitise(posixpath.basename(urllib.parse.urlsplit(url).path))
    else:
        name = _check_filename(filename)
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return cache_dir().joinpath(*sub, digest, name)


def sha256_file(path: os.PathLike | str) -> str:
    """Return the lowercase hex sha256 of the file at ``path``. Raises OSError if it can't be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_or_fail(path: Path, final: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise KerastlError(
            f"cannot read {path} ({one_line(exc)}); fix its permissions or delete it and retry"
        ) from exc


def _offline_error(url: str, final: Path) -> KerastlError:
    return KerastlError(
        f"offline and {_display_url(url)} is not in the cache; unset KERASTL_OFFLINE (or pass "
        f"offline=False), or download it on a connected machine and put it at {final}"
    )


def _cache_write_error(path: Path, exc: OSError) -> KerastlError:
    return KerastlError(
        f"cannot write {path} ({one_line(exc)}); free disk space or set KERASTL_CACHE to a "
        "writable directory"
    )


def _make_dirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cache_write_error(path, exc) from exc


# --------------------------------------------------------------------------------------------------
# Locking


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the duration of the block.

    The OS releases the lock when its holder dies, so a crash never leaves a stale lock; the lock
    file itself stays (deleting it would let two holders lock different files of the same name).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _cache_write_error(path, exc) from exc
    try:
        _lock_fd(fd)
        yield
    finally:
        # Closing the descriptor releases the lock.
        os.close(fd)


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_fd(fd: int) -> None:
        # LK_LOCK gives up after 10 s; poll the non-blocking form instead, since a download that
        # holds the lock can take much longer.
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                time.sleep(0.2)

else:
    import fcntl

    def _lock_fd(fd: int) -> None:
        # flock locks belong to the open file description, so they also exclude other threads of
        # this process that opened the lock file separately.
        fcntl.flock(fd, fcntl.LOCK_EX)


# --------------------------------------------------------------------------------------------------
# Bookkeeping files


def _write_marker(marker: Path, content: dict) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    try:
        tmp.write_text(json.dumps(content, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, marker)
    except OSError as exc:
        raise _cache_write_error(marker, exc) from exc


# --------------------------------------------------------------------------------------------------
# Argument checks and small helpers


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"expected a URL string, got {url!r}")
    url, _fragment = urllib.parse.urldefrag(url.strip())
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise UsageError(f"unsupported URL {url!r}: use an http, https or file URL")
    return url


def _check_subdir(subdir: str) -> tuple[str, ...]:
    text = str(subdir).replace("\\", "/")
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if (
        text.startswith("/")
        or re.match(r"[A-Za-z]:", text)
        or ".." in parts
        or not parts
        or any(p.startswith("~") for p in parts)
    ):
        raise UsageError(
            f"subdir must be a relative path inside the cache without '..', not {subdir!r}"
        )
    return parts


def _check_filename(filename: str) -> str:
    if (
        not isinstance(filename, str)
        or filename in ("", ".", "..")
        or any(c in filename for c in "/\\\x00")
        or filename.endswith(_RESERVED_SUFFIXES)
        or len(filename) > 255
    ):
        raise UsageError(
            f"filename must be a plain file name not ending in {', '.join(_RESERVED_SUFFIXES)}, "
            f"not {filename!r}"
        )
    return filename


def _sanitise(basename: str) -> str:
    # Decode first, then keep the last segment, so an encoded "..%2F..%2Fetc" can't smuggle a path.
    name = re.split(r"[/\\]", urllib.parse.unquote(basename))[-1]
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name)
    # No hidden files, no "." or "..", no names that look like command-line options.
    name = name.lstrip(".-")
    if len(name) > _MAX_NAME:
        _stem, dot, ext = name.rpartition(".")
        keep = ("." + ext) if dot and len(ext) <= 16 else ""
        name = name[: _MAX_NAME - len(keep)] + keep
    if name.endswith(_RESERVED_SUFFIXES):
        name += "_"
    return name or "download"


def _display_url(url: str) -> str:
    """The URL for messages, without any password in it."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
