"""State.apply of update-key AUMs against a line-by-line reading of Go's applyVerifiedAUM.

The update-key branch of State.apply is written for speed (it runs for most
AUMs of a long chain when it is opened); this checks it against the plain
form of Go's steps on keys of every awkward sort: unknown kinds before and
after the key, the same ID twice, votes and meta that fail validation.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tka.aum import AUM, AUMKind
from tka.errors import StateError, TKAError, ValidationError
from tka.key import Key
from tka.state import State

ID_A, ID_B = b"\xaa" * 32, b"\xbb" * 32


def _go_update_key(state: State, update: AUM) -> State:
    """Go's AUMUpdateKey case, step by step (GetKey, apply fields, validate, replace all)."""
    key_id = update.key_id or b""
    found = None
    for k in state.keys or ():
        if k.key_id == key_id:  # a key of an unknown kind raises, as GetKey's error
            found = k
            break
    if found is None:
        raise StateError("update-key AUM names a key that is not trusted")
    new = Key(
        found.kind,
        found.votes if update.votes is None else update.votes,
        found.public,
        found.meta if update.meta is None else update.meta,
    )
    try:
        new.static_validate()
    except ValidationError as exc:
        raise StateError(f"updated key fails validation: {exc}") from None
    keys = tuple(new if k.key_id == key_id else k for k in state.keys or ())
    return State(update.hash, state.disablement_values, keys, state.state_id1, state.state_id2)


def _outcome(apply: object, state: State, update: AUM) -> object:
    try:
        return apply(state, update)  # type: ignore[operator]
    except TKAError as exc:
        return (type(exc).__name__, str(exc))


KEYS = [
    Key(1, 1, ID_A),
    Key(1, 2, ID_B),
    Key(1, 3, ID_A),  # the same ID again
    Key(9, 1, b"\xcc" * 32),  # a kind tka cannot use
    Key(1, 1, None),
]


@given(
    keys=st.lists(st.sampled_from(KEYS), max_size=5),
    key_id=st.sampled_from([ID_A, ID_B, b"\xdd" * 32, b""]),
    votes=st.sampled_from([None, 0, 1, 7, 5000]),
    meta=st.sampled_from([None, {"k": "v"}, {"k": "x" * 600}]),
)
@settings(max_examples=400, deadline=None)
def test_update_key_matches_gos_steps(
    keys: list[Key], key_id: bytes, votes: int | None, meta: dict[str, str] | None
) -> None:
    state = State(b"\x01" * 32, (b"\x02" * 32,), tuple(keys), 1, 2)
    update = AUM(
        AUMKind.UPDATE_KEY, prev_aum_hash=b"\x01" * 32, key_id=key_id, votes=votes, meta=meta
    )
    assert _outcome(State.apply, state, update) == _outcome(_go_update_key, state, update)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_every_order_of_awkward_keys(order: tuple[int, ...]) -> None:
    state = State(None, (b"\x02" * 32,), tuple(KEYS[i] for i in order), 0, 0)
    for votes in (None, 0, 4):
        update = AUM(AUMKind.UPDATE_KEY, key_id=ID_A, votes=votes)
        assert _outcome(State.apply, state, update) == _outcome(_go_update_key, state, update)
