"""Device-signing deep links: ``tailscale://sign-device/v1/?...``.

A node that is locked out can show an administrator a link carrying its node
key, tailnet-lock key, device name, OS and login name. The link is
authenticated with HMAC-SHA256 keyed by the authority's ``StateID1`` (as 8
little-endian bytes), so only a node of the same tailnet can mint a link
another node will accept. This module reproduces Go's
``Authority.NewDeeplink`` and ``Authority.ValidateDeeplink`` byte for byte,
including their quirks:

* the link is built by Go's ``url.Values.Encode`` (keys sorted, values
  query-escaped, space as ``+``), so the text is exactly Go's;
* validation never checks that ``os`` is present -- Go tests the device name a
  second time where the OS name was meant -- so a link without ``os`` whose
  HMAC covers an empty OS name is valid;
* a repeated parameter counts by its *first* value;
* of the path only the number of ``/``-separated parts (3) and the second
  (``v1``) are checked, so ``/v1/anything`` is accepted;
* ``version`` in the result is never set (always 0), as in Go;
* the URL is parsed with the rules of Go's ``net/url`` (see ``_GoURL``):
  the scheme is case-insensitive, the host is not; a fragment is cut off
  first; a malformed ``%`` escape drops just that query pair; a ``;`` in a
  pair drops the pair; more than 10000 ``&``-separated pairs drop the whole
  query (Go's default ``urlmaxqueryparams``); control bytes make the URL
  unparseable.

Go strings are byte strings. Text given here is taken as UTF-8 (with
``surrogateescape``) and the decoded fields of a result are returned the same
way, so bytes that are not UTF-8 survive a round trip unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tka.errors import DecodeError, UsageError

__all__ = [
    "DEEPLINK_COMMAND_SIGN",
    "DEEPLINK_SCHEME",
    "DeeplinkValidationResult",
    "deeplink_hmac",
    "new_deeplink",
    "validate_deeplink",
]

#: URL scheme of every Tailscale deep link.
DEEPLINK_SCHEME: Final = "tailscale"
#: URL host naming the device-signing command.
DEEPLINK_COMMAND_SIGN: Final = "sign-device"

_NODE_KEY_PREFIX: Final = "nodekey:"
_TLPUB_PREFIX: Final = "tlpub:"
_MAX_STATE_ID: Final = (1 << 64) - 1

#: Go's default cap on query parameters (GODEBUG ``urlmaxqueryparams``).
_MAX_QUERY_PARAMS: Final = 10000


def _enc(text: str) -> bytes:
    """Turn *text* into the bytes of the equivalent Go string."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise DecodeError("text is not valid UTF-8") from None


def _dec(data: bytes) -> str:
    """Turn Go string bytes into text without losing non-UTF-8 bytes."""
    return data.decode("utf-8", "surrogateescape")


def _check_state_id(state_id1: int) -> bytes:
    if isinstance(state_id1, bool) or not isinstance(state_id1, int):
        raise UsageError(f"state id must be an int, not {type(state_id1).__name__}")
    if not 0 <= state_id1 <= _MAX_STATE_ID:
        raise UsageError("state id must fit in an unsigned 64-bit integer")
    return struct.pack("<Q", state_id1)


def _hmac(key: bytes, parts: tuple[bytes, ...]) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    # Plain concatenation with no separators, exactly as Go writes the fields;
    # field boundaries are therefore not authenticated (a Go quirk).
    for part in parts:
        mac.update(part)
    return mac.digest()


def deeplink_hmac(
    state_id1: int, node_key: str, tl_pub: str, device_name: str, os_name: str, login_name: str
) -> bytes:
    """Return the 32-byte HMAC-SHA256 a deep link carries in its ``hm`` parameter.

    The key is *state_id1* as 8 little-endian bytes; the message is the five
    fields concatenated in this order.
    """
    key = _check_state_id(state_id1)
    return _hmac(key, tuple(_enc(p) for p in (node_key, tl_pub, device_name, os_name, login_name)))


