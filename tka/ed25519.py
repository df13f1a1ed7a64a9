"""Ed25519 signing and the two verification rules Tailscale's tka relies on.

Tailscale does not verify every Ed25519 signature the same way:

* :func:`verify_zip215` is ``github.com/hdevalence/ed25519consensus.Verify``
  (ZIP-215). It checks the *cofactored* equation ``[8][S]B == [8]R + [8][k]A``,
  accepts non-canonical point encodings, and requires ``S < L``. tka uses it
  for AUM signatures and for direct and credential node-key signatures.
* :func:`verify_go_stdlib` is Go's ``crypto/ed25519.Verify``. It recomputes
  ``R' = [S]B - [k]A`` (no cofactor), encodes ``R'`` canonically and compares
  it byte for byte with the received R. It also accepts a non-canonical public
  key and requires ``S < L``. tka uses it only for the outer signature of a
  rotation node-key signature.

In both, ``k = SHA-512(R_bytes || A_bytes || M) mod L`` is computed over the
bytes *as received*, not over re-encoded points.

Both rules are wider than libsodium, which refuses small-order points and
non-canonical encodings. A signature libsodium accepts is accepted by both
rules (see :func:`_libsodium_is_narrower` for why, and for the check that keeps
it true), so libsodium is the fast path. Only what libsodium refuses is decided
by the small, exact, variable-time edwards25519 code below. Verification
handles only public data, so variable time is fine; signing never touches the
pure-Python code and always goes through libsodium.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.signing

from tka.errors import UsageError

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "generate_seed",
    "public_from_private",
    "public_from_seed",
    "sign",
    "verify_go_stdlib",
    "verify_zip215",
]

PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
SEED_SIZE: Final = 32
_PRIVATE_KEY_SIZE: Final = 64  # Go's ed25519.PrivateKey: seed || public

# --- edwards25519 parameters (RFC 8032, section 5.1) -------------------------

_P: Final = 2**255 - 19  # field prime
_L: Final = 2**252 + 27742317777372353535851937790883648493  # prime subgroup order
_D: Final = -121665 * pow(121666, -1, _P) % _P  # curve: -x^2 + y^2 = 1 + d x^2 y^2
_D2: Final = 2 * _D % _P
_SQRT_M1: Final = pow(2, (_P - 1) // 4, _P)  # a square root of -1 (p = 5 mod 8)

# A point in extended coordinates (X, Y, Z, T): x = X/Z, y = Y/Z, x*y = T/Z.
# Plain Python integers keep the arithmetic exact and easy to check.
_Point = tuple[int, int, int, int]

_IDENTITY: Final[_Point] = (0, 1, 1, 0)


def _add(p: _Point, q: _Point) -> _Point:
    """Return p + q (RFC 8032 5.1.4; complete for a = -1, so also valid for p == q)."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 * t2 % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p: _Point) -> _Point:
    """Return 2p (RFC 8032 5.1.4 doubling; cheaper than _add(p, p))."""
    x1, y1, z1, _ = p
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1)
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _neg(p: _Point) -> _Point:
    x, y, z, t = p
    return (-x % _P, y, z, -t % _P)


def _is_identity(p: _Point) -> bool:
    x, y, z, _ = p
    return x % _P == 0 and (y - z) % _P == 0


def _decode(data: bytes) -> _Point | None:
    """Decode a 32-byte point the way Go's edwards25519 ``Point.SetBytes`` does.

    Both verifiers Tailscale uses decode points with this function, and it is
    deliberately laxer than RFC 8032 5.1.3:

    * a y-coordinate >= p is accepted and reduced mod p (RFC 8032 rejects it);
    * the sign bit is honoured even when x = 0, so the "negative zero"
      encodings of (0, 1) and (0, -1) are accepted (RFC 8032 rejects them).

    Only an encoding whose y has no matching x on the curve is refused.
    """
    if len(data) != 32:
        return None
    y = (int.from_bytes(data, "little") & ((1 << 255) - 1)) % _P
    sign = data[31] >> 7
    # x^2 = (y^2 - 1) / (d y^2 + 1); the denominator is never 0 because d is
    # not a square.
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)  # a square root of x2 or of -x2
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
        if (x * x - x2) % _P != 0:
            return None  # not on the curve
    if x & 1 != sign:
        x = -x % _P  # when x == 0 this stays 0: negative zero is accepted
    return (x, y, 1, x * y % _P)


def _encode(p: _Point) -> bytes:
    """Return the canonical encoding (y < p, sign bit = x mod 2)."""
    x, y, z, _ = p
    zinv = pow(z, _P - 2, _P)
    x, y = x * zinv % _P, y * zinv % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _base_point() -> _Point:
    base = _decode((4 * pow(5, -1, _P) % _P).to_bytes(32, "little"))  # y = 4/5, x even
    assert base is not None
    return base


