"""Resumable, verified downloads into the cache, and what may be downloaded at all.

* Only https downloads go without a pin. An http or file URL needs a sha256 given by the caller
  (from the user's spec or a table in kerastl, never from inside the file it checks), and every
  redirect hop is checked again: it must stay https unless the download is pinned, and it passes
  the caller's host check (``check_url``), so a trusted host cannot hand the request elsewhere.
* A file appears under its final cache name only once it is complete and, when a sha256 is given,
  verified; it is written to ``<final>.part`` beside it and moved into place with ``os.replace``.
  A file fetched without any pin can be recorded on first download (``trust_on_first_use``): its
  sha256 is kept beside it and a changed file is refused afterwards.
* ``fetch_and_extract`` fetches an archive and unpacks it once (``kerastl.net.archive``) beside it
  in the cache.

Pure standard library: importing this module must not import TensorFlow or Keras.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import os
import re
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kerastl.errors import KerastlError, UsageError, one_line
from kerastl.net.archive import extract_archive
from kerastl.net.cache import (
    _CHUNK,
    _COMPLETE,
    _EXTRACTED,
    _LOCK,
    _PART,
    _RECORDED,
    _cache_write_error,
    _check_url,
    _display_url,
    _file_lock,
    _hash_or_fail,
    _make_dirs,
    _offline_error,
    _unlink,
    _write_marker,
    cache_path,
    is_offline,
)

__all__ = ["fetch", "fetch_and_extract", "split_pin"]

#: ``progress(done_bytes, total_bytes)``; ``total_bytes`` is None when the server does not say.
ProgressCallback = Callable[[int, int | None], None]

# Attempts within one fetch() call; each retry resumes from what the previous attempt wrote.
_MAX_ATTEMPTS = 3
_RETRY_PAUSE = 0.2  # seconds, times the attempt number
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_USER_AGENT = f"kerastl (Python-urllib/{sys.version_info[0]}.{sys.version_info[1]})"


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
            f"cannot read the recorded hash {record} ({one_line(exc)}); delete it and {final} to "
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


# --------------------------------------------------------------------------------------------------
# Resumable transfer


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
            raise _NetworkError(f"HTTP {exc.code} {one_line(exc.reason)}", retry) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # No retry: a refused connection, an unknown host or a connect timeout will not go away
        # in a second, and an offline user should hear so at once.
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _NetworkError(one_line(reason) or type(exc).__name__, retry=False) from exc

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
                        f"connection lost after {done} bytes: {one_line(exc) or type(exc).__name__}"
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


# --------------------------------------------------------------------------------------------------
# Pins and hashes


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


def _check_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower() if isinstance(sha256, str) else sha256
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise UsageError(f"sha256 must be 64 hex digits, not {sha256!r}")
    return value
