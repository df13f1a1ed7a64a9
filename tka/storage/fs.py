"""AUM store in Tailscale's on-disk layout (twin of the ``FS`` chonk in ``tka/tailchonk.go``).

Layout, shared with Tailscale so either side can open the other's directory::

    <dir>/last_active_ancestor        the raw 32-byte hash (absent: no hint)
    <dir>/<XY>/<XY...>                one file per AUM, named by the base32 text
                                      of its hash, in a directory named by the
                                      first two characters of that text

Each AUM file holds one CBOR map (``fsHashInfo``) with integer keys:

* ``2``: the AUM, as a nested map (not a byte string);
* ``3``: CreatedUnix, seconds since the epoch of the first commit (omitted when 0);
* ``4``: PurgedUnix, set when compaction purged the AUM (omitted when 0); a
  purged entry stays on disk and reads as absent;
* ``1`` is a retired field (a children list) that old versions wrote: it is
  ignored on read and never written.

Reading follows Tailscale: only the first CBOR item of a file is read (Go
decodes with a stream decoder, so trailing bytes are ignored), with the strict
decoder options; an entry whose AUM does not hash to its file name is an
error; names that are not valid hashes (temporary files, ``.DS_Store``) are
skipped; a name that decodes to a hash (Go's decoder also takes non-canonical
spellings, see ``_parse_name``) is always read from the hash's canonical
place ``<XY>/<hash text>``, so a file in the wrong prefix directory makes the
scan fail, and junk under an alias name changes nothing, as in Go. Prefix
directories that are symlinks are not listed, but AUMs are still read
through them by path, as Go's ``get`` does.

Writing: each file is written to a temporary name in the same directory,
synced, given mode 0644, renamed over its final name, and the directory is
synced; a reader never sees a partial AUM. A batch is committed AUM by AUM in
the given order, so a crash leaves a prefix of the batch.

Several processes may share one directory. Writers of this module take an
advisory lock (``fcntl.flock`` on ``<dir>/.tka-lock``, a root-level file that
Tailscale ignores) and, before changing anything, write a fresh random
generation token into it. Each store object caches the decoded entries and
the parent index after one scan, and trusts the cache only while the token is
the one it scanned under; scans take the lock shared, so they never see half
of another process's batch. Changes made behind the lock's back (by
Tailscale itself, or by hand) are not noticed until the store is reopened,
which is also what Tailscale's own store promises.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import time

# threading.RLock() returns this very type; importing threading for it would
# add to the start-up time of 'tka lock status', which opens this store.
from _thread import RLock
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import cbor2

from tka import codec
from tka._fileutil import atomic_write, fsync_dir
from tka._record import FrozenRecord, slot_setters
from tka._schema import Field, fill_struct, key_shapes
from tka.aum import (
    AUM,
    HASH_SIZE,
    _blake2s,
    _plain_hash_text_value,
    hash_from_text,
    hash_to_text,
)
from tka.aum import _from_plain as _aum_from_plain
from tka.codec import Simple
from tka.errors import DecodeError, StorageError

__all__ = ["FilesystemStore", "decode_entry", "encode_entry"]

_LAA_NAME: Final = "last_active_ancestor"
_LOCK_NAME: Final = ".tka-lock"
# Temporary files get names that can never parse as a hash (they start with
# a dot and are longer than 52 characters), so a scan skips them whatever
# state a crash left them in.
_TMP_PREFIX: Final = ".tka-tmp-"
_TOKEN_SIZE: Final = 16
_FILE_MODE: Final = 0o644
_DIR_MODE: Final = 0o755
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
# Go's zero time.Time as a Unix timestamp: what Tailscale reports as the
# commit time of a legacy entry whose file vanished under it.
_GO_ZERO_TIME: Final = -62135596800.0


class _Entry(FrozenRecord):
    """One decoded ``fsHashInfo`` file and the exact bytes it was decoded from."""

    __slots__ = ("aum", "created_unix", "purged_unix", "raw")
    _fields = ("aum", "created_unix", "purged_unix", "raw")

    aum: AUM | None
    created_unix: int
    purged_unix: int
    raw: bytes

    def __init__(self, aum: AUM | None, created_unix: int, purged_unix: int, raw: bytes) -> None:
        _set_entry_aum(self, aum)
        _set_entry_created_unix(self, created_unix)
        _set_entry_purged_unix(self, purged_unix)
        _set_entry_raw(self, raw)

    @property
    def active(self) -> bool:
        """Whether the entry counts as a stored AUM (has one and is not purged)."""
        return self.aum is not None and self.purged_unix <= 0


_set_entry_aum, _set_entry_created_unix, _set_entry_purged_unix, _set_entry_raw = slot_setters(
    _Entry, _Entry._fields
)


def _fill_int64(node: Any, where: str) -> int:
    """Go's decoding of a CBOR item into an ``int64`` field."""
    if node is None:
        return 0
    if isinstance(node, bool) or not isinstance(node, (int, Simple)):
        raise DecodeError(f"{where}: cannot decode {type(node).__name__} into a 64-bit integer")
    # fxamacker/cbor decodes an unassigned simple value as its number.
    value = node.value if isinstance(node, Simple) else node
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise DecodeError(f"{where}: {value} overflows a 64-bit integer")
    return value


