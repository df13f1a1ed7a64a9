"""Shared plumbing of the control service: limits, tokens, request context, the RPC table."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from tka.admission import Admission, NodeRecord
from tka.aum import AUM, hash_to_text
from tka.authority import Authority
from tka.control import wire
from tka.control.errors import (
    BadRequest,
    Conflict,
    NotFound,
    StoreUnavailable,
    TooManyRequests,
    Unauthenticated,
)
from tka.control.store import (
    STATUS_DISABLED,
    STATUS_ENABLED,
    ControlStore,
    FrontRow,
    FrontTokenRow,
    NodeRow,
    TailnetRow,
    Transaction,
)
from tka.disablement import disablement_kdf
from tka.errors import DecodeError, TKAError
from tka.limits import MAX_KEYS, MAX_SYNC_ITER
from tka.storage import Storage

#: Request body limits: Tailscale's client reads 10 MiB for init and sync
#: answers and 1 MiB otherwise; requests get the same bounds.
LARGE_BODY: Final = 10 * 1024 * 1024
SMALL_BODY: Final = 1024 * 1024
#: A disablement secret is 32 bytes; anything far longer is not one, and
#: would only make the Argon2 step slower.
MAX_SECRET_BYTES: Final = 1024
MAX_LOG_LIMIT: Final = 10_000
_INT64_MAX: Final = 2**63 - 1
#: Argon2 (16 MiB, ~80 ms) runs at most this many at a time per process, so
#: its memory stays bounded whatever the number of requests (a bound on this
#: process's memory, so per process on purpose).
ARGON2_CONCURRENCY: Final = 2
#: A node may try ``disable`` (or ``init/finish`` with a support
#: disablement secret) this many times in a :data:`DISABLE_WINDOW`-second
#: window, which opens at its first attempt. Counted in the database
#: (``rate_limits``), so the limit holds across processes and replicas.
DISABLE_ATTEMPTS: Final = 5
DISABLE_WINDOW: Final = 60.0
#: The most AUMs one ``sync/send`` may carry: Tailscale's ``maxSyncIter``
#: (tka/limits.go, 2000), the most AUMs its ``MissingAUMs`` ever returns (its
#: forward walk stops there), so no honest node sends more. Checked before any
#: AUM is decoded or verified (400).
MAX_SEND_AUMS: Final = MAX_SYNC_ITER
#: How many times a write is redone when the tailnet moved while it was
#: being verified, before answering 409.
_WRITE_ATTEMPTS: Final = 5

_NODE_TOKEN_PREFIX: Final = "tkanode"
_ADMIN_TOKEN_PREFIX: Final = "tkaadmin"
_TOKEN_RE: Final = re.compile(r"(tkanode|tkaadmin)_([0-9]{1,19})_([A-Za-z0-9_-]{43})")
_TAILNET_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def hash_token(secret_part: str) -> bytes:
    """The stored form of a token's secret part (SHA-256: tokens are 256-bit random)."""
    return hashlib.sha256(secret_part.encode("ascii")).digest()


def _mint(prefix: str, ident: int) -> tuple[str, str]:
    secret_part = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return f"{prefix}_{ident}_{secret_part}", secret_part


def _parse_token(token: str | None, prefix: str) -> tuple[int, str]:
    if not token:
        raise Unauthenticated("missing token: send 'Authorization: Bearer <token>'")
    m = _TOKEN_RE.fullmatch(token)
    if m is None or m.group(1) != prefix or int(m.group(2)) > _INT64_MAX:
        raise Unauthenticated("invalid token")
    return int(m.group(2)), m.group(3)


@dataclass
class RequestContext:
    """Filled in while a request is handled, for the caller's structured log.

    Holds identifiers only: never a token, secret or body.
    """

    tailnet: str | None = None
    node_id: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class FrontCaller:
    """A node named by a front (e.g. a patched Headscale) instead of by a node token.

    *tailnet* and *token_id* are those of the front token that authenticated
    the request, *token_hash* its stored hash (checked again in every
    transaction, so a revoked token stops working at once); *node_id* is the
    front's own node ID (a uint64).
    """

    tailnet: str
    node_id: int
    token_id: int
    token_hash: bytes

    def __repr__(self) -> str:
        return f"FrontCaller(tailnet={self.tailnet!r}, node_id={self.node_id})"


#: Who calls a node RPC: a node token (token mode), or a node a front vouches for.
Caller = str | FrontCaller | None

