"""Node admission: is this node admitted under the tailnet's authority, and why not?

A control plane asks one question per node, on every registration and map
poll: does the node's signature admit its node key under the authority's
current trusted keys? And it must ask again for every node whenever the
authority's head moves. This module answers it with two separate parts:

* **The crypto verdict** (:class:`Checked`): whether a (node key, signature
  bytes) pair is cryptographically valid, and which key it is rooted in. That
  never changes, whatever the head, so it is computed once and cached by the
  node key and the signature bytes. First-time checks of many nodes run on a
  thread pool: libsodium releases the GIL while it verifies.
* **The trust decision**: under a given head, a checked signature admits its
  node exactly when its root key is in the head's trusted-key set. That is a
  set lookup, so a head change (a key added, removed or re-weighted) decides
  10,000 nodes again without any Ed25519 work.

The combination is exactly Tailscale's ``NodeKeyAuthorized`` (see
:func:`tka.sig.authorize_node_key`), in Go's order: the signature must decode,
must not be a bare credential, must name a root key; that key must be trusted
(``key: ...``), and only then does the signature's own validity matter. For an
Ed25519 key the key ID *is* the public key, so the chain's validity under "the
trusted key with this ID" does not depend on the head.

On top of single decisions, :class:`Admission` applies the rule Tailscale's
clients apply to their peers (``rotationTracker`` in ``ipn/ipnlocal``): a node
key that a newer rotation signature names as a previous key is superseded, and
so are rotation chains that start at the same direct signature with the same
length (a cloned node). :meth:`Admission.reevaluate` reports exactly which
nodes changed verdict across a head change.

Nothing here does I/O; nodes are handed in as :class:`NodeRecord` values.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeVar

from tka import ed25519
from tka.authority import Authority
from tka.errors import DecodeError, NotAuthorized, TKAError, ValidationError
from tka.key import Key
from tka.nlkeys import NodePublic
from tka.sig import (
    NODE_KEY_BINARY_PREFIX,
    NodeKeySignature,
    SigKind,
    direct_layout_fields,
    sig_kind_name,
)
from tka.state import State

__all__ = [
    "DEFAULT_CACHE_ENTRIES",
    "Admission",
    "Checked",
    "Decision",
    "NodeDecision",
    "NodeRecord",
    "Reevaluation",
    "check",
    "decide",
    "in_parallel",
    "node_text",
    "trusted_key_ids",
]

#: Default bound on cached crypto verdicts (a few hundred bytes each).
DEFAULT_CACHE_ENTRIES: Final = 1_000_000
#: Below this many unchecked signatures, first-time checks stay on the calling thread.
_MIN_PARALLEL: Final = 64


@dataclass(frozen=True, slots=True)
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


class Checked(NamedTuple):
    """The crypto verdict on a (node key, signature) pair: true under any head.

    ``root`` is ``None`` when the signature cannot be admitted whatever the
    keys (no signature, undecodable, a bare credential, no root key); then
    both decisions are the same refusal. Otherwise ``if_trusted`` is the
    decision when the root key is trusted (admitted, or refused because the
    signature does not verify) and ``if_untrusted`` the refusal otherwise.
    """

    root: bytes | None
    if_trusted: Decision
    if_untrusted: Decision

    @property
    def valid(self) -> bool:
        """Whether the signature chain verifies under its root key."""
        return self.if_trusted.admitted

    def under(self, trusted: frozenset[bytes] | set[bytes]) -> Decision:
        """The decision when the keys with IDs in *trusted* are trusted."""
        return self.if_trusted if self.root in trusted else self.if_untrusted


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What admission needs to know about a registered node."""

    node_id: int
    node_key: bytes
    """The raw 32-byte node key."""
    signature: bytes | None
    """The serialized node-key signature the service holds, if any."""


class NodeDecision(NamedTuple):
    """A node and the authority's verdict on it, within its tailnet.

    A named tuple rather than a dataclass: a re-evaluation makes one per node
    (10,000 of them in well under the time a frozen dataclass would take).
    """

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

    @property
    def changed(self) -> tuple[NodeDecision, ...]:
        """Every node whose verdict changed: newly locked out, then newly admitted."""
        return self.newly_locked_out + self.newly_admitted


def _tlpub(key_id: bytes) -> str:
    return f"tlpub:{key_id.hex()}"


def node_text(node_key: bytes) -> str:
    """``nodekey:<hex>`` of a raw node key (for messages and logs)."""
    return NodePublic(node_key).text()


