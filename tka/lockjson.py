"""``tailscale lock log --json`` and ``lock status --json``: the stable v1 JSON schema.

Twin of Tailscale's ``cmd/tailscale/tslockjsonv1`` (the types) and
``feature/tailnetlock/tslockjsonv1`` (the conversion from tka values), plus
the CLI's printing (``json.Encoder`` with a two-space indent, which also
HTML-escapes and ends the text with a newline).

Log shape (messages newest first, as Tailscale walks back from its head)::

    {
      "SchemaVersion": "1",
      "Messages": [
        {
          "Hash": "<base32 AUM hash>",
          "AUM": {                          expanded AUM, zero fields omitted
            "MessageKind": "add-key", "PrevAUMHash": "<base32>",
            "Key": {"Kind": "25519", "Votes": 1, "Public": "tlpub:<hex>", "Meta": {...}},
            "KeyID": "tlpub:<hex>",
            "State": {"LastAUMHash": ..., "DisablementValues": ["<hex>"], "Keys": [...],
                      "StateID1": n, "StateID2": n},
            "Votes": n, "Meta": {...},
            "Signatures": [{"KeyID": "tlpub:<hex>", "Signature": "<padded base64url>"}]
          },
          "Raw": "<padded base64url of the canonical AUM bytes>"
        }
      ]
    }

Go's ``omitzero`` decides what is left out: empty strings, zero numbers, nil
maps/slices/pointers and structs whose fields are all zero. An empty but
non-nil map or slice is *not* zero and is printed (``{}`` / ``[]``); a nil
slice in a field without ``omitzero`` is printed as ``null``. Each value
type below records, per field, its JSON name and whether it is ``omitzero``;
the same table drives :func:`render` and the strict parsers, so both always
agree on the shape.

Member names are matched as Go's ``encoding/json`` matches them (exact name,
else any letter case; a name given twice keeps its last value), because the
verdicts auditors compare with come from a Go decoder. Beyond that, parsing
is strict: unknown names, trailing data, non-integers, ``null`` for a
non-nullable field and members that Tailscale always prints but are missing
are rejected with a :class:`~tka.errors.DecodeError` naming the place.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final

from tka.aum import AUM, hash_to_text
from tka.authority import Authority
from tka.errors import DecodeError, TKAError, UsageError
from tka.key import Key, key_kind_name
from tka.nlkeys import NLPublic, NodePublic
from tka.sig import NodeKeySignature, sig_kind_name
from tka.storage import Storage

__all__ = [
    "DEFAULT_LOG_LIMIT",
    "SCHEMA_VERSION",
    "ExpandedAUM",
    "ExpandedKey",
    "ExpandedSignature",
    "ExpandedState",
    "LockLog",
    "LockStatus",
    "LogMessage",
    "NodeKeySignatureJSON",
    "Peer",
    "PeerInfo",
    "TrustedPeer",
    "b64url",
    "expand_aum",
    "expand_key",
    "expand_node_key_signature",
    "go_json",
    "log_message",
    "log_response",
    "log_walk",
    "log_walk_storage",
    "parse_log",
    "parse_status",
    "render",
    "render_log",
    "render_status",
    "status_response",
]

#: The only schema version this module reads and writes.
SCHEMA_VERSION: Final = "1"
#: ``tailscale lock log``'s default ``--limit``.
DEFAULT_LOG_LIMIT: Final = 50

_UINT64_MAX: Final = (1 << 64) - 1


def b64url(data: bytes | None) -> str:
    """Padded URL-safe base64, Go's ``base64.URLEncoding`` (``None`` encodes as ``""``)."""
    return base64.urlsafe_b64encode(data or b"").decode("ascii")


def _tlpub(data: bytes | None) -> str:
    # Go prints these with fmt "tlpub:%x", so a nil or short value is
    # printed as it is (possibly just "tlpub:"), never padded.
    return "tlpub:" + (data or b"").hex()


# -- the value types -------------------------------------------------------------


@dataclass(frozen=True)
class ExpandedKey:
    """``tslockjsonv1.Key``: a trusted key in readable form."""

    kind: str = ""  # "Kind", omitzero: Go's KeyKind.String(), e.g. "25519"
    votes: int = 0  # "Votes", always printed
    public: str = ""  # "Public", always printed: "tlpub:<hex>"
    meta: dict[str, str] | None = None  # "Meta", omitzero (nil omitted, {} printed)