_B: Final[_Point] = _base_point()

# Encoding of a point of order 8 (x, y both nonzero); used to build a canary.
_ORDER_8_POINT: Final = "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"


def _mul(n: int, p: _Point) -> _Point:
    """Return [n]p by double-and-add (variable time: only public data is used)."""
    q = _IDENTITY
    for i in reversed(range(n.bit_length())):
        q = _double(q)
        if n >> i & 1:
            q = _add(q, p)
    return q


def _sb_minus_ka(s: int, k: int, a: _Point) -> _Point:
    """Return [s]B - [k]A with one shared doubling chain (Straus/Shamir)."""
    neg_a = _neg(a)
    both = _add(_B, neg_a)
    q = _IDENTITY
    for i in reversed(range(max(s.bit_length(), k.bit_length()))):
        q = _double(q)
        sb, kb = s >> i & 1, k >> i & 1
        if sb and kb:
            q = _add(q, both)
        elif sb:
            q = _add(q, _B)
        elif kb:
            q = _add(q, neg_a)
    return q


def _challenge(r_bytes: bytes, a_bytes: bytes, message: bytes) -> int:
    # Both verifiers hash the received encodings, so a non-canonical A or R
    # changes k even though it names the same point.
    digest = hashlib.sha512(r_bytes + a_bytes + message).digest()
    return int.from_bytes(digest, "little") % _L


def _scalar(signature: bytes) -> int | None:
    """Return S if it is canonical (S < L); both verifiers refuse S >= L."""
    s = int.from_bytes(signature[32:], "little")
    return s if s < _L else None


# --- slow paths: exact statements of the two rules ---------------------------


def _zip215_slow(public: bytes, message: bytes, signature: bytes) -> bool:
    """ed25519consensus.Verify in full. Lengths must already be checked."""
    s = _scalar(signature)
    if s is None:
        return False
    a = _decode(public)
    r = _decode(signature[:32])
    if a is None or r is None:
        return False
    k = _challenge(signature[:32], public, message)
    diff = _add(_sb_minus_ka(s, k, a), _neg(r))
    # Multiplying by the cofactor 8 discards any torsion component, so small-
    # order and mixed-order A and R are accepted when the prime-order parts agree.
    return _is_identity(_double(_double(_double(diff))))


def _go_stdlib_slow(public: bytes, message: bytes, signature: bytes) -> bool:
    """crypto/ed25519.Verify in full. Lengths must already be checked."""
    s = _scalar(signature)
    if s is None:
        return False
    a = _decode(public)
    if a is None:
        return False
    k = _challenge(signature[:32], public, message)
    # R is never decoded: the recomputed point is encoded canonically and
    # compared byte for byte, so a non-canonical R can never match, and a
    # torsion component of A that [k] does not cancel makes it fail.
    return _encode(_sb_minus_ka(s, k, a)) == signature[:32]


# --- fast path: libsodium ----------------------------------------------------


def _libsodium_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    """libsodium's verdict. Lengths must already be checked (it reads 32 key bytes)."""
    try:
        nacl.bindings.crypto_sign_open(signature + message, public)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def _canaries() -> list[tuple[bytes, bytes, bytes]]:
    """Return (public, message, signature) triples Go's rule refuses but a laxer libsodium takes."""
    message = b"tka ed25519 fast-path canary"

    # An honest signature with S replaced by S + L (still below 2^253, so even
    # a check of only the top three bits lets it through).
    seed = hashlib.sha256(b"tka canary seed").digest()
    honest = nacl.signing.SigningKey(seed).sign(message).signature
    s_plus_l = int.from_bytes(honest[32:], "little") + _L
    non_canonical_s = honest[:32] + s_plus_l.to_bytes(32, "little")

    # Key A = [a]B + T (T of order 8) signed honestly with a, over a message
    # whose k is not a multiple of 8: [S]B - [k]A = R - [k]T != R, so Go
    # refuses it while any cofactored check accepts it.
    torsion = _decode(bytes.fromhex(_ORDER_8_POINT))
    assert torsion is not None
    a = int.from_bytes(hashlib.sha512(b"tka canary a").digest(), "little") % _L
    r = int.from_bytes(hashlib.sha512(b"tka canary r").digest(), "little") % _L
    mixed_public = _encode(_add(_mul(a, _B), torsion))
    r_bytes = _encode(_mul(r, _B))
    counter = 0
    while _challenge(r_bytes, mixed_public, message + bytes([counter])) % 8 == 0:
        counter += 1
    mixed_message = message + bytes([counter])
    k = _challenge(r_bytes, mixed_public, mixed_message)
    mixed_sig = r_bytes + ((r + k * a) % _L).to_bytes(32, "little")

    return [
        (public_from_seed(seed), message, non_canonical_s),
        (mixed_public, mixed_message, mixed_sig),
    ]


