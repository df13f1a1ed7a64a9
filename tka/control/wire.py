"""Request and response bodies of the TKA RPCs, shaped as Tailscale's ``tailcfg`` types.

Every RPC of ``tailcfg/tka.go`` has a dataclass here whose JSON form is the
one Go's ``encoding/json`` produces and accepts for that struct:

* field names as in Go (``NodeKey``, ``GenesisAUM``, ``MissingAUMs``, ...);
  when decoding, as Go does, a key names a field ignoring case (Go's
  folding: ASCII case, long s U+017F for s, Kelvin sign U+212A for k), of
  several keys naming one field the last counts (a key given twice too),
  and unknown fields are ignored. (One corner differs: Go takes the last
  *occurrence*, so in ``{"Head": A, "head": B, "Head": C}`` it takes ``C``
  where Python's ``json``, which keeps a repeated key at its first place,
  leads here to ``B``.)
* ``[]byte`` fields are standard base64 with padding (``\\r``/``\\n`` ignored),
  ``null`` or absent meaning empty;
* node keys are ``nodekey:<64 hex>``, AUM hashes unpadded base32;
* ``map[NodeID]...`` keys are decimal strings;
* a field the service needs (``NodeKey``, the ``Head`` of a sync or
  ``disable``, ``GenesisAUM``, ...) is *required*: absent, ``null`` or empty
  (``""``, which Go's ``AUMHash.UnmarshalText`` refuses too) is an error, so
  handlers never see it unset.

Decoding is strict about types (a number where a string belongs is an error,
as in Go) and raises :class:`~tka.control.errors.BadRequest` naming the field,
never repeating its value. The same classes serve the client
(:mod:`tka.control.client`) and the service (:mod:`tka.control.service`).

Two bodies are not TKA RPCs but the subsets of Tailscale's own types that a
node needs around them: :class:`RegisterRequest` (a node-key rotation,
``/machine/register``) and :class:`MapRequest` / :class:`MapResponse` (the
lock fields of a map poll, ``/machine/map``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeVar, cast

from tka.aum import hash_from_text, hash_to_text
from tka.control.errors import BadRequest
from tka.errors import DecodeError
from tka.nlkeys import NodePublic

__all__ = [
    "AdminNode",
    "AdminRegisterRequest",
    "BootstrapRequest",
    "BootstrapResponse",
    "DisableRequest",
    "EmptyResponse",
    "InitBeginRequest",
    "InitBeginResponse",
    "InitFinishRequest",
    "MapNode",
    "MapRequest",
    "MapResponse",
    "RegisterRequest",
    "RegisterResponse",
    "SignInfo",
    "SignaturesUsingKeyRequest",
    "SignaturesUsingKeyResponse",
    "SubmitSignatureRequest",
    "SyncOfferRequest",
    "SyncOfferResponse",
    "SyncSendRequest",
    "SyncSendResponse",
    "TKAInfo",
    "apply_map_delta",
    "decode",
    "decode_map_response",
    "encode",
    "parse_body",
]

#: Most AUMs or hashes one sync message may carry: Tailscale's own walks stop
#: at 2000 steps (``maxSyncIter``), so a longer list is not a real sync.
MAX_LIST_ITEMS: Final = 2000
#: Largest int64, the range of Go's ``int`` and ``tailcfg.NodeID`` on 64-bit.
_INT64_MAX: Final = 2**63 - 1

T = TypeVar("T")


# -- value codecs ---------------------------------------------------------------


class _Codec:
    """Turns one JSON value into a Python value and back."""

    zero: Any = None

    def load(self, value: Any, where: str) -> Any:
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        raise NotImplementedError

    def is_empty(self, value: Any) -> bool:
        """Whether Go's ``omitempty`` would leave the field out."""
        return value is None or value == self.zero


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _wrong(where: str, want: str, value: Any) -> BadRequest:
    return BadRequest(f"{where}: expected {want}, got {_type_name(value)}")


class _Int(_Codec):
    zero = 0

    def load(self, value: Any, where: str) -> int:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(where, "an integer", value)
        if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            raise BadRequest(f"{where}: integer out of range")
        return value

    def dump(self, value: Any) -> Any:
        return int(value)


