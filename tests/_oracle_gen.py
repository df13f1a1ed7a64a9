"""Hypothesis strategies and mutation helpers for the differential tests.

Everything here builds *inputs*: AUM bytes, node-key signatures, Ed25519
triples, forked chains, inform batches, sync pairs and on-disk store
mutations. The verdicts come from ``tka-oracle`` (Tailscale's code) and from
tka, and ``tests/test_oracle_diff.py`` compares them. Generators lean towards
the edges where implementations differ: non-canonical CBOR, every decoder
cap, odd key IDs and kinds, small-order and mixed-order Ed25519 points,
rotation chains around the nesting cap, forks decided by each fork-choice rule.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import shutil
from dataclasses import dataclass
from typing import Any

import cbor2
from hypothesis import strategies as st

from tka.aum import AUM, AUMKind, Signature, hash_to_text
from tka.key import Key
from tka.nlkeys import NLPrivate
from tka.sig import NodeKeySignature, SigKind, node_key_binary
from tka.state import State

# -- Ed25519 edge material (test-only arithmetic, written for these tests) ------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

Point = tuple[int, int]
_Ext = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T): no inversions per step


def _ext_add(p: _Ext, q: _Ext) -> _Ext:
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * _D * t1 * t2 % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _add(p: Point, q: Point) -> Point:
    return _mul(1, p) if q == (0, 1) else _affine(_ext_add(_ext(p), _ext(q)))


def _ext(p: Point) -> _Ext:
    return p[0], p[1], 1, p[0] * p[1] % _P


def _affine(p: _Ext) -> Point:
    zi = pow(p[2], -1, _P)
    return p[0] * zi % _P, p[1] * zi % _P


def _mul(n: int, p: Point) -> Point:
    out: _Ext = (0, 1, 1, 0)
    q = _ext(p)
    while n:
        if n & 1:
            out = _ext_add(out, q)
        q = _ext_add(q, q)
        n >>= 1
    return _affine(out)


def _x_from_y(y: int, sign: int) -> int | None:
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P != u:
        x = x * _SQRT_M1 % _P
        if v * x * x % _P != u:
            return None
    if x & 1 != sign:
        x = _P - x if x else 0
    return x


def encode_point(p: Point) -> bytes:
    """Canonical encoding of a point."""
    x, y = p
    return (y | (x & 1) << 255).to_bytes(32, "little")


_B: Point = (_x_from_y(4 * pow(5, -1, _P) % _P, 0) or 0, 4 * pow(5, -1, _P) % _P)


def _torsion() -> list[Point]:
    # A point of order 8: decode candidates until [4]T is the point (0, -1).
    for y in range(2, 1000):
        x = _x_from_y(y, 0)
        if x is None:
            continue
        t = _mul(_L, (x, y))  # kills the prime-order part, leaves torsion
        if _mul(4, t) != (0, 1):
            return [_mul(i, t) for i in range(8)]
    raise AssertionError("no torsion point found")


TORSION: list[Point] = _torsion()


def small_order_encodings() -> list[bytes]:
    """Every encoding of a small-order point, canonical and not (y >= p, x = 0 with sign set)."""
    out = []
    for x, y in TORSION:
        for yy in (y, y + _P):
            if yy >= 2**255:
                continue
            for sign in {x & 1, 1} if x == 0 else {x & 1}:
                out.append((yy | sign << 255).to_bytes(32, "little"))
    return sorted(set(out))


SMALL_ORDER = small_order_encodings()


def _scalar_from(seed: bytes) -> int:
    return int.from_bytes(hashlib.sha512(seed).digest(), "little") % _L


@functools.cache
def mixed_order_key(seed: bytes, torsion_index: int) -> tuple[int, bytes]:
    """A scalar and the public key aB + T (T a torsion point, so zip215 and Go's rule differ)."""
    a = _scalar_from(seed)
    return a, encode_point(_add(_mul(a, _B), TORSION[torsion_index % 8]))


def sign_with_scalar(a: int, public: bytes, message: bytes, nonce_seed: bytes) -> bytes:
    """An Ed25519 signature by the scalar *a* for the encoded *public* (honest arithmetic)."""
    r = _scalar_from(nonce_seed + message)
    big_r = encode_point(_mul(r, _B))
    k = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % _L
    return big_r + ((r + k * a) % _L).to_bytes(32, "little")


def crafted_signature(how: int, honest: bytes, small_r: bytes) -> bytes:
    """Variants of an honest signature that verifiers treat differently."""
    r, s = honest[:32], int.from_bytes(honest[32:], "little")
    variants = [
        honest,
        r + ((s + _L) % 2**256).to_bytes(32, "little"),  # S >= L (usually): refused
        small_r + bytes(32),  # small-order R, S = 0
        honest[:63],
        honest + b"\x00",
        bytes(64),
        r + ((s + 1) % _L).to_bytes(32, "little"),
        small_r + honest[32:],
    ]
    return variants[how % len(variants)]


# -- fixed key material ----------------------------------------------------------------

PRIVS = [NLPrivate.from_seed(bytes([i + 1]) * 32) for i in range(6)]
PUBS = [p.public().raw for p in PRIVS]


def signed(aum: AUM, signers: list[NLPrivate]) -> AUM:
    """*aum* with one real signature per signer over its sig-hash."""
    if not signers:
        return aum
    return aum.with_signatures(tuple(Signature(p.key_id, p.sign(aum.sig_hash)) for p in signers))


# -- CBOR-level perturbation -------------------------------------------------------------


def _head(major: int, n: int, rng: random.Random, nonmin: bool) -> bytes:
    widths = [(24, 1), (25, 2), (26, 4), (27, 8)]
    if n < 24 and not nonmin:
        return bytes([major << 5 | n])
    fitting = [(ai, w) for ai, w in widths if n < 1 << (8 * w)]
    ai, w = rng.choice(fitting) if nonmin else fitting[0]
    return bytes([major << 5 | ai]) + n.to_bytes(w, "big")


def perturbed_cbor(value: Any, rng: random.Random, p: float) -> bytes:
    """Encode *value* (as cbor2 decodes it) with random, mostly decodable, deviations.

    Non-minimal heads, indefinite lengths, unsorted or duplicated map keys,
    unknown fields, text keys for integer ones, undefined for null, byte
    strings as arrays of small integers, tags: each is applied at a node with
    probability *p*. Whether Tailscale's decoder accepts the result is for
    the oracle to say.
    """

    def go(v: Any) -> bytes:
        twist = rng.random() < p
        if twist and rng.random() < 0.08:
            return bytes([0xC0 | rng.randrange(24)]) + go(v)  # a tag
        if v is None:
            return b"\xf7" if twist else b"\xf6"
        if v is True or v is False:
            return b"\xf5" if v else b"\xf4"
        if isinstance(v, int):
            if v >= 0:
                return _head(0, v, rng, twist)
            return _head(1, -1 - v, rng, twist)
        if isinstance(v, bytes):
            if twist:
                c = rng.randrange(3)
                if c == 0:
                    cut = rng.randrange(len(v) + 1)
                    return b"\x5f" + go(v[:cut]) + go(v[cut:]) + b"\xff"
                if c == 1 and len(v) <= 40:
                    return _head(4, len(v), rng, False) + b"".join(
                        _head(0, b, rng, False) for b in v
                    )
            return _head(2, len(v), rng, twist) + v
        if isinstance(v, str):
            data = v.encode()
            if twist and rng.random() < 0.3:
                return b"\x7f" + _head(3, len(data), rng, False) + data + b"\xff"
            return _head(3, len(data), rng, twist) + data
        if isinstance(v, list):
            if twist and rng.random() < 0.3:
                return b"\x9f" + b"".join(go(x) for x in v) + b"\xff"
            return _head(4, len(v), rng, twist) + b"".join(go(x) for x in v)
        if isinstance(v, dict):
            items = list(v.items())
            if twist:
                c = rng.randrange(5)
                if c == 0:
                    rng.shuffle(items)
                elif c == 1:
                    items.append((rng.choice([6, 7, 13, 99, 1000, "x", "zz"]), rng.randrange(300)))
                elif c == 2 and items:
                    items.append(rng.choice(items))  # duplicate key
                elif c == 3 and items:
                    i = rng.randrange(len(items))
                    k, val = items[i]
                    items[i] = (str(k), val)  # "1" for 1
                elif c == 4:
                    body = b"".join(go(k) + go(x) for k, x in items)
                    return b"\xbf" + body + b"\xff"
            return _head(5, len(items), rng, twist and rng.random() < 0.3) + b"".join(
                go(k) + go(x) for k, x in items
            )
        raise TypeError(type(v))

    return go(value)


def byte_mutation(data: bytes, rng: random.Random) -> bytes:
    """One random byte-level mutation: flip, insert, delete, truncate or append."""
    b = bytearray(data)
    c = rng.randrange(5)
    if c == 0 and b:
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif c == 1:
        b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
    elif c == 2 and b:
        del b[rng.randrange(len(b))]
    elif c == 3 and b:
        del b[rng.randrange(len(b)) :]
    else:
        b += bytes([rng.randrange(256)])
    return bytes(b)


def _nest(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


def cap_variant(base: bytes, which: int, delta: int) -> bytes:
    """*base* (a canonical AUM map) with an extra field that sits at a decoder cap.

    *delta* is -1, 0 or +1 around: nesting depth 16, arrays of 4096
    elements, maps of 1024 pairs, and the 2^64-1 integer limit.
    """
    n = base[0] & 0x1F
    assert n < 23 and base[0] >> 5 == 5
    which %= 5
    if which == 0:  # nesting: the AUM map is level 1
        extra = _nest(16 - 2 + delta)
    elif which == 1:
        extra = b"\x99" + (4096 + delta).to_bytes(2, "big") + b"\x00" * (4096 + delta)
    elif which == 2:
        pairs = 1024 + delta - (n + 1)
        extra = (
            b"\xb9"
            + pairs.to_bytes(2, "big")
            + b"".join(b"\x19" + (1000 + i).to_bytes(2, "big") + b"\x00" for i in range(pairs))
        )
    elif which == 3:
        extra = b"\x1b" + (2**64 - 1 - (1 if delta < 0 else 0)).to_bytes(8, "big")
        if delta > 0:
            extra = b"\xc2\x49\x01" + bytes(8)  # 2^64 as a bignum tag
    else:
        extra = b"\x9f" * max(1, 15 + delta) + b"\xff" * max(1, 15 + delta)
    # Unknown field 99, placed last (its key sorts after the known ones).
    return bytes([0xA0 | (n + 1)]) + base[1:] + b"\x18\x63" + extra


# -- AUM values -------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)


def _opt_bytes(size: int) -> st.SearchStrategy[bytes | None]:
    return st.one_of(
        st.none(),
        st.just(b""),
        st.binary(min_size=size, max_size=size),
        st.binary(max_size=size + 3),
    )


@st.composite
def metas(draw: Any) -> dict[str, str] | None:
    c = draw(st.integers(0, 5))
    if c == 0:
        return None
    if c == 1:
        return {}
    if c == 2:  # around the 512-byte cap (keys + values)
        total = 512 + draw(st.integers(-1, 1))
        return {"k": "v" * (total - 1)}
    return draw(st.dictionaries(_TEXT, _TEXT, max_size=3))


@st.composite
def keys(draw: Any, publics: list[bytes] | None = None) -> Key:
    kind = draw(st.sampled_from([1, 1, 1, 1, 0, 2, 255]))
    votes = draw(st.one_of(st.integers(1, 4), st.sampled_from([0, 4096, 4097, 2**64 - 1])))
    if publics and draw(st.booleans()):
        public: bytes | None = draw(st.sampled_from(publics))
    else:
        public = draw(_opt_bytes(32))
    return Key(kind, votes, public, draw(metas()))


@st.composite
def states(draw: Any) -> State:
    c = draw(st.integers(0, 9))
    if c == 0:  # near the key cap
        n = 512 + draw(st.integers(-1, 1))
        ks: tuple[Key, ...] | None = tuple(Key(1, 1, i.to_bytes(4, "big") * 8) for i in range(n))
    else:
        ks = draw(st.one_of(st.none(), st.lists(keys(PUBS), max_size=4).map(tuple)))
    if c == 1:  # near the disablement cap
        n = 32 + draw(st.integers(-1, 1))
        dv: tuple[bytes, ...] | None = tuple(i.to_bytes(32, "big") for i in range(n))
    else:
        dv = draw(st.one_of(st.none(), st.lists(_opt_bytes(32), max_size=3).map(tuple)))
        if dv is not None and None in dv:
            dv = tuple(x or b"" for x in dv)
    ids = st.one_of(st.just(0), st.integers(1, 2**64 - 1), st.just(2**64 - 1))
    return State(draw(_opt_bytes(32)), dv, ks, draw(ids), draw(ids))


@st.composite
def aum_values(draw: Any) -> AUM:
    kind = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 5]), st.integers(6, 2**64 - 1)))
    sigs = draw(
        st.one_of(
            st.none(),
            st.lists(st.builds(Signature, _opt_bytes(32), _opt_bytes(64)), max_size=3).map(tuple),
        )
    )
    return AUM(
        kind,
        prev_aum_hash=draw(_opt_bytes(32)),
        key=draw(st.one_of(st.none(), keys(PUBS))),
        key_id=draw(st.one_of(_opt_bytes(32), st.sampled_from(PUBS))),
        state=draw(st.one_of(st.none(), states())),
        votes=draw(st.one_of(st.none(), st.integers(0, 5), st.just(2**64 - 1))),
        meta=draw(metas()),
        signatures=sigs,
    )


