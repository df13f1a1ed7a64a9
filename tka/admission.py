"""Node admission for control planes: cached verdicts, and re-checking many nodes at once.

A control plane asks "does this node-key signature admit this node key under
the tailnet's current keys?" on every registration and map poll, and must ask
it again for every node whenever the authority's head moves (a key may have
been added, removed or re-weighted). The answer depends only on the head (the
trusted keys there), the node key and the signature bytes, so:

* :class:`AdmissionCache` remembers verdicts keyed by ``(head hash, node key,
  BLAKE2s of the signature bytes)``. A lookup is a hash of the signature and
  one dictionary probe; a verdict reached under one head is never served under
  another, and the first verdict stored under a new head drops everything
  cached under the old one.
* :func:`evaluate_many` re-evaluates many ``(node key, signature)`` pairs
  against one state, optionally spread over worker processes (or threads) of
  a :class:`concurrent.futures.Executor`; :meth:`AdmissionCache.refresh` does
  that for a new head and fills the cache with the results.

About threads versus processes: PyNaCl calls libsodium through cffi, which
releases the GIL during the call, so signature checks do run in parallel on
threads. Decoding a signature is Python code and holds the GIL, so worker
processes scale a little better; :func:`admission_pool` makes such a pool.

Verdicts are exactly those of :func:`tka.sig.authorize_node_key` (Tailscale's
``NodeKeyAuthorized``): admitted, or refused with its reason.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import multiprocessing
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Final

from tka.authority import Authority
from tka.errors import DecodeError, NotAuthorized
from tka.sig import NodeKeySignature, authorize_node_key
from tka.state import State

__all__ = [
    "AdmissionCache",
    "Verdict",
    "admission_pool",
    "evaluate",
    "evaluate_many",
]

#: Default bound on cached verdicts (about 200 bytes each).
DEFAULT_MAX_ENTRIES: Final = 1_000_000
#: Below this many pairs, :func:`evaluate_many` does not bother with workers.
_MIN_PARALLEL: Final = 64


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a node key is admitted, by which trusted key, or why not."""

    admitted: bool
    key_id: bytes | None = None
    """ID of the trusted key at the root of the signature, when admitted."""
    reason: str | None = None
    """Why the node is refused (the :class:`~tka.errors.NotAuthorized` message)."""


def evaluate(state: State, node_key: bytes, signature: bytes) -> Verdict:
    """Decide whether *signature* admits *node_key* (raw 32 bytes) under *state*'s keys.

    Never raises for a refusal: a bad signature is a verdict, not an error.
    """
    return Verdict(*_decide(state, node_key, signature))


def _decide(
    state: State, node_key: bytes, signature: bytes
) -> tuple[bool, bytes | None, str | None]:
    """:func:`evaluate`'s answer as a plain tuple (cheap to compare and to hash)."""
    try:
        try:
            decoded = NodeKeySignature.from_bytes(signature)
        except DecodeError as exc:
            # The same wording authorize_node_key uses for bytes it cannot decode.
            raise NotAuthorized(f"unserialize: {exc}") from None
        authorize_node_key(state, node_key, decoded)
        # Cannot raise now: authorize_node_key found this key and trusted it.
        return True, decoded.authorizing_key_id(), None
    except NotAuthorized as exc:
        return False, None, str(exc)


def _evaluate_chunk(state: State, pairs: Sequence[tuple[bytes, bytes]]) -> list[Verdict]:
    # Module level so worker processes can unpickle it. Equal verdicts (all
    # nodes admitted by one key, say) are one object, built once and, from a
    # worker process, pickled once: the results of a chunk stay small.
    seen: dict[tuple[bool, bytes | None, str | None], Verdict] = {}
    out = []
    for nk, sig in pairs:
        answer = _decide(state, nk, sig)
        verdict = seen.get(answer)
        if verdict is None:
            verdict = seen[answer] = Verdict(*answer)
        out.append(verdict)
    return out


def evaluate_many(
    state: State,
    pairs: Sequence[tuple[bytes, bytes]],
    executor: Executor | None = None,
    chunks_per_worker: int = 4,
) -> list[Verdict]:
    """Verdicts for many ``(node key, signature bytes)`` pairs, in the same order.

    With *executor* (a process or thread pool), the pairs are split into
    chunks, a few per worker so that uneven chunks even out, and evaluated
    in parallel; without one, or for a few pairs, in the calling thread.
    """
    if executor is None or len(pairs) < _MIN_PARALLEL:
        return _evaluate_chunk(state, pairs)
    workers = getattr(executor, "_max_workers", None) or os.cpu_count() or 1
    size = max(1, math.ceil(len(pairs) / (workers * max(1, chunks_per_worker))))
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    futures = [executor.submit(_evaluate_chunk, state, chunk) for chunk in chunks]
    out: list[Verdict] = []
    for f in futures:
        out.extend(f.result())
    return out


