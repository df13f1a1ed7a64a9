"""A node's state directory: its tailnet-lock key, its AUMs and what it has signed.

Layout (everything written atomically; the directory is locked while in use)::

    <dir>/.lock                 advisory lock held by the process using the directory
    <dir>/tailnet-lock.key      private key: nlpriv:<hex>, or encrypted PKCS#8 PEM (0600)
    <dir>/tailnet-lock.pub      its public key, tlpub:<hex> (so reading it needs no passphrase)
    <dir>/tka/                  the AUMs, in Tailscale's on-disk layout (tka-profiles/<id>)
    <dir>/signatures.json       node-key signatures this node made or recorded
    <dir>/disabled.json         present once tailnet lock is disabled on this node (0600)
    <dir>/control.json          the control URL this node syncs with, once set
    <dir>/old-chain-<time>/     a chain (and its disabled.json) set aside when a new
                                authority replaced a disabled one

A second process that wants the same directory waits for the lock up to a
timeout and then gets a clear error: two writers never interleave.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import TYPE_CHECKING, Any

from tka._fileutil import atomic_write, locked
from tka._record import FrozenRecord
from tka.errors import DecodeError, StorageError, UsageError

if TYPE_CHECKING:
    # Imported where used: 'tka lock status' reads a node without loading
    # the verification machinery (Ed25519, the authority engine).
    from tka.aum import AUM
    from tka.authority import Authority
    from tka.nlkeys import NLPrivate, NLPublic
    from tka.state import State

__all__ = ["NodeState", "SignatureRecord"]

KEY_FILE = "tailnet-lock.key"
PUB_FILE = "tailnet-lock.pub"
STORE_DIR = "tka"
SIGNATURES_FILE = "signatures.json"
DISABLED_FILE = "disabled.json"
CONTROL_FILE = "control.json"


class SignatureRecord(FrozenRecord):
    """A node-key signature this node keeps (made here, or recorded from elsewhere). Immutable."""

    __slots__ = ("key_id", "node_key", "signature")
    _fields = __match_args__ = ("node_key", "signature", "key_id")

    node_key: str
    """The node key in ``nodekey:`` text form."""
    signature: bytes
    """The serialized node-key signature."""
    key_id: str
    """The ``tlpub:`` key at the root of the signature."""

    def __init__(self, node_key: str, signature: bytes, key_id: str) -> None:
        object.__setattr__(self, "node_key", node_key)
        object.__setattr__(self, "signature", signature)
        object.__setattr__(self, "key_id", key_id)


class NodeState(AbstractContextManager["NodeState"]):
    """Exclusive access to one state directory; use as a context manager."""

    def __init__(self, path: str, *, lock_timeout: float = 10.0, create: bool = True) -> None:
        self.path = os.path.abspath(path)
        self._lock_timeout = lock_timeout
        self._create = create
        self._stack: ExitStack | None = None
        self._store: Any = None

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> NodeState:
        if not os.path.isdir(self.path):
            if not self._create:
                raise StorageError(f"state directory {self.path} does not exist")
            try:
                os.makedirs(self.path, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create state directory {self.path}: {exc.strerror}"
                ) from None
        if not os.access(self.path, os.W_OK):
            raise StorageError(f"state directory {self.path} is not writable")
        stack = ExitStack()
        stack.enter_context(
            locked(
                os.path.join(self.path, ".lock"), self._lock_timeout, f"state directory {self.path}"
            )
        )
        self._stack = stack
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_store()
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def _close_store(self) -> None:
        if self._store is not None:
            close = getattr(self._store, "close", None)
            if callable(close):
                close()
            self._store = None

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _read_json(self, name: str) -> dict[str, Any] | None:
        """A JSON object file of the directory, ``None`` when absent."""
        path = self._file(name)
        try:
            with open(path, encoding="utf-8") as f:
                data = _json().load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise StorageError(f"{path} is damaged") from None
        if not isinstance(data, dict):
            raise StorageError(f"{path} is damaged")
        return data

    # -- keys ------------------------------------------------------------------

    def has_key(self) -> bool:
        """Whether this node has a tailnet-lock key yet."""
        return os.path.exists(self._file(KEY_FILE))

    def create_key(self, passphrase: bytes | None = None) -> NLPrivate:
        """Generate and store this node's tailnet-lock key (refuses to replace one)."""
        from tka.keyfile import save_private_key
        from tka.nlkeys import NLPrivate

        key = NLPrivate.generate()
        save_private_key(self._file(KEY_FILE), key, passphrase)
        atomic_write(self._file(PUB_FILE), (key.public().cli_text() + "\n").encode(), 0o644)
        return key

    def private_key(self, passphrase: bytes | None = None) -> NLPrivate:
        """Load this node's private key."""
        if not self.has_key():
            raise UsageError(
                f"no tailnet-lock key in {self.path}: run 'tka lock key' to create one"
            )
        from tka.keyfile import load_private_key

        return load_private_key(self._file(KEY_FILE), passphrase)

    def public_key_text(self) -> str | None:
        """This node's ``tlpub:`` key as stored, ``None`` when it has none (no crypto loaded)."""
        try:
            with open(self._file(PUB_FILE), encoding="ascii") as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            text = ""
        body = text[len("tlpub:") :]
        if not text.startswith("tlpub:") or len(body) != 64 or body.strip("0123456789abcdef"):
            raise StorageError(f"{self._file(PUB_FILE)} does not hold a tlpub: key")
        return text

    def public_key(self) -> NLPublic:
        """This node's public key (read without the passphrase)."""
        from tka.nlkeys import NLPublic

        try:
            with open(self._file(PUB_FILE), encoding="ascii") as f:
                return NLPublic.from_text(f.read().strip())
        except FileNotFoundError:
            raise UsageError(
                f"no tailnet-lock key in {self.path}: run 'tka lock key' to create one"
            ) from None
        except (UnicodeDecodeError, DecodeError):
            raise StorageError(f"{self._file(PUB_FILE)} does not hold a tlpub: key") from None

    # -- authority -------------------------------------------------------------

    @property
    def store(self) -> Any:
        """The AUM store (Tailscale's filesystem layout under ``tka/``)."""
        if self._store is None:
            from tka.storage.fs import FilesystemStore

            self._store = FilesystemStore(self._file(STORE_DIR))
        return self._store

    def authority(self) -> Authority | None:
        """The authority in the store, or ``None`` when tailnet lock was never initialized."""
        from tka.authority import Authority

        if not os.path.isdir(self._file(STORE_DIR)) or not self.store.heads():
            return None
        return Authority.open(self.store)

    def head_state(self) -> tuple[AUM, State] | None:
        """The head AUM and the state there, as :meth:`authority` finds them.

        For a read-only view (``tka lock status``): it computes the same
        active chain as :meth:`~tka.authority.Authority.open` without
        loading the authority engine. ``None`` when never initialized.
        """
        from tka.chain import compute_active_chain
        from tka.errors import TKAError
        from tka.limits import MAX_SCAN_ITERATIONS

        if not os.path.isdir(self._file(STORE_DIR)) or not self.store.heads():
            return None
        try:
            c = compute_active_chain(
                self.store, self.store.last_active_ancestor(), MAX_SCAN_ITERATIONS
            )
        except TKAError as exc:
            raise type(exc)(f"active chain: {exc}") from None
        return c.head, c.state

    def require_authority(self) -> Authority:
        """The authority; a clear error when there is none."""
        authority = self.authority()
        if authority is None:
            raise UsageError(
                "tailnet lock is not initialized on this node: "
                "run 'tka lock init' or 'tka lock import'"
            )
        return authority

    # -- disablement -----------------------------------------------------------

    def disabled(self) -> dict[str, Any] | None:
        """How tailnet lock was disabled here (``{"how": "secret"|"local", ...}``), or ``None``."""
        return self._read_json(DISABLED_FILE)

    def set_disabled(self, how: str, secret: bytes | None = None) -> None:
        """Record that tailnet lock is disabled (with the secret, so peers can learn it)."""
        data: dict[str, Any] = {"how": how}
        if secret is not None:
            data["secret"] = secret.hex()
        atomic_write(self._file(DISABLED_FILE), _json().dumps(data).encode(), mode=0o600)

    def clear_local_disable(self) -> bool:
        """Undo ``local-disable``; ``False`` when lock was not locally disabled."""
        disabled = self.disabled()
        if disabled is None or disabled.get("how") != "local":
            return False
        os.unlink(self._file(DISABLED_FILE))
        return True

    def archive_chain(self) -> str:
        """Move the chain and the disablement record aside so that a new authority can start.

        Used once tailnet lock was disabled by a secret and a new authority
        comes (a fresh ``init`` here, an import or a sync of another
        genesis). Nothing is deleted: the old chain stays readable (``tka
        audit``) in the returned directory.
        """
        import shutil

        self._close_store()
        dest = self._file(f"old-chain-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        os.makedirs(dest, mode=0o700)
        for name in (STORE_DIR, DISABLED_FILE):
            src = self._file(name)
            if os.path.exists(src):
                shutil.move(src, os.path.join(dest, name))
        return dest

    # -- signatures ------------------------------------------------------------

    def signatures(self) -> list[SignatureRecord]:
        """Signatures recorded in this directory."""
        data = self._read_json(SIGNATURES_FILE)
        if data is None:
            return []
        import base64  # here, not at the top: it would slow the start of 'tka lock status'

        try:
            return [
                SignatureRecord(r["node_key"], base64.b64decode(r["signature"]), r["key_id"])
                for r in data["signatures"]
            ]
        except (KeyError, TypeError, ValueError):
            raise StorageError(f"{self._file(SIGNATURES_FILE)} is damaged") from None

    def record_signatures(self, records: list[SignatureRecord]) -> None:
        """Add or replace (by node key) signatures, in one atomic write."""
        import base64  # here, not at the top: it would slow the start of 'tka lock status'

        by_node = {r.node_key: r for r in self.signatures()}
        for r in records:
            by_node[r.node_key] = r
        doc = {
            "format": "tka-signatures/1",
            "signatures": [
                {
                    "node_key": r.node_key,
                    "signature": base64.b64encode(r.signature).decode(),
                    "key_id": r.key_id,
                }
                for r in sorted(by_node.values(), key=lambda r: r.node_key)
            ],
        }
        atomic_write(self._file(SIGNATURES_FILE), _json().dumps(doc, indent=1).encode(), 0o644)

    # -- control ---------------------------------------------------------------

    def control_url(self) -> str | None:
        """The saved control URL, if any."""
        url = (self._read_json(CONTROL_FILE) or {}).get("url")
        return url if isinstance(url, str) else None

    def set_control_url(self, url: str) -> None:
        """Save the control URL for later commands."""
        atomic_write(self._file(CONTROL_FILE), _json().dumps({"url": url}).encode(), 0o600)


def _json() -> Any:
    """The json module, imported on first use: a read-only command may never need it."""
    import json

    return json


def iter_lines(path: str) -> Iterator[str]:
    """Non-empty, non-comment lines of a text file (for ``--from FILE`` inputs)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