@st.composite
def aum_bytes(draw: Any) -> bytes:
    """AUM bytes: canonical, perturbed at CBOR level, byte-mutated, or at a decoder cap."""
    c = draw(st.integers(0, 11))
    if c >= 10:  # a realistic AUM, as nodes make them
        parent = draw(st.one_of(st.none(), st.binary(min_size=32, max_size=32)))
        aum = _next_aum(draw, None, parent, draw(st.integers(0, 99)), (1, 2))
        if parent is None and aum.message_kind != AUMKind.CHECKPOINT:
            aum = genesis_for(draw, [0])
        signers = [PRIVS[j] for j in draw(st.lists(st.integers(0, 5), max_size=2))]
        base = signed(aum, signers).to_bytes()
        c = draw(st.sampled_from([0, 0, 0, 2, 6, 8]))
    else:
        base = draw(aum_values()).to_bytes()
    rng = draw(st.randoms(use_true_random=False))
    if c <= 1:
        return base
    if c <= 5:
        return perturbed_cbor(cbor2.loads(base), rng, draw(st.sampled_from([0.03, 0.1, 0.3])))
    if c <= 7:
        data = base
        for _ in range(draw(st.integers(1, 3))):
            data = byte_mutation(data, rng)
        return data
    return cap_variant(base, draw(st.integers(0, 4)), draw(st.integers(-1, 1)))


