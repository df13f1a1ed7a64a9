"""Tests for tka.ed25519: the ZIP-215 and Go-stdlib verification rules, and signing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import ed25519_ref as ref
import nacl.bindings
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tka import ed25519
from tka.errors import UsageError

_B, _L, _ORDER_8_POINT = ref._B, ref._L, ref._ORDER_8_POINT
_add, _challenge, _decode, _encode = ref._add, ref._challenge, ref._decode, ref._encode
_mul, _neg, _sb_minus_ka = ref._mul, ref._neg, ref._sb_minus_ka
_zip215_slow, _go_stdlib_slow = ref.zip215, ref.go_stdlib
_libsodium_accepts = ed25519._sodium

VECTORS = Path(__file__).parent.parent / "vectors"


def _load(kind: str) -> list[dict[str, Any]]:
    doc = json.loads((VECTORS / f"{kind}.json").read_text(encoding="utf-8"))
    cases: list[dict[str, Any]] = doc["cases"]
    return cases


CASES = _load("ed25519")
SIZED = [c for c in CASES if len(c["public_hex"]) == 64 and len(c["signature_hex"]) == 128]


def _triple(case: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    return (
        bytes.fromhex(case["public_hex"]),
        bytes.fromhex(case["message_hex"]),
        bytes.fromhex(case["signature_hex"]),
    )


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


# --- the vectors ---------------------------------------------------------------------


def test_vector_file_is_complete() -> None:
    assert len(CASES) == 259
    assert {c["name"].split("/")[0] for c in CASES} == {
        "zip215",
        "zip215-sighash",
        "honest",
        "mixed-order",
        "length",
        "invalid-point",
    }


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_vector_verdicts(case: dict[str, Any]) -> None:
    public, message, signature = _triple(case)
    assert ed25519.verify_zip215(public, message, signature) is case["zip215_valid"]
    assert ed25519.verify_go_stdlib(public, message, signature) is case["go_stdlib_valid"]


@pytest.mark.parametrize("case", SIZED, ids=_ids(SIZED))
def test_vector_verdicts_slow_path_alone(case: dict[str, Any]) -> None:
    # The pure-Python rules must be right on their own, not only where
    # libsodium happens to refuse.
    public, message, signature = _triple(case)
    assert _zip215_slow(public, message, signature) is case["zip215_valid"]
    assert _go_stdlib_slow(public, message, signature) is case["go_stdlib_valid"]


def test_many_gives_each_vectors_zip215_verdict_in_order() -> None:
    """verify_zip215_many over every vector at once (libsodium first, zebra for its refusals)."""
    triples = [_triple(c) for c in CASES]
    assert ed25519.verify_zip215_many(triples) == [c["zip215_valid"] for c in CASES]
    assert ed25519.verify_zip215_many(list(reversed(triples))) == [
        c["zip215_valid"] for c in reversed(CASES)
    ]
    assert ed25519.verify_zip215_many([]) == []
    # Other byte types are taken as verify_zip215 takes them.
    mixed = [(bytearray(p), memoryview(m), bytearray(s)) for p, m, s in triples[:20]]
    assert ed25519.verify_zip215_many(mixed) == [c["zip215_valid"] for c in CASES[:20]]


@given(
    items=st.lists(
        st.tuples(st.binary(max_size=40), st.binary(max_size=2000), st.binary(max_size=70)),
        max_size=8,
    )
)
@settings(max_examples=50, deadline=None)
def test_many_matches_one_by_one_on_any_input(items: list[tuple[bytes, bytes, bytes]]) -> None:
    # Wrong lengths, long messages (past its buffer) and junk: never a crash.
    assert ed25519.verify_zip215_many(items) == [ed25519.verify_zip215(*t) for t in items]


def test_fast_path_claim_holds_on_every_vector() -> None:
    """Whenever libsodium accepts a vector, both rules accept it."""
    accepted = 0
    for case in SIZED:
        if _libsodium_accepts(*_triple(case)):
            accepted += 1
            assert case["zip215_valid"] and case["go_stdlib_valid"], case["name"]
    # The honest cases and the two mixed-order keys whose torsion k cancels.
    assert accepted >= 6


def test_libsodium_refuses_much_that_the_rules_accept() -> None:
    # Why libsodium cannot decide alone: it refuses every small-order
    # vector, including ones both Go verifiers accept.
    refused_but_valid = [
        c["name"] for c in SIZED if c["zip215_valid"] and not _libsodium_accepts(*_triple(c))
    ]
    assert len(refused_but_valid) > 200


@pytest.mark.parametrize("case", SIZED, ids=_ids(SIZED))
def test_each_native_library_alone_gives_its_rule_on_every_vector(case: dict[str, Any]) -> None:
    public, message, signature = _triple(case)
    assert ed25519._zebra(public, message, signature) is case["zip215_valid"]
    assert ed25519._openssl(public, message, signature) is case["go_stdlib_valid"]
    assert ed25519.verify_zip215_threaded(public, message, signature) is case["zip215_valid"]


# --- the import-time known answers -------------------------------------------------


@pytest.mark.parametrize("answer", ed25519._KNOWN_ANSWERS, ids=lambda a: a[0])
def test_known_answers_agree_with_the_reference(answer: tuple[Any, ...]) -> None:
    _, public_hex, message_hex, signature_hex, zip215, go = answer
    triple = (bytes.fromhex(public_hex), bytes.fromhex(message_hex), bytes.fromhex(signature_hex))
    assert ref.zip215(*triple) is zip215
    assert ref.go_stdlib(*triple) is go


def test_known_answers_cover_every_way_the_rules_differ() -> None:
    verdicts = {(a[4], a[5]) for a in ed25519._KNOWN_ANSWERS}
    # Both accept, both refuse, and only ZIP-215 accepts (Go's accepted set
    # is a subset of ZIP-215's, so the fourth combination cannot occur).
    assert verdicts == {(True, True), (False, False), (True, False)}
    # The installed libraries pass them.
    assert ed25519._FAILURES == ()


_BROKEN_LIBRARY = """
import sys
import ed25519_zebra
ed25519_zebra.ed_verify = lambda sig, msg, pub: len(sig) == 64  # a library gone lax
try:
    import tka.ed25519 as e
