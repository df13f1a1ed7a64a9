"""``disable``, ``sign``, ``affected-sigs``, and the lock subset of ``register`` and ``map``."""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass, field, replace
from typing import Any, Final, cast

from tka.control import wire
from tka.control.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
)
from tka.control.service._base import (
    _NODE_TOKEN_PREFIX,
    _WRITE_ATTEMPTS,
    MAX_SECRET_BYTES,
    SMALL_BODY,
    Caller,
    JoinedRow,
    NotKept,
    RequestContext,
    _JoinedRead,
    _parse_token,
    _records,
    _Retry,
    _tlpub,
)
from tka.control.service.auth import Auth
from tka.control.store import (
    STATUS_DISABLED,
    STATUS_ENABLED,
    NodeRow,
    TailnetRow,
    Transaction,
)
from tka.errors import DecodeError, VerificationError
from tka.nlkeys import NodePublic
from tka.sig import NodeKeySignature, SigKind


class SignRPCs(Auth):
    """Signatures and disablement."""

    def disable(
        self, token: Caller, req: wire.DisableRequest, ctx: RequestContext
    ) -> wire.EmptyResponse:
        """``/machine/tka/disable``: turn lock off with a disablement secret."""
        if len(req.disablement_secret) > MAX_SECRET_BYTES:
            raise BadRequest(f"DisablementSecret: longer than {MAX_SECRET_BYTES} bytes")
        head = req.head
        if head is None:  # a required field: wire.decode refuses it already
            raise BadRequest("Head: required")
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
            if txn.aum_storage(t.name).get(head) is None:
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
        self, token: Caller, req: wire.SubmitSignatureRequest, ctx: RequestContext
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
        self, token: Caller, req: wire.SignaturesUsingKeyRequest, ctx: RequestContext
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
        if new_key is None:  # a required field: wire.decode refuses it already
            raise BadRequest("NodeKey: required")
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
        """``/machine/map`` (lock subset): the head and the peers the authority admits.

        Always the whole list (a valid answer to any request); with lock
        enabled it names the map session and ``Seq`` a later request may
        resume from (see :meth:`map_json`).
        """
        node, info, peers, t = self._map_parts(token, req, ctx)
        if isinstance(peers, _MapPeers):
            others = tuple(n for n in peers.nodes if n.id != node.node_id)
            return wire.MapResponse(_map_node(node), others, info, _session_handle(t), peers.key[0])
        others = tuple(_map_node(n) for n in peers if n.node_id != node.node_id)
        return wire.MapResponse(_map_node(node), others, info)

    def map_json(self, token: str | None, body: dict[str, Any], ctx: RequestContext) -> bytes:
        """:meth:`map` as the JSON bytes of its answer, for the HTTP layer.

        With lock enabled, the admitted peers' entries are built once per
        tailnet ``seq`` and head (see :meth:`_admitted_peers`); a request
        then costs its authentication and copying its answer out, without
        the caller's own entry.

        **Map sessions** (Tailscale's ``MapSessionHandle``/``Seq`` fields):
        with lock enabled, an answer names its session (the tailnet) and the
        tailnet's ``Seq``. A request naming that session and a ``Seq`` this
        process built a map at is answered with what changed since: only
        ``PeersChanged`` (whole entries, new or changed) and
        ``PeersRemoved`` (node IDs), no ``Peers`` key at all; nothing but
        the caller's own entry and the lock info when nothing changed. Any
        other request gets the whole list, which is always correct: a
        delta is an optimisation the client opts into, never required.
        """
        req = wire.decode(wire.MapRequest, body)
        node, info, peers, t = self._map_parts(token, req, ctx)
        if isinstance(peers, _MapPeers):
            return _session_json(node, info, peers, req, _session_handle(t))
        return _map_json(node, info, peers)

    def map_kept(
        self, token: str, req: wire.MapRequest, ctx: RequestContext, kept: JoinedRow
    ) -> bytes:
        """:meth:`map_json` from memory, authenticated against *kept*, or :class:`NotKept`.

        Answered only with lock enabled and the tailnet's admitted peers
        kept for the (seq, head) *kept* was read at.
        """
        node, t = self._auth_node(
            cast(Transaction, _JoinedRead(self.store, kept)), token, req.node_key, ctx
        )
        if t.status != STATUS_ENABLED:
            raise NotKept
        with self._lock:
            found = self._map_peers.get(t.name)
        if found is None or found.key != (t.seq, t.head):
            raise NotKept
        info = wire.TKAInfo(head=t.head)
        return _session_json(node, info, cast(_MapPeers, found), req, _session_handle(t))

    def _map_parts(
        self, token: str | None, req: wire.MapRequest, ctx: RequestContext
    ) -> tuple[NodeRow, wire.TKAInfo | None, _MapPeers | list[NodeRow], TailnetRow]:
        """The caller's node, the lock info, its peers (itself still among them), its tailnet."""
        with self.store.read() as txn:
            node, t = self._auth_node(txn, token, req.node_key, ctx)
            if t.status == STATUS_ENABLED:
                return node, wire.TKAInfo(head=t.head), self._admitted_peers(txn, t), t
            # Lock off (or disabled): every node is a peer, signed or not.
            info = wire.TKAInfo(disabled=True) if t.status == STATUS_DISABLED else None
            return node, info, txn.nodes(t.name), t

    def _admitted_peers(self, txn: Transaction, t: TailnetRow) -> _MapPeers:
        """The nodes the authority at *t*'s head admits, as map sends them.

        Kept per tailnet by ``(seq, head)``: ``seq`` moves, in the database,
        with every head change and every change of a node's signature (a
        signed node's arrival, departure or new key included), which is all
        the admitted set depends on; so every process and replica on the
        store drops it at the same change. Built once per change (one
        build at a time; requests that arrive meanwhile wait for it), from
        one read of the tailnet's nodes and the admission cache's verdicts.
        """
        key = (t.seq, t.head)
        with self._lock:
            found = self._map_peers.get(t.name)
            if found is not None and found.key == key:
                self._map_peers.move_to_end(t.name)
                return cast(_MapPeers, found)
        with self._map_build:
            with self._lock:
                found = self._map_peers.get(t.name)
            if found is not None and found.key == key:
                return cast(_MapPeers, found)
            authority = self._cached_authority(txn, t)
            nodes = txn.nodes(t.name)
            admitted = {
                d.node.node_id
                for d in self.admission.evaluate(authority, _records(nodes))
                if d.admitted
            }
            chosen = [n for n in nodes if n.node_id in admitted]
            entries = [_entry_json(n) for n in chosen]
            spans: dict[int, tuple[int, int]] = {}
            pos = 0
            for n, e in zip(chosen, entries, strict=True):
                spans[n.node_id] = (pos, pos + len(e))
                pos += len(e) + 1
            built = _MapPeers(key, b",".join(entries), spans, tuple(_map_node(n) for n in chosen))
            with self._lock:
                current = self._map_peers.get(t.name)
            if current is not None and current.key[0] < t.seq:
                built.since.update(_since(cast(_MapPeers, current), built))
            with self._lock:
                current = self._map_peers.get(t.name)
                if current is None or current.key[0] <= t.seq:
                    self._map_peers[t.name] = built
                    self._map_peers.move_to_end(t.name)
                    while len(self._map_peers) > _MAP_CACHE_TAILNETS:
                        self._map_peers.popitem(last=False)
            return built