# -- node-key signatures ---------------------------------------------------------------


@dataclass(frozen=True)
class NKSCase:
    """A node-key signature case: the authority, the node key and the signature bytes."""

    genesis: AUM
    node_key: bytes
    sig: bytes


@dataclass(frozen=True)
class Signer:
    """A key that can sign: a fixed honest key, a mixed-order key, or a small-order point."""

    public: bytes
    scalar: int | None = None  # None: small-order (no scalar; R small, S = 0 verifies)
    priv: NLPrivate | None = None

    def sign(self, msg: bytes) -> bytes:
        if self.priv is not None:
            return self.priv.sign(msg)
        if self.scalar is None:
            return SMALL_ORDER[len(msg) % len(SMALL_ORDER)] + bytes(32)
        return sign_with_scalar(self.scalar, self.public, msg, b"n")


def _signers(draw: Any) -> list[Signer]:
    out = [Signer(pub, priv=p) for p, pub in zip(PRIVS, PUBS, strict=True)]
    for i in range(2):
        a, pub = mixed_order_key(b"m%d" % i, draw(st.integers(1, 7)))
        out.append(Signer(pub, a))
    out.append(Signer(draw(st.sampled_from(SMALL_ORDER))))
    return out


def _with_sig(sig: NodeKeySignature, signer: Signer) -> NodeKeySignature:
    """*sig* signed by *signer*; direct and credential signatures name it by key ID first."""
    if sig.sig_kind != SigKind.ROTATION:
        sig = NodeKeySignature(
            sig.sig_kind, sig.pubkey, signer.public, None, sig.nested, sig.wrapping_pubkey
        )
    return sig.with_signature(signer.sign(sig.sig_hash))