def new_deeplink(
    state_id1: int, node_key: str, tl_pub: str, device_name: str, os_name: str, login_name: str
) -> str:
    """Build a signed ``tailscale://sign-device/v1/`` link (Go's ``Authority.NewDeeplink``).

    Like Go, only the prefixes of the keys are checked (``nodekey:`` and
    ``tlpub:`` -- an ``nlpub:`` key is refused), not their hex. Raises
    :class:`~tka.errors.DecodeError` for a key without its prefix and
    :class:`~tka.errors.UsageError` for an empty device, OS or login name.
    """
    key = _check_state_id(state_id1)
    if not node_key.startswith(_NODE_KEY_PREFIX):
        raise DecodeError(f"invalid node key {_go_quote(_enc(node_key))}")
    if not tl_pub.startswith(_TLPUB_PREFIX):
        raise DecodeError(f"invalid tlpub {_go_quote(_enc(tl_pub))}")
    if device_name == "":
        raise UsageError('invalid device name ""')
    if os_name == "":
        raise UsageError('invalid os name ""')
    if login_name == "":
        raise UsageError('invalid login name ""')

    fields = tuple(_enc(p) for p in (node_key, tl_pub, device_name, os_name, login_name))
    mac = _hmac(key, fields)
    nk, tp, dn, os_, em = fields
    values = {b"nk": [nk], b"tp": [tp], b"dn": [dn], b"os": [os_], b"em": [em]}
    values[b"hm"] = [mac.hex().encode("ascii")]
    # url.URL{Scheme, Host, Path: "/v1/"}.String(): nothing in it needs escaping.
    return f"{DEEPLINK_SCHEME}://{DEEPLINK_COMMAND_SIGN}/v1/?" + _encode_values(values).decode(
        "ascii"
    )


@dataclass(frozen=True)
class DeeplinkValidationResult:
    """Outcome of :func:`validate_deeplink`, field for field Go's ``DeeplinkValidationResult``.

    When ``is_valid`` is false, ``error`` says why and every other field is
    empty; when it is true, ``error`` is ``""``. ``version`` is always 0: Go
    declares it but never fills it in.
    """

    is_valid: bool
    error: str = ""
    version: int = 0
    node_key: str = ""
    tl_pub: str = ""
    device_name: str = ""
    os_name: str = ""
    email_address: str = ""


def _invalid(error: str) -> DeeplinkValidationResult:
    return DeeplinkValidationResult(is_valid=False, error=error)


def validate_deeplink(state_id1: int, url: str) -> DeeplinkValidationResult:
    """Check a device-signing link against *state_id1* (Go's ``Authority.ValidateDeeplink``).

    Never raises for a bad link: the verdict and Go's reason are in the
    result. Only a *state_id1* outside uint64 raises
    :class:`~tka.errors.UsageError`.
    """
    key = _check_state_id(state_id1)
    if not isinstance(url, str):
        raise UsageError(f"url must be a str, not {type(url).__name__}")
    try:
        raw = _enc(url)
    except DecodeError as exc:
        return _invalid(str(exc))
    try:
        parsed = _GoURL.parse(raw)
    except _URLError as exc:
        return _invalid(str(exc))

    if parsed.scheme != DEEPLINK_SCHEME.encode():
        return _invalid(f"unhandled scheme {_msg(parsed.scheme)}, expected {DEEPLINK_SCHEME}")
    if parsed.host != DEEPLINK_COMMAND_SIGN.encode():
        return _invalid(f"unhandled host {_msg(parsed.host)}, expected {DEEPLINK_COMMAND_SIGN}")

    components = parsed.escaped_path().split(b"/")
    if len(components) != 3:
        return _invalid("invalid path components number found")
    if components[1] != b"v1":
        return _invalid(
            f"expected v1 deeplink version, found something else: {_msg(components[1])}"
        )

    query = _parse_query(parsed.raw_query)

    def get(name: bytes) -> bytes:
        # url.Values.Get: the first value, or empty when absent.
        vs = query.get(name)
        return vs[0] if vs else b""

    node_key = get(b"nk")
    if not node_key:
        return _invalid("missing nk (NodeKey) query parameter")
    tl_pub = get(b"tp")
    if not tl_pub:
        return _invalid("missing tp (TLPub) query parameter")
    device_name = get(b"dn")
    if not device_name:
        return _invalid("missing dn (DeviceName) query parameter")
    # Go meant to require "os" here but tests the device name a second time,
    # so an absent os is accepted and enters the HMAC as the empty string.
    os_name = get(b"os")
    email = get(b"em")
    if not email:
        return _invalid("missing em (EmailAddress) query parameter")
    hm = get(b"hm")
    if not hm:
        return _invalid("missing hm (HMAC) query parameter")

    computed = _hmac(key, (node_key, tl_pub, device_name, os_name, email))
    presented = _go_hex_decode(hm)
    if presented is None:
        return _invalid("could not hex-decode hmac")
    if not hmac.compare_digest(computed, presented):
        return _invalid("hmac authentication failed")

    return DeeplinkValidationResult(
        is_valid=True,
        node_key=_dec(node_key),
        tl_pub=_dec(tl_pub),
        device_name=_dec(device_name),
        os_name=_dec(os_name),
        email_address=_dec(email),
    )