@dataclass(frozen=True)
class ExpandedSignature:
    """``tslockjsonv1.Signature``: one signature over an AUM."""

    key_id: str = ""  # "KeyID": "tlpub:<hex>"
    signature: str = ""  # "Signature": padded base64url


@dataclass(frozen=True)
class ExpandedState:
    """``tslockjsonv1.TKAState``: the state carried by a checkpoint AUM."""

    last_aum_hash: str = ""  # "LastAUMHash", omitzero
    disablement_values: tuple[str, ...] | None = None  # bare hex; nil printed as null
    keys: tuple[ExpandedKey, ...] | None = None  # nil printed as null
    state_id1: int = 0
    state_id2: int = 0


@dataclass(frozen=True)
class ExpandedAUM:
    """``tslockjsonv1.AUM``: an AUM's fields in readable form."""

    message_kind: str = ""
    prev_aum_hash: str = ""
    key: ExpandedKey = field(default_factory=ExpandedKey)
    key_id: str = ""
    state: ExpandedState = field(default_factory=ExpandedState)
    votes: int = 0
    meta: dict[str, str] | None = None
    signatures: tuple[ExpandedSignature, ...] | None = None


@dataclass(frozen=True)
class LogMessage:
    """``tslockjsonv1.LogMessage``: one AUM of the log."""

    hash: str = ""  # base32 hash of the AUM
    aum: ExpandedAUM = field(default_factory=ExpandedAUM)
    raw: str = ""  # padded base64url of the canonical AUM bytes


@dataclass(frozen=True)
class LockLog:
    """``tslockjsonv1.LogResponse``: what ``tailscale lock log --json`` prints."""

    messages: tuple[LogMessage, ...] | None = ()  # newest first; nil printed as null
    schema_version: str = SCHEMA_VERSION
    response_warning: str = ""  # "_WARNING", omitzero

    def render(self) -> str:
        """The exact text Tailscale's CLI prints for this log."""
        return render(self)


@dataclass(frozen=True)
class NodeKeySignatureJSON:
    """``tslockjsonv1.NodeKeySignature``: a node-key signature in readable form."""

    sig_kind: str = ""
    public_key: str = ""  # omitzero; Go prints the signed node key as "tlpub:<hex>"
    key_id: str = ""  # omitzero
    signature: str = ""  # padded base64url, always printed
    nested: NodeKeySignatureJSON | None = None  # omitzero
    wrapping_public_key: str = ""  # omitzero


@dataclass(frozen=True)
class Peer:
    """``tslockjsonv1.Peer``: a peer filtered out for failing tailnet-lock checks."""

    id: str = ""  # stable node ID
    dns_name: str = ""
    tailscale_ips: tuple[str, ...] | None = None  # nil printed as null
    node_key: str = ""  # "nodekey:<hex>"


@dataclass(frozen=True)
class TrustedPeer:
    """``tslockjsonv1.TrustedPeer``: a visible peer and its node-key signature."""

    id: str = ""
    dns_name: str = ""
    tailscale_ips: tuple[str, ...] | None = None
    node_key: str = ""
    node_key_signature: NodeKeySignatureJSON | None = None  # omitzero


@dataclass(frozen=True)
class LockStatus:
    """``tslockjsonv1.StatusResponse``: what ``tailscale lock status --json`` prints."""

    enabled: bool = False
    public_key: str = ""  # this node's "tlpub:<hex>", omitzero
    node_key: str = ""  # this node's "nodekey:<hex>", omitzero
    head: str = ""  # base32 head hash, omitzero (set when enabled)
    node_key_signed: bool | None = None  # omitzero pointer (set when enabled)
    node_key_signature: NodeKeySignatureJSON | None = None  # omitzero
    trusted_keys: tuple[ExpandedKey, ...] | None = None  # omitzero; [] when enabled
    visible_peers: tuple[TrustedPeer, ...] | None = None  # omitzero; [] when enabled
    filtered_peers: tuple[Peer, ...] | None = None  # omitzero; [] when enabled
    state_id: int = 0  # "State": the authority's first state ID, omitzero
    schema_version: str = SCHEMA_VERSION
    response_warning: str = ""  # "_WARNING", omitzero

    def render(self) -> str:
        """The exact text Tailscale's CLI prints for this status."""
        return render(self)


