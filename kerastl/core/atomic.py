"""Atomic writes of one file, one directory, or a set of files that must change together.

A killed or failed run never leaves a half-written output under its final name, and outputs that belong
together (a model and its labels, a .tflite file and its vocabulary) are never left mixed, old with new.

Three mechanisms, from the strongest:

- **A directory set** (`commit_directory`, `atomic_path(directory=True)`): the new directory is staged complete
  beside the target, durable (every file and directory fsynced), and swapped with the target by ONE
  `renameat2(RENAME_EXCHANGE)` call (Linux 3.15+, on ext4, XFS, btrfs, tmpfs and most local file systems).
  Before the swap every reader sees the old set, after it the new one, whatever program reads it. Entries of
  the target that kerastl does not own (files the user put there, a run's backups) are hard-linked into the
  staged directory first, so they survive the swap.
- **A journalled set** (`commit_set`), where no single rename can switch the set: the files are staged beside
  their targets and fsynced, then a journal listing the renames is written atomically (the commit point), and
  the renames are made. A kill before the journal leaves the old set; after it, the new set is completed by
  the next kerastl command that reads or writes that folder (`recover`, which every kerastl reader and writer
  of these outputs calls first). Until then, a program other than kerastl may see part of the new set beside
  the rest of the old one. A directory swap falls back to this where `RENAME_EXCHANGE` is unsupported (another
  OS, a file system answering EINVAL: the journal then renames the old directory aside and the new one in),
  and when the process's working directory is inside the target (the owned files are then committed one by
  one inside it, so that the process is not left in a deleted directory).
- **One file** (`atomic_path`, `write_text`): written under a temporary name, fsynced, renamed over the target
  (atomic on POSIX), and the directory fsynced.

Temporary names are fixed (`.NAME.kerastl-new`, `.NAME.kerastl-old`, `.NAME.kerastl-commit`), so that a later
run finds and removes what a killed one left. Two kerastl processes must not write the same target at once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from pathlib import Path

from kerastl.errors import KerastlError, one_line

STAGED = ".kerastl-new"
OLD = ".kerastl-old"
JOURNAL = ".kerastl-commit"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def staged_path(final) -> Path:
    """The temporary name beside `final` that its new content is written under. It keeps `final`'s suffix
    (Keras insists on `.keras`)."""
    final = Path(final)
    return final.with_name(f".{final.stem}{STAGED}{final.suffix}")


def _old_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{OLD}")


def _journal_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{JOURNAL}")


# ---------------------------------------------------------------------------------------------------------
# Durability


def fsync_path(path) -> None:
    """Flushes a file's or a directory's content to disk (a directory's: the names in it)."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if Path(path).is_dir() else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as error:
        # Some file systems cannot fsync a directory; there is nothing more to do there.
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(path) -> None:
    """fsyncs every regular file and directory under `path` (and `path`), deepest first."""
    path = Path(path)
    if path.is_symlink():
        return
    if path.is_dir():
        for root, dirs, files in os.walk(path, topdown=False):
            for name in files:
                child = Path(root) / name
                if child.is_file() and not child.is_symlink():
                    fsync_path(child)
            fsync_path(root)
    elif path.exists():
        fsync_path(path)


# ---------------------------------------------------------------------------------------------------------
# The atomic directory swap


def exchange(a, b) -> bool:
    """Swaps the two existing paths `a` and `b` in one atomic step (`renameat2(RENAME_EXCHANGE)`).

    Returns False, having changed nothing, where the OS or the file system does not support the swap.

    Raises:
        OSError: the swap is supported but failed (e.g. the paths are on different file systems).
    """
    function = _renameat2()
    if function is None:
        return False
    import ctypes

    result = function(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


_RENAMEAT2 = []


def _renameat2():
    if not _RENAMEAT2:
        function = None
        if os.name == "posix":
            import ctypes

            with contextlib.suppress(OSError, AttributeError):
                function = ctypes.CDLL(None, use_errno=True).renameat2
                function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                function.restype = ctypes.c_int
        _RENAMEAT2.append(function)
    return _RENAMEAT2[0]


# ---------------------------------------------------------------------------------------------------------
# Journalled sets


def commit_set(entries, *, journal=None) -> None:
    """Replaces several entries of one directory as one set: the new set appears complete, or (after a kill)
    the next `recover` of that directory completes it; a kill before the journal is written leaves the old set.

    Args:
        entries: `(staged, final)` pairs in the order the renames are made (put the file that describes the
            others last); `staged` is a complete file or directory beside `final` (see `staged_path`), or None
            to remove `final` as part of the set.
        journal: the journal's path (default: beside the first entry's final path).
    """
    entries = [(None if staged is None else Path(staged), Path(final)) for staged, final in entries]
    directory = entries[0][1].parent
    if any(final.parent != directory or (staged is not None and staged.parent != directory)
           for staged, final in entries):
        raise ValueError("commit_set: every entry must be in one directory")
    for staged, _ in entries:
        if staged is not None:
            fsync_tree(staged)
    fsync_path(directory)
    journal = Path(journal) if journal is not None else _journal_path(entries[0][1])
    record = {"format_version": 1, "entries": [[None if s is None else s.name, f.name] for s, f in entries]}
    _write_file(journal, json.dumps(record, indent=1) + "\n")  # the commit point
    _roll_forward(journal)


def recover(directory) -> None:
    """Completes every set whose commit a killed kerastl left half done in `directory` (see `commit_set`).

    Every kerastl reader and writer of multi-file outputs calls this before it looks at them.
    """
    directory = Path(directory)
    with contextlib.suppress(OSError):
        journals = sorted(p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(JOURNAL))
        for journal in journals:
            _roll_forward(journal)


def recover_around(path) -> None:
    """`recover` for every set `path` may belong to: the folder holding it (a journalled set, a directory set
    that fell back to a journal) and, for a file inside a directory set, that directory's folder."""
    path = Path(os.path.abspath(path))
    recover(path.parent)
    recover(path.parent.parent)
    if path.is_dir():
        recover(path)


def _roll_forward(journal: Path) -> None:
    try:
        entries = json.loads(journal.read_text(encoding="utf-8"))["entries"]
    except FileNotFoundError:
        return  # completed meanwhile
    except (OSError, ValueError, KeyError, TypeError):
        # Only a complete journal ever gets its name (`_write_file`); this one is not ours.
        return
    directory = journal.parent
    for staged, final in entries:
        _apply(directory, staged, final)
    fsync_path(directory)
    with contextlib.suppress(FileNotFoundError):
        journal.unlink()
    fsync_path(directory)
    for _, final in entries:
        _remove(_old_path(directory / final))


def _apply(directory: Path, staged_name, final_name) -> None:
    """One entry, idempotent: done again after a kill it changes nothing that was already changed."""
    final = directory / final_name
    old = _old_path(final)
    if staged_name is None:
        if final.exists() or final.is_symlink():
            _remove(old)
            os.replace(final, old)
        return
    staged = directory / staged_name
    if not (staged.exists() or staged.is_symlink()):
        return  # already renamed
    if final.is_dir() and not final.is_symlink():
        # A non-empty directory cannot be renamed over: move the old one aside, then the new one in. While
        # `staged` exists, an existing `final` is still the old one.
        _remove(old)
        os.replace(final, old)
    os.replace(staged, final)


# ---------------------------------------------------------------------------------------------------------
# Directory sets


@contextlib.contextmanager
def staged_directory(target):
    """Yields a new empty directory beside `target` to write its new content into; on an exception it is removed
    and `target` is untouched. Commit it with `commit_directory`."""
    target = _resolved(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target.parent)
    staged = staged_path(target)
    _remove(staged)
    staged.mkdir()
    try:
        yield staged
    except BaseException:
        _remove(staged)
        raise


def commit_directory(staged, target, *, owned=None) -> None:
    """Makes the directory `staged` (from `staged_directory`) the directory `target`, in one atomic step where
    the OS allows (see the module docstring for where it falls back to a journal).

    Args:
        owned: the names in `target` that the new set replaces (an owned name absent from `staged` is removed
            with the old set). Every other entry of `target` is hard-linked (copied where links are impossible)
            into the new directory first, so nothing the user put there is lost. None: `target` is wholly
            replaced.
    """
    staged, target = Path(staged), _resolved(target)
    try:
        if target.is_dir() and owned is not None:
            _carry_over(target, staged, set(owned))
        if target.is_dir():
            with contextlib.suppress(OSError):
                os.chmod(staged, stat.S_IMODE(target.stat().st_mode))
        fsync_tree(staged)
        fsync_path(target.parent)
    except BaseException:
        _remove(staged)
        raise
    if not target.exists():
        os.rename(staged, target)
        fsync_path(target.parent)
        return
    if _cwd_inside(target):
        # Renaming the directory would leave this process (and the shell that started it) in the old,
        # deleted one: the set is committed file by file inside it instead, through a journal there.
        _commit_inside(staged, target, owned)
        return
    try:
        swapped = exchange(staged, target)
    except OSError as error:  # supported, yet refused here (e.g. target is a mount point): nothing changed
        _remove(staged)
        raise KerastlError(f"cannot put the new {target.name} in place of {target} "
                           f"({error.strerror or one_line(error)}); the previous files are untouched: write "
                           "to another --out") from None
    if swapped:
        fsync_path(target.parent)
        _remove(staged)  # now the old directory
        return
    commit_set([(staged, target)])


def _commit_inside(staged: Path, target: Path, owned) -> None:
    names = sorted(set(owned) if owned is not None else
                   {p.name for p in staged.iterdir()} | {p.name for p in target.iterdir()
                                                          if not p.name.startswith(".")})
    entries = []
    for name in names:
        source, final = staged / name, target / name
        if source.exists() or source.is_symlink():
            moved = staged_path(final)
            _remove(moved)
            os.rename(source, moved)
            entries.append((moved, final))
        elif final.exists() or final.is_symlink():
            entries.append((None, final))
    _remove(staged)
    if entries:
        commit_set(entries)


def _carry_over(source: Path, destination: Path, owned: set) -> None:
    for entry in source.iterdir():
        name = entry.name
        if name in owned or STAGED in name or OLD in name or name.endswith(JOURNAL) or (destination / name).exists():
            continue
        _link_tree(entry, destination / name)


def _link_tree(source: Path, destination: Path) -> None:
    if source.is_symlink():
        os.symlink(os.readlink(source), destination)
    elif source.is_dir():
        destination.mkdir()
        for child in source.iterdir():
            _link_tree(child, destination / child.name)
    elif source.is_file():
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)
    # Pipes, sockets and devices are not carried (kerastl never makes them); they stay with the old directory.


def _cwd_inside(target: Path) -> bool:
    # After a swap this process (and a shell that started it) would sit in the old, deleted directory.
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        return False
    return cwd == target or target in cwd.parents


def _resolved(path) -> Path:
    path = Path(path)
    # A symlinked target is replaced where it points, and the link kept.
    return path.resolve() if path.is_symlink() else Path(os.path.abspath(path))


# ---------------------------------------------------------------------------------------------------------
# One file or directory


@contextlib.contextmanager
def atomic_path(path, *, directory: bool = False):
    """Yields a temporary path beside `path` (`staged_path`); on success it becomes `path`.

    The temporary name keeps `path`'s suffix (Keras insists on `.keras`). On any exception, including
    KeyboardInterrupt, the temporary file or directory is removed and `path`, if it existed, is untouched.
    A file is fsynced, renamed over `path` and the directory fsynced. A directory (`directory=True`, created
    by the caller inside the `with`) replaces an existing one wholly, by `commit_directory`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path.parent)
    tmp = staged_path(path)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if directory:
        commit_directory(tmp, path)
        return
    try:
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    fsync_path(path.parent)


def write_text(path, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _write_file(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def discard(path) -> None:
    """Removes a file or a directory tree (a staged output that will not be committed); absent is fine."""
    _remove(path)


def _remove(path: Path) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