def _fill_aum_ptr(node: Any, where: str) -> AUM | None:
    # A pointer field: CBOR nil leaves it nil, anything else must be an AUM.
    if node is None:
        return None
    return AUM.from_cbor_obj(node, where)


_ENTRY_FIELDS: Final[dict[int, Field]] = {
    2: ("aum", _fill_aum_ptr, None),
    3: ("created_unix", _fill_int64, 0),
    4: ("purged_unix", _fill_int64, 0),
}


def decode_entry(data: bytes, where: str = "aum file") -> tuple[AUM | None, int, int]:
    """Decode an AUM file as Tailscale does: ``(aum, created_unix, purged_unix)``.

    Only the first CBOR item is read; bytes after it are ignored. Raises
    :class:`~tka.errors.DecodeError` when that item is not a valid entry.
    Does not check the AUM against the file name.
    """
    fast = _decode_canonical_entry(data)
    if fast is not None:
        return fast
    return _decode_entry_strictly(data, where)


def _decode_entry_strictly(data: bytes, where: str) -> tuple[AUM | None, int, int]:
    """:func:`decode_entry` by the strict parser, for files not in the canonical form."""
    tree, _ = codec.parse_first(data)
    values = fill_struct(tree, _ENTRY_FIELDS, where)
    return values["aum"], values["created_unix"], values["purged_unix"]


# Key 2 (the AUM) is always written, the times only when non-zero.
_ENTRY_SHAPES: Final = key_shapes((2,), (3, 4))
_loads: Final = cbor2.loads
_dumps: Final = cbor2.dumps


def _decode_canonical_entry(data: bytes) -> tuple[AUM, int, int] | None:
    """The fast path of :func:`decode_entry`, for files in the form :func:`encode_entry` writes.

    The same provably equivalent scheme as :meth:`AUM.from_bytes` (see the
    end of :mod:`tka._schema`): cbor2's C decoder, a narrow filler that
    accepts only what :func:`encode_entry` produces (positive times, the AUM
    as its canonical map), and a byte-exact re-encoding check, which also
    rules out trailing bytes (the strict path handles those). ``None`` sends
    the file to the strict path.
    """
    if type(data) is not bytes:
        return None
    # codec.loads_plain, plain_keys_ok and codec.encode_ordered written out
    # (this runs for every file when a chain is opened).
    try:
        t = _loads(data)
    except Exception:
        return None  # the strict parser gives the authoritative error
    if type(t) is not dict:
        return None
    keys = tuple(t)
    if keys not in _ENTRY_SHAPES:
        return None
    for k in keys:
        if type(k) is not int:  # True == 1 and 2.0 == 2 passed the membership test
            return None
    # The AUM's canonical bytes are the value of key 2: after the one-byte
    # map head and the key, up to the time pairs, whose sizes are known.
    created = purged = tail = 0
    if 3 in t:
        created = t[3]
        if type(created) is not int or not 0 < created <= _INT64_MAX:
            return None
        tail += 1 + codec.head_size(created)
    if 4 in t:
        purged = t[4]
        if type(purged) is not int or not 0 < purged <= _INT64_MAX:
            return None
        tail += 1 + codec.head_size(purged)
    aum = _aum_from_plain(t[2])
    if aum is None or _dumps(t) != data:
        return None
    canonical = data[2 : len(data) - tail]
    aum.__dict__["canonical"] = canonical
    aum.__dict__["hash"] = _blake2s(canonical).digest()
    return aum, created, purged