# Most nodes share their root key and kind, so their decisions are equal:
# one object each, made once (a first evaluation of many nodes builds
# these under the GIL while other threads verify).
@functools.lru_cache(maxsize=1024)
def _untrusted(root: bytes, kind: str) -> Decision:
    why = f"its {kind} signature is by {_tlpub(root)}, a key the authority does not trust"
    return Decision(False, f"locked out: {why}", root, kind)


@functools.lru_cache(maxsize=1024)
def _admitted(root: bytes, kind: str) -> Decision:
    return Decision(True, f"admitted: {kind} signature by {_tlpub(root)}", root, kind)


@functools.lru_cache(maxsize=1024)
def _key(root: bytes) -> Key:
    return Key.ed25519(root)


def _refused(reason: str, root: bytes | None = None, kind: str = "") -> Checked:
    d = Decision(False, f"locked out: {reason}", root, kind)
    return Checked(None, d, d)


_NO_SIGNATURE: Final = _refused("the node has no node-key signature")


def check(
    node_key: bytes,
    signature: bytes | None,
    verify_zip215: Callable[[bytes, bytes, bytes], bool] = ed25519.verify_zip215,
) -> Checked:
    """The crypto verdict on *signature* (serialized, untrusted) for *node_key* (raw 32 bytes).

    Does every Ed25519 check the signature needs, against the key it names
    as its root; never raises for a bad signature. *verify_zip215* may be
    :func:`tka.ed25519.verify_zip215_threaded` (same verdicts) on worker threads.
    """
    if not signature:
        return _NO_SIGNATURE
    try:
        sig = NodeKeySignature.from_bytes(signature)
    except DecodeError as exc:
        return _refused(f"the signature does not decode ({exc})")
    if _plain_direct(sig, node_key):
        # The common case, decided as below, in fewer steps.
        return _check_direct(sig.key_id or b"", sig.sig_hash, sig.signature or b"", verify_zip215)
    kind = sig_kind_name(sig.sig_kind)
    if sig.sig_kind == SigKind.CREDENTIAL:
        # Go refuses a bare credential before it looks at any key.
        why = "credential signatures cannot authorize nodes on their own"
        return _refused(f"its {kind} signature does not verify: {why}", sig.key_id, kind)
    try:
        root = sig.authorizing_key_id()
    except NotAuthorized as exc:
        return _refused(f"its {kind} signature does not verify: {exc}", None, kind)
    untrusted = _untrusted(root, kind)
    try:
        # A trusted Ed25519 key's ID is its public key, so this is the check
        # NodeKeyAuthorized makes once it has found the key.
        sig.verify(node_key, _key(root), verify_zip215)
        details = sig.rotation_details()
    except NotAuthorized as exc:
        why = f"locked out: its {kind} signature does not verify: {exc}"
        bad = Decision(False, why, root, kind)
        return Checked(root, bad, untrusted)
    except TKAError as exc:  # defensive: any library refusal is a lock-out, not a crash
        bad = Decision(False, f"locked out: {exc}", root, kind)
        return Checked(root, bad, untrusted)
    if details is None:
        return Checked(root, _admitted(root, kind), untrusted)
    chain_root = None
    initial = details.initial_sig
    if initial is not None and initial.sig_kind == SigKind.DIRECT:
        chain_root = initial.wrapping_pubkey or b""
    n = len(details.prev_node_keys)
    ok = Decision(
        True,
        f"admitted: rotation signature over {n} earlier node key{'s' if n != 1 else ''}, "
        f"rooted in a signature by {_tlpub(root)}",
        root,
        kind,
        details.prev_node_keys,
        chain_root,
    )
    return Checked(root, ok, untrusted)


_DIRECT: Final = int(SigKind.DIRECT)
_DIRECT_INVALID: Final = "locked out: its direct signature does not verify: invalid signature"


def _plain_direct(sig: NodeKeySignature, node_key: bytes) -> bool:
    """Whether *sig* is the common case: a direct signature of *node_key* that names a
    32-byte root key and nests none."""
    root = sig.key_id
    return (
        sig.sig_kind == _DIRECT
        and sig.nested is None
        and root is not None
        and len(root) == ed25519.PUBLIC_KEY_SIZE
        and sig.pubkey == NODE_KEY_BINARY_PREFIX + (node_key or bytes(32))
    )


