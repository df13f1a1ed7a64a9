"""Admission decisions for a control plane: is this node admitted, and why not?

A control plane that enforces tailnet lock asks one question per node: does
the node's signature admit its node key under the tailnet's authority? The
answer depends only on the authority's head (which fixes the trusted keys),
the node key and the signature bytes, so :class:`DecisionCache` keeps
answers under exactly that triple: a map poll costs one dictionary lookup,
and a head change makes every stale answer unreachable without any
invalidation step. One cache serves any number of tailnets: heads are AUM
hashes, and every authority's genesis carries random state IDs.

:class:`Admission` adds what is about the whole tailnet:

* :meth:`Admission.evaluate` decides every node, then applies the rule
  Tailscale's clients apply to their peers (``rotationTracker`` in
  ``ipn/ipnlocal``): a node key that a newer rotation signature names as a
  previous key is superseded, and so are rotation chains that start at the
  same direct signature with the same length (a cloned node);
* :meth:`Admission.reevaluate` compares the decisions before and after a head
  change, so removing a key locks out exactly the nodes whose signatures
  depend on it, unless a re-sign or a rotation onto another key covers them;
* :meth:`Admission.affected_signatures`: the valid signatures made by one key
  (the ``affected-sigs`` RPC), which are the ones its removal would break.

Nothing here does I/O; nodes are handed in as :class:`NodeRecord` values.

Compared with :mod:`tka.admission` (one cache per authority, dropped
whenever the head moves, verdicts without rotation details), this cache is
shared by every tailnet of a service and keeps entries of older heads until
they age out: replicas and the before/after comparison of a re-evaluation
ask about two heads at once, and the rotation rule needs each signature's
rotation details, which a :class:`Decision` carries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from tka.aum import blake2s
from tka.authority import Authority
from tka.errors import DecodeError, NotAuthorized, TKAError, ValidationError
from tka.nlkeys import NodePublic
from tka.sig import NodeKeySignature, SigKind, authorize_node_key, sig_kind_name
from tka.state import State

__all__ = [
    "Admission",
    "Decision",
    "DecisionCache",
    "NodeDecision",
    "NodeRecord",
    "Reevaluation",
    "decide",
]

DEFAULT_CACHE_ENTRIES: Final = 100_000


@dataclass(frozen=True)
class Decision:
    """The authority's verdict on one (node key, signature) pair."""

    admitted: bool
    reason: str
    """One sentence a person can read: who signed, or why the node is locked out."""
    signing_key: bytes | None = None
    """The key at the root of the signature (unverified when not admitted), if it decodes."""
    kind: str = ""
    """The signature's kind (``direct``, ``rotation``, ...), empty without a signature."""
    prev_node_keys: tuple[bytes, ...] = ()
    """For an admitted rotation signature: the node keys it replaced, newest first."""
    chain_root: bytes | None = None
    """For an admitted rotation chain starting at a direct signature: that signature's
    wrapping (rotation) key, which identifies the chain across rotations."""


@dataclass(frozen=True)
class NodeRecord:
    """What admission needs to know about a registered node."""

    node_id: int
    node_key: bytes
    """The raw 32-byte node key."""
    signature: bytes | None
    """The serialized node-key signature the service holds, if any."""


@dataclass(frozen=True)
class NodeDecision:
    """A node and the authority's verdict on it, within its tailnet."""

    node: NodeRecord
    decision: Decision
    superseded: bool = False
    """Admitted on its own, but a newer rotation of the same node makes it obsolete."""

    @property
    def admitted(self) -> bool:
        """Whether the node may take part in the tailnet."""
        return self.decision.admitted and not self.superseded

    @property
    def reason(self) -> str:
        """Why the node is admitted or locked out."""
        if self.superseded:
            return (
                "locked out: a newer rotation signature of the same node supersedes this node key"
            )
        return self.decision.reason


@dataclass(frozen=True)
class Reevaluation:
    """The result of deciding every node again after the head changed."""

    head: bytes
    decisions: tuple[NodeDecision, ...]
    newly_locked_out: tuple[NodeDecision, ...]
    newly_admitted: tuple[NodeDecision, ...]

    @property
    def locked_out(self) -> tuple[NodeDecision, ...]:
        """Every node locked out at the new head."""
        return tuple(d for d in self.decisions if not d.admitted)


def _tlpub(key_id: bytes) -> str:
    return f"tlpub:{key_id.hex()}"


def decide(state: State, node_key: bytes, signature: bytes | None) -> Decision:
    """Decide whether *signature* admits *node_key* under the keys *state* trusts.

    Uncached; :class:`Admission` caches. Never raises for bad signatures:
    every failure is a :class:`Decision` with ``admitted=False``.
    """
    if not signature:
        return Decision(False, "locked out: the node has no node-key signature")
    try:
        sig = NodeKeySignature.from_bytes(signature)
    except DecodeError as exc:
        return Decision(False, f"locked out: the signature does not decode ({exc})")
    kind = sig_kind_name(sig.sig_kind)
    try:
        root: bytes | None = sig.authorizing_key_id()
    except NotAuthorized:
        root = None
    try:
        details = authorize_node_key(state, node_key, sig)
    except NotAuthorized as exc:
        trusted = False
        if root is not None:
            try:
                trusted = state.get_key(root) is not None
            except ValidationError:
                trusted = False
        if root is not None and not trusted:
            why = f"its {kind} signature is by {_tlpub(root)}, a key the authority does not trust"
        else:
            why = f"its {kind} signature does not verify: {exc}"
        return Decision(False, f"locked out: {why}", root, kind)
    except TKAError as exc:  # defensive: any library refusal is a lock-out, not a crash
        return Decision(False, f"locked out: {exc}", root, kind)
    assert root is not None  # authorize_node_key succeeded, so the root decoded
    if details is None:
        return Decision(True, f"admitted: {kind} signature by {_tlpub(root)}", root, kind)
    chain_root = None
    initial = details.initial_sig
    if initial is not None and initial.sig_kind == SigKind.DIRECT:
        chain_root = initial.wrapping_pubkey or b""
    n = len(details.prev_node_keys)
    return Decision(
        True,
        f"admitted: rotation signature over {n} earlier node key{'s' if n != 1 else ''}, "
        f"rooted in a signature by {_tlpub(root)}",
        root,
        kind,
        details.prev_node_keys,
        chain_root,
    )