# ---------------------------------------------------------------------------
# The part of Go's net/url that deep links depend on, on byte strings.
# ---------------------------------------------------------------------------

_PATH, _PATH_SEGMENT, _HOST, _ZONE, _USER_PASSWORD, _QUERY_COMPONENT, _FRAGMENT = range(1, 8)
_HEXDIGITS: Final = frozenset(b"0123456789abcdefABCDEF")
_UPPERHEX: Final = b"0123456789ABCDEF"


class _URLError(Exception):
    """A parse failure, with Go's message."""


def _msg(data: bytes) -> str:
    """Bytes for an error message: readable, never a lone surrogate."""
    return data.decode("utf-8", "replace")


def _go_quote(data: bytes) -> str:
    """Approximate Go's ``strconv.Quote`` (used only inside error messages)."""
    out = ['"']
    for ch in data.decode("utf-8", "surrogateescape"):
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append(repr(ch)[1:-1])
        elif ch == " " or (ch.isprintable() and cp != 0x7F):
            out.append(ch)
        elif cp < 0x80:
            out.append(f"\\x{cp:02x}")
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def _should_escape(c: int, mode: int) -> bool:
    """Go's ``shouldEscape``: whether byte *c* must be %-escaped in *mode*."""
    if 0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A or 0x30 <= c <= 0x39:
        return False
    if mode in (_HOST, _ZONE) and c in b"!$&'()*+,;=:[]<>\"":
        return False
    if c in b"-_.~":
        return False
    if c in b"$&+,/:;=?@":
        if mode == _PATH:
            return c == ord("?")
        if mode == _PATH_SEGMENT:
            return c in b"/;,?"
        if mode == _USER_PASSWORD:
            return c in b"@/?:"
        if mode == _QUERY_COMPONENT:
            return True
        if mode == _FRAGMENT:
            return False
    return not (mode == _FRAGMENT and c in b"!()*")


def _unhex(c: int) -> int:
    return int(chr(c), 16)


def _unescape(s: bytes, mode: int) -> bytes:
    """Go's ``unescape``: decode %XX (and ``+`` in query components)."""
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == 0x25:  # '%'
            if i + 2 >= n or s[i + 1] not in _HEXDIGITS or s[i + 2] not in _HEXDIGITS:
                raise _URLError(f"invalid URL escape {_go_quote(s[i : i + 3])}")
            # A host may %-escape only non-ASCII bytes (and %25 in a zone).
            if mode == _HOST and _unhex(s[i + 1]) < 8 and s[i : i + 3] != b"%25":
                raise _URLError(f"invalid URL escape {_go_quote(s[i : i + 3])}")
            if mode == _ZONE:
                v = _unhex(s[i + 1]) << 4 | _unhex(s[i + 2])
                if s[i : i + 3] != b"%25" and v != 0x20 and _should_escape(v, _HOST):
                    raise _URLError(f"invalid URL escape {_go_quote(s[i : i + 3])}")
            i += 3
        else:
            if mode in (_HOST, _ZONE) and c < 0x80 and _should_escape(c, mode):
                raise _URLError(f"invalid character {_go_quote(s[i : i + 1])} in host name")
            i += 1

    out = bytearray()
    i = 0
    while i < n:
        c = s[i]
        if c == 0x25:
            out.append(_unhex(s[i + 1]) << 4 | _unhex(s[i + 2]))
            i += 3
            continue
        out.append(0x20 if c == 0x2B and mode == _QUERY_COMPONENT else c)
        i += 1
    return bytes(out)


