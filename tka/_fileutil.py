"""Atomic, durable file writes and advisory locks, shared by every on-disk component.

Writing never destroys what was at the path: :func:`atomic_write` renames its
new file only over a regular file (or into an empty place), never over a
device, FIFO, socket, directory or symbolic link, and :func:`write_through`
writes into a FIFO, the null device or a terminal without creating,
truncating or renaming anything. :func:`check_target` says beforehand which of
the two a path calls for, so a command can refuse before it does anything
else.

What remains of the race between the check and the write: with
``replace=False`` nothing (the new file is hard-linked into place, which fails
if anything appeared there; on a file system without hard links, a re-check
just before the rename leaves a window of microseconds). With
``replace=True`` the path is checked again just before the rename; someone who
can write to the folder can still swap in a link or FIFO in between, and the
rename then replaces *that entry* (never what it points to). A stream is
opened without ``O_CREAT`` or ``O_TRUNC`` and checked with ``fstat`` before a
byte is written, so a regular file swapped in for it is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from typing import Literal

from tka.errors import StorageError

__all__ = [
    "TargetRefused",
    "atomic_write",
    "check_target",
    "describe",
    "fsync_dir",
    "locked",
    "write_through",
]

#: What :func:`check_target` found: nothing there (create), a regular file
#: (replace), or a stream to write through.
Plan = Literal["create", "replace", "stream"]


class TargetRefused(StorageError, OSError):
    """What is at a path must not be written over.

    *kind* is ``"regular"`` (a file is there and may not be replaced),
    ``"directory"``, ``"symlink"``, ``"fifo"``, ``"char-device"``,
    ``"block-device"``, ``"socket"`` or ``"other"``; ``strerror`` says it in
    words (``"it is a FIFO"``). An :class:`OSError` too, so callers that
    report ``exc.strerror`` for any failed write keep working.
    """

    def __init__(self, path: str, kind: str, reason: str) -> None:
        OSError.__init__(self, errno.EEXIST, reason, path)
        self.path = path
        self.kind = kind

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror}"


_KINDS = (
    (stat.S_ISDIR, "directory", "a directory"),
    (stat.S_ISLNK, "symlink", "a symbolic link"),
    (stat.S_ISFIFO, "fifo", "a FIFO"),
    (stat.S_ISCHR, "char-device", "a character device"),
    (stat.S_ISBLK, "block-device", "a block device"),
    (stat.S_ISSOCK, "socket", "a socket"),
    (stat.S_ISREG, "regular", "a regular file"),
)


def _kind(mode: int) -> tuple[str, str]:
    for test, kind, words in _KINDS:
        if test(mode):
            return kind, words
    return "other", "a special file"  # pragma: no cover - doors, whiteouts


def describe(path: str) -> tuple[str, str] | None:
    """``(kind, words)`` for what is at *path* (not following a link); ``None`` if nothing.

    A symbolic link is described with what it leads to: ``"a symbolic link
    to /dev/null (a character device)"``, ``"... (which leads nowhere)"``.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    kind, words = _kind(st.st_mode)
    if kind == "symlink":
        try:
            target = os.readlink(path)
        except OSError:  # pragma: no cover - it was just there
            target = "?"
        try:
            _, leads_to = _kind(os.stat(path).st_mode)
            words = f"{words} to {target} ({leads_to})"
        except OSError:
            words = f"{words} to {target} (which leads nowhere)"
    return kind, words


def _null_rdev() -> int | None:
    try:
        st = os.stat(os.devnull)
    except OSError:  # pragma: no cover - a system without /dev/null
        return None
    return st.st_rdev if stat.S_ISCHR(st.st_mode) else None


def _own_terminals() -> set[int]:
    """The devices of this process's standard streams that are terminals."""
    found = set()
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                found.add(os.fstat(fd).st_rdev)
    return found


