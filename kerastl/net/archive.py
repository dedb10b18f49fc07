"""Safe unpacking of downloaded archives (tar, tar.gz/bz2/xz, zip) by our own code.

It refuses absolute names, ``..`` components, links that resolve outside the destination and device
or FIFO members (Keras' ``get_file`` had a tar path-traversal CVE, CVE-2025-12060); an archive may
unpack to at most ``MAX_EXTRACT_BYTES`` bytes in ``MAX_EXTRACT_MEMBERS`` members, and an unpacked
tree appears under its final name only when complete. Pure standard library: importing this module
must not import TensorFlow or Keras.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from kerastl.errors import KerastlError, UsageError, one_line
from kerastl.net.cache import _CHUNK, _cache_write_error, _make_dirs

__all__ = ["MAX_EXTRACT_BYTES", "MAX_EXTRACT_MEMBERS", "extract_archive"]

#: Most bytes one archive may unpack to (files' contents), and most members it may have. An archive
#: is small on the wire and can expand to fill the disk; the largest TF-Hub modules unpack to a few
#: GiB in a few thousand files. Override per call (``extract_archive(max_bytes=...)``) or with
#: ``$KERASTL_MAX_EXTRACT_BYTES`` / ``$KERASTL_MAX_EXTRACT_MEMBERS``.
MAX_EXTRACT_BYTES = 8 << 30
MAX_EXTRACT_MEMBERS = 100_000


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
            f"cannot move the unpacked files to {dest} ({one_line(exc)}); delete it and retry"
        ) from exc


def _archive_kind(archive: Path) -> str:
    try:
        with open(archive, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise KerastlError(
            f"cannot read archive {archive} ({one_line(exc)}); check the path and permissions"
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
        f"refusing to unpack {archive.name}: member {one_line(repr(member))} {why}; the archive "
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
                f"cannot unpack member {one_line(repr(name))} of {self.archive.name} "
                f"({one_line(exc)}); free disk space, or get an intact copy of the archive"
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
            f"{archive} is corrupt or truncated ({one_line(exc) or type(exc).__name__}); delete "
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
            f"{archive} is corrupt, truncated or encrypted ({one_line(exc) or type(exc).__name__})"
            "; delete it so it is downloaded again"
        ) from exc
    unpacker.finish()
