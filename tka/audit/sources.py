"""Reading what people have: a file, standard input or a TKA directory, each capped in size.

:func:`read_source` turns a command-line argument into a :class:`Source`
(raising :class:`UnreadableInput` when there is nothing readable there:
missing, too large, not text, not JSON); :func:`audit_source` audits it
with the reader for its format; :func:`audit_bytes` audits a file's
content directly and never raises.

Text may start with a UTF-8 byte-order mark (as Windows editors write it),
or be UTF-16 with a byte-order mark (as Windows PowerShell 5's ``>`` writes
``tailscale lock log --json`` output); both are read as the text they hold.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import BinaryIO, Final, Literal

from tka.errors import TKAError

from .bundle import audit_bundle_text, looks_like_bundle
from .directory import audit_directory
from .lock_log import audit_log
from .report import AuditReason, AuditReport
from .verify import Progress

__all__ = [
    "MAX_DIRECTORY_BYTES",
    "MAX_DIRECTORY_FILES",
    "MAX_SOURCE_BYTES",
    "Source",
    "UnreadableInput",
    "audit_bytes",
    "audit_source",
    "decode_text",
    "read_capped",
    "read_source",
]

#: Largest file or standard input read (a lock log of ~30 000 AUMs).
MAX_SOURCE_BYTES: Final = 64 * 1024 * 1024
#: Most entries a TKA directory may hold (Tailscale's scan cap is 2000 AUMs per walk).
MAX_DIRECTORY_FILES: Final = 100_000
#: Largest total size of the AUM files of a TKA directory.
MAX_DIRECTORY_BYTES: Final = 256 * 1024 * 1024

_UTF8_BOM: Final = b"\xef\xbb\xbf"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")


class UnreadableInput(TKAError):
    """An input that cannot be read at all (missing, too large, not text, not JSON).

    Distinct from a chain that reads but does not verify: the command line
    exits 3 for this, 1 for a refused chain.
    """


@dataclass(frozen=True)
class Source:
    """An input read and recognised, ready to audit."""

    name: str  # what the user gave ("-" for standard input)
    kind: Literal["lock-log", "bundle", "directory"]
    text: str | None = None  # the content, for files and standard input
    path: str | None = None  # the directory, for a TKA directory
    estimate: int = 0  # about how many AUMs it holds (for a progress bar)


def read_capped(stream: BinaryIO, name: str, cap: int = MAX_SOURCE_BYTES) -> bytes:
    """Read *stream* to the end, refusing more than *cap* bytes."""
    data = stream.read(cap + 1)
    if len(data) > cap:
        raise UnreadableInput(f"{name}: larger than the {cap // (1024 * 1024)} MiB limit")
    return data


def decode_text(data: bytes, name: str) -> str:
    """The text of an input file: UTF-8 (with or without a BOM) or UTF-16 with a BOM."""
    try:
        if data.startswith(_UTF8_BOM):
            return data[len(_UTF8_BOM) :].decode("utf-8")
        if data.startswith(_UTF16_BOMS):
            return data.decode("utf-16")
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableInput(f"{name}: not UTF-8 text (byte {exc.start})") from None


def _check_directory(path: str) -> int:
    """Refuse a directory too large to audit before reading any AUM; the count of files."""
    files = total = 0
    try:
        with os.scandir(path) as top:
            subdirs = [e.path for e in top if e.is_dir(follow_symlinks=False)]
        for sub in subdirs:
            with os.scandir(sub) as entries:
                for e in entries:
                    if not e.is_file(follow_symlinks=False):
                        continue
                    files += 1
                    total += e.stat(follow_symlinks=False).st_size
                    if files > MAX_DIRECTORY_FILES:
                        raise UnreadableInput(
                            f"{path}: more than {MAX_DIRECTORY_FILES} files, not a TKA directory "
                            "this tool will read"
                        )
                    if total > MAX_DIRECTORY_BYTES:
                        raise UnreadableInput(
                            f"{path}: AUM files larger than the "
                            f"{MAX_DIRECTORY_BYTES // (1024 * 1024)} MiB limit"
                        )
    except OSError as exc:
        raise UnreadableInput(f"cannot read {path}: {exc.strerror}") from None
    return files


def read_source(arg: str, stdin: BinaryIO | None = None) -> Source:
    """Read the input named on the command line: a file, ``-`` for *stdin*, or a TKA directory.

    Raises :class:`UnreadableInput` naming the input when it cannot be read.
    """
    if arg == "-":
        data = read_capped(stdin if stdin is not None else sys.stdin.buffer, "standard input")
        return _file_source("-", decode_text(data, "standard input"))
    if os.path.isdir(arg):
        files = _check_directory(arg)
        return Source(arg, "directory", path=arg, estimate=files)
    try:
        with open(arg, "rb") as f:
            data = read_capped(f, arg)
    except FileNotFoundError:
        raise UnreadableInput(f"{arg}: no such file or directory") from None
    except OSError as exc:
        raise UnreadableInput(f"cannot read {arg}: {exc.strerror}") from None
    return _file_source(arg, decode_text(data, arg))


def _file_source(name: str, text: str) -> Source:
    if not text.strip():
        raise UnreadableInput(f"{name}: empty (expected 'tailscale lock log --json' output)")
    doc: object = None
    try:
        doc = json.loads(text)
    except RecursionError:
        pass  # JSON, too deep for Python: the strict parser reports it as a bad log
    except ValueError as exc:
        raise UnreadableInput(
            f"{name}: not JSON ({exc}); expected 'tailscale lock log --json' output or a bundle"
        ) from None
    estimate = 0
    if isinstance(doc, dict):
        items = doc.get("aums", doc.get("Messages"))
        estimate = len(items) if isinstance(items, list) else 0
    kind: Literal["bundle", "lock-log"] = "bundle" if looks_like_bundle(text) else "lock-log"
    return Source(name, kind, text=text, estimate=estimate)


def audit_source(source: Source, *, progress: Progress | None = None) -> AuditReport:
    """Audit a :class:`Source` with the reader for its format."""
    if source.kind == "directory":
        assert source.path is not None
        return audit_directory(source.path, progress=progress)
    assert source.text is not None
    if source.kind == "bundle":
        return audit_bundle_text(source.text, progress=progress)
    return audit_log(source.text, progress=progress)


def audit_bytes(data: bytes | str) -> AuditReport:
    """Audit a file's content: a ``tka-bundle/1`` export or ``lock log --json`` text.

    The format is told apart by the bundle's ``format`` member; anything
    else is read as a lock log. A leading byte-order mark is skipped. Never
    raises for bad input: what cannot be read is an ``invalid`` report.
    """
    if isinstance(data, str):
        text = data.removeprefix("\ufeff")
    else:
        try:
            text = decode_text(bytes(data), "input")
        except UnreadableInput as exc:
            return AuditReport("file", "invalid", (AuditReason(str(exc).removeprefix("input: ")),))
    if looks_like_bundle(text):
        return audit_bundle_text(text)
    return audit_log(text)