# -- the schema table --------------------------------------------------------------


class _Spec:
    """How one Go type is printed, compared with zero and parsed."""

    def is_zero(self, value: Any) -> bool:
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        raise NotImplementedError

    def load(self, node: Any, where: str) -> Any:
        raise NotImplementedError


class _Str(_Spec):
    def is_zero(self, value: Any) -> bool:
        return bool(value == "")

    def dump(self, value: Any) -> Any:
        return value

    def load(self, node: Any, where: str) -> Any:
        return _text(node, where)


class _Uint(_Spec):
    def is_zero(self, value: Any) -> bool:
        return bool(value == 0)

    def dump(self, value: Any) -> Any:
        return value

    def load(self, node: Any, where: str) -> Any:
        if isinstance(node, bool) or not isinstance(node, int):
            raise DecodeError(f"{where}: want an unsigned integer, got {_describe(node)}")
        if node < 0 or node > _UINT64_MAX:
            raise DecodeError(f"{where}: {node} is out of range for an unsigned integer")
        return node


class _Bool(_Spec):
    def is_zero(self, value: Any) -> bool:
        return value is False

    def dump(self, value: Any) -> Any:
        return value

    def load(self, node: Any, where: str) -> Any:
        if not isinstance(node, bool):
            raise DecodeError(f"{where}: want true or false, got {_describe(node)}")
        return node


class _StrMap(_Spec):
    """Go ``map[string]string``: ``None`` is nil (null), ``{}`` is an empty map."""

    def is_zero(self, value: Any) -> bool:
        return value is None

    def dump(self, value: Any) -> Any:
        if value is None:
            return None
        # encoding/json sorts map keys; UTF-8 byte order equals code point order.
        return {k: value[k] for k in sorted(value)}

    def load(self, node: Any, where: str) -> Any:
        if node is None:
            return None
        pairs = _members(node, where)
        return {k: _text(v, f"{where}[{k!r}]") for k, v in pairs}


class _List(_Spec):
    """Go slice: ``None`` is nil (null), a tuple otherwise."""

    def __init__(self, elem: _Spec) -> None:
        self.elem = elem

    def is_zero(self, value: Any) -> bool:
        return value is None

    def dump(self, value: Any) -> Any:
        if value is None:
            return None
        return [self.elem.dump(v) for v in value]

    def load(self, node: Any, where: str) -> Any:
        if node is None:
            return None
        if not isinstance(node, list):
            raise DecodeError(f"{where}: want an array, got {_describe(node)}")
        return tuple(self.elem.load(v, f"{where}[{i}]") for i, v in enumerate(node))


class _Ptr(_Spec):
    """Go pointer: ``None`` is nil (null)."""

    def __init__(self, elem: _Spec) -> None:
        self.elem = elem

    def is_zero(self, value: Any) -> bool:
        return value is None

    def dump(self, value: Any) -> Any:
        return None if value is None else self.elem.dump(value)

    def load(self, node: Any, where: str) -> Any:
        return None if node is None else self.elem.load(node, where)


@dataclass(frozen=True)
class _Field:
    name: str  # the JSON member name
    attr: str  # the dataclass attribute
    spec: _Spec
    omitzero: bool = False


class _Struct(_Spec):
    """A Go struct: members printed in declaration order, ``omitzero`` ones when non-zero."""

    def __init__(self, cls: type[Any], table: Callable[[], tuple[_Field, ...]]) -> None:
        self.cls = cls
        # Resolved lazily: struct tables refer to each other (Nested).
        self._table = table

    @property
    def fields(self) -> tuple[_Field, ...]:
        return self._table()

    def is_zero(self, value: Any) -> bool:
        # Go's reflect.Value.IsZero on a struct: every field is zero.
        return all(f.spec.is_zero(getattr(value, f.attr)) for f in self.fields)

    def dump(self, value: Any) -> Any:
        out: dict[str, Any] = {}
        for f in self.fields:
            v = getattr(value, f.attr)
            if f.omitzero and f.spec.is_zero(v):
                continue
            out[f.name] = f.spec.dump(v)
        return out

    def load(self, node: Any, where: str) -> Any:
        if node is None:
            raise DecodeError(f"{where}: want an object, got null")
        pairs = _members(node, where)
        by_name = {f.name: f for f in self.fields}
        by_fold = {_fold(f.name): f for f in self.fields}
        kwargs: dict[str, Any] = {}
        for name, value in pairs:
            # As Go's encoding/json: an exact name, else a case-insensitive
            # match; a name given twice keeps the last value.
            f = by_name.get(name) or by_fold.get(_fold(name))
            if f is None:
                raise DecodeError(f"{where}: unknown field {_quote(name)}")
            kwargs[f.attr] = f.spec.load(value, f"{where}.{name}")
        for f in self.fields:
            # Members without omitzero are printed whatever their value, so a
            # text that lacks one was not printed by Tailscale.
            if not f.omitzero and f.attr not in kwargs:
                raise DecodeError(f"{where}: missing field {_quote(f.name)}")
        return self.cls(**kwargs)


