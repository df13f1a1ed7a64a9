"""Tests for tka.nlkeys: tailnet-lock and node key text/binary forms."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tka.errors import DecodeError
from tka.nlkeys import NLPrivate, NLPublic, NodePublic

VECTORS = Path(__file__).parent.parent / "vectors" / "keys.json"


def _cases(case_type: str) -> list[dict[str, Any]]:
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    return [c for c in doc["cases"] if c["case_type"] == case_type]


key32 = st.binary(min_size=32, max_size=32)


# --- vectors -----------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("nl_key"), ids=lambda c: c["name"])
def test_nl_key_vectors(case: dict[str, Any]) -> None:
    priv = NLPrivate.from_seed(bytes.fromhex(case["seed_hex"]))
    assert priv.raw.hex() == case["private_hex"]
    assert priv.seed.hex() == case["seed_hex"]
    assert priv.text() == case["private_text"]
    assert priv.public().text() == case["public_text"]
    assert priv.public().cli_text() == case["public_cli_text"]
    assert priv.key_id.hex() == case["key_id_hex"]
    assert priv.public().key_id.hex() == case["key_id_hex"]


@pytest.mark.parametrize("case", _cases("node_key"), ids=lambda c: c["name"])
def test_node_key_vectors(case: dict[str, Any]) -> None:
    key = NodePublic(bytes.fromhex(case["raw_hex"]))
    assert key.text() == case["text"]
    assert key.binary().hex() == case["binary_hex"]
    assert key.short_string() == case["short_string"]
    assert NodePublic.from_binary(bytes.fromhex(case["binary_hex"])) == key


@pytest.mark.parametrize(
    "case",
    _cases("parse_nl_public") + _cases("parse_nl_private") + _cases("parse_node_public"),
    ids=lambda c: c["name"],
)
def test_parse_vectors(case: dict[str, Any]) -> None:
    def parse(text: str) -> bytes:
        if case["case_type"] == "parse_nl_public":
            return NLPublic.from_text(text).raw
        if case["case_type"] == "parse_nl_private":
            return NLPrivate.from_text(text).public().raw
        return NodePublic.from_text(text).raw

    if case["ok"]:
        field = "raw_hex" if case["case_type"] == "parse_node_public" else "public_hex"
        assert parse(case["input"]).hex() == case[field]
    else:
        with pytest.raises(DecodeError) as info:
            parse(case["input"])
        # Our messages are Go's, word for word.
        assert str(info.value) == case["error"]


# --- round trips ---------------------------------------------------------------


@given(key32)
def test_nlpublic_round_trips(raw: bytes) -> None:
    pub = NLPublic(raw)
    assert pub.text() == "nlpub:" + raw.hex()
    assert pub.cli_text() == "tlpub:" + raw.hex()
    assert NLPublic.from_text(pub.text()) == pub
    assert NLPublic.from_text(pub.cli_text()) == pub
    assert NLPublic.from_text(pub.cli_text().upper().replace("TLPUB:", "tlpub:")) == pub
    assert NLPublic.from_text(pub.text().encode()) == pub
    assert pub.key_id == raw


@given(key32)
def test_nlprivate_round_trips(seed: bytes) -> None:
    priv = NLPrivate.from_seed(seed)
    assert priv.seed == seed
    assert priv.public().raw == bytes(nacl.signing.SigningKey(seed).verify_key)
    again = NLPrivate.from_text(priv.text())
    assert again == priv
    assert again.raw == priv.raw


@given(key32)
def test_node_public_round_trips(raw: bytes) -> None:
    key = NodePublic(raw)
    assert NodePublic.from_text(key.text()) == key
    assert NodePublic.from_binary(key.binary()) == key
    assert key.binary() == b"np" + raw
    assert len(key.binary()) == 34


def test_generate_makes_distinct_consistent_keys() -> None:
    a, b = NLPrivate.generate(), NLPrivate.generate()
    assert a != b
    assert a.public() == NLPrivate.from_seed(a.seed).public()


# --- malformed input -----------------------------------------------------------

PUB_HEX = "006198fd04c1a03994be68758216054d04fc82dc7cc72008be47117e0156acfb"
PRIV_HEX = (
    "49b46047806e463d209768d49ece35f04c63222692e3aaa60957bc346c2d19f7"
    "006198fd04c1a03994be68758216054d04fc82dc7cc72008be47117e0156acfb"
)

BAD_PUBLIC = [
    "",
    "nlpub:",
    "tlpub:",
    PUB_HEX,  # no prefix
    "NLPUB:" + PUB_HEX,  # prefixes are case-sensitive
    "Tlpub:" + PUB_HEX,
    "nlpriv:" + PUB_HEX,
    "nodekey:" + PUB_HEX,
    "tlpriv:" + PUB_HEX,
    " tlpub:" + PUB_HEX,  # leading space
    "tlpub:" + PUB_HEX + " ",  # trailing space
    "tlpub:" + PUB_HEX + "\n",
    "tlpub: " + PUB_HEX[1:],  # space inside, right length
    "tlpub:0x" + PUB_HEX[2:],
    "tlpub:" + PUB_HEX[:-1],  # odd length
    "tlpub:" + PUB_HEX[:-2],  # short
    "tlpub:" + PUB_HEX + "00",  # long
    "tlpub:" + "g" + PUB_HEX[1:],
    "tlpub:" + PUB_HEX[:-1] + "G",
    "tlpub:" + PUB_HEX[:-2] + "é",  # 63 characters but 64 bytes; not hex
    "tlpub:" + PUB_HEX[:-1] + "é",  # 64 characters, 65 bytes
    "tlpub:" + "\u0660" * 64,  # Unicode digits are not hex digits
]


@pytest.mark.parametrize("text", BAD_PUBLIC)
def test_nlpublic_rejects(text: str) -> None:
    with pytest.raises(DecodeError):
        NLPublic.from_text(text)


def test_nlpublic_missing_prefix_error_names_tlpub() -> None:
    # Go tries nlpub: and otherwise insists on the CLI prefix.
    with pytest.raises(DecodeError, match="expected type prefix tlpub:"):
        NLPublic.from_text("nodekey:" + PUB_HEX)


@pytest.mark.parametrize(
    "text",
    [
        "tlpriv:" + PRIV_HEX,
        "NLPRIV:" + PRIV_HEX,
        PRIV_HEX,
        "nlpriv:" + PRIV_HEX[:64],  # seed only
        "nlpriv:" + PRIV_HEX[:-1],
        "nlpriv:" + PRIV_HEX + "0",
        "nlpriv:" + PRIV_HEX[:-1] + "x",
        "nlpriv:" + "z" + PRIV_HEX[1:],
        "nlpub:" + PUB_HEX,
    ],
)
def test_nlprivate_rejects_without_echoing(text: str) -> None:
    with pytest.raises(DecodeError) as info:
        NLPrivate.from_text(text)
    message = str(info.value)
    # No run of the secret digits may appear in the message.
    for i in range(0, len(PRIV_HEX) - 8, 4):
        assert PRIV_HEX[i : i + 8] not in message.lower()


@pytest.mark.parametrize(
    "text",
    [
        "np:" + PUB_HEX,
        PUB_HEX,
        "nodekey:" + PUB_HEX[:10],
        "NODEKEY:" + PUB_HEX,
        "nodekey:" + "q" * 64,
    ],
)
def test_node_public_rejects(text: str) -> None:
    with pytest.raises(DecodeError):
        NodePublic.from_text(text)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "prefix"),
        (b"nq" + bytes(32), "prefix"),
        (b"NP" + bytes(32), "prefix"),
        (bytes(34), "prefix"),
        (b"np" + bytes(31), "len"),
        (b"np" + bytes(33), "len"),
        (b"np", "len"),
    ],
)
def test_node_public_from_binary_rejects(data: bytes, message: str) -> None:
    # Go checks the prefix before the length.
    with pytest.raises(DecodeError, match=message):
        NodePublic.from_binary(data)


@given(st.one_of(st.text(), st.binary()))
def test_parsers_raise_only_decode_error(text: str | bytes) -> None:
    for parse in (NLPublic.from_text, NLPrivate.from_text, NodePublic.from_text):
        with contextlib.suppress(DecodeError):
            parse(text)


@given(st.sampled_from(["nlpub:", "tlpub:", "nodekey:"]), st.text(max_size=70))
def test_prefixed_junk_raises_only_decode_error(prefix: str, rest: str) -> None:
    for parse in (NLPublic.from_text, NodePublic.from_text):
        try:
            key = parse(prefix + rest)
        except DecodeError:
            continue
        # Whatever was accepted must be exactly 64 hex digits.
        assert len(rest) == 64
        assert all(c in "0123456789abcdefABCDEF" for c in rest)
        assert key.raw == bytes.fromhex(rest)


@given(st.binary(max_size=70))
def test_from_binary_raises_only_decode_error(data: bytes) -> None:
    try:
        key = NodePublic.from_binary(data)
    except DecodeError:
        return
    assert data == key.binary()


def test_wrong_type_is_decode_error() -> None:
    with pytest.raises(DecodeError):
        NLPublic.from_text(123)  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        NodePublic(b"short")
    with pytest.raises(DecodeError):
        NLPrivate.from_seed(b"\x00" * 31)


# --- secrecy and Go quirks -----------------------------------------------------------


@given(key32)
def test_private_repr_hides_material(seed: bytes) -> None:
    priv = NLPrivate.from_seed(seed)
    for shown in (repr(priv), str(priv), f"{priv}", f"{priv!r}", repr([priv])):
        assert seed.hex() not in shown
        assert priv.public().raw.hex() not in shown
        assert "nlpriv:" not in shown


def test_private_key_is_not_hashable_and_compares_by_value() -> None:
    a = NLPrivate.from_text("nlpriv:" + PRIV_HEX)
    b = NLPrivate.from_text("nlpriv:" + PRIV_HEX.upper())
    assert a == b
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(AttributeError):
        a._key = b"x"


def test_mismatched_public_half_is_kept() -> None:
    # Go accepts 64 bytes whose halves disagree; the stored public half wins.
    wrong_pub = "bbad0aac060be18b3d8b3941b239e358a7ae24e523578ef4208e4adade834326"
    priv = NLPrivate.from_text("nlpriv:" + PRIV_HEX[:64] + wrong_pub)
    assert priv.public().raw.hex() == wrong_pub
    assert priv.key_id.hex() == wrong_pub
    assert priv.text() == "nlpriv:" + PRIV_HEX[:64] + wrong_pub


def test_sign_matches_ed25519_and_uses_stored_public_half() -> None:
    seed = bytes.fromhex(PRIV_HEX[:64])
    msg = b"tailnet lock"
    good = NLPrivate.from_seed(seed)
    assert good.sign(msg) == nacl.signing.SigningKey(seed).sign(msg).signature
    odd = NLPrivate(seed + bytes(range(32)))
    sig = odd.sign(msg)
    # R depends only on the seed and message; S hashes in the stored public key,
    # as Go's ed25519.Sign does.
    assert sig[:32] == good.sign(msg)[:32]
    assert sig[32:] != good.sign(msg)[32:]


def test_short_string_of_zero_key_is_empty() -> None:
    assert NodePublic(bytes(32)).short_string() == ""
    assert NodePublic(b"\xff" * 32).short_string() == "[/////]"


def test_text_is_lower_case_hex() -> None:
    pub = NLPublic(b"\xab" * 32)
    assert pub.text() == "nlpub:" + "ab" * 32
    assert NodePublic(b"\xcd" * 32).text() == "nodekey:" + "cd" * 32