def _warm() -> int:
    # Importing tka (and libsodium's one-off self-check) in the worker.
    from tka import ed25519

    ed25519._libsodium_is_narrower()
    return os.getpid()


def admission_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A process pool for :func:`evaluate_many`, one worker per core, started and warmed.

    Workers are started with ``forkserver`` where available (``spawn``
    elsewhere) rather than ``fork``, which is unsafe in a process that runs
    threads. Shut it down with ``shutdown()`` or use it in a ``with`` block.
    """
    n = workers or os.cpu_count() or 1
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
    # Start every worker now, so the first real batch does not pay for it.
    for f in [pool.submit(_warm) for _ in range(n)]:
        f.result()
    return pool


def _digest(signature: bytes) -> bytes:
    return hashlib.blake2s(signature).digest()


class AdmissionCache:
    """Verdicts keyed by (head hash, node key, BLAKE2s of the signature bytes).

    One cache per authority (tailnet). Lookups take no lock: the head is
    part of the key, so a lookup can only find a verdict reached under the
    head it asks about. Storing a verdict under a new head first drops every
    verdict of other heads (they can never be asked for again by an
    up-to-date caller). At most *max_entries* verdicts are kept; past that the
    oldest are dropped first. Thread-safe (the ``hits`` and ``misses``
    counters are approximate under concurrent use).
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._lock = threading.Lock()
        self._head: bytes | None = None
        self._verdicts: dict[tuple[bytes, bytes, bytes], Verdict] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._verdicts)

    @property
    def head(self) -> bytes | None:
        """The head hash the cached verdicts were reached under (``None`` when empty)."""
        return self._head

    def lookup(self, head: bytes, node_key: bytes, signature: bytes) -> Verdict | None:
        """The cached verdict for this head, node key and signature, or ``None``."""
        return self._verdicts.get((head, node_key, _digest(signature)))

    def check(self, authority: Authority, node_key: bytes, signature: bytes) -> Verdict:
        """The verdict for *node_key* and *signature* under *authority*'s current head."""
        head = authority.head_hash
        key = (head, node_key, _digest(signature))
        verdict = self._verdicts.get(key)
        if verdict is not None:
            self.hits += 1
            return verdict
        self.misses += 1
        verdict = evaluate(authority.state, node_key, signature)
        self._store(head, [(key, verdict)])
        return verdict

    def refresh(
        self,
        authority: Authority,
        pairs: Sequence[tuple[bytes, bytes]],
        executor: Executor | None = None,
    ) -> list[Verdict]:
        """Re-evaluate *pairs* under *authority*'s head and cache the verdicts.

        What a control plane does for all its nodes after the head moves.
        Pairs already cached under this head are not evaluated again.
        """
        head = authority.head_hash
        keys = [(head, nk, _digest(sig)) for nk, sig in pairs]
        out: list[Verdict | None] = [self._verdicts.get(k) for k in keys]
        todo = [i for i, v in enumerate(out) if v is None]
        fresh = evaluate_many(authority.state, [pairs[i] for i in todo], executor)
        for i, v in zip(todo, fresh, strict=True):
            out[i] = v
        self._store(head, ((keys[i], v) for i, v in zip(todo, fresh, strict=True)))
        self.misses += len(todo)
        self.hits += len(pairs) - len(todo)
        return [v for v in out if v is not None]

    def clear(self) -> None:
        """Drop every cached verdict."""
        with self._lock:
            self._verdicts = {}
            self._head = None

    def _store(
        self, head: bytes, items: Iterable[tuple[tuple[bytes, bytes, bytes], Verdict]]
    ) -> None:
        with self._lock:
            if head != self._head:
                # A new head: verdicts of the old one are dead weight. (A
                # caller still holding an older authority just repopulates.)
                self._verdicts = {}
                self._head = head
            verdicts = self._verdicts
            for key, verdict in items:
                verdicts[key] = verdict
            excess = len(verdicts) - self._max
            if excess > 0:
                # Drop the oldest tenth at once, so that a full cache does
                # not pay for an eviction on every insert.
                drop = excess + self._max // 10
                for old in list(itertools.islice(verdicts, drop)):
                    del verdicts[old]