class _Bool(_Codec):
    zero = False

    def load(self, value: Any, where: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            raise _wrong(where, "true or false", value)
        return value

    def dump(self, value: Any) -> Any:
        return bool(value)


class _Str(_Codec):
    zero = ""

    def load(self, value: Any, where: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _wrong(where, "a string", value)
        return value

    def dump(self, value: Any) -> Any:
        return str(value)


class _Bytes(_Codec):
    """Go's ``[]byte``: standard base64 with padding."""

    zero = b""

    def load(self, value: Any, where: str) -> bytes:
        if value is None:
            return b""
        if not isinstance(value, str):
            raise _wrong(where, "a base64 string", value)
        # Go's StdEncoding skips CR and LF and nothing else.
        text = value.replace("\r", "").replace("\n", "")
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise BadRequest(f"{where}: not valid base64") from None

    def dump(self, value: Any) -> Any:
        if not value:
            return None
        return base64.b64encode(bytes(value)).decode("ascii")

    def is_empty(self, value: Any) -> bool:
        return not value


class _NodeKey(_Codec):
    """``key.NodePublic`` in its text form; ``None`` when absent."""

    zero = None

    def load(self, value: Any, where: str) -> NodePublic | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _wrong(where, "a nodekey: string", value)
        try:
            return NodePublic.from_text(value)
        except DecodeError:
            raise BadRequest(f"{where}: expected nodekey: followed by 64 hex digits") from None

    def dump(self, value: Any) -> Any:
        return None if value is None else value.text()


class _Hash(_Codec):
    """An AUM hash as unpadded base32; the empty string means none (``None``)."""

    zero = None

    def load(self, value: Any, where: str) -> bytes | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise _wrong(where, "an AUM hash string", value)
        try:
            return hash_from_text(value)
        except DecodeError:
            raise BadRequest(f"{where}: not an AUM hash (52 base32 characters)") from None

    def dump(self, value: Any) -> Any:
        return "" if value is None else hash_to_text(value)


class _List(_Codec):
    zero: Any = ()

    def __init__(self, item: _Codec, limit: int = MAX_LIST_ITEMS) -> None:
        self.item = item
        self.limit = limit

    def load(self, value: Any, where: str) -> tuple[Any, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise _wrong(where, "an array", value)
        if len(value) > self.limit:
            raise BadRequest(f"{where}: more than {self.limit} items")
        return tuple(self.item.load(v, f"{where}[{i}]") for i, v in enumerate(value))

    def dump(self, value: Any) -> Any:
        # Go encodes a nil slice as null; an empty list decodes the same in Go.
        return [self.item.dump(v) for v in value or ()]

    def is_empty(self, value: Any) -> bool:
        return not value


_NODE_ID_RE: Final = re.compile(r"-?[0-9]{1,19}")


class _NodeIDMap(_Codec):
    """Go's ``map[tailcfg.NodeID]V``: an object with decimal-string keys."""

    zero: Any = None

    def __init__(self, item: _Codec) -> None:
        self.item = item

    def load(self, value: Any, where: str) -> dict[int, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _wrong(where, "an object", value)
        out: dict[int, Any] = {}
        for k, v in value.items():
            if not _NODE_ID_RE.fullmatch(k):
                raise BadRequest(f"{where}: keys must be node IDs (decimal integers)")
            node_id = int(k)
            if not -_INT64_MAX - 1 <= node_id <= _INT64_MAX:
                raise BadRequest(f"{where}: node ID out of range")
            out[node_id] = self.item.load(v, f"{where}[{node_id}]")
        return out

    def dump(self, value: Any) -> Any:
        return {str(k): self.item.dump(v) for k, v in (value or {}).items()}

    def is_empty(self, value: Any) -> bool:
        return not value


class _Struct(_Codec):
    zero = None

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls

    def load(self, value: Any, where: str) -> Any:
        if value is None:
            return None
        return decode(self.cls, value, where)

    def dump(self, value: Any) -> Any:
        return None if value is None else encode(value)


INT: Final = _Int()
BOOL: Final = _Bool()
STR: Final = _Str()
BYTES: Final = _Bytes()
NODE_KEY: Final = _NodeKey()
HASH: Final = _Hash()


def _m(
    name: str, codec: _Codec, *, required: bool = False, omitempty: bool = False
) -> dict[str, Any]:
    """Field metadata: the JSON name, the codec, whether required, whether ``omitempty``."""
    return {"json": name, "codec": codec, "required": required, "omitempty": omitempty}


# -- generic encode / decode -----------------------------------------------------


def parse_body(body: bytes) -> dict[str, Any]:
    """Parse a request body into a JSON object, or raise :class:`BadRequest`."""
    if not body.strip():
        raise BadRequest("request body is empty: expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None

    def no_constants(name: str) -> Any:
        raise BadRequest(f"request body is not valid JSON ({name} is not a JSON value)")

    try:
        obj = json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except ValueError as exc:
        if isinstance(exc, BadRequest):
            raise
        pos = getattr(exc, "pos", None)
        at = f" at offset {pos}" if isinstance(pos, int) else ""
        raise BadRequest(f"request body is not valid JSON{at}") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"request body must be a JSON object, got {_type_name(obj)}")
    return obj


#: Go's ``encoding/json`` matches a key to a field name by Unicode simple
#: case folding. For the ASCII names here that is ASCII case, plus the two
#: non-ASCII letters that fold to ASCII ones: long s (U+017F) and the Kelvin
#: sign (U+212A).
_FOLD: Final = str.maketrans(
    {
        **{chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)},
        "\u017f": "s",
        "\u212a": "k",
    }
)


def _by_folded_key(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object's values by folded key; of keys that fold alike the last counts, as in Go."""
    return {_fold(k): v for k, v in obj.items()}


def _fold(key: str) -> str:
    # For ASCII, folding is lower-casing (a C call); only other keys need the table.
    return key.lower() if key.isascii() else key.translate(_FOLD)


@dataclasses.dataclass(frozen=True)
class _FieldPlan:
    """How :func:`decode` reads one field (worked out once per class)."""

    attr: str
    name: str
    folded: str
    codec: _Codec
    required: bool


@functools.cache
def _plan(cls: Any) -> tuple[_FieldPlan, ...]:
    return tuple(
        _FieldPlan(
            f.name,
            f.metadata["json"],
            f.metadata["json"].translate(_FOLD),
            f.metadata["codec"],
            f.metadata["required"],
        )
        for f in dataclasses.fields(cls)
        if "json" in f.metadata
    )


def decode(cls: type[T], obj: Any, where: str = "") -> T:
    """Build a wire dataclass from a parsed JSON object, validating every field."""
    if not isinstance(obj, dict):
        raise _wrong(where or "body", "an object", obj)
    kwargs: dict[str, Any] = {}
    by_key = _by_folded_key(obj)
    for f in _plan(cast(Hashable, cls)):
        raw = by_key.get(f.folded)
        path = f"{where}.{f.name}" if where else f.name
        if f.required and raw is None:  # missing, or null
            raise BadRequest(f"{path}: missing required field")
        value = f.codec.load(raw, path)
        if f.required and f.codec.is_empty(value):
            # "" decodes to "none" for a hash and to no bytes for []byte: a
            # required field must carry a value, so handlers never see none.
            raise BadRequest(f"{path}: required field is empty")
        kwargs[f.attr] = value
    return cls(**kwargs)


def encode(value: Any) -> dict[str, Any]:
    """The JSON object of a wire dataclass (Go's field names and encodings)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        meta = f.metadata
        if "json" not in meta:
            continue
        codec: _Codec = meta["codec"]
        v = getattr(value, f.name)
        if meta["omitempty"] and codec.is_empty(v):
            continue
        out[meta["json"]] = codec.dump(v)
    return out


# -- the RPC bodies -----------------------------------------------------------------


class _NodeRequest:
    """Fields every TKA RPC request carries (``Version`` and ``NodeKey``)."""

    path: ClassVar[str] = ""
    version: int
    node_key: NodePublic | None


@dataclass(frozen=True)
class InitBeginRequest(_NodeRequest):
    """``TKAInitBeginRequest``: submit a genesis AUM."""

    path: ClassVar[str] = "/machine/tka/init/begin"
    version: int = field(default=0, metadata=_m("Version", INT))
    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    genesis_aum: bytes = field(default=b"", metadata=_m("GenesisAUM", BYTES, required=True))


@dataclass(frozen=True)
class SignInfo:
    """``TKASignInfo``: a node that needs a signature before enforcement starts."""

    node_id: int = field(default=0, metadata=_m("NodeID", INT))
    node_public: NodePublic | None = field(default=None, metadata=_m("NodePublic", NODE_KEY))
    rotation_pubkey: bytes = field(default=b"", metadata=_m("RotationPubkey", BYTES))


@dataclass(frozen=True)
class InitBeginResponse:
    """``TKAInitBeginResponse``."""

    need_signatures: tuple[SignInfo, ...] = field(
        default=(), metadata=_m("NeedSignatures", _List(_Struct(SignInfo), limit=10**6))
    )


@dataclass(frozen=True)
class InitFinishRequest(_NodeRequest):
    """``TKAInitFinishRequest``: signatures for every node, and enablement."""

    path: ClassVar[str] = "/machine/tka/init/finish"
    version: int = field(default=0, metadata=_m("Version", INT))
    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    signatures: dict[int, bytes] = field(
        default_factory=dict, metadata=_m("Signatures", _NodeIDMap(BYTES))
    )
    support_disablement: bytes = field(
        default=b"", metadata=_m("SupportDisablement", BYTES, omitempty=True)
    )


@dataclass(frozen=True)
class EmptyResponse:
    """The empty responses (``TKAInitFinishResponse``, ``TKADisableResponse``, ...)."""


@dataclass(frozen=True)
class BootstrapRequest(_NodeRequest):
    """``TKABootstrapRequest``; ``head`` is ``None`` when the node has no authority."""

    path: ClassVar[str] = "/machine/tka/bootstrap"
    version: int = field(default=0, metadata=_m("Version", INT))
    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    head: bytes | None = field(default=None, metadata=_m("Head", HASH))


@dataclass(frozen=True)
class BootstrapResponse:
    """``TKABootstrapResponse``: the genesis AUM, or the disablement secret."""

    genesis_aum: bytes = field(default=b"", metadata=_m("GenesisAUM", BYTES, omitempty=True))
    disablement_secret: bytes = field(
        default=b"", metadata=_m("DisablementSecret", BYTES, omitempty=True)
    )


@dataclass(frozen=True)
class SyncOfferRequest(_NodeRequest):
    """``TKASyncOfferRequest``: the node's head and ancestors."""

    path: ClassVar[str] = "/machine/tka/sync/offer"
    version: int = field(default=0, metadata=_m("Version", INT))
    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    head: bytes | None = field(default=None, metadata=_m("Head", HASH, required=True))
    ancestors: tuple[bytes, ...] = field(default=(), metadata=_m("Ancestors", _List(HASH)))


@dataclass(frozen=True)
class SyncOfferResponse:
    """``TKASyncOfferResponse``: the service's offer and the AUMs the node lacks."""

    head: bytes | None = field(default=None, metadata=_m("Head", HASH))
    ancestors: tuple[bytes, ...] = field(default=(), metadata=_m("Ancestors", _List(HASH)))
    missing_aums: tuple[bytes, ...] = field(default=(), metadata=_m("MissingAUMs", _List(BYTES)))


@dataclass(frozen=True)
class SyncSendRequest(_NodeRequest):
    """``TKASyncSendRequest``: AUMs the service lacks, and the node's head."""

    path: ClassVar[str] = "/machine/tka/sync/send"
    version: int = field(default=0, metadata=_m("Version", INT))
    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    head: bytes | None = field(default=None, metadata=_m("Head", HASH, required=True))
    missing_aums: tuple[bytes, ...] = field(default=(), metadata=_m("MissingAUMs", _List(BYTES)))
    interactive: bool = field(default=False, metadata=_m("Interactive", BOOL))


@dataclass(frozen=True)
class SyncSendResponse:
    """``TKASyncSendResponse``: the service's head after applying the AUMs."""

    head: bytes | None = field(default=None, metadata=_m("Head", HASH))


@dataclass(frozen=True)
class DisableRequest(_NodeRequest):
    """``TKADisableRequest``: disable tailnet lock with a disablement secret."""

    path: ClassVar[str] = "/machine/tka/disable"
    version: int = field(default=0, metadata=_m("Version", INT))
    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    head: bytes | None = field(default=None, metadata=_m("Head", HASH, required=True))
    disablement_secret: bytes = field(
        default=b"", metadata=_m("DisablementSecret", BYTES, required=True)
    )

    def __repr__(self) -> str:
        # Never print the secret, even in a traceback.
        n = len(self.disablement_secret)
        return f"DisableRequest(node_key={self.node_key!r}, secret=<{n} bytes>)"


@dataclass(frozen=True)
class SubmitSignatureRequest(_NodeRequest):
    """``TKASubmitSignatureRequest``: a node-key signature for the service to keep."""

    path: ClassVar[str] = "/machine/tka/sign"
    version: int = field(default=0, metadata=_m("Version", INT))
    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    signature: bytes = field(default=b"", metadata=_m("Signature", BYTES, required=True))


@dataclass(frozen=True)
class SignaturesUsingKeyRequest(_NodeRequest):
    """``TKASignaturesUsingKeyRequest``: which signatures does key *key_id* make?"""

    path: ClassVar[str] = "/machine/tka/affected-sigs"
    version: int = field(default=0, metadata=_m("Version", INT))
    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    key_id: bytes = field(default=b"", metadata=_m("KeyID", BYTES, required=True))


@dataclass(frozen=True)
class SignaturesUsingKeyResponse:
    """``TKASignaturesUsingKeyResponse``."""

    signatures: tuple[bytes, ...] = field(
        default=(), metadata=_m("Signatures", _List(BYTES, limit=10**6))
    )


@dataclass(frozen=True)
class RegisterRequest(_NodeRequest):
    """The node-key rotation subset of ``tailcfg.RegisterRequest``.

    ``node_key`` is the new key, ``old_node_key`` the one the service knows,
    ``node_key_signature`` the signature admitting the new key (usually a
    rotation signature made with the node's rotation key).
    """

    path: ClassVar[str] = "/machine/register"
    version: int = field(default=0, metadata=_m("Version", INT))
    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    old_node_key: NodePublic | None = field(
        default=None, metadata=_m("OldNodeKey", NODE_KEY, required=True)
    )
    node_key_signature: bytes = field(default=b"", metadata=_m("NodeKeySignature", BYTES))


@dataclass(frozen=True)
class RegisterResponse:
    """The subset of ``tailcfg.RegisterResponse`` a rotation returns."""

    machine_authorized: bool = field(default=False, metadata=_m("MachineAuthorized", BOOL))
    node_key_signature: bytes = field(
        default=b"", metadata=_m("NodeKeySignature", BYTES, omitempty=True)
    )


@dataclass(frozen=True)
class MapRequest(_NodeRequest):
    """The subset of ``tailcfg.MapRequest`` a lock-aware map poll needs."""

    path: ClassVar[str] = "/machine/map"
    version: int = field(default=0, metadata=_m("Version", INT))
    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    tka_head: bytes | None = field(default=None, metadata=_m("TKAHead", HASH, omitempty=True))
    map_session_handle: str = field(
        default="", metadata=_m("MapSessionHandle", STR, omitempty=True)
    )
    """The session of a map this client holds (from its answer), to be answered with a delta."""
    map_session_seq: int = field(default=0, metadata=_m("MapSessionSeq", INT, omitempty=True))
    """The ``Seq`` of that map."""


@dataclass(frozen=True)
class TKAInfo:
    """``tailcfg.TKAInfo``: the service's head, or that lock was disabled."""

    head: bytes | None = field(default=None, metadata=_m("Head", HASH, omitempty=True))
    disabled: bool = field(default=False, metadata=_m("Disabled", BOOL, omitempty=True))


@dataclass(frozen=True)
class MapNode:
    """The subset of ``tailcfg.Node`` that tailnet lock is about."""

    id: int = field(default=0, metadata=_m("ID", INT))
    key: NodePublic | None = field(default=None, metadata=_m("Key", NODE_KEY))
    key_signature: bytes = field(default=b"", metadata=_m("KeySignature", BYTES, omitempty=True))


@dataclass(frozen=True)
class MapResponse:
    """The lock fields of ``tailcfg.MapResponse``.

    ``peers`` holds only the nodes the authority admits: a locked-out node is
    not sent to anyone. ``tka_info`` is ``None`` when lock was never enabled.

    With lock enabled the answer also names its map session and ``seq``; a
    request that sends them back (``MapSessionHandle``, ``MapSessionSeq``)
    may be answered with a *delta*: no ``Peers`` key at all, and instead
    ``PeersChanged`` (entries new or changed since) and ``PeersRemoved``
    (node IDs gone since). :func:`decode_map_response` tells the two apart
    and :func:`apply_map_delta` applies a delta to the map it updates.
    """

    node: MapNode | None = field(default=None, metadata=_m("Node", _Struct(MapNode)))
    peers: tuple[MapNode, ...] = field(
        default=(), metadata=_m("Peers", _List(_Struct(MapNode), limit=10**6))
    )
    tka_info: TKAInfo | None = field(
        default=None, metadata=_m("TKAInfo", _Struct(TKAInfo), omitempty=True)
    )
    map_session_handle: str = field(
        default="", metadata=_m("MapSessionHandle", STR, omitempty=True)
    )
    seq: int = field(default=0, metadata=_m("Seq", INT, omitempty=True))
    peers_changed: tuple[MapNode, ...] = field(
        default=(),
        metadata=_m("PeersChanged", _List(_Struct(MapNode), limit=10**6), omitempty=True),
    )
    peers_removed: tuple[int, ...] = field(
        default=(), metadata=_m("PeersRemoved", _List(INT, limit=10**6), omitempty=True)
    )
    delta: bool = False
    """Whether this answer is a delta (it had no ``Peers`` key); not on the wire."""


def decode_map_response(obj: Any) -> MapResponse:
    """A map answer, marked as a delta when it carries no ``Peers`` key."""
    response = decode(MapResponse, obj)
    is_delta = isinstance(obj, dict) and "peers" not in _by_folded_key(obj)
    return dataclasses.replace(response, delta=is_delta) if is_delta else response


def apply_map_delta(base: MapResponse, delta: MapResponse) -> MapResponse:
    """The whole map *delta* brings *base* to (a whole answer is returned as it is).

    Raises :class:`BadRequest` when *delta* belongs to another map session,
    or goes backwards.
    """
    if not delta.delta:
        return delta
    if delta.map_session_handle != base.map_session_handle or delta.seq < base.seq:
        raise BadRequest("map delta does not follow the map it was asked for")
    gone = set(delta.peers_removed)
    changed = {n.id: n for n in delta.peers_changed}
    peers = [changed.pop(n.id, n) for n in base.peers if n.id not in gone]
    peers += [n for n in delta.peers_changed if n.id in changed]
    return dataclasses.replace(
        delta, peers=tuple(peers), peers_changed=(), peers_removed=(), delta=False
    )


# -- admin API bodies -------------------------------------------------------------------


@dataclass(frozen=True)
class AdminRegisterRequest:
    """Admin: register a node in a tailnet and mint its token."""

    node_key: NodePublic | None = field(
        default=None, metadata=_m("NodeKey", NODE_KEY, required=True)
    )
    rotation_pubkey: bytes = field(default=b"", metadata=_m("RotationPubkey", BYTES))
    nl_key: bytes = field(default=b"", metadata=_m("NLKey", BYTES))
    name: str = field(default="", metadata=_m("Name", STR))
    may_init: bool = field(default=False, metadata=_m("MayInit", BOOL))


@dataclass(frozen=True)
class AdminNode:
    """Admin: one node of a tailnet and the authority's decision on it."""

    node_id: int = field(default=0, metadata=_m("NodeID", INT))
    name: str = field(default="", metadata=_m("Name", STR))
    node_key: NodePublic | None = field(default=None, metadata=_m("NodeKey", NODE_KEY))
    rotation_pubkey: bytes = field(
        default=b"", metadata=_m("RotationPubkey", BYTES, omitempty=True)
    )
    key_signature: bytes = field(default=b"", metadata=_m("KeySignature", BYTES, omitempty=True))
    admitted: bool = field(default=False, metadata=_m("Admitted", BOOL))
    reason: str = field(default="", metadata=_m("Reason", STR))
    signing_key: str = field(default="", metadata=_m("SigningKey", STR, omitempty=True))
    reported_head: bytes | None = field(
        default=None, metadata=_m("ReportedHead", HASH, omitempty=True)
    )
    may_init: bool = field(default=False, metadata=_m("MayInit", BOOL))


def _check_codecs() -> None:
    """Every wire field must name a codec: catches a typo at import time."""
    for obj in list(globals().values()):
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == __name__:
            for f in dataclasses.fields(obj):
                if "json" in f.metadata and not isinstance(f.metadata["codec"], _Codec):
                    raise TypeError(f"{obj.__name__}.{f.name}: bad codec")


_check_codecs()
