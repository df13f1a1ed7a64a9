"""Property tests of the wire model: round trips, and untrusted bytes only ever raise tka errors."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tka import codec
from tka.aum import AUM, AUMKind, Signature, hash_from_text, hash_to_text
from tka.authkey import decode_wrapped_authkey
from tka.errors import DecodeError, TKAError
from tka.key import Key
from tka.sig import NodeKeySignature, SigKind
from tka.state import State
from tka.sync import SyncOffer

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

b32 = st.binary(min_size=32, max_size=32)
meta = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=1, max_size=4),
)
keys = st.builds(
    Key,
    kind=st.integers(0, 255),
    votes=st.integers(0, 2**64 - 1),
    public=st.one_of(st.none(), st.binary(max_size=40)),
    meta=meta,
)
states = st.builds(
    State,
    last_aum_hash=st.one_of(st.none(), b32),
    disablement_values=st.one_of(st.none(), st.lists(b32, max_size=4).map(tuple)),
    keys=st.one_of(st.none(), st.lists(keys, max_size=4).map(tuple)),
    state_id1=st.integers(0, 2**64 - 1),
    state_id2=st.integers(0, 2**64 - 1),
)
signatures = st.builds(
    Signature,
    key_id=st.one_of(st.none(), st.binary(max_size=33)),
    signature=st.one_of(st.none(), st.binary(max_size=65)),
)
aums = st.builds(
    AUM,
    message_kind=st.integers(0, 255),
    prev_aum_hash=st.one_of(st.none(), st.binary(min_size=1, max_size=40)),
    key=st.one_of(st.none(), keys),
    key_id=st.one_of(st.none(), st.binary(min_size=1, max_size=33)),
    state=st.one_of(st.none(), states),
    votes=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    meta=meta,
    signatures=st.one_of(st.none(), st.lists(signatures, min_size=1, max_size=3).map(tuple)),
)


def _nks(depth: int) -> st.SearchStrategy[NodeKeySignature]:
    nested = st.none() if depth == 0 else st.one_of(st.none(), _nks(depth - 1))
    return st.builds(
        NodeKeySignature,
        sig_kind=st.integers(0, 255),
        pubkey=st.one_of(st.none(), st.binary(min_size=1, max_size=34)),
        key_id=st.one_of(st.none(), st.binary(min_size=1, max_size=32)),
        signature=st.one_of(st.none(), st.binary(min_size=1, max_size=64)),
        nested=nested,
        wrapping_pubkey=st.one_of(st.none(), st.binary(min_size=1, max_size=32)),
    )


@given(aums)
def test_aum_round_trip_is_stable(aum: AUM) -> None:
    data = aum.to_bytes()
    again = AUM.from_bytes(data)
    # Decoding canonical bytes and encoding again gives the same bytes and hash.
    assert again.to_bytes() == data
    assert again.hash == aum.hash
    assert again.sig_hash == aum.sig_hash


@given(states)
def test_state_round_trip_through_a_checkpoint(state: State) -> None:
    aum = AUM(AUMKind.CHECKPOINT, state=state)
    again = AUM.from_bytes(aum.to_bytes())
    assert again.state is not None
    assert again.state.to_cbor_obj() == state.to_cbor_obj()


@given(_nks(4))
def test_node_key_signature_round_trip(sig: NodeKeySignature) -> None:
    data = sig.to_bytes()
    again = NodeKeySignature.from_bytes(data)
    assert again.to_bytes() == data
    assert again.sig_hash == sig.sig_hash


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_tka_errors(data: bytes) -> None:
    for decode in (AUM.from_bytes, NodeKeySignature.from_bytes, codec.parse):
        with contextlib.suppress(TKAError):
            decode(data)


def _seed_inputs() -> list[bytes]:
    out = []
    for name, field in (("aum", "input_hex"), ("nks", "sig_hex")):
        doc = json.loads((VECTORS / f"{name}.json").read_text())
        out += [bytes.fromhex(c[field]) for c in doc["cases"] if c.get("decode_ok")][:40]
    return out


SEEDS = _seed_inputs()


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 3),
)
def test_mutated_valid_inputs_raise_only_tka_errors(
    seed: bytes, edits: list[tuple[int, int]], mode: int
) -> None:
    data = bytearray(seed)
    for pos, value in edits:
        i = pos % (len(data) + 1)
        if mode == 0 and i < len(data):
            data[i] = value  # overwrite
        elif mode == 1:
            data.insert(i, value)  # insert
        elif mode == 2 and i < len(data):
            del data[i]  # delete
        else:
            data = data[:i]  # truncate
    for decode in (AUM.from_bytes, NodeKeySignature.from_bytes):
        try:
            value = decode(bytes(data))
        except TKAError:
            continue
        # Whatever decodes re-encodes and hashes without error.
        value.to_bytes()


@given(st.text(max_size=80))
def test_hash_text_parser_raises_only_decode_errors(text: str) -> None:
    try:
        h = hash_from_text(text)
    except DecodeError:
        return
    assert len(h) == 32
    assert hash_from_text(hash_to_text(h)) == h


@given(st.text(max_size=60), st.lists(st.text(max_size=60), max_size=3))
def test_sync_offer_text_parser_raises_only_decode_errors(head: str, ancestors: list[str]) -> None:
    with contextlib.suppress(DecodeError):
        SyncOffer.from_text(head, ancestors)


@given(st.text(max_size=200))
def test_wrapped_authkey_parser_never_raises(text: str) -> None:
    got = decode_wrapped_authkey(text)
    assert got.is_wrapped or got.auth_key == text


def test_unknown_aum_kinds_are_valid_and_act_as_no_ops() -> None:
    parent = bytes(range(32))
    aum = AUM(200, prev_aum_hash=parent)
    aum.static_validate()
    state = State(last_aum_hash=parent, keys=(Key.ed25519(bytes(32)),))
    after = state.apply(aum)
    assert after.keys == state.keys
    assert after.last_aum_hash == aum.hash


def test_signature_kinds_round_trip_by_name() -> None:
    for kind in SigKind:
        sig = NodeKeySignature(int(kind), pubkey=b"np" + bytes(32))
        assert NodeKeySignature.from_bytes(sig.to_bytes()).sig_kind == kind


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# Near misses of a hash's text: the alphabet, characters int() would take in
# base 32 (lower case, 0, 1, 8, 9, other scripts' digits, "_", spaces,
# signs), and anything else.
_NEAR = st.sampled_from(list(_ALPHABET) + list("abcxyz0189_ +-=\r\n\t\u0665\uff11\u00e9"))


@given(
    text=st.one_of(
        st.text(_NEAR, min_size=50, max_size=54),
        st.lists(st.sampled_from(list(_ALPHABET)), min_size=52, max_size=52).map("".join),
        st.text(max_size=60),
    )
)
@settings(max_examples=600)
def test_plain_hash_text_is_exactly_52_characters_of_the_alphabet(text: str) -> None:
    """The fast parse of hash text (every AUM file name) against a plain reading of the rule."""
    import base64

    from tka.aum import _plain_hash_text_value

    plain = len(text) == 52 and all(c in _ALPHABET for c in text)
    got = _plain_hash_text_value(text)
    if not plain:
        assert got is None
        return
    assert got == base64.b32decode(text + "====")
    assert hash_from_text(text) == got
