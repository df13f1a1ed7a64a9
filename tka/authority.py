"""The Tailnet Key Authority: twin of ``Authority`` in Tailscale's ``tka/tka.go``.

An :class:`Authority` is the head of the active AUM chain and the state
there. It does no I/O: every method that reads or writes AUMs takes a
:class:`~tka.storage.Storage`. Updates are verified against the state at
their parent before anything is stored, and a batch is all-or-nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tka import ed25519
from tka.aum import AUM, AUMKind, Signature, hash_to_text
from tka.chain import compute_active_chain, compute_state_at
from tka.compaction import CompactionOptions, compact
from tka.disablement import check_disablement
from tka.errors import (
    StateError,
    StorageError,
    TKAError,
    UsageError,
    ValidationError,
    VerificationError,
)
from tka.key import KEY_KIND_25519, Key
from tka.limits import MAX_SCAN_ITERATIONS
from tka.sig import NodeKeySignature, RotationDetails, authorize_node_key
from tka.state import State
from tka.storage import CompactableStorage, Storage

__all__ = ["Authority", "Signer", "verify_aum"]


@dataclass(frozen=True)
class Signer:
    """Signs AUMs with one or more tailnet-lock private keys, in order.

    Each private key is an Ed25519 seed (32 bytes) or Go's 64-byte form.
    """

    private_keys: tuple[bytes, ...]
    _publics: tuple[bytes, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_publics", tuple(ed25519.public_from_private(k) for k in self.private_keys)
        )

    def __repr__(self) -> str:
        return f"Signer({len(self.private_keys)} keys)"

    @property
    def key_ids(self) -> tuple[bytes, ...]:
        """The IDs (public keys) of the signing keys."""
        return self._publics

    def sign_aum(self, sig_hash: bytes) -> tuple[Signature, ...]:
        """One signature per key over *sig_hash*."""
        return tuple(
            Signature(pub, ed25519.sign(priv, sig_hash))
            for priv, pub in zip(self.private_keys, self._publics, strict=True)
        )


def verify_aum(aum: AUM, state: State, is_genesis: bool = False) -> None:
    """Tailscale's ``aumVerify``: is *aum* a valid, signed update of *state*?

    Raises :class:`~tka.errors.VerificationError` naming the fault.
    """
    _verify_aum(aum, state, is_genesis, None)


#: A signature check put off by :func:`_verify_aum`: (public key, message,
#: signature, index of the signature in its AUM).
_Check = tuple[bytes, bytes, bytes, int]


def _verify_aum(aum: AUM, state: State, is_genesis: bool, deferred: list[_Check] | None) -> None:
    """:func:`verify_aum`, optionally putting the Ed25519 checks off.

    With *deferred*, each signature's cryptographic check is appended to it
    instead of being run; everything else is checked here, in the same order.
    The caller must run the deferred checks and, if one fails, report it in
    preference to any error raised after it was deferred (see
    :meth:`Authority.inform`).
    """
    try:
        aum.static_validate()
    except ValidationError as exc:
        raise VerificationError(f"invalid: {exc}") from None
    if not is_genesis:
        parent = aum.parent
        if parent is None:
            raise VerificationError("aum has no parent")
        if state.last_aum_hash is None:
            raise VerificationError("cannot check the parent against a state with no last AUM")
        if state.last_aum_hash != parent:
            raise VerificationError(
                f"aum with parent {hash_to_text(parent)} cannot apply to a state at "
                f"{hash_to_text(state.last_aum_hash)}"
            )
    if not aum.signatures:
        raise VerificationError("unsigned AUM")
    sig_hash = aum.sig_hash
    for i, sig in enumerate(aum.signatures):
        key = state.get_key(sig.key_id or b"")
        if key is None:
            raise VerificationError(f"signature {i}: key is not trusted")
        if key.kind != KEY_KIND_25519:
            raise VerificationError(f"signature {i}: unhandled key kind {key.kind}")
        public = key.public or b""
        if len(public) != ed25519.PUBLIC_KEY_SIZE:
            raise VerificationError(f"signature {i}: ed25519 key has wrong length {len(public)}")
        if deferred is not None:
            deferred.append((public, sig_hash, sig.signature or b"", i))
        elif not ed25519.verify_zip215(public, sig_hash, sig.signature or b""):
            raise VerificationError(f"signature {i}: invalid signature")
    keys = state.keys or ()
    if aum.message_kind == AUMKind.REMOVE_KEY and len(keys) == 1:
        try:
            only = keys[0].key_id
        except ValidationError:
            only = None
        if only == aum.key_id:
            raise VerificationError("cannot remove the last key in the state")


# -- checking many signatures at once ------------------------------------------
#
# A batch of updates (a node catching up, a control plane applying a sync)
# is dominated by Ed25519 checks. libsodium is called through cffi, which
# releases the GIL for the call, so the checks of a batch are spread over a
# few threads, one per core (ed25519.verify_zip215_threaded asks libsodium
# first for that reason). Below this many checks, threads cost more than
# they save.
_PARALLEL_MIN_CHECKS = 16

Verifier = Callable[[bytes, bytes, bytes], bool]

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _verifier_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _pool_lock:
        # A forked child inherits the pool object but not its threads:
        # work handed to it would never run, so the child makes its own.
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tka-verify")
            _pool_pid = os.getpid()
        return _pool


def _first_invalid_in(
    checks: Sequence[_Check], start: int, stop: int, verify: Verifier = ed25519.verify_zip215
) -> int | None:
    for n in range(start, stop):
        public, message, signature, _ = checks[n]
        if not verify(public, message, signature):
            return n
    return None


def _first_invalid(checks: Sequence[_Check]) -> int | None:
    """Index of the first check whose signature is invalid, or ``None``.

    Runs the checks on one thread per core (this thread included) when
    there are enough of them; the answer is the same either way.
    """
    workers = _cores()
    if workers < 2 or len(checks) < _PARALLEL_MIN_CHECKS:
        return _first_invalid_in(checks, 0, len(checks))
    size = -(-len(checks) // workers)
    bounds = [(lo, min(lo + size, len(checks))) for lo in range(0, len(checks), size)]
    pool = _verifier_pool(workers - 1)
    # The threaded form of the ZIP-215 check: ed25519-zebra holds the GIL.
    verify = ed25519.verify_zip215_threaded
    futures = [pool.submit(_first_invalid_in, checks, lo, hi, verify) for lo, hi in bounds[1:]]
    found = [_first_invalid_in(checks, *bounds[0], verify)]
    found += [f.result() for f in futures]
    failed = [n for n in found if n is not None]
    return min(failed) if failed else None


class _Overlay:
    """Storage plus AUMs not yet committed, to compute a result before committing."""

    def __init__(self, base: Storage, pending: Sequence[AUM]) -> None:
        self._base = base
        self._pending = {a.hash: a for a in pending}
        self._children: dict[bytes, list[AUM]] = {}
        for a in pending:
            p = a.parent
            if p is not None:
                self._children.setdefault(p, []).append(a)

    def get(self, aum_hash: bytes) -> AUM | None:
        return self._pending.get(aum_hash) or self._base.get(aum_hash)

    def children(self, aum_hash: bytes) -> list[AUM]:
        return self._base.children(aum_hash) + self._children.get(aum_hash, [])

    def heads(self) -> list[AUM]:
        out = [a for a in self._base.heads() if a.hash not in self._children]
        return out + [a for h, a in self._pending.items() if h not in self._children]

    def lists_an_aum_twice(self) -> bool:
        # Passed through for compute_active_chain (see FilesystemStore).
        repeats = getattr(self._base, "lists_an_aum_twice", None)
        return callable(repeats) and bool(repeats())

    def commit_verified(self, aums: Sequence[AUM]) -> None:
        raise UsageError("overlay storage is read-only")

    def last_active_ancestor(self) -> bytes | None:
        return self._base.last_active_ancestor()

    def set_last_active_ancestor(self, aum_hash: bytes) -> None:
        raise UsageError("overlay storage is read-only")


class Authority:
    """A tailnet key authority at its current head.

    Build one with :meth:`open`, :meth:`bootstrap` or :meth:`create`; move it
    forward with :meth:`inform`. Reads (:attr:`head`, :attr:`state`,
    :meth:`node_key_authorized`, ...) need no storage.
    """

    __slots__ = ("_head", "_oldest", "_state")

    def __init__(self, head: AUM, oldest: AUM, state: State) -> None:
        self._head = head
        self._oldest = oldest
        self._state = state

    def __repr__(self) -> str:
        return f"Authority(head={self._head.hash_text})"

    # -- construction ------------------------------------------------------

    @classmethod
    def open(cls, storage: Storage) -> Authority:
        """Open the authority held in *storage* (Tailscale's ``Open``).

        Signatures are not re-checked: only verified AUMs are ever stored.
        """
        hint = storage.last_active_ancestor()
        try:
            c = compute_active_chain(storage, hint, MAX_SCAN_ITERATIONS)
        except TKAError as exc:
            raise type(exc)(f"active chain: {exc}") from None
        return cls(c.head, c.oldest, c.state)

    @classmethod
    def bootstrap(cls, storage: Storage, genesis: AUM) -> Authority:
        """Start an empty *storage* from a checkpoint AUM (genesis or a later one)."""
        if storage.heads():
            raise UsageError("cannot bootstrap: storage already holds AUMs")
        if genesis.message_kind != AUMKind.CHECKPOINT:
            raise VerificationError(
                f"bootstrap AUMs must be checkpoint messages, got {genesis.kind_name}"
            )
        if genesis.state is None:
            raise VerificationError("bootstrap AUM is missing its state")
        try:
            verify_aum(genesis, genesis.state, is_genesis=True)
        except VerificationError as exc:
            raise VerificationError(f"invalid bootstrap: {exc}") from None
        storage.commit_verified([genesis])
        storage.set_last_active_ancestor(genesis.hash)
        return cls.open(storage)

    @classmethod
    def create(cls, storage: Storage, state: State, signer: Signer) -> tuple[Authority, AUM]:
        """Create a new authority whose genesis checkpoint holds *state*.

        Returns the authority and the signed genesis AUM.
        """
        genesis = AUM(AUMKind.CHECKPOINT, state=state)
        try:
            genesis.static_validate()
        except ValidationError as exc:
            raise ValidationError(f"invalid state: {exc}") from None
        genesis = genesis.with_signatures(signer.sign_aum(genesis.sig_hash))
        return cls.bootstrap(storage, genesis), genesis

    # -- reads -------------------------------------------------------------

    @property
    def head(self) -> AUM:
        """The AUM at the head of the active chain."""
        return self._head

    @property
    def head_hash(self) -> bytes:
        """Hash of the head AUM."""
        assert self._state.last_aum_hash is not None
        return self._state.last_aum_hash

    @property
    def oldest_ancestor(self) -> AUM:
        """The oldest stored AUM of the active chain."""
        return self._oldest

    @property
    def state(self) -> State:
        """The state at the head."""
        return self._state

    @property
    def keys(self) -> tuple[Key, ...]:
        """The trusted keys at the head."""
        return self._state.keys or ()

    def key_trusted(self, key_id: bytes) -> bool:
        """Whether the key with *key_id* is trusted at the head."""
        try:
            return self._state.get_key(key_id) is not None
        except ValidationError:
            return False

    @property
    def state_ids(self) -> tuple[int, int]:
        """The authority's two state IDs (random, fixed at creation)."""
        return self._state.state_id1, self._state.state_id2

    def valid_disablement(self, secret: bytes) -> bool:
        """Whether *secret* is a disablement secret of this authority (constant time)."""
        return check_disablement(secret, self._state.disablement_values or ())

    def node_key_authorized(
        self, node_key: bytes, signature: bytes | NodeKeySignature
    ) -> RotationDetails | None:
        """Check that *signature* admits *node_key* (raw 32 bytes) under the head's keys.

        Returns rotation details (or ``None`` for a direct signature); raises
        :class:`~tka.errors.NotAuthorized` with the reason when it does not.
        """
        return authorize_node_key(self._state, node_key, signature)

    # -- updates -----------------------------------------------------------

    def inform(self, storage: Storage, updates: Sequence[AUM]) -> None:
        """Verify and store *updates*, then move to the new head (``Inform``).

        Each update is checked against the state at its parent (so a fork
        is checked against the keys trusted where it forked). All or
        nothing: if any update fails, nothing is stored and the authority
        is unchanged.
        """
        if not updates:
            raise UsageError("inform called with no updates")
        state_at: dict[bytes, State] = {self.head_hash: self._state}
        to_commit: list[AUM] = []
        prev_hash = self.head_hash
        head_chain = True
        # The Ed25519 checks are put off and run together afterwards (in
        # parallel when there are many); each is tagged with its update.
        checks: list[_Check] = []
        check_update: list[int] = []
        failure: TKAError | None = None
        try:
            for i, update in enumerate(updates):
                h = update.hash
                if storage.get(h) is not None:
                    head_chain = False
                    continue
                parent = update.parent
                if parent is None:
                    raise VerificationError(f"update {i}: missing parent")
                state = state_at.get(parent)
                if state is None:
                    try:
                        state = compute_state_at(storage, parent)
                    except TKAError as exc:
                        raise type(exc)(f"update {i} computing state: {exc}") from None
                    state_at[parent] = state
                try:
                    _verify_aum(update, state, False, checks)
                except VerificationError as exc:
                    raise VerificationError(f"update {i} invalid: {exc}") from None
                finally:
                    check_update += [i] * (len(checks) - len(check_update))
                try:
                    state_at[h] = state.apply(update)
                except StateError as exc:
                    raise StateError(f"update {i} cannot be applied: {exc}") from None
                if parent != prev_hash:
                    head_chain = False
                prev_hash = h
                to_commit.append(update)
        except TKAError as exc:
            # Every check put off so far comes before this error in
            # Tailscale's order: a bad signature among them is the verdict.
            failure = exc
        bad = _first_invalid(checks)
        if bad is not None:
            raise VerificationError(
                f"update {check_update[bad]} invalid: signature {checks[bad][3]}: invalid signature"
            )
        if failure is not None:
            raise failure

        if head_chain:
            # Every update extends the head in order: the last one is the
            # new head, no fork resolution needed.
            new_head, new_oldest, new_state = updates[-1], self._oldest, state_at[prev_hash]
        else:
            try:
                c = compute_active_chain(_Overlay(storage, to_commit), self._oldest.hash)
            except TKAError as exc:
                raise type(exc)(f"recomputing active chain: {exc}") from None
            new_head, new_oldest, new_state = c.head, c.oldest, c.state
        if to_commit:
            try:
                storage.commit_verified(to_commit)
            except StorageError as exc:
                raise StorageError(f"commit: {exc}") from None
        self._head, self._oldest, self._state = new_head, new_oldest, new_state

    def compact(
        self,
        storage: CompactableStorage,
        options: CompactionOptions | None = None,
        now: float | None = None,
    ) -> bytes:
        """Prune history no longer needed (Tailscale's ``Authority.Compact``).

        Returns the new oldest ancestor's hash, which is also recorded in
        *storage* as the last-active-ancestor hint.
        """
        ancestor = compact(storage, self.head_hash, options, now)
        oldest = storage.get(ancestor)
        if oldest is None:
            raise StorageError(f"compaction kept no AUM {hash_to_text(ancestor)}")
        self._oldest = oldest
        return ancestor
