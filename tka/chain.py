"""Walking the stored AUM tree: fork choice, state at an AUM, the active chain.

Twin of the chain functions in Tailscale's ``tka/tka.go``. Every node must
pick the same head from the same stored AUMs, whatever order they arrived
in, so the rules here are Tailscale's to the letter, iteration caps included:

* from each head, walk back to the oldest stored ancestor; the active chain
  starts at the one ancestor, or at the ancestor whose walk passed through
  the stored last-active-ancestor hint;
* the state at the oldest AUM comes from a checkpoint, or from applying a
  parentless no-op / add-key AUM to the empty state;
* walking forward, among an AUM's children the next one is the one with the
  highest summed votes of distinct trusted signers (in the parent's state),
  then a remove-key, then the lowest hash. If it cannot be applied the walk
  fails: there is no falling back to a sibling.

Nothing here checks signatures: AUMs are verified before they are stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from tka._record import FrozenRecord
from tka.aum import AUM, HASH_SIZE, AUMKind, hash_to_text
from tka.errors import LimitExceeded, StateError, StorageError, TKAError
from tka.key import KEY_KIND_25519
from tka.limits import MAX_SCAN_ITERATIONS
from tka.state import State
from tka.storage import Storage

__all__ = [
    "ActiveChain",
    "Advancer",
    "advance_by_primary",
    "compute_active_chain",
    "compute_state_at",
    "fast_forward",
    "pick_next_aum",
]

#: Chooses the next AUM among the children of the current one: returns the
#: chosen AUM and the state after it, or ``(None, state)`` to stop.
Advancer = Callable[[State, list[AUM]], tuple[AUM | None, State]]


_setattr: Final = object.__setattr__


class ActiveChain(FrozenRecord):
    """The chain an authority follows: oldest stored AUM, head, state at head. Immutable."""

    __slots__ = ("head", "oldest", "state")
    _fields = __match_args__ = ("oldest", "head", "state")

    oldest: AUM
    head: AUM
    state: State

    def __init__(self, oldest: AUM, head: AUM, state: State) -> None:
        _setattr(self, "oldest", oldest)
        _setattr(self, "head", head)
        _setattr(self, "state", state)


class _Candidate:
    """A chain being walked back from a head; ``oldest`` moves as the walk goes."""

    __slots__ = ("chains_through_active", "head", "oldest")

    def __init__(self, oldest: AUM, head: AUM, chains_through_active: bool = False) -> None:
        self.oldest = oldest
        self.head = head
        self.chains_through_active = chains_through_active


def _need(storage: Storage, aum_hash: bytes, what: str) -> AUM:
    aum = storage.get(aum_hash)
    if aum is None:
        raise StorageError(f"{what} {hash_to_text(aum_hash)}: not stored")
    return aum


def _require_weighable(aum: AUM, state: State) -> None:
    """Refuse a sibling whose weight Tailscale cannot compute.

    Go's ``AUM.Weight`` panics on a signature whose key ID is not 32 bytes,
    and on any error from ``State.GetKey`` other than "no such key": a
    trusted key of an unknown kind met before the signer's key (or anywhere,
    when the signer is not trusted). Every sibling is weighed once there are
    two or more (a sort compares every element), so a node running
    Tailscale's code crashes on such a store. Only a damaged or hostile
    store holds these AUMs (Inform refuses them); opening it where every
    Tailscale node crashes would fork us from them, so it is refused here.
    """
    for i, sig in enumerate(aum.signatures or ()):
        kid = sig.key_id or b""
        if len(kid) != HASH_SIZE:
            raise StorageError(
                f"aum {aum.hash_text}: signature {i}: key id is {len(kid)} bytes, want 32 "
                "(Tailscale's fork choice panics on it, so its nodes cannot open this chain)"
            )
        for key in state.keys or ():
            if key.kind != KEY_KIND_25519:
                raise StorageError(
                    f"aum {aum.hash_text}: signature {i}: looking up its signer meets a "
                    f"trusted key of unknown kind {key.kind} (Tailscale's fork choice panics "
                    "on it, so its nodes cannot open this chain)"
                )
            if key.key_id == kid:
                break


def pick_next_aum(state: State, candidates: list[AUM]) -> AUM:
    """Tailscale's fork choice among sibling AUMs (``pickNextAUM``).

    Raises :class:`~tka.errors.StorageError` naming the AUM where Tailscale's
    own fork choice would crash (see :func:`_require_weighable`).
    """
    if len(candidates) == 1:
        return candidates[0]
    for c in candidates:
        _require_weighable(c, state)
    return min(
        candidates,
        key=lambda a: (-a.weight(state), a.message_kind != AUMKind.REMOVE_KEY, a.hash),
    )


def advance_by_primary(state: State, candidates: list[AUM]) -> tuple[AUM | None, State]:
    """Advance along the fork-choice winner; fails if the winner cannot apply."""
    if not candidates:
        return None, state
    aum = pick_next_aum(state, candidates)
    try:
        return aum, state.apply(aum)
    except StateError as exc:
        raise StateError(f"advancing state: {exc}") from None


def fast_forward(
    storage: Storage,
    start: State,
    advancer: Advancer = advance_by_primary,
    done: Callable[[AUM, State], bool] | None = None,
    max_iter: int = MAX_SCAN_ITERATIONS,
) -> tuple[AUM, State]:
    """Walk forward from the AUM *start* is positioned at until *done* or no child."""
    if start.last_aum_hash is None:
        raise StateError("invalid initial state: not positioned at an AUM")
    curs = _need(storage, start.last_aum_hash, "reading next")
    state = start
    for _ in range(max_iter):
        if done is not None and done(curs, state):
            return curs, state
        nxt, nxt_state = advancer(state, storage.children(curs.hash))
        if nxt is None:
            return curs, state
        curs, state = nxt, nxt_state
    raise LimitExceeded(f"iteration limit exceeded ({max_iter})")


def compute_state_at(storage: Storage, want: bytes, max_iter: int = MAX_SCAN_ITERATIONS) -> State:
    """The state after the stored AUM *want* (``computeStateAt``).

    Walks back to the nearest checkpoint or parentless AUM, then forward
    along the same path.
    """
    curs = _need(storage, want, "reading")
    path: set[bytes] = set()
    i = 0
    while True:
        if i > max_iter:
            raise LimitExceeded(f"iteration limit exceeded ({max_iter})")
        path.add(curs.hash)
        if curs.message_kind == AUMKind.CHECKPOINT:
            state = State.from_checkpoint(curs)
            break
        parent = curs.parent
        if parent is None:
            if curs.message_kind in (AUMKind.NO_OP, AUMKind.ADD_KEY):
                try:
                    state = State().apply(curs)
                except StateError as exc:
                    raise StateError(f"applying genesis: {exc}") from None
                break
            raise StateError(f"invalid genesis update: a {curs.kind_name} AUM cannot start a chain")
        curs = _need(storage, parent, "reading parent")
        i += 1

    def along_path(st: State, candidates: list[AUM]) -> tuple[AUM | None, State]:
        for c in candidates:
            if c.hash in path:
                try:
                    return c, st.apply(c)
                except StateError as exc:
                    raise StateError(f"advancing state: {exc}") from None
        raise StateError("no candidate matching path")

    _, state = fast_forward(
        storage, state, along_path, lambda a, _s: a.hash == want, max_iter=max_iter
    )
    if state.last_aum_hash != want:
        raise StateError("unexpected fast-forward outcome")
    return state


def _chain_candidates(
    storage: Storage, last_known_oldest: bytes | None, max_iter: int
) -> tuple[list[_Candidate], list[AUM] | None]:
    """The candidates walked back to their oldest ancestors.

    With a single head, also the path walked (newest first), else ``None``.
    """
    candidates = [_Candidate(h, h) for h in storage.heads()]
    candidates.sort(key=lambda c: c.oldest.hash)
    path = [candidates[0].head] if len(candidates) == 1 else None
    # Walk every candidate back one step per round, as Tailscale does, so the
    # cap counts rounds over the whole tree rather than per chain.
    rounds = 0
    again = True
    while again:
        if rounds >= max_iter:
            raise LimitExceeded(f"iteration limit exceeded ({max_iter})")
        again = False
        for c in candidates:
            parent_hash = c.oldest.parent
            if parent_hash is None:
                continue
            parent = storage.get(parent_hash)
            if parent is None:
                continue
            c.oldest = parent
            if path is not None:
                path.append(parent)
            if last_known_oldest is not None and parent.hash == last_known_oldest:
                c.chains_through_active = True
            again = True
        rounds += 1
    return candidates, path


def _active_ancestor(candidates: list[_Candidate]) -> bytes:
    through: dict[bytes, bool] = {}
    for c in candidates:
        # Later candidates overwrite earlier ones with the same ancestor, as
        # Go's map assignment does.
        through[c.oldest.hash] = c.chains_through_active
    if len(through) == 1:
        return next(iter(through))
    for h, ok in through.items():
        if ok:
            return h
    raise StateError("multiple distinct chains")


def compute_active_chain(
    storage: Storage, last_known_oldest: bytes | None, max_iter: int = MAX_SCAN_ITERATIONS
) -> ActiveChain:
    """Find the active chain in *storage* (``computeActiveChain``)."""
    # A store that can answer one walk from one view of itself (the
    # filesystem store: one check for other processes' changes, not one per
    # lookup) is walked through that view.
    snapshot = getattr(storage, "snapshot", None)
    if callable(snapshot):
        storage = snapshot()
    try:
        candidates, path = _chain_candidates(storage, last_known_oldest, max_iter)
    except TKAError as exc:
        raise type(exc)(f"computing candidates: {exc}") from None
    if not candidates:
        raise StateError("no chain candidates in AUM storage")
    linear = _single_path(storage, path)
    try:
        oldest_hash = _active_ancestor(candidates)
    except TKAError as exc:
        raise type(exc)(f"computing ancestor: {exc}") from None
    oldest = _need(storage, oldest_hash, "reading ancestor")
    try:
        state = compute_state_at(storage, oldest_hash, max_iter)
    except TKAError as exc:
        raise type(exc)(f"bootstrapping state: {exc}") from None
    try:
        if linear is not None and linear[-1].hash == oldest_hash:
            head, state = _forward_along(linear, state)
        else:
            head, state = fast_forward(storage, state, max_iter=max_iter)
    except TKAError as exc:
        raise type(exc)(f"fast forward: {exc}") from None
    return ActiveChain(oldest, head, state)


def _single_path(storage: Storage, path: list[AUM] | None) -> list[AUM] | None:
    """*path* when the walk forward can follow it alone, else ``None``.

    *path* is what :func:`_chain_candidates` walked back from the store's
    only head. With one head, every stored AUM is an ancestor of it (follow
    children from any AUM and you reach a head, and there is only one), and
    the walk back visited them all: so each AUM on the path has exactly one
    child, the next one on it, and the head has none. That holds when each
    child is listed once; a filesystem store holding an AUM under several
    names lists it as several children, so its walk asks the store.
    """
    repeats = getattr(storage, "lists_an_aum_twice", None)
    if path is None or (callable(repeats) and repeats()):
        return None
    return path


def _forward_along(path: list[AUM], state: State) -> tuple[AUM, State]:
    """:func:`fast_forward` with :func:`advance_by_primary` along a store's only path.

    *path* is newest first (see :func:`_single_path`) and *state* is at its
    oldest AUM. Each AUM has exactly one child, the next one on the path, so
    fork choice has nothing to choose and the walk applies the path in
    order: the same states, errors and messages as asking the store for
    children at every step, without the lookups (for a database-backed
    store, half the queries of opening a chain). The walk back that found
    *path* already enforced the iteration cap.
    """
    if state.last_aum_hash != path[-1].hash:
        raise StateError("unexpected fast-forward start")
    for i in range(len(path) - 2, -1, -1):
        try:
            state = state.apply(path[i])
        except StateError as exc:
            raise StateError(f"advancing state: {exc}") from None
    return path[0], state