@st.composite
def nks_cases(draw: Any) -> NKSCase:
    """Direct, credential and rotation chains (to depth 17) with crafted Ed25519 edges."""
    signers = _signers(draw)
    idx = st.integers(0, len(signers) - 1)
    # One honest key signs the genesis (the oracle bootstraps from it).
    anchor = draw(st.integers(0, len(PRIVS) - 1))
    trusted_idx = [
        anchor,
        *draw(st.lists(idx, max_size=3, unique=True).filter(lambda xs: anchor not in xs)),
    ]
    trusted = [Key(1, draw(st.integers(1, 3)), signers[i].public) for i in trusted_idx]
    if draw(st.integers(0, 9)) == 0:
        trusted.append(Key(1, 1, b"\x01\x02\x03\x04\x05"))  # a 5-byte public key
    genesis = signed(
        AUM(AUMKind.CHECKPOINT, state=State(None, (bytes(32),), tuple(trusted), 7, 9)),
        [PRIVS[anchor]],
    )
    node_keys = [bytes([0x40 + i]) * 32 for i in range(20)]
    depth = draw(st.one_of(st.integers(0, 3), st.integers(12, 17)))
    base_kind = draw(st.sampled_from([SigKind.DIRECT, SigKind.DIRECT, SigKind.CREDENTIAL]))
    signer = signers[draw(st.sampled_from([*trusted_idx, draw(idx)]))]
    wrap = signers[draw(idx)]
    if base_kind == SigKind.DIRECT:
        sig = NodeKeySignature(
            SigKind.DIRECT,
            pubkey=node_key_binary(node_keys[0] if depth else draw(st.sampled_from(node_keys[:2]))),
            wrapping_pubkey=draw(st.sampled_from([None, wrap.public])),
        )
    else:
        sig = NodeKeySignature(SigKind.CREDENTIAL, wrapping_pubkey=wrap.public)
    sig = _with_sig(sig, signer)
    for level in range(depth):
        rot_signer = wrap if draw(st.integers(0, 5)) else signers[draw(idx)]
        new_wrap = None
        if draw(st.integers(0, 6)) == 0:
            wrap = signers[draw(idx)]
            new_wrap = wrap.public
        rot = NodeKeySignature(
            SigKind.ROTATION,
            pubkey=node_key_binary(node_keys[level + 1]),
            nested=sig,
            wrapping_pubkey=new_wrap,
        )
        sig = _with_sig(rot, rot_signer)
    data = sig.to_bytes()
    c = draw(st.integers(0, 9))
    rng = draw(st.randoms(use_true_random=False))
    if c == 0:
        data = byte_mutation(data, rng)
    elif c == 1:
        data = perturbed_cbor(cbor2.loads(data), rng, 0.2)
    elif c == 2 and sig.signature:
        small_r = draw(st.sampled_from(SMALL_ORDER))
        data = sig.with_signature(
            crafted_signature(draw(st.integers(0, 7)), sig.signature, small_r)
        ).to_bytes()
    target = node_keys[depth] if draw(st.integers(0, 7)) else node_keys[19]
    return NKSCase(genesis, target, data)


