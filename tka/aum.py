"""Authority Update Messages: twin of Tailscale's ``tka/aum.go``.

CBOR layout of an AUM (map with integer keys)::

    1  message_kind   uint8, always encoded
    2  prev_aum_hash  bytes, always encoded (null for a genesis AUM)
    3  key            Key, omitted when nil                       (add-key)
    4  key_id         bytes, omitted when nil or empty            (remove-key, update-key)
    5  state          State, omitted when nil                     (checkpoint)
    6  votes          uint, omitted when nil; 0 is encoded         (update-key)
    7  meta           map[str]str, omitted when nil or empty      (update-key)
    23 signatures     [{1: key_id, 2: signature}], omitted when nil or empty

The AUM hash is BLAKE2s-256 of the canonical re-serialization of the decoded
value, not of the bytes received: unknown fields are dropped and encodings
normalized first, so every node computes the same hash for the same meaning.
"""

from __future__ import annotations

import enum

# hashlib.blake2s is this very type; importing hashlib would also load OpenSSL
# (a few ms of every CLI start) for hash functions AUMs never use.
from _blake2 import blake2s as _blake2s_new
from typing import Any, Final

import cbor2

from tka import codec
from tka._cache import cached
from tka._record import KEEP, FrozenRecord, Keep, slot_setters
from tka._schema import (
    Field,
    fill_bytes,
    fill_list,
    fill_str_map,
    fill_struct,
    fill_uint,
    key_shapes,
    plain_text_map,
    plain_uint,
)
from tka.errors import DecodeError, ValidationError
from tka.key import Key
from tka.limits import CBOR_MAX_ARRAY_ELEMENTS
from tka.state import State

__all__ = [
    "AUM",
    "HASH_SIZE",
    "AUMKind",
    "Signature",
    "aum_kind_name",
    "blake2s",
    "hash_from_text",
    "hash_to_text",
]

HASH_SIZE: Final = 32


def blake2s(data: bytes) -> bytes:
    """BLAKE2s-256 digest, the hash used for AUMs and node-key signatures."""
    return _blake2s_new(data).digest()


_B32_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# Python's base64 module does base32 in pure Python, slowly; the filesystem
# store names every AUM file this way. For the 32-byte case: 256 bits plus 4
# zero bits are 52 five-bit digits, written here 10 bits (two characters) at
# a time, and read back by int() in base 32 after mapping the alphabet onto
# the digits int() knows.
_B32_PAIRS: Final = tuple(a + b for a in _B32_ALPHABET for b in _B32_ALPHABET)
_B32_SHIFTS: Final = tuple(range(250, -1, -10))
# Every ASCII character to "!", which int() refuses, except the alphabet,
# which goes to the digits int() reads in base 32. Non-ASCII text is refused
# before (int() would read other scripts' digits), so a translated text
# parses exactly when every character was in the alphabet.
_B32_TO_INT_DIGITS: Final = str.maketrans(
    {chr(c): "!" for c in range(128)}
    | dict(zip(_B32_ALPHABET, "0123456789abcdefghijklmnopqrstuv", strict=True))
)


def _plain_hash_text_value(text: str) -> bytes | None:
    """The hash spelled by *text* when it is 52 characters of the alphabet, else ``None``.

    The text of every hash Tailscale writes. As Go's decoder (and
    ``base64.b32decode``), the 4 bits past the 256th are dropped unchecked.
    One translation and one int() parse: AUM file names are parsed for
    every file when a chain is opened.
    """
    if len(text) != 52 or not text.isascii():
        return None
    try:
        n = int(text.translate(_B32_TO_INT_DIGITS), 32)
    except ValueError:
        return None
    return (n >> 4).to_bytes(HASH_SIZE, "big")


def hash_to_text(h: bytes) -> str:
    """Tailscale's text form of an AUM hash: base32, standard alphabet, no padding."""
    if len(h) == HASH_SIZE:
        n = int.from_bytes(h, "big") << 4
        return "".join([_B32_PAIRS[(n >> shift) & 0x3FF] for shift in _B32_SHIFTS])
    import base64  # only for odd sizes: the import would slow the start of 'tka lock status'

    return base64.b32encode(h).decode("ascii").rstrip("=")