def _check_direct(
    root: bytes,
    sig_hash: bytes,
    signature: bytes,
    verify_zip215: Callable[[bytes, bytes, bytes], bool],
) -> Checked:
    """:func:`check` of a signature :func:`_plain_direct` accepts, whose root is *root*.

    What the general path decides for such a signature, written out: a
    control plane checks one per node.
    """
    try:
        valid = verify_zip215(root, sig_hash, signature)
    except TKAError as exc:  # as in check: a library refusal is a lock-out
        bad = Decision(False, f"locked out: {exc}", root, "direct")
        return Checked(root, bad, _untrusted(root, "direct"))
    return _direct_verdict(root, valid)


def _direct_verdict(root: bytes, valid: bool) -> Checked:
    """The verdict on a :func:`_plain_direct` signature by *root* that does or does not verify."""
    if valid:
        return _valid_direct(root)
    bad = Decision(False, _DIRECT_INVALID, root, "direct")
    return Checked(root, bad, _untrusted(root, "direct"))


@functools.lru_cache(maxsize=1024)
def _valid_direct(root: bytes) -> Checked:
    # The verdict on every valid direct signature by *root*: one object.
    return Checked(root, _admitted(root, "direct"), _untrusted(root, "direct"))


def trusted_key_ids(state: State) -> frozenset[bytes]:
    """The IDs of the keys *state* trusts (what a :class:`Checked` is decided against).

    A key whose ID cannot be computed (an unknown kind: static validation
    keeps it out of any state a node accepts, but a damaged store can hold
    one) ends the set there: Go's ``GetKey`` walks the keys in order and
    fails at such a key, so no key after it is ever found trusted.
    """
    ids = set()
    for k in state.keys or ():
        try:
            ids.add(k.key_id)
        except ValidationError:
            break
    ids.discard(b"")
    return frozenset(ids)


def decide(state: State, node_key: bytes, signature: bytes | None) -> Decision:
    """Decide whether *signature* admits *node_key* under the keys *state* trusts.

    Uncached; :class:`Admission` caches. Never raises for bad signatures:
    every failure is a :class:`Decision` with ``admitted=False``.
    """
    return check(node_key, signature).under(trusted_key_ids(state))


def _direct_parts(node_key: bytes, signature: bytes | None) -> tuple[bytes, bytes, bytes] | None:
    """``(root, sig_hash, signature)`` of a signature :func:`_plain_direct` accepts, else ``None``.

    ``None`` for anything else (no signature, undecodable, another kind, a
    root that is not a key, another node's key): :func:`check` decides those.
    """
    if not signature:
        return None
    fields = direct_layout_fields(signature)
    if fields is not None:
        # The usual layout (a direct signature naming a 32-byte key, nesting
        # none), sliced rather than decoded into an object.
        pubkey, root, sig, _, sig_hash = fields
        if pubkey != NODE_KEY_BINARY_PREFIX + (node_key or bytes(32)):
            return None
        return root, sig_hash, sig
    try:
        decoded = NodeKeySignature.from_bytes(signature)
    except DecodeError:
        return None
    if not _plain_direct(decoded, node_key):
        return None
    return decoded.key_id or b"", decoded.sig_hash, decoded.signature or b""


def _check_chunk(pairs: Sequence[tuple[bytes, bytes | None]]) -> list[Checked]:
    """:func:`check` of each pair, for a worker thread running beside others.

    In three passes rather than one pair at a time: take every signature
    apart, verify the direct ones in one native loop, then build the
    verdicts. The GIL is then held between two verifications only for the
    loop's own step, not for a decode, so the threads seldom wait for each
    other.
    """
    parts = [_direct_parts(nk, sig) for nk, sig in pairs]
    try:
        verdicts = iter(ed25519.verify_zip215_many([p for p in parts if p is not None]))
    except TKAError:
        # The libraries failed their known-answer checks: check() turns
        # that into each node's refusal, as a single check does.
        return [check(nk, sig, ed25519.verify_zip215_threaded) for nk, sig in pairs]
    return [
        check(nk, signature, ed25519.verify_zip215_threaded)
        if p is None
        else _direct_verdict(p[0], next(verdicts))
        for (nk, signature), p in zip(pairs, parts, strict=True)
    ]


#: Nodes a worker takes at a time: small enough that the threads finish
#: together when one of them is descheduled, large enough to cost nothing.
_BLOCK: Final = 128

T = TypeVar("T")
R = TypeVar("R")


