"""``bootstrap``, ``sync/offer`` and ``sync/send``: the chain moves between node and service."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import cast

from tka.aum import AUM, hash_to_text
from tka.authority import Authority
from tka.bundle import parents_first
from tka.chain import compute_active_chain, compute_state_at
from tka.control import wire
from tka.control.errors import (
    BadRequest,
    Conflict,
    StoreUnavailable,
)
from tka.control.service._base import (
    _WRITE_ATTEMPTS,
    MAX_SEND_AUMS,
    Caller,
    FrontCaller,
    JoinedRow,
    KeptRow,
    NotKept,
    RequestContext,
    _check_signature_count,
    _copy,
    _decode_aum,
    _FrontRead,
    _JoinedRead,
    _Recorder,
    _Retry,
)
from tka.control.service.auth import Auth
from tka.control.store import (
    STATUS_DISABLED,
    STATUS_ENABLED,
    AUMStorage,
    FrontRow,
    NodeRow,
    TailnetRow,
    Transaction,
)
from tka.errors import TKAError
from tka.limits import MAX_SCAN_ITERATIONS
from tka.nlkeys import NodePublic
from tka.sync import SYNC_RULES_MAIN, NoIntersection, SyncOffer, missing_aums, sync_offer

#: Tailnets whose sync/offer answers are kept (one entry per tailnet and version).
_OFFER_CACHE_TAILNETS = 256
#: Node offers whose answer is kept per tailnet version (nodes mostly offer
#: the head, or one of the few heads before it).
_OFFER_CACHE_REMOTES = 64
#: Seconds a head reported by an empty sync/send waits before it is written.
REPORTED_FLUSH_DELAY = 0.5


class SyncRPCs(Auth):
    """Tailscale's AUM sync."""

    def _auth_read(
        self,
        token: Caller,
        req_key: NodePublic | None,
        ctx: RequestContext,
        kept: KeptRow | None = None,
    ) -> tuple[NodeRow, TailnetRow]:
        """:meth:`_auth_node` over one statement (a node token), else a read transaction.

        With *kept* (what the caller's token names, read just before: see
        :data:`KeptRow`), over that read instead: no store access at all.
        """
        if isinstance(token, FrontCaller):
            if kept is not None:
                front = cast(FrontRow, kept)
                return self._auth_node(cast(Transaction, _FrontRead(front)), token, req_key, ctx)
            with self.store.read() as txn:
                return self._auth_node(txn, token, req_key, ctx)
        joined = _JoinedRead(self.store, cast(JoinedRow | None, kept))
        return self._auth_node(cast(Transaction, joined), token, req_key, ctx)

    def bootstrap(
        self,
        token: Caller,
        req: wire.BootstrapRequest,
        ctx: RequestContext,
        *,
        kept: KeptRow | None = None,
    ) -> wire.BootstrapResponse:
        """``/machine/tka/bootstrap``: the genesis, or the disablement secret.

        Authenticated with one indexed read; the genesis comes from the
        authority kept for the tailnet's head (a read transaction opens it
        only when it is not kept).
        """
        _, t = self._auth_read(token, req.node_key, ctx, kept)
        if t.status == STATUS_DISABLED and t.disablement_secret:
            return wire.BootstrapResponse(disablement_secret=t.disablement_secret)
        if t.status == STATUS_ENABLED and req.head is None:
            known = None
            if t.head is not None:
                with self._lock:
                    known = self._authorities.get((t.name, t.head))
            if known is not None:
                return wire.BootstrapResponse(genesis_aum=known.oldest_ancestor.to_bytes())
            if kept is not None:
                raise NotKept
            with self.store.read() as txn:
                _, t = self._auth_node(txn, token, req.node_key, ctx)
                if t.status == STATUS_DISABLED and t.disablement_secret:
                    return wire.BootstrapResponse(disablement_secret=t.disablement_secret)
                if t.status == STATUS_ENABLED and req.head is None:
                    authority = self._cached_authority(txn, t)
                    return wire.BootstrapResponse(genesis_aum=authority.oldest_ancestor.to_bytes())
        return wire.BootstrapResponse()

    def sync_offer(
        self,
        token: Caller,
        req: wire.SyncOfferRequest,
        ctx: RequestContext,
        *,
        kept: KeptRow | None = None,
    ) -> wire.SyncOfferResponse:
        """``/machine/tka/sync/offer``: the service's offer and what the node lacks."""
        if req.head is None:  # a required field: wire.decode refuses it already
            raise BadRequest("Head: required")
        remote = (bytes(req.head), tuple(bytes(a) for a in req.ancestors))
        # Authenticated first, with one indexed read; the answer is then most
        # often one kept for the tailnet's version (see below).
        _, t = self._auth_read(token, req.node_key, ctx, kept)
        self._require_enabled(t)
        with self._lock:
            entry = self._offers.get((t.name, t.created, t.version, t.head))
            found = entry[1].get(remote) if entry is not None else None
        if found is not None:
            return cast(wire.SyncOfferResponse, found)
        if kept is not None:
            raise NotKept
        with self.store.read() as txn:
            _, t = self._auth_node(txn, token, req.node_key, ctx)
            self._require_enabled(t)
            # The answer depends on the stored AUMs and the node's offer only;
            # every change of the AUMs saves the tailnet (its version moves),
            # so answers are kept per (tailnet, created, version, head).
            key = (t.name, t.created, t.version, t.head)
            with self._lock:
                entry = self._offers.get(key)
                if entry is not None:
                    self._offers.move_to_end(key)
                    found = entry[1].get(remote)
                    if found is not None:
                        return cast(wire.SyncOfferResponse, found)
            authority = self._cached_authority(txn, t)
            storage = txn.aum_storage(t.name)
            # Control answers with Tailscale main's sync rules (every checkpoint
            # in its offer): a released node decides what to send from this
            # offer before applying what it receives, and the released offer
            # (ancestors 4, 16, 64, 256 back) often names nothing a compacted
            # node kept, so its sync would keep failing. Released nodes take
            # either kind of offer; nodes themselves keep the released rules.
            rules = SYNC_RULES_MAIN
            try:
                missing = missing_aums(
                    authority, storage, SyncOffer(req.head, req.ancestors), rules=rules
                )
            except NoIntersection:
                raise Conflict(
                    "the node's chain and the service's share no AUM: the node holds "
                    "another authority"
                ) from None
            offer = entry[0] if entry is not None else sync_offer(authority, storage, rules=rules)
        response = wire.SyncOfferResponse(
            offer.head, offer.ancestors, tuple(a.to_bytes() for a in missing)
        )
        with self._lock:
            entry = self._offers.get(key)
            if entry is None:
                entry = self._offers[key] = (offer, {})
                # One entry per tailnet: older versions are never asked again.
                for k in [k for k in self._offers if k[0] == t.name and k != key]:
                    del self._offers[k]
                while len(self._offers) > _OFFER_CACHE_TAILNETS:
                    self._offers.popitem(last=False)
            answers: dict[tuple[bytes, tuple[bytes, ...]], wire.SyncOfferResponse] = entry[1]
            if len(answers) >= _OFFER_CACHE_REMOTES:
                answers.pop(next(iter(answers)))
            answers[remote] = response
        return response

    def sync_send(
        self,
        token: Caller,
        req: wire.SyncSendRequest,
        ctx: RequestContext,
        *,
        kept: KeptRow | None = None,
    ) -> wire.SyncSendResponse:
        """``/machine/tka/sync/send``: verify and apply the AUMs the service lacks.

        At most :data:`MAX_SEND_AUMS` AUMs, refused (400) before any is
        decoded. The chain is read in a short read transaction (only what
        the verification will look at, see :class:`_Snapshot`); the
        signatures are then verified with no transaction open and no pool
        connection held; the write transaction only checks that the tailnet
        did not move and stores the result.
        """
        if len(req.missing_aums) > MAX_SEND_AUMS:
            raise BadRequest(
                f"MissingAUMs: {len(req.missing_aums)} AUMs, more than the {MAX_SEND_AUMS} "
                "one sync/send may carry (Tailscale's maxSyncIter)"
            )
        if not req.missing_aums:
            return self._report_head(token, req, ctx, kept)
        if kept is not None:
            raise NotKept
        aums = [_decode_aum(b, f"MissingAUMs[{i}]") for i, b in enumerate(req.missing_aums)]
        for i, a in enumerate(aums):
            _check_signature_count(a, f"MissingAUMs[{i}]")
        ordered = parents_first(aums)
        for _ in range(_WRITE_ATTEMPTS):
            with self.store.read() as txn:
                node, t = self._auth_node(txn, token, req.node_key, ctx)
                self._require_enabled(t)
                before = self._cached_authority(txn, t)
                snapshot = _Snapshot(txn.aum_storage(t.name))
                snapshot.prefetch(before, ordered)
                snapshot.detach()
            # Verified with no transaction open: the tailnet's write lock is
            # not held, and (PostgreSQL) no pool connection either.
            try:
                recorder, authority = self._verify_send(snapshot, before, ordered, aums, req)
            except _Miss:
                # The prefetch missed a read (it never should): verify in a
                # read transaction, as a fallback. Whatever moved since is
                # caught by the version check below.
                with self.store.read() as txn:
                    snapshot.attach(txn.aum_storage(t.name))
                    recorder, authority = self._verify_send(snapshot, before, ordered, aums, req)
                    snapshot.detach()
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

    def _report_head(
        self,
        token: Caller,
        req: wire.SyncSendRequest,
        ctx: RequestContext,
        kept: KeptRow | None = None,
    ) -> wire.SyncSendResponse:
        """An empty ``sync/send``: the node only reports its head.

        Authenticated (and the node key checked) in one read transaction,
        as every RPC. The reported head is informational only (the admin
        node listings' ``ReportedHead``; nothing decides anything on it), so
        it is not written in a durable transaction of its own: an unchanged
        head writes nothing, a changed one is kept in memory and written
        with every other head reported meanwhile, in one transaction
        :data:`REPORTED_FLUSH_DELAY` seconds later. A crash (or a stop)
        before then loses those reported heads only; the node reports its
        head again at its next sync. The answer, the service's head, is
        what the full path answers when no AUM is sent.
        """
        node, t = self._auth_read(token, req.node_key, ctx, kept)
        self._require_enabled(t)
        if t.head is None:
            raise StoreUnavailable(f"tailnet {t.name!r} is enabled but has no head")
        head = None if req.head is None else bytes(req.head)
        with self._reported_lock:
            pending = self._reported.get(t.name)
            known = node.reported_head
            if pending is not None and node.node_id in pending:
                known = pending[node.node_id]
            if head is not None and head != known:
                self._reported.setdefault(t.name, {})[node.node_id] = head
                if self._reported_timer is None:
                    timer = threading.Timer(REPORTED_FLUSH_DELAY, self.flush_reported_heads)
                    timer.daemon = True
                    self._reported_timer = timer
                    timer.start()
        return wire.SyncSendResponse(t.head)

    def flush_reported_heads(self) -> None:
        """Write the heads reported since the last flush: one transaction per tailnet.

        Runs on its timer, and once more when the service stops (before its
        store closes), so a graceful stop loses no reported head.
        """
        with self._reported_lock:
            batches, self._reported = self._reported, {}
            self._reported_timer = None
        for tailnet, heads in batches.items():
            try:
                with self.store.write(tailnet) as txn:
                    txn.set_reported_heads(tailnet, sorted(heads.items()), self.clock())
            except Exception:  # the store closed or failed: these heads are informational
                # One line, no traceback: the logs stay one JSON line each.
                logging.getLogger("tka.control").warning(
                    "reported heads of %d node(s) of tailnet %r not recorded",
                    len(heads),
                    tailnet,
                )

    def _verify_send(
        self,
        snapshot: _Snapshot,
        before: Authority,
        ordered: list[AUM],
        aums: list[AUM],
        req: wire.SyncSendRequest,
    ) -> tuple[_Recorder, Authority]:
        recorder = _Recorder(snapshot)
        authority = self._apply(recorder, before, ordered)
        if req.interactive and aums:
            self._require_on_chain(recorder, authority, aums)
        return recorder, authority

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
        unseen = {a.hash for a in aums}
        cursor: AUM | None = authority.head
        oldest = authority.oldest_ancestor.hash
        for _ in range(MAX_SCAN_ITERATIONS):
            if cursor is None:
                break
            chain.add(cursor.hash)
            unseen.discard(cursor.hash)
            if not unseen:
                break  # every AUM sent is on the chain: no need to walk the rest
            if cursor.hash == oldest or cursor.parent is None:
                break
            cursor = storage.get(cursor.parent)
        lost = [a for a in aums if a.hash not in chain]
        if lost:
            raise Conflict(
                f"the change loses a fork: AUM {lost[0].hash_text} is not on the active chain, "
                f"whose head is {authority.head.hash_text}; sync and make the change again"
            )