@st.composite
def ed25519_triples(draw: Any) -> tuple[bytes, bytes, bytes]:
    """(public, message, signature) around both verification rules."""
    msg = draw(st.one_of(st.binary(max_size=40), st.just(b"Zcash")))
    c = draw(st.integers(0, 3))
    if c == 0:
        who = draw(st.integers(0, len(PRIVS) - 1))
        pub, honest = PUBS[who], PRIVS[who].sign(msg)
    elif c == 1:
        a, pub = mixed_order_key(draw(st.binary(min_size=1, max_size=4)), draw(st.integers(0, 7)))
        honest = sign_with_scalar(a, pub, msg, b"x")
    else:
        pub = draw(st.sampled_from(SMALL_ORDER))
        honest = draw(st.sampled_from(SMALL_ORDER)) + draw(
            st.one_of(st.just(bytes(32)), st.binary(min_size=32, max_size=32))
        )
    small_r = draw(st.sampled_from(SMALL_ORDER))
    sig = crafted_signature(draw(st.integers(0, 7)), honest, small_r)
    if draw(st.integers(0, 9)) == 0:
        pub = pub[:31] if draw(st.booleans()) else pub[:31] + bytes([pub[31] ^ 0x80])
    return pub, msg, sig


# -- chains -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainCase:
    """Stored AUMs (in commit order) and the last-active-ancestor hint."""

    aums: list[AUM]
    hint: bytes | None


def genesis_for(draw: Any, signed_by: list[int] | None = None) -> AUM:
    n = draw(st.integers(1, 4))
    ks = [Key(1, draw(st.integers(1, 3)), PUBS[i]) for i in range(n)]
    if signed_by is None and draw(st.integers(0, 14)) == 0:
        ks.insert(draw(st.integers(0, n)), Key(draw(st.sampled_from([0, 2, 9])), 1, b"\x09" * 32))
    ids = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    g = AUM(AUMKind.CHECKPOINT, state=State(None, (bytes(32), b"\x01" * 32), tuple(ks), *ids))
    return signed(g, [PRIVS[i] for i in (signed_by or [])])


_KINDS: tuple[int, ...] = (
    AUMKind.NO_OP,
    AUMKind.ADD_KEY,
    AUMKind.REMOVE_KEY,
    AUMKind.UPDATE_KEY,
    AUMKind.CHECKPOINT,
    AUMKind.NO_OP,
    0,
    77,
)
# Mostly kinds that apply, so that informed batches are often accepted.
_TAME_KINDS: tuple[int, ...] = (*_KINDS, *[AUMKind.NO_OP] * 5, AUMKind.ADD_KEY)


def _next_aum(
    draw: Any,
    parent: AUM | None,
    parent_hash: bytes | None,
    serial: int,
    state_ids: tuple[int, int],
    kinds: tuple[int, ...] = _KINDS,
) -> AUM:
    kind = draw(st.sampled_from(kinds))
    pub = draw(st.sampled_from(PUBS))
    odd = draw(st.integers(0, 19)) == 0  # an odd key kind or key-ID length
    kw: dict[str, Any] = {}
    if kind == AUMKind.ADD_KEY:
        key_kind = draw(st.sampled_from([0, 2])) if odd else 1
        meta = draw(st.sampled_from([None, {"n": "1"}]))
        kw["key"] = Key(key_kind, draw(st.integers(1, 3)), pub, meta)
    elif kind in (AUMKind.REMOVE_KEY, AUMKind.UPDATE_KEY):
        kw["key_id"] = draw(st.sampled_from([pub[:31], pub + b"\x00", b""])) if odd else pub
        if kind == AUMKind.UPDATE_KEY:
            kw["votes"] = draw(st.sampled_from([None, 1, 2, 5, 0]))
            kw["meta"] = draw(st.sampled_from([None, {}, {"a": "b"}]))
    elif kind == AUMKind.CHECKPOINT:
        n = draw(st.integers(1, 3))
        ids = state_ids if draw(st.integers(0, 5)) else (9, 9)
        ks = [Key(1, 1 + i % 2, PUBS[i]) for i in range(n)]
        if odd:
            ks.insert(draw(st.integers(0, n)), Key(draw(st.sampled_from([0, 2])), 1, b"\x09" * 32))
        kw["state"] = State(None, (bytes(32),), tuple(ks), *ids)
    else:
        kw["key_id"] = serial.to_bytes(4, "big")  # distinct bytes, distinct hash
    return AUM(int(kind), prev_aum_hash=parent_hash, **kw)