except Exception as exc:  # the import itself must not crash
    print("import failed:", type(exc).__name__)
    sys.exit(1)
for call in (
    lambda: e.verify_zip215(bytes(32), b"m", bytes(64)),
    lambda: e.verify_go_stdlib(bytes(32), b"m", bytes(64)),
    lambda: e.verify_zip215_threaded(bytes(32), b"m", bytes(64)),
    lambda: e.sign(bytes(32), b"m"),
):
    try:
        call()
    except e.Ed25519LibraryError as exc:
        print("refused:", exc)
    else:
        print("gave a verdict")
"""


def test_a_library_that_departs_from_its_rule_fails_closed() -> None:
    # A real interpreter with a zebra that accepts everything: every call
    # raises a tka error naming the library and the case, none gives a verdict.
    done = subprocess.run(
        [sys.executable, "-c", _BROKEN_LIBRARY], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4
    for line in lines:
        assert line.startswith("refused: "), line
        assert "ed25519-zebra departs from ZIP-215 on: forged signature" in line
    assert "Traceback" not in done.stderr


def test_nks_ed25519_cases() -> None:
    """The ed25519 node-key-signature cases, reduced to their deciding signature.

    In these cases the recorded outcome is decided by one signature: a direct
    signature (ZIP-215, by the trusted key key_id) or a rotation's outer
    signature (Go's rule, by the nested wrapping key; the nested signature is
    an honest one). Both are over the recorded sighash.
    """
    cases = [c for c in _load("nks") if "ed25519" in (c.get("tags") or [])]
    assert cases
    for c in cases:
        sig, sighash = c["sig"], bytes.fromhex(c["sighash_hex"])
        signature = bytes.fromhex(sig["signature"])
        if sig["sig_kind"] == 1:
            got = ed25519.verify_zip215(bytes.fromhex(sig["key_id"]), sighash, signature)
        else:
            wrapping = bytes.fromhex(sig["nested"]["wrapping_pubkey"])
            got = ed25519.verify_go_stdlib(wrapping, sighash, signature)
        assert got is c["authorized"], c["name"]


# --- honest signatures and simple forgeries ------------------------------------------

seeds = st.binary(min_size=32, max_size=32)
messages = st.binary(max_size=200)


@given(seed=seeds, message=messages)
@settings(max_examples=50, deadline=None)
def test_honest_signatures_verify_under_both_rules(seed: bytes, message: bytes) -> None:
    public = ed25519.public_from_seed(seed)
    signature = ed25519.sign(seed, message)
    assert _libsodium_accepts(public, message, signature)
    # The fast-path claim, checked against the exact rules.
    assert _zip215_slow(public, message, signature)
    assert _go_stdlib_slow(public, message, signature)
    assert ed25519.verify_zip215(public, message, signature)
    assert ed25519.verify_go_stdlib(public, message, signature)


@given(seed=seeds, message=messages, bit=st.integers(0, 8 * (32 + 64) - 1))
@settings(max_examples=50, deadline=None)
def test_flipped_bit_fails(seed: bytes, message: bytes, bit: int) -> None:
    blob = bytearray(ed25519.public_from_seed(seed) + ed25519.sign(seed, message))
    blob[bit // 8] ^= 1 << (bit % 8)
    public, signature = bytes(blob[:32]), bytes(blob[32:])
    assert not ed25519.verify_zip215(public, message, signature)
    assert not ed25519.verify_go_stdlib(public, message, signature)


@given(seed=seeds, message=messages, bit=st.integers(0, 8 * (32 + 64) - 1))
@settings(max_examples=50, deadline=None)
def test_libsodium_acceptance_implies_both_rules(seed: bytes, message: bytes, bit: int) -> None:
    # Over honest and mutated inputs: libsodium never accepts more than the
    # exact rules, and the public functions always equal the exact rules.
    public = ed25519.public_from_seed(seed)
    signature = ed25519.sign(seed, message)
    for pk, sig in ((public, signature), _flip(public, signature, bit)):
        zip215, go = _zip215_slow(pk, message, sig), _go_stdlib_slow(pk, message, sig)
        if _libsodium_accepts(pk, message, sig):
            assert zip215 and go
        assert ed25519.verify_zip215(pk, message, sig) is zip215
        assert ed25519.verify_go_stdlib(pk, message, sig) is go


def _flip(public: bytes, signature: bytes, bit: int) -> tuple[bytes, bytes]:
    blob = bytearray(public + signature)
    blob[bit // 8] ^= 1 << (bit % 8)
    return bytes(blob[:32]), bytes(blob[32:])


def test_wrong_message_fails() -> None:
    seed = bytes(range(32))
    public, signature = ed25519.public_from_seed(seed), ed25519.sign(seed, b"hello")
    assert not ed25519.verify_zip215(public, b"hellp", signature)
    assert not ed25519.verify_go_stdlib(public, b"hellp", signature)


@pytest.mark.parametrize("s_value", ["plus_l", "l", "max"])
def test_non_canonical_s_fails(s_value: str) -> None:
    seed = bytes(range(32))
    public, signature = ed25519.public_from_seed(seed), ed25519.sign(seed, b"msg")
    s = int.from_bytes(signature[32:], "little")
    new_s = {"plus_l": s + _L, "l": _L, "max": 2**256 - 1}[s_value]
    forged = signature[:32] + new_s.to_bytes(32, "little")
    assert not ed25519.verify_zip215(public, b"msg", forged)
    assert not ed25519.verify_go_stdlib(public, b"msg", forged)


@pytest.mark.parametrize(
    ("pk_len", "sig_len"), [(0, 64), (31, 64), (33, 64), (32, 0), (32, 63), (32, 65), (64, 64)]
)
def test_wrong_lengths_return_false(pk_len: int, sig_len: int) -> None:
    seed = bytes(range(32))
    public, signature = ed25519.public_from_seed(seed), ed25519.sign(seed, b"m")
    pk = (public * 3)[:pk_len]
    sig = (signature * 2)[:sig_len]
    assert ed25519.verify_zip215(pk, b"m", sig) is False
    assert ed25519.verify_go_stdlib(pk, b"m", sig) is False


# --- the rules themselves, beyond the vectors ----------------------------------------

_T8 = _decode(bytes.fromhex(_ORDER_8_POINT))
assert _T8 is not None
_scalars = st.integers(1, _L - 1)


def _honest_with_torsion(
    a: int, r: int, a_torsion: int, r_torsion: int, message: bytes
) -> tuple[bytes, bytes, int]:
    """Sign with secret a but publish A = [a]B + [i]T8 and R = [r]B + [j]T8."""
    assert _T8 is not None
    public = _encode(_add(_mul(a, _B), _mul(a_torsion, _T8)))
    r_bytes = _encode(_add(_mul(r, _B), _mul(r_torsion, _T8)))
    k = _challenge(r_bytes, public, message)
    return public, r_bytes + ((r + k * a) % _L).to_bytes(32, "little"), k


@given(a=_scalars, r=_scalars, i=st.integers(0, 7), message=messages)
@settings(max_examples=25, deadline=None)
def test_mixed_order_key(a: int, r: int, i: int, message: bytes) -> None:
    # [S]B - [k]A = R - [k*i]T8: Go accepts exactly when k*i = 0 mod 8;
    # the cofactor in ZIP-215 removes the torsion term, so it always accepts.
    public, signature, k = _honest_with_torsion(a, r, i, 0, message)
    assert ed25519.verify_zip215(public, message, signature)
    assert ed25519.verify_go_stdlib(public, message, signature) is (k * i % 8 == 0)


@given(a=_scalars, r=_scalars, j=st.integers(1, 7), message=messages)
@settings(max_examples=25, deadline=None)
def test_torsion_in_r(a: int, r: int, j: int, message: bytes) -> None:
    # R carries a torsion component that the recomputed point lacks.
    public, signature, _ = _honest_with_torsion(a, r, 0, j, message)
    assert ed25519.verify_zip215(public, message, signature)
    assert not ed25519.verify_go_stdlib(public, message, signature)


# --- three opinions on crafted and random inputs --------------------------------------
#
# The native libraries (ed25519-zebra for ZIP-215; libsodium then OpenSSL for
# Go's rule) against the pure-Python reference in tests/ed25519_ref.py, which
# shares no code with either.

_P = 2**255 - 19


def _small_order_encodings() -> list[bytes]:
    """Every encoding of the 8 small-order points Go's decoder takes.

    Canonical ones, "negative zero" (x = 0 with the sign bit set), and y + p
    where y + p < 2^255 (non-canonical y), as in ZIP-215's test set.
    """
    assert _T8 is not None
    out = set()
    for i in range(8):
        canonical = _encode(_mul(i, _T8))
        y = int.from_bytes(canonical, "little") & ((1 << 255) - 1)
        point = _decode(canonical)
        assert point is not None
        signs = (0, 1) if point[0] == 0 else (canonical[31] >> 7,)
        for y_enc in (y, y + _P) if y + _P < 2**255 else (y,):
            for sign in signs:
                out.add((y_enc | sign << 255).to_bytes(32, "little"))
    return sorted(out)


SMALL_ORDER = _small_order_encodings()


def test_small_order_encodings_are_all_small_order() -> None:
    assert len(SMALL_ORDER) > 8
    for enc in SMALL_ORDER:
        point = _decode(enc)
        assert point is not None
        assert _encode(_mul(8, point)) == _encode(_mul(0, _B)), enc.hex()


def _mixed(a: int, i: int) -> bytes:
    assert _T8 is not None
    return _encode(_add(_mul(a, _B), _mul(i, _T8)))


def _non_canonical_y(y: int, sign: int) -> bytes:
    return ((y + _P) | sign << 255).to_bytes(32, "little")


points = st.one_of(
    st.sampled_from(SMALL_ORDER),
    _scalars.map(lambda a: _encode(_mul(a, _B))),
    st.builds(_mixed, _scalars, st.integers(1, 7)),
    st.builds(_non_canonical_y, st.integers(0, 18), st.integers(0, 1)),
    st.binary(min_size=32, max_size=32),
)
s_values = st.one_of(
    st.just(0),
    st.just(_L),
    st.integers(0, _L - 1),
    st.integers(_L, 2**253 - 1),
    st.integers(2**253, 2**256 - 1),
)


def _three_opinions(public: bytes, message: bytes, signature: bytes) -> None:
    zip215 = ref.zip215(public, message, signature)
    go = ref.go_stdlib(public, message, signature)
    assert ed25519.verify_zip215(public, message, signature) is zip215
    assert ed25519.verify_zip215_threaded(public, message, signature) is zip215
    assert ed25519.verify_go_stdlib(public, message, signature) is go
    assert ed25519._openssl(public, message, signature) is go
    # Go's rule accepts a subset of ZIP-215's, and libsodium a subset of Go's.
    assert zip215 or not go
    if _libsodium_accepts(public, message, signature):
        assert go


@given(public=points, r=points, s=s_values, message=messages)
@settings(max_examples=300, deadline=None)
def test_crafted_inputs_three_ways(public: bytes, r: bytes, s: int, message: bytes) -> None:
    _three_opinions(public, message, r + s.to_bytes(32, "little"))


@given(a=st.sampled_from(SMALL_ORDER), r=st.sampled_from(SMALL_ORDER), message=messages)
@settings(max_examples=200, deadline=None)
def test_small_order_a_and_r_with_s_zero_three_ways(a: bytes, r: bytes, message: bytes) -> None:
    # ZIP-215 accepts all of these (every term vanishes under the cofactor);
    # Go only when R's bytes are the canonical encoding of -[k]A.
    assert ref.zip215(a, message, r + bytes(32))
    _three_opinions(a, message, r + bytes(32))


@given(
    a=_scalars,
    r=_scalars,
    i=st.integers(0, 7),
    j=st.integers(0, 7),
    message=messages,
    s_offset=st.sampled_from([0, 0, _L, 2**253]),
)
@settings(max_examples=100, deadline=None)
def test_torsion_in_a_and_r_three_ways(
    a: int, r: int, i: int, j: int, message: bytes, s_offset: int
) -> None:
    public, signature, _ = _honest_with_torsion(a, r, i, j, message)
    s = int.from_bytes(signature[32:], "little") + s_offset
    if s < 2**256:
        _three_opinions(public, message, signature[:32] + s.to_bytes(32, "little"))


@given(
    public=st.binary(min_size=32, max_size=32),
    signature=st.binary(min_size=64, max_size=64),
    message=messages,
)
@settings(max_examples=100, deadline=None)
def test_random_inputs_three_ways(public: bytes, signature: bytes, message: bytes) -> None:
    _three_opinions(public, message, signature)


@given(seed=seeds, message=messages, bit=st.integers(0, 8 * (32 + 64) - 1))
@settings(max_examples=100, deadline=None)
def test_honest_and_flipped_three_ways(seed: bytes, message: bytes, bit: int) -> None:
    public = ed25519.public_from_seed(seed)
    signature = ed25519.sign(seed, message)
    _three_opinions(public, message, signature)
    _three_opinions(*_flip_keep_message(public, signature, bit, message))


def _flip_keep_message(
    public: bytes, signature: bytes, bit: int, message: bytes
) -> tuple[bytes, bytes, bytes]:
    pk, sig = _flip(public, signature, bit)
    return pk, message, sig


def test_decoder_is_laxer_than_rfc8032() -> None:
    identity = _decode(bytes.fromhex("01" + "00" * 31))
    assert identity is not None
    # y = p + 1 (non-canonical, = 1 mod p): accepted, same point as y = 1.
    non_canonical = _decode(bytes.fromhex("ee" + "ff" * 30 + "7f"))
    assert non_canonical is not None and _encode(non_canonical) == _encode(identity)
    # x = 0 with the sign bit set ("negative zero"): accepted.
    negative_zero = _decode(bytes.fromhex("01" + "00" * 30 + "80"))
    assert negative_zero is not None and _encode(negative_zero) == _encode(identity)
    # y = 2: no x satisfies the curve equation.
    assert _decode(bytes.fromhex("02" + "00" * 31)) is None


def test_k_uses_received_encodings() -> None:
    # The same point under two encodings gives two different challenges, so a
    # signature for one encoding of A does not verify under the other.
    canonical = bytes.fromhex("01" + "00" * 31)
    other = bytes.fromhex("ee" + "ff" * 30 + "7f")
    r = bytes(32)
    assert _challenge(r, canonical, b"m") != _challenge(r, other, b"m")


def test_double_scalar_mult_matches_separate_mults() -> None:
    a = _mul(12345, _B)
    s, k = 2**252 + 99, 2**250 + 7
    direct = _add(_mul(s, _B), _mul(_L - k, a))  # -[k]A == [L - k]A for prime-order A
    assert _encode(_sb_minus_ka(s, k, a)) == _encode(direct)
    assert _encode(_mul(_L, _B)) == bytes.fromhex("01" + "00" * 31)


# --- signing ---------------------------------------------------------------------------

# RFC 8032, section 7.1, TEST 1 (empty message) and TEST 2.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(seed: str, public: str, message: str, signature: str) -> None:
    s, pk, m, sig = (bytes.fromhex(x) for x in (seed, public, message, signature))
    assert ed25519.public_from_seed(s) == pk
    assert ed25519.sign(s, m) == sig
    assert ed25519.sign(s + pk, m) == sig
    assert _zip215_slow(pk, m, sig) and _go_stdlib_slow(pk, m, sig)


@given(seed=seeds, message=messages)
@settings(max_examples=50, deadline=None)
def test_sign_matches_pynacl_and_go_private_form(seed: bytes, message: bytes) -> None:
    expected = nacl.signing.SigningKey(seed).sign(message).signature
    go_private = seed + ed25519.public_from_seed(seed)
    assert ed25519.sign(seed, message) == expected
    assert ed25519.sign(go_private, message) == expected
    assert ed25519.public_from_private(go_private) == ed25519.public_from_private(seed)


def test_sign_with_mismatched_public_half_matches_go() -> None:
    # Go's ed25519.Sign hashes the stored public half into k without checking
    # it against the seed. The result is S = r + k'a with k' over the stored
    # half, so [S]B - [k']A_true == R.
    seed, other = bytes(range(32)), ed25519.public_from_seed(bytes(32))
    true_public = ed25519.public_from_seed(seed)
    signature = ed25519.sign(seed + other, b"m")
    k = _challenge(signature[:32], other, b"m")
    a = _decode(true_public)
    assert a is not None
    s = int.from_bytes(signature[32:], "little")
    assert _encode(_sb_minus_ka(s, k, a)) == signature[:32]
    # Same R: the nonce depends on the seed only.
    assert signature[:32] == ed25519.sign(seed, b"m")[:32]
    assert not ed25519.verify_zip215(true_public, b"m", signature)
    assert not ed25519.verify_zip215(other, b"m", signature)
    assert ed25519.public_from_private(seed + other) == other  # the stored half, as Go


@pytest.mark.parametrize("length", [0, 16, 31, 33, 63, 65, 96])
@pytest.mark.parametrize("which", ["sign", "public_from_private"])
def test_wrong_private_lengths_raise_without_leaking(length: int, which: str) -> None:
    key = bytes(range(256))[256 - length :] if length else b""
    with pytest.raises(UsageError) as info:
        if which == "sign":
            ed25519.sign(key, b"m")
        else:
            ed25519.public_from_private(key)
    message = str(info.value)
    assert str(length) in message
    if key:
        assert key.hex() not in message
        assert repr(key) not in message


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_public_from_seed_wrong_length(length: int) -> None:
    with pytest.raises(UsageError):
        ed25519.public_from_seed(b"\x42" * length)


def test_generate_seed() -> None:
    a, b = ed25519.generate_seed(), ed25519.generate_seed()
    assert len(a) == ed25519.SEED_SIZE == 32
    assert a != b
    assert len(ed25519.public_from_seed(a)) == ed25519.PUBLIC_KEY_SIZE


def test_sizes() -> None:
    assert (ed25519.PUBLIC_KEY_SIZE, ed25519.SIGNATURE_SIZE, ed25519.SEED_SIZE) == (32, 64, 32)
    assert nacl.bindings.crypto_sign_BYTES == ed25519.SIGNATURE_SIZE


def test_sha512_challenge_is_mod_l() -> None:
    digest = hashlib.sha512(b"R" * 32 + b"A" * 32 + b"m").digest()
    assert _challenge(b"R" * 32, b"A" * 32, b"m") == int.from_bytes(digest, "little") % _L


def test_verifiers_take_any_bytes_like_input() -> None:
    seed = bytes(range(32))
    public, signature = ed25519.public_from_seed(seed), ed25519.sign(seed, b"m")
    for verify in (ed25519.verify_zip215, ed25519.verify_zip215_threaded, ed25519.verify_go_stdlib):
        assert verify(bytearray(public), memoryview(b"m"), bytearray(signature))
        assert not verify(bytearray(public), memoryview(b"n"), bytearray(signature))
