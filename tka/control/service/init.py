"""``init/begin`` and ``init/finish``: a tailnet's lock is started."""

from __future__ import annotations

import hmac
from dataclasses import replace

from tka.aum import AUM, AUMKind
from tka.authority import Authority
from tka.control import wire
from tka.control.errors import (
    BadRequest,
    Conflict,
    Forbidden,
)
from tka.control.service._base import (
    _WRITE_ATTEMPTS,
    MAX_SECRET_BYTES,
    Caller,
    RequestContext,
    _check_signature_count,
    _decode_aum,
    _Retry,
)
from tka.control.service.auth import Auth
from tka.control.store import (
    STATUS_ENABLED,
    STATUS_PENDING,
)
from tka.errors import TKAError, ValidationError, VerificationError
from tka.nlkeys import NodePublic
from tka.storage.memory import MemoryStore


class InitRPCs(Auth):
    """The two RPCs that enable tailnet lock."""

    def init_begin(
        self, token: Caller, req: wire.InitBeginRequest, ctx: RequestContext
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
        self, token: Caller, req: wire.InitFinishRequest, ctx: RequestContext
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