def hash_from_text(text: str) -> bytes:
    """Parse the text form of an AUM hash, exactly as Go's ``AUMHash.UnmarshalText``.

    Go checks the decoded length of the raw text first (so it must be 52
    characters), then ``encoding/base32`` without padding decodes it: that
    drops ``\r`` and ``\n`` wherever they are and decodes a short final
    quantum as far as it goes, leaving the rest of the hash zero. Every
    place that reads a hash from outside (file names, sync offers, bundles,
    pins, the control service) parses it here, so all accept the same texts.
    """
    if not isinstance(text, str):
        raise DecodeError(f"aum hash: expected text, got {type(text).__name__}")
    if len(text) * 5 // 8 != HASH_SIZE:
        raise DecodeError(f"aum hash: text is {len(text)} characters, want 52")
    plain = _plain_hash_text_value(text)
    if plain is not None:
        # 52 characters of the alphabet: the text of every hash Go writes.
        return plain
    decoded = _go_base32_decode(text.replace("\r", "").replace("\n", ""))
    if decoded is None:
        raise DecodeError("aum hash: not valid base32 (standard alphabet, upper case)")
    return decoded


_B32_VALUES: Final = {c: i for i, c in enumerate(_B32_ALPHABET)}
# Bytes Go's base32 decoder writes for a final quantum of n characters
# (n = 1, 3 or 6 writes nothing, without an error).
_QUANTUM_BYTES: Final = {8: 5, 7: 4, 5: 3, 4: 2, 2: 1}