@st.composite
def chain_cases(draw: Any, signed_chain: bool = False) -> ChainCase:
    """A forked AUM tree from a checkpoint, with key changes, checkpoints and odd members.

    Unsigned (fake signatures naming trusted or unknown keys, which is what
    fork choice weighs) unless *signed_chain*; sometimes with orphans, a
    second genesis, a sibling whose signature key ID is not 32 bytes, or
    AUMs left out of the store.
    """
    g = genesis_for(draw, [0] if signed_chain else None)
    ids = (g.state.state_id1, g.state.state_id2) if g.state else (0, 0)
    aums = [g]
    for i in range(draw(st.integers(0, 14))):
        fork = draw(st.integers(0, 3)) == 0
        c = draw(st.integers(0, 29))
        if c == 0:
            parent_hash: bytes | None = draw(st.binary(min_size=32, max_size=32))
        elif c == 1:
            parent_hash = None  # another genesis-like AUM
        else:
            parent_hash = (draw(st.sampled_from(aums)) if fork else aums[-1]).hash
            if c == 2:  # a parent hash that is not 32 bytes: Parent() pads or cuts it
                parent_hash = draw(st.sampled_from([parent_hash + b"\x00", parent_hash[:31]]))
        aum = _next_aum(draw, None, parent_hash, i, ids)
        if signed_chain:
            aum = signed(aum, [PRIVS[j] for j in draw(st.lists(st.integers(0, 4), max_size=2))])
        else:
            sigs = [
                Signature(PUBS[j], bytes(64)) for j in draw(st.lists(st.integers(0, 5), max_size=3))
            ]
            if draw(st.integers(0, 24)) == 0:
                sigs.append(Signature(b"\x01" * draw(st.sampled_from([0, 31, 33])), bytes(64)))
            aum = aum.with_signatures(tuple(sigs) or None)
        aums.append(aum)
    stored = [a for a in aums if draw(st.integers(0, 11))] or [g]
    order = draw(st.permutations(stored)) if draw(st.booleans()) else stored
    hint_choice = draw(st.integers(0, 4))
    if hint_choice == 0:
        hint = None
    elif hint_choice == 1:
        hint = draw(st.binary(min_size=32, max_size=32))
    elif hint_choice == 2:
        hint = draw(st.sampled_from(aums)).hash
    else:
        hint = g.hash
    return ChainCase(list(order), hint)


# -- inform and sync -----------------------------------------------------------------------


@dataclass(frozen=True)
class InformCase:
    """A genesis and the batches informed after bootstrapping from it."""

    genesis: AUM
    batches: list[list[AUM]]


@st.composite
def inform_cases(draw: Any) -> InformCase:
    """Batches of really signed AUMs: valid extensions, forks, bad signatures, repeats."""
    g = genesis_for(draw, draw(st.sampled_from([[0], [0], [0], [0], [0, 1], [], [5]])))
    trusted = len(g.state.keys or ()) if g.state else 1
    ids = (g.state.state_id1, g.state.state_id2) if g.state else (0, 0)
    pool = [g]
    batches = []
    serial = 0
    for _ in range(draw(st.integers(1, 4))):
        batch: list[AUM] = []
        for _ in range(draw(st.integers(0, 5))):
            serial += 1
            parent = batch[-1] if batch and draw(st.integers(0, 2)) else draw(st.sampled_from(pool))
            aum = _next_aum(draw, parent, parent.hash, serial, ids, _TAME_KINDS)
            c = draw(st.integers(0, 19))
            who = st.integers(0, 5) if draw(st.integers(0, 7)) == 0 else st.integers(0, trusted - 1)
            signers = [PRIVS[j] for j in draw(st.lists(who, min_size=1, max_size=2))]
            aum = signed(aum, signers)
            if c == 0 and aum.signatures:
                sig = aum.signatures[0]
                bad = crafted_signature(
                    draw(st.integers(1, 7)), sig.signature or b"", SMALL_ORDER[1]
                )
                aum = aum.with_signatures((Signature(sig.key_id, bad), *aum.signatures[1:]))
            elif c == 1:
                aum = aum.with_signatures(None)
            batch.append(aum)
        if batch and draw(st.integers(0, 4)) == 0:
            batch = draw(st.permutations(batch))
        if draw(st.integers(0, 5)) == 0:
            batch.append(draw(st.sampled_from(pool)))  # something already known
        pool.extend(batch)
        batches.append(batch)
    return InformCase(g, batches)


@dataclass(frozen=True)
class SyncCase:
    """Two nodes' stores (AUMs and hints), usually sharing a prefix; *shape* names the draw."""

    local: ChainCase
    remote: ChainCase
    shape: str = ""


# Lengths where the two generations of Tailscale's sync rules (tka/sync.py)
# turn: the released SyncOffer lists the AUMs 4, 16, 64 and 256 steps back
# (and the oldest twice when it is one of them); both the offer's walk and the
# head-intersection walk stop after 400 steps (released) or 1000 (main).
_SYNC_SKIP_EDGES = (3, 4, 5, 15, 16, 17, 63, 64, 65)
_SYNC_CAP_EDGES = (255, 256, 257, 399, 400, 401, 999, 1000, 1001)


