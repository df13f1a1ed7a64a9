"""The authority's state and the rules for applying AUMs: twin of ``tka/state.go``.

CBOR layout of a State (inside a checkpoint AUM)::

    1  last_aum_hash        32 bytes, always encoded (null when nil; nil inside checkpoints)
    2  disablement_values   [bytes], always encoded (null when nil)
    3  keys                 [Key], always encoded (null when nil)
    4  state_id1            uint64, omitted when 0
    5  state_id2            uint64, omitted when 0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from tka._record import KEEP, FrozenRecord, Keep, slot_setters
from tka._schema import (
    Field,
    fill_bytes,
    fill_fixed_bytes,
    fill_list,
    fill_struct,
    fill_uint,
    key_shapes,
    plain_list,
)
from tka.errors import StateError, ValidationError
from tka.key import KEY_KIND_25519, Key
from tka.limits import DISABLEMENT_LENGTH, MAX_DISABLEMENT_VALUES, MAX_KEYS

if TYPE_CHECKING:
    from tka.aum import AUM

__all__ = ["State"]

# AUM kinds (tka.aum.AUMKind, which imports this module).
_ADD_KEY: Final = 1
_REMOVE_KEY: Final = 2
_UPDATE_KEY: Final = 4
_CHECKPOINT: Final = 5


class State(FrozenRecord):
    """Trusted keys, disablement values and IDs of an authority at one AUM. Immutable."""

    __slots__ = ("disablement_values", "keys", "last_aum_hash", "state_id1", "state_id2")
    _fields = __match_args__ = (
        "last_aum_hash",
        "disablement_values",
        "keys",
        "state_id1",
        "state_id2",
    )

    last_aum_hash: bytes | None
    disablement_values: tuple[bytes, ...] | None
    keys: tuple[Key, ...] | None
    state_id1: int
    state_id2: int

    def __init__(
        self,
        last_aum_hash: bytes | None = None,
        disablement_values: tuple[bytes, ...] | None = None,
        keys: tuple[Key, ...] | None = None,
        state_id1: int = 0,
        state_id2: int = 0,
    ) -> None:
        _set_last_aum_hash(self, last_aum_hash)
        _set_disablement_values(self, disablement_values)
        _set_keys(self, keys)
        _set_state_id1(self, state_id1)
        _set_state_id2(self, state_id2)

    def replace(
        self,
        *,
        last_aum_hash: bytes | Keep | None = KEEP,
        disablement_values: tuple[bytes, ...] | Keep | None = KEEP,
        keys: tuple[Key, ...] | Keep | None = KEEP,
        state_id1: int | Keep = KEEP,
        state_id2: int | Keep = KEEP,
    ) -> State:
        """A copy with the given fields changed (what ``dataclasses.replace`` did)."""
        return State(
            self.last_aum_hash if isinstance(last_aum_hash, Keep) else last_aum_hash,
            self.disablement_values if isinstance(disablement_values, Keep) else disablement_values,
            self.keys if isinstance(keys, Keep) else keys,
            self.state_id1 if isinstance(state_id1, Keep) else state_id1,
            self.state_id2 if isinstance(state_id2, Keep) else state_id2,
        )

    # -- lookups ---------------------------------------------------------

    def get_key(self, key_id: bytes) -> Key | None:
        """Return the trusted key with ID *key_id*, or ``None``."""
        for k in self.keys or ():
            if k.key_id == key_id:
                return k
        return None

    def _has_key_before_unknown(self, key_id: bytes) -> bool:
        """Whether *key_id* is trusted, as Go's AddKey asks it.

        Go looks the key up with ``GetKey`` and treats any error as "not
        trusted": a key of an unknown kind met before the match ends the
        lookup there, so the key is added (again) rather than refused.
        """
        for k in self.keys or ():
            if k.kind != KEY_KIND_25519:
                return False
            if k.key_id == key_id:
                return True
        return False

    # -- validation ------------------------------------------------------

    def static_validate_checkpoint(self) -> None:
        """Apply the rules a checkpoint's state must meet (``staticValidateCheckpoint``)."""
        if self.last_aum_hash is not None:
            raise ValidationError("checkpoint state: cannot specify a parent AUM")
        values = self.disablement_values or ()
        if not values:
            raise ValidationError("checkpoint state: at least one disablement value required")
        if len(values) > MAX_DISABLEMENT_VALUES:
            raise ValidationError(
                f"checkpoint state: too many disablement values "
                f"({len(values)}, max {MAX_DISABLEMENT_VALUES})"
            )
        for i, v in enumerate(values):
            # A null element decodes to nil, which Go measures as zero bytes.
            if len(v or b"") != DISABLEMENT_LENGTH:
                raise ValidationError(
                    f"checkpoint state: disablement[{i}] is {len(v or b'')} bytes, "
                    f"want {DISABLEMENT_LENGTH}"
                )
        if len(set(values)) != len(values):
            raise ValidationError("checkpoint state: duplicate disablement values")
        keys = self.keys or ()
        if not keys:
            raise ValidationError("checkpoint state: at least one key is required")
        if len(keys) > MAX_KEYS:
            raise ValidationError(f"checkpoint state: too many keys ({len(keys)}, max {MAX_KEYS})")
        for i, k in enumerate(keys):
            try:
                k.static_validate()
            except ValidationError as exc:
                raise ValidationError(f"checkpoint state: key[{i}]: {exc}") from None
        ids = [k.key_id for k in keys]
        if len(set(ids)) != len(ids):
            raise ValidationError("checkpoint state: duplicate keys")

    # -- transitions -----------------------------------------------------

    @staticmethod
    def from_checkpoint(checkpoint: AUM) -> State:
        """The state a chain starts in at *checkpoint* (its state, positioned at it).

        Unlike :meth:`apply`, state IDs are taken from the checkpoint as they
        are: this is how a chain is bootstrapped or resumed after compaction.
        """
        st = checkpoint.state
        if st is None:
            raise StateError("checkpoint has no state")
        return State(checkpoint.hash, st.disablement_values, st.keys, st.state_id1, st.state_id2)

    def apply(self, update: AUM) -> State:
        """Return the state after *update*, whose signatures the caller has checked.

        Mirrors ``applyVerifiedAUM``; raises :class:`~tka.errors.StateError`
        when the update cannot apply (wrong parent, missing key, ...).
        """
        # States are built with the constructor rather than replace(): same
        # result, cheaper, and this runs once per AUM whenever a chain is
        # opened or walked.
        if self.last_aum_hash is not None and update.prev_aum_hash != self.last_aum_hash:
            raise StateError("parent AUM hash mismatch")
        kind = update.message_kind
        h = update.hash
        if kind == _CHECKPOINT:
            st = update.state
            if st is None:
                raise StateError("checkpoint has no state")
            if st.state_id1 != self.state_id1 or st.state_id2 != self.state_id2:
                raise StateError("checkpointed state has an incorrect state ID")
            return State(h, st.disablement_values, st.keys, st.state_id1, st.state_id2)
        if kind == _ADD_KEY:
            if update.key is None:
                raise StateError("add-key AUM has no key")
            try:
                new_id = update.key.key_id
            except ValidationError as exc:
                raise StateError(f"add-key AUM: {exc}") from None
            if self._has_key_before_unknown(new_id):
                raise StateError("key already exists")
            return State(
                h,
                self.disablement_values,
                (*(self.keys or ()), update.key),
                self.state_id1,
                self.state_id2,
            )
        if kind == _UPDATE_KEY:
            key_id = update.key_id or b""
            keys = self.keys or ()
            # As get_key (Go's GetKey): the keys in order up to the match.
            at = 0
            for old in keys:
                if old.key_id == key_id:
                    break
                at += 1
            else:
                raise StateError("update-key AUM names a key that is not trusted")
            # Absent fields leave the key as it was: an update that carries
            # neither votes nor meta changes nothing but the head (Tailscale
            # applies only what was decoded, and the wire form drops an
            # empty meta map, so there is nothing else to apply).
            meta = old.meta if update.meta is None else update.meta
            new = Key(
                old.kind, old.votes if update.votes is None else update.votes, old.public, meta
            )
            try:
                new.static_validate()
            except ValidationError as exc:
                raise StateError(f"updated key fails validation: {exc}") from None
            # Every key's ID is read, as Go compares every key: those up to
            # the match were read above; after it, a key of an unusable kind
            # raises here as in get_key, and the same ID again is replaced too.
            rest = keys[at + 1 :]
            if rest:
                rest = tuple([new if k.key_id == key_id else k for k in rest])
            return State(
                h, self.disablement_values, (*keys[:at], new, *rest), self.state_id1, self.state_id2
            )
        if kind == _REMOVE_KEY:
            key_id = update.key_id or b""
            keys = self.keys or ()
            for i, k in enumerate(keys):
                if k.key_id == key_id:
                    return State(
                        h,
                        self.disablement_values,
                        keys[:i] + keys[i + 1 :],
                        self.state_id1,
                        self.state_id2,
                    )
            raise StateError("remove-key AUM names a key that is not trusted")
        # No-op, and kinds from the future: they must not change existing
        # semantics, so old nodes move the head and nothing else.
        return State(h, self.disablement_values, self.keys, self.state_id1, self.state_id2)

    # -- encoding ----------------------------------------------------------

    def to_cbor_obj(self) -> dict[int, Any]:
        """The value handed to the canonical encoder."""
        out: dict[int, Any] = {
            1: self.last_aum_hash,
            2: None if self.disablement_values is None else list(self.disablement_values),
            3: None if self.keys is None else [k.to_cbor_obj() for k in self.keys],
        }
        if self.state_id1:
            out[4] = self.state_id1
        if self.state_id2:
            out[5] = self.state_id2
        return out

    @classmethod
    def from_cbor_obj(cls, node: Any, where: str = "state") -> State:
        """Fill a state from a parsed CBOR node with Go's decoding rules."""
        v = fill_struct(node, _FIELDS, where)
        if v["disablement_values"] is not None:
            v["disablement_values"] = tuple(v["disablement_values"])
        if v["keys"] is not None:
            v["keys"] = tuple(v["keys"])
        return cls(**v)

    @classmethod
    def _from_plain(cls, node: Any) -> State | None:
        """The fast path's narrow filler (see the end of :mod:`tka._schema`).

        Written out flat: every checkpoint read from storage holds a state.
        """
        if type(node) is not dict:
            return None
        shape = tuple(node)
        if shape not in _SHAPES:
            return None
        for k in shape:
            if type(k) is not int:  # True == 1 passes the membership test
                return None
        last = node[1]
        # Only exactly 32 bytes survive the fixed-size field unchanged.
        if last is not None and (type(last) is not bytes or len(last) != 32):
            return None
        values: tuple[bytes, ...] | None = None
        raw_values = node[2]
        if raw_values is not None:
            if not plain_list(raw_values):
                return None
            for v in raw_values:
                if type(v) is not bytes:
                    return None
            values = tuple(raw_values)
        keys: tuple[Key, ...] | None = None
        raw_keys = node[3]
        if raw_keys is not None:
            if not plain_list(raw_keys):
                return None
            decoded = []
            for k in raw_keys:
                key = Key._from_plain(k)
                if key is None:
                    return None
                decoded.append(key)
            keys = tuple(decoded)
        # IDs are omitted when zero, so a present one must be non-zero.
        id1 = node.get(4, 0)
        id2 = node.get(5, 0)
        if len(shape) > 3 and (
            (4 in node and not (type(id1) is int and 0 < id1 < 1 << 64))
            or (5 in node and not (type(id2) is int and 0 < id2 < 1 << 64))
        ):
            return None
        return cls(last, values, keys, id1, id2)


_FIELDS: Final[dict[int, Field]] = {
    1: ("last_aum_hash", lambda n, w: fill_fixed_bytes(n, 32, w), None),
    2: ("disablement_values", lambda n, w: fill_list(n, fill_bytes, w), None),
    3: ("keys", lambda n, w: fill_list(n, Key.from_cbor_obj, w), None),
    4: ("state_id1", lambda n, w: fill_uint(n, 64, w), 0),
    5: ("state_id2", lambda n, w: fill_uint(n, 64, w), 0),
}

# Keys 1-3 are always written, the state IDs only when non-zero.
_SHAPES: Final = key_shapes((1, 2, 3), (4, 5))

(
    _set_last_aum_hash,
    _set_disablement_values,
    _set_keys,
    _set_state_id1,
    _set_state_id2,
) = slot_setters(State, State._fields)
