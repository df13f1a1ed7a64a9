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

__all__ = [
    "Field",
    "fill_bytes",
    "fill_fixed_bytes",
    "fill_list",
    "fill_str_map",
    "fill_struct",
    "fill_uint",
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
