"""The authority's state and the rules for applying AUMs: twin of ``tka/state.go``.

CBOR layout of a State (inside a checkpoint AUM)::

    1  last_aum_hash        32 bytes, always encoded (null when nil; nil inside checkpoints)
    2  disablement_values   [bytes], always encoded (null when nil)
    3  keys                 [Key], always encoded (null when nil)
    4  state_id1            uint64, omitted when 0
    5  state_id2            uint64, omitted when 0
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from tka._schema import Field, fill_bytes, fill_fixed_bytes, fill_list, fill_struct, fill_uint
from tka.errors import StateError, ValidationError
from tka.key import Key
from tka.limits import DISABLEMENT_LENGTH, MAX_DISABLEMENT_VALUES, MAX_KEYS

if TYPE_CHECKING:
    from tka.aum import AUM

__all__ = ["State"]


@dataclass(frozen=True, slots=True)
class State:
    """Trusted keys, disablement values and IDs of an authority at one AUM."""

    last_aum_hash: bytes | None = None
    disablement_values: tuple[bytes, ...] | None = None
    keys: tuple[Key, ...] | None = None
    state_id1: int = 0
    state_id2: int = 0

    # -- lookups ---------------------------------------------------------

    def get_key(self, key_id: bytes) -> Key | None:
        """Return the trusted key with ID *key_id*, or ``None``."""
        for k in self.keys or ():
            if k.key_id == key_id:
                return k
        return None

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
        if checkpoint.state is None:
            raise StateError("checkpoint has no state")
        return replace(checkpoint.state, last_aum_hash=checkpoint.hash)

    def apply(self, update: AUM) -> State:
        """Return the state after *update*, whose signatures the caller has checked.

        Mirrors ``applyVerifiedAUM``; raises :class:`~tka.errors.StateError`
        when the update cannot apply (wrong parent, missing key, ...).
        """
        from tka.aum import AUMKind  # local: aum imports this module

        if self.last_aum_hash is not None and update.prev_aum_hash != self.last_aum_hash:
            raise StateError("parent AUM hash mismatch")
        kind = update.message_kind
        h = update.hash
        if kind == AUMKind.CHECKPOINT:
            if update.state is None:
                raise StateError("checkpoint has no state")
            if (update.state.state_id1, update.state.state_id2) != (
                self.state_id1,
                self.state_id2,
            ):
                raise StateError("checkpointed state has an incorrect state ID")
            return replace(update.state, last_aum_hash=h)
        if kind == AUMKind.ADD_KEY:
            if update.key is None:
                raise StateError("add-key AUM has no key")
            if self.get_key(update.key.key_id) is not None:
                raise StateError("key already exists")
            return replace(self, last_aum_hash=h, keys=(*(self.keys or ()), update.key))
        if kind == AUMKind.UPDATE_KEY:
            key_id = update.key_id or b""
            old = self.get_key(key_id)
            if old is None:
                raise StateError("update-key AUM names a key that is not trusted")
            meta = old.meta if update.meta is None else update.meta
            if update.votes is None and update.meta is None:
                # Such an update can only have been made with an empty
                # metadata map, which the wire form omits; Tailscale applies
                # that map (nil and empty metadata encode the same).
                meta = {}
            new = replace(
                old,
                votes=old.votes if update.votes is None else update.votes,
                meta=meta,
            )
            try:
                new.static_validate()
            except ValidationError as exc:
                raise StateError(f"updated key fails validation: {exc}") from None
            keys = tuple(new if k.key_id == key_id else k for k in self.keys or ())
            return replace(self, last_aum_hash=h, keys=keys)
        if kind == AUMKind.REMOVE_KEY:
            key_id = update.key_id or b""
            keys = self.keys or ()
            for i, k in enumerate(keys):
                if k.key_id == key_id:
                    return replace(self, last_aum_hash=h, keys=keys[:i] + keys[i + 1 :])
            raise StateError("remove-key AUM names a key that is not trusted")
        # No-op, and kinds from the future: they must not change existing
        # semantics, so old nodes move the head and nothing else.
        return replace(self, last_aum_hash=h)

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


_FIELDS: Final[dict[int, Field]] = {
    1: ("last_aum_hash", lambda n, w: fill_fixed_bytes(n, 32, w), None),
    2: ("disablement_values", lambda n, w: fill_list(n, fill_bytes, w), None),
    3: ("keys", lambda n, w: fill_list(n, Key.from_cbor_obj, w), None),
    4: ("state_id1", lambda n, w: fill_uint(n, 64, w), 0),
    5: ("state_id2", lambda n, w: fill_uint(n, 64, w), 0),
}