def _escape(s: bytes, mode: int) -> bytes:
    """Go's ``escape``: %-escape what *mode* requires (space as ``+`` in queries)."""
    out = bytearray()
    for c in s:
        if c == 0x20 and mode == _QUERY_COMPONENT:
            out.append(0x2B)
        elif _should_escape(c, mode):
            out += b"%" + _UPPERHEX[c >> 4 : (c >> 4) + 1] + _UPPERHEX[c & 15 : (c & 15) + 1]
        else:
            out.append(c)
    return bytes(out)


def _encode_values(values: Mapping[bytes, list[bytes]]) -> bytes:
    """Go's ``url.Values.Encode``: sorted keys, query-escaped keys and values."""
    parts: list[bytes] = []
    for k in sorted(values):
        ek = _escape(k, _QUERY_COMPONENT)
        parts.extend(ek + b"=" + _escape(v, _QUERY_COMPONENT) for v in values[k])
    return b"&".join(parts)


def _parse_query(query: bytes) -> dict[bytes, list[bytes]]:
    """Go's ``URL.Query``: like ``ParseQuery`` with every error ignored."""
    result: dict[bytes, list[bytes]] = {}
    if query.count(b"&") + 1 > _MAX_QUERY_PARAMS:
        return result
    for pair in query.split(b"&") if query else []:
        if b";" in pair or not pair:
            continue
        k, _, v = pair.partition(b"=")
        try:
            key = _unescape(k, _QUERY_COMPONENT)
            value = _unescape(v, _QUERY_COMPONENT)
        except _URLError:
            continue
        result.setdefault(key, []).append(value)
    return result


def _go_hex_decode(s: bytes) -> bytes | None:
    """Go's ``hex.DecodeString``: even length, hex digits of either case, or ``None``."""
    if len(s) % 2 or any(c not in _HEXDIGITS for c in s):
        return None
    return bytes.fromhex(s.decode("ascii"))


def _valid_optional_port(port: bytes) -> bool:
    return port == b"" or (port[:1] == b":" and all(0x30 <= c <= 0x39 for c in port[1:]))


def _valid_userinfo(s: bytes) -> bool:
    # Go ranges over runes, so any non-ASCII character is refused.
    allowed = b"-._:~!$&'()*+,;=%@"
    return all(
        0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or 0x30 <= c <= 0x39 or c in allowed for c in s
    )


def _valid_encoded(s: bytes, mode: int) -> bool:
    return all(c in b"!$&'()*+,;=:@[]%" or not _should_escape(c, mode) for c in s)


def _parse_host(scheme: bytes, host: bytes) -> bytes:
    """Go's ``parseHost`` (current rules: IP literals only in brackets, strict http colons)."""
    open_idx = host.rfind(b"[")
    if open_idx > 0:
        raise _URLError("invalid IP-literal")
    if open_idx == 0:
        close_idx = host.rfind(b"]")
        if close_idx < 0:
            raise _URLError("missing ']' in host")
        colon_port = host[close_idx + 1 :]
        if not _valid_optional_port(colon_port):
            raise _URLError(f"invalid port {_go_quote(colon_port)} after host")
        unescaped_port = _unescape(colon_port, _HOST)
        hostname = host[1:close_idx]
        zone = hostname.find(b"%25")
        if zone >= 0:
            unescaped = _unescape(hostname[:zone], _HOST) + _unescape(hostname[zone:], _ZONE)
        else:
            unescaped = _unescape(hostname, _HOST)
        addr_text = _msg(unescaped)
        try:
            addr = ipaddress.ip_address(addr_text)
        except ValueError:
            raise _URLError(
                f"invalid host: ParseAddr({_go_quote(unescaped)}): unable to parse IP"
            ) from None
        if addr.version == 4:
            raise _URLError("invalid IP-literal")
        return b"[" + unescaped + b"]" + unescaped_port
    i = host.find(b":")
    if i != -1:
        last = host.rfind(b":")
        # Several colons are an error for http(s) only; elsewhere the last
        # one starts the port.
        if last != i and scheme not in (b"http", b"https"):
            i = last
        colon_port = host[i:]
        if not _valid_optional_port(colon_port):
            raise _URLError(f"invalid port {_go_quote(colon_port)} after host")
    return _unescape(host, _HOST)


