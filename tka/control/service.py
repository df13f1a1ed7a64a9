"""The TKA RPC handlers and admin operations, as plain functions over a store.

:class:`ControlService` is everything a control plane needs to run tailnet
lock for many tailnets, without any web framework: it authenticates callers,
validates every input, applies it in one store transaction and returns the
response body. ``tka_server`` puts it behind HTTP; another control plane can
call it directly. It never holds a private signing key: it only verifies.

What it verifies, RPC by RPC (``tailcfg/tka.go`` names):

``init/begin``
    Only a node registered with ``may_init``. The genesis decodes, is a
    parentless checkpoint, repeats no key ID and carries no more signatures
    than its state has keys (refused before any signature is checked), is
    well formed and is signed by keys its own state trusts (and by the
    caller's registered tailnet-lock key, when one is registered); it is not
    a replay of an authority disabled before. Kept as pending; the answer
    lists every node.
``init/finish``
    Only the node that began may finish; every registered node needs a
    signature that admits it under the genesis; a support disablement secret
    must match a disablement value. Then genesis and signatures are stored
    and enforcement starts, all in one transaction.
``bootstrap``
    The genesis for a node without an authority; the disablement secret once
    lock was disabled (kept for nodes that were offline).
``sync/offer``, ``sync/send``
    Tailscale's sync: AUMs the node lacks; AUMs the service lacks, each
    verified against the chain (a fork is resolved by Tailscale's rules). An
    interactive send whose AUMs lose a fork is refused and nothing is kept.
``disable``
    The secret must derive to a disablement value (Argon2, constant-time).
    Argon2 runs only for an authenticated node, a few attempts a minute per
    node and at most :data:`ARGON2_CONCURRENCY` at a time per process.
``sign``
    The signature must admit a registered node's key under the current head.
``affected-sigs``
    The valid signatures rooted in a key.

The cost of a request is bounded before any work that an attacker could
make expensive: the caller is authenticated first (one indexed read), then
signatures are counted (no AUM may repeat a key ID or carry more signatures
than there are keys that could sign it), then verified. Verification never
runs inside a write transaction: each write reads and verifies in a read
transaction (or none), then takes the tailnet's write lock, checks that the
tailnet's row (head, status, pending genesis: its ``version``) is still what
was verified against, and writes; if it moved, the request is redone (a few
times, then 409).

Errors are :mod:`tka.control.errors` classes (see there for the statuses).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final

from tka.admission import Admission, NodeDecision, NodeRecord
from tka.aum import AUM, AUMKind, hash_to_text
from tka.authority import Authority
from tka.bundle import parents_first
from tka.control import wire
from tka.control.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    StoreUnavailable,
    TooManyRequests,
    Unauthenticated,
)
from tka.control.store import (
    STATUS_DISABLED,
    STATUS_ENABLED,
    STATUS_PENDING,
    AdminTokenRow,
    AUMStorage,
    ControlStore,
    NodeRow,
    TailnetRow,
    Transaction,
)
from tka.disablement import disablement_kdf
from tka.errors import DecodeError, TKAError, ValidationError, VerificationError
from tka.limits import MAX_KEYS, MAX_SCAN_ITERATIONS
from tka.nlkeys import NodePublic
from tka.sig import NodeKeySignature, SigKind
from tka.storage.memory import MemoryStore
from tka.sync import NoIntersection, SyncOffer, missing_aums, sync_offer

__all__ = [
    "ARGON2_CONCURRENCY",
    "DISABLE_ATTEMPTS",
    "DISABLE_WINDOW",
    "RPCS",
    "ControlService",
    "RPCSpec",
    "RequestContext",
    "hash_token",
]

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
#: its memory stays bounded whatever the number of requests.
ARGON2_CONCURRENCY: Final = 2
#: A node may try ``disable`` (or ``init/finish`` with a support
#: disablement secret) this many times per :data:`DISABLE_WINDOW` seconds.
DISABLE_ATTEMPTS: Final = 5
DISABLE_WINDOW: Final = 60.0
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


class _Retry(Exception):
    """The tailnet moved between verification and the write: redo the request."""


class _Recorder:
    """A tailnet's AUM storage read through, with writes kept aside.

    :meth:`Authority.inform` verifies and then commits: run on this, it
    verifies against the stored chain (in a read transaction) and the
    commit only lands here, to be written later in the write transaction.
    """

    def __init__(self, base: AUMStorage) -> None:
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


class _AttemptLimiter:
    """At most *limit* attempts per key in any *window* seconds (in memory, per process)."""

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self._limit = limit
        self._window = window
        self._max_keys = max_keys
        self._seen: OrderedDict[Any, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: Any, now: float) -> bool:
        """Record an attempt; whether it is within the limit."""
        with self._lock:
            times = self._seen.get(key)
            if times is None:
                times = self._seen[key] = deque()
                while len(self._seen) > self._max_keys:
                    self._seen.popitem(last=False)
            self._seen.move_to_end(key)
            while times and times[0] <= now - self._window:
                times.popleft()
            if len(times) >= self._limit:
                return False
            times.append(now)
            return True


class ControlService:
    """Tailnet lock for many tailnets over one :class:`~tka.control.store.ControlStore`.

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
        self._disable_attempts = _AttemptLimiter(DISABLE_ATTEMPTS, DISABLE_WINDOW)

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

    @staticmethod
    def _auth_node(
        txn: Transaction,
        token: str | None,
        node_key: NodePublic | None,
        ctx: RequestContext,
        key_field: str = "NodeKey",
    ) -> tuple[NodeRow, TailnetRow]:
        node_id, secret_part = _parse_token(token, _NODE_TOKEN_PREFIX)
        node = txn.node(node_id)
        # Compare hashes in constant time; an unknown node costs the same.
        stored = node.token_hash if node is not None else bytes(32)
        ok = hmac.compare_digest(hash_token(secret_part), stored)
        if node is None or not ok:
            raise Unauthenticated("invalid token")
        ctx.tailnet, ctx.node_id = node.tailnet, node.node_id
        if node_key is None or node_key.raw != node.node_key:
            raise Forbidden(f"{key_field} is not the node key registered for this node")
        t = txn.tailnet(node.tailnet)
        if t is None:
            raise NotFound("the node's tailnet does not exist")
        return node, t

    def token_recently_valid(self, token: str | None) -> tuple[str, int] | None:
        """(tailnet, node ID) if *token* was found valid in the last minute, else ``None``.

        A pre-check only, with no database access, for the HTTP layer to
        read a body without a round trip: every RPC authenticates again
        inside its own transaction, so a token revoked or re-minted within
        the minute is still refused (its body is merely read first).
        """
        if not token:
            return None
        key = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        with self._lock:
            found = self._valid_tokens.get(key)
        if found is None or found[2] < time.monotonic():
            return None
        return found[0], found[1]

    def authenticate_node(self, token: str | None) -> NodeRow:
        """The node *token* belongs to, or :class:`Unauthenticated`.

        Looks at nothing but the token (one indexed read, one hash): the
        HTTP layer calls it before reading a request's body, so a request
        without a valid token costs next to nothing whatever it carries.
        """
        node_id, secret_part = _parse_token(token, _NODE_TOKEN_PREFIX)
        with self.store.read() as txn:
            node = txn.node(node_id)
        stored = node.token_hash if node is not None else bytes(32)
        ok = hmac.compare_digest(hash_token(secret_part), stored)
        if node is None or not ok:
            raise Unauthenticated("invalid token")
        assert token is not None
        key = hashlib.sha256(token.encode("ascii")).digest()
        with self._lock:
            self._valid_tokens[key] = (node.tailnet, node.node_id, time.monotonic() + 60.0)
            self._valid_tokens.move_to_end(key)
            while len(self._valid_tokens) > 100_000:
                self._valid_tokens.popitem(last=False)
        return node

    def _disablement_kdf(self, node: NodeRow, secret: bytes) -> bytes:
        """Argon2 for an authenticated node: rate-limited per node, bounded per process."""
        if not self._disable_attempts.allow(node.node_id, time.monotonic()):
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

    @contextmanager
    def _node_write(
        self,
        token: str | None,
        node_key: NodePublic | None,
        ctx: RequestContext,
        key_field: str = "NodeKey",
        tailnet: str | None = None,
    ) -> Iterator[tuple[Transaction, NodeRow, TailnetRow]]:
        # Authenticate first (which names the tailnet; callers that just
        # did pass it), then take the tailnet's write lock and authenticate
        # again inside it, so the node is checked against what the
        # transaction sees.
        if tailnet is None:
            with self.store.read() as txn:
                node, _ = self._auth_node(txn, token, node_key, ctx, key_field)
            tailnet = node.tailnet
        with self.store.write(tailnet) as txn:
            node, t = self._auth_node(txn, token, node_key, ctx, key_field)
            if node.tailnet != tailnet:  # node IDs are never reused: cannot happen
                raise Unauthenticated("invalid token")
            yield txn, node, t

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
        self, path: str, token: str | None, body: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        """Run the node RPC at *path* on a parsed JSON *body*; returns the response body."""
        spec = RPCS.get(path)
        if spec is None:
            raise NotFound(f"no RPC at {path}")
        request = wire.decode(spec.request, body)
        response = getattr(self, spec.handler)(token, request, ctx)
        return wire.encode(response)

    # -- the RPCs ------------------------------------------------------------------------

    def init_begin(
        self, token: str | None, req: wire.InitBeginRequest, ctx: RequestContext
    ) -> wire.InitBeginResponse:
        """``/machine/tka/init/begin``: check and keep a genesis; list nodes to sign."""
        with self.store.read() as txn:
            node, _ = self._auth_node(txn, token, req.node_key, ctx)
        if not node.may_init:
            raise Forbidden(
                "this node may not initialize tailnet lock: an admin registers it with "
                "--may-init, or grants it with 'tka control allow-init'"
            )
        genesis = _decode_aum(req.genesis_aum, "GenesisAUM")
        if genesis.message_kind != AUMKind.CHECKPOINT or genesis.state is None:
            raise BadRequest("GenesisAUM: must be a checkpoint AUM holding a state")
        if genesis.prev_aum_hash is not None:
            raise BadRequest("GenesisAUM: a genesis AUM has no parent")
        _check_signature_count(genesis, "GenesisAUM", len(genesis.state.keys or ()))
        try:
            # A dry run on throw-away storage: every static and signature check.
            Authority.bootstrap(MemoryStore(), genesis)
        except VerificationError as exc:
            raise VerificationError(f"GenesisAUM: {exc}") from None
        except TKAError as exc:
            raise ValidationError(f"GenesisAUM: {exc}") from None
        signers = {s.key_id for s in genesis.signatures or ()}
        state = genesis.state
        with self._node_write(token, req.node_key, ctx, tailnet=node.tailnet) as (txn, node, t):
            if not node.may_init:
                raise Forbidden("this node may not initialize tailnet lock")
            if node.nl_key and node.nl_key not in signers:
                raise Forbidden("GenesisAUM: not signed by this node's tailnet-lock key")
            if t.status == STATUS_ENABLED:
                raise Conflict("tailnet lock is already enabled in this tailnet")
            if txn.is_disabled_state(t.name, state.state_id1, state.state_id2):
                raise Conflict(
                    "GenesisAUM: this authority was disabled before (a replay): "
                    "initialize with a new genesis"
                )
            txn.save_tailnet(
                replace(
                    t,
                    status=STATUS_PENDING,
                    pending_genesis=genesis.to_bytes(),
                    pending_node=node.node_id,
                ),
                self.clock(),
            )
            nodes = txn.nodes(t.name)
        ctx.events.append({"event": "init_begun", "genesis": genesis.hash_text})
        return wire.InitBeginResponse(
            tuple(
                wire.SignInfo(n.node_id, NodePublic(n.node_key), n.rotation_pubkey or b"")
                for n in nodes
            )
        )

    def init_finish(
        self, token: str | None, req: wire.InitFinishRequest, ctx: RequestContext
    ) -> wire.EmptyResponse:
        """``/machine/tka/init/finish``: check every node's signature, then enforce."""
        if len(req.support_disablement) > MAX_SECRET_BYTES:
            raise BadRequest(f"SupportDisablement: longer than {MAX_SECRET_BYTES} bytes")
        support_value: bytes | None = None
        for _ in range(_WRITE_ATTEMPTS):
            # Read and verify without the tailnet's write lock ...
            with self.store.read() as txn:
                node, t = self._auth_node(txn, token, req.node_key, ctx)
                if t.status == STATUS_ENABLED:
                    raise Conflict("tailnet lock is already enabled in this tailnet")
                if t.status != STATUS_PENDING or t.pending_genesis is None:
                    raise Conflict("no initialization is in progress: call init/begin first")
                if t.pending_node != node.node_id:
                    raise Forbidden("another node began this initialization")
                nodes = {n.node_id: n for n in txn.nodes(t.name)}
            genesis = AUM.from_bytes(t.pending_genesis)
            authority = Authority.bootstrap(MemoryStore(), genesis)
            unknown = sorted(set(req.signatures) - set(nodes))
            if unknown:
                raise Conflict(f"Signatures: no such nodes in this tailnet: {unknown[:10]}")
            for node_id, sig in sorted(req.signatures.items()):
                d = self.admission.decide(authority, nodes[node_id].node_key, sig)
                if not d.admitted:
                    raise VerificationError(f"Signatures[{node_id}]: {d.reason}")
            missing = sorted(set(nodes) - set(req.signatures))
            if missing:
                raise Conflict(
                    f"no signature for nodes {missing[:10]}: they registered after init/begin; "
                    "call init/begin again"
                )
            if req.support_disablement and support_value is None:
                support_value = self._disablement_kdf(node, req.support_disablement)
            if support_value is not None and not any(
                hmac.compare_digest(support_value, v)
                for v in authority.state.disablement_values or ()
            ):
                raise VerificationError(
                    "SupportDisablement: does not match any disablement value of the genesis"
                )
            # ... then write, if nothing moved meanwhile.
            try:
                with self._node_write(token, req.node_key, ctx, tailnet=t.name) as (
                    txn,
                    node,
                    t2,
                ):
                    now_nodes = {n.node_id: n for n in txn.nodes(t.name)}
                    if (
                        t2.version != t.version
                        or t2.pending_node != node.node_id
                        or {i: n.node_key for i, n in now_nodes.items()}
                        != {i: n.node_key for i, n in nodes.items()}
                    ):
                        raise _Retry
                    now = self.clock()
                    txn.delete_aums(t.name)  # a previous, disabled authority's chain
                    storage = txn.aum_storage(t.name)
                    storage.commit_verified([genesis])
                    for node_id, sig in req.signatures.items():
                        txn.save_node(replace(now_nodes[node_id], signature=sig, updated=now))
                    txn.save_tailnet(
                        replace(
                            t2,
                            status=STATUS_ENABLED,
                            head=genesis.hash,
                            last_active_ancestor=genesis.hash,
                            pending_genesis=None,
                            pending_node=None,
                            disablement_secret=None,
                            support_disablement=req.support_disablement or None,
                        ),
                        now,
                    )
            except _Retry:
                continue
            break
        else:
            raise Conflict("the tailnet changed while this request was checked: try again")
        self._remember(t.name, authority)
        ctx.events.append(
            {"event": "lock_enabled", "head": genesis.hash_text, "nodes_signed": len(nodes)}
        )
        return wire.EmptyResponse()

    def bootstrap(
        self, token: str | None, req: wire.BootstrapRequest, ctx: RequestContext
    ) -> wire.BootstrapResponse:
        """``/machine/tka/bootstrap``: the genesis, or the disablement secret."""
        with self.store.read() as txn:
            _, t = self._auth_node(txn, token, req.node_key, ctx)
            if t.status == STATUS_DISABLED and t.disablement_secret:
                return wire.BootstrapResponse(disablement_secret=t.disablement_secret)
            if t.status == STATUS_ENABLED and req.head is None:
                authority = self._cached_authority(txn, t)
                return wire.BootstrapResponse(genesis_aum=authority.oldest_ancestor.to_bytes())
        return wire.BootstrapResponse()

    def sync_offer(
        self, token: str | None, req: wire.SyncOfferRequest, ctx: RequestContext
    ) -> wire.SyncOfferResponse:
        """``/machine/tka/sync/offer``: the service's offer and what the node lacks."""
        assert req.head is not None  # required field
        with self.store.read() as txn:
            _, t = self._auth_node(txn, token, req.node_key, ctx)
            self._require_enabled(t)
            authority = self._cached_authority(txn, t)
            storage = txn.aum_storage(t.name)
            try:
                missing = missing_aums(authority, storage, SyncOffer(req.head, req.ancestors))
            except NoIntersection:
                raise Conflict(
                    "the node's chain and the service's share no AUM: the node holds "
                    "another authority"
                ) from None
            offer = sync_offer(authority, storage)
        return wire.SyncOfferResponse(
            offer.head, offer.ancestors, tuple(a.to_bytes() for a in missing)
        )

    def sync_send(
        self, token: str | None, req: wire.SyncSendRequest, ctx: RequestContext
    ) -> wire.SyncSendResponse:
        """``/machine/tka/sync/send``: verify and apply the AUMs the service lacks."""
        aums = [_decode_aum(b, f"MissingAUMs[{i}]") for i, b in enumerate(req.missing_aums)]
        for i, a in enumerate(aums):
            _check_signature_count(a, f"MissingAUMs[{i}]")
        ordered = parents_first(aums)
        for _ in range(_WRITE_ATTEMPTS):
            # Verify in a read transaction: the tailnet's write lock is not held.
            with self.store.read() as txn:
                node, t = self._auth_node(txn, token, req.node_key, ctx)
                self._require_enabled(t)
                before = self._cached_authority(txn, t)
                recorder = _Recorder(txn.aum_storage(t.name))
                authority = self._apply(recorder, before, ordered)
                if req.interactive and aums:
                    self._require_on_chain(recorder, authority, aums)
            try:
                with self._node_write(token, req.node_key, ctx, tailnet=t.name) as (
                    txn,
                    node,
                    t2,
                ):
                    if t2.version != t.version:
                        raise _Retry
                    if recorder.pending:
                        txn.aum_storage(t.name).commit_verified(recorder.pending)
                        # Saved even when the head stays (a losing branch was
                        # kept): the version tells later writers the AUMs moved.
                        txn.save_tailnet(replace(t2, head=authority.head_hash), self.clock())
                    if req.head != node.reported_head:
                        txn.save_node(replace(node, reported_head=req.head, updated=self.clock()))
                    nodes: list[NodeRow] = []
                    if authority.head_hash != before.head_hash:
                        nodes = txn.nodes(t.name)
            except _Retry:
                continue
            break
        else:
            raise Conflict("the tailnet's chain moved while this request was checked: try again")
        if authority.head_hash != before.head_hash:
            self._remember(t.name, authority)
            self._head_changed(ctx, nodes, before, authority)
        return wire.SyncSendResponse(authority.head_hash)

    @staticmethod
    def _apply(storage: _Recorder, before: Authority, ordered: list[AUM]) -> Authority:
        """Verify and store AUMs not yet held, parents first; the resulting authority."""
        new = [a for a in ordered if storage.get(a.hash) is None]
        if not new:
            return before
        batch = {a.hash for a in new}
        for a in new:
            parent = a.parent
            if parent is None:
                raise Conflict(
                    f"AUM {a.hash_text} has no parent: a second genesis cannot join the chain"
                )
            if parent not in batch and storage.get(parent) is None:
                raise Conflict(
                    f"AUM {a.hash_text}: its parent {hash_to_text(parent)} is not held by "
                    "the service: sync/offer first"
                )
        authority = _copy(before)
        authority.inform(storage, new)
        return authority

    @staticmethod
    def _require_on_chain(storage: _Recorder, authority: Authority, aums: list[AUM]) -> None:
        """Refuse (and so roll back) an interactive change that lost a fork."""
        chain: set[bytes] = set()
        cursor: AUM | None = authority.head
        oldest = authority.oldest_ancestor.hash
        for _ in range(MAX_SCAN_ITERATIONS):
            if cursor is None:
                break
            chain.add(cursor.hash)
            if cursor.hash == oldest or cursor.parent is None:
                break
            cursor = storage.get(cursor.parent)
        lost = [a for a in aums if a.hash not in chain]
        if lost:
            raise Conflict(
                f"the change loses a fork: AUM {lost[0].hash_text} is not on the active chain, "
                f"whose head is {authority.head.hash_text}; sync and make the change again"
            )

    def disable(
        self, token: str | None, req: wire.DisableRequest, ctx: RequestContext
    ) -> wire.EmptyResponse:
        """``/machine/tka/disable``: turn lock off with a disablement secret."""
        if len(req.disablement_secret) > MAX_SECRET_BYTES:
            raise BadRequest(f"DisablementSecret: longer than {MAX_SECRET_BYTES} bytes")
        with self.store.read() as txn:
            node, _ = self._auth_node(txn, token, req.node_key, ctx)
        # Argon2 is slow on purpose: only for an authenticated node, rate
        # limited, and before taking the tailnet's lock.
        derived = self._disablement_kdf(node, req.disablement_secret)
        with self._node_write(token, req.node_key, ctx, tailnet=node.tailnet) as (txn, _, t):
            if t.status == STATUS_DISABLED:
                raise Conflict("tailnet lock is already disabled in this tailnet")
            self._require_enabled(t)
            authority = self._cached_authority(txn, t)
            assert req.head is not None
            if txn.aum_storage(t.name).get(req.head) is None:
                raise Conflict("Head is not an AUM the service holds: sync first")
            found = False
            for value in authority.state.disablement_values or ():
                found |= hmac.compare_digest(derived, value)
            if not found:
                raise Forbidden("the disablement secret does not match any disablement value")
            txn.add_disabled_state(t.name, *authority.state_ids)
            txn.save_tailnet(
                replace(t, status=STATUS_DISABLED, disablement_secret=req.disablement_secret),
                self.clock(),
            )
        ctx.events.append({"event": "lock_disabled", "head": authority.head.hash_text})
        return wire.EmptyResponse()

    def sign(
        self, token: str | None, req: wire.SubmitSignatureRequest, ctx: RequestContext
    ) -> wire.EmptyResponse:
        """``/machine/tka/sign``: keep a signature that admits a registered node."""
        try:
            sig = NodeKeySignature.from_bytes(req.signature)
        except DecodeError as exc:
            raise BadRequest(f"Signature: not a node-key signature ({exc})") from None
        if sig.sig_kind == SigKind.CREDENTIAL:
            raise VerificationError("Signature: a credential signature admits no node by itself")
        try:
            target_key = NodePublic.from_binary(sig.pubkey or b"")
        except DecodeError:
            raise BadRequest("Signature: names no node key") from None
        for _ in range(_WRITE_ATTEMPTS):
            with self.store.read() as txn:
                _, t = self._auth_node(txn, token, req.node_key, ctx)
                self._require_enabled(t)
                target = txn.node_by_key(t.name, target_key.raw)
                if target is None:
                    raise NotFound(
                        f"no node with {target_key.text()} is registered in this tailnet"
                    )
                authority = self._cached_authority(txn, t)
            # Verified outside the write lock, against the head just read.
            d = self.admission.decide(authority, target.node_key, req.signature)
            if not d.admitted:
                raise VerificationError(f"Signature: {d.reason}")
            try:
                with self._node_write(token, req.node_key, ctx, tailnet=t.name) as (txn, _, t2):
                    if t2.version != t.version:
                        raise _Retry  # the head moved: decide again
                    now_target = txn.node_by_key(t.name, target_key.raw)
                    if now_target is None:
                        raise NotFound(
                            f"no node with {target_key.text()} is registered in this tailnet"
                        )
                    if now_target.signature != req.signature:
                        txn.save_node(
                            replace(now_target, signature=req.signature, updated=self.clock())
                        )
            except _Retry:
                continue
            break
        else:
            raise Conflict("the tailnet's chain moved while this request was checked: try again")
        ctx.events.append(
            {
                "event": "node_signed",
                "target_node": target.node_id,
                "by": _tlpub(d.signing_key or b""),
            }
        )
        return wire.EmptyResponse()

    def affected_sigs(
        self, token: str | None, req: wire.SignaturesUsingKeyRequest, ctx: RequestContext
    ) -> wire.SignaturesUsingKeyResponse:
        """``/machine/tka/affected-sigs``: the valid signatures made by one key."""
        if len(req.key_id) != 32:
            raise BadRequest(f"KeyID: {len(req.key_id)} bytes, want 32")
        with self.store.read() as txn:
            _, t = self._auth_node(txn, token, req.node_key, ctx)
            self._require_enabled(t)
            authority = self._cached_authority(txn, t)
            found = self.admission.affected_signatures(
                authority, _records(txn.nodes(t.name)), req.key_id
            )
        sigs = tuple(n.signature or b"" for n in found)
        if sum(len(s) * 4 // 3 + 8 for s in sigs) > SMALL_BODY - 1024:
            # Tailscale's client reads at most 1 MiB of this answer.
            raise Conflict(f"{len(sigs)} signatures use this key: more than one answer can carry")
        return wire.SignaturesUsingKeyResponse(sigs)

    def register(
        self, token: str | None, req: wire.RegisterRequest, ctx: RequestContext
    ) -> wire.RegisterResponse:
        """``/machine/register`` (rotation subset): move a node to a new node key."""
        new_key = req.node_key
        assert new_key is not None
        if req.node_key_signature:
            try:
                NodeKeySignature.from_bytes(req.node_key_signature)
            except DecodeError as exc:
                raise BadRequest(f"NodeKeySignature: not a node-key signature ({exc})") from None
        with self.store.read() as txn:
            node_id, _ = _parse_token(token, _NODE_TOKEN_PREFIX)
            current = txn.node(node_id)
        if (
            current is not None
            and current.node_key == new_key.raw
            and (req.node_key_signature in (b"", current.signature))
        ):
            # A retried rotation that already happened: answer as before.
            with self.store.read() as txn:
                node, t = self._auth_node(txn, token, new_key, ctx)
            return wire.RegisterResponse(True, node.signature or b"")
        sig = req.node_key_signature or None
        for _ in range(_WRITE_ATTEMPTS):
            with self.store.read() as txn:
                node, t = self._auth_node(txn, token, req.old_node_key, ctx, "OldNodeKey")
                authority = self._cached_authority(txn, t) if t.status == STATUS_ENABLED else None
            if authority is not None:
                if sig is None:
                    raise VerificationError(
                        "NodeKeySignature: required while tailnet lock is enabled"
                    )
                # Verified outside the write lock, against the head just read.
                d = self.admission.decide(authority, new_key.raw, sig)
                if not d.admitted:
                    raise VerificationError(f"NodeKeySignature: {d.reason}")
            try:
                with self._node_write(token, req.old_node_key, ctx, "OldNodeKey", t.name) as (
                    txn,
                    node,
                    t2,
                ):
                    if t2.version != t.version:
                        raise _Retry
                    other = txn.node_by_key(t.name, new_key.raw)
                    if other is not None and other.node_id != node.node_id:
                        raise Conflict("NodeKey: already registered to another node")
                    txn.save_node(
                        replace(node, node_key=new_key.raw, signature=sig, updated=self.clock())
                    )
            except _Retry:
                continue
            break
        else:
            raise Conflict("the tailnet's chain moved while this request was checked: try again")
        ctx.events.append({"event": "node_key_rotated"})
        return wire.RegisterResponse(True, sig or b"")

    def map(self, token: str | None, req: wire.MapRequest, ctx: RequestContext) -> wire.MapResponse:
        """``/machine/map`` (lock subset): the head and the peers the authority admits."""
        with self.store.read() as txn:
            node, t = self._auth_node(txn, token, req.node_key, ctx)
            nodes = txn.nodes(t.name)
            info: wire.TKAInfo | None = None
            admitted = {n.node_id for n in nodes}
            if t.status == STATUS_ENABLED:
                authority = self._cached_authority(txn, t)
                info = wire.TKAInfo(head=authority.head_hash)
                admitted = {
                    d.node.node_id
                    for d in self.admission.evaluate(authority, _records(nodes))
                    if d.admitted
                }
            elif t.status == STATUS_DISABLED:
                info = wire.TKAInfo(disabled=True)

        def entry(n: NodeRow) -> wire.MapNode:
            return wire.MapNode(n.node_id, NodePublic(n.node_key), n.signature or b"")

        return wire.MapResponse(
            entry(node),
            tuple(entry(n) for n in nodes if n.node_id != node.node_id and n.node_id in admitted),
            info,
        )

    # -- admin ------------------------------------------------------------------------------

    def authenticate_admin(self, token: str | None) -> None:
        """Raise :class:`Unauthenticated` unless *token* is a valid admin token."""
        token_id, secret_part = _parse_token(token, _ADMIN_TOKEN_PREFIX)
        with self.store.read() as txn:
            stored = txn.admin_token_hash(token_id)
        ok = hmac.compare_digest(hash_token(secret_part), stored or bytes(32))
        if stored is None or not ok:
            raise Unauthenticated("invalid token")

    def mint_admin_token(self, label: str = "") -> str:
        """Create an admin token; only its hash is kept. Returns the token (show it once)."""
        secret_part = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        with self.store.write() as txn:
            token_id = txn.insert_admin_token(hash_token(secret_part), label, self.clock())
        return f"{_ADMIN_TOKEN_PREFIX}_{token_id}_{secret_part}"

    def _tailnet(self, txn: Transaction, name: str) -> TailnetRow:
        # Names that could never have been created are not looked up at all
        # (PostgreSQL text cannot even hold some of them, e.g. NUL).
        t = txn.tailnet(name) if _TAILNET_RE.fullmatch(name) else None
        if t is None:
            raise NotFound("no tailnet of that name")
        return t

    def create_tailnet(self, name: str) -> dict[str, Any]:
        """Create a tailnet (lock off until a node initializes it)."""
        if not isinstance(name, str) or not _TAILNET_RE.fullmatch(name):
            raise BadRequest(
                "Name: 1-63 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        with self.store.write() as txn:
            t = txn.insert_tailnet(name, self.clock())
        return self._tailnet_json(t, 0, None)

    def _tailnet_json(
        self, t: TailnetRow, node_count: int, authority: Authority | None, locked: int = 0
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Name": t.name,
            "Status": t.status,
            "Enabled": t.status == STATUS_ENABLED,
            "Nodes": node_count,
        }
        if authority is not None:
            out["Head"] = authority.head.hash_text
            out["TrustedKeys"] = [
                {"Key": _tlpub(k.public or b""), "Votes": k.votes} for k in authority.keys
            ]
            out["StateID"] = authority.state_ids[0]
            out["LockedOut"] = locked
        return out

    def tailnets(self) -> list[dict[str, Any]]:
        """Every tailnet, briefly."""
        with self.store.read() as txn:
            rows = txn.tailnets()
            return [self._tailnet_json(t, len(txn.nodes(t.name)), None) for t in rows]

    def tailnet_status(self, name: str) -> dict[str, Any]:
        """One tailnet: lock status, head, trusted keys, node counts."""
        with self.store.read() as txn:
            t = self._tailnet(txn, name)
            nodes = txn.nodes(name)
            if t.status != STATUS_ENABLED:
                return self._tailnet_json(t, len(nodes), None)
            authority = self._cached_authority(txn, t)
        locked = len(self.admission.locked_out(authority, _records(nodes)))
        return self._tailnet_json(t, len(nodes), authority, locked)

    def register_node(self, tailnet: str, req: wire.AdminRegisterRequest) -> dict[str, Any]:
        """Register a node and mint its token (returned once; only a hash is kept)."""
        assert req.node_key is not None
        for what, v in (("RotationPubkey", req.rotation_pubkey), ("NLKey", req.nl_key)):
            if v and len(v) != 32:
                raise BadRequest(f"{what}: {len(v)} bytes, want 32")
        if len(req.name) > 200 or not req.name.isprintable():
            raise BadRequest("Name: at most 200 printable characters")
        now = self.clock()
        with self.store.write(tailnet if _TAILNET_RE.fullmatch(tailnet) else None) as txn:
            self._tailnet(txn, tailnet)
            # The token names the node's ID, which the insert assigns: insert
            # with a placeholder hash, then store the real one.
            row = txn.insert_node(
                NodeRow(
                    node_id=0,
                    tailnet=tailnet,
                    node_key=req.node_key.raw,
                    token_hash=bytes(32),
                    name=req.name,
                    rotation_pubkey=req.rotation_pubkey or None,
                    nl_key=req.nl_key or None,
                    created=now,
                    updated=now,
                    may_init=req.may_init,
                )
            )
            token, secret_part = _mint(_NODE_TOKEN_PREFIX, row.node_id)
            txn.save_node(replace(row, token_hash=hash_token(secret_part)))
        return {
            "Tailnet": tailnet,
            "NodeID": row.node_id,
            "NodeKey": req.node_key.text(),
            "MayInit": row.may_init,
            "Token": token,
        }

    def _admin_node(self, txn: Transaction, tailnet: str, node_id: int) -> NodeRow:
        self._tailnet(txn, tailnet)
        node = txn.node(node_id)
        if node is None or node.tailnet != tailnet:
            raise NotFound(f"no node {node_id} in tailnet {tailnet!r}")
        return node

    def set_may_init(self, tailnet: str, node_id: int, may_init: bool) -> dict[str, Any]:
        """Allow (or forbid) a node to begin tailnet lock initialization."""
        with self.store.write(tailnet if _TAILNET_RE.fullmatch(tailnet) else None) as txn:
            node = self._admin_node(txn, tailnet, node_id)
            if node.may_init != may_init:
                txn.save_node(replace(node, may_init=may_init, updated=self.clock()))
        return {"Tailnet": tailnet, "NodeID": node_id, "MayInit": may_init}

    def remint_node_token(self, tailnet: str, node_id: int) -> dict[str, Any]:
        """Give a node a new token; the old one stops working when this commits."""
        with self.store.write(tailnet if _TAILNET_RE.fullmatch(tailnet) else None) as txn:
            node = self._admin_node(txn, tailnet, node_id)
            token, secret_part = _mint(_NODE_TOKEN_PREFIX, node.node_id)
            txn.save_node(replace(node, token_hash=hash_token(secret_part), updated=self.clock()))
        return {
            "Tailnet": tailnet,
            "NodeID": node.node_id,
            "NodeKey": NodePublic(node.node_key).text(),
            "MayInit": node.may_init,
            "Token": token,
        }

    def admin_tokens(self) -> list[dict[str, Any]]:
        """Every admin token: ID, label, creation time (never the secret or its hash)."""
        with self.store.read() as txn:
            rows: list[AdminTokenRow] = txn.admin_tokens()
        return [{"ID": r.token_id, "Label": r.label, "Created": r.created} for r in rows]

    def revoke_admin_token(self, token_id: int) -> None:
        """Forget an admin token: it stops working when this commits."""
        with self.store.write() as txn:
            if not txn.delete_admin_token(token_id):
                raise NotFound(f"no admin token {token_id}")

    def delete_node(self, tailnet: str, node_id: int) -> None:
        """Forget a node (its token stops working)."""
        with self.store.write(tailnet if _TAILNET_RE.fullmatch(tailnet) else None) as txn:
            self._tailnet(txn, tailnet)
            node = txn.node(node_id)
            if node is None or node.tailnet != tailnet:
                raise NotFound(f"no node {node_id} in tailnet {tailnet!r}")
            txn.delete_node(node_id)

    def node_decisions(self, tailnet: str) -> list[wire.AdminNode]:
        """Every node of a tailnet with the authority's decision on it."""
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            nodes = txn.nodes(tailnet)
            authority = self._cached_authority(txn, t) if t.status == STATUS_ENABLED else None
        if authority is None:
            why = {
                STATUS_DISABLED: "admitted: tailnet lock is disabled",
                STATUS_PENDING: "admitted: tailnet lock is being initialized",
            }.get(t.status, "admitted: tailnet lock is not enabled")
            decisions: dict[int, NodeDecision | None] = {n.node_id: None for n in nodes}
        else:
            decisions = {
                d.node.node_id: d for d in self.admission.evaluate(authority, _records(nodes))
            }
        out = []
        for n in nodes:
            d = decisions[n.node_id]
            out.append(
                wire.AdminNode(
                    node_id=n.node_id,
                    name=n.name,
                    node_key=NodePublic(n.node_key),
                    rotation_pubkey=n.rotation_pubkey or b"",
                    key_signature=n.signature or b"",
                    admitted=True if d is None else d.admitted,
                    reason=why if d is None else d.reason,
                    signing_key=_tlpub(d.decision.signing_key)
                    if d is not None and d.decision.signing_key
                    else "",
                    reported_head=n.reported_head,
                    may_init=n.may_init,
                )
            )
        return out

    def lock_log(self, tailnet: str, limit: int = 50) -> str:
        """The tailnet's lock log in Tailscale's v1 JSON schema (read-only)."""
        from tka.lockjson import log_walk_storage, render_log

        if not 1 <= limit <= MAX_LOG_LIMIT:
            raise BadRequest(f"limit: must be between 1 and {MAX_LOG_LIMIT}")
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            if t.head is None:
                raise Conflict("tailnet lock was never enabled in this tailnet: no log")
            aums = log_walk_storage(txn.aum_storage(tailnet), t.head, limit)
        return render_log(aums, limit)

    def admin_affected_sigs(self, tailnet: str, key_id: bytes) -> list[bytes]:
        """Admin view of ``affected-sigs``."""
        if len(key_id) != 32:
            raise BadRequest(f"key: {len(key_id)} bytes, want 32")
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            self._require_enabled(t)
            authority = self._cached_authority(txn, t)
            nodes = _records(txn.nodes(tailnet))
        return [
            n.signature or b"" for n in self.admission.affected_signatures(authority, nodes, key_id)
        ]

    def tailnet_exists(self, name: str) -> bool:
        """Whether a tailnet of that name exists."""
        with self.store.read() as txn:
            return txn.tailnet(name) is not None
