"""Go's rules for filling typed values from a parsed CBOR tree.

Tailscale decodes AUMs and signatures with fxamacker/cbor into Go structs, and
several of that library's rules change which inputs are accepted and what
they mean. This module reproduces them, one function per Go type, so the wire
types in :mod:`tka.aum`, :mod:`tka.key`, :mod:`tka.state` and :mod:`tka.sig`
can say *what* they hold while this module decides *how* it may be spelled:

* a CBOR null or undefined leaves a plain field at its zero value and sets a
  pointer, slice or map field to nil (``None`` here);
* struct fields match integer keys or the same number written as text
  (``"1"`` matches field 1); other keys are unknown and skipped, but two
  spellings of one field, or a repeated unknown key, are duplicates;
* a byte-string field also accepts an array of small unsigned integers, and a
  fixed-size ``[32]byte`` field zero-pads or truncates what it is given;
* UTF-8 is checked only for text that lands in a typed field.

Every failure raises :class:`~tka.errors.DecodeError` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from tka.codec import BadText, CMap, Simple
from tka.errors import DecodeError
from tka.limits import CBOR_MAX_ARRAY_ELEMENTS, CBOR_MAX_MAP_PAIRS

__all__ = [
    "Field",
    "fill_bytes",
    "fill_fixed_bytes",
    "fill_list",
    "fill_str_map",
    "fill_struct",
    "fill_uint",
    "key_shapes",
    "plain_keys_ok",
    "plain_list",
    "plain_text_map",
    "plain_uint",
]

_INT64_MIN: Final = -(1 << 63)

#: A field filler: takes the CBOR node and a description of where it is.
Filler = Callable[[Any, str], Any]
#: (attribute name, filler, zero value) for one struct field.
Field = tuple[str, Filler, Any]


def _kind(node: Any) -> str:
    if isinstance(node, bool):
        return "bool"
    if isinstance(node, int):
        return "negative integer" if node < 0 else "integer"
    if isinstance(node, bytes):
        return "byte string"
    if isinstance(node, (str, BadText)):
        return "text string"
    if isinstance(node, CMap):
        return "map"
    if isinstance(node, list):
        return "array"
    if isinstance(node, float):
        return "float"
    return "simple value"


def fill_uint(node: Any, bits: int, where: str, zero: int | None = 0) -> int | None:
    """Decode an unsigned integer of *bits* bits; CBOR nil gives *zero*.

    Pass ``zero=None`` for a pointer field (Go's ``*uint``), where nil stays nil.
    Unassigned simple values count as their number, as fxamacker/cbor has it.
    """
    if node is None:
        return zero
    if isinstance(node, bool) or not isinstance(node, (int, Simple)):
        raise DecodeError(f"{where}: cannot decode {_kind(node)} into an unsigned integer")
    value = node.value if isinstance(node, Simple) else node
    if value < 0:
        raise DecodeError(f"{where}: negative integer {value} for an unsigned field")
    if value >> bits:
        raise DecodeError(f"{where}: {value} overflows a {bits}-bit unsigned integer")
    return value


def _byte_elements(items: list[Any], where: str) -> bytes:
    out = bytearray(len(items))
    for i, item in enumerate(items):
        v = fill_uint(item, 8, f"{where}[{i}]")
        out[i] = v or 0
    return bytes(out)


def fill_bytes(node: Any, where: str) -> bytes | None:
    """Decode a Go ``[]byte``: a byte string or an array of bytes; nil is ``None``."""
    if node is None:
        return None
    if isinstance(node, bytes):
        return node
    if isinstance(node, list):
        return _byte_elements(node, where)
    raise DecodeError(f"{where}: cannot decode {_kind(node)} into a byte string")


def fill_fixed_bytes(node: Any, size: int, where: str) -> bytes | None:
    """Decode a Go ``*[size]byte``: shorter input is zero-padded, longer truncated.

    Array elements past *size* are skipped unchecked, as Go skips them.
    """
    if node is None:
        return None
    if isinstance(node, bytes):
        return node[:size].ljust(size, b"\x00")
    if isinstance(node, list):
        return _byte_elements(node[:size], where).ljust(size, b"\x00")
    raise DecodeError(f"{where}: cannot decode {_kind(node)} into a {size}-byte array")


def _text(node: Any, where: str) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, BadText):
        raise DecodeError(f"{where}: invalid UTF-8 in text string")
    raise DecodeError(f"{where}: cannot decode {_kind(node)} into a text string")


def fill_str_map(node: Any, where: str) -> dict[str, str] | None:
    """Decode a Go ``map[string]string``; nil is ``None``, an empty map is ``{}``.

    Go reuses the key and value variables between entries and a nil leaves
    them untouched, so a null key or value repeats the previous entry's
    (``""`` for the first); a key seen twice is an error.
    """
    if node is None:
        return None
    if not isinstance(node, CMap):
        raise DecodeError(f"{where}: cannot decode {_kind(node)} into a string map")
    out: dict[str, str] = {}
    key = value = ""
    for k, v in node:
        if k is not None:
            key = _text(k, f"{where} key")
        if v is not None:
            value = _text(v, f"{where}[{key!r}]")
        if key in out:
            raise DecodeError(f"{where}: duplicate key {key!r}")
        out[key] = value
    return out


def fill_list(node: Any, elem: Filler, where: str) -> list[Any] | None:
    """Decode a Go slice whose elements are filled by *elem*; nil is ``None``."""
    if node is None:
        return None
    if not isinstance(node, list):
        raise DecodeError(f"{where}: cannot decode {_kind(node)} into an array")
    return [elem(item, f"{where}[{i}]") for i, item in enumerate(node)]


def fill_struct(node: Any, fields: dict[int, Field], where: str) -> dict[str, Any]:
    """Decode a Go struct whose fields carry ``keyasint`` CBOR tags.

    Returns the attribute values (zero values for absent fields). A CBOR nil
    gives the zero struct; callers with a pointer field check for nil first.
    """
    values = {name: zero for name, _, zero in fields.values()}
    if node is None:
        return values
    if not isinstance(node, CMap):
        raise DecodeError(f"{where}: cannot decode {_kind(node)} into a map")
    seen: set[int] = set()
    unknown: set[object] = set()
    for key, value in node:
        field_id: int | None = None
        if isinstance(key, str):
            # Go matches text keys against the field's name, which for a
            # keyasint field is its number written out.
            if key.isdigit() and key.isascii() and str(int(key)) == key and int(key) in fields:
                field_id = int(key)
        elif isinstance(key, BadText):
            raise DecodeError(f"{where}: invalid UTF-8 in map key")
        elif isinstance(key, int) and not isinstance(key, bool):
            if key < _INT64_MIN:
                raise DecodeError(f"{where}: map key {key} overflows a 64-bit integer")
            if key in fields:
                field_id = key
        else:
            raise DecodeError(f"{where}: map key of type {_kind(key)} cannot name a field")
        if field_id is None:
            # Unknown fields are skipped unread (forward compatibility), but a
            # repeated unknown key is still a duplicate.
            if key in unknown:
                raise DecodeError(f"{where}: duplicate map key {key!r}")
            unknown.add(key)
            continue
        if field_id in seen:
            raise DecodeError(f"{where}: duplicate map key {field_id}")
        seen.add(field_id)
        name, filler, _ = fields[field_id]
        values[name] = filler(value, f"{where} field {field_id}")
    return values


# -- the narrow rules of the fast decoding paths ---------------------------------
#
# The wire types first try to decode bytes with cbor2's C decoder (a "plain"
# tree of dicts, lists, ints, bytes, str and None) and fall back to the strict
# parser above when that fails. The fast path returns a value only when
#
#   (a) its narrow filler accepts the tree: every node has the exact plain
#       type the field needs (``type(x) is int``, so no bool, float, Decimal,
#       datetime, CBORTag, ...), every map's keys are exact ints from an
#       allowed set, in ascending order, with no field the encoder would omit
#       (nil, empty, zero) and none it always writes missing, sizes within the
#       caps; and
#   (b) cbor2's encoder, given that tree, writes back exactly the input bytes.
#
# Why that is the strict path's answer: by (a) the tree is made only of plain
# values with no integer outside 0..2**64-1 (so no bignum tags), and for such
# a tree the encoder writes definite lengths, shortest heads, no tags, and
# each dict's pairs in order; so by (b) the input is one well-formed item with
# nothing after it, no tag, no indefinite length, no duplicate key (a dict
# cannot hold two and the map head counts its pairs) and no nesting or size
# beyond the caps. The strict parser therefore accepts it and yields the same
# tree (maps as CMap pairs in the same order), on which the strict fillers give
# what the narrow ones gave: the narrow fillers apply the same rule to each
# shape they accept and refuse every other shape. Finally, a tree accepted by
# (a) is exactly what the value's ``to_cbor_obj`` produces, already in
# canonical key order, so its canonical encoding is the input itself and may
# be cached as such. Anything refused goes to the strict path, which decides.
# ``tests/test_codec_fastpath.py`` checks this agreement on arbitrary and
# mutated inputs.


def key_shapes(required: tuple[int, ...], optional: tuple[int, ...]) -> frozenset[tuple[int, ...]]:
    """Every ascending key tuple that holds all of *required* and any of *optional*."""
    shapes = set()
    for mask in range(1 << len(optional)):
        chosen = [k for i, k in enumerate(optional) if mask >> i & 1]
        shapes.add(tuple(sorted((*required, *chosen))))
    return frozenset(shapes)


def plain_keys_ok(node: dict[Any, Any], shapes: frozenset[tuple[int, ...]]) -> bool:
    """Whether *node*'s keys, in order, are one of *shapes*, and all exact ints.

    The type test matters: ``True == 1`` and ``2.0 == 2``, so a tuple of bools
    or floats would pass the membership test, while Go refuses such keys.
    """
    keys = tuple(node)
    if keys not in shapes:
        return False
    for k in keys:  # noqa: SIM110 - a plain loop is faster than all() with a generator
        if type(k) is not int:
            return False
    return True


def plain_uint(node: Any, bits: int) -> bool:
    """Whether *node* is an exact int that fits an unsigned field of *bits* bits."""
    return type(node) is int and node >= 0 and not node >> bits


def plain_text_map(node: Any) -> dict[str, str] | None:
    """A non-empty text map with keys in canonical order, else ``None``.

    Empty maps are refused because the encoders omit them; canonical order
    for text keys is by UTF-8 length, then bytewise (the encoded head grows
    with the length, so this is the order of the encoded keys).
    """
    if type(node) is not dict or not node or len(node) > CBOR_MAX_MAP_PAIRS:
        return None
    prev: tuple[int, bytes] | None = None
    for k, v in node.items():
        if type(k) is not str or type(v) is not str:
            return None
        try:
            raw = k.encode("utf-8")
        except UnicodeEncodeError:
            return None
        cur = (len(raw), raw)
        if prev is not None and cur <= prev:
            return None
        prev = cur
    return node


def plain_list(node: Any) -> bool:
    """Whether *node* is a list within the array cap."""
    return type(node) is list and len(node) <= CBOR_MAX_ARRAY_ELEMENTS