def _table(*rows: tuple[str, str, _Spec] | tuple[str, str, _Spec, bool]) -> tuple[_Field, ...]:
    return tuple(_Field(*row) for row in rows)


_STR: Final = _Str()
_UINT: Final = _Uint()
_BOOL: Final = _Bool()
_MAP: Final = _StrMap()

_KEY: Final = _Struct(
    ExpandedKey,
    lambda: _table(
        ("Kind", "kind", _STR, True),
        ("Votes", "votes", _UINT),
        ("Public", "public", _STR),
        ("Meta", "meta", _MAP, True),
    ),
)
_SIGNATURE: Final = _Struct(
    ExpandedSignature,
    lambda: _table(("KeyID", "key_id", _STR), ("Signature", "signature", _STR)),
)
_STATE: Final = _Struct(
    ExpandedState,
    lambda: _table(
        ("LastAUMHash", "last_aum_hash", _STR, True),
        ("DisablementValues", "disablement_values", _List(_STR)),
        ("Keys", "keys", _List(_KEY)),
        ("StateID1", "state_id1", _UINT),
        ("StateID2", "state_id2", _UINT),
    ),
)
_AUM: Final = _Struct(
    ExpandedAUM,
    lambda: _table(
        ("MessageKind", "message_kind", _STR),
        ("PrevAUMHash", "prev_aum_hash", _STR, True),
        ("Key", "key", _KEY, True),
        ("KeyID", "key_id", _STR, True),
        ("State", "state", _STATE, True),
        ("Votes", "votes", _UINT, True),
        ("Meta", "meta", _MAP, True),
        ("Signatures", "signatures", _List(_SIGNATURE), True),
    ),
)
_MESSAGE: Final = _Struct(
    LogMessage,
    lambda: _table(("Hash", "hash", _STR), ("AUM", "aum", _AUM), ("Raw", "raw", _STR)),
)
_LOG: Final = _Struct(
    LockLog,
    # ResponseEnvelope is embedded first, so its members come first.
    lambda: _table(
        ("SchemaVersion", "schema_version", _STR),
        ("_WARNING", "response_warning", _STR, True),
        ("Messages", "messages", _List(_MESSAGE)),
    ),
)
_NKS: _Struct = _Struct(
    NodeKeySignatureJSON,
    lambda: _table(
        ("SigKind", "sig_kind", _STR),
        ("PublicKey", "public_key", _STR, True),
        ("KeyID", "key_id", _STR, True),
        ("Signature", "signature", _STR),
        ("Nested", "nested", _Ptr(_NKS), True),
        ("WrappingPublicKey", "wrapping_public_key", _STR, True),
    ),
)
_PEER: Final = _Struct(
    Peer,
    lambda: _table(
        ("ID", "id", _STR),
        ("DNSName", "dns_name", _STR),
        ("TailscaleIPs", "tailscale_ips", _List(_STR)),
        ("NodeKey", "node_key", _STR),
    ),
)
_TRUSTED_PEER: Final = _Struct(
    TrustedPeer,
    lambda: _table(
        ("ID", "id", _STR),
        ("DNSName", "dns_name", _STR),
        ("TailscaleIPs", "tailscale_ips", _List(_STR)),
        ("NodeKey", "node_key", _STR),
        ("NodeKeySignature", "node_key_signature", _Ptr(_NKS), True),
    ),
)
_STATUS: Final = _Struct(
    LockStatus,
    lambda: _table(
        ("SchemaVersion", "schema_version", _STR),
        ("_WARNING", "response_warning", _STR, True),
        ("Enabled", "enabled", _BOOL),
        ("PublicKey", "public_key", _STR, True),
        ("NodeKey", "node_key", _STR, True),
        ("Head", "head", _STR, True),
        ("NodeKeySigned", "node_key_signed", _Ptr(_BOOL), True),
        ("NodeKeySignature", "node_key_signature", _Ptr(_NKS), True),
        ("TrustedKeys", "trusted_keys", _List(_KEY), True),
        ("VisiblePeers", "visible_peers", _List(_TRUSTED_PEER), True),
        ("FilteredPeers", "filtered_peers", _List(_PEER), True),
        ("State", "state_id", _UINT, True),
    ),
)

