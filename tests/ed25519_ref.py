"""Pure-Python reference statements of Tailscale's two Ed25519 verification rules.

This is a test helper only: tka verifies with native libraries (see
:mod:`tka.ed25519`). The code below is a small, exact, variable-time
edwards25519 implementation on Python integers, kept as an independent third
opinion: the hypothesis tests compare its verdicts with ed25519-zebra's
(ZIP-215) and with tka's Go-stdlib path on crafted and random inputs, and
build the crafted inputs (small-order and mixed-order points, non-canonical
encodings) with it.

* :func:`zip215` is ``ed25519consensus.Verify``: cofactored equation
  ``[8][S]B == [8]R + [8][k]A``, lax point decoding, ``S < L``.
* :func:`go_stdlib` is ``crypto/ed25519.Verify``: ``R' = [S]B - [k]A``
  encoded canonically and compared byte for byte with R, ``S < L``.

``k = SHA-512(R_bytes || A_bytes || M) mod L`` over the bytes as received.
"""

from __future__ import annotations

import hashlib
from typing import Final

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


def zip215(public: bytes, message: bytes, signature: bytes) -> bool:
    """ZIP-215 verdict, any lengths (wrong ones are refused)."""
    if len(public) != 32 or len(signature) != 64:
        return False
    return _zip215_slow(bytes(public), bytes(message), bytes(signature))


def go_stdlib(public: bytes, message: bytes, signature: bytes) -> bool:
    """Go ``crypto/ed25519.Verify`` verdict, any lengths (wrong ones are refused)."""
    if len(public) != 32 or len(signature) != 64:
        return False
    return _go_stdlib_slow(bytes(public), bytes(message), bytes(signature))
