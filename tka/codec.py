"""Strict CBOR in, canonical (CTAP2) CBOR out: the byte layer under every wire type.

Twin of the decoder options in Tailscale's ``tka.go`` (``cborDecOpts``) and the
encoder mode in ``aum.go`` (``cbor.CTAP2EncOptions``), as implemented by
fxamacker/cbor v2.9.

Decoding is done in two steps, as Tailscale's library does it:

1. :func:`parse` checks that the bytes are one well-formed data item under the
   strict rules (no indefinite lengths, no tags, nesting at most 16 levels,
   arrays at most 4096 elements, maps at most 1024 pairs, no trailing bytes)
   and turns them into a light tree of Python values. Nothing is rejected
   here that Go's well-formedness pass accepts: duplicate keys and bad UTF-8
   only matter where a value is decoded into a typed field, and a field the
   decoder does not know is skipped without looking inside it.
2. :mod:`tka._schema` fills typed values from that tree with Go's decoding
   rules (null keeps a field's zero value, byte strings may come as arrays of
   small integers, ...), rejecting duplicate keys and bad UTF-8 there.

Encoding uses cbor2's canonical mode, which for the integer-keyed maps and the
text-keyed metadata maps of tka produces exactly the CTAP2 form: shortest
integers and lengths, definite lengths, keys ordered by encoded length then
bytewise. The wire types build their maps already in that key order and use
:func:`encode_ordered`, which gives the same bytes without the sorting pass
(several times faster, and hashing AUMs and signatures is a hot path).

:func:`loads_plain` is the C decoder the fast decoding paths of the wire types
start from (see :meth:`tka.aum.AUM.from_bytes`); it is never trusted on its
own.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, Final

import cbor2

from tka.errors import DecodeError
from tka.limits import CBOR_MAX_ARRAY_ELEMENTS, CBOR_MAX_MAP_PAIRS, CBOR_MAX_NESTED_LEVELS

__all__ = [
    "BadText",
    "CMap",
    "Simple",
    "encode",
    "encode_ordered",
    "head_size",
    "loads_plain",
    "ordered_map",
    "parse",
    "parse_first",
]


class CMap:
    """A decoded CBOR map: its (key, value) pairs in wire order, duplicates kept.

    Kept as pairs rather than a dict because whether a repeated key is an
    error depends on the type it is decoded into, which only the schema knows.
    """

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[Any, Any]] | None = None) -> None:
        self.pairs = pairs if pairs is not None else []

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"CMap({self.pairs!r})"


class BadText:
    """A CBOR text string whose bytes are not valid UTF-8.

    Go only checks UTF-8 when it decodes a text string into a typed value, so
    the check is deferred to the schema; an unknown field holding bad text is
    skipped without error, as in Tailscale.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        return f"BadText({self.raw!r})"


class Simple:
    """A CBOR simple value other than false/true/null/undefined (major type 7)."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Simple({self.value})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Simple) and other.value == self.value

    def __hash__(self) -> int:
        return hash(("simple", self.value))


_FLOAT16: Final = struct.Struct(">e")
_FLOAT32: Final = struct.Struct(">f")
_FLOAT64: Final = struct.Struct(">d")
_MAJOR_NAMES: Final = (
    "positive integer",
    "negative integer",
    "byte string",
    "text string",
    "array",
    "map",
    "tag",
    "primitive",
)


class _Parser:
    """Single-pass strict parser over one buffer."""

    __slots__ = ("data", "off")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.off = 0

    def _need(self, n: int) -> None:
        if len(self.data) - self.off < n:
            raise DecodeError(f"cbor: unexpected end of data at offset {len(self.data)}")

    def _head(self) -> tuple[int, int, int]:
        """Read an item head; return (major type, additional info, argument)."""
        self._need(1)
        ib = self.data[self.off]
        self.off += 1
        major, ai = ib >> 5, ib & 0x1F
        if ai < 24:
            return major, ai, ai
        if ai == 24:
            self._need(1)
            val = self.data[self.off]
            self.off += 1
            if major == 7 and val < 32:
                raise DecodeError(f"cbor: invalid simple value {val} at offset {self.off - 2}")
            return major, ai, val
        if ai in (25, 26, 27):
            size = 1 << (ai - 24)
            self._need(size)
            val = int.from_bytes(self.data[self.off : self.off + size], "big")
            self.off += size
            return major, ai, val
        at = self.off - 1
        if ai == 31:
            if major in (2, 3, 4, 5):
                raise DecodeError(
                    f"cbor: indefinite-length {_MAJOR_NAMES[major]} at offset {at} is not allowed"
                )
            if major == 7:
                raise DecodeError(f"cbor: unexpected break code at offset {at}")
        raise DecodeError(
            f"cbor: invalid additional information {ai} for {_MAJOR_NAMES[major]} at offset {at}"
        )

    def item(self, depth: int) -> Any:
        start = self.off
        major, ai, val = self._head()
        if major == 0:
            return val
        if major == 1:
            return -1 - val
        if major == 2 or major == 3:
            self._need(val)
            raw = self.data[self.off : self.off + val]
            self.off += val
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return BadText(raw)
        if major == 4 or major == 5:
            depth += 1
            if depth > CBOR_MAX_NESTED_LEVELS:
                raise DecodeError(
                    f"cbor: nesting deeper than {CBOR_MAX_NESTED_LEVELS} levels at offset {start}"
                )
            if major == 4:
                if val > CBOR_MAX_ARRAY_ELEMENTS:
                    raise DecodeError(
                        f"cbor: array of {val} elements at offset {start}, "
                        f"max {CBOR_MAX_ARRAY_ELEMENTS}"
                    )
                return [self.item(depth) for _ in range(val)]
            if val > CBOR_MAX_MAP_PAIRS:
                raise DecodeError(
                    f"cbor: map of {val} pairs at offset {start}, max {CBOR_MAX_MAP_PAIRS}"
                )
            pairs = []
            for _ in range(val):
                k = self.item(depth)
                pairs.append((k, self.item(depth)))
            return CMap(pairs)
        if major == 6:
            raise DecodeError(f"cbor: tag at offset {start} is not allowed")
        # Major type 7: simple values and floats.
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22 or ai == 23:
            # null and undefined: Go treats both as nil.
            return None
        if ai == 25:
            return _FLOAT16.unpack(val.to_bytes(2, "big"))[0]
        if ai == 26:
            return _FLOAT32.unpack(val.to_bytes(4, "big"))[0]
        if ai == 27:
            return _FLOAT64.unpack(val.to_bytes(8, "big"))[0]
        return Simple(val)


def parse(data: bytes) -> Any:
    """Parse *data* as exactly one strict CBOR item and return its tree.

    Maps become :class:`CMap`, invalid UTF-8 text becomes :class:`BadText`,
    null and undefined become ``None``, other simple values :class:`Simple`.
    Raises :class:`~tka.errors.DecodeError` on anything Tailscale's decoder
    refuses before looking at types (caps included).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"cbor: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DecodeError("cbor: no data")
    p = _Parser(data)
    tree = p.item(0)
    if p.off != len(data):
        raise DecodeError(
            f"cbor: {len(data) - p.off} bytes of extraneous data starting at offset {p.off}"
        )
    return tree


