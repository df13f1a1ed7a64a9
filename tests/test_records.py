"""The wire value types behave as the frozen dataclasses they replaced (tka/_record.py)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from tka._record import FrozenInstanceError, FrozenRecord
from tka.aum import AUM, AUMKind, Signature
from tka.chain import ActiveChain
from tka.key import Key
from tka.state import State
from tka.statedir import SignatureRecord

PUB = bytes(range(32))
H = bytes([7]) * 32


def _values() -> list[FrozenRecord]:
    key = Key(1, 2, PUB)
    state = State(H, (bytes(32),), (key,), 3, 4)
    sig = Signature(PUB, bytes(64))
    aum = AUM(AUMKind.NO_OP, H, signatures=(sig,))
    return [
        key,
        state,
        sig,
        aum,
        AUM(AUMKind.CHECKPOINT, state=state.replace(last_aum_hash=None)),
        ActiveChain(aum, aum, state),
        SignatureRecord("nodekey:00", b"sig", "tlpub:00"),
    ]


VALUES = _values()
IDS = [type(v).__name__ for v in VALUES]


@pytest.mark.parametrize("value", VALUES, ids=IDS)
def test_equal_fields_make_equal_values_with_equal_hashes(value: FrozenRecord) -> None:
    twin = type(value)(*(getattr(value, f) for f in value._fields))
    assert twin is not value
    assert twin == value
    assert (twin != value) is False
    assert hash(twin) == hash(value)
    # The hash of the field values, as a frozen dataclass's.
    assert hash(value) == hash(tuple(getattr(value, f) for f in value._fields))


def test_a_different_field_makes_a_different_value() -> None:
    key = Key(1, 2, PUB)
    assert key != Key(1, 3, PUB)
    assert State(H) != State(H, state_id2=1)
    assert AUM(AUMKind.NO_OP, H) != AUM(AUMKind.NO_OP, bytes(32))
    assert Signature(PUB, None) != Signature(None, PUB)


def test_only_the_same_class_compares_equal() -> None:
    sig = Signature(PUB, bytes(64))

    class Other(FrozenRecord):
        __slots__ = ("key_id", "signature")
        _fields = ("key_id", "signature")

        def __init__(self, key_id: bytes, signature: bytes) -> None:
            object.__setattr__(self, "key_id", key_id)
            object.__setattr__(self, "signature", signature)

    assert sig != Other(PUB, bytes(64))
    assert sig != (PUB, bytes(64))
    assert sig.__eq__(1) is NotImplemented


def test_values_holding_a_dict_cannot_be_hashed() -> None:
    # As before: a frozen dataclass hashes its fields, and a dict has no hash.
    with pytest.raises(TypeError):
        hash(Key(1, 1, PUB, {"name": "a"}))
    with pytest.raises(TypeError):
        hash(AUM(AUMKind.UPDATE_KEY, H, key_id=PUB, meta={"name": "a"}))
    assert Key(1, 1, PUB, {"name": "a"}) == Key(1, 1, PUB, {"name": "a"})


def test_repr_names_every_field_as_a_dataclass_did() -> None:
    assert repr(Key(1, 2, b"ab")) == "Key(kind=1, votes=2, public=b'ab', meta=None)"
    assert repr(Signature(b"k", None)) == "Signature(key_id=b'k', signature=None)"
    assert repr(State()) == (
        "State(last_aum_hash=None, disablement_values=None, keys=None, state_id1=0, state_id2=0)"
    )
    assert repr(AUM(3)) == (
        "AUM(message_kind=3, prev_aum_hash=None, key=None, key_id=None, state=None, "
        "votes=None, meta=None, signatures=None)"
    )


@pytest.mark.parametrize("value", VALUES, ids=IDS)
def test_fields_cannot_be_set_or_deleted(value: FrozenRecord) -> None:
    field = value._fields[0]
    before = getattr(value, field)
    with pytest.raises(FrozenInstanceError, match=f"cannot assign to field '{field}'"):
        setattr(value, field, 5)
    with pytest.raises(AttributeError):
        delattr(value, field)
    with pytest.raises(AttributeError):
        value.not_a_field = 5
    assert getattr(value, field) is before


def test_frozen_error_is_an_attribute_error() -> None:
    # Code written for dataclasses.FrozenInstanceError catches AttributeError.
    assert issubclass(FrozenInstanceError, AttributeError)


@pytest.mark.parametrize("value", VALUES, ids=IDS)
def test_values_survive_pickle_and_copy(value: FrozenRecord) -> None:
    assert pickle.loads(pickle.dumps(value)) == value
    assert copy.copy(value) == value
    assert copy.deepcopy(value) == value


def test_a_copied_aum_has_the_same_hash_and_bytes() -> None:
    aum = AUM.from_bytes(AUM(AUMKind.NO_OP, H).to_bytes())
    assert "hash" in aum.__dict__  # decoding primed the cache
    again = pickle.loads(pickle.dumps(aum))
    assert again.hash == aum.hash
    assert again.to_bytes() == aum.to_bytes()


def test_constructors_take_positional_and_keyword_forms_with_the_old_defaults() -> None:
    assert Key(1, 2, PUB) == Key(kind=1, votes=2, public=PUB, meta=None)
    assert State() == State(None, None, None, 0, 0)
    assert AUM(AUMKind.NO_OP) == AUM(
        message_kind=AUMKind.NO_OP,
        prev_aum_hash=None,
        key=None,
        key_id=None,
        state=None,
        votes=None,
        meta=None,
        signatures=None,
    )
    with pytest.raises(TypeError):
        Key(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        State(nope=1)  # type: ignore[call-arg]


def test_match_statements_see_the_fields_in_order() -> None:
    value: Any = Key(1, 2, PUB)
    match value:
        case Key(kind, votes, public, meta):
            assert (kind, votes, public, meta) == (1, 2, PUB, None)
        case _:
            pytest.fail("Key did not match positionally")


def test_state_replace_changes_only_what_it_is_given() -> None:
    key = Key(1, 2, PUB)
    state = State(H, (bytes(32),), (key,), 3, 4)
    assert state.replace() == state
    assert state.replace(last_aum_hash=None) == State(None, (bytes(32),), (key,), 3, 4)
    assert state.replace(keys=(), state_id2=9) == State(H, (bytes(32),), (), 3, 9)


def test_aum_replace_drops_the_cached_hash() -> None:
    aum = AUM(AUMKind.NO_OP, H)
    moved = aum.replace(prev_aum_hash=bytes(32))
    assert moved == AUM(AUMKind.NO_OP, bytes(32))
    assert moved.hash != aum.hash
    assert moved.hash == AUM.from_bytes(moved.to_bytes()).hash
    sig = Signature(PUB, bytes(64))
    signed = aum.with_signatures((sig,))
    assert signed == aum.replace(signatures=(sig,))
    assert signed.sig_hash == aum.hash  # signatures stay out of the sig-hash
    assert signed.replace(signatures=None) == aum
