"""Export bundles: a node's AUMs in one file, for nodes that exchange files offline.

Format ``tka-bundle/1`` (JSON, UTF-8)::

    {
      "format": "tka-bundle/1",
      "head": "<base32 AUM hash>",              # the exporting node's head
      "aums": ["<base64 canonical AUM>", ...],  # every stored AUM, parents first
      "disablement_secret": "<hex>",            # only once tailnet lock was disabled
      "signatures": [                           # optional: node-key signatures the
        {"node_key": "nodekey:<hex>",           # exporting node made or recorded, so
         "signature": "<base64>"}, ...          # peers can name the nodes a key signed
      ]
    }

Importing verifies every AUM exactly as ``Inform`` does (signatures against
the state at each AUM's parent, fork resolution), so a bundle needs no trust
in whoever carried it; a node with no authority yet bootstraps from the
bundle's oldest checkpoint. Nodes that exchange bundles in any order reach
the same head.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tka.aum import AUM, hash_from_text, hash_to_text
from tka.authority import Authority
from tka.errors import DecodeError, StateError, TKAError
from tka.limits import MAX_SCAN_ITERATIONS
from tka.storage import CompactableStorage, Storage

__all__ = [
    "BUNDLE_FORMAT",
    "MAX_BUNDLE_BYTES",
    "Bundle",
    "dropped_by_import",
    "export_bundle",
    "import_bundle",
    "parents_first",
]

BUNDLE_FORMAT = "tka-bundle/1"

#: The largest bundle file read: a chain holds at most a few thousand AUMs
#: between checkpoints (each at most a few KiB, base64 in the file), so
#: 64 MiB is far above any real bundle and far below exhausting memory.
MAX_BUNDLE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    """A decoded export bundle."""

    head: bytes | None
    aums: tuple[AUM, ...]
    disablement_secret: bytes | None = None
    signatures: tuple[tuple[str, bytes], ...] = ()
    """(``nodekey:`` text, serialized node-key signature) pairs; not verified here."""

    def to_json(self) -> bytes:
        """The bundle's file content."""
        doc: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "head": None if self.head is None else hash_to_text(self.head),
            "aums": [base64.b64encode(a.to_bytes()).decode("ascii") for a in self.aums],
        }
        if self.disablement_secret is not None:
            doc["disablement_secret"] = self.disablement_secret.hex()
        if self.signatures:
            doc["signatures"] = [
                {"node_key": nk, "signature": base64.b64encode(sig).decode("ascii")}
                for nk, sig in self.signatures
            ]
        return (json.dumps(doc, indent=1) + "\n").encode()

    def state_ids(self) -> tuple[int, int] | None:
        """The state IDs of the authority the bundle holds (from its oldest checkpoint).

        Random and fixed when an authority is created, they tell a new lock
        from the same one compacted differently. ``None`` for an empty bundle.
        """
        ordered = parents_first(self.aums)
        state = ordered[0].state if ordered else None
        return (state.state_id1, state.state_id2) if state is not None else None

    @classmethod
    def from_json(cls, data: bytes) -> Bundle:
        """Parse a bundle file strictly; raises :class:`~tka.errors.DecodeError`."""
        if len(data) > MAX_BUNDLE_BYTES:
            raise DecodeError(f"bundle: larger than {MAX_BUNDLE_BYTES} bytes")
        if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as some editors write
            data = data[3:]
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            raise DecodeError("bundle: not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
            raise DecodeError(f"bundle: not a {BUNDLE_FORMAT} file")
        unknown = set(doc) - {"format", "head", "aums", "disablement_secret", "signatures"}
        if unknown:
            raise DecodeError(f"bundle: unknown field {sorted(unknown)[0]!r}")
        head_text = doc.get("head")
        head = None
        if head_text is not None:
            if not isinstance(head_text, str):
                raise DecodeError("bundle: head is not text")
            head = hash_from_text(head_text)
        raw = doc.get("aums")
        if not isinstance(raw, list):
            raise DecodeError("bundle: aums is not a list")
        aums = []
        for i, item in enumerate(raw):
            if not isinstance(item, str):
                raise DecodeError(f"bundle: aums[{i}] is not text")
            try:
                aums.append(AUM.from_bytes(base64.b64decode(item, validate=True)))
            except (binascii.Error, ValueError):
                raise DecodeError(f"bundle: aums[{i}] is not base64") from None
            except DecodeError as exc:
                raise DecodeError(f"bundle: aums[{i}]: {exc}") from None
        secret = doc.get("disablement_secret")
        secret_bytes = None
        if secret is not None:
            try:
                secret_bytes = bytes.fromhex(secret) if isinstance(secret, str) else None
            except ValueError:
                secret_bytes = None
            if secret_bytes is None:
                raise DecodeError("bundle: disablement_secret is not hex")
        return cls(head, tuple(aums), secret_bytes, _signatures(doc.get("signatures", [])))


def _signatures(raw: Any) -> tuple[tuple[str, bytes], ...]:
    if not isinstance(raw, list):
        raise DecodeError("bundle: signatures is not a list")
    out = []
    for i, item in enumerate(raw):
        nk = item.get("node_key") if isinstance(item, dict) else None
        sig = item.get("signature") if isinstance(item, dict) else None
        if not isinstance(nk, str) or not isinstance(sig, str):
            raise DecodeError(f"bundle: signatures[{i}] needs node_key and signature text")
        try:
            out.append((nk, base64.b64decode(sig, validate=True)))
        except (binascii.Error, ValueError):
            raise DecodeError(f"bundle: signatures[{i}].signature is not base64") from None
    return tuple(out)


def parents_first(aums: Iterable[AUM]) -> list[AUM]:
    """Order AUMs so each comes after its parent when the parent is among them."""
    by_hash = {a.hash: a for a in aums}
    children: dict[bytes, list[AUM]] = {}
    roots = []
    for a in by_hash.values():
        p = a.parent
        if p is not None and p in by_hash:
            children.setdefault(p, []).append(a)
        else:
            roots.append(a)
    out: list[AUM] = []
    queue = sorted(roots, key=lambda a: a.hash)
    while queue:
        a = queue.pop(0)
        out.append(a)
        queue.extend(sorted(children.get(a.hash, []), key=lambda c: c.hash))
    return out


def export_bundle(
    authority: Authority,
    store: CompactableStorage,
    disablement_secret: bytes | None = None,
    signatures: tuple[tuple[str, bytes], ...] = (),
) -> Bundle:
    """Everything *store* holds, parents first, with the authority's head (and *signatures*)."""
    aums = []
    for h in store.all_hashes():
        aum = store.get(h)
        if aum is not None:
            aums.append(aum)
    return Bundle(authority.head_hash, tuple(parents_first(aums)), disablement_secret, signatures)


def import_bundle(store: Storage, authority: Authority | None, bundle: Bundle) -> Authority:
    """Verify and inform the bundle's AUMs; bootstrap first when *authority* is ``None``.

    All or nothing: on any error nothing is stored and the authority is unchanged.
    """
    ordered = parents_first(bundle.aums)
    if not ordered:
        raise DecodeError("bundle holds no AUMs")
    if authority is None:
        first = ordered[0]
        try:
            authority = Authority.bootstrap(store, first)
        except TKAError as exc:
            raise type(exc)(f"bootstrapping from the bundle's oldest AUM: {exc}") from None
        ordered = ordered[1:]
    new = [a for a in ordered if store.get(a.hash) is None]
    if new:
        if any(a.parent is None for a in new):
            raise StateError("the bundle holds a different authority (another genesis)")
        authority.inform(store, new)
    return authority


def dropped_by_import(store: Storage, authority: Authority, old_head: bytes) -> list[AUM]:
    """The AUMs from *old_head* back that are no longer on the active chain, oldest first.

    After an import, a node whose own concurrent change lost the fork
    tie-break still stores it, but the active chain no longer goes through
    it: this names what was dropped (empty when the old head is active).
    """
    active: set[bytes] = set()
    cursor: bytes | None = authority.head_hash
    for _ in range(MAX_SCAN_ITERATIONS + 1):
        if cursor is None:
            break
        active.add(cursor)
        if cursor == authority.oldest_ancestor.hash:
            break
        aum = store.get(cursor)
        cursor = aum.parent if aum is not None else None
    dropped: list[AUM] = []
    cursor = old_head
    for _ in range(MAX_SCAN_ITERATIONS + 1):
        if cursor is None or cursor in active:
            break
        aum = store.get(cursor)
        if aum is None:
            break
        dropped.append(aum)
        cursor = aum.parent
    dropped.reverse()
    return dropped