def in_parallel(
    pool: Executor,
    workers: int,
    work: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    block: int = _BLOCK,
) -> list[R]:
    """``work`` over *items* in blocks, on *workers* threads in all, results in order.

    The calling thread is one of the *workers* (it would otherwise sit idle
    while the GIL is contended by one thread more than there are cores); the
    others run on *pool*. Every thread takes the next block from one shared
    counter, so a thread the OS deschedules holds up only its current block.
    """
    starts = range(0, len(items), block)
    results: list[list[R] | None] = [None] * len(starts)
    # next() on a range iterator is atomic under the GIL: each block is
    # taken by exactly one thread.
    todo = iter(enumerate(starts))

    def drain() -> None:
        for slot, start in todo:
            results[slot] = work(items[start : start + block])

    futures = [pool.submit(drain) for _ in range(max(0, workers - 1))]
    drain()
    for f in futures:
        f.result()
    out: list[R] = []
    for r in results:
        assert r is not None  # every block was taken and done above
        out.extend(r)
    return out


def _superseded(nodes: Sequence[NodeRecord], decisions: Sequence[Decision]) -> set[bytes]:
    """Tailscale's ``rotationTracker``: the node keys that newer rotations replace."""
    obsolete: set[bytes] = set()
    by_root: dict[bytes, list[tuple[bytes, int]]] = {}
    for n, dec in zip(nodes, decisions, strict=True):
        if not dec.admitted or dec.kind != "rotation":
            continue
        obsolete.update(dec.prev_node_keys)
        if dec.chain_root is not None:
            by_root.setdefault(dec.chain_root, []).append((n.node_key, len(dec.prev_node_keys)))
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
    return obsolete


def _under(
    nodes: Sequence[NodeRecord], checked: Sequence[Checked], trusted: frozenset[bytes]
) -> tuple[list[Decision], set[bytes]]:
    """Each node's own decision under *trusted*, and the node keys rotations supersede."""
    decisions = [c.if_trusted if c.root in trusted else c.if_untrusted for c in checked]
    return decisions, _superseded(nodes, decisions)


def _node_decisions(
    nodes: Sequence[NodeRecord], checked: Sequence[Checked], trusted: frozenset[bytes]
) -> list[NodeDecision]:
    """Every node's decision under *trusted*, superseded rotations marked."""
    decisions, obsolete = _under(nodes, checked, trusted)
    if not obsolete:
        return list(map(NodeDecision, nodes, decisions))
    return [
        NodeDecision(n, d, d.admitted and n.node_key in obsolete)
        for n, d in zip(nodes, decisions, strict=True)
    ]


def _admitted_flags(
    nodes: Sequence[NodeRecord], checked: Sequence[Checked], trusted: frozenset[bytes]
) -> list[bool]:
    """Whether each node is admitted under *trusted*, without building NodeDecisions."""
    decisions, obsolete = _under(nodes, checked, trusted)
    return [
        d.admitted and n.node_key not in obsolete for n, d in zip(nodes, decisions, strict=True)
    ]