#: How many tailnets' admitted peers map keeps at once.
_MAP_CACHE_TAILNETS: Final = 64


#: Earlier ``Seq`` values a map build keeps what changed since (per tailnet).
_MAP_SESSION_HISTORY: Final = 16
#: Node IDs a delta may always carry, however small the tailnet.
_MAP_DELTA_FLOOR: Final = 64


@dataclass(frozen=True)
class _MapPeers:
    """A tailnet's admitted nodes as map sends them, valid while ``key`` = (seq, head) stays."""

    key: tuple[int, bytes | None]
    body: bytes
    """Every admitted node's JSON entry, joined by commas."""
    spans: dict[int, tuple[int, int]]
    """Node ID -> where its entry is in :attr:`body` (start, end)."""
    nodes: tuple[wire.MapNode, ...]
    since: dict[int, frozenset[int]] = field(default_factory=dict)
    """Earlier seq -> the node IDs whose entry changed, came or went since
    then (filled once, before the build is shared; read-only after)."""
    deltas: dict[int, _Delta] = field(default_factory=dict)
    """Earlier seq -> the delta answer's parts, built at the first request."""


@dataclass(frozen=True)
class _Delta:
    """What changed since one earlier seq: entries (as in :class:`_MapPeers`) and removals."""

    body: bytes
    spans: dict[int, tuple[int, int]]
    removed: tuple[int, ...]


