"""Hostile inputs for the control service's tests, built from first principles.

:func:`mixed_order_genesis` makes the genesis the issue measured: its one
trusted key is a *mixed-order* Ed25519 key (a normal public key plus a point
of order 8) and it carries many copies of one signature by that key. The
signatures pass ZIP-215's cofactored check (the torsion part vanishes when
multiplied by 8) but fail libsodium's cofactorless one, so a verifier that
falls back to a slow path for such signatures pays that path for each copy.

The curve arithmetic is written here, small and slow, so the test does not
depend on how tka's own Ed25519 module is built inside.
"""

from __future__ import annotations

import hashlib
import os

import nacl.bindings
import nacl.exceptions

from tka.aum import AUM, AUMKind, Signature
from tka.key import Key
from tka.state import State

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, -1, _P) % _P

_Pt = tuple[int, int]  # affine (x, y)


def _add(a: _Pt, b: _Pt) -> _Pt:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, -1, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, _P) % _P
    return x3, y3


def _mul(n: int, a: _Pt) -> _Pt:
    q: _Pt = (0, 1)
    while n:
        if n & 1:
            q = _add(q, a)
        a = _add(a, a)
        n >>= 1
    return q


def _decode(b: bytes) -> _Pt:
    y = int.from_bytes(b, "little") & ((1 << 255) - 1)
    sign = b[31] >> 7
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P != u:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    assert v * x * x % _P == u, "not a point"
    if x & 1 != sign:
        x = (-x) % _P
    return x, y


def _encode(a: _Pt) -> bytes:
    x, y = a
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


_B = _decode((4 * pow(5, -1, _P) % _P).to_bytes(32, "little"))
#: A point of order 8 (from the well-known list of small-order encodings).
_T8 = _decode(bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"))
assert _mul(8, _T8) == (0, 1) and _mul(4, _T8) != (0, 1)


def _libsodium_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.bindings.crypto_sign_open(signature + message, public)
    except (nacl.exceptions.BadSignatureError, ValueError):
        return False
    return True


def _mixed_order_sign(a: int, public: bytes, message: bytes) -> bytes:
    """A signature by scalar *a* under the mixed-order key *public* (= aB + T8).

    One the cofactorless check (libsodium) refuses: that needs the challenge
    not to be a multiple of 8 (else the torsion part vanishes there too).
    """
    while True:
        r = int.from_bytes(os.urandom(64), "little") % _L
        r_bytes = _encode(_base_mul(r))
        k = int.from_bytes(hashlib.sha512(r_bytes + public + message).digest(), "little") % _L
        sig = r_bytes + ((r + k * a) % _L).to_bytes(32, "little")
        if not _libsodium_accepts(public, message, sig):
            return sig


def mixed_order_genesis(copies: int = 4096) -> AUM:
    """A genesis trusting one mixed-order key, signed *copies* times by it."""
    a = int.from_bytes(os.urandom(32), "little") % _L
    public = _encode(_add(_base_mul(a), _T8))
    ids = os.urandom(16)
    state = State(
        disablement_values=(os.urandom(32),),
        keys=(Key.ed25519(public),),
        state_id1=int.from_bytes(ids[:8], "little"),
        state_id2=int.from_bytes(ids[8:], "little"),
    )
    bare = AUM(AUMKind.CHECKPOINT, state=state)
    sig = _mixed_order_sign(a, public, bare.sig_hash)
    return bare.with_signatures(tuple(Signature(public, sig) for _ in range(copies)))


def mixed_order_genesis_distinct(keys: int = 512) -> AUM:
    """A genesis trusting *keys* mixed-order keys, each signing once.

    The most signature work a genesis can ask for once repeated key IDs are
    refused: one slow-path check per trusted key (at most 512).
    """
    scalars = [int.from_bytes(os.urandom(32), "little") % _L for _ in range(keys)]
    publics = [_encode(_add(_base_mul(a), _T8)) for a in scalars]
    ids = os.urandom(16)
    state = State(
        disablement_values=(os.urandom(32),),
        keys=tuple(Key.ed25519(p) for p in publics),
        state_id1=int.from_bytes(ids[:8], "little"),
        state_id2=int.from_bytes(ids[8:], "little"),
    )
    bare = AUM(AUMKind.CHECKPOINT, state=state)
    msg = bare.sig_hash
    sigs = tuple(
        Signature(p, _mixed_order_sign(a, p, msg)) for a, p in zip(scalars, publics, strict=True)
    )
    return bare.with_signatures(sigs)


def _base_mul(a: int) -> _Pt:
    """a*B through libsodium (fast), decoded to affine."""
    return _decode(nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(a.to_bytes(32, "little")))