def encode_entry(aum: AUM, created_unix: int = 0, purged_unix: int = 0) -> bytes:
    """The bytes Tailscale writes for an entry (canonical CBOR, zero times omitted)."""
    # Spliced rather than re-encoded: the canonical form of a map with keys
    # 2, 3, 4 is its head, then each key followed by its value's own
    # canonical form, and the AUM's canonical bytes are computed once per AUM.
    parts = [b"\x02", aum.to_bytes()]
    if created_unix:
        parts += [b"\x03", codec.encode(created_unix)]
    if purged_unix:
        parts += [b"\x04", codec.encode(purged_unix)]
    return bytes([0xA0 | (len(parts) // 2)]) + b"".join(parts)


def _parse_name(name: str) -> bytes | None:
    """The hash an AUM file name spells, or ``None`` for names Tailscale skips.

    Go parses each listed name with ``AUMHash.UnmarshalText``
    (:func:`tka.aum.hash_from_text`): besides the canonical text, that takes
    names with ``\r``/``\n`` in them and non-canonical spellings. Such a
    name still names the hash it decodes to, whose file is then read from
    its canonical place.
    """
    plain = _plain_hash_text_value(name)
    if plain is not None:
        # 52 characters of the alphabet: the name of every file Tailscale writes.
        return plain
    try:
        return hash_from_text(name)
    except DecodeError:
        return None


def _is_canonical_name(name: str) -> bool:
    """Whether a name that parsed is the canonical text of its hash (see ``_CANONICAL_LAST``)."""
    return len(name) == 52 and name[-1] in _CANONICAL_LAST and "\n" not in name and "\r" not in name


# The 52nd character of a hash's text carries the hash's last bit and four
# padding bits. Go's decoder (like Python's) ignores the padding bits, so 32
# spellings decode to the same hash; in the canonical one (Go's String) the
# padding bits are zero, which leaves "A" (last bit 0) and "Q" (last bit 1).
_CANONICAL_LAST: Final = frozenset("AQ")


_READ_SIZE: Final = 1 << 16


def _read_file(path: str) -> bytes:
    """The whole file, with raw system calls.

    About half the cost of ``open(path, "rb").read()`` for a small file (no
    buffered file object is built), and opening a chain reads every AUM file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _READ_SIZE)
        # A read of a regular file returns less than asked only at its end,
        # so an AUM file (a few hundred bytes) takes one read, not two.
        if len(data) == _READ_SIZE:
            more = os.read(fd, _READ_SIZE)
            while more:
                data += more
                more = os.read(fd, _READ_SIZE)
        return data
    finally:
        os.close(fd)


class FilesystemStore:
    """A :class:`~tka.storage.CompactableStorage` in Tailscale's on-disk layout.

    *path* is the store directory (created with mode 0755 if missing). *clock*
    returns the current Unix time; it stamps CreatedUnix and PurgedUnix
    (whole seconds, as Tailscale). Thread-safe, and safe for several
    processes using this class on one directory (see the module docstring).

    Where Tailscale's store and the storage protocol differ, this follows
    Tailscale: committing a stored AUM again keeps its CreatedUnix (also
    after a purge, since the purged entry keeps it), so its commit time does
    not move. Purging an unknown hash is ignored (Tailscale reports an error).
    """

    def __init__(
        self, path: str | os.PathLike[str], clock: Callable[[], float] = time.time
    ) -> None:
        self._base = os.fspath(path)
        self._clock = clock
        self._mutex = RLock()
        try:
            os.makedirs(self._base, mode=_DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"fs store: creating {self._base}: {exc.strerror or exc}") from exc
        if not os.path.isdir(self._base):
            raise StorageError(f"fs store: {self._base} is not a directory")
        self._lock_path = os.path.join(self._base, _LOCK_NAME)
        # os.path.join(self._base, xy, name) is this + xy + os.sep + name
        # (spelled out where every AUM file of a chain is read).
        self._root = os.path.join(self._base, "")
        self._lock_fd: int | None = None
        self._lock_writable = False
        # Decoded files by hash, kept with their bytes so a rescan decodes
        # only files whose bytes changed. AUMs are immutable and
        # content-addressed, so this never goes stale in a harmful way.
        self._decoded: dict[bytes, _Entry] = {}
        # The index: valid only while _index_ready and the lock file holds
        # _gen. _entries has every scanned file (purged ones too),
        # _active the stored AUMs in scan order, _children the parent index.
        self._index_ready = False
        self._gen: bytes | None = None
        self._entries: dict[bytes, _Entry] = {}
        self._active: dict[bytes, AUM] = {}
        self._children: dict[bytes, list[bytes]] = {}
        self._repeats = False
        self._closed = False
        self._open_lock_file(create=False)

    # -- lifecycle -------------------------------------------------------

    @property
    def path(self) -> str:
        """The store directory."""
        return self._base

    def close(self) -> None:
        """Release the lock file descriptor. The store must not be used afterwards."""
        with self._mutex:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            self._closed = True

    def __enter__(self) -> FilesystemStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the lock file and generation token ------------------------------

    def _open_lock_file(self, create: bool) -> None:
        """Open ``.tka-lock`` if it exists (or create it when *create*)."""
        if self._lock_fd is not None and (self._lock_writable or not create):
            return
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self._lock_path, flags, _FILE_MODE)
            writable = True
        except FileNotFoundError:
            return
        except OSError as exc:
            if create or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StorageError(f"fs store: opening {self._lock_path}: {exc}") from exc
            # A directory we may only read (an audit of a node's store):
            # readers need the token and the shared lock, not write access.
            try:
                fd = os.open(self._lock_path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return
            except OSError as exc2:
                raise StorageError(f"fs store: opening {self._lock_path}: {exc2}") from exc2
            writable = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._lock_fd, self._lock_writable = fd, writable

    def _read_token(self) -> bytes | None:
        """The current generation token; ``None`` while no writer ever ran here."""
        if self._lock_fd is None:
            self._open_lock_file(create=False)
            if self._lock_fd is None:
                return None
        try:
            return os.pread(self._lock_fd, 64, 0)
        except OSError as exc:
            raise StorageError(f"fs store: reading {self._lock_path}: {exc}") from exc

    @contextlib.contextmanager
    def _flock(self, exclusive: bool) -> Iterator[None]:
        if exclusive:
            self._open_lock_file(create=True)
        fd = self._lock_fd
        if fd is None:
            # No lock file means no writer of this module has touched the
            # directory; a writer creates it (and bumps the token) before it
            # changes anything, so an unlocked scan is caught afterwards.
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError as exc:
            raise StorageError(f"fs store: locking {self._lock_path}: {exc}") from exc
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _bump_token(self) -> None:
        """Announce a change to other processes; call holding the exclusive lock."""
        assert self._lock_fd is not None
        import secrets  # here: read-only commands ('tka lock status') never need it

        token = secrets.token_bytes(_TOKEN_SIZE)
        try:
            # No fsync: the token only matters to running processes, and a
            # power loss ends them all. Written in place: a torn read can
            # only make a reader rescan needlessly.
            os.pwrite(self._lock_fd, token, 0)
        except OSError as exc:
            raise StorageError(f"fs store: writing {self._lock_path}: {exc}") from exc
        self._gen = token

    def _index_valid(self) -> bool:
        """Whether the cached index still describes the directory."""
        if not self._index_ready:
            return False
        if self._read_token() != self._gen:
            self._index_ready = False
        return self._index_ready

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("fs store: used after close")

    # -- reading files ---------------------------------------------------

    def _aum_path(self, h: bytes) -> tuple[str, str]:
        name = hash_to_text(h)
        return os.path.join(self._base, name[:2]), name

    def _decode(self, h: bytes, raw: bytes, path: str) -> _Entry:
        known = self._decoded.get(h)
        if known is not None and known.raw == raw:
            return known
        # decode_entry, written out so that the text naming the file for an
        # error is made only for a file that needs the strict parser (this
        # runs for every file when a chain is opened).
        decoded: tuple[AUM | None, int, int] | None = _decode_canonical_entry(raw)
        if decoded is None:
            try:
                decoded = _decode_entry_strictly(raw, f"aum file {path}")
            except DecodeError as exc:
                raise StorageError(f"fs store: reading {path}: {exc}") from exc
        aum, created, purged = decoded
        if aum is not None and aum.hash != h:
            raise StorageError(
                f"fs store: {path}: aum does not match file name hash {aum.hash_text}"
            )
        entry = _Entry(aum, created, purged, raw)
        self._decoded[h] = entry
        return entry

    def _read_entry(self, h: bytes, listed_name: str | None = None) -> _Entry | None:
        """Read one entry from its canonical place; ``None`` when there is no file.

        *listed_name*, a directory entry that parsed to *h*, saves encoding
        the name again when it is already the canonical spelling (every
        other character holds five bits of the hash, so only the last one
        can differ, see ``_CANONICAL_LAST``). Whatever name was listed, and
        in whichever directory, the file read is the canonical
        ``<XY>/<hash text>``, as Go's ``get`` does.
        """
        if listed_name is not None and _is_canonical_name(listed_name):
            name = listed_name
            path = self._root + name[:2] + os.sep + name
        else:
            d, name = self._aum_path(h)
            path = os.path.join(d, name)
        try:
            raw = _read_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"fs store: reading {path}: {exc.strerror or exc}") from exc
        return self._decode(h, raw, path)

    def _entry(self, h: bytes) -> _Entry | None:
        """The entry for *h*, from the index when it has it, else from disk (as Go's ``get``).

        A miss in the index still goes to disk: Go reads an AUM by its
        canonical path even where the listing skipped it (a prefix
        directory that is a symlink is not listed, but is followed).
        """
        if self._index_valid():
            entry = self._entries.get(h)
            if entry is not None:
                return entry
        return self._read_entry(h)

    def _scan(self) -> None:
        """Rebuild the index from the directory; call holding the lock (either mode)."""
        token = self._read_token()
        entries: dict[bytes, _Entry] = {}
        active: dict[bytes, AUM] = {}
        children: dict[bytes, list[bytes]] = {}
        repeats = False
        try:
            prefixes = sorted(os.scandir(self._base), key=lambda e: e.name)
        except OSError as exc:
            raise StorageError(f"fs store: reading {self._base}: {exc.strerror or exc}") from exc
        for prefix in prefixes:
            # As Go's DirEntry.IsDir: a symlink is not followed.
            if not prefix.is_dir(follow_symlinks=False):
                continue
            try:
                names = sorted(os.listdir(prefix.path))
            except OSError as exc:
                raise StorageError(
                    f"fs store: reading {prefix.path}: {exc.strerror or exc}"
                ) from exc
            for name in names:
                h = _parse_name(name)
                if h is None:
                    continue
                entry = entries.get(h)
                if entry is None:
                    entry = self._read_entry(h, name)
                    if entry is None:
                        # Go reads the hash's canonical path, whatever
                        # directory the name was listed in.
                        d, canon = self._aum_path(h)
                        raise StorageError(
                            f"fs store: {os.path.join(prefix.path, name)!r} names aum {canon}, "
                            "whose file is missing or misplaced: "
                            f"no file at {os.path.join(d, canon)}"
                        )
                    entries[h] = entry
                aum = entry.aum
                if aum is None or not entry.active:
                    continue
                # Indexed per listed name, in listing order: a hash listed
                # under several names is that many children of its parent.
                if h in active:
                    repeats = True
                active[h] = aum
                parent = aum.parent
                if parent is not None:
                    children.setdefault(parent, []).append(h)
        self._entries, self._active, self._children = entries, active, children
        self._repeats = repeats
        self._gen, self._index_ready = token, True

    def _ensure_index(self) -> None:
        if self._index_valid():
            return
        with self._flock(exclusive=False):
            self._scan()

    # -- writing files ---------------------------------------------------

    def _atomic_write(self, d: str, name: str, data: bytes) -> None:
        """Write *data* to ``d/name`` so that readers see the old or the new file only.

        The rename is made durable (directory fsync) before the next AUM of a
        batch is written, so after a power loss too a prefix survives. Files
        are exactly 0644, as Tailscale's atomicfile writes them.
        """
        atomic_write(os.path.join(d, name), data, _FILE_MODE, prefix=f"{_TMP_PREFIX}{name}-")

    def _write_entry(self, h: bytes, entry: _Entry) -> None:
        d, name = self._aum_path(h)
        try:
            if not os.path.isdir(d):
                os.makedirs(d, mode=_DIR_MODE, exist_ok=True)
                fsync_dir(self._base)
            self._atomic_write(d, name, entry.raw)
        except OSError as exc:
            raise StorageError(f"fs store: writing {os.path.join(d, name)}: {exc}") from exc
        self._decoded[h] = entry

    def _remove_stale_temps(self, dirs: set[str]) -> None:
        """Delete temporary files crashed writers left; call holding the exclusive lock."""
        for d in dirs:
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for name in names:
                if name.startswith(_TMP_PREFIX):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(d, name))

    def _now(self) -> int:
        return math.floor(self._clock())

    @contextlib.contextmanager
    def _writing(self) -> Iterator[set[str]]:
        """Hold the exclusive lock with an up-to-date view; yields the set of touched dirs."""
        with self._flock(exclusive=True):
            if self._index_ready and self._read_token() != self._gen:
                # Another process changed the directory: rescan while no
                # one else can write.
                self._scan()
            touched: set[str] = set()
            try:
                yield touched
            finally:
                self._remove_stale_temps(touched)

    def _index_put(self, h: bytes, old: _Entry | None, new: _Entry) -> None:
        """Keep the index in step with a file this process just wrote."""
        if not self._index_ready or new.aum is None:
            return
        self._entries[h] = new
        was_active = old is not None and old.active
        parent = new.aum.parent
        if new.active and not was_active:
            self._active[h] = new.aum
            if parent is not None:
                kids = self._children.setdefault(parent, [])
                if h not in kids:
                    kids.append(h)
        elif was_active and not new.active:
            self._active.pop(h, None)
            if parent is not None and parent in self._children:
                kids = [k for k in self._children[parent] if k != h]
                if kids:
                    self._children[parent] = kids
                else:
                    del self._children[parent]

    # -- Storage ---------------------------------------------------------

    def get(self, aum_hash: bytes) -> AUM | None:
        """The stored AUM with this hash, or ``None`` (also when purged)."""
        with self._mutex:
            self._check_open()
            entry = self._entry(bytes(aum_hash))
            return entry.aum if entry is not None and entry.active else None

    def children(self, aum_hash: bytes) -> list[AUM]:
        """Stored AUMs whose parent is *aum_hash*."""
        with self._mutex:
            self._check_open()
            self._ensure_index()
            return [self._active[h] for h in self._children.get(bytes(aum_hash), ())]

    def lists_an_aum_twice(self) -> bool:
        """Whether some stored AUM is listed under more than one file name.

        Tailscale counts such an AUM once per name among its parent's
        children, so fork choice weighs its copies against each other (and
        crashes where weighing crashes); :func:`tka.chain.compute_active_chain`
        asks this to keep that behaviour.
        """
        with self._mutex:
            self._check_open()
            self._ensure_index()
            return self._repeats

    def heads(self) -> list[AUM]:
        """Stored AUMs with no stored child."""
        with self._mutex:
            self._check_open()
            self._ensure_index()
            return [a for h, a in self._active.items() if not self._children.get(h)]

    def snapshot(self) -> _Snapshot:
        """A read-only view of the AUMs stored now, for one walk over the chain.

        Opening a chain looks every AUM up once or twice, and :meth:`get`
        first checks, on every call, that no other process changed the
        directory since it was indexed. The view checks once, when it is
        taken, and then answers from that index (which still follows this
        process's own commits): the walk sees one state of the directory,
        and another process's commit meanwhile is seen by the next walk. A
        hash the listing did not show is still read from its canonical
        path, as :meth:`get` does.
        """
        with self._mutex:
            self._check_open()
            self._ensure_index()
            return _Snapshot(self, self._entries, self._active, self._children, self._repeats)

    def commit_verified(self, aums: Sequence[AUM]) -> None:
        """Store verified AUMs, one file at a time in order (a crash leaves a prefix).

        AUMs already stored are left untouched; a purged one is restored
        with its original CreatedUnix, as Tailscale does.
        """
        if not aums:
            return
        with self._mutex:
            self._check_open()
            with self._writing() as touched:
                bumped = False
                for i, aum in enumerate(aums):
                    h = aum.hash
                    old = self._entry(h)
                    if old is not None and old.active:
                        continue
                    created = old.created_unix if old is not None else self._now()
                    new = _Entry(aum, created, 0, encode_entry(aum, created, 0))
                    if not bumped:
                        self._bump_token()
                        bumped = True
                    try:
                        self._write_entry(h, new)
                    except StorageError as exc:
                        raise StorageError(f"fs store: committing aum {i}: {exc}") from exc
                    touched.add(self._aum_path(h)[0])
                    self._index_put(h, old, new)

    def last_active_ancestor(self) -> bytes | None:
        """The hint stored in ``last_active_ancestor``, or ``None`` when the file is absent."""
        path = os.path.join(self._base, _LAA_NAME)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"fs store: reading {path}: {exc.strerror or exc}") from exc
        if len(data) != HASH_SIZE:
            raise StorageError(
                f"fs store: {path}: stored hash is of wrong length: {len(data)} != {HASH_SIZE}"
            )
        return data

    def set_last_active_ancestor(self, aum_hash: bytes) -> None:
        """Write the hint atomically (the raw 32 bytes, as Tailscale)."""
        h = bytes(aum_hash)
        if len(h) != HASH_SIZE:
            raise StorageError(f"fs store: last active ancestor must be {HASH_SIZE} bytes")
        with self._mutex:
            self._check_open()
            with self._writing() as touched:
                try:
                    self._atomic_write(self._base, _LAA_NAME, h)
                except OSError as exc:
                    raise StorageError(f"fs store: writing {_LAA_NAME}: {exc}") from exc
                touched.add(self._base)

    # -- CompactableStorage ----------------------------------------------

    def all_hashes(self) -> list[bytes]:
        """Hashes of every stored, not purged AUM."""
        with self._mutex:
            self._check_open()
            self._ensure_index()
            return list(self._active)

    def commit_time(self, aum_hash: bytes) -> float | None:
        """CreatedUnix of the AUM, or its file's mtime for entries that lack it (as Go)."""
        with self._mutex:
            self._check_open()
            h = bytes(aum_hash)
            entry = self._entry(h)
            if entry is None or not entry.active:
                return None
            if entry.created_unix > 0:
                return float(entry.created_unix)
            d, name = self._aum_path(h)
            try:
                return os.stat(os.path.join(d, name)).st_mtime_ns / 1e9
            except OSError:
                return _GO_ZERO_TIME

    def purge(self, hashes: Sequence[bytes]) -> None:
        """Mark AUMs purged (PurgedUnix set; the files stay, as in Tailscale)."""
        if not hashes:
            return
        with self._mutex:
            self._check_open()
            with self._writing() as touched:
                # PurgedUnix must be positive to count; a clock at or before
                # the epoch would otherwise make the purge a no-op.
                now = max(self._now(), 1)
                bumped = False
                for raw_hash in hashes:
                    h = bytes(raw_hash)
                    old = self._entry(h)
                    if old is None or old.aum is None or not old.active:
                        continue
                    new = _Entry(
                        old.aum,
                        old.created_unix,
                        now,
                        encode_entry(old.aum, old.created_unix, now),
                    )
                    if not bumped:
                        self._bump_token()
                        bumped = True
                    self._write_entry(h, new)
                    touched.add(self._aum_path(h)[0])
                    self._index_put(h, old, new)


class _Snapshot:
    """:meth:`FilesystemStore.snapshot`: lookups in one index, writes passed to the store."""

    def __init__(
        self,
        store: FilesystemStore,
        entries: dict[bytes, _Entry],
        active: dict[bytes, AUM],
        children: dict[bytes, list[bytes]],
        repeats: bool,
    ) -> None:
        self._store = store
        self._entries = entries
        self._active = active
        self._children = children
        self._repeats = repeats

    def get(self, aum_hash: bytes) -> AUM | None:
        """The stored AUM with this hash, or ``None`` (also when purged)."""
        found = self._active.get(aum_hash)
        if found is not None:
            return found
        if aum_hash in self._entries:
            return None  # listed, and purged
        return self._store.get(aum_hash)  # not listed: its canonical path, as get reads

    def children(self, aum_hash: bytes) -> list[AUM]:
        """Stored AUMs whose parent is *aum_hash*."""
        return [self._active[h] for h in self._children.get(aum_hash, ())]

    def heads(self) -> list[AUM]:
        """Stored AUMs with no stored child."""
        return [a for h, a in self._active.items() if not self._children.get(h)]

    def lists_an_aum_twice(self) -> bool:
        """As :meth:`FilesystemStore.lists_an_aum_twice`, for the listing this view shows."""
        return self._repeats

    def commit_verified(self, aums: Sequence[AUM]) -> None:
        """Passed to the store."""
        self._store.commit_verified(aums)

    def last_active_ancestor(self) -> bytes | None:
        """Passed to the store."""
        return self._store.last_active_ancestor()

    def set_last_active_ancestor(self, aum_hash: bytes) -> None:
        """Passed to the store."""
        self._store.set_last_active_ancestor(aum_hash)
