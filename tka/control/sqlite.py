"""The control service's embedded default store: one SQLite file.

WAL mode with ``synchronous=FULL``: a transaction that has committed (and so
a request that has been answered) survives a crash or power loss. Each
thread gets its own connection; reads run in a deferred transaction (one
snapshot), writes in ``BEGIN IMMEDIATE``, which takes SQLite's single writer
lock up front, so writers to any tailnet are serialized and a busy timeout,
not a deadlock error, applies while another writer holds it. Several
processes (``tka serve --workers N``) may share the file the same way, on
a local disk (WAL needs shared memory, which network filesystems lack).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from tka.control.errors import StoreUnavailable
from tka.control.store import (
    SCHEMA_VERSION,
    FrontKey,
    FrontRow,
    NodeRow,
    SQLTransaction,
    TailnetRow,
    check_schema_version,
)

__all__ = ["SQLiteControlStore"]

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS tka_control_meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS tailnets (
        name                TEXT PRIMARY KEY,
        status              TEXT NOT NULL
                            CHECK (status IN ('off', 'pending', 'enabled', 'disabled')),
        head                BLOB,
        laa                 BLOB,
        pending_genesis     BLOB,
        pending_node        INTEGER,
        disablement_secret  BLOB,
        support_disablement BLOB,
        version             INTEGER NOT NULL DEFAULT 0,
        created             REAL NOT NULL,
        updated             REAL NOT NULL,
        seq                 INTEGER NOT NULL DEFAULT 0,
        head_seq            INTEGER NOT NULL DEFAULT 0,
        seq_floor           INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS aums (
        tailnet TEXT NOT NULL REFERENCES tailnets (name) ON DELETE CASCADE,
        hash    BLOB NOT NULL CHECK (length(hash) = 32),
        parent  BLOB,
        aum     BLOB NOT NULL,
        PRIMARY KEY (tailnet, hash)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS aums_by_parent ON aums (tailnet, parent)",
    """
    CREATE TABLE IF NOT EXISTS nodes (
        node_id         INTEGER PRIMARY KEY AUTOINCREMENT,
        tailnet         TEXT NOT NULL REFERENCES tailnets (name) ON DELETE CASCADE,
        node_key        BLOB NOT NULL CHECK (length(node_key) = 32),
        token_hash      BLOB NOT NULL,
        name            TEXT NOT NULL DEFAULT '',
        rotation_pubkey BLOB,
        nl_key          BLOB,
        signature       BLOB,
        reported_head   BLOB,
        created         REAL NOT NULL,
        updated         REAL NOT NULL,
        may_init        INTEGER NOT NULL DEFAULT 0,
        front_id        INTEGER,
        UNIQUE (tailnet, node_key)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS admin_tokens (
        token_id   INTEGER PRIMARY KEY AUTOINCREMENT,
        token_hash BLOB NOT NULL,
        label      TEXT NOT NULL DEFAULT '',
        created    REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS disabled_states (
        tailnet   TEXT NOT NULL REFERENCES tailnets (name) ON DELETE CASCADE,
        state_id1 INTEGER NOT NULL,
        state_id2 INTEGER NOT NULL,
        PRIMARY KEY (tailnet, state_id1, state_id2)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS front_tokens (
        token_id   INTEGER PRIMARY KEY AUTOINCREMENT,
        tailnet    TEXT NOT NULL REFERENCES tailnets (name) ON DELETE CASCADE,
        token_hash BLOB NOT NULL,
        label      TEXT NOT NULL DEFAULT '',
        created    REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS sig_changes (
        tailnet  TEXT NOT NULL REFERENCES tailnets (name) ON DELETE CASCADE,
        front_id INTEGER NOT NULL,
        seq      INTEGER NOT NULL,
        deleted  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tailnet, front_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS sig_changes_by_seq ON sig_changes (tailnet, seq)",
    # Version 4: attempt counters, one row per key (e.g. 'disable:<node ID>').
    """
    CREATE TABLE IF NOT EXISTS rate_limits (
        key     TEXT PRIMARY KEY,
        expires REAL NOT NULL,
        hits    INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS rate_limits_by_expiry ON rate_limits (expires)",
)

#: Created after the upgrade added ``front_id`` to an older database.
_FRONT_INDEX: Final = (
    "CREATE UNIQUE INDEX IF NOT EXISTS nodes_by_front ON nodes (tailnet, front_id)"
)

_BUSY_TIMEOUT_S: Final = 30.0


class SQLiteControlStore:
    """A :class:`~tka.control.store.ControlStore` in one SQLite file (created if missing)."""

    url_scheme = "sqlite"

    def __init__(self, path: str, busy_timeout: float = _BUSY_TIMEOUT_S) -> None:
        self.path = os.path.abspath(path)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self._listeners: list[Callable[[str], None]] = []
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"sqlite store: cannot create {parent}: {exc.strerror}"
            ) from None
        with self._errors("creating the schema in"):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                row = conn.execute(
                    "SELECT value FROM tka_control_meta WHERE name = 'schema_version'"
                ).fetchone()
                check_schema_version(None if row is None else int(row[0]), self.path)
                cols = {r[1] for r in conn.execute("PRAGMA table_info(nodes)")}
                if "may_init" not in cols:
                    # Version 1: no node could be told apart, so none may init
                    # until an admin grants it.
                    conn.execute("ALTER TABLE nodes ADD COLUMN may_init INTEGER NOT NULL DEFAULT 0")
                if "front_id" not in cols:
                    # Version 2: no node was fed by a front.
                    conn.execute("ALTER TABLE nodes ADD COLUMN front_id INTEGER")
                tcols = {r[1] for r in conn.execute("PRAGMA table_info(tailnets)")}
                for col in ("seq", "head_seq", "seq_floor"):
                    if col not in tcols:
                        conn.execute(
                            f"ALTER TABLE tailnets ADD COLUMN {col} INTEGER NOT NULL DEFAULT 0"
                        )
                conn.execute(_FRONT_INDEX)
                conn.execute(
                    "INSERT INTO tka_control_meta (name, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def __repr__(self) -> str:
        return f"SQLiteControlStore({self.path!r})"

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store: {doing} {self.path}: {exc}") from None

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable("sqlite store: used after close")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # transactions are opened explicitly
                check_same_thread=False,  # closed from the thread calling close()
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: the WAL is synced at every commit, so an answered write
            # survives power loss (NORMAL would not promise that).
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def _transaction(self, begin: str) -> Iterator[SQLTransaction]:
        with self._errors("using"):
            conn = self._conn()
            conn.execute(begin)
            txn = SQLTransaction(conn)
            try:
                yield txn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        for name in txn.bumped:
            for listener in list(self._listeners):
                listener(name)

    def add_change_listener(self, listener: Callable[[str], None]) -> None:
        """Call *listener* (tailnet name) after a commit that moved the tailnet's ``seq``."""
        self._listeners.append(listener)

    def read(self) -> contextlib.AbstractContextManager[SQLTransaction]:
        """A deferred transaction: one snapshot for every statement in it."""
        return self._transaction("BEGIN")

    def write(
        self, tailnet: str | None = None
    ) -> contextlib.AbstractContextManager[SQLTransaction]:
        """A write transaction holding SQLite's writer lock (so every tailnet is serialized)."""
        return self._transaction("BEGIN IMMEDIATE")

    def node_with_tailnet(self, node_id: int) -> tuple[NodeRow | None, TailnetRow | None]:
        """The node and its tailnet in one statement (its own implicit read transaction)."""
        with self._errors("reading"):
            return SQLTransaction(self._conn()).node_with_tailnet(node_id)

    def nodes_with_tailnets(
        self, node_ids: Sequence[int]
    ) -> dict[int, tuple[NodeRow, TailnetRow | None]]:
        """Nodes and their tailnets in one statement (its own implicit read transaction)."""
        with self._errors("reading"):
            return SQLTransaction(self._conn()).nodes_with_tailnets(node_ids)

    def front_callers(self, keys: Sequence[FrontKey]) -> dict[FrontKey, FrontRow]:
        """Front tokens, fed nodes and tailnets for *keys* (statements in autocommit)."""
        with self._errors("reading"):
            return SQLTransaction(self._conn()).front_callers(keys)

    def ping(self) -> None:
        """Check the file answers a query."""
        with self._errors("reading"):
            self._conn().execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close every connection this store opened."""
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, []
        for c in conns:
            with contextlib.suppress(sqlite3.Error):
                c.close()
