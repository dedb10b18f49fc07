"""Download, verify, cache and safely unpack files that other people published.

Everything kerastl fetches from the network (keras.applications weights, TF-Hub modules, our own
released backbones) goes through this module. Models are programs, so the rules are strict:

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

Pure standard library on purpose: importing this module must not import TensorFlow or Keras.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import http.client
import json
import os
import posixpath
import re
import shutil
import ssl
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from kerastl.errors import KerastlError, UsageError

__all__ = [
    "MAX_EXTRACT_BYTES",
    "MAX_EXTRACT_MEMBERS",
    "cache_dir",
    "cache_path",
    "extract_archive",
    "fetch",
    "fetch_and_extract",
    "is_offline",
    "sha256_file",
    "split_pin",
]

#: ``progress(done_bytes, total_bytes)``; ``total_bytes`` is None when the server does not say.
ProgressCallback = Callable[[int, int | None], None]

_CHUNK = 1 << 16
# Attempts within one fetch() call; each retry resumes from what the previous attempt wrote.
_MAX_ATTEMPTS = 3
_RETRY_PAUSE = 0.2  # seconds, times the attempt number
# Suffixes of the files this module keeps beside a cached file; a cached file's own name must not
# end in one, or it could be mistaken for (or overwrite) another file's bookkeeping.
_PART, _LOCK, _EXTRACTED, _COMPLETE = ".part", ".lock", ".extracted", ".complete"
# Beside a file fetched without a pin: the sha256 it had on first download (trust on first use).
_RECORDED = ".sha256"
_RESERVED_SUFFIXES = (_PART, _LOCK, _EXTRACTED, _COMPLETE, _RECORDED, ".tmp")
_MAX_NAME = 128
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SCHEMES = ("http", "https", "file")

#: Most bytes one archive may unpack to (files' contents), and most members it may have. An archive
#: is small on the wire and can expand to fill the disk; the largest TF-Hub modules unpack to a few
#: GiB in a few thousand files. Override per call (``extract_archive(max_bytes=...)``) or with
#: ``$KERASTL_MAX_EXTRACT_BYTES`` / ``$KERASTL_MAX_EXTRACT_MEMBERS``.
MAX_EXTRACT_BYTES = 8 << 30
MAX_EXTRACT_MEMBERS = 100_000
_USER_AGENT = f"kerastl (Python-urllib/{sys.version_info[0]}.{sys.version_info[1]})"


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


# --------------------------------------------------------------------------------------------------
# Downloading


def fetch(
    url: str,
    *,
    sha256: str | None = None,
    subdir: str = "downloads",
    filename: str | None = None,
    offline: bool | None = None,
    timeout: float = 30,
    progress: ProgressCallback | None = None,
    check_url: Callable[[str], None] | None = None,
    trust_on_first_use: bool = False,
) -> Path:
    """Return the path of the cached file for ``url``, downloading it first if needed.

    Transport: an https ``url`` may go unpinned; an http or file ``url`` needs ``sha256``, which
    must come from outside the file (the user's spec, or a table in kerastl). Redirects are
    followed only to https URLs (http too when pinned), and ``check_url(hop)``, when given, is
    called for ``url`` and every redirect hop before it is requested; it raises to refuse one.
    With ``trust_on_first_use`` and no ``sha256``, the sha256 of the first download is recorded in
    ``<path>.sha256``; a cached or newly downloaded file that differs from it is refused
    afterwards (delete both files to accept a new version).

    The file lives at ``cache_path(url, subdir=subdir, filename=filename)``. If it is there (and
    matches ``sha256`` when given) it is returned without touching the network. Otherwise it is
    downloaded to ``<path>.part`` (resuming a ``.part`` left by an interrupted download with an
    HTTP Range request, and starting over cleanly if the server ignores the range), checked against
    ``sha256`` and moved into place with ``os.replace``. A dropped connection is retried, resuming,
    up to 3 attempts per call; if all fail the ``.part`` is kept so the next call resumes.
    Downloads of one URL by several threads or processes are serialised by a lock file
    ``<path>.lock`` (POSIX and Windows), so only one of them transfers the bytes.

    A transfer cut short is detected from Content-Length; a server that sends none and closes
    early can only be caught by ``sha256``, so pass it whenever the publisher gives one.

    ``offline`` defaults to ``is_offline()``. ``timeout`` (seconds) bounds each network wait, not
    the whole transfer. ``progress(done, total)`` is called as bytes arrive; an exception it raises
    aborts the download (the ``.part`` is kept) and propagates.

    Raises KerastlError (one line) when offline or the download fails with no cached file (the
    message names the URL and the path to put the file at), when the file does not match
    ``sha256`` or its recorded first-use hash (the message gives expected and actual hashes), when
    ``url`` or a redirect is refused (no pin on a non-https URL, or ``check_url`` refuses it), or
    when the cache can't be written; UsageError for a malformed argument.
    """
    url = _check_url(url)
    want = _check_sha256(sha256)
    _check_transport(url, want)
    if check_url is not None:
        check_url(url)
    if not timeout or timeout <= 0:
        raise UsageError(f"timeout must be a positive number of seconds, not {timeout!r}")
    final = cache_path(url, subdir=subdir, filename=filename)
    if offline is None:
        offline = is_offline()
    tofu = trust_on_first_use and want is None
    # Fast path without the lock: a file under the final name is always complete.
    if final.is_file() and (want is None or _verified_or_deleted(final, want, url, offline)):
        if tofu:
            _check_recorded(final, url)
        return final
    if offline:
        raise _offline_error(url, final)
    _make_dirs(final.parent)
    with _file_lock(final.with_name(final.name + _LOCK)):
        return _fetch_locked(url, final, want, timeout, progress, check_url, tofu)


def _fetch_locked(
    url: str,
    final: Path,
    want: str | None,
    timeout: float,
    progress: ProgressCallback | None,
    check_url: Callable[[str], None] | None = None,
    tofu: bool = False,
) -> Path:
    # Another thread or process may have finished the download while we waited for the lock.
    if final.is_file() and (want is None or _verified_or_deleted(final, want, url, False)):
        if tofu:
            _check_recorded(final, url)
        return final
    part = final.with_name(final.name + _PART)
    resumed = _download(url, part, final, timeout, progress, _Hops(want is not None, check_url))
    if want is not None:
        got = _hash_or_fail(part, final)
        if got != want and resumed:
            # The kept .part may have come from an older version of the file, or been corrupted;
            # one clean download settles whether the server's file itself is wrong.
            part.unlink()
            _download(url, part, final, timeout, progress, _Hops(True, check_url))
            got = _hash_or_fail(part, final)
        if got != want:
            part.unlink()
            raise KerastlError(
                f"sha256 mismatch for {_display_url(url)} (expected {want}, got {got}); deleted "
                "the download: retry, and if it persists the file on the server changed, so "
                "report the URL and the new hash"
            )
    if tofu:
        _record_or_check(part, final, url)
    try:
        os.replace(part, final)
    except OSError as exc:
        raise _cache_write_error(final, exc) from exc
    return final


# --------------------------------------------------------------------------------------------------
# Transport policy and redirects


def _check_transport(url: str, want: str | None) -> None:
    """Refuse a URL whose bytes nothing vouches for: not https, and no sha256 pin."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme != "https" and want is None:
        raise KerastlError(
            f"refusing to download {_display_url(url)} without a sha256 pin: {scheme}:// is not "
            "authenticated, so its bytes could be swapped on the way; use an https:// URL or pin "
            "the file (append #sha256=<64 hex digits> to the url: or hub: spec)"
        )


class _Hops:
    """What each redirect hop of one download must satisfy."""

    def __init__(self, pinned: bool, check_url: Callable[[str], None] | None):
        self.pinned = pinned
        self.check_url = check_url

    def check(self, url: str) -> None:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        allowed = ("http", "https") if self.pinned else ("https",)
        if scheme not in allowed:
            raise KerastlError(
                f"refusing a redirect to {_display_url(url)}: an unpinned download must stay on "
                "https:// (and none may leave http(s)); pin the file with #sha256=<64 hex digits> "
                "or use the final https URL directly"
            )
        if self.check_url is not None:
            self.check_url(url)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirect handling, with every new URL checked before it is requested."""

    def __init__(self, hops: _Hops):
        self.hops = hops

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        # The Location may be relative; resolve it as urllib will, then check the absolute URL.
        self.hops.check(urllib.parse.urljoin(req.full_url, newurl))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(request: urllib.request.Request, timeout: float, hops: _Hops):
    # A fresh default context per call, so SSL_CERT_FILE / SSL_CERT_DIR are honoured as set now.
    opener = urllib.request.build_opener(
        _CheckedRedirects(hops), urllib.request.HTTPSHandler(context=ssl.create_default_context())
    )
    return opener.open(request, timeout=timeout)


# --------------------------------------------------------------------------------------------------
# Trust on first use


def _recorded_path(final: Path) -> Path:
    return final.with_name(final.name + _RECORDED)


def _read_recorded(final: Path) -> str | None:
    record = _recorded_path(final)
    try:
        value = json.loads(record.read_text(encoding="utf-8")).get("sha256")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as exc:
        raise KerastlError(
            f"cannot read the recorded hash {record} ({_one_line(exc)}); delete it and {final} to "
            "download the file again"
        ) from exc
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise KerastlError(
            f"{record} holds no sha256; delete it and {final} to download the file again"
        )
    return value


def _changed_error(path: Path, final: Path, url: str, recorded: str, got: str) -> KerastlError:
    return KerastlError(
        f"{_display_url(url)} changed since it was first downloaded (sha256 recorded {recorded}, "
        f"now {got}); it was refused: if you trust the new file, delete {final} and "
        f"{_recorded_path(final)} and run again"
    )


def _check_recorded(final: Path, url: str) -> None:
    """The cached ``final`` must match the sha256 recorded on first use (recorded now if none)."""
    recorded = _read_recorded(final)
    got = _hash_or_fail(final, final)
    if recorded is None:
        # Cached before kerastl recorded hashes (or copied in by hand): this is its first use.
        _write_marker(_recorded_path(final), {"url": url, "sha256": got})
    elif got != recorded:
        raise _changed_error(final, final, url, recorded, got)


def _record_or_check(part: Path, final: Path, url: str) -> None:
    recorded = _read_recorded(final)
    got = _hash_or_fail(part, final)
    if recorded is None:
        _write_marker(_recorded_path(final), {"url": url, "sha256": got})
    elif got != recorded:
        part.unlink()
        raise _changed_error(part, final, url, recorded, got)


def _download(
    url: str,
    part: Path,
    final: Path,
    timeout: float,
    progress: ProgressCallback | None,
    hops: _Hops | None = None,
) -> bool:
    """Complete ``part`` from ``url``; return whether any bytes came from an earlier attempt."""
    validator = None  # ETag or Last-Modified of the first response, for If-Range on retries.
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        offset = part.stat().st_size if part.is_file() else 0
        try:
            result, validator = _transfer(
                url, part, final, offset, validator, timeout, progress, hops or _Hops(False, None)
            )
        except _NetworkError as exc:
            if attempt == _MAX_ATTEMPTS or not exc.retry:
                raise KerastlError(
                    f"could not download {_display_url(url)} ({exc}); check the network or "
                    f"proxy and retry, or download it yourself and put it at {final}"
                ) from exc.__cause__
            # A short pause so that a server that just dropped us is not hammered at once.
            time.sleep(_RETRY_PAUSE * attempt)
            continue
        return result
    raise AssertionError("unreachable")  # pragma: no cover


class _NetworkError(Exception):
    """A transfer failed; ``retry`` says whether another attempt could help."""

    def __init__(self, message: str, retry: bool = True):
        super().__init__(message)
        self.retry = retry


def _transfer(
    url: str,
    part: Path,
    final: Path,
    offset: int,
    validator: str | None,
    timeout: float,
    progress: ProgressCallback | None,
    hops: _Hops,
) -> tuple[bool, str | None]:
    """One HTTP request that appends to (or restarts) ``part``.

    Returns (whether the finished ``part`` kept bytes from before this call, validator). Raises
    _NetworkError for network failures (``part`` keeps what arrived) and KerastlError for local
    write failures.
    """
    # identity: byte ranges must count bytes of the file, not of a compressed encoding of it.
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            # The server answers 200 with the whole file if it changed since the first response.
            headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        response = _open(request, timeout, hops)
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            if exc.code == 416 and offset:
                # The .part already holds the whole file (a crash between finishing the transfer
                # and the rename), or it is longer than the file: keep it or start over.
                total = _content_range_total(exc.headers.get("Content-Range", ""))
                if total == offset:
                    return True, validator
                _unlink(part)
                raise _NetworkError("the server refused the resume range; restarting") from exc
            retry = exc.code in (408, 429) or exc.code >= 500
            raise _NetworkError(f"HTTP {exc.code} {_one_line(exc.reason)}", retry) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # No retry: a refused connection, an unknown host or a connect timeout will not go away
        # in a second, and an offline user should hear so at once.
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _NetworkError(_one_line(reason) or type(exc).__name__, retry=False) from exc

    with response:
        status = getattr(response, "status", None)
        if validator is None:
            etag = response.headers.get("ETag")
            # If-Range accepts only strong ETags.
            strong = etag if etag and not etag.startswith("W/") else None
            validator = strong or response.headers.get("Last-Modified")
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset and status == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                _unlink(part)
                raise _NetworkError("the server sent the wrong byte range; restarting")
            mode, done = "ab", offset
        else:
            # Anything but 206 is the whole file from byte 0 (a server that ignores Range, a
            # changed file failing If-Range, or a file: URL): start over.
            mode, done = "wb", 0
        kept = done > 0
        total = done + length if length is not None else None
        try:
            f = open(part, mode)  # noqa: SIM115 - failing to open is a cache error, not network
        except OSError as exc:
            raise _cache_write_error(final, exc) from exc
        with f:
            if progress is not None:
                progress(done, total)
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.HTTPException, OSError, ValueError) as exc:
                    raise _NetworkError(
                        f"connection lost after {done} bytes: {_one_line(exc) or type(exc).__name__}"
                    ) from exc
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as exc:
                    raise _cache_write_error(final, exc) from exc
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            try:
                f.flush()
                # So that after a power cut the final name never holds a file with missing data.
                os.fsync(f.fileno())
            except OSError as exc:
                raise _cache_write_error(final, exc) from exc
        # http.client returns b"" rather than raising when a connection closes before
        # Content-Length bytes arrived, so the length has to be checked here.
        if total is not None and done < total:
            raise _NetworkError(f"connection closed after {done} of {total} bytes")
        return kept, validator


def _content_range_start(value: str) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", value)
    return int(match.group(1)) if match else None


def _content_range_total(value: str) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)\s*", value)
    return int(match.group(1)) if match else None


def _verified_or_deleted(path: Path, want: str, url: str, offline: bool) -> bool:
    """True if the cached ``path`` matches ``want``; otherwise delete it and return False.

    Offline there is no way to replace it, so that case raises KerastlError instead.
    """
    got = _hash_or_fail(path, path)
    if got == want:
        return True
    _unlink(path)
    if offline:
        raise KerastlError(
            f"the cached copy of {_display_url(url)} failed its sha256 check (expected {want}, "
            f"got {got}) and was deleted; go online to download it again, or put a correct copy "
            f"at {path}"
        )
    return False


def _hash_or_fail(path: Path, final: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise KerastlError(
            f"cannot read {path} ({_one_line(exc)}); fix its permissions or delete it and retry"
        ) from exc


def _offline_error(url: str, final: Path) -> KerastlError:
    return KerastlError(
        f"offline and {_display_url(url)} is not in the cache; unset KERASTL_OFFLINE (or pass "
        f"offline=False), or download it on a connected machine and put it at {final}"
    )


def _cache_write_error(path: Path, exc: OSError) -> KerastlError:
    return KerastlError(
        f"cannot write {path} ({_one_line(exc)}); free disk space or set KERASTL_CACHE to a "
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
# Extracting


def extract_archive(
    archive: os.PathLike | str,
    dest: os.PathLike | str,
    *,
    max_bytes: int | None = None,
    max_members: int | None = None,
) -> Path:
    """Safely unpack a .tar, .tar.gz/.tgz (also .tar.bz2/.tar.xz) or .zip ``archive`` into ``dest``.

    The format is recognised from the file's content, not its name (TF-Hub tarballs have no
    extension). Members are unpacked by this function, not by tarfile/zipfile ``extractall``, into
    a temporary directory beside ``dest`` that is renamed to ``dest`` only when everything is
    unpacked, so a failure or interruption leaves nothing under ``dest``. ``dest`` must not exist,
    or be an empty directory. Regular files, directories and relative symlinks are unpacked; tar
    hardlinks become copies of the file they name. Modes come from the umask as for any new file,
    plus execute bits where the member had owner-execute: never setuid/setgid; ownership and
    timestamps are not restored. At most ``max_bytes`` bytes of file contents (counted as they
    are written, not as the archive declares them) and ``max_members`` members are unpacked;
    both default to ``$KERASTL_MAX_EXTRACT_BYTES`` / ``$KERASTL_MAX_EXTRACT_MEMBERS`` when set,
    else ``MAX_EXTRACT_BYTES`` / ``MAX_EXTRACT_MEMBERS``. Returns ``dest``.

    Raises KerastlError (and leaves nothing behind) for an archive with a member that has an
    absolute name, a ``..`` component, a backslash or NUL in its name, a symlink or hardlink whose
    target resolves outside ``dest``, or that is a device, FIFO or other special file; for an
    unreadable, corrupt or unrecognised archive; for one that exceeds either limit (the message
    names the limit and how to raise it); and when ``dest`` exists and is not an empty directory.
    UsageError for a limit that is not a positive integer.
    """
    archive, dest = Path(archive), Path(dest)
    limits = (
        _limit(max_bytes, "KERASTL_MAX_EXTRACT_BYTES", MAX_EXTRACT_BYTES),
        _limit(max_members, "KERASTL_MAX_EXTRACT_MEMBERS", MAX_EXTRACT_MEMBERS),
    )
    kind = _archive_kind(archive)
    if (dest.exists() or dest.is_symlink()) and (
        not dest.is_dir() or dest.is_symlink() or any(dest.iterdir())
    ):
        raise KerastlError(
            f"cannot unpack {archive.name} into {dest}: it already exists; delete it or choose "
            "another destination"
        )
    _make_dirs(dest.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    except OSError as exc:
        raise _cache_write_error(dest.parent, exc) from exc
    try:
        # mkdtemp makes it private (0o700); dest should get the mode of any directory the user
        # creates.
        umask = _umask()
        os.chmod(tmp, 0o777 & ~umask)
        if kind == "zip":
            _extract_zip(archive, _Unpacker(archive, tmp, umask, *limits))
        else:
            _extract_tar(archive, _Unpacker(archive, tmp, umask, *limits), kind)
        _rename_dir(tmp, dest)
    except BaseException:
        # Also on KeyboardInterrupt: a half-unpacked tree must not survive.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _limit(value: int | None, env: str, default: int) -> int:
    source = f"{env}={os.environ[env]!r}" if value is None and os.environ.get(env) else repr(value)
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        value = int(text) if text.isdigit() else -1
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"an extraction limit must be a positive integer. Received: {source}")
    return value


def _rename_dir(tmp: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():
        # An empty directory is allowed as dest; os.replace onto it works on POSIX but not on
        # Windows, so remove it first.
        with contextlib.suppress(OSError):
            dest.rmdir()
    try:
        os.replace(tmp, dest)
    except OSError as exc:
        raise KerastlError(
            f"cannot move the unpacked files to {dest} ({_one_line(exc)}); delete it and retry"
        ) from exc


def _archive_kind(archive: Path) -> str:
    try:
        with open(archive, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise KerastlError(
            f"cannot read archive {archive} ({_one_line(exc)}); check the path and permissions"
        ) from exc
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "r:gz"
    if head.startswith(b"BZh"):
        return "r:bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "r:xz"
    if head[257:262] == b"ustar" or (len(head) == 512 and tarfile.is_tarfile(archive)):
        return "r:"
    raise KerastlError(
        f"{archive} is not a tar, tar.gz or zip archive; delete it so it is downloaded again, or "
        "check the URL"
    )


def _refuse(archive: Path, member: str, why: str) -> KerastlError:
    return KerastlError(
        f"refusing to unpack {archive.name}: member {_one_line(repr(member))} {why}; the archive "
        "is unsafe or corrupt, so get it from a trusted source"
    )


def _member_parts(archive: Path, name: str) -> tuple[str, ...]:
    """Validate a member name; return its path components (empty for the archive root)."""
    if "\x00" in name:
        raise _refuse(archive, name, "has a NUL character in its name")
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise _refuse(archive, name, "has an absolute path")
    if "\\" in name:
        # A path separator on Windows; refused everywhere so an archive means the same on all OSes.
        raise _refuse(archive, name, "has a backslash in its name")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(archive, name, "has a '..' component")
    return parts


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class _Unpacker:
    """Writes validated members under ``root``; symlinks last, so no write ever follows one."""

    def __init__(
        self,
        archive: Path,
        root: Path,
        umask: int,
        max_bytes: int = MAX_EXTRACT_BYTES,
        max_members: int = MAX_EXTRACT_MEMBERS,
    ):
        self.archive = archive
        self.root = root
        self.real_root = os.path.realpath(root)
        self.links: list[tuple[str, tuple[str, ...], str]] = []
        self.umask = umask
        self.max_bytes, self.max_members = max_bytes, max_members
        self.written = 0
        self.members = 0

    def count(self) -> None:
        """Count one member; refuse the archive past the member limit."""
        self.members += 1
        if self.members > self.max_members:
            raise KerastlError(
                f"refusing to unpack {self.archive.name}: it has more than {self.max_members} "
                "members (the limit); if you trust it, raise KERASTL_MAX_EXTRACT_MEMBERS"
            )

    def _copy(self, source, out) -> None:
        # Counted while writing: a zip's declared sizes are the archive's word, not a fact.
        while True:
            chunk = source.read(_CHUNK)
            if not chunk:
                return
            self.written += len(chunk)
            if self.written > self.max_bytes:
                raise KerastlError(
                    f"refusing to unpack {self.archive.name}: it expands to more than "
                    f"{self.max_bytes} bytes (the limit); if you trust it and have the space, "
                    "raise KERASTL_MAX_EXTRACT_BYTES"
                )
            out.write(chunk)

    def target(self, name: str) -> Path | None:
        parts = _member_parts(self.archive, name)
        return self.root.joinpath(*parts) if parts else None

    def directory(self, name: str) -> None:
        path = self.target(name)
        if path is not None:
            self._os(name, lambda: path.mkdir(parents=True, exist_ok=True))

    def file(self, name: str, source, executable: bool) -> None:
        path = self.target(name)
        if path is None:
            raise _refuse(self.archive, name, "is a file with an empty name")

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.is_dir():
                raise IsADirectoryError(f"{name} is already a directory or link")
            with open(path, "wb") as out:
                self._copy(source, out)
            # The archive's mode is not trusted (setuid, world-writable): only its owner-execute
            # bit is kept, and the user's umask decides the rest, as for any file they create.
            os.chmod(path, (0o777 if executable else 0o666) & ~self.umask)

        self._os(name, write)

    def hardlink(self, name: str, linkname: str) -> None:
        # Copy rather than link: a real hardlink to a file outside dest is the attack, and a copy
        # of an already unpacked member can't be one.
        source = self.target(linkname)
        if source is None or source == self.target(name) or not source.is_file():
            raise _refuse(
                self.archive,
                name,
                f"is a hardlink to {linkname!r}, which is not a file unpacked before it",
            )
        if not _inside(self.real_root, os.path.realpath(source)):
            raise _refuse(self.archive, name, "is a hardlink whose target is outside the archive")
        with open(source, "rb") as src:
            self.file(name, src, bool(os.stat(source).st_mode & stat.S_IXUSR))

    def symlink(self, name: str, linkname: str) -> None:
        parts = _member_parts(self.archive, name)
        if not parts:
            raise _refuse(self.archive, name, "is a link with an empty name")
        if not linkname or "\x00" in linkname or "\\" in linkname:
            raise _refuse(self.archive, name, "is a link with an invalid target")
        if linkname.startswith("/") or re.match(r"[A-Za-z]:", linkname):
            raise _refuse(self.archive, name, f"is a link to the absolute path {linkname!r}")
        # Quick lexical check; the real check is on the final tree in finish().
        lexical = posixpath.normpath(
            posixpath.join(*parts[:-1], linkname) if parts[:-1] else linkname
        )
        if lexical == ".." or lexical.startswith("../"):
            raise _refuse(self.archive, name, f"is a link to {linkname!r}, outside the archive")
        self.links.append((name, parts, linkname))

    def finish(self) -> None:
        for name, parts, linkname in self.links:
            path = self.root.joinpath(*parts)
            # Earlier links may make the parent resolve elsewhere; never create a link there.
            if not _inside(self.real_root, os.path.realpath(path.parent)):
                raise _refuse(self.archive, name, "is a link placed through a link outside")
            self._os(name, functools.partial(self._make_link, path, linkname))
        # Links can point through each other (a -> b/.., b -> .), so only the finished tree tells
        # where each one leads.
        for name, parts, linkname in self.links:
            resolved = os.path.realpath(self.root.joinpath(*parts))
            if not _inside(self.real_root, resolved):
                raise _refuse(
                    self.archive,
                    name,
                    f"is a link to {linkname!r}, which resolves outside the archive",
                )

    @staticmethod
    def _make_link(path: Path, linkname: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            raise FileExistsError(f"{path.name} exists twice in the archive")
        os.symlink(linkname, path)

    def _os(self, name: str, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as exc:
            raise KerastlError(
                f"cannot unpack member {_one_line(repr(name))} of {self.archive.name} "
                f"({_one_line(exc)}); free disk space, or get an intact copy of the archive"
            ) from exc


def _extract_tar(archive: Path, unpacker: _Unpacker, mode: str) -> None:
    try:
        with tarfile.open(archive, mode) as tar:
            for member in tar:
                unpacker.count()
                if member.isdir():
                    unpacker.directory(member.name)
                elif member.isreg():
                    source = tar.extractfile(member)
                    with contextlib.closing(source):
                        unpacker.file(member.name, source, bool(member.mode & stat.S_IXUSR))
                elif member.issym():
                    unpacker.symlink(member.name, member.linkname)
                elif member.islnk():
                    unpacker.hardlink(member.name, member.linkname)
                elif member.ischr() or member.isblk():
                    raise _refuse(archive, member.name, "is a device file")
                elif member.isfifo():
                    raise _refuse(archive, member.name, "is a FIFO")
                else:
                    raise _refuse(archive, member.name, "is a special file")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise KerastlError(
            f"{archive} is corrupt or truncated ({_one_line(exc) or type(exc).__name__}); delete "
            "it so it is downloaded again"
        ) from exc
    unpacker.finish()


def _extract_zip(archive: Path, unpacker: _Unpacker) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                unpacker.count()
                # Unix zip tools keep st_mode in the high 16 bits; others leave them zero.
                mode = info.external_attr >> 16 if info.create_system == 3 else 0
                kind = stat.S_IFMT(mode)
                if info.is_dir() or kind == stat.S_IFDIR:
                    unpacker.directory(info.filename)
                elif kind == stat.S_IFLNK:
                    if info.file_size > 4096:
                        raise _refuse(archive, info.filename, "is a link with an oversized target")
                    target = zf.read(info).decode("utf-8", "surrogateescape")
                    unpacker.symlink(info.filename, target)
                elif kind in (0, stat.S_IFREG):
                    with zf.open(info) as source:
                        unpacker.file(info.filename, source, bool(mode & stat.S_IXUSR))
                elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                    raise _refuse(archive, info.filename, "is a device file")
                elif kind == stat.S_IFIFO:
                    raise _refuse(archive, info.filename, "is a FIFO")
                else:
                    raise _refuse(archive, info.filename, "is a special file")
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        RuntimeError,
        EOFError,
        OSError,
        zlib.error,
    ) as exc:
        # RuntimeError: encrypted members, which we have no password for.
        raise KerastlError(
            f"{archive} is corrupt, truncated or encrypted ({_one_line(exc) or type(exc).__name__})"
            "; delete it so it is downloaded again"
        ) from exc
    unpacker.finish()


# --------------------------------------------------------------------------------------------------
# Download and extract


def fetch_and_extract(
    url: str,
    *,
    sha256: str | None = None,
    subdir: str = "downloads",
    offline: bool | None = None,
    timeout: float = 30,
    progress: ProgressCallback | None = None,
    check_url: Callable[[str], None] | None = None,
) -> Path:
    """Fetch the archive at ``url`` like ``fetch`` and return the directory it is unpacked in.

    The transport rules and ``check_url`` are ``fetch``'s: an http or file ``url`` needs ``sha256``.

    The directory is ``<archive>.extracted`` beside the cached archive (see ``cache_path``). A
    marker file ``<archive>.extracted.complete`` is written once unpacking has finished, recording
    the archive's sha256; while the marker exists (and matches ``sha256`` when given) the directory
    is reused without fetching or reading the archive, so the archive may be deleted to save space.
    A directory without its marker is an unfinished attempt and is unpacked again. Unpacking is
    ``extract_archive``'s. TF-Hub handles are served as tarballs at
    ``<handle>?tf-hub-format=compressed``: pass that full URL.

    Raises KerastlError as ``fetch`` and ``extract_archive`` do.
    """
    url = _check_url(url)
    want = _check_sha256(sha256)
    _check_transport(url, want)
    if check_url is not None:
        check_url(url)
    archive = cache_path(url, subdir=subdir)
    dest = archive.with_name(archive.name + _EXTRACTED)
    marker = archive.with_name(dest.name + _COMPLETE)
    if _extracted_ok(dest, marker, want):
        return dest
    if offline is None:
        offline = is_offline()
    if not timeout or timeout <= 0:
        raise UsageError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if offline and not archive.is_file():
        raise _offline_error(url, archive)
    _make_dirs(archive.parent)
    # The same lock as fetch(), held across fetch and unpack, so two processes never unpack into
    # the same place and neither sees the other's half-finished directory.
    with _file_lock(archive.with_name(archive.name + _LOCK)):
        if _extracted_ok(dest, marker, want):
            return dest
        cached = archive.is_file() and (
            want is None or _verified_or_deleted(archive, want, url, offline)
        )
        if not cached:
            if offline:
                raise _offline_error(url, archive)
            _fetch_locked(url, archive, want, timeout, progress, check_url)
        digest = want or _hash_or_fail(archive, archive)
        # Temporary trees left by a killed unpack; under the lock none of them is in use.
        for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        # Marker first: a crash between the two deletions must not leave a marker for a
        # directory that is gone or partial.
        _unlink(marker)
        if dest.is_symlink() or dest.is_file():
            _unlink(dest)
        elif dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        extract_archive(archive, dest)
        _write_marker(marker, {"url": url, "archive_sha256": digest})
    return dest


def _extracted_ok(dest: Path, marker: Path, want: str | None) -> bool:
    if not dest.is_dir() or not marker.is_file():
        return False
    if want is None:
        return True
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("archive_sha256")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == want


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


_PIN_RE = re.compile(r"sha256=([0-9a-fA-F]{64})")


def split_pin(url: str) -> tuple[str, str | None]:
    """Split ``<url>#sha256=<hex>`` (the pin syntax of ``url:`` and ``hub:`` specs) into the URL and
    the lowercase sha256, or None when there is no fragment.

    The pin must come from whoever names the URL (a spec, a table in kerastl): a hash shipped inside
    the very archive it should check proves nothing, since whoever can swap the archive can swap it.

    Raises UsageError (one line) for a fragment that is not ``sha256=`` and 64 hex digits.
    """
    base, hash_sign, fragment = url.partition("#")
    if not hash_sign:
        return url, None
    match = _PIN_RE.fullmatch(fragment)
    if not match:
        raise UsageError(
            f"a download is pinned as #sha256=<64 hex digits> after its URL. Received: #{fragment}"
        )
    return base, match.group(1).lower()


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


def _check_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower() if isinstance(sha256, str) else sha256
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise UsageError(f"sha256 must be 64 hex digits, not {sha256!r}")
    return value


def _display_url(url: str) -> str:
    """The URL for messages, without any password in it."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
