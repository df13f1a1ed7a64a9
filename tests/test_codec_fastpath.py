"""The fast decoding paths agree with the strict decoder on every input.

``AUM.from_bytes`` and ``NodeKeySignature.from_bytes`` first try cbor2's C
decoder with a narrow filler and a byte-exact re-encoding check, and fall back
to the strict parser. These tests hold the fast path to its promise: whenever
it returns a value, the strict path returns the same value (same types, same
field values), the input is the value's canonical encoding, and so the cached
canonical bytes and hash are right. They also check the fast path is actually
taken for canonical inputs, else it would be dead weight.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tka import aum as aum_module
from tka import codec
from tka import sig as sig_module
from tka.aum import AUM, Signature, blake2s
from tka.errors import DecodeError
from tka.key import Key
from tka.sig import NodeKeySignature
from tka.state import State

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "vectors"
BENCH = ROOT / "bench" / "data" / "workloads.json"  # a copy of the shared workloads

# -- strategies ----------------------------------------------------------------

b32 = st.binary(min_size=32, max_size=32)
meta = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=4),
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
    last_aum_hash=st.one_of(st.none(), b32, st.binary(max_size=40)),
    disablement_values=st.one_of(st.none(), st.lists(b32, max_size=3).map(tuple)),
    keys=st.one_of(st.none(), st.lists(keys, max_size=3).map(tuple)),
    state_id1=st.one_of(st.just(0), st.integers(0, 2**64 - 1)),
    state_id2=st.one_of(st.just(0), st.integers(0, 2**64 - 1)),
)
signatures = st.builds(
    Signature,
    key_id=st.one_of(st.none(), st.binary(max_size=33)),
    signature=st.one_of(st.none(), st.binary(max_size=65)),
)
aums = st.builds(
    AUM,
    message_kind=st.integers(0, 255),
    prev_aum_hash=st.one_of(st.none(), st.binary(max_size=40)),
    key=st.one_of(st.none(), keys),
    key_id=st.one_of(st.none(), st.binary(max_size=33)),
    state=st.one_of(st.none(), states),
    votes=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    meta=meta,
    signatures=st.one_of(st.none(), st.lists(signatures, max_size=3).map(tuple)),
)


def _nks(depth: int) -> st.SearchStrategy[NodeKeySignature]:
    nested = st.none() if depth == 0 else st.one_of(st.none(), _nks(depth - 1))
    return st.builds(
        NodeKeySignature,
        sig_kind=st.integers(0, 255),
        pubkey=st.one_of(st.none(), st.binary(max_size=34)),
        key_id=st.one_of(st.none(), st.binary(max_size=32)),
        signature=st.one_of(st.none(), st.binary(max_size=64)),
        nested=nested,
        wrapping_pubkey=st.one_of(st.none(), st.binary(max_size=32)),
    )


nks_values = _nks(3)

# Values that look like plain ones to Python's == but are not (or that cbor2
# produces from tags and other items Go refuses or reads differently).
ODD_VALUES: list[Any] = [
    True,
    False,
    1.0,
    2.0,
    0.0,
    -1,
    2**64,
    -(2**64) - 1,
    b"",
    "",
    "1",
    {},
    [],
    None,
    cbor2.undefined,
    cbor2.CBORSimpleValue(16),
    cbor2.CBORTag(2, b"\x05"),
    cbor2.CBORTag(24, b"\x01"),
    cbor2.CBORTag(99, 1),
    datetime.datetime(2013, 3, 21, 20, 4, tzinfo=datetime.UTC),
    [1, 2, 3],
    [b"\x00" * 32],
    {1: 1, 2: 1, 3: None},
    {1: None, 2: None},
    {"a": "b"},
    {"b": "a", "a": "b"},
]
odd = st.sampled_from(ODD_VALUES)

# -- the check -------------------------------------------------------------------


def _strict_aum(data: bytes) -> AUM:
    return AUM.from_cbor_obj(codec.parse(data))


def _strict_nks(data: bytes) -> NodeKeySignature:
    return NodeKeySignature.from_cbor_obj(codec.parse(data))


def check_aum(data: bytes) -> bool:
    """Assert the fast path is right on *data*; return whether it was taken."""
    fast = aum_module._from_canonical(data)
    if fast is None:
        # Falling back is always allowed: the strict path decides.
        return False
    strict = _strict_aum(data)  # must not raise when the fast path accepted
    # repr compares exact types too (True vs 1, 1.0 vs 1, dict order).
    assert repr(fast) == repr(strict)
    assert fast == strict
    # The input is the canonical encoding (by the generic, sorting encoder).
    assert codec.encode(strict.to_cbor_obj()) == data
    assert fast.canonical == data
    assert fast.hash == blake2s(data) == strict.hash
    assert fast.sig_hash == strict.sig_hash
    return True


def check_nks(data: bytes) -> bool:
    """As :func:`check_aum` for node-key signatures."""
    fast = sig_module._from_canonical(data)
    if fast is None:
        return False
    strict = _strict_nks(data)
    assert repr(fast) == repr(strict)
    assert fast == strict
    assert codec.encode(strict.to_cbor_obj()) == data
    assert fast.canonical == data
    assert fast.sig_hash == strict.sig_hash
    return True


def _round_trips_aum(data: bytes) -> bool:
    try:
        value = _strict_aum(data)
    except DecodeError:
        return False
    return codec.encode(value.to_cbor_obj()) == data


def _round_trips_nks(data: bytes) -> bool:
    try:
        value = _strict_nks(data)
    except DecodeError:
        return False
    return codec.encode(value.to_cbor_obj()) == data


# -- canonical inputs take the fast path, and agree -------------------------------


@settings(max_examples=400)
@given(aums)
def test_canonical_aums_take_the_fast_path(aum: AUM) -> None:
    obj = aum.to_cbor_obj()
    data = codec.encode(obj)
    # The wire types build their maps in canonical order.
    assert codec.encode_ordered(obj) == data
    assert aum.to_bytes() == data
    taken = check_aum(data)
    # Whatever survives a strict round trip unchanged must not be refused.
    assert taken == _round_trips_aum(data)


@settings(max_examples=400)
@given(nks_values)
def test_canonical_signatures_take_the_fast_path(sig: NodeKeySignature) -> None:
    obj = sig.to_cbor_obj()
    data = codec.encode(obj)
    assert codec.encode_ordered(obj) == data
    assert sig.to_bytes() == data
    taken = check_nks(data)
    assert taken == _round_trips_nks(data)


# -- mutated trees: every odd value in every place ----------------------------------


def _mutate_tree(node: Any, draw: Any, depth: int = 0) -> Any:
    """Randomly change one place in a to_cbor_obj tree (or leave it)."""
    if isinstance(node, dict) and node and depth < 6:
        items = list(node.items())
        action = draw(st.integers(0, 6))
        i = draw(st.integers(0, len(items) - 1))
        k, v = items[i]
        if action == 0:  # recurse into one value
            items[i] = (k, _mutate_tree(v, draw, depth + 1))
        elif action == 1:  # replace a value
            items[i] = (k, draw(odd))
        elif action == 2:  # drop a pair
            del items[i]
        elif action == 3:  # respell a key
            numeric = isinstance(k, int)
            spellings = [True, False, 1.0, float(k) if numeric else 0.5, str(k)]
            spelled = draw(st.sampled_from([*spellings, k + 100 if numeric else "x"]))
            items[i] = (spelled, v)
        elif action == 4:  # add an unknown or known key
            items.append((draw(st.sampled_from([0, 8, 12, 22, 24, 100, 23, 7, 1, "z"])), draw(odd)))
        elif action == 5:  # reorder
            items.reverse()
        # action 6: unchanged
        out: dict[Any, Any] = {}
        for key, value in items:
            with contextlib.suppress(TypeError):  # unhashable keys
                out[key] = value
        return out
    if isinstance(node, list) and node and depth < 6:
        i = draw(st.integers(0, len(node) - 1))
        copy = list(node)
        copy[i] = _mutate_tree(copy[i], draw, depth + 1) if draw(st.booleans()) else draw(odd)
        return copy
    if draw(st.booleans()):
        return draw(odd)
    return node


def _encodings(tree: Any) -> list[bytes]:
    out = []
    for canonical in (False, True):
        with contextlib.suppress(Exception):  # values cbor2 cannot encode
            out.append(cbor2.dumps(tree, canonical=canonical))
    return out


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(aums, st.data())
def test_mutated_aum_trees_agree(aum: AUM, data: st.DataObject) -> None:
    tree = _mutate_tree(aum.to_cbor_obj(), data.draw)
    for encoded in _encodings(tree):
        check_aum(encoded)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(nks_values, st.data())
def test_mutated_signature_trees_agree(sig: NodeKeySignature, data: st.DataObject) -> None:
    tree = _mutate_tree(sig.to_cbor_obj(), data.draw)
    for encoded in _encodings(tree):
        check_nks(encoded)


# -- mutated bytes ----------------------------------------------------------------


def _seeds() -> list[bytes]:
    out = []
    for name, field in (("aum", "input_hex"), ("nks", "sig_hex")):
        doc = json.loads((VECTORS / f"{name}.json").read_text())
        out += [bytes.fromhex(c[field]) for c in doc["cases"]][:60]
    if BENCH.exists():
        w = json.loads(BENCH.read_text())
        out += [bytes.fromhex(h) for h in w["chain_hex"][:3]]
        out.append(bytes.fromhex(w["node_key_authorized"]["direct"]["sig_hex"]))
        out.append(bytes.fromhex(w["node_key_authorized"]["rotation_2deep"]["sig_hex"]))
    return out


SEEDS = _seeds()


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 3),
)
def test_mutated_bytes_agree(seed: bytes, edits: list[tuple[int, int]], mode: int) -> None:
    data = bytearray(seed)
    for pos, value in edits:
        i = pos % (len(data) + 1)
        if mode == 0 and i < len(data):
            data[i] = value
        elif mode == 1:
            data.insert(i, value)
        elif mode == 2 and i < len(data):
            del data[i]
        else:
            data = data[:i]
    check_aum(bytes(data))
    check_nks(bytes(data))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_agree(data: bytes) -> None:
    check_aum(data)
    check_nks(data)


def test_seeds_that_are_canonical_take_the_fast_path() -> None:
    taken = 0
    for seed in SEEDS:
        if _round_trips_aum(seed):
            assert check_aum(seed)
            taken += 1
        if _round_trips_nks(seed):
            assert check_nks(seed)
            taken += 1
    assert taken > 10


# -- hand-picked traps ---------------------------------------------------------------

_GOOD_AUM = AUM(
    4,
    prev_aum_hash=bytes(range(32)),
    key_id=bytes(32),
    votes=5,
    signatures=(Signature(bytes(32), bytes(64)),),
)


def _spliced(tree: dict[Any, Any]) -> bytes:
    return cbor2.dumps(tree)


TRAPS: dict[str, bytes] = {
    # Trailing bytes: cbor2.loads ignores them, Go refuses them.
    "trailing byte": _GOOD_AUM.to_bytes() + b"\x00",
    # Non-shortest head for the kind.
    "long int head": b"\xa2\x01\x18\x04\x02\xf6",
    # Indefinite-length map and byte string.
    "indefinite map": b"\xbf\x01\x04\x02\xf6\xff",
    "indefinite bytes": b"\xa2\x01\x04\x02\x5f\x41\x00\xff",
    # Duplicate key.
    "duplicate key": b"\xa3\x01\x04\x02\xf6\x01\x04",
    # Keys that equal ints in Python but are not ints on the wire.
    "bool key": b"\xa2\xf5\x04\x02\xf6",
    "float key": b"\xa2\xf9\x3c\x00\x04\x02\xf6",
    # A bignum tag for votes (cbor2 turns it into a plain int).
    "bignum votes": _spliced({1: 4, 2: None, 4: b"k", 6: cbor2.CBORTag(2, b"\x05")}),
    # undefined where null is allowed: Go reads it as nil, cbor2 as a sentinel.
    "undefined prev": b"\xa2\x01\x04\x02\xf7",
    # Text key spelling a field number.
    "text key": b"\xa2\x61\x31\x04\x02\xf6",
    # A tag around a whole AUM.
    "tagged aum": b"\xd8\x63" + _GOOD_AUM.to_bytes(),
    # Empty signatures list (the encoder omits it).
    "empty signatures": _spliced({1: 4, 2: None, 23: []}),
    # String references: shorter encodings of repeated byte strings.
    "stringref": bytes.fromhex("d90100") + _spliced({1: 4, 2: b"abc", 4: cbor2.CBORTag(25, 0)}),
    # A 31-byte last-AUM hash (Go zero-pads it).
    "short last hash": AUM(5, state=State(bytes(31), (bytes(32),), (), 0, 0)).to_bytes(),
}


@pytest.mark.parametrize("name", sorted(TRAPS))
def test_traps_are_left_to_the_strict_path(name: str) -> None:
    data = TRAPS[name]
    assert aum_module._from_canonical(data) is None
    assert sig_module._from_canonical(data) is None
    # And from_bytes still gives the strict answer.
    try:
        expected: Any = _strict_aum(data)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as info:
            AUM.from_bytes(data)
        assert str(info.value) == str(exc)
    else:
        assert repr(AUM.from_bytes(data)) == repr(expected)


def test_too_deep_signature_is_left_to_the_strict_path() -> None:
    sig = NodeKeySignature(1, pubkey=b"np" + bytes(32))
    for _ in range(16):
        sig = NodeKeySignature(2, pubkey=b"np" + bytes(32), nested=sig)
    data = sig.to_bytes()  # 17 nested maps: one past the cap
    assert sig_module._from_canonical(data) is None
    with pytest.raises(DecodeError):
        NodeKeySignature.from_bytes(data)
    # One level less is accepted by both.
    assert sig.nested is not None
    assert check_nks(sig.nested.to_bytes())


# -- digests computed from canonical bytes -------------------------------------------


@settings(max_examples=300)
@given(aums)
def test_aum_sig_hash_matches_encoding_without_signatures(aum: AUM) -> None:
    want = blake2s(codec.encode(aum.to_cbor_obj(with_signatures=False)))
    assert aum.sig_hash == want
    # Decoding may normalise (a short last-AUM hash is zero-padded, ...).
    decoded = AUM.from_bytes(aum.to_bytes())
    assert decoded.sig_hash == blake2s(codec.encode(decoded.to_cbor_obj(with_signatures=False)))


@settings(max_examples=300)
@given(nks_values)
def test_nks_sig_hash_matches_encoding_without_signature(sig: NodeKeySignature) -> None:
    level: NodeKeySignature | None = sig
    while level is not None:
        assert level.sig_hash == blake2s(codec.encode(level.to_cbor_obj(with_signature=False)))
        level = level.nested
    # Nested levels of a decoded signature get their canonical bytes as
    # slices of their parent's: those must be right too. (Decoding may
    # normalise: an empty byte string is omitted, so it comes back as None.)
    decoded: NodeKeySignature | None = NodeKeySignature.from_bytes(sig.to_bytes())
    while decoded is not None:
        assert decoded.canonical == codec.encode(decoded.to_cbor_obj())
        want = blake2s(codec.encode(decoded.to_cbor_obj(with_signature=False)))
        assert decoded.sig_hash == want
        decoded = decoded.nested


# -- the filesystem store's entry files -----------------------------------------------


def _strict_entry(data: bytes) -> tuple[AUM | None, int, int]:
    from tka._schema import fill_struct
    from tka.storage import fs

    tree, _ = codec.parse_first(data)
    v = fill_struct(tree, fs._ENTRY_FIELDS, "aum file")
    return v["aum"], v["created_unix"], v["purged_unix"]


def check_entry(data: bytes) -> bool:
    from tka.storage import fs

    fast = fs._decode_canonical_entry(data)
    if fast is None:
        return False
    aum, created, purged = _strict_entry(data)
    assert repr(fast) == repr((aum, created, purged))
    assert aum is not None
    assert fast[0].canonical == codec.encode(aum.to_cbor_obj())
    assert fast[0].hash == aum.hash
    assert fs.encode_entry(aum, created, purged) == data
    return True


times = st.one_of(st.just(0), st.integers(1, 2**63 - 1), st.integers(-(2**63), 2**64))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(aums, times, times, st.data())
def test_entry_files_agree(aum: AUM, created: int, purged: int, data: st.DataObject) -> None:
    from tka.storage import fs

    try:
        written = fs.encode_entry(aum, created, purged)
    except Exception:
        written = None
    if written is not None and 0 <= created < 2**63 and 0 <= purged < 2**63:
        # What the store writes for in-range times takes the fast path
        # whenever the AUM itself round-trips.
        assert check_entry(written) == _round_trips_aum(aum.to_bytes())
    tree: dict[Any, Any] = {2: aum.to_cbor_obj()}
    if created:
        tree[3] = created
    if purged:
        tree[4] = purged
    for encoded in _encodings(_mutate_tree(tree, data.draw)):
        check_entry(encoded)
        check_entry(encoded + b"\x00")  # trailing bytes: left to the strict path


# -- the direct-signature layout (decoded by slicing) ----------------------------------


@settings(max_examples=300, deadline=None)
@given(
    node_key=b32,
    key_id=b32,
    signature=st.binary(min_size=64, max_size=64),
    wrapping=st.none() | b32,
    edits=st.lists(st.tuples(st.integers(0, 176), st.integers(0, 255)), max_size=3),
)
def test_direct_layout_agrees_with_the_strict_decoder(
    node_key: bytes,
    key_id: bytes,
    signature: bytes,
    wrapping: bytes | None,
    edits: list[tuple[int, int]],
) -> None:
    """Bytes the layout accepts are the canonical encoding of the fields it sliced."""
    sig = NodeKeySignature(1, b"np" + node_key, key_id, signature, wrapping_pubkey=wrapping)
    data = bytearray(sig.to_bytes())
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    fast = sig_module._from_direct_layout(bytes(data))
    if not edits:
        assert fast is not None and fast == sig  # Tailscale's layout is taken
    if fast is not None:
        assert check_nks(bytes(data))
        assert fast.sig_hash == _strict_nks(bytes(data)).sig_hash


def test_direct_layout_refuses_other_shapes() -> None:
    """A layout byte changed (a head, a key, the kind, the size) is left to CBOR decoding."""
    data = NodeKeySignature(1, b"np" + bytes(32), bytes(range(32)), bytes(64)).to_bytes()
    assert sig_module._from_direct_layout(data) is not None
    for pos in (0, 1, 2, 3, 4, 5, 40, 41, 42, 75, 76, 77):
        changed = bytearray(data)
        changed[pos] ^= 0x01
        assert sig_module._from_direct_layout(bytes(changed)) is None, pos
    assert sig_module._from_direct_layout(data + b"\x00") is None
    assert sig_module._from_direct_layout(data[:-1]) is None
