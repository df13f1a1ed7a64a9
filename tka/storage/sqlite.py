"""AUM store in one SQLite file, the embedded default for control planes.

One table row per AUM: its hash, its parent's hash (indexed), the canonical
AUM bytes, the commit time and a purged flag. The database is opened in WAL
mode with ``synchronous=FULL``, so a returned commit survives a power loss,
and with a busy timeout, so several processes can share one file. Each
:meth:`SQLiteStore.commit_verified` call is one transaction: a batch is
stored entirely or not at all.

The file is marked as a tka database with ``PRAGMA application_id`` and
carries its schema version in ``PRAGMA user_version``; opening upgrades an
older schema through :data:`MIGRATIONS` and refuses files of another
application or of a newer schema.

Semantics follow :class:`~tka.storage.memory.MemoryStore`: committing a stored
AUM again re-stamps its commit time, purging forgets an AUM (the row stays,
flagged, so its children remain findable), committing a purged AUM restores
it with a new commit time.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from tka.aum import AUM, HASH_SIZE
from tka.errors import DecodeError, StorageError

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore"]

#: ``PRAGMA application_id`` of a tka database: "TKA1" read as a big-endian int.
APPLICATION_ID: Final = 0x544B4131

#: Migrations in order; entry *i* takes the schema from version *i* to *i + 1*.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # Version 1.
    (
        """
        CREATE TABLE aums (
            hash        BLOB PRIMARY KEY CHECK (length(hash) = 32),
            parent      BLOB CHECK (parent IS NULL OR length(parent) = 32),
            aum         BLOB NOT NULL,
            commit_time REAL NOT NULL,
            purged      INTEGER NOT NULL DEFAULT 0 CHECK (purged IN (0, 1))
        ) WITHOUT ROWID
        """,
        # Only live rows are ever looked up by parent.
        "CREATE INDEX aums_by_parent ON aums (parent) WHERE purged = 0",
        """
        CREATE TABLE settings (
            name  TEXT PRIMARY KEY,
            value BLOB NOT NULL
        ) WITHOUT ROWID
        """,
    ),
)

#: The schema version this code writes.
SCHEMA_VERSION: Final = len(MIGRATIONS)

_LAA_SETTING: Final = "last_active_ancestor"
_DEFAULT_BUSY_TIMEOUT: Final = 30.0


class _Errors:
    """Turns :class:`sqlite3.Error` raised in its block into :class:`StorageError`."""

    __slots__ = ("doing", "path")

    def __init__(self, path: str, doing: str) -> None:
        self.path = path
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, sqlite3.Error):
            raise StorageError(f"sqlite store: {self.doing} {self.path}: {exc}") from exc


class SQLiteStore:
    """A :class:`~tka.storage.CompactableStorage` backed by one SQLite file.

    *path* is created if missing. *clock* returns the current Unix time and
    stamps commit times. *busy_timeout* is how long, in seconds, to wait for
    another process's write transaction. One connection per store, guarded by
    a lock, so a store can be shared between threads. Use :meth:`close` or a
    ``with`` block to release the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Callable[[], float] = time.time,
        busy_timeout: float = _DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        self._path = os.fspath(path)
        self._clock = clock
        self._lock = threading.RLock()
        # Decoded AUMs by hash. AUMs are immutable and content-addressed, so
        # a cached decode is right whatever other processes do; whether the
        # AUM is still stored is always asked of the database.
        self._cache: dict[bytes, AUM] = {}
        try:
            # isolation_level=None: no implicit transactions, each one is
            # opened explicitly with BEGIN IMMEDIATE below.
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self._path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite store: opening {self._path}: {exc}") from exc
        try:
            self._setup(busy_timeout)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    # -- lifecycle -------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def close(self) -> None:
        """Close the connection. Further use raises :class:`~tka.errors.StorageError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self, busy_timeout: float) -> None:
        conn = self._db()
        with self._errors("opening"):
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            # Identify the file before changing anything in it: switching a
            # foreign database to WAL would alter it for its owner.
            app_id, version, tables = self._identity(conn)
            if app_id == 0 and tables == 0 and version == 0:
                with self._transaction():
                    # Two processes may create the file at once: look again
                    # under the write lock.
                    app_id, version, tables = self._identity(conn)
                    if app_id == 0 and tables == 0 and version == 0:
                        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                        app_id = APPLICATION_ID
            if app_id != APPLICATION_ID:
                raise StorageError(f"sqlite store: {self._path} is not a tka database")
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"sqlite store: {self._path} has schema version {version}, newer than "
                    f"this tka understands ({SCHEMA_VERSION}); upgrade tka"
                )
            if version < SCHEMA_VERSION:
                self._migrate()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StorageError(f"sqlite store: {self._path}: cannot enable WAL mode")
            # FULL: the WAL is synced at every commit, so a commit that has
            # returned survives power loss (NORMAL would not guarantee it).
            conn.execute("PRAGMA synchronous = FULL")

    @staticmethod
    def _identity(conn: sqlite3.Connection) -> tuple[int, int, int]:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        return int(app_id), int(version), int(tables)

    def _migrate(self) -> None:
        conn = self._db()
        with self._transaction():
            # Re-read under the write lock: another process may have migrated.
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"sqlite store: {self._path} has schema version {version}, newer than "
                    f"this tka understands ({SCHEMA_VERSION}); upgrade tka"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target - 1]:
                    conn.execute(statement)
            # PRAGMA user_version is part of the transaction, so a crash
            # leaves either the old schema and version or the new ones.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- plumbing --------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("sqlite store: used after close")
        return self._conn

    def _errors(self, doing: str) -> _Errors:
        # A small class rather than a @contextmanager generator: this wraps
        # every read, and opening an authority reads once or twice per AUM.
        return _Errors(self._path, doing)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._db()
        # IMMEDIATE takes the write lock up front, so the busy timeout
        # applies instead of a deadlock error on upgrade from a read.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _one(self, sql: str, params: tuple[object, ...] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._db().execute(sql, params).fetchone()
        return row

    def _all(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._db().execute(sql, params).fetchall()
        return rows

    def _decode(self, h: bytes, blob: bytes) -> AUM:
        aum = self._cache.get(h)
        if aum is not None:
            return aum
        try:
            aum = AUM.from_bytes(blob)
        except DecodeError as exc:
            raise StorageError(
                f"sqlite store: stored aum {h.hex()} does not decode: {exc}"
            ) from exc
        if aum.hash != h:
            raise StorageError(f"sqlite store: stored aum {h.hex()} hashes to {aum.hash.hex()}")
        self._cache[h] = aum
        return aum

    # -- Storage ---------------------------------------------------------

    def get(self, aum_hash: bytes) -> AUM | None:
        """The stored AUM with this hash, or ``None`` (also when purged)."""
        h = bytes(aum_hash)
        with self._lock, self._errors("reading"):
            row = self._one("SELECT aum FROM aums WHERE hash = ? AND purged = 0", (h,))
            return None if row is None else self._decode(h, row[0])

    def children(self, aum_hash: bytes) -> list[AUM]:
        """Stored AUMs whose parent is *aum_hash*."""
        with self._lock, self._errors("reading"):
            rows = self._all(
                "SELECT hash, aum FROM aums WHERE parent = ? AND purged = 0", (bytes(aum_hash),)
            )
            return [self._decode(h, blob) for h, blob in rows]

    def heads(self) -> list[AUM]:
        """Stored AUMs with no stored child."""
        with self._lock, self._errors("reading"):
            rows = self._all(
                """
                SELECT a.hash, a.aum FROM aums AS a
                WHERE a.purged = 0 AND NOT EXISTS (
                    SELECT 1 FROM aums AS c WHERE c.parent = a.hash AND c.purged = 0
                )
                """
            )
            return [self._decode(h, blob) for h, blob in rows]

    def commit_verified(self, aums: Sequence[AUM]) -> None:
        """Store verified AUMs in one transaction (all of the batch or none)."""
        if not aums:
            return
        rows = [(a.hash, a.parent, a.to_bytes()) for a in aums]
        with self._lock, self._errors("committing to"), self._transaction() as conn:
            now = self._clock()
            conn.executemany(
                """
                INSERT INTO aums (hash, parent, aum, commit_time, purged)
                VALUES (?, ?, ?, ?, 0)
                ON CONFLICT (hash) DO UPDATE
                    SET commit_time = excluded.commit_time, purged = 0
                """,
                [(h, p, blob, now) for h, p, blob in rows],
            )
        for a in aums:
            self._cache.setdefault(a.hash, a)

    def last_active_ancestor(self) -> bytes | None:
        """The stored hint, or ``None`` when unset."""
        with self._lock, self._errors("reading"):
            row = self._one("SELECT value FROM settings WHERE name = ?", (_LAA_SETTING,))
        if row is None:
            return None
        value = bytes(row[0])
        if len(value) != HASH_SIZE:
            raise StorageError(
                f"sqlite store: stored last active ancestor is {len(value)} bytes, want {HASH_SIZE}"
            )
        return value

    def set_last_active_ancestor(self, aum_hash: bytes) -> None:
        """Record the hint."""
        h = bytes(aum_hash)
        if len(h) != HASH_SIZE:
            raise StorageError(f"sqlite store: last active ancestor must be {HASH_SIZE} bytes")
        with self._lock, self._errors("writing"), self._transaction() as conn:
            conn.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (_LAA_SETTING, h),
            )

    # -- CompactableStorage ----------------------------------------------

    def all_hashes(self) -> list[bytes]:
        """Hashes of every stored, not purged AUM."""
        with self._lock, self._errors("reading"):
            rows = self._all("SELECT hash FROM aums WHERE purged = 0")
            return [bytes(r[0]) for r in rows]

    def commit_time(self, aum_hash: bytes) -> float | None:
        """Unix time of the AUM's latest commit, or ``None`` if not stored."""
        with self._lock, self._errors("reading"):
            row = self._one(
                "SELECT commit_time FROM aums WHERE hash = ? AND purged = 0", (bytes(aum_hash),)
            )
            return None if row is None else float(row[0])

    def purge(self, hashes: Sequence[bytes]) -> None:
        """Forget these AUMs, in one transaction. Unknown hashes are ignored."""
        if not hashes:
            return
        with self._lock, self._errors("purging in"), self._transaction() as conn:
            conn.executemany(
                "UPDATE aums SET purged = 1 WHERE hash = ? AND purged = 0",
                [(bytes(h),) for h in hashes],
            )

    # -- maintenance -----------------------------------------------------

    def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check`` result (``["ok"]`` when healthy)."""
        with self._lock, self._errors("checking"):
            return [str(r[0]) for r in self._all("PRAGMA integrity_check")]
