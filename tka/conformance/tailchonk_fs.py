"""Conformance checks for the ``tailchonk_fs`` kind: Tailscale's on-disk store.

Each case is a directory written by Tailscale (sometimes damaged on
purpose). It is recreated file by file in a temporary directory, opened with
:class:`~tka.storage.fs.FilesystemStore`, and compared with what Tailscale
reported: the sorted hashes of the stored AUMs (or a failure to list them),
then the authority ``Open`` finds there. The ``--store`` option does not apply:
this kind is about the filesystem layout itself.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from tka.aum import hash_to_text
from tka.conformance._util import Context, Mismatch, expect, unhex
from tka.errors import StorageError
from tka.storage.fs import FilesystemStore

__all__ = ["check"]


def _recreate(root: str, files: list[dict[str, Any]]) -> None:
    for f in files:
        parts = str(f["path"]).split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise Mismatch(f"vector file path {f['path']!r} is not a plain relative path")
        path = os.path.join(root, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(unhex(f["content_hex"]) or b"")


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``tailchonk_fs`` vector case."""
    del ctx  # always the filesystem store
    # Imported here so the listing part of this kind keeps working while
    # the authority engine is being changed.
    from tka.conformance.chain import check_open

    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "chonk")
        os.mkdir(root)
        _recreate(root, case["files"])
        with FilesystemStore(root) as store:
            try:
                listed: list[str] | None = sorted(hash_to_text(h) for h in store.all_hashes())
                error = ""
            except StorageError as exc:
                listed, error = None, str(exc)
            if listed is None and case["all_aums_b32"] is not None:
                raise Mismatch(f"all_aums_b32: store refused the directory: {error}")
            expect("all_aums_b32", listed, case["all_aums_b32"])
        # A fresh store for Open, so that nothing cached by the listing helps.
        with FilesystemStore(root) as store:
            check_open(store, case)
