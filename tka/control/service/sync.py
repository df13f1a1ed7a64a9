"""``bootstrap``, ``sync/offer`` and ``sync/send``: the chain moves between node and service."""

from __future__ import annotations

from dataclasses import replace

from tka.aum import AUM, hash_to_text
from tka.authority import Authority
from tka.bundle import parents_first
from tka.control import wire
from tka.control.errors import (
    Conflict,
)
from tka.control.service._base import (
    _WRITE_ATTEMPTS,
    Caller,
    RequestContext,
    _check_signature_count,
    _copy,
    _decode_aum,
    _Recorder,
    _Retry,
)
from tka.control.service.auth import Auth
from tka.control.store import (
    STATUS_DISABLED,
    STATUS_ENABLED,
    NodeRow,
)
from tka.limits import MAX_SCAN_ITERATIONS
from tka.sync import NoIntersection, SyncOffer, missing_aums, sync_offer


class SyncRPCs(Auth):
    """Tailscale's AUM sync."""

    def bootstrap(
        self, token: Caller, req: wire.BootstrapRequest, ctx: RequestContext
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
        self, token: Caller, req: wire.SyncOfferRequest, ctx: RequestContext
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
        self, token: Caller, req: wire.SyncSendRequest, ctx: RequestContext
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
