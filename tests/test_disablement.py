"""Tests for tka.disablement: the Argon2i KDF, the check, and the CLI text forms."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from argon2.low_level import Type, hash_secret_raw
from hypothesis import given, settings
from hypothesis import strategies as st

from tka.disablement import (
    KDF_SALT,
    SECRET_SIZE,
    check_disablement,
    disablement_kdf,
    format_secret,
    format_value,
    generate_secret,
    parse_secret,
    parse_value,
)
from tka.errors import DecodeError, UsageError

VECTORS = Path(__file__).parent.parent / "vectors" / "disablement.json"


def _cases(case_type: str) -> list[dict[str, Any]]:
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    return [c for c in doc["cases"] if c["case_type"] == case_type]


@pytest.mark.parametrize("case", _cases("kdf"), ids=lambda c: c["name"])
def test_kdf_vectors(case: dict[str, Any]) -> None:
    assert disablement_kdf(bytes.fromhex(case["secret_hex"])).hex() == case["kdf_hex"]


@pytest.mark.parametrize("case", _cases("valid_disablement"), ids=lambda c: c["name"])
def test_valid_disablement_vectors(case: dict[str, Any]) -> None:
    values = [bytes.fromhex(v) for v in case["disablement_values_hex"]]
    assert check_disablement(bytes.fromhex(case["secret_hex"]), values) is case["valid"]


def test_kdf_is_argon2i_not_argon2id() -> None:
    secret = b"\xa5" * 32
    argon2id = hash_secret_raw(
        secret, KDF_SALT, time_cost=4, memory_cost=16384, parallelism=4, hash_len=32, type=Type.ID
    )
    assert disablement_kdf(secret) != argon2id
    assert len(disablement_kdf(secret)) == 32


def test_kdf_accepts_bytes_like_and_rejects_text() -> None:
    assert disablement_kdf(bytearray(b"ab")) == disablement_kdf(b"ab")
    assert disablement_kdf(memoryview(b"ab")) == disablement_kdf(b"ab")
    with pytest.raises(UsageError):
        disablement_kdf("ab")  # type: ignore[arg-type]


def test_check_disablement_matches_any_position() -> None:
    secrets = [b"one", b"two", b"three"]
    values = [disablement_kdf(s) for s in secrets]
    for s in secrets:
        assert check_disablement(s, values)
    assert not check_disablement(b"four", values)
    assert not check_disablement(b"one", [])
    # A value of the wrong length never matches (and does not raise).
    assert not check_disablement(b"one", [values[0][:31], b""])
    # The stored value itself is not a secret.
    assert not check_disablement(values[0], values)


def test_generate_secret() -> None:
    a, b = generate_secret(), generate_secret()
    assert len(a) == len(b) == SECRET_SIZE
    assert a != b


# --- text forms ------------------------------------------------------------------


@given(st.binary(max_size=64))
def test_value_round_trip(value: bytes) -> None:
    text = format_value(value)
    assert text == "disablement:" + value.hex()
    assert parse_value(text) == value
    assert parse_value(text, strict=True) == value


@given(st.binary(max_size=64))
def test_secret_round_trip(secret: bytes) -> None:
    text = format_secret(secret)
    # tailscale lock init prints secrets with %X: upper-case hex.
    assert text == "disablement-secret:" + secret.hex().upper()
    assert parse_secret(text) == secret
    assert parse_secret(text, strict=True) == secret
    assert parse_secret(text.lower()) == secret


def test_go_cli_accepts_either_prefix_for_either_purpose() -> None:
    # Go's parseTLArgs treats both prefixes alike, in lock init and lock disable.
    assert parse_value("disablement-secret:00ff") == b"\x00\xff"
    assert parse_secret("disablement:00FF") == b"\x00\xff"
    with pytest.raises(DecodeError):
        parse_value("disablement-secret:00ff", strict=True)
    with pytest.raises(DecodeError):
        parse_secret("disablement:00ff", strict=True)


def test_empty_hex_is_accepted_like_go() -> None:
    assert parse_value("disablement:") == b""
    assert parse_secret("disablement-secret:") == b""


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00ff",
        "Disablement:00ff",
        "DISABLEMENT-SECRET:00ff",
        "disablement 00ff",
        "disablement-value:00ff",
        "disablement:0",
        "disablement:00f",
        "disablement:0g",
        "disablement: 00ff",
        "disablement:00ff\n",
        "disablement:0x00",
        "disablement:00:ff",
        "disablement:\u0660\u0660",
        "tlpub:00ff",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DecodeError):
        parse_value(text)
    with pytest.raises(DecodeError):
        parse_secret(text)


def test_secret_errors_never_echo_the_secret() -> None:
    secret_hex = "9f4789091a7e8092f5ff65aebedb821b"
    for bad in (secret_hex + "z", secret_hex + "0", "x" + secret_hex):
        with pytest.raises(DecodeError) as info:
            parse_secret("disablement-secret:" + bad)
        message = str(info.value)
        for i in range(0, len(secret_hex) - 6, 2):
            assert secret_hex[i : i + 6] not in message


@given(st.text(max_size=80))
def test_parse_raises_only_decode_error(text: str) -> None:
    for parse in (parse_value, parse_secret):
        with contextlib.suppress(DecodeError):
            parse(text)


def test_parse_rejects_non_text() -> None:
    with pytest.raises(DecodeError):
        parse_secret(b"disablement-secret:00")  # type: ignore[arg-type]


@settings(max_examples=15, deadline=None)
@given(st.binary(max_size=48), st.lists(st.binary(max_size=48), max_size=3))
def test_check_disablement_is_membership_of_kdf(secret: bytes, others: list[bytes]) -> None:
    values = [disablement_kdf(o) for o in others]
    assert check_disablement(secret, values) == (secret in others)