def _is_stream(st: os.stat_result, fd: int | None = None) -> bool:
    """A FIFO, the null device or this process's own terminal: written through, never replaced.

    Other character devices are refused without being opened: opening some
    (a watchdog, a tape drive) already does something.
    """
    if stat.S_ISFIFO(st.st_mode):
        return True
    if not stat.S_ISCHR(st.st_mode):
        return False
    if st.st_rdev == _null_rdev() or st.st_rdev in _own_terminals():
        return True
    return fd is not None and os.isatty(fd)


def _stream_target(path: str) -> bool:
    """Whether *path* (following links) is a FIFO, the null device or our terminal."""
    try:
        return _is_stream(os.stat(path))
    except OSError:
        return False


def check_target(path: str, *, replace: bool = False, streams: bool = False) -> Plan:
    """How *path* may be written, or :class:`TargetRefused` saying why not.

    ``"create"`` when nothing is there; ``"replace"`` for a regular file when
    *replace*; ``"stream"`` for a FIFO, the null device or this process's
    own terminal (or a symbolic link leading to one, such as ``/dev/stdout``)
    when *streams*. Anything else is refused: a directory, a symbolic link,
    a socket, a block or other device, a stream when not *streams*, a
    regular file when not *replace*.
    """
    found = describe(path)
    if found is None:
        return "create"
    kind, words = found
    if kind == "regular":
        if replace:
            return "replace"
        raise TargetRefused(path, kind, "a file is already there")
    if streams and kind in ("fifo", "char-device", "symlink") and _stream_target(path):
        return "stream"
    if kind == "directory":
        raise TargetRefused(path, kind, "it is a directory")
    raise TargetRefused(path, kind, f"it is {words}, which tka never replaces")


def fsync_dir(path: str) -> None:
    """Flush a directory entry change (a rename, a new file) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: ``os.link`` failures meaning "this file system has no hard links", not "something is there".
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


def _link_into_place(tmp: str, path: str) -> None:
    """Give the finished *tmp* the name *path*, failing if anything is there."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        check_target(path)  # raises, naming what appeared
        raise  # pragma: no cover - it vanished again
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        check_target(path)  # no hard links here: check again, then rename
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write(
    path: str,
    data: bytes,
    mode: int = 0o644,
    prefix: str = ".tmp-",
    *,
    replace: bool = True,
) -> None:
    """Put *data* at *path* so that readers see the old or the new file, never a part.

    Writes a temporary file in the same directory, fsyncs it, moves it to
    *path* and fsyncs the directory, so the new content survives a crash once
    this returns. The file is created with *mode* from the start (a secret
    is never readable by others, even briefly). Temporary files are named
    *prefix* plus random characters, so a reader can recognise leftovers of
    an interrupted write.

    Only a regular file is ever replaced, and only with *replace*: anything
    else at *path* (a device, FIFO, socket, directory, symbolic link; or a
    file without *replace*) raises :class:`TargetRefused` and is left as it
    was. The check is made before writing and again at the move (see the
    module's notes for what remains of the race).
    """
    import tempfile  # here: read-only commands ('tka lock status') never need it

    check_target(path, replace=replace)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            check_target(path, replace=True)
            os.replace(tmp, path)
        else:
            _link_into_place(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def write_through(path: str, data: bytes) -> None:
    """Write *data* into the FIFO, null device or terminal at *path* (see :func:`check_target`).

    Nothing is created, truncated or renamed: the path is opened for writing
    only (a FIFO waits for its reader, as ``echo > FIFO`` does), checked with
    ``fstat`` to still be a stream, and only then written. A link is followed
    only if *path* was one when checked. Raises :class:`TargetRefused` if
    something else is there now.
    """
    flags = os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC
    if not os.path.islink(path):
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link appeared since the check
            check_target(path, streams=False)
        raise
    try:
        if not _is_stream(os.fstat(fd), fd):
            check_target(path, streams=False)  # raises, naming it
            raise TargetRefused(path, "other", "it is no longer a FIFO, terminal or null device")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: str, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on *path* (created if needed).

    Waits up to *timeout* seconds for another process to release it, then
    raises :class:`~tka.errors.StorageError` naming *what* is busy.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"{what} is in use by another process; "
                        "wait for it to finish or pass a longer --lock-timeout"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
