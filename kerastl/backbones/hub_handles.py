"""TF-Hub handles: a local SavedModel directory, or an http(s) URL downloaded (pinned, or https) through
`kerastl.net` into the cache and unpacked there, with every URL and redirect hop checked against
`$KERASTL_TRUSTED_HUB_HOSTS`. Imports no TensorFlow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kerastl.errors import KerastlError

__all__ = ["TRUSTED_HOSTS_ENV", "resolve_handle"]

# Cache subdirectory (under kerastl.net.cache_dir()) for downloaded hub modules.
_CACHE_SUBDIR = "hub"
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


TRUSTED_HOSTS_ENV = "KERASTL_TRUSTED_HUB_HOSTS"


def _check_trusted_host(url: str) -> None:
    """Refuses hub URLs whose host is not listed in `$KERASTL_TRUSTED_HUB_HOSTS` (comma-separated host names;
    a leading `.` admits subdomains) when that variable is set. SavedModels run graph code, so a user or an
    administrator can pin where modules may come from."""
    from urllib.parse import urlsplit

    allowed = [h.strip().lower() for h in os.environ.get(TRUSTED_HOSTS_ENV, "").split(",") if h.strip()]
    if not allowed:
        return
    host = (urlsplit(url).hostname or "").lower()
    for entry in allowed:
        if host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry)):
            return
    raise KerastlError(
        f"hub host {host!r} is not in {TRUSTED_HOSTS_ENV} ({', '.join(allowed)}); add it there if you trust "
        "its modules, since loading one runs its graph"
    )


def resolve_handle(handle: str | os.PathLike) -> str:
    """Return the local SavedModel directory for a TF-Hub ``handle``.

    * A local directory containing ``saved_model.pb`` is returned as is (``~`` expanded).
    * An ``https://`` URL, or an ``http://`` URL pinned with ``#sha256=<hex>`` (the tarball's
      sha256; https URLs may be pinned too), is fetched in TF-Hub's compressed convention: the
      URL gets ``?tf-hub-format=compressed`` appended unless it already ends in ``.tar.gz`` or
      ``.tgz``. The tarball is downloaded into the kerastl cache (``$KERASTL_CACHE``,
      subdirectory ``hub``) and unpacked there by ``kerastl.net.fetch_and_extract``, which
      reuses a previous download, honours ``$KERASTL_OFFLINE``, checks every redirect hop and
      refuses unsafe archive members. The unpacked directory (or its only subdirectory, for
      tarballs that wrap the SavedModel in one) is returned.

    Raises KerastlError (one line) if a local path does not exist or holds no ``saved_model.pb``,
    if the handle is a URL of another scheme, an unpinned http URL, or on a host (or redirected to
    one) outside ``$KERASTL_TRUSTED_HUB_HOSTS``, if the download or unpacking fails, or if the
    unpacked archive holds no SavedModel; UsageError for a malformed ``#sha256=`` pin.
    """
    text = os.fspath(handle).strip() if isinstance(handle, (str, os.PathLike)) else None
    if not text:
        raise KerastlError(
            f"invalid TF-Hub handle {handle!r}; pass a SavedModel directory or an http(s) URL"
        )
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme:
        if scheme.group(1).lower() not in ("http", "https"):
            raise KerastlError(
                f"unsupported TF-Hub handle {text!r}; pass a local SavedModel directory or an "
                "http(s) URL (copy the module to local disk first)"
            )
        from kerastl.net import split_pin

        url, pin = split_pin(text)
        _check_trusted_host(url)
        return str(_download_module(url, pin))
    path = Path(text).expanduser()
    if not path.exists():
        raise KerastlError(
            f"TF-Hub handle {text!r} does not exist; pass an existing SavedModel directory or an "
            "http(s) URL"
        )
    if not (path / "saved_model.pb").is_file():
        raise KerastlError(
            f"{path} is not a TF2 SavedModel directory (no saved_model.pb in it); pass the "
            "directory that contains saved_model.pb"
        )
    return str(path)


def _download_module(url: str, pin: str | None = None) -> Path:
    # Imported here so that kerastl.backbones.hub_handles works (for local handles) even where downloads can't.
    from kerastl.net import fetch_and_extract

    base, _, query = url.partition("?")
    if not base.lower().endswith(_ARCHIVE_SUFFIXES) and "tf-hub-format=" not in query:
        url += ("&" if "?" in url else "?") + "tf-hub-format=compressed"
    # The host list is checked on every redirect hop too, not only on the URL the user gave.
    root = Path(
        fetch_and_extract(url, sha256=pin, subdir=_CACHE_SUBDIR, check_url=_check_trusted_host)
    )
    if (root / "saved_model.pb").is_file():
        return root
    children = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    if len(children) == 1 and (children[0] / "saved_model.pb").is_file():
        return children[0]
    raise KerastlError(
        f"the archive from {url} unpacked to {root} holds no saved_model.pb; check that the URL "
        "is a TF2 SavedModel (TF-Hub) module"
    )