@functools.cache
def _libsodium_is_narrower() -> bool:
    """Check, once, that libsodium accepts nothing either rule would refuse.

    Released libsodium (1.0.18 to 1.0.21) accepts only when S < L, A is a
    canonical encoding not of small order, R is not of small order, and the
    canonical encoding of [S]B - [k]A equals the R bytes. Then A decodes to
    the same point under Go's rules, Go's byte comparison succeeds, and R is
    that same point, so the cofactored equation holds too: both rules accept.

    Two plausible builds break that: libsodium's development branch (which
    accepts when R - ([S]B - [k]A) is merely of small order, i.e. cofactored,
    so it takes mixed-order keys that Go refuses) and an ``ED25519_COMPAT``
    build (which takes S >= L). The :func:`_canaries` detect either; if
    libsodium accepts one, the fast path is switched off for good and every
    verdict comes from the exact code above. Costs a few milliseconds, once.
    """
    return not any(_libsodium_accepts(*c) for c in _canaries())


# --- public API ----------------------------------------------------------------


def _sizes_ok(public: bytes, signature: bytes) -> bool:
    return len(public) == PUBLIC_KEY_SIZE and len(signature) == SIGNATURE_SIZE


def verify_zip215(public: bytes, message: bytes, signature: bytes) -> bool:
    """Return whether *signature* is valid under ZIP-215 (ed25519consensus.Verify).

    Wrong-length keys or signatures return ``False``; this never raises.
    """
    if not _sizes_ok(public, signature):
        return False
    public, message, signature = bytes(public), bytes(message), bytes(signature)
    if _libsodium_accepts(public, message, signature) and _libsodium_is_narrower():
        return True
    return _zip215_slow(public, message, signature)


def verify_go_stdlib(public: bytes, message: bytes, signature: bytes) -> bool:
    """Return whether *signature* is valid under Go's ``crypto/ed25519.Verify``.

    Wrong-length keys or signatures return ``False`` (Go panics on a bad key
    length; tka checks the length before calling it). This never raises.
    """
    if not _sizes_ok(public, signature):
        return False
    public, message, signature = bytes(public), bytes(message), bytes(signature)
    if _libsodium_accepts(public, message, signature) and _libsodium_is_narrower():
        return True
    return _go_stdlib_slow(public, message, signature)


def _check_private(private: bytes) -> None:
    if len(private) not in (SEED_SIZE, _PRIVATE_KEY_SIZE):
        raise UsageError(
            f"ed25519 private key must be {SEED_SIZE} or {_PRIVATE_KEY_SIZE} bytes, "
            f"got {len(private)}"
        )


def sign(private: bytes, message: bytes) -> bytes:
    """Sign *message* exactly as Go's ``ed25519.Sign`` (deterministic RFC 8032, via libsodium).

    *private* is either a 32-byte seed or Go's 64-byte ``ed25519.PrivateKey``
    (seed followed by public key). Raises :class:`~tka.errors.UsageError` on
    any other length.

    With the 64-byte form, Go hashes the *stored* public half into k without
    checking it against the seed, and so does libsodium's ``crypto_sign``; a
    key whose halves disagree therefore gives the same (unverifiable) bytes
    as in Go rather than an error.
    """
    _check_private(private)
    if len(private) == SEED_SIZE:
        seeded: bytes = nacl.signing.SigningKey(bytes(private)).sign(bytes(message)).signature
        return seeded
    signed: bytes = nacl.bindings.crypto_sign(bytes(message), bytes(private))
    return signed[:SIGNATURE_SIZE]


def public_from_private(private: bytes) -> bytes:
    """Return the public key of a 32-byte seed or of Go's 64-byte private key.

    For the 64-byte form this is the stored public half, as Go's
    ``PrivateKey.Public`` returns it (it is not re-derived from the seed).
    Raises :class:`~tka.errors.UsageError` on any other length.
    """
    _check_private(private)
    if len(private) == SEED_SIZE:
        return public_from_seed(private)
    return bytes(private[SEED_SIZE:])


def public_from_seed(seed: bytes) -> bytes:
    """Return the 32-byte public key for a 32-byte seed.

    Raises :class:`~tka.errors.UsageError` when *seed* is not 32 bytes.
    """
    if len(seed) != SEED_SIZE:
        raise UsageError(f"ed25519 seed must be {SEED_SIZE} bytes, got {len(seed)}")
    public: bytes = nacl.signing.SigningKey(bytes(seed)).verify_key.encode()
    return public


def generate_seed() -> bytes:
    """Return a fresh random 32-byte seed from the operating system's CSPRNG."""
    return os.urandom(SEED_SIZE)