def _sync_length(draw: Any) -> int:
    """A chain or extension length: mostly small, often at a skip point, now and then at a cap."""
    mode = draw(st.integers(0, 19))
    if mode < 12:
        return int(draw(st.integers(0, 6)))
    if mode < 18:
        return int(draw(st.sampled_from(_SYNC_SKIP_EDGES)))
    return int(draw(st.sampled_from(_SYNC_CAP_EDGES)))


@st.composite
def sync_cases(draw: Any) -> SyncCase:
    """Two nodes whose chains share a prefix, then extend it (a fork when both do).

    Lengths lean to where the sync rules of Tailscale's releases and of its
    main branch differ (see ``_SYNC_SKIP_EDGES``). Checkpoints come at a rate
    drawn per case (none, one in ten, one in three); a side may be compacted
    (its oldest AUM a later checkpoint, named by its hint, as after
    ``Compact``), and now and then the other side holds an unrelated authority.
    """
    g = genesis_for(draw, [0])
    rng = draw(st.randoms(use_true_random=False))
    checkpoint_rate = draw(st.sampled_from([0.0, 0.1, 0.1, 0.33]))
    serial = 0

    def extend(start: list[AUM], n: int) -> list[AUM]:
        nonlocal serial
        out = list(start)
        # Kinds that always apply, so both sides open: sync is under test.
        # Checkpoints repeat the genesis state (its state IDs included).
        genesis_state = out[0].state
        assert genesis_state is not None
        for _ in range(n):
            serial += 1
            r = rng.random()
            if r < checkpoint_rate:
                aum = AUM(AUMKind.CHECKPOINT, prev_aum_hash=out[-1].hash, state=genesis_state)
            else:
                aum = AUM(
                    AUMKind.NO_OP if r < 0.93 else 77,
                    prev_aum_hash=out[-1].hash,
                    key_id=serial.to_bytes(4, "big"),
                )
            out.append(signed(aum, [PRIVS[rng.choice([0, 0, 0, 1])]]))
        return out

    def compacted(chain: list[AUM]) -> tuple[list[AUM], str]:
        # Drop everything before a later checkpoint, which becomes the oldest.
        marks = [i for i, a in enumerate(chain) if i and a.message_kind == AUMKind.CHECKPOINT]
        if not marks or draw(st.integers(0, 3)):
            return chain, ""
        i = marks[draw(st.integers(0, len(marks) - 1))]
        return chain[i:], f" compacted@{i}"

    common = extend([g], _sync_length(draw))
    ext_local, ext_remote = _sync_length(draw), _sync_length(draw)
    local = extend(common, ext_local)
    if draw(st.integers(0, 29)) == 0:
        other = genesis_for(draw, [0])
        remote = extend([other], ext_remote)
        shape = "unrelated"
    else:
        remote = extend(common, ext_remote)
        shape = f"common={len(common) - 1} local+{ext_local} remote+{ext_remote}"
    sides = []
    for name, chain in (("local", local), ("remote", remote)):
        chain, how = compacted(chain)
        if how:
            shape += f" {name}{how}"
        hint: bytes | None = chain[0].hash
        if not how and draw(st.integers(0, 9)) == 0:
            hint = None
        sides.append(ChainCase(chain, hint))
    return SyncCase(sides[0], sides[1], shape)


# -- on-disk store mutations ------------------------------------------------------------

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ALPHA_SET = frozenset(_ALPHABET)


def alias_name(name: str, rng: random.Random) -> str:
    """Another file name Go's decoder reads as the same hash (padding bits, newlines)."""
    if rng.random() < 0.75:
        v = _ALPHABET.index(name[-1])
        other = (v & 16) | rng.choice([x for x in range(16) if x != (v & 15)])
        return name[:-1] + _ALPHABET[other]
    # Go drops \r and \n before decoding: a 52-character name with one of
    # them is a shorter text that decodes to a hash with a zero tail.
    i = rng.randrange(53)
    return (name[:i] + rng.choice("\r\n") + name[i:])[:52]


def _alias_path(root: str, f: str, rng: random.Random) -> str:
    """An alias of entry *f*: beside it, or in another prefix directory (listed first or last)."""
    d = os.path.dirname(f)
    if rng.random() < 0.4:
        d = os.path.join(root, rng.choice(["22", "AA", "ZZ", "77"]))
        os.makedirs(d, exist_ok=True)
    return os.path.join(d, alias_name(os.path.basename(f), rng))


def _files(root: str) -> list[str]:
    out = []
    for d in sorted(os.listdir(root)):
        full = os.path.join(root, d)
        if os.path.isdir(full) and not os.path.islink(full):
            out.extend(os.path.join(full, f) for f in sorted(os.listdir(full)))
    return out


