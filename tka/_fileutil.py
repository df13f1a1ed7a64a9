"""Atomic, durable file writes and advisory locks, shared by every on-disk component."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator

from tka.errors import StorageError

__all__ = ["atomic_write", "fsync_dir", "locked"]


def fsync_dir(path: str) -> None:
    """Flush a directory entry change (a rename, a new file) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o644, prefix: str = ".tmp-") -> None:
    """Replace *path* with *data* so that readers see the old or the new file, never a part.

    Writes a temporary file in the same directory, fsyncs it, renames it over
    *path* and fsyncs the directory, so the new content survives a crash once
    this returns. The file is created with *mode* from the start (a secret
    is never readable by others, even briefly). Temporary files are named
    *prefix* plus random characters, so a reader can recognise leftovers of
    an interrupted write.
    """
    import tempfile  # here: read-only commands ('tka lock status') never need it

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


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