#: A node and its tailnet as one joined read gave them (``None`` where there
#: is none): see :meth:`~tka.control.store.ControlStore.nodes_with_tailnets`.
JoinedRow = tuple[NodeRow | None, TailnetRow | None]
#: What a request was authenticated against beforehand: a node token's
#: :data:`JoinedRow`, or a relayed node's front token, fed node and tailnet
#: (:meth:`~tka.control.store.ControlStore.front_callers`).
KeptRow = JoinedRow | FrontRow

#: The RPCs :meth:`ServiceBase.handle_kept` may answer from memory.
KEPT_RPCS: Final = frozenset(
    {"/machine/tka/bootstrap", "/machine/tka/sync/offer", "/machine/tka/sync/send", "/machine/map"}
)


class NotKept(Exception):
    """The answer is not kept in memory: the RPC needs the store (run it with :meth:`handle`)."""


@dataclass(frozen=True)
class RPCSpec:
    """One node RPC: its request class, handler name and body limit."""

    request: type[Any]
    handler: str
    body_limit: int


#: The node RPCs by path.
RPCS: Final[dict[str, RPCSpec]] = {
    "/machine/tka/init/begin": RPCSpec(wire.InitBeginRequest, "init_begin", LARGE_BODY),
    "/machine/tka/init/finish": RPCSpec(wire.InitFinishRequest, "init_finish", LARGE_BODY),
    "/machine/tka/bootstrap": RPCSpec(wire.BootstrapRequest, "bootstrap", SMALL_BODY),
    "/machine/tka/sync/offer": RPCSpec(wire.SyncOfferRequest, "sync_offer", LARGE_BODY),
    "/machine/tka/sync/send": RPCSpec(wire.SyncSendRequest, "sync_send", LARGE_BODY),
    "/machine/tka/disable": RPCSpec(wire.DisableRequest, "disable", SMALL_BODY),
    "/machine/tka/sign": RPCSpec(wire.SubmitSignatureRequest, "sign", SMALL_BODY),
    "/machine/tka/affected-sigs": RPCSpec(
        wire.SignaturesUsingKeyRequest, "affected_sigs", SMALL_BODY
    ),
    "/machine/register": RPCSpec(wire.RegisterRequest, "register", SMALL_BODY),
    "/machine/map": RPCSpec(wire.MapRequest, "map", SMALL_BODY),
}


def _records(nodes: list[NodeRow]) -> list[NodeRecord]:
    return [NodeRecord(n.node_id, n.node_key, n.signature) for n in nodes]


def _copy(a: Authority) -> Authority:
    # Authority.inform mutates; cached authorities are shared between threads.
    return Authority(a.head, a.oldest_ancestor, a.state)


def _decode_aum(data: bytes, where: str) -> AUM:
    try:
        return AUM.from_bytes(data)
    except DecodeError as exc:
        raise BadRequest(f"{where}: not an AUM ({exc})") from None


def _tlpub(key_id: bytes) -> str:
    return f"tlpub:{key_id.hex()}"


def _check_signature_count(aum: AUM, where: str, signable_keys: int = MAX_KEYS) -> None:
    """Refuse an AUM whose signatures repeat a key ID or outnumber the keys.

    Run before any signature is verified, so the work an AUM can cause is
    bounded by the keys that could sign it, not by its size. Tailscale's
    verification accepts such AUMs (each signature is checked, duplicates
    count once); the service simply refuses to *accept* them from a node,
    which no honest client sends (Tailscale's signs once per key).
    """
    sigs = aum.signatures or ()
    if len(sigs) > signable_keys:
        raise BadRequest(
            f"{where}: {len(sigs)} signatures but only {signable_keys} keys could sign it"
        )
    seen: set[bytes] = set()
    for sig in sigs:
        kid = bytes(sig.key_id or b"")
        if kid in seen:
            raise BadRequest(f"{where}: signatures repeat key ID {kid.hex()[:16]}...")
        seen.add(kid)


class _JoinedRead:
    """A node and its tailnet read in one statement, answering :meth:`Auth._auth_node`.

    Lets the read-only RPCs authenticate with one indexed read instead of a
    read transaction, through the very same checks (token hash compared in
    constant time, node key, tailnet). With *kept*, that read was made
    beforehand (batched with other requests' by the HTTP layer).
    """

    def __init__(self, store: ControlStore, kept: JoinedRow | None = None) -> None:
        self._store = store
        self._kept = kept
        self._tailnet: TailnetRow | None = None

    def node(self, node_id: int) -> NodeRow | None:
        if self._kept is None:
            node, self._tailnet = self._store.node_with_tailnet(node_id)
            return node
        node, self._tailnet = self._kept
        # The read was made for the token's node ID: anything else is not it.
        return node if node is not None and node.node_id == node_id else None

    def tailnet(self, name: str) -> TailnetRow | None:
        t = self._tailnet
        return t if t is not None and t.name == name else None