def _mutate_once(root: str, rng: random.Random, aums: list[AUM]) -> str:
    # Entries named by a hash (junk added by earlier damage is left out).
    files = [
        f
        for f in _files(root)
        if os.path.isfile(f) and len(b := os.path.basename(f)) == 52 and set(b) <= _ALPHA_SET
    ]
    # Damage Go survives (aliases, junk, symlinked prefixes, hints) is drawn
    # more often than damage that ends every open.
    c = rng.choice([0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 7, 7, 8, 10, 5, 6, 9, 11, 12])
    if c == 0 and files:
        f = rng.choice(files)
        alias = _alias_path(root, f, rng)
        if not os.path.exists(alias):
            shutil.copyfile(f, alias)
        return "alias copy"
    if c == 1 and files:
        f = rng.choice(files)
        alias = _alias_path(root, f, rng)
        if not os.path.exists(alias):
            with open(alias, "wb") as out:
                out.write(rng.randbytes(rng.randrange(20)))
        return "alias junk"
    if c == 2 and files:
        f = rng.choice(files)
        alias = _alias_path(root, f, rng)
        if not os.path.exists(alias):
            os.mkdir(alias)
        return "alias directory"
    if c == 3:
        d = os.path.join(root, rng.choice(["AA", "ZZ", "77", "tmp", ".x"]))
        os.makedirs(d, exist_ok=True)
        name = rng.choice([".DS_Store", "junk", "A" * 51, "A" * 53, "a" * 52, "A" * 50 + "=="])
        with open(os.path.join(d, name), "wb") as out:
            out.write(b"\xa0")
        return "junk file"
    if c == 4 and files:  # a prefix directory replaced by a symlink to it
        d = os.path.dirname(rng.choice(files))
        if not os.path.islink(d):
            os.rename(d, d + ".real")
            os.symlink(os.path.basename(d) + ".real", d)
        return "symlinked prefix"
    if c == 5 and files:
        f = rng.choice(files)
        with open(f, "rb") as inp:
            data = inp.read()
        with open(f, "wb") as out:
            out.write(data[: rng.randrange(len(data) + 1)])
        return "truncated"
    if c == 6 and files:
        f = rng.choice(files)
        with open(f, "ab") as out:
            out.write(rng.choice([b"\xff", b"\x00", cbor2.dumps({4: 5})]))
        return "trailing bytes"
    if c == 7:
        laa = os.path.join(root, "last_active_ancestor")
        choice = rng.randrange(5)
        if choice == 0:
            if os.path.exists(laa):
                os.unlink(laa)
        else:
            with open(laa, "wb") as out:
                out.write(
                    [b"", rng.randbytes(32), rng.choice(aums).hash, rng.randbytes(31)][choice - 1]
                )
        return "last_active_ancestor"
    if c == 8 and files:  # a purged entry
        f = rng.choice(files)
        with open(f, "rb") as inp:
            data = inp.read()
        try:
            entry = cbor2.loads(data)
        except Exception:
            return "purge skipped"
        if isinstance(entry, dict):
            entry[4] = rng.choice([1, 0, -1])
            with open(f, "wb") as out:
                out.write(cbor2.dumps(entry, canonical=True))
        return "purged"
    if c == 9 and files:  # moved to the wrong prefix directory
        f = rng.choice(files)
        d = os.path.join(root, "QQ")
        os.makedirs(d, exist_ok=True)
        os.rename(f, os.path.join(d, os.path.basename(f)))
        return "misplaced"
    if c == 10 and len(files) > 1:  # a file that is a symlink to another entry
        f, g = rng.sample(files, 2)
        os.unlink(f)
        os.symlink(g, f)
        return "file symlink"
    if c == 11 and files:
        f = rng.choice(files)
        os.unlink(f)
        os.mkdir(f)
        return "entry is a directory"
    if c == 12 and files:
        f = rng.choice(files)
        with open(f, "wb") as out:
            out.write(cbor2.dumps({2: None, 3: 5}) if rng.random() < 0.5 else b"")
        return "empty entry"
    return "no-op"


def mutate_tree(root: str, rng: random.Random, aums: list[AUM], count: int) -> list[str]:
    """Apply *count* random damages to a ChonkDir tree; returns what was done."""
    return [_mutate_once(root, rng, aums) for _ in range(count)]


def hashes_text(aums: list[AUM]) -> list[str]:
    """Sorted base32 hashes."""
    return sorted(hash_to_text(a.hash) for a in aums)


__all__ = [
    "PRIVS",
    "PUBS",
    "SMALL_ORDER",
    "ChainCase",
    "InformCase",
    "NKSCase",
    "SyncCase",
    "aum_bytes",
    "byte_mutation",
    "cap_variant",
    "chain_cases",
    "crafted_signature",
    "ed25519_triples",
    "inform_cases",
    "mixed_order_key",
    "mutate_tree",
    "nks_cases",
    "perturbed_cbor",
    "sign_with_scalar",
    "signed",
    "sync_cases",
]