class DecisionCache:
    """A bounded, thread-safe LRU of decisions keyed by (head, node key, signature hash).

    The signature is keyed by the BLAKE2s hash of its serialized bytes, so
    entries stay small whatever the signature's size.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._entries: OrderedDict[tuple[bytes, bytes, bytes], Decision] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(head: bytes, node_key: bytes, signature: bytes | None) -> tuple[bytes, bytes, bytes]:
        """The cache key of a decision."""
        return bytes(head), bytes(node_key), blake2s(signature or b"")

    def get(self, key: tuple[bytes, bytes, bytes]) -> Decision | None:
        """The cached decision, or ``None``."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: tuple[bytes, bytes, bytes], decision: Decision) -> None:
        """Remember a decision, evicting the least recently used beyond the bound."""
        with self._lock:
            self._entries[key] = decision
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        """Forget everything (tests and benchmarks)."""
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


def _apply_rotation_rule(decisions: list[NodeDecision]) -> list[NodeDecision]:
    """Tailscale's ``rotationTracker``: mark node keys that newer rotations replace."""
    obsolete: set[bytes] = set()
    by_root: dict[bytes, list[tuple[bytes, int]]] = {}
    for d in decisions:
        dec = d.decision
        if not dec.admitted or dec.kind != "rotation":
            continue
        obsolete.update(dec.prev_node_keys)
        if dec.chain_root is not None:
            by_root.setdefault(dec.chain_root, []).append(
                (d.node.node_key, len(dec.prev_node_keys))
            )
    for chains in by_root.values():
        live = [c for c in chains if c[0] not in obsolete]
        if len(live) < 2:
            continue
        live.sort(key=lambda c: -c[1])
        if live[0][1] == live[1][1]:
            # Two equally long chains from one signature: which is the newest
            # cannot be told, so Tailscale rejects all of them.
            obsolete.update(c[0] for c in live)
        else:
            obsolete.update(c[0] for c in live[1:])
    if not obsolete:
        return decisions
    return [
        NodeDecision(d.node, d.decision, True)
        if d.decision.admitted and d.node.node_key in obsolete
        else d
        for d in decisions
    ]


class Admission:
    """Cached admission decisions for any number of tailnets.

    Thread-safe; share one per process. *cache* defaults to a fresh
    :class:`DecisionCache`.
    """

    def __init__(self, cache: DecisionCache | None = None) -> None:
        self.cache = cache if cache is not None else DecisionCache()

    def decide(self, authority: Authority, node_key: bytes, signature: bytes | None) -> Decision:
        """The authority's decision on one node, from the cache when possible."""
        key = DecisionCache.key(authority.head_hash, node_key, signature)
        found = self.cache.get(key)
        if found is not None:
            return found
        decision = decide(authority.state, node_key, signature)
        self.cache.put(key, decision)
        return decision

    def evaluate(self, authority: Authority, nodes: Iterable[NodeRecord]) -> list[NodeDecision]:
        """Decide every node of a tailnet, superseded rotations included."""
        decisions = [
            NodeDecision(n, self.decide(authority, n.node_key, n.signature)) for n in nodes
        ]
        return _apply_rotation_rule(decisions)

    def reevaluate(
        self, before: Authority | None, after: Authority, nodes: Sequence[NodeRecord]
    ) -> Reevaluation:
        """Decide every node at *after*'s head and report what changed since *before*.

        *before* ``None`` means lock was not enforced: every node was admitted.
        """
        new = self.evaluate(after, nodes)
        old_admitted = (
            {d.node.node_id for d in self.evaluate(before, nodes) if d.admitted}
            if before is not None
            else {n.node_id for n in nodes}
        )
        locked = tuple(d for d in new if not d.admitted and d.node.node_id in old_admitted)
        admitted = tuple(d for d in new if d.admitted and d.node.node_id not in old_admitted)
        return Reevaluation(after.head_hash, tuple(new), locked, admitted)

    def locked_out(self, authority: Authority, nodes: Iterable[NodeRecord]) -> list[NodeDecision]:
        """The nodes the authority does not admit, with the reasons."""
        return [d for d in self.evaluate(authority, nodes) if not d.admitted]

    def affected_signatures(
        self, authority: Authority, nodes: Iterable[NodeRecord], key_id: bytes
    ) -> list[NodeRecord]:
        """Nodes whose valid signature is rooted in *key_id* (``affected-sigs``).

        These are the signatures that removing the key would invalidate; each
        admits its node key at the current head, as Tailscale's client checks.
        """
        out = []
        for n in nodes:
            d = self.decide(authority, n.node_key, n.signature)
            if d.admitted and d.signing_key == key_id:
                out.append(n)
        return out


def node_text(node_key: bytes) -> str:
    """``nodekey:<hex>`` of a raw node key (for messages and logs)."""
    return NodePublic(node_key).text()