class _FrontRead:
    """A relayed node's front token, fed node and tailnet read beforehand, answering
    :meth:`Auth._auth_node`'s reads for a :class:`FrontCaller` (see ``front_callers``)."""

    def __init__(self, kept: FrontRow) -> None:
        self._token, self._node, self._tailnet = kept

    def front_token(self, token_id: int) -> FrontTokenRow | None:
        row = self._token
        return row if row is not None and row.token_id == token_id else None

    def front_node(self, tailnet: str, front_id: int) -> NodeRow | None:
        node = self._node
        if node is None or node.tailnet != tailnet or node.front_id != front_id:
            return None
        return node

    def tailnet(self, name: str) -> TailnetRow | None:
        t = self._tailnet
        return t if t is not None and t.name == name else None


class _Retry(Exception):
    """The tailnet moved between verification and the write: redo the request."""


class _ListableStorage(Storage, Protocol):
    """A :class:`~tka.storage.Storage` that can also list every AUM it holds."""

    def all_aums(self) -> list[AUM]: ...


class _Recorder:
    """A tailnet's AUM storage read through, with writes kept aside.

    :meth:`Authority.inform` verifies and then commits: run on this, it
    verifies against the stored chain (in a read transaction) and the
    commit only lands here, to be written later in the write transaction.
    """

    def __init__(self, base: _ListableStorage) -> None:
        self._base = base
        self.pending: list[AUM] = []
        self._by_hash: dict[bytes, AUM] = {}

    def get(self, aum_hash: bytes) -> AUM | None:
        """The AUM, kept aside or stored."""
        return self._by_hash.get(bytes(aum_hash)) or self._base.get(aum_hash)

    def children(self, aum_hash: bytes) -> list[AUM]:
        """Children stored or kept aside."""
        h = bytes(aum_hash)
        return self._base.children(h) + [a for a in self.pending if a.parent == h]

    def heads(self) -> list[AUM]:
        """Heads of stored and kept-aside AUMs together."""
        parents = {a.parent for a in self.pending}
        out = [a for a in self._base.heads() if a.hash not in parents]
        return out + [a for a in self.pending if a.hash not in parents]

    def commit_verified(self, aums: Sequence[AUM]) -> None:
        """Keep verified AUMs aside (written later, under the tailnet's lock)."""
        for a in aums:
            if a.hash not in self._by_hash:
                self._by_hash[a.hash] = a
                self.pending.append(a)

    def last_active_ancestor(self) -> bytes | None:
        """The stored hint."""
        return self._base.last_active_ancestor()

    def set_last_active_ancestor(self, aum_hash: bytes) -> None:
        """Not used by ``inform``; refused so a misuse cannot go unnoticed."""
        raise StoreUnavailable("internal: last-active-ancestor set during verification")

    def all_aums(self) -> list[AUM]:
        """Stored and kept-aside AUMs."""
        return self._base.all_aums() + list(self.pending)