def _go_base32_decode(text: str) -> bytes | None:
    """Go's unpadded base32 ``Decode`` of at most 52 characters into a zeroed hash.

    ``None`` when a character is outside the alphabet (``=`` included: the
    encoding has no padding).
    """
    out = bytearray(HASH_SIZE)
    for at in range(0, len(text), 8):
        quantum = text[at : at + 8]
        bits = 0
        for c in quantum:
            v = _B32_VALUES.get(c)
            if v is None:
                return None
            bits = bits << 5 | v
        bits <<= 5 * (8 - len(quantum))
        n = _QUANTUM_BYTES.get(len(quantum), 0)
        out[at // 8 * 5 : at // 8 * 5 + n] = bits.to_bytes(5, "big")[:n]
    return bytes(out)


class AUMKind(enum.IntEnum):
    """The kinds of AUM Tailscale defines. Unknown kinds are valid and act as no-ops."""

    INVALID = 0
    ADD_KEY = 1
    REMOVE_KEY = 2
    NO_OP = 3
    UPDATE_KEY = 4
    CHECKPOINT = 5


_KIND_NAMES: Final = {
    0: "invalid",
    1: "add-key",
    2: "remove-key",
    3: "no-op",
    4: "update-key",
    5: "checkpoint",
}


def aum_kind_name(kind: int) -> str:
    """Go's ``AUMKind.String()``: ``add-key``, ..., or ``AUM?<n>`` for unknown kinds."""
    return _KIND_NAMES.get(kind, f"AUM?<{kind}>")


class Signature(FrozenRecord):
    """One signature over an AUM's sig-hash (``tkatype.Signature``); both fields always encoded."""

    __slots__ = ("key_id", "signature")
    _fields = __match_args__ = ("key_id", "signature")

    key_id: bytes | None
    signature: bytes | None

    def __init__(self, key_id: bytes | None, signature: bytes | None) -> None:
        _set_sig_key_id(self, key_id)
        _set_sig_signature(self, signature)

    def to_cbor_obj(self) -> dict[int, Any]:
        """The value handed to the canonical encoder."""
        return {1: self.key_id, 2: self.signature}

    @classmethod
    def from_cbor_obj(cls, node: Any, where: str = "signature") -> Signature:
        """Fill a signature from a parsed CBOR node with Go's decoding rules."""
        return cls(**fill_struct(node, _SIG_FIELDS, where))


_SIG_FIELDS: Final[dict[int, Field]] = {
    1: ("key_id", fill_bytes, None),
    2: ("signature", fill_bytes, None),
}


class AUM(FrozenRecord):
    """An Authority Update Message. Immutable; hashes are computed once and cached.

    ``None`` means absent (Go's nil) and differs from empty: see the module
    docstring for which fields are encoded when empty.
    """

    # No __slots__: the cached hashes and bytes live in the instance dictionary.
    _fields = __match_args__ = (
        "message_kind",
        "prev_aum_hash",
        "key",
        "key_id",
        "state",
        "votes",
        "meta",
        "signatures",
    )

    message_kind: int
    prev_aum_hash: bytes | None
    key: Key | None
    key_id: bytes | None
    state: State | None
    votes: int | None
    meta: dict[str, str] | None
    signatures: tuple[Signature, ...] | None

    def __init__(
        self,
        message_kind: int,
        prev_aum_hash: bytes | None = None,
        key: Key | None = None,
        key_id: bytes | None = None,
        state: State | None = None,
        votes: int | None = None,
        meta: dict[str, str] | None = None,
        signatures: tuple[Signature, ...] | None = None,
    ) -> None:
        # One dictionary in place of eight attribute stores (see _from_plain).
        _setattr(
            self,
            "__dict__",
            {
                "message_kind": message_kind,
                "prev_aum_hash": prev_aum_hash,
                "key": key,
                "key_id": key_id,
                "state": state,
                "votes": votes,
                "meta": meta,
                "signatures": signatures,
            },
        )

    def replace(
        self,
        *,
        message_kind: int | Keep = KEEP,
        prev_aum_hash: bytes | Keep | None = KEEP,
        key: Key | Keep | None = KEEP,
        key_id: bytes | Keep | None = KEEP,
        state: State | Keep | None = KEEP,
        votes: int | Keep | None = KEEP,
        meta: dict[str, str] | Keep | None = KEEP,
        signatures: tuple[Signature, ...] | Keep | None = KEEP,
    ) -> AUM:
        """A copy with the given fields changed (hash caches are not carried over)."""
        return AUM(
            self.message_kind if isinstance(message_kind, Keep) else message_kind,
            self.prev_aum_hash if isinstance(prev_aum_hash, Keep) else prev_aum_hash,
            self.key if isinstance(key, Keep) else key,
            self.key_id if isinstance(key_id, Keep) else key_id,
            self.state if isinstance(state, Keep) else state,
            self.votes if isinstance(votes, Keep) else votes,
            self.meta if isinstance(meta, Keep) else meta,
            self.signatures if isinstance(signatures, Keep) else signatures,
        )

    # -- wire form -------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> AUM:
        """Decode an AUM strictly (Tailscale's ``AUM.Unserialize``); no validation.

        Canonical bytes (what every tka and Tailscale node writes) take a fast
        path through cbor2's C decoder that gives the same result as the
        strict parser (see the end of :mod:`tka._schema` for why); anything
        else is decoded by the strict parser.
        """
        if type(data) is bytes:
            fast = _from_canonical(data)
            if fast is not None:
                return fast
        return cls.from_cbor_obj(codec.parse(data))

    @classmethod
    def from_cbor_obj(cls, node: Any, where: str = "aum") -> AUM:
        """Fill an AUM from a parsed CBOR node with Go's decoding rules."""
        v = fill_struct(node, _AUM_FIELDS, where)
        if v["signatures"] is not None:
            v["signatures"] = tuple(v["signatures"])
        return cls(**v)

    def to_cbor_obj(self, with_signatures: bool = True) -> dict[int, Any]:
        """The value handed to the canonical encoder (maps in canonical key order)."""
        out: dict[int, Any] = {1: self.message_kind, 2: self.prev_aum_hash}
        if self.key is not None:
            out[3] = self.key.to_cbor_obj()
        if self.key_id:
            out[4] = self.key_id
        if self.state is not None:
            out[5] = self.state.to_cbor_obj()
        if self.votes is not None:
            out[6] = self.votes
        if self.meta:
            out[7] = codec.ordered_map(self.meta)
        if with_signatures and self.signatures:
            out[23] = [s.to_cbor_obj() for s in self.signatures]
        return out

    @cached
    def canonical(self) -> bytes:
        """The canonical serialization (Tailscale's ``AUM.Serialize``)."""
        return codec.encode_ordered(self.to_cbor_obj())

    def to_bytes(self) -> bytes:
        """Serialize canonically; the inverse of :meth:`from_bytes` up to normalization."""
        return self.canonical

    @cached
    def hash(self) -> bytes:
        """The AUM hash: BLAKE2s-256 of the canonical serialization."""
        return blake2s(self.canonical)

    @cached
    def sig_hash(self) -> bytes:
        """The digest signatures are made over.

        Signatures are left out, else the digest would depend on itself.
        """
        c = self.canonical
        if not self.signatures:
            return blake2s(c)
        # The signatures are the last pair of the canonical map (key 23 sorts
        # after keys 1-7), and dropping a pair leaves the others' bytes as
        # they are; only the pair count in the head, a single byte 0xa0 +
        # count for at most 8 pairs, changes. So the digest input is a prefix
        # of the canonical bytes, whose length follows from the field values.
        size = 1 + codec.head_size(len(self.signatures))  # key 23, array head
        for sig in self.signatures:
            size += 5  # map head, key 1, key 2, and one head each when null
            if sig.key_id is not None:
                size += codec.head_size(len(sig.key_id)) - 1 + len(sig.key_id)
            if sig.signature is not None:
                size += codec.head_size(len(sig.signature)) - 1 + len(sig.signature)
        return blake2s(bytes((c[0] - 1,)) + c[1 : len(c) - size])

    @property
    def hash_text(self) -> str:
        """The hash in Tailscale's base32 text form."""
        return hash_to_text(self.hash)

    @property
    def parent(self) -> bytes | None:
        """The parent's hash, or ``None`` for an AUM with no parent.

        As Go's ``AUM.Parent``: a previous hash of other than 32 bytes is
        truncated or zero-padded to 32.
        """
        prev = self.prev_aum_hash
        if not prev:
            return None
        if len(prev) == HASH_SIZE:
            return prev
        return prev[:HASH_SIZE].ljust(HASH_SIZE, b"\x00")

    @property
    def kind_name(self) -> str:
        """Go's name for this AUM's kind."""
        return aum_kind_name(self.message_kind)

    # -- rules -----------------------------------------------------------

    def static_validate(self) -> None:
        """Tailscale's ``AUM.StaticValidate``: shape checks that need no state."""
        if self.key is not None:
            self.key.static_validate()
        if self.prev_aum_hash is not None and len(self.prev_aum_hash) == 0:
            raise ValidationError("aum: an absent parent must be null, not an empty byte string")
        for i, sig in enumerate(self.signatures or ()):
            if len(sig.key_id or b"") != 32 or len(sig.signature or b"") != 64:
                raise ValidationError(
                    f"aum: signature {i} has a missing key ID or malformed signature"
                )
        if self.state is not None:
            self.state.static_validate_checkpoint()
        kind = self.message_kind
        if kind == AUMKind.ADD_KEY:
            if self.key is None:
                raise ValidationError("aum: add-key AUMs must contain a key")
            if (
                self.key_id is not None
                or self.state is not None
                or self.votes is not None
                or self.meta is not None
            ):
                raise ValidationError("aum: add-key AUMs may only specify a key")
        elif kind == AUMKind.REMOVE_KEY:
            if not self.key_id:
                raise ValidationError("aum: remove-key AUMs must specify a key ID")
            if (
                self.key is not None
                or self.state is not None
                or self.votes is not None
                or self.meta is not None
            ):
                raise ValidationError("aum: remove-key AUMs may only specify a key ID")
        elif kind == AUMKind.UPDATE_KEY:
            if not self.key_id:
                raise ValidationError("aum: update-key AUMs must specify a key ID")
            if self.meta is None and self.votes is None:
                raise ValidationError("aum: update-key AUMs must update votes or metadata")
            if self.key is not None or self.state is not None:
                raise ValidationError("aum: update-key AUMs may only specify key ID, votes, meta")
        elif kind == AUMKind.CHECKPOINT:
            if self.state is None:
                raise ValidationError("aum: checkpoint AUMs must specify the state")
            if (
                self.key_id is not None
                or self.key is not None
                or self.votes is not None
                or self.meta is not None
            ):
                raise ValidationError("aum: checkpoint AUMs may only specify the state")
        # No-op and unknown kinds: nothing to check. Unknown kinds come from
        # newer nodes, which promise only to add features, so they are valid.

    def weight(self, state: State) -> int:
        """Sum of votes of the distinct trusted keys that signed this AUM.

        Used to choose between forks; the caller must have verified the
        signatures. Signatures by keys the state does not trust count zero.
        """
        seen: set[bytes] = set()
        total = 0
        for sig in self.signatures or ():
            kid = sig.key_id or b""
            if kid in seen:
                continue
            key = state.get_key(kid)
            if key is None:
                continue
            seen.add(kid)
            total += key.votes
        return total

    def with_signatures(self, signatures: tuple[Signature, ...] | None) -> AUM:
        """Return a copy carrying *signatures* (hash caches are not carried over)."""
        return self.replace(signatures=signatures)


_AUM_FIELDS: Final[dict[int, Field]] = {
    1: ("message_kind", lambda n, w: fill_uint(n, 8, w), 0),
    2: ("prev_aum_hash", fill_bytes, None),
    3: ("key", lambda n, w: None if n is None else Key.from_cbor_obj(n, w), None),
    4: ("key_id", fill_bytes, None),
    5: ("state", lambda n, w: None if n is None else State.from_cbor_obj(n, w), None),
    6: ("votes", lambda n, w: fill_uint(n, 64, w, zero=None), None),
    7: ("meta", fill_str_map, None),
    23: ("signatures", lambda n, w: fill_list(n, Signature.from_cbor_obj, w), None),
}


# Keys 1 and 2 are always written; the others only when set (see the layout).
_AUM_SHAPES: Final = key_shapes((1, 2), (3, 4, 5, 6, 7, 23))

_new: Final = object.__new__
_setattr: Final = object.__setattr__
_set_sig_key_id, _set_sig_signature = slot_setters(Signature, Signature._fields)
_blake2s: Final = _blake2s_new
# codec.loads_plain and codec.encode_ordered without the function calls
# around them: decoding AUMs is a hot path.
_loads: Final = cbor2.loads
_dumps: Final = cbor2.dumps


def _from_canonical(data: bytes) -> AUM | None:
    """The fast path of :meth:`AUM.from_bytes`: the AUM, or ``None`` to decode strictly.

    The narrow filler :func:`_from_plain` accepts only trees that are exactly
    what :meth:`AUM.to_cbor_obj` produces (the rules are listed at the end of
    :mod:`tka._schema`); the re-encoding check then proves *data* canonical.
    """
    try:
        t = _loads(data)
    except Exception:
        return None  # the strict parser gives the authoritative error
    aum = _from_plain(t)
    if aum is None or _dumps(t) != data:
        return None
    # Prime the caches of the canonical bytes (proven above to be *data*)
    # and of the hash (wanted for almost every AUM decoded: storage and chain
    # walks key AUMs by it).
    d = aum.__dict__
    d["canonical"] = data
    d["hash"] = _blake2s(data).digest()
    return aum


def _from_plain(t: Any) -> AUM | None:
    """The narrow filler of the AUM fast path: an AUM, or ``None`` for any other shape.

    *t* is a tree from cbor2. The caller must still check that re-encoding
    *t* gives back its input before trusting the result. Written out flat,
    not with the helpers of :mod:`tka._schema` where it can be avoided: this
    runs for every AUM read from storage.
    """
    if type(t) is not dict:
        return None
    keys = tuple(t)
    if keys not in _AUM_SHAPES:
        return None
    for k in keys:
        if type(k) is not int:  # True == 1 and 2.0 == 2 passed the membership test
            return None
    kind = t[1]
    prev = t[2]
    if type(kind) is not int or not 0 <= kind <= 0xFF:
        return None
    if prev is not None and type(prev) is not bytes:
        return None
    key = key_id = state = votes = meta = signatures = None
    if len(keys) > 2:
        if 3 in t:
            key = Key._from_plain(t[3])
            if key is None:
                return None
        if 4 in t:
            key_id = t[4]
            if type(key_id) is not bytes or not key_id:
                return None
        if 5 in t:
            state = State._from_plain(t[5])
            if state is None:
                return None
        if 6 in t:
            votes = t[6]
            if not plain_uint(votes, 64):
                return None
        if 7 in t:
            meta = plain_text_map(t[7])
            if meta is None:
                return None
        if 23 in t:
            raw = t[23]
            if type(raw) is not list or not raw or len(raw) > CBOR_MAX_ARRAY_ELEMENTS:
                return None
            sigs = []
            for s in raw:
                if type(s) is not dict:
                    return None
                sk = tuple(s)
                if sk != (1, 2) or type(sk[0]) is not int or type(sk[1]) is not int:
                    return None
                s_key, s_sig = s[1], s[2]
                if (s_key is not None and type(s_key) is not bytes) or (
                    s_sig is not None and type(s_sig) is not bytes
                ):
                    return None
                sig: Signature = _new(Signature)
                # What Signature.__init__ does, without the call.
                _set_sig_key_id(sig, s_key)
                _set_sig_signature(sig, s_sig)
                sigs.append(sig)
            signatures = tuple(sigs)
    aum: AUM = _new(AUM)
    # What AUM.__init__ does, without the call.
    _setattr(
        aum,
        "__dict__",
        {
            "message_kind": kind,
            "prev_aum_hash": prev,
            "key": key,
            "key_id": key_id,
            "state": state,
            "votes": votes,
            "meta": meta,
            "signatures": signatures,
        },
    )
    return aum
