"""Building signed updates to an authority: twin of Tailscale's ``tka/builder.go``.

An :class:`UpdateBuilder` collects add/remove/update-key operations on top of
an authority's head, signs each resulting AUM, and on :meth:`finalize`
appends a checkpoint when the chain would otherwise run 50 AUMs without one,
exactly as Tailscale does, so that our AUMs are byte-for-byte Tailscale's.

On top of Tailscale's rules it refuses to *make* a state that Tailscale could
later not change (see :data:`SAFE_MAX_KEYS`), and warns as the key set nears
the limit: data is verified as Tailscale does, but we do not create traps.
"""

from __future__ import annotations

import warnings

from tka.aum import AUM, AUMKind
from tka.authority import Authority, Signer
from tka.errors import StateError, TKAError, UsageError, ValidationError
from tka.key import Key
from tka.limits import CHECKPOINT_EVERY, MAX_KEYS
from tka.storage import Storage

__all__ = ["KEY_COUNT_WARNING", "SAFE_MAX_KEYS", "KeySetWarning", "UpdateBuilder"]

#: The most keys a state we build may hold. Tailscale refuses checkpoints with
#: more than 512 keys, and the automatic checkpoint after 50 AUMs must stay
#: valid, so a state at 512 keys could be left unable to checkpoint (and so
#: unable to change) if the chain grows: we stop one short of the hard cap.
SAFE_MAX_KEYS = MAX_KEYS - 1
#: From this many keys on (90% of Tailscale's cap) the builder warns.
KEY_COUNT_WARNING = (MAX_KEYS * 9) // 10


class KeySetWarning(UserWarning):
    """The key set is close to the size where Tailscale stops accepting changes."""


class UpdateBuilder:
    """Collects signed updates on top of an authority's head (``NewUpdater``).

    Use one builder per batch; call :meth:`finalize` with the authority's
    storage to get the AUMs to inform (locally and to peers).
    """

    def __init__(self, authority: Authority, signer: Signer | None, *, strict: bool = True) -> None:
        """*strict* enables the key-count safety checks that Tailscale lacks."""
        self._authority = authority
        self._signer = signer
        self._strict = strict
        self._state = authority.state
        self._parent = authority.head_hash
        self._out: list[AUM] = []

    @property
    def updates(self) -> tuple[AUM, ...]:
        """The updates built so far."""
        return tuple(self._out)

    def _make(self, update: AUM) -> None:
        update = update.replace(prev_aum_hash=self._parent)
        if self._signer is not None:
            signatures = self._signer.sign_aum(update.sig_hash)
            if signatures:
                update = update.with_signatures(signatures)
        try:
            update.static_validate()
        except ValidationError as exc:
            raise ValidationError(f"generated update is invalid: {exc}") from None
        try:
            state = self._state.apply(update)
        except StateError as exc:
            raise StateError(f"update cannot be applied: {exc}") from None
        self._state = state
        self._parent = update.hash
        self._out.append(update)

    def _require_key(self, key_id: bytes) -> None:
        if self._state.get_key(key_id) is None:
            raise StateError(f"key tlpub:{key_id.hex()} is not trusted")

    def add_key(self, key: Key) -> None:
        """Add a trusted key."""
        key_id = key.key_id
        if self._state.get_key(key_id) is not None:
            raise StateError(f"cannot add key tlpub:{(key.public or b'').hex()}: already exists")
        count = len(self._state.keys or ())
        if count >= MAX_KEYS:
            raise StateError(
                f"cannot add key tlpub:{(key.public or b'').hex()}: maximum number of keys reached"
            )
        if self._strict:
            if count + 1 > SAFE_MAX_KEYS:
                raise StateError(
                    f"refusing to grow the key set to {count + 1} keys: Tailscale caps "
                    f"checkpoints at {MAX_KEYS}, and a key set at the cap can become "
                    "impossible to change; remove unused keys first"
                )
            if count + 1 >= KEY_COUNT_WARNING:
                warnings.warn(
                    f"the key set grows to {count + 1} keys, near Tailscale's limit of "
                    f"{MAX_KEYS}; remove keys that are no longer used",
                    KeySetWarning,
                    stacklevel=2,
                )
        self._make(AUM(AUMKind.ADD_KEY, key=key))

    def remove_key(self, key_id: bytes) -> None:
        """Remove a trusted key."""
        self._require_key(key_id)
        self._make(AUM(AUMKind.REMOVE_KEY, key_id=key_id))

    def set_key_vote(self, key_id: bytes, votes: int) -> None:
        """Change a key's vote weight."""
        self._require_key(key_id)
        if votes < 0:
            raise UsageError("votes must not be negative")
        self._make(AUM(AUMKind.UPDATE_KEY, key_id=key_id, votes=votes))

    def set_key_meta(self, key_id: bytes, meta: dict[str, str] | None) -> None:
        """Replace a key's metadata."""
        self._require_key(key_id)
        self._make(AUM(AUMKind.UPDATE_KEY, key_id=key_id, meta=meta))

    def _checkpoint(self) -> None:
        # The checkpoint holds the state after the updates, replayed from the
        # authority's state now (it may have moved since the builder began).
        state = self._authority.state
        for i, update in enumerate(self._out):
            try:
                state = state.apply(update)
            except StateError as exc:
                raise StateError(f"applying update {i}: {exc}") from None
        self._make(AUM(AUMKind.CHECKPOINT, state=state.replace(last_aum_hash=None)))

    def _needs_checkpoint(self, storage: Storage) -> bool:
        cursor: bytes | None = self._authority.head_hash
        for _ in range(len(self._out), CHECKPOINT_EVERY):
            aum = storage.get(cursor) if cursor is not None else None
            if aum is None or aum.message_kind == AUMKind.CHECKPOINT:
                return False
            cursor = aum.parent
            if cursor is None:
                return False
        return True

    def finalize(self, storage: Storage) -> list[AUM]:
        """The updates to inform, with a checkpoint appended when one is due."""
        if self._needs_checkpoint(storage):
            try:
                self._checkpoint()
            except TKAError as exc:
                raise type(exc)(f"generating checkpoint: {exc}") from None
        head = self._authority.head_hash
        if self._out and self._out[0].parent != head:
            raise StateError("updates no longer apply to the head: it moved since they were built")
        return list(self._out)
