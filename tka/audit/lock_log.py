"""Reading ``tailscale lock log --json`` (schema v1) with the conformance harness's rules.

For ``lock log`` text, the checks and their order follow the conformance
harness exactly (see the ``verifier`` header of ``lock_log_json.json``):
strict JSON with SchemaVersion "1"; per message: Hash is base32 text, Raw is
padded base64url, Raw decodes to an AUM whose hash is Hash, Raw is that AUM's
canonical serialization (as text too), and the expanded AUM is what
Tailscale derives from Raw; then each message must name the next as its
parent; then the oldest must be a genesis (else ``incomplete``); then the
replay must succeed and end at message 0. Per-message failures are all
reported (one per message) and stop the audit before the link checks.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Final

from tka.aum import AUM, HASH_SIZE
from tka.errors import DecodeError, TKAError
from tka.lockjson import LockLog, b64url, expand_aum, parse_log

from .report import AuditReason, AuditReport, AuditWarning
from .verify import Progress, audit_tree

__all__ = ["audit_log"]

# -- Go's padded base64url decoding, for the harness's error wording -----------------

_B64URL: Final = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}
_B64URL_PLAIN: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_B32: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def _go_b64url_decode(text: str) -> bytes:
    """Decode as Go's ``base64.URLEncoding.DecodeString`` does.

    The offsets in errors are Go's (``illegal base64 data at input byte N``);
    like Go, CR and LF are skipped and the unused low bits of the last
    quantum are not checked: the caller compares the text with the
    canonical encoding afterwards.
    """
    if len(text) % 4 == 0 and _B64URL_PLAIN.fullmatch(text):
        # The common case, decoded in C: whole quanta of the alphabet with at
        # most two '=' at the end, where both decoders agree byte for byte.
        return base64.urlsafe_b64decode(text)
    src = text.encode("utf-8", "surrogatepass")
    out = bytearray()
    si, n = 0, len(src)

    def corrupt(at: int) -> DecodeError:
        return DecodeError(f"illegal base64 data at input byte {at}")

    while si < n:
        dbuf = [0, 0, 0, 0]
        dlen = 4
        j = 0
        trailing: int | None = None
        while j < 4:
            if si == n:
                if j == 0:
                    return bytes(out)
                # Padded encoding: a partial quantum at the end is an error.
                raise corrupt(si - j)
            c = src[si]
            si += 1
            v = _B64URL.get(c)
            if v is not None:
                dbuf[j] = v
                j += 1
                continue
            if c in (0x0A, 0x0D):
                continue
            if c != 0x3D:  # '='
                raise corrupt(si - 1)
            if j < 2:
                raise corrupt(si - 1)
            if j == 2:
                # "==" expected; the first one is consumed.
                while si < n and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == n:
                    raise corrupt(n)
                if src[si] != 0x3D:
                    raise corrupt(si - 1)
                si += 1
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si < n:
                trailing = si
            dlen = j
            break
        val = dbuf[0] << 18 | dbuf[1] << 12 | dbuf[2] << 6 | dbuf[3]
        out.extend(bytes(((val >> 16) & 0xFF, (val >> 8) & 0xFF, val & 0xFF))[: dlen - 1])
        if trailing is not None:
            raise corrupt(trailing)
    return bytes(out)


def _check_hash_text(text: str) -> None:
    """Go's ``AUMHash.UnmarshalText`` checks, with its error wording."""
    raw = text.encode("utf-8", "surrogatepass")
    ln = len(raw) * 5 // 8
    if ln != HASH_SIZE:
        # Go prints the decoded length first and the text length second.
        raise DecodeError(f"tka.AUMHash.UnmarshalText: text wrong length: {ln}, want {len(raw)}")
    stripped = raw.replace(b"\r", b"").replace(b"\n", b"")
    for i, c in enumerate(stripped):
        if c not in _B32:
            raise DecodeError(f"tka.AUMHash.UnmarshalText: illegal base32 data at input byte {i}")


def audit_log(text: str | bytes, *, progress: Progress | None = None) -> AuditReport:
    """Audit ``tailscale lock log --json`` output with the conformance harness's rules.

    Never raises for bad input: a text that does not parse is an ``invalid``
    report whose reason names the place.
    """
    try:
        log = parse_log(text)
    except DecodeError as exc:
        return AuditReport("lock-log", "invalid", (AuditReason(str(exc)),))
    return _audit_parsed_log(log, progress)


def _audit_parsed_log(log: LockLog, progress: Progress | None) -> AuditReport:
    source = "lock-log"
    extra: list[AuditWarning] = []
    if log.response_warning:
        extra.append(
            AuditWarning(
                "schema-warning",
                "notice",
                f"the log carries a warning from Tailscale: {log.response_warning}",
            )
        )
    messages = log.messages or ()
    if not messages:
        return AuditReport(source, "invalid", (AuditReason("no messages"),), warnings=tuple(extra))

    reasons: list[AuditReason] = []
    aums: list[AUM] = []
    for i, m in enumerate(messages):
        bad = _check_message(i, m.hash, m.raw, m.aum)
        if isinstance(bad, AuditReason):
            reasons.append(bad)
        else:
            aums.append(bad)
    if reasons:
        return AuditReport(
            source, "invalid", tuple(reasons), aum_count=len(messages), warnings=tuple(extra)
        )

    for i in range(len(aums) - 1):
        if aums[i].parent != aums[i + 1].hash:
            reasons.append(
                AuditReason(
                    f"message {i}: PrevAUMHash does not reference message {i + 1}",
                    message_index=i,
                    aum=aums[i].hash_text,
                )
            )
    if reasons:
        return AuditReport(
            source, "invalid", tuple(reasons), aum_count=len(messages), warnings=tuple(extra)
        )

    index_of = {a.hash: i for i, a in enumerate(aums)}
    # Linear and parent-linked, so the tree audit replays exactly the
    # harness's Bootstrap(oldest) + Inform(rest, oldest first).
    return audit_tree(
        aums,
        source,
        claimed_head=aums[0].hash,
        claim_name="newest message",
        index_of=index_of,
        extra=extra,
        progress=progress,
    )


def _check_message(i: int, hash_text: str, raw_text: str, expanded: Any) -> AUM | AuditReason:
    """The per-message checks, in the harness's order; the first failure is reported."""

    def fail(what: str, aum: str | None) -> AuditReason:
        return AuditReason(f"message {i}: {what}", message_index=i, aum=aum)

    try:
        _check_hash_text(hash_text)
    except DecodeError as exc:
        return fail(f"bad Hash text: {exc}", None)
    try:
        raw = _go_b64url_decode(raw_text)
    except DecodeError as exc:
        return fail(f"Raw is not padded base64url: {exc}", hash_text)
    try:
        aum = AUM.from_bytes(raw)
    except TKAError as exc:
        return fail(f"Raw does not decode as an AUM: {exc}", hash_text)
    if aum.hash_text != hash_text:
        return fail("Hash does not match the AUM in Raw", hash_text)
    if aum.canonical != raw:
        return fail("Raw is not the canonical serialization of the AUM", hash_text)
    if b64url(raw) != raw_text:
        # Go's decoder skips line breaks and ignores the spare low bits, so
        # several texts decode to the same bytes; only one is what Tailscale prints.
        return fail("Raw is not the canonical base64url text of its bytes", hash_text)
    if expand_aum(aum) != expanded:
        return fail("expanded AUM does not match Raw", hash_text)
    return aum