class _Miss(Exception):
    """Verification looked for a stored AUM the read transaction did not fetch."""


class _Snapshot:
    """A tailnet's AUMs as read in one read transaction, readable after it ended.

    :meth:`prefetch` makes, in the transaction, the reads that verifying a
    ``sync/send`` makes (the sent AUMs and their parents, the states at
    those parents, and the active chain's walk when the AUMs do not simply
    extend the head); every answer is kept. After :meth:`detach` the same
    reads are answered from memory, so the verification holds no
    connection; a read that was not made raises :class:`_Miss`.
    """

    def __init__(self, base: AUMStorage) -> None:
        self._base: AUMStorage | None = base
        self._get: dict[bytes, AUM | None] = {}
        self._children: dict[bytes, list[AUM]] = {}
        self._heads: list[AUM] | None = None

    def attach(self, base: AUMStorage) -> None:
        """Read through *base* again (a fallback read transaction)."""
        self._base = base

    def detach(self) -> None:
        """Answer from what was read only."""
        self._base = None

    def get(self, aum_hash: bytes) -> AUM | None:
        h = bytes(aum_hash)
        if h in self._get:
            return self._get[h]
        if self._base is None:
            raise _Miss
        found = self._get[h] = self._base.get(h)
        return found

    def children(self, aum_hash: bytes) -> list[AUM]:
        h = bytes(aum_hash)
        found = self._children.get(h)
        if found is None:
            if self._base is None:
                raise _Miss
            found = self._children[h] = self._base.children(h)
            for a in found:
                self._get.setdefault(a.hash, a)
        return list(found)

    def heads(self) -> list[AUM]:
        if self._heads is None:
            if self._base is None:
                raise _Miss
            self._heads = self._base.heads()
            for a in self._heads:
                self._get.setdefault(a.hash, a)
        return list(self._heads)

    def commit_verified(self, aums: Sequence[AUM]) -> None:
        raise StoreUnavailable("internal: a snapshot is read-only")

    def last_active_ancestor(self) -> bytes | None:
        raise _Miss  # not read by verification

    def set_last_active_ancestor(self, aum_hash: bytes) -> None:
        raise StoreUnavailable("internal: a snapshot is read-only")

    def all_aums(self) -> list[AUM]:
        raise _Miss  # not read by verification

    def prefetch(self, before: Authority, ordered: list[AUM]) -> None:
        """Make the reads :meth:`SyncRPCs._apply` will make on *ordered* (in the transaction)."""
        new = [a for a in ordered if self.get(a.hash) is None]
        if not new:
            return
        batch = {a.hash for a in new}
        prev = before.head_hash
        extends_head = True
        for a in new:
            parent = a.parent
            if parent != prev:
                extends_head = False
            prev = a.hash
            if parent is None or parent in batch:
                continue
            if self.get(parent) is not None and parent != before.head_hash:
                # The state at the head is known; any other is computed from
                # the chain. An error here is the verification's to report.
                with contextlib.suppress(TKAError):
                    compute_state_at(self, parent)
        if not extends_head:
            # The new head is then found by walking the whole tree (a fork,
            # or AUMs that do not extend the head in order).
            overlay = _Recorder(self)
            overlay.commit_verified(new)
            with contextlib.suppress(TKAError):
                compute_active_chain(overlay, before.oldest_ancestor.hash)