class ServiceBase:
    """State and plumbing every part of :class:`~tka.control.service.ControlService` shares.

    Thread-safe: every method runs in its own store transaction. *clock*
    returns Unix time. *admission* is shared so its decision cache is too.
    """

    def __init__(
        self,
        store: ControlStore,
        *,
        clock: Callable[[], float] = time.time,
        admission: Admission | None = None,
        authority_cache_size: int = 1024,
    ) -> None:
        self.store = store
        self.clock = clock
        self.admission = admission if admission is not None else Admission()
        self._authorities: OrderedDict[tuple[str, bytes], Authority] = OrderedDict()
        self._authority_cache_size = authority_cache_size
        self._lock = threading.Lock()
        self._argon2 = threading.BoundedSemaphore(ARGON2_CONCURRENCY)
        # Tokens found valid lately: sha256(token) -> (tailnet, node ID, expiry).
        self._valid_tokens: OrderedDict[bytes, tuple[str, int, float]] = OrderedDict()
        # The front's last /state answer per tailnet: (seq, status, head) -> JSON.
        self._front_state_cache: OrderedDict[str, tuple[tuple[Any, ...], bytes]] = OrderedDict()
        # Per tailnet, the admitted peers map answers with, kept by (seq, head): see sign.py.
        self._map_peers: OrderedDict[str, Any] = OrderedDict()
        self._map_build = threading.Lock()
        # sync/offer's answers per tailnet at one (created, version, head): the
        # service's offer, and the AUMs a node lacks per node offer (see sync.py).
        self._offers: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        # Those answers' JSON, by id() of the (kept) answer object: see handle_kept.
        self._offer_json_memo: dict[int, tuple[Any, bytes]] = {}
        # Heads nodes reported in an empty sync/send, not yet written:
        # tailnet -> node ID -> head, flushed in one transaction (see sync.py).
        self._reported: dict[str, dict[int, bytes]] = {}
        self._reported_lock = threading.Lock()
        self._reported_timer: threading.Timer | None = None

    # -- plumbing ----------------------------------------------------------------

    def _cached_authority(self, txn: Transaction, t: TailnetRow) -> Authority:
        """The tailnet's authority at its recorded head, opened once per head."""
        if t.head is None:
            raise StoreUnavailable(f"tailnet {t.name!r} is enabled but has no head")
        key = (t.name, t.head)
        with self._lock:
            found = self._authorities.get(key)
            if found is not None:
                self._authorities.move_to_end(key)
                return _copy(found)
        try:
            authority = Authority.open(txn.aum_storage(t.name))
        except TKAError as exc:
            raise StoreUnavailable(
                f"tailnet {t.name!r}: stored chain does not open: {exc}"
            ) from None
        if authority.head_hash != t.head:
            raise StoreUnavailable(f"tailnet {t.name!r}: stored head disagrees with its AUMs")
        self._remember(t.name, authority)
        return _copy(authority)

    def _remember(self, tailnet: str, authority: Authority) -> None:
        with self._lock:
            self._authorities[(tailnet, authority.head_hash)] = _copy(authority)
            while len(self._authorities) > self._authority_cache_size:
                self._authorities.popitem(last=False)

    def _count_attempt(self, key: str, window: float) -> int:
        """Count an attempt under *key* in the database; the attempts in its window so far.

        One upsert in its own short write transaction (SQLite's writer lock
        or one PostgreSQL row), shared by every process and replica on the
        store. Callers authenticate first, so only an authenticated caller
        ever makes a row.
        """
        with self.store.write() as txn:
            return txn.count_attempt(key, self.clock(), window)

    def _disablement_kdf(self, node: NodeRow, secret: bytes) -> bytes:
        """Argon2 for an authenticated node: rate-limited per node (shared), bounded per process."""
        if self._count_attempt(f"disable:{node.node_id}", DISABLE_WINDOW) > DISABLE_ATTEMPTS:
            raise TooManyRequests(
                f"too many disablement attempts: at most {DISABLE_ATTEMPTS} per "
                f"{int(DISABLE_WINDOW)} s per node"
            )
        if not self._argon2.acquire(timeout=30):
            raise TooManyRequests("the service is busy checking disablement secrets: retry")
        try:
            return disablement_kdf(secret)
        finally:
            self._argon2.release()

    @staticmethod
    def _require_enabled(t: TailnetRow) -> None:
        if t.status == STATUS_ENABLED:
            return
        if t.status == STATUS_DISABLED:
            raise Conflict("tailnet lock was disabled in this tailnet: call bootstrap to learn how")
        raise Conflict("tailnet lock is not enabled in this tailnet")

    def _head_changed(
        self,
        ctx: RequestContext,
        nodes: list[NodeRow],
        before: Authority | None,
        after: Authority,
    ) -> None:
        """Re-evaluate every node after a head change and note what changed.

        Called after the commit, so signature checks never hold the
        tailnet's write lock; the answers are cached for the next map poll.
        """
        result = self.admission.reevaluate(before, after, _records(nodes))
        ctx.events.append(
            {
                "event": "head_changed",
                "head": hash_to_text(after.head_hash),
                "locked_out": len(result.locked_out),
                "newly_locked_out": [d.node.node_id for d in result.newly_locked_out],
                "newly_admitted": [d.node.node_id for d in result.newly_admitted],
            }
        )

    # -- dispatch ----------------------------------------------------------------------

    def handle(
        self, path: str, token: Caller, body: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        """Run the node RPC at *path* on a parsed JSON *body*; returns the response body."""
        spec = RPCS.get(path)
        if spec is None or (
            isinstance(token, FrontCaller) and not path.startswith("/machine/tka/")
        ):
            raise NotFound(f"no RPC at {path}")
        request = wire.decode(spec.request, body)
        response = getattr(self, spec.handler)(token, request, ctx)
        return wire.encode(response)

    def _tailnet(self, txn: Transaction, name: str) -> TailnetRow:
        # Names that could never have been created are not looked up at all
        # (PostgreSQL text cannot even hold some of them, e.g. NUL).
        t = txn.tailnet(name) if _TAILNET_RE.fullmatch(name) else None
        if t is None:
            raise NotFound("no tailnet of that name")
        return t