_TOP_LEVEL: Final[dict[type[Any], _Struct]] = {
    ExpandedKey: _KEY,
    ExpandedSignature: _SIGNATURE,
    ExpandedState: _STATE,
    ExpandedAUM: _AUM,
    LogMessage: _MESSAGE,
    LockLog: _LOG,
    NodeKeySignatureJSON: _NKS,
    Peer: _PEER,
    TrustedPeer: _TRUSTED_PEER,
    LockStatus: _STATUS,
}


def _check_tables() -> None:
    # Every dataclass field must appear in its table exactly once, else a
    # value would silently be dropped from the output.
    for cls, spec in _TOP_LEVEL.items():
        want = {f.name for f in fields(cls)}
        got = [f.attr for f in spec.fields]
        assert sorted(got) == sorted(want), cls.__name__


_check_tables()


# -- Go's JSON text ------------------------------------------------------------------

# encoding/json escapes control characters, the quote and backslash, and (the
# Encoder's default HTML escaping) <, > and &; U+2028 and U+2029 are escaped
# so the output is also valid JavaScript. Everything else is written as is.
_ESCAPE_RE: Final = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029]')
_SHORT_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group(0)
    return _SHORT_ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _go_string(s: str) -> str:
    return '"' + _ESCAPE_RE.sub(_escape_char, s) + '"'