class Admission:
    """Cached admission decisions for any number of tailnets.

    Crypto verdicts are cached by (node key, signature bytes), at most
    *max_entries* of them (the oldest dropped first); trusted-key sets by head
    hash. Thread-safe; share one per process. ``hits`` and ``misses`` count
    crypto-verdict lookups (approximate under concurrent use). First-time
    checks of many nodes run on *executor* (a thread pool), or on a pool of
    one thread per core made on first use.
    """

    def __init__(
        self, max_entries: int = DEFAULT_CACHE_ENTRIES, executor: Executor | None = None
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._checked: dict[tuple[bytes, bytes | None], Checked] = {}
        self._trusted: dict[bytes, frozenset[bytes]] = {}
        self._lock = threading.Lock()
        self._executor = executor
        self._own_pool: ThreadPoolExecutor | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._checked)

    def clear(self) -> None:
        """Forget every cached verdict (tests and benchmarks)."""
        with self._lock:
            self._checked = {}
            self._trusted = {}
            self.hits = self.misses = 0

    # -- the two parts ---------------------------------------------------------

    def trusted(self, authority: Authority) -> frozenset[bytes]:
        """The IDs of the keys trusted at *authority*'s head (cached by head hash)."""
        head = authority.head_hash
        found = self._trusted.get(head)
        if found is None:
            found = trusted_key_ids(authority.state)
            with self._lock:
                if len(self._trusted) >= 64:
                    # Heads only move forward; a few recent ones serve
                    # before/after comparisons and lagging replicas.
                    self._trusted.pop(next(iter(self._trusted)))
                self._trusted[head] = found
        return found

    def checked(self, node_key: bytes, signature: bytes | None) -> Checked:
        """The crypto verdict on one pair, verified on first use only."""
        key = (node_key, signature or None)
        found = self._checked.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        found = check(node_key, signature)
        self._store([(key, found)])
        return found

    def check_many(self, pairs: Sequence[tuple[bytes, bytes | None]]) -> list[Checked]:
        """Crypto verdicts for many pairs, in order; unseen ones checked in parallel."""
        keys = [(nk, sig or None) for nk, sig in pairs]
        cache = self._checked
        out: list[Checked | None] = [cache.get(k) for k in keys]
        todo = [i for i, c in enumerate(out) if c is None]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if not todo:
            return out  # type: ignore[return-value]  # no None left
        todo_pairs = [keys[i] for i in todo]
        fresh = self._run_checks(todo_pairs)
        for i, c in zip(todo, fresh, strict=True):
            out[i] = c
        self._store(zip(todo_pairs, fresh, strict=True))
        return out  # type: ignore[return-value]  # every slot filled above

    def _pool(self) -> tuple[Executor, int]:
        if self._executor is not None:
            workers = getattr(self._executor, "_max_workers", None) or os.cpu_count() or 1
            return self._executor, workers
        with self._lock:
            if self._own_pool is None:
                self._own_pool = ThreadPoolExecutor(
                    max_workers=os.cpu_count() or 1, thread_name_prefix="tka-admission"
                )
            return self._own_pool, self._own_pool._max_workers

    def _run_checks(self, pairs: Sequence[tuple[bytes, bytes | None]]) -> list[Checked]:
        if len(pairs) < _MIN_PARALLEL or (os.cpu_count() or 1) < 2:
            return [check(nk, sig) for nk, sig in pairs]
        pool, workers = self._pool()
        return in_parallel(pool, workers, _check_chunk, pairs)

    def _store(self, items: Iterable[tuple[tuple[bytes, bytes | None], Checked]]) -> None:
        with self._lock:
            cache = self._checked
            for key, c in items:
                cache[key] = c
            excess = len(cache) - self._max
            if excess > 0:
                # Drop the oldest tenth at once, so that a full cache does
                # not pay for an eviction on every insert.
                for old in list(itertools.islice(cache, excess + self._max // 10)):
                    del cache[old]

    # -- decisions ---------------------------------------------------------------

    def decide(self, authority: Authority, node_key: bytes, signature: bytes | None) -> Decision:
        """The authority's decision on one node, from the caches when possible."""
        return self.checked(node_key, signature).under(self.trusted(authority))

    def evaluate(self, authority: Authority, nodes: Sequence[NodeRecord]) -> list[NodeDecision]:
        """Decide every node of a tailnet, superseded rotations included."""
        checked = self.check_many([(n.node_key, n.signature) for n in nodes])
        return _node_decisions(nodes, checked, self.trusted(authority))

    def reevaluate(
        self, before: Authority | None, after: Authority, nodes: Sequence[NodeRecord]
    ) -> Reevaluation:
        """Decide every node at *after*'s head and report exactly which changed since *before*.

        *before* ``None`` means lock was not enforced: every node was admitted.
        Signatures checked before are not verified again: only the trusted-key
        sets of the two heads are compared.
        """
        nodes = list(nodes)
        checked = self.check_many([(n.node_key, n.signature) for n in nodes])
        new = _node_decisions(nodes, checked, self.trusted(after))
        if before is None:
            was = [True] * len(nodes)
        else:
            was = _admitted_flags(nodes, checked, self.trusted(before))
        locked: list[NodeDecision] = []
        admitted: list[NodeDecision] = []
        for d, w in zip(new, was, strict=True):
            now = d.decision.admitted and not d.superseded
            if now != w:
                (admitted if now else locked).append(d)
        return Reevaluation(after.head_hash, tuple(new), tuple(locked), tuple(admitted))

    def locked_out(self, authority: Authority, nodes: Sequence[NodeRecord]) -> list[NodeDecision]:
        """The nodes the authority does not admit, with the reasons."""
        return [d for d in self.evaluate(authority, nodes) if not d.admitted]

    def affected_signatures(
        self, authority: Authority, nodes: Iterable[NodeRecord], key_id: bytes
    ) -> list[NodeRecord]:
        """Nodes whose valid signature is rooted in *key_id* (``affected-sigs``).

        These are the signatures that removing the key would invalidate; each
        admits its node key at the current head, as Tailscale's client checks.
        """
        trusted = self.trusted(authority)
        out = []
        for n in nodes:
            d = self.checked(n.node_key, n.signature).under(trusted)
            if d.admitted and d.signing_key == key_id:
                out.append(n)
        return out

    def close(self) -> None:
        """Stop the thread pool this object made (if any)."""
        with self._lock:
            pool, self._own_pool = self._own_pool, None
        if pool is not None:
            pool.shutdown()