@dataclass
class _GoURL:
    """The fields of Go's ``url.URL`` a deep link needs."""

    scheme: bytes = b""
    opaque: bytes = b""
    has_user: bool = False
    host: bytes = b""
    path: bytes = b""
    raw_path: bytes = b""
    force_query: bool = False
    raw_query: bytes = b""
    fragment: bytes = b""

    @classmethod
    def parse(cls, raw_url: bytes) -> _GoURL:
        """Go's ``url.Parse``; raises :class:`_URLError` with Go's message."""
        u, sep, frag = raw_url.partition(b"#")
        try:
            url = cls._parse(u)
        except _URLError as exc:
            raise _URLError(f"parse {_go_quote(u)}: {exc}") from None
        if sep and frag:
            try:
                url.fragment = _unescape(frag, _FRAGMENT)
            except _URLError as exc:
                raise _URLError(f"parse {_go_quote(raw_url)}: {exc}") from None
        return url

    @classmethod
    def _parse(cls, raw: bytes) -> _GoURL:
        if any(b < 0x20 or b == 0x7F for b in raw):
            raise _URLError("net/url: invalid control character in URL")
        url = cls()
        if raw == b"*":
            url.path = b"*"
            return url

        rest = raw
        for i, c in enumerate(raw):
            if 0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A:
                continue
            if 0x30 <= c <= 0x39 or c in b"+-.":
                if i == 0:
                    break
                continue
            if c == 0x3A:  # ':'
                if i == 0:
                    raise _URLError("missing protocol scheme")
                url.scheme, rest = raw[:i].lower(), raw[i + 1 :]
            break

        if rest.endswith(b"?") and rest.count(b"?") == 1:
            url.force_query = True
            rest = rest[:-1]
        else:
            rest, _, url.raw_query = rest.partition(b"?")

        if not rest.startswith(b"/"):
            if url.scheme:
                # A rootless path after a scheme is opaque; no host, no path.
                url.opaque = rest
                return url
            if b":" in rest.partition(b"/")[0]:
                raise _URLError("first path segment in URL cannot contain colon")

        if (url.scheme or not rest.startswith(b"///")) and rest.startswith(b"//"):
            authority, rest = rest[2:], b""
            slash = authority.find(b"/")
            if slash >= 0:
                authority, rest = authority[:slash], authority[slash:]
            url._parse_authority(authority)

        url.path = _unescape(rest, _PATH)
        url.raw_path = b"" if _escape(url.path, _PATH) == rest else rest
        return url

    def _parse_authority(self, authority: bytes) -> None:
        at = authority.rfind(b"@")
        self.host = _parse_host(self.scheme, authority[at + 1 :] if at >= 0 else authority)
        if at < 0:
            return
        userinfo = authority[:at]
        if not _valid_userinfo(userinfo):
            raise _URLError("net/url: invalid userinfo")
        for part in userinfo.split(b":", 1):
            _unescape(part, _USER_PASSWORD)
        self.has_user = True

    def escaped_path(self) -> bytes:
        """Go's ``URL.EscapedPath``: the raw path if it is a valid spelling, else re-escaped."""
        if self.raw_path and _valid_encoded(self.raw_path, _PATH):
            try:
                if _unescape(self.raw_path, _PATH) == self.path:
                    return self.raw_path
            except _URLError:
                pass
        if self.path == b"*":
            return b"*"
        return _escape(self.path, _PATH)