def _emit(value: Any, depth: int, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_go_string(value))
    elif isinstance(value, dict):
        if not value:
            # json.Indent leaves empty objects and arrays compact.
            out.append("{}")
            return
        inner = "  " * (depth + 1)
        out.append("{\n")
        for i, (k, v) in enumerate(value.items()):
            out.append(inner + _go_string(k) + ": ")
            _emit(v, depth + 1, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append("  " * depth + "}")
    elif isinstance(value, list):
        if not value:
            out.append("[]")
            return
        inner = "  " * (depth + 1)
        out.append("[\n")
        for i, v in enumerate(value):
            out.append(inner)
            _emit(v, depth + 1, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append("  " * depth + "]")
    else:  # pragma: no cover - the dump functions produce nothing else
        raise UsageError(f"cannot encode {type(value).__name__} as JSON")


def go_json(value: Any) -> str:
    """Encode a JSON value as Go's ``json.Encoder`` with ``SetIndent("", "  ")`` does.

    *value* is built from dicts (members in insertion order), lists, str,
    int, bool and ``None``. The text ends with a newline, as ``Encode`` adds one.
    """
    out: list[str] = []
    _emit(value, 0, out)
    out.append("\n")
    return "".join(out)


def render(value: LockLog | LockStatus | LogMessage | ExpandedAUM) -> str:
    """The exact text Tailscale's CLI prints for *value* (with a trailing newline)."""
    spec = _TOP_LEVEL.get(type(value))
    if spec is None:
        raise UsageError(f"cannot render {type(value).__name__}")
    return go_json(spec.dump(value))


# -- strict parsing -------------------------------------------------------------------


class _Members:
    """A JSON object as its (name, value) pairs in text order, duplicates kept.

    Not a list subclass, so an object can never pass for an array.
    """

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


class _BadNumber:
    """A JSON number that is not an unsigned integer (kept to report it in place)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _describe(node: Any) -> str:
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "a boolean"
    if isinstance(node, int):
        return "an integer"
    if isinstance(node, _BadNumber):
        return f"the number {node.text[:40]}"
    if isinstance(node, str):
        return "a string"
    if isinstance(node, list):
        return "an array"
    if isinstance(node, _Members):
        return "an object"
    return type(node).__name__


def _quote(s: str) -> str:
    # Messages quote names as Go does ("Extra"), cut so a hostile input
    # cannot make an error message huge.
    q = json.dumps(s)
    return q if len(q) <= 66 else q[:60] + '..."'


def _members(node: Any, where: str) -> list[tuple[str, Any]]:
    if not isinstance(node, _Members):
        raise DecodeError(f"{where}: want an object, got {_describe(node)}")
    for name, _ in node.pairs:
        _text(name, f"{where} member name")
    return node.pairs


def _fold(name: str) -> str:
    """Go's case folding for JSON field names (``encoding/json`` matches them so).

    Field names are ASCII; besides ASCII case, Go folds the long s and the
    Kelvin sign onto ASCII letters, so those two are mapped as well.
    """
    return name.replace("\u017f", "s").replace("\u212a", "k").lower() if name else name


def _text(node: Any, where: str) -> str:
    if not isinstance(node, str):
        raise DecodeError(f"{where}: want a string, got {_describe(node)}")
    try:
        node.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate escape (e.g. "\ud800") has no UTF-8 form.
        raise DecodeError(f"{where}: string holds an unpaired surrogate") from None
    return node


def _parse_int(text: str) -> int | _BadNumber:
    # Only unsigned integers occur in the schema. Keeping other numbers as a
    # marker lets the walk report them with their place; the length cap keeps
    # Python's int() conversion cheap and in range of its digit limit.
    if text.startswith("-") or len(text) > 20:
        return _BadNumber(text)
    return int(text)


def _load_json(text: str | bytes, what: str) -> Any:
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{what}: not UTF-8 text (byte {exc.start})") from None
    if not isinstance(text, str):
        raise DecodeError(f"{what}: want text, got {type(text).__name__}")
    try:
        return json.loads(
            text,
            object_pairs_hook=_Members,
            parse_int=_parse_int,
            parse_float=_BadNumber,
            parse_constant=_BadNumber,
        )
    except json.JSONDecodeError as exc:
        raise DecodeError(
            f"{what}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise DecodeError(f"{what}: JSON nested too deeply") from None
    except ValueError as exc:  # pragma: no cover - json raises JSONDecodeError
        raise DecodeError(f"{what}: not valid JSON: {exc}") from None


def _load(spec: _Struct, node: Any, what: str) -> Any:
    try:
        return spec.load(node, what)
    except RecursionError:
        # Only NodeKeySignature.Nested recurses; JSON deep enough to parse
        # but too deep to walk is no status Tailscale prints.
        raise DecodeError(f"{what}: JSON nested too deeply") from None


def _check_version(version: str, what: str) -> None:
    if version != SCHEMA_VERSION:
        raise DecodeError(
            f"{what}: unsupported SchemaVersion {_quote(version)} (want {_quote(SCHEMA_VERSION)})"
        )


def parse_log(text: str | bytes) -> LockLog:
    """Parse ``tailscale lock log --json`` output (schema v1) strictly.

    Checks the JSON shape and types only: that Hash, Raw and the expanded
    AUM agree, and that the chain verifies, is :mod:`tka.audit`'s job.
    Raises :class:`~tka.errors.DecodeError` naming the place of the fault.
    """
    node = _load_json(text, "lock log")
    log: LockLog = _load(_LOG, node, "lock log")
    _check_version(log.schema_version, "lock log")
    return log


def parse_status(text: str | bytes) -> LockStatus:
    """Parse ``tailscale lock status --json`` output (schema v1) strictly."""
    node = _load_json(text, "lock status")
    status: LockStatus = _load(_STATUS, node, "lock status")
    _check_version(status.schema_version, "lock status")
    return status


# -- from tka values ------------------------------------------------------------------


def expand_key(key: Key) -> ExpandedKey:
    """Tailscale's ``tkaKey``: a :class:`~tka.key.Key` in readable form."""
    return ExpandedKey(
        kind=key_kind_name(key.kind),
        votes=key.votes,
        public=_tlpub(key.public),
        meta=None if key.meta is None else dict(key.meta),
    )


def expand_aum(aum: AUM) -> ExpandedAUM:
    """Tailscale's expansion of a decoded AUM (part of ``logMessage``).

    Expand the AUM decoded from its canonical bytes (as :func:`log_message`
    does) to get exactly what Tailscale prints: decoding normalizes fields
    that are empty but present.
    """
    state = ExpandedState()
    if aum.state is not None:
        s = aum.state
        # Go appends to a nil slice, so an empty list prints as null, not [].
        values = tuple((v or b"").hex() for v in s.disablement_values or ())
        keys = tuple(expand_key(k) for k in s.keys or ())
        state = ExpandedState(
            last_aum_hash="" if s.last_aum_hash is None else hash_to_text(s.last_aum_hash),
            disablement_values=values or None,
            keys=keys or None,
            state_id1=s.state_id1,
            state_id2=s.state_id2,
        )
    sigs = tuple(
        ExpandedSignature(_tlpub(sig.key_id), b64url(sig.signature)) for sig in aum.signatures or ()
    )
    return ExpandedAUM(
        message_kind=aum.kind_name,
        prev_aum_hash=hash_to_text(aum.prev_aum_hash) if aum.prev_aum_hash else "",
        key=ExpandedKey() if aum.key is None else expand_key(aum.key),
        key_id="" if aum.key_id is None else _tlpub(aum.key_id),
        state=state,
        votes=aum.votes or 0,
        meta=None if aum.meta is None else dict(aum.meta),
        signatures=sigs or None,
    )


def log_message(aum: AUM) -> LogMessage:
    """Tailscale's ``logMessage`` for one stored AUM.

    Tailscale's daemon hands the CLI ``aum.Serialize()``, and the CLI decodes
    those bytes again before expanding them; doing the same round trip here
    makes the expansion match even for AUMs built in memory with empty-but-
    present fields.
    """
    raw = aum.to_bytes()
    decoded = AUM.from_bytes(raw)
    return LogMessage(hash=decoded.hash_text, aum=expand_aum(decoded), raw=b64url(raw))


def log_walk(aums_newest_first: Iterable[AUM], limit: int = DEFAULT_LOG_LIMIT) -> list[AUM]:
    """The AUMs Tailscale's ``TailnetLockLog`` would list from this chain.

    At most *limit* AUMs, stopping after the first one without a parent.
    """
    out: list[AUM] = []
    if limit <= 0:
        return out
    for aum in aums_newest_first:
        out.append(aum)
        if len(out) >= limit or aum.parent is None:
            break
    return out


def log_walk_storage(storage: Storage, head: bytes, limit: int = DEFAULT_LOG_LIMIT) -> list[AUM]:
    """Walk back from *head* in *storage* as ``TailnetLockLog`` does.

    Stops after *limit* AUMs, at an AUM without a parent, or at a missing one.
    """
    out: list[AUM] = []
    cursor: bytes | None = head
    for _ in range(max(limit, 0)):
        if cursor is None:
            break
        aum = storage.get(cursor)
        if aum is None:
            break
        out.append(aum)
        cursor = aum.parent
    return out


def log_response(aums_newest_first: Iterable[AUM], limit: int = DEFAULT_LOG_LIMIT) -> LockLog:
    """The v1 log for a chain given newest first, cut as ``--limit`` cuts it."""
    return LockLog(messages=tuple(log_message(a) for a in log_walk(aums_newest_first, limit)))


def render_log(aums_newest_first: Iterable[AUM], limit: int = DEFAULT_LOG_LIMIT) -> str:
    """Exactly what ``tailscale lock log --json --limit <limit>`` prints for this chain.

    *aums_newest_first* is the active chain from the head backwards (for
    example :func:`log_walk_storage`'s result).
    """
    return render(log_response(aums_newest_first, limit))


def expand_node_key_signature(sig: NodeKeySignature) -> NodeKeySignatureJSON:
    """Tailscale's ``nodeKeySignature`` conversion."""
    return NodeKeySignatureJSON(
        sig_kind=sig_kind_name(sig.sig_kind),
        # Go prints the signed node key (its "np"-prefixed binary form) with
        # the tlpub: prefix too; mirrored as is.
        public_key=_tlpub(sig.pubkey) if sig.pubkey else "",
        key_id=_tlpub(sig.key_id) if sig.key_id else "",
        signature=b64url(sig.signature),
        nested=None if sig.nested is None else expand_node_key_signature(sig.nested),
        wrapping_public_key=_tlpub(sig.wrapping_pubkey) if sig.wrapping_pubkey else "",
    )


@dataclass(frozen=True)
class PeerInfo:
    """What the status needs to know about one peer (Tailscale's ``ipnstate.TKAPeer``)."""

    stable_id: str
    dns_name: str
    node_key: NodePublic
    tailscale_ips: tuple[str, ...] = ()
    #: The peer's node-key signature; ``None`` (or undecodable) prints as an empty one.
    node_key_signature: NodeKeySignature | None = None


def _peer(p: PeerInfo) -> Peer:
    return Peer(
        id=p.stable_id,
        dns_name=p.dns_name,
        # Go appends to a nil slice: no addresses print as null.
        tailscale_ips=tuple(p.tailscale_ips) or None,
        node_key=p.node_key.text(),
    )


def _trusted_peer(p: PeerInfo) -> TrustedPeer:
    base = _peer(p)
    sig = p.node_key_signature or NodeKeySignature(sig_kind=0)
    return TrustedPeer(
        id=base.id,
        dns_name=base.dns_name,
        tailscale_ips=base.tailscale_ips,
        node_key=base.node_key,
        node_key_signature=expand_node_key_signature(sig),
    )


def _status_key(key: Key) -> ExpandedKey:
    # The daemon passes trusted keys as key.NLPublic, which copies the public
    # key into a 32-byte array: shorter values are zero-padded.
    public = (key.public or b"")[:32].ljust(32, b"\x00")
    return ExpandedKey(
        kind=key_kind_name(key.kind),
        votes=key.votes,
        public=NLPublic(public).cli_text(),
        meta=None if key.meta is None else dict(key.meta),
    )


def status_response(
    authority: Authority | None,
    *,
    public_key: NLPublic | None = None,
    node_key: NodePublic | None = None,
    node_key_signature: NodeKeySignature | bytes | None = None,
    visible_peers: Sequence[PeerInfo] | None = None,
    filtered_peers: Sequence[PeerInfo] = (),
) -> LockStatus:
    """What ``tailscale lock status --json`` prints for a node.

    Mirrors the daemon's ``TailnetLockStatus`` and the v1 conversion: with no
    tailnet-lock key (*public_key* ``None``) or no *authority*, lock is
    reported disabled. *node_key* and *node_key_signature* describe this
    node (the signature as received from control, raw bytes or decoded);
    *visible_peers* ``None`` stands for "no network map yet", in which case
    the node is reported as not signed, as Tailscale does.
    """
    node_text = "" if node_key is None else node_key.text()
    if public_key is None or public_key.is_zero():
        return LockStatus(enabled=False, node_key=node_text)
    if authority is None:
        return LockStatus(enabled=False, node_key=node_text, public_key=public_key.cli_text())

    sig = NodeKeySignature(sig_kind=0)
    signed = False
    if visible_peers is not None and node_key_signature is not None:
        if isinstance(node_key_signature, NodeKeySignature):
            sig = node_key_signature
        else:
            try:
                sig = NodeKeySignature.from_bytes(bytes(node_key_signature))
            except TKAError:
                # Tailscale logs the failure and prints an empty signature.
                sig = NodeKeySignature(sig_kind=0)
        if node_key is not None:
            try:
                authority.node_key_authorized(node_key.raw, node_key_signature)
                signed = True
            except TKAError:  # NotAuthorized, or a signature that does not decode
                signed = False
    return LockStatus(
        enabled=True,
        public_key=public_key.cli_text(),
        node_key=node_text,
        head=authority.head.hash_text,
        node_key_signed=signed,
        node_key_signature=expand_node_key_signature(sig),
        trusted_keys=tuple(_status_key(k) for k in authority.keys),
        visible_peers=tuple(_trusted_peer(p) for p in visible_peers or ()),
        filtered_peers=tuple(_peer(p) for p in filtered_peers),
        state_id=authority.state_ids[0],
    )


def render_status(
    authority: Authority | None,
    *,
    public_key: NLPublic | None = None,
    node_key: NodePublic | None = None,
    node_key_signature: NodeKeySignature | bytes | None = None,
    visible_peers: Sequence[PeerInfo] | None = None,
    filtered_peers: Sequence[PeerInfo] = (),
) -> str:
    """Exactly what ``tailscale lock status --json`` prints (see :func:`status_response`)."""
    return render(
        status_response(
            authority,
            public_key=public_key,
            node_key=node_key,
            node_key_signature=node_key_signature,
            visible_peers=visible_peers,
            filtered_peers=filtered_peers,
        )
    )
