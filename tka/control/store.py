"""What the control service keeps, and the protocol its databases implement.

Per tailnet the service keeps one row (:class:`TailnetRow`: whether lock is
off, being initialized, enabled or disabled; the head; the pending genesis;
the disablement secret once used), the tailnet's AUMs, and its registered
nodes (:class:`NodeRow`: node ID, node key, rotation key, signature, the
hash of the node's token, whether it may initialize lock). Admin tokens are
kept hashed too, with a label and their creation time. Attempt counters
(``rate_limits``: one row per key, e.g. a node's disable attempts) live in
the database too, so every process and replica shares them
(:meth:`SQLTransaction.count_attempt`).

Every read happens in a :meth:`ControlStore.read` transaction (one
consistent snapshot) and every write in a :meth:`ControlStore.write`
transaction for one tailnet: writers to the same tailnet are serialized
(SQLite: the database's single writer lock; PostgreSQL: ``SELECT ... FOR
UPDATE`` on the tailnet's row), so two concurrent writers never both build
on the same head. A write transaction that raises is rolled back whole: a
request is applied entirely or not at all.

Backends: :mod:`tka.control.sqlite` (the embedded default) and
:mod:`tka.control.postgres` (several service replicas on one database).
:func:`open_store` picks one from a URL. Both share the SQL in
:class:`SQLTransaction`, written once with ``?`` placeholders.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from tka.aum import AUM, HASH_SIZE
from tka.control.errors import Conflict, StoreUnavailable
from tka.errors import DecodeError, StorageError, UsageError

__all__ = [
    "MAX_JOINED_READ",
    "STATUS_DISABLED",
    "STATUS_ENABLED",
    "STATUS_OFF",
    "STATUS_PENDING",
    "AdminTokenRow",
    "ControlStore",
    "FrontKey",
    "FrontRow",
    "FrontTokenRow",
    "NodeRow",
    "SQLTransaction",
    "TailnetRow",
    "Transaction",
    "open_store",
]

STATUS_OFF: Final = "off"
STATUS_PENDING: Final = "pending"
STATUS_ENABLED: Final = "enabled"
STATUS_DISABLED: Final = "disabled"

#: Version of the control schema this code writes (``tka_control_meta``).
#: 2 added ``nodes.may_init``; 3 added fronts (``nodes.front_id``,
#: ``front_tokens``, the tailnet's change sequence ``tailnets.seq`` and
#: ``sig_changes``); 4 added ``rate_limits`` (attempt counters shared by every
#: process and replica). An older database is upgraded when it is opened.
SCHEMA_VERSION: Final = 4

#: Removed front nodes are remembered in the change feed (so a front learns
#: their signature is gone); past this many per tailnet the oldest half is
#: forgotten, and a front asking for changes from before them must re-read
#: the whole state (``Reset``).
MAX_TOMBSTONES: Final = 10_000


@dataclass(frozen=True)
class TailnetRow:
    """One tailnet and the state of its lock."""

    name: str
    status: str = STATUS_OFF
    head: bytes | None = None
    last_active_ancestor: bytes | None = None
    pending_genesis: bytes | None = None
    """The genesis AUM of an initialization begun but not finished."""
    pending_node: int | None = None
    """The node that began that initialization."""
    disablement_secret: bytes | None = None
    """The secret lock was disabled with, kept so offline nodes learn of it."""
    support_disablement: bytes | None = None
    """A disablement secret the initializing node handed to the operator."""
    version: int = 0
    created: float = 0.0
    updated: float = 0.0
    seq: int = 0
    """The tailnet's change sequence number: bumped, in the same transaction,
    by every change of the head, of enabled/disabled, and of a node's
    signature (a signed node's arrival, departure or new key included), so
    whatever is built from the signed nodes and the head may be cached by it
    (never written through :meth:`Transaction.save_tailnet`)."""
    head_seq: int = 0
    """The ``seq`` of the last change of the head or of enabled/disabled."""
    seq_floor: int = 0
    """Changes after this ``seq`` are all on record (``sig_changes``)."""

    def __repr__(self) -> str:
        # Secrets stay out of logs and tracebacks.
        return f"TailnetRow(name={self.name!r}, status={self.status!r}, version={self.version})"


@dataclass(frozen=True)
class NodeRow:
    """A registered node."""

    node_id: int
    tailnet: str
    node_key: bytes
    token_hash: bytes
    name: str = ""
    rotation_pubkey: bytes | None = None
    nl_key: bytes | None = None
    signature: bytes | None = None
    reported_head: bytes | None = None
    created: float = 0.0
    updated: float = 0.0
    may_init: bool = False
    """Whether the node may begin tailnet lock initialization (``init/begin``)."""
    front_id: int | None = None
    """The front's own node ID (uint64) for a node a front fed; such a node
    has no token (``token_hash`` is empty and matches none)."""

    def __repr__(self) -> str:
        return f"NodeRow(node_id={self.node_id}, tailnet={self.tailnet!r})"


@dataclass(frozen=True)
class AdminTokenRow:
    """An admin token as listed: never its secret or hash."""

    token_id: int
    label: str
    created: float


@dataclass(frozen=True)
class FrontTokenRow:
    """A front token: scoped to one tailnet. ``token_hash`` is never listed."""

    token_id: int
    tailnet: str
    label: str
    created: float
    token_hash: bytes = b""

    def __repr__(self) -> str:
        return f"FrontTokenRow(token_id={self.token_id}, tailnet={self.tailnet!r})"


class Transaction(Protocol):
    """The operations of one transaction (see :class:`SQLTransaction`)."""

    def tailnet(self, name: str) -> TailnetRow | None:
        """The tailnet, or ``None``."""
        ...

    def tailnets(self) -> list[TailnetRow]:
        """Every tailnet, by name."""
        ...

    def insert_tailnet(self, name: str, now: float) -> TailnetRow:
        """Create a tailnet; :class:`Conflict` if it exists."""
        ...

    def save_tailnet(self, row: TailnetRow, now: float) -> TailnetRow:
        """Write back a tailnet's mutable fields, bumping its version."""
        ...

    def aum_storage(self, tailnet: str) -> AUMStorage:
        """The tailnet's AUMs as a :class:`~tka.storage.Storage`, inside this transaction."""
        ...

    def delete_aums(self, tailnet: str) -> None:
        """Forget every AUM of the tailnet (before a new genesis)."""
        ...

    def node(self, node_id: int) -> NodeRow | None:
        """A node by ID."""
        ...

    def node_by_key(self, tailnet: str, node_key: bytes) -> NodeRow | None:
        """The tailnet's node with this node key."""
        ...

    def nodes(self, tailnet: str) -> list[NodeRow]:
        """The tailnet's nodes, by ID."""
        ...

    def nodes_page(self, tailnet: str, after: int, limit: int) -> list[NodeRow]:
        """At most *limit* of the tailnet's nodes with an ID above *after*, by ID."""
        ...

    def insert_node(self, row: NodeRow) -> NodeRow:
        """Register a node; its ``node_id`` is assigned (the one given is ignored)."""
        ...

    def save_node(self, row: NodeRow) -> None:
        """Write back a node's key, signature and reported head."""
        ...

    def delete_node(self, node_id: int) -> None:
        """Forget a node."""
        ...

    def insert_admin_token(self, token_hash: bytes, label: str, now: float) -> int:
        """Keep an admin token's hash; returns the token's ID."""
        ...

    def admin_token_hash(self, token_id: int) -> bytes | None:
        """The hash of an admin token, by ID."""
        ...

    def admin_tokens(self) -> list[AdminTokenRow]:
        """Every admin token, by ID (no hashes)."""
        ...

    def delete_admin_token(self, token_id: int) -> bool:
        """Forget an admin token; whether there was one."""
        ...

    def add_disabled_state(self, tailnet: str, state_id1: int, state_id2: int) -> None:
        """Remember the state IDs of an authority that was disabled."""
        ...

    def front_node(self, tailnet: str, front_id: int) -> NodeRow | None:
        """The node a front fed under its ID *front_id* (uint64)."""
        ...

    def front_signatures(self, tailnet: str) -> list[tuple[int, bytes]]:
        """(front ID, signature) of every fed node that has a signature."""
        ...

    def front_changes(self, tailnet: str, since: int) -> list[tuple[int, bytes | None]]:
        """(front ID, current signature or ``None``) of every fed node whose
        signature changed after sequence number *since*."""
        ...

    def insert_front_token(self, tailnet: str, token_hash: bytes, label: str, now: float) -> int:
        """Keep a front token's hash; returns the token's ID."""
        ...

    def front_token(self, token_id: int) -> FrontTokenRow | None:
        """A front token by ID, with its hash."""
        ...

    def front_tokens(self, tailnet: str | None = None) -> list[FrontTokenRow]:
        """Every front token (of one tailnet), by ID, without hashes."""
        ...

    def delete_front_token(self, token_id: int) -> bool:
        """Forget a front token; whether there was one."""
        ...

    def is_disabled_state(self, tailnet: str, state_id1: int, state_id2: int) -> bool:
        """Whether an authority with these state IDs was disabled in this tailnet."""
        ...

    def count_attempt(self, key: str, now: float, window: float) -> int:
        """Count one attempt under *key*; the attempts in its current window, this one included."""
        ...

    def set_reported_heads(
        self, tailnet: str, heads: Sequence[tuple[int, bytes]], now: float
    ) -> None:
        """Record the heads nodes of *tailnet* reported: (node ID, head) pairs.

        Only ``reported_head`` and ``updated`` change (no sequence number
        moves: nothing a front or map answers with depends on them); a node
        since deleted, or of another tailnet, is skipped.
        """
        ...


class ControlStore(Protocol):
    """A control service's database."""

    url_scheme: str

    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only transaction over one consistent snapshot."""
        ...

    def write(self, tailnet: str | None = None) -> AbstractContextManager[Transaction]:
        """A write transaction; with *tailnet*, serialized against every writer to it."""
        ...

    def node_with_tailnet(self, node_id: int) -> tuple[NodeRow | None, TailnetRow | None]:
        """A node by ID and its tailnet, read together in one statement (one snapshot).

        For the hot read-only RPCs: no explicit transaction around it.
        """
        ...

    def nodes_with_tailnets(
        self, node_ids: Sequence[int]
    ) -> dict[int, tuple[NodeRow, TailnetRow | None]]:
        """Several nodes by ID, each with its tailnet, in one statement (one snapshot).

        At most :data:`MAX_JOINED_READ` IDs; an ID with no node is absent
        from the answer. For batching the hot RPCs' authentication.
        """
        ...

    def front_callers(self, keys: Sequence[FrontKey]) -> dict[FrontKey, FrontRow]:
        """For each (front token ID, tailnet, front node ID): the token, the fed node and
        the tailnet (``None`` for what is not there; the tailnet is read only with its
        node, in the same statement, and the token in a statement of its own).

        At most :data:`MAX_JOINED_READ` keys. For batching the authentication
        of the RPCs a front relays.
        """
        ...

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        ...

    def add_change_listener(self, listener: Callable[[str], None]) -> None:
        """Call *listener* (tailnet name) after a write that moved a tailnet's ``seq`` commits.

        In-process only: another replica's commits are not seen here.
        """
        ...

    def close(self) -> None:
        """Release connections. Committed writes are already durable."""
        ...


# -- decoded AUMs ----------------------------------------------------------------------


class _AUMCache:
    """Decoded AUMs by hash, shared by every transaction of the process.

    AUMs are content-addressed: bytes that decode to an AUM with hash *h*
    always do, so a cached decode never goes stale.
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self._max = max_entries
        self._entries: OrderedDict[bytes, AUM] = OrderedDict()
        self._lock = threading.Lock()

    def decode(self, h: bytes, blob: bytes) -> AUM:
        with self._lock:
            found = self._entries.get(h)
            if found is not None:
                self._entries.move_to_end(h)
                return found
        try:
            aum = AUM.from_bytes(blob)
        except DecodeError as exc:
            raise StorageError(f"stored AUM {h.hex()} does not decode: {exc}") from None
        if aum.hash != h:
            raise StorageError(f"stored AUM {h.hex()} hashes to {aum.hash.hex()}")
        with self._lock:
            self._entries[h] = aum
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return aum


AUM_CACHE: Final = _AUMCache()


# -- the shared SQL ---------------------------------------------------------------------

_TAILNET_COLS: Final = (
    "name, status, head, laa, pending_genesis, pending_node, disablement_secret, "
    "support_disablement, version, created, updated, seq, head_seq, seq_floor"
)
_NODE_COLS: Final = (
    "node_id, tailnet, node_key, token_hash, name, rotation_pubkey, nl_key, signature, "
    "reported_head, created, updated, may_init, front_id"
)

#: A node's columns (``n.``) then its tailnet's (``t.``), for the joined reads.
_NODE_THEN_TAILNET_COLS: Final = ", ".join(
    [f"n.{c.strip()}" for c in _NODE_COLS.split(",")]
    + [f"t.{c.strip()}" for c in _TAILNET_COLS.split(",")]
)
_NODES_JOINED: Final = (
    f"SELECT {_NODE_THEN_TAILNET_COLS} FROM nodes n LEFT JOIN tailnets t ON t.name = n.tailnet"
)
_NODES_WITH_TAILNET: Final = f"{_NODES_JOINED} WHERE n.node_id"
#: :meth:`SQLTransaction.front_callers`' statement, up to the fed nodes' condition.
_FRONT_CALLERS: Final = (
    f"SELECT {_NODE_THEN_TAILNET_COLS}, f.token_id, f.tailnet, f.label, f.created, "
    "f.token_hash FROM front_tokens f LEFT JOIN nodes n ON"
)
_INT64_MAX: Final = 2**63 - 1
_NODE_COLUMN_COUNT: Final = len(_NODE_COLS.split(","))
_TAILNET_COLUMN_COUNT: Final = len(_TAILNET_COLS.split(","))
#: Node IDs one :meth:`ControlStore.nodes_with_tailnets` may read (well under
#: SQLite's 32,766 bound variables).
MAX_JOINED_READ: Final = 512

#: A node a front relays for: (front token ID, tailnet, the front's node ID).
FrontKey = tuple[int, str, int]
#: What :meth:`ControlStore.front_callers` reads for one key.
FrontRow = tuple[FrontTokenRow | None, NodeRow | None, TailnetRow | None]


def _b(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


def _tailnet_row(r: Sequence[Any]) -> TailnetRow:
    return TailnetRow(
        name=str(r[0]),
        status=str(r[1]),
        head=_b(r[2]),
        last_active_ancestor=_b(r[3]),
        pending_genesis=_b(r[4]),
        pending_node=None if r[5] is None else int(r[5]),
        disablement_secret=_b(r[6]),
        support_disablement=_b(r[7]),
        version=int(r[8]),
        created=float(r[9]),
        updated=float(r[10]),
        seq=int(r[11]),
        head_seq=int(r[12]),
        seq_floor=int(r[13]),
    )


def _node_row(r: Sequence[Any]) -> NodeRow:
    return NodeRow(
        node_id=int(r[0]),
        tailnet=str(r[1]),
        node_key=bytes(r[2]),
        token_hash=bytes(r[3]),
        name=str(r[4]),
        rotation_pubkey=_b(r[5]),
        nl_key=_b(r[6]),
        signature=_b(r[7]),
        reported_head=_b(r[8]),
        created=float(r[9]),
        updated=float(r[10]),
        may_init=bool(r[11]),
        front_id=None if r[12] is None else _unsigned64(int(r[12])),
    )


class SQLTransaction:
    """The control schema's queries over one DB-API connection in a transaction.

    *execute* runs one statement (``?`` placeholders) and returns its rows;
    backends adapt placeholders and error types.
    """

    def __init__(self, conn: Any, paramstyle: str = "qmark") -> None:
        self._conn = conn
        self._pg = paramstyle == "format"
        #: The sequence number this transaction moved each tailnet to (one
        #: bump per transaction, whatever it changes).
        self.bumped: dict[str, int] = {}

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run *sql* and return every row it produces (empty for statements)."""
        if self._pg:
            sql = sql.replace("?", "%s")
        cur = self._conn.execute(sql, tuple(params))
        if cur.description is None:
            return []
        return [tuple(r) for r in cur.fetchall()]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    # -- tailnets --

    def tailnet(self, name: str) -> TailnetRow | None:
        r = self._one(f"SELECT {_TAILNET_COLS} FROM tailnets WHERE name = ?", (name,))
        return None if r is None else _tailnet_row(r)

    def tailnets(self) -> list[TailnetRow]:
        return [
            _tailnet_row(r)
            for r in self.execute(f"SELECT {_TAILNET_COLS} FROM tailnets ORDER BY name")
        ]

    def insert_tailnet(self, name: str, now: float) -> TailnetRow:
        if self.tailnet(name) is not None:
            raise Conflict(f"tailnet {name!r} already exists")
        self.execute(
            "INSERT INTO tailnets (name, status, version, created, updated) VALUES (?, ?, 0, ?, ?)",
            (name, STATUS_OFF, now, now),
        )
        row = self.tailnet(name)
        assert row is not None
        return row

    def save_tailnet(self, row: TailnetRow, now: float) -> TailnetRow:
        old = self._one("SELECT status, head FROM tailnets WHERE name = ?", (row.name,))
        if old is not None and _visible(str(old[0]), _b(old[1])) != _visible(row.status, row.head):
            seq = self._bump(row.name)
            self.execute("UPDATE tailnets SET head_seq = ? WHERE name = ?", (seq, row.name))
        self.execute(
            "UPDATE tailnets SET status = ?, head = ?, laa = ?, pending_genesis = ?, "
            "pending_node = ?, disablement_secret = ?, support_disablement = ?, "
            "version = version + 1, updated = ? WHERE name = ?",
            (
                row.status,
                row.head,
                row.last_active_ancestor,
                row.pending_genesis,
                row.pending_node,
                row.disablement_secret,
                row.support_disablement,
                now,
                row.name,
            ),
        )
        return replace(row, version=row.version + 1, updated=now)

    # -- AUMs --

    def aum_storage(self, tailnet: str) -> AUMStorage:
        return AUMStorage(self, tailnet)

    def delete_aums(self, tailnet: str) -> None:
        self.execute("DELETE FROM aums WHERE tailnet = ?", (tailnet,))

    # -- nodes --

    def node(self, node_id: int) -> NodeRow | None:
        r = self._one(f"SELECT {_NODE_COLS} FROM nodes WHERE node_id = ?", (node_id,))
        return None if r is None else _node_row(r)

    def node_with_tailnet(self, node_id: int) -> tuple[NodeRow | None, TailnetRow | None]:
        """The node and its tailnet (``None`` for what does not exist), in one statement."""
        return self.nodes_with_tailnets((node_id,)).get(node_id, (None, None))

    def nodes_with_tailnets(
        self, node_ids: Sequence[int]
    ) -> dict[int, tuple[NodeRow, TailnetRow | None]]:
        """Nodes by ID, each with its tailnet, in one statement (absent: no such node)."""
        if not node_ids:
            return {}
        if len(node_ids) > MAX_JOINED_READ:
            raise ValueError(f"at most {MAX_JOINED_READ} node IDs per read")
        ids = [i for i in node_ids if 0 <= i <= _INT64_MAX]  # others name no node
        if not ids:
            return {}
        where, params = self._in(ids)
        n = _NODE_COLUMN_COUNT
        out: dict[int, tuple[NodeRow, TailnetRow | None]] = {}
        for r in self.execute(f"{_NODES_WITH_TAILNET} {where}", params):
            node = _node_row(r[:n])
            out[node.node_id] = (node, None if r[n] is None else _tailnet_row(r[n:]))
        return out

    def front_callers(self, keys: Sequence[FrontKey]) -> dict[FrontKey, FrontRow]:
        """Front tokens, fed nodes and tailnets for *keys* (see the protocol).

        One statement per tailnet named (a batch is nearly always one
        tailnet's): its keys' front tokens, each joined with the fed nodes
        asked for and their tailnet, through indexed ``IN`` lists of padded
        lengths (see :meth:`_in`). A token that is not there brings no row:
        its requests are refused before a node would be looked at.
        """
        if len(keys) > MAX_JOINED_READ:
            raise ValueError(f"at most {MAX_JOINED_READ} keys per read")
        tokens: dict[int, FrontTokenRow] = {}
        nodes: dict[tuple[str, int], NodeRow] = {}
        tailnets: dict[str, TailnetRow] = {}
        wanted: dict[str, tuple[set[int], set[int]]] = {}
        for token_id, name, front_id in keys:
            if 0 <= token_id <= _INT64_MAX:
                ids, fronts = wanted.setdefault(name, (set(), set()))
                ids.add(token_id)
                fronts.add(_signed64(front_id))
        n, m = _NODE_COLUMN_COUNT, _NODE_COLUMN_COUNT + _TAILNET_COLUMN_COUNT
        for name, (ids, fronts) in wanted.items():
            in_tokens, token_params = self._in(sorted(ids))
            in_fronts, front_params = self._in(sorted(fronts))
            for r in self.execute(
                f"{_FRONT_CALLERS} n.tailnet = ? AND n.front_id {in_fronts} "
                f"LEFT JOIN tailnets t ON t.name = n.tailnet WHERE f.token_id {in_tokens}",
                [name, *front_params, *token_params],
            ):
                tokens[int(r[m])] = FrontTokenRow(
                    int(r[m]), str(r[m + 1]), str(r[m + 2]), float(r[m + 3]), bytes(r[m + 4])
                )
                if r[0] is not None:
                    node = _node_row(r[:n])
                    assert node.front_id is not None
                    nodes[(name, node.front_id)] = node
                    if r[n] is not None:
                        tailnets[name] = _tailnet_row(r[n:m])
        return {
            k: (tokens.get(k[0]), nodes.get((k[1], _unsigned64(k[2]))), tailnets.get(k[1]))
            for k in keys
        }

    def _in(self, values: list[Any]) -> tuple[str, list[Any]]:
        """``IN (...)`` for *values* (not empty) and its parameters.

        PostgreSQL: ``= ANY(?)`` with one array, one statement text whatever
        the count (prepared once). SQLite: the list padded to a power of two
        by repeating its last value, so the statement cache holds ten texts,
        not one per count.
        """
        if self._pg:
            return "= ANY(?)", [values]
        size = 1 << (len(values) - 1).bit_length()
        return f"IN ({', '.join('?' * size)})", values + [values[-1]] * (size - len(values))

    def node_by_key(self, tailnet: str, node_key: bytes) -> NodeRow | None:
        r = self._one(
            f"SELECT {_NODE_COLS} FROM nodes WHERE tailnet = ? AND node_key = ?",
            (tailnet, node_key),
        )
        return None if r is None else _node_row(r)

    def nodes(self, tailnet: str) -> list[NodeRow]:
        return [
            _node_row(r)
            for r in self.execute(
                f"SELECT {_NODE_COLS} FROM nodes WHERE tailnet = ? ORDER BY node_id", (tailnet,)
            )
        ]

    def nodes_page(self, tailnet: str, after: int, limit: int) -> list[NodeRow]:
        return [
            _node_row(r)
            for r in self.execute(
                f"SELECT {_NODE_COLS} FROM nodes WHERE tailnet = ? AND node_id > ? "
                "ORDER BY node_id LIMIT ?",
                (tailnet, after, limit),
            )
        ]

    def insert_node(self, row: NodeRow) -> NodeRow:
        if self.node_by_key(row.tailnet, row.node_key) is not None:
            raise Conflict("a node with this node key is already registered in the tailnet")
        if row.front_id is not None and self.front_node(row.tailnet, row.front_id) is not None:
            raise Conflict(f"front node {row.front_id} is already in the tailnet")
        r = self._one(
            "INSERT INTO nodes (tailnet, node_key, token_hash, name, rotation_pubkey, nl_key, "
            "signature, reported_head, created, updated, may_init, front_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING node_id",
            (
                row.tailnet,
                row.node_key,
                row.token_hash,
                row.name,
                row.rotation_pubkey,
                row.nl_key,
                row.signature,
                row.reported_head,
                row.created,
                row.updated,
                bool(row.may_init),
                None if row.front_id is None else _signed64(row.front_id),
            ),
        )
        assert r is not None
        if row.front_id is not None and row.signature is not None:
            self._signature_changed(row.tailnet, row.front_id, deleted=False)
        elif row.signature is not None:
            self._bump(row.tailnet)  # a signed node joined: the admitted peers may move
        return replace(row, node_id=int(r[0]))

    def save_node(self, row: NodeRow) -> None:
        old = self._one(
            "SELECT tailnet, front_id, signature, node_key FROM nodes WHERE node_id = ?",
            (row.node_id,),
        )
        self.execute(
            "UPDATE nodes SET node_key = ?, signature = ?, reported_head = ?, token_hash = ?, "
            "updated = ?, may_init = ?, nl_key = ? WHERE node_id = ?",
            (
                row.node_key,
                row.signature,
                row.reported_head,
                row.token_hash,
                row.updated,
                bool(row.may_init),
                row.nl_key,
                row.node_id,
            ),
        )
        if old is None:
            return
        if old[1] is not None and _b(old[2]) != row.signature:
            self._signature_changed(str(old[0]), _unsigned64(int(old[1])), deleted=False)
        elif (old[2] is not None or row.signature is not None) and (
            _b(old[2]) != row.signature or _b(old[3]) != row.node_key
        ):
            # A signed node's key or signature moved: what map answers may too.
            self._bump(str(old[0]))

    def set_reported_heads(
        self, tailnet: str, heads: Sequence[tuple[int, bytes]], now: float
    ) -> None:
        for node_id, head in heads:
            self.execute(
                "UPDATE nodes SET reported_head = ?, updated = ? WHERE node_id = ? AND tailnet = ?",
                (head, now, node_id, tailnet),
            )

    def delete_node(self, node_id: int) -> None:
        old = self._one(
            "SELECT tailnet, front_id, signature FROM nodes WHERE node_id = ?", (node_id,)
        )
        self.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))
        if old is not None and old[1] is not None and old[2] is not None:
            self._signature_changed(str(old[0]), _unsigned64(int(old[1])), deleted=True)
        elif old is not None and old[2] is not None:
            self._bump(str(old[0]))  # a signed node left

    # -- the change sequence (fronts) --

    def _bump(self, tailnet: str) -> int:
        """The tailnet's next sequence number, taken once per transaction."""
        seq = self.bumped.get(tailnet)
        if seq is None:
            r = self._one(
                "UPDATE tailnets SET seq = seq + 1 WHERE name = ? RETURNING seq", (tailnet,)
            )
            assert r is not None
            seq = self.bumped[tailnet] = int(r[0])
        return seq

    def _signature_changed(self, tailnet: str, front_id: int, *, deleted: bool) -> None:
        """Record that a fed node's signature changed (or went with the node)."""
        seq = self._bump(tailnet)
        self.execute(
            "INSERT INTO sig_changes (tailnet, front_id, seq, deleted) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (tailnet, front_id) DO UPDATE SET seq = excluded.seq, "
            "deleted = excluded.deleted",
            (tailnet, _signed64(front_id), seq, deleted),
        )
        if deleted:
            self._prune_tombstones(tailnet)

    def _prune_tombstones(self, tailnet: str) -> None:
        r = self._one("SELECT count(*) FROM sig_changes WHERE tailnet = ? AND deleted", (tailnet,))
        if r is None or int(r[0]) <= MAX_TOMBSTONES:
            return
        cut = self._one(
            "SELECT seq FROM sig_changes WHERE tailnet = ? AND deleted ORDER BY seq "
            "LIMIT 1 OFFSET ?",
            (tailnet, int(r[0]) - MAX_TOMBSTONES // 2 - 1),
        )
        assert cut is not None
        self.execute(
            "DELETE FROM sig_changes WHERE tailnet = ? AND deleted AND seq <= ?",
            (tailnet, int(cut[0])),
        )
        # A front that last saw a sequence number before the cut cannot
        # learn of those removals any more: it must re-read the state.
        self.execute(
            "UPDATE tailnets SET seq_floor = ? WHERE name = ? AND seq_floor < ?",
            (int(cut[0]), tailnet, int(cut[0])),
        )

    # -- fronts --

    def front_node(self, tailnet: str, front_id: int) -> NodeRow | None:
        r = self._one(
            f"SELECT {_NODE_COLS} FROM nodes WHERE tailnet = ? AND front_id = ?",
            (tailnet, _signed64(front_id)),
        )
        return None if r is None else _node_row(r)

    def front_signatures(self, tailnet: str) -> list[tuple[int, bytes]]:
        rows = self.execute(
            "SELECT front_id, signature FROM nodes WHERE tailnet = ? AND front_id IS NOT NULL "
            "AND signature IS NOT NULL",
            (tailnet,),
        )
        return [(_unsigned64(int(f)), bytes(s)) for f, s in rows]

    def front_changes(self, tailnet: str, since: int) -> list[tuple[int, bytes | None]]:
        rows = self.execute(
            "SELECT c.front_id, n.signature FROM sig_changes c LEFT JOIN nodes n "
            "ON n.tailnet = c.tailnet AND n.front_id = c.front_id "
            "WHERE c.tailnet = ? AND c.seq > ?",
            (tailnet, since),
        )
        return [(_unsigned64(int(f)), _b(s)) for f, s in rows]

    def insert_front_token(self, tailnet: str, token_hash: bytes, label: str, now: float) -> int:
        r = self._one(
            "INSERT INTO front_tokens (tailnet, token_hash, label, created) VALUES (?, ?, ?, ?) "
            "RETURNING token_id",
            (tailnet, token_hash, label, now),
        )
        assert r is not None
        return int(r[0])

    def front_token(self, token_id: int) -> FrontTokenRow | None:
        r = self._one(
            "SELECT token_id, tailnet, label, created, token_hash FROM front_tokens "
            "WHERE token_id = ?",
            (token_id,),
        )
        if r is None:
            return None
        return FrontTokenRow(int(r[0]), str(r[1]), str(r[2]), float(r[3]), bytes(r[4]))

    def front_tokens(self, tailnet: str | None = None) -> list[FrontTokenRow]:
        sql = "SELECT token_id, tailnet, label, created FROM front_tokens"
        rows = (
            self.execute(sql + " ORDER BY token_id")
            if tailnet is None
            else self.execute(sql + " WHERE tailnet = ? ORDER BY token_id", (tailnet,))
        )
        return [FrontTokenRow(int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    def delete_front_token(self, token_id: int) -> bool:
        rows = self.execute(
            "DELETE FROM front_tokens WHERE token_id = ? RETURNING token_id", (token_id,)
        )
        return bool(rows)

    # -- admin tokens --

    def insert_admin_token(self, token_hash: bytes, label: str, now: float) -> int:
        r = self._one(
            "INSERT INTO admin_tokens (token_hash, label, created) VALUES (?, ?, ?) "
            "RETURNING token_id",
            (token_hash, label, now),
        )
        assert r is not None
        return int(r[0])

    def admin_token_hash(self, token_id: int) -> bytes | None:
        r = self._one("SELECT token_hash FROM admin_tokens WHERE token_id = ?", (token_id,))
        return None if r is None else bytes(r[0])

    def admin_tokens(self) -> list[AdminTokenRow]:
        rows = self.execute("SELECT token_id, label, created FROM admin_tokens ORDER BY token_id")
        return [AdminTokenRow(int(r[0]), str(r[1]), float(r[2])) for r in rows]

    def delete_admin_token(self, token_id: int) -> bool:
        rows = self.execute(
            "DELETE FROM admin_tokens WHERE token_id = ? RETURNING token_id", (token_id,)
        )
        return bool(rows)

    # -- disabled authorities --

    def add_disabled_state(self, tailnet: str, state_id1: int, state_id2: int) -> None:
        # State IDs are uint64; stored as their signed 64-bit twins to fit BIGINT.
        self.execute(
            "INSERT INTO disabled_states (tailnet, state_id1, state_id2) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (tailnet, _signed64(state_id1), _signed64(state_id2)),
        )

    def is_disabled_state(self, tailnet: str, state_id1: int, state_id2: int) -> bool:
        r = self._one(
            "SELECT 1 FROM disabled_states WHERE tailnet = ? AND state_id1 = ? AND state_id2 = ?",
            (tailnet, _signed64(state_id1), _signed64(state_id2)),
        )
        return r is not None

    # -- attempt counters (rate limits) --

    def count_attempt(self, key: str, now: float, window: float) -> int:
        # One row per key, one upsert: atomic on both engines (SQLite's
        # writer lock, PostgreSQL's row lock on the conflicting key), so
        # every process and replica counts into the same window. A window
        # opens at the key's first attempt after the last one expired.
        r = self._one(
            "INSERT INTO rate_limits (key, expires, hits) VALUES (?, ?, 1) "
            "ON CONFLICT (key) DO UPDATE SET "
            "hits = CASE WHEN rate_limits.expires <= ? THEN 1 ELSE rate_limits.hits + 1 END, "
            "expires = CASE WHEN rate_limits.expires <= ? THEN excluded.expires "
            "ELSE rate_limits.expires END "
            "RETURNING hits",
            (key, now + window, now, now),
        )
        assert r is not None
        hits = int(r[0])
        if hits == 1:
            # A window opened: forget the expired ones (indexed by expiry;
            # each row is deleted once, so the work is paid for by the
            # attempts that made the rows).
            self.execute(
                "DELETE FROM rate_limits WHERE key IN (SELECT key FROM rate_limits "
                "WHERE expires <= ? LIMIT 1000)",
                (now,),
            )
        return hits


def _signed64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _unsigned64(v: int) -> int:
    return v & ((1 << 64) - 1)


def _visible(status: str, head: bytes | None) -> tuple[bool, bool, bytes | None]:
    """What a front sees of a tailnet's lock: enabled, disabled, head (when enabled)."""
    enabled = status == STATUS_ENABLED
    return enabled, status == STATUS_DISABLED, head if enabled else None


class AUMStorage:
    """A tailnet's AUMs seen through one transaction: a :class:`~tka.storage.Storage`.

    Writes become durable when the transaction commits, which happens before
    the service answers.
    """

    def __init__(self, txn: SQLTransaction, tailnet: str) -> None:
        self._txn = txn
        self._tailnet = tailnet

    def get(self, aum_hash: bytes) -> AUM | None:
        """The stored AUM with this hash, or ``None``."""
        h = bytes(aum_hash)
        rows = self._txn.execute(
            "SELECT aum FROM aums WHERE tailnet = ? AND hash = ?", (self._tailnet, h)
        )
        return AUM_CACHE.decode(h, bytes(rows[0][0])) if rows else None

    def children(self, aum_hash: bytes) -> list[AUM]:
        """Stored AUMs whose parent is *aum_hash*."""
        rows = self._txn.execute(
            "SELECT hash, aum FROM aums WHERE tailnet = ? AND parent = ?",
            (self._tailnet, bytes(aum_hash)),
        )
        return [AUM_CACHE.decode(bytes(h), bytes(b)) for h, b in rows]

    def heads(self) -> list[AUM]:
        """Stored AUMs no stored AUM names as its parent."""
        rows = self._txn.execute(
            "SELECT a.hash, a.aum FROM aums a WHERE a.tailnet = ? AND NOT EXISTS "
            "(SELECT 1 FROM aums c WHERE c.tailnet = a.tailnet AND c.parent = a.hash)",
            (self._tailnet,),
        )
        return [AUM_CACHE.decode(bytes(h), bytes(b)) for h, b in rows]

    def commit_verified(self, aums: Sequence[AUM]) -> None:
        """Store verified AUMs (part of the enclosing transaction)."""
        for a in aums:
            self._txn.execute(
                "INSERT INTO aums (tailnet, hash, parent, aum) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (self._tailnet, a.hash, a.parent, a.to_bytes()),
            )

    def last_active_ancestor(self) -> bytes | None:
        """The hint kept in the tailnet's row."""
        rows = self._txn.execute("SELECT laa FROM tailnets WHERE name = ?", (self._tailnet,))
        v = _b(rows[0][0]) if rows else None
        return v if v is not None and len(v) == HASH_SIZE else None

    def set_last_active_ancestor(self, aum_hash: bytes) -> None:
        """Record the hint in the tailnet's row."""
        self._txn.execute(
            "UPDATE tailnets SET laa = ? WHERE name = ?", (bytes(aum_hash), self._tailnet)
        )

    def all_aums(self) -> list[AUM]:
        """Every stored AUM of the tailnet (for exports)."""
        rows = self._txn.execute("SELECT hash, aum FROM aums WHERE tailnet = ?", (self._tailnet,))
        return [AUM_CACHE.decode(bytes(h), bytes(b)) for h, b in rows]


def check_schema_version(found: int | None, where: str) -> None:
    """Refuse a database written by a newer tka."""
    if found is not None and found > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"{where} has control schema version {found}, newer than this tka understands "
            f"({SCHEMA_VERSION}); upgrade tka"
        )


def open_store(url: str) -> ControlStore:
    """Open the store a URL names.

    * ``sqlite:///ABSOLUTE/PATH`` or ``sqlite:RELATIVE/PATH``: one SQLite file;
    * ``postgresql://...`` (or ``postgres://``): a PostgreSQL database, any
      libpq connection URL (needs ``psycopg``, from ``tka[server]``).
    """
    if url.startswith("sqlite:"):
        from tka.control.sqlite import SQLiteControlStore

        rest = url[len("sqlite:") :]
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise UsageError("sqlite store URL names no file: use sqlite:///PATH")
        return SQLiteControlStore(os.path.expanduser(path))
    if url.startswith(("postgresql://", "postgres://")):
        from tka.control.postgres import PostgresControlStore

        return PostgresControlStore(url)
    raise UsageError("unknown store URL: use sqlite:///PATH or postgresql://...")