def _since(old: _MapPeers, new: _MapPeers) -> dict[int, frozenset[int]]:
    """*new*'s :attr:`_MapPeers.since`, given the build it replaces (oldest seq first).

    The IDs touched since *old*, added to those *old* kept for earlier
    seqs. Bounded twice: a delta carries at most a sixteenth of the
    tailnet (past that the whole list costs about as much to send), and the
    history holds at most the tailnet's size in IDs all told, so a build's
    deltas never weigh more than its own body.
    """
    touched = {
        node_id
        for node_id, (start, end) in new.spans.items()
        if (was := old.spans.get(node_id)) is None
        or old.body[was[0] : was[1]] != new.body[start:end]
    }
    touched.update(node_id for node_id in old.spans if node_id not in new.spans)
    size = max(len(new.spans), len(old.spans))
    limit = max(size // 16, _MAP_DELTA_FLOOR)
    budget = max(size, _MAP_DELTA_FLOOR)
    if len(touched) > limit:
        return {}
    newest_first = [(old.key[0], frozenset(touched))]
    total = len(touched)
    for seq, ids in reversed(list(old.since.items())[-(_MAP_SESSION_HISTORY - 1) :]):
        merged = ids | touched
        total += len(merged)
        if len(merged) > limit or total > budget:
            break  # every older one holds at least as many
        newest_first.append((seq, merged))
    return dict(reversed(newest_first))


def _session_handle(t: TailnetRow) -> str:
    """The map session of a tailnet: its name and creation time, so a re-created one differs."""
    return hashlib.sha256(f"{t.name}\x00{t.created!r}".encode()).hexdigest()[:20]


def _session_json(
    node: NodeRow,
    info: wire.TKAInfo | None,
    peers: _MapPeers,
    req: wire.MapRequest,
    handle: str,
) -> bytes:
    """The map answer with lock enabled: a delta when *req* resumes a known seq, else whole."""
    seq = peers.key[0]
    tail = b',"MapSessionHandle":"%s","Seq":%d}\n' % (handle.encode("ascii"), seq)
    if req.map_session_handle != handle or not 0 < req.map_session_seq <= seq:
        return _map_json(node, info, peers, tail)
    # The caller's own entry, as kept when it is admitted (it is the same bytes).
    span = peers.spans.get(node.node_id)
    own = peers.body[span[0] : span[1]] if span is not None else _entry_json(node)
    parts: list[bytes | memoryview] = [b'{"Node":', own]
    if req.map_session_seq != seq:
        delta = _delta(peers, req.map_session_seq)
        if delta is None:
            return _map_json(node, info, peers, tail)
        parts.append(b',"PeersChanged":[')
        _splice(parts, delta.body, delta.spans, node.node_id)
        removed = [i for i in delta.removed if i != node.node_id]
        parts.append(b'],"PeersRemoved":[%s]' % b",".join(b"%d" % i for i in removed))
    if info is not None:
        parts += [b',"TKAInfo":', _info_json(info)]
    parts.append(tail)
    return b"".join(parts)


@functools.lru_cache(maxsize=256)
def _info_json(info: wire.TKAInfo) -> bytes:
    """The lock info as JSON (a frozen value: the same head encodes alike every time)."""
    return json.dumps(wire.encode(info), separators=(",", ":")).encode()


def _delta(peers: _MapPeers, since: int) -> _Delta | None:
    """The changes since *since* (built once per seq), or ``None`` if that seq is not kept."""
    found = peers.deltas.get(since)
    if found is not None:
        return found
    touched = peers.since.get(since)
    if touched is None:
        return None
    entries: list[bytes] = []
    spans: dict[int, tuple[int, int]] = {}
    pos = 0
    for node_id in sorted(i for i in touched if i in peers.spans):
        start, end = peers.spans[node_id]
        entries.append(peers.body[start:end])
        spans[node_id] = (pos, pos + end - start)
        pos += end - start + 1
    removed = tuple(sorted(i for i in touched if i not in peers.spans))
    delta = _Delta(b",".join(entries), spans, removed)
    # Racing requests may each build it: the same value, so either may stay.
    peers.deltas.setdefault(since, delta)
    return delta


def _splice(
    parts: list[bytes | memoryview], body: bytes, spans: dict[int, tuple[int, int]], skip: int
) -> None:
    """Append *body*'s comma-joined entries to *parts*, without node *skip*'s."""
    view = memoryview(body)
    span = spans.get(skip)
    if span is None:
        parts.append(view)
        return
    start, end = span
    if start > 0:
        parts.append(view[: start - 1])  # up to the comma before the entry
        parts.append(view[end:])  # from the comma after it (or the end)
    else:
        parts.append(view[end + 1 :])


def _map_json(
    node: NodeRow,
    info: wire.TKAInfo | None,
    peers: _MapPeers | list[NodeRow],
    tail: bytes = b"}\n",
) -> bytes:
    """The map answer for *node*: its entry, its peers (itself left out), the lock info.

    *tail* closes the object (and may add fields before that).
    """
    parts: list[bytes | memoryview] = [b'{"Node":', _entry_json(node), b',"Peers":[']
    if isinstance(peers, _MapPeers):
        _splice(parts, peers.body, peers.spans, node.node_id)
    else:
        parts.append(b",".join(_entry_json(n) for n in peers if n.node_id != node.node_id))
    parts.append(b"]")
    if info is not None:
        parts += [b',"TKAInfo":', _info_json(info)]
    parts.append(tail)
    return b"".join(parts)


def _map_node(n: NodeRow) -> wire.MapNode:
    return wire.MapNode(n.node_id, NodePublic(n.node_key), n.signature or b"")


def _entry_json(n: NodeRow) -> bytes:
    """``wire.encode(_map_node(n))`` as compact JSON (hex and base64 need no escaping)."""
    if n.signature:
        return b'{"ID":%d,"Key":"nodekey:%s","KeySignature":"%s"}' % (
            n.node_id,
            n.node_key.hex().encode("ascii"),
            binascii.b2a_base64(n.signature, newline=False),
        )
    return b'{"ID":%d,"Key":"nodekey:%s"}' % (n.node_id, n.node_key.hex().encode("ascii"))