def parse_first(data: bytes) -> tuple[Any, int]:
    """Parse the first strict CBOR item of *data*; return its tree and where it ends.

    Bytes after the first item are not looked at, as with Go's stream
    ``Decoder`` (Tailscale's filesystem store reads its files that way).
    The item itself obeys the same rules as in :func:`parse`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"cbor: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DecodeError("cbor: no data")
    p = _Parser(data)
    tree = p.item(0)
    return tree, p.off


def encode(value: Any) -> bytes:
    """Encode *value* (dicts, lists, ints, bytes, str, None) as canonical CTAP2 CBOR."""
    return cbor2.dumps(value, canonical=True)


def encode_ordered(value: Any) -> bytes:
    """Encode *value* whose maps are all already in canonical key order.

    For the values the wire types hand over (ints, bytes, str, None, lists and
    dicts) cbor2's default mode writes exactly what its canonical mode writes
    -- shortest integers and lengths, definite lengths, no tags -- except that
    it keeps each dict's own key order instead of sorting. So when every dict
    is built in canonical order (the integer-keyed structs list their keys in
    ascending order, all below 24 so one byte each; text-keyed maps go through
    :func:`ordered_map`), the bytes are those of :func:`encode`.
    """
    return _dumps(value)


def head_size(argument: int) -> int:
    """Length of the shortest CBOR head for *argument* (an unsigned integer or a length).

    With it, the position of a field inside canonical bytes can be computed
    from the decoded values, without encoding anything.
    """
    if argument < 24:
        return 1
    if argument < 0x100:
        return 2
    if argument < 0x10000:
        return 3
    if argument < 0x100000000:
        return 5
    return 9


def _canonical_key(item: tuple[Any, Any]) -> tuple[int, bytes]:
    enc = encode(item[0])
    return len(enc), enc


def ordered_map(mapping: dict[Any, Any]) -> dict[Any, Any]:
    """*mapping* with its keys in canonical order (encoded length, then bytewise)."""
    return dict(sorted(mapping.items(), key=_canonical_key))


def loads_plain(data: bytes) -> Any:
    """Decode *data* with cbor2's C decoder, lax as it is; ``None`` when it refuses.

    (``None`` also for the bytes of CBOR null; every caller wants a map.)

    Only a starting point for the fast paths of the wire types: cbor2 ignores
    trailing bytes, accepts non-shortest lengths, duplicate keys and
    indefinite lengths, and turns many tags into Python objects (some of which
    re-encode to the same bytes). A fast path trusts the result only after
    checking every node's exact type and that re-encoding it gives back
    *data* byte for byte.
    """
    try:
        return _loads(data)
    except Exception:
        # Anything cbor2 refuses (or chokes on: huge bignums raise ValueError)
        # goes to the strict parser, which gives the authoritative error.
        return None


_dumps: Final = cbor2.dumps
_loads: Final = cbor2.loads
