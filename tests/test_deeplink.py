"""Tests for tka.deeplink: building and validating sign-device links as Go does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tka.deeplink import deeplink_hmac, new_deeplink, validate_deeplink
from tka.errors import DecodeError, UsageError

VECTORS = Path(__file__).parent.parent / "vectors" / "deeplink.json"

NK = "nodekey:74be528076dad74f2de30c4d060c813adec72a6fc108171ea2f45b783e947d5c"
TP = "tlpub:8cb0d4d2a68c672269870f30974ad9d8cf720147fe615564771b1202984e830d"
SID = 1234605616436508552


def _cases(case_type: str) -> list[dict[str, Any]]:
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    return [c for c in doc["cases"] if c["case_type"] == case_type]


def _link(params: dict[str, str], hm: str, order: list[str] | None = None) -> str:
    """Assemble a link by hand (values escaped the way Go's QueryEscape does for ASCII)."""
    items = dict(params, hm=hm)
    keys = order or sorted(items)
    query = "&".join(f"{k}={quote_plus(items[k], safe='~')}" for k in keys)
    return "tailscale://sign-device/v1/?" + query


def _good(**overrides: str) -> dict[str, str]:
    p = {"nk": NK, "tp": TP, "dn": "my laptop", "os": "linux", "em": "alice@example.com"}
    p.update(overrides)
    return p


def _hm(sid: int, p: dict[str, str]) -> str:
    return deeplink_hmac(sid, p["nk"], p["tp"], p["dn"], p.get("os", ""), p["em"]).hex()


# --- vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("new"), ids=lambda c: c["name"])
def test_new_vectors(case: dict[str, Any]) -> None:
    p = case["params"]
    args = (p["node_key"], p["tl_pub"], p["device_name"], p["os_name"], p["login_name"])
    if case["ok"]:
        assert new_deeplink(case["state_id1"], *args) == case["url"]
    else:
        with pytest.raises((DecodeError, UsageError)) as info:
            new_deeplink(case["state_id1"], *args)
        assert str(info.value) == case["error"]


@pytest.mark.parametrize("case", _cases("validate"), ids=lambda c: c["name"])
def test_validate_vectors(case: dict[str, Any]) -> None:
    res = validate_deeplink(case["state_id1"], case["url"])
    want = case["result"]
    assert res.is_valid is want["is_valid"]
    assert res.error == want["error"]
    assert res.version == want["version"] == 0
    assert res.node_key == want["node_key"]
    assert res.tl_pub == want["tl_pub"]
    assert res.device_name == want["device_name"]
    assert res.os_name == want["os_name"]
    assert res.email_address == want["email_address"]


# --- round trip and tampering ------------------------------------------------------

names = st.text(min_size=1, max_size=40)
state_ids = st.integers(min_value=0, max_value=2**64 - 1)
hex_keys = st.binary(min_size=32, max_size=32).map(bytes.hex)


@given(state_ids, hex_keys, hex_keys, names, names, names)
def test_round_trip(sid: int, nk: str, tp: str, dn: str, os_name: str, em: str) -> None:
    url = new_deeplink(sid, "nodekey:" + nk, "tlpub:" + tp, dn, os_name, em)
    assert url.isascii()
    res = validate_deeplink(sid, url)
    assert res.is_valid, res.error
    assert res.error == ""
    assert (res.node_key, res.tl_pub) == ("nodekey:" + nk, "tlpub:" + tp)
    assert (res.device_name, res.os_name, res.email_address) == (dn, os_name, em)


@given(state_ids, names)
def test_other_state_id_is_rejected(sid: int, dn: str) -> None:
    url = new_deeplink(sid, NK, TP, dn, "linux", "a@b")
    other = sid ^ 1
    res = validate_deeplink(other, url)
    assert not res.is_valid
    assert res.error == "hmac authentication failed"
    assert res.device_name == ""


@pytest.mark.parametrize("field", ["nk", "tp", "dn", "os", "em"])
def test_changing_any_field_breaks_the_hmac(field: str) -> None:
    p = _good()
    hm = _hm(SID, p)
    assert validate_deeplink(SID, _link(p, hm)).is_valid
    tampered = dict(p)
    tampered[field] = p[field] + "x"
    res = validate_deeplink(SID, _link(tampered, hm))
    assert not res.is_valid
    assert res.error == "hmac authentication failed"


def test_flipping_an_hmac_digit_is_rejected() -> None:
    p = _good()
    hm = _hm(SID, p)
    for i in range(0, 64, 7):
        flipped = hm[:i] + ("0" if hm[i] != "0" else "1") + hm[i + 1 :]
        assert not validate_deeplink(SID, _link(p, flipped)).is_valid
    assert not validate_deeplink(SID, _link(p, hm[:-2])).is_valid
    assert not validate_deeplink(SID, _link(p, hm + "00")).is_valid


@pytest.mark.parametrize("hm", ["0", "abc", "zz", "0x00", "  "])
def test_hmac_that_is_not_hex(hm: str) -> None:
    res = validate_deeplink(SID, _link(_good(), hm))
    assert res.error == "could not hex-decode hmac"


# --- Go quirks -------------------------------------------------------------------


def test_missing_os_is_accepted() -> None:
    p = _good()
    del p["os"]
    res = validate_deeplink(SID, _link(p, _hm(SID, p)))
    assert res.is_valid
    assert res.os_name == ""


def test_empty_os_value_is_accepted() -> None:
    p = _good(os="")
    res = validate_deeplink(SID, _link(p, _hm(SID, p)))
    assert res.is_valid


@pytest.mark.parametrize(
    ("missing", "error"),
    [
        ("nk", "missing nk (NodeKey) query parameter"),
        ("tp", "missing tp (TLPub) query parameter"),
        ("dn", "missing dn (DeviceName) query parameter"),
        ("em", "missing em (EmailAddress) query parameter"),
    ],
)
def test_missing_required_parameter(missing: str, error: str) -> None:
    p = _good()
    hm = _hm(SID, p)
    del p[missing]
    assert validate_deeplink(SID, _link(p, hm)).error == error


def test_first_of_repeated_parameters_counts() -> None:
    p = _good()
    url = _link(p, _hm(SID, p))
    assert validate_deeplink(SID, url + "&dn=evil&nk=nodekey%3A00").device_name == "my laptop"
    assert not validate_deeplink(SID, url.replace("?", "?dn=evil&", 1)).is_valid


def test_parameter_order_does_not_matter() -> None:
    p = _good()
    url = _link(p, _hm(SID, p), order=["hm", "os", "tp", "nk", "em", "dn"])
    assert validate_deeplink(SID, url).is_valid


def test_scheme_is_case_insensitive_but_host_is_not() -> None:
    p = _good()
    url = _link(p, _hm(SID, p))
    assert validate_deeplink(SID, "TailScale" + url[len("tailscale") :]).is_valid
    res = validate_deeplink(SID, url.replace("sign-device", "SIGN-DEVICE"))
    assert res.error == "unhandled host SIGN-DEVICE, expected sign-device"


def test_fragment_is_ignored_but_must_be_well_escaped() -> None:
    p = _good()
    url = _link(p, _hm(SID, p))
    assert validate_deeplink(SID, url + "#anything").is_valid
    assert not validate_deeplink(SID, url + "#%zz").is_valid
    # A '#' inside a value cuts the query there, as in any URL parser.
    assert not validate_deeplink(SID, url.replace("dn=my+laptop", "dn=my#laptop")).is_valid


def test_userinfo_is_allowed_and_ignored() -> None:
    p = _good()
    url = _link(p, _hm(SID, p)).replace("//sign-device", "//someone:pw@sign-device")
    assert validate_deeplink(SID, url).is_valid


@pytest.mark.parametrize(
    "path",
    ["/v1", "/v1/x/", "/v2/", "/V1/", "/v%31/", "//v1/", "/v1//", "", "/"],
)
def test_only_the_exact_v1_path_is_accepted(path: str) -> None:
    p = _good()
    url = _link(p, _hm(SID, p)).replace("/v1/?", path + "?", 1)
    assert not validate_deeplink(SID, url).is_valid


@pytest.mark.parametrize("path", ["/v1/extra", "/v1/%2F", "/v1/a b", "/v1/;x"])
def test_third_path_segment_is_not_checked(path: str) -> None:
    # Go only counts the '/'-separated components and looks at the second.
    p = _good()
    url = _link(p, _hm(SID, p)).replace("/v1/?", path + "?", 1)
    assert validate_deeplink(SID, url).is_valid


def test_escaped_version_is_reported_escaped() -> None:
    p = _good()
    url = _link(p, _hm(SID, p)).replace("/v1/?", "/v%31/?", 1)
    assert validate_deeplink(SID, url).error == (
        "expected v1 deeplink version, found something else: v%31"
    )


def test_bad_pairs_are_dropped_not_fatal() -> None:
    p = _good()
    url = _link(p, _hm(SID, p))
    # A pair with a bad escape or a semicolon is skipped; the rest still count.
    assert validate_deeplink(SID, url + "&x=%zz&y=1;2").is_valid
    bad_nk = url.replace("nk=nodekey", "nk=%zznodekey")
    assert validate_deeplink(SID, bad_nk).error == "missing nk (NodeKey) query parameter"
    semi = url.replace("nk=nodekey", "nk=;nodekey")
    assert validate_deeplink(SID, semi).error == "missing nk (NodeKey) query parameter"


def test_too_many_parameters_drop_the_whole_query() -> None:
    p = _good()
    url = _link(p, _hm(SID, p))
    assert validate_deeplink(SID, url + "&" * (10000 - 6)).is_valid  # 10000 pairs
    res = validate_deeplink(SID, url + "&" * (10000 - 5))  # 10001 pairs
    assert res.error == "missing nk (NodeKey) query parameter"


@pytest.mark.parametrize("ctl", ["\n", "\t", "\x00", "\x7f", "\r"])
def test_control_characters_make_the_url_unparseable(ctl: str) -> None:
    p = _good()
    url = _link(p, _hm(SID, p))
    res = validate_deeplink(SID, url.replace("linux", "lin" + ctl + "ux"))
    assert not res.is_valid
    assert res.error.startswith('parse "tailscale://')
    assert "invalid control character in URL" in res.error


@pytest.mark.parametrize(
    "url",
    [
        "",
        "tailscale:",
        "tailscale:sign-device/v1/?nk=a",
        "tailscale:///sign-device/v1/",
        "https://sign-device/v1/?nk=a",
        "://sign-device",
        "tailscale://sign-device:80/v1/",
        "tailscale://sign-device:x/v1/",
        "tailscale://[::1]/v1/",
        "tailscale://sign%2Ddevice/v1/",
        "tailscale://a b/v1/",
        "tailscale://sign-device/v1/?",
        "tailscale://sign-device/v1/%zz?nk=x",
    ],
)
def test_malformed_links_are_invalid(url: str) -> None:
    res = validate_deeplink(SID, url)
    assert not res.is_valid
    assert res.error
    assert (res.node_key, res.tl_pub, res.device_name, res.os_name, res.email_address) == (
        "",
        "",
        "",
        "",
        "",
    )


@given(st.text(max_size=200))
def test_validate_never_raises(url: str) -> None:
    res = validate_deeplink(SID, url)
    assert res.is_valid is (res.error == "")


@given(st.text(alphabet="tailscale:/sign-dev1?&=%#@[]+nkptmho;0123456789abcdef", max_size=80))
def test_validate_never_raises_on_url_like_text(url: str) -> None:
    res = validate_deeplink(0, url)
    assert not res.is_valid or res.error == ""


def test_non_utf8_bytes_survive_the_round_trip() -> None:
    dn = b"caf\xe9".decode("utf-8", "surrogateescape")  # Latin-1 bytes, not UTF-8
    url = new_deeplink(5, NK, TP, dn, "linux", "a@b")
    assert "dn=caf%E9" in url
    res = validate_deeplink(5, url)
    assert res.is_valid
    assert res.device_name.encode("utf-8", "surrogateescape") == b"caf\xe9"


# --- NewDeeplink argument checks ------------------------------------------------------


def test_new_checks_only_prefixes() -> None:
    # Go only looks at the prefixes, not at the hex that follows.
    assert validate_deeplink(1, new_deeplink(1, "nodekey:zz", "tlpub:", "d", "o", "l")).is_valid
    with pytest.raises(DecodeError):
        new_deeplink(1, NK, "nlpub:" + TP[6:], "d", "o", "l")
    with pytest.raises(DecodeError):
        new_deeplink(1, NK[8:], TP, "d", "o", "l")
    with pytest.raises(DecodeError):
        new_deeplink(1, "", TP, "d", "o", "l")


@pytest.mark.parametrize("empty", [2, 3, 4])
def test_new_refuses_empty_names(empty: int) -> None:
    args = [NK, TP, "d", "o", "l"]
    args[empty] = ""
    with pytest.raises(UsageError):
        new_deeplink(1, *args)


@pytest.mark.parametrize("sid", [-1, 2**64, 1.0, True])
def test_state_id_must_be_uint64(sid: Any) -> None:
    with pytest.raises(UsageError):
        new_deeplink(sid, NK, TP, "d", "o", "l")
    with pytest.raises(UsageError):
        validate_deeplink(sid, "tailscale://sign-device/v1/")


def test_query_is_encoded_like_go() -> None:
    url = new_deeplink(42, NK, TP, "a b~c*d'e(f)!", "linux", "x@y")
    # Go's QueryEscape: space -> '+', '~' kept, every other symbol %XX upper-case.
    assert "dn=a+b~c%2Ad%27e%28f%29%21&" in url
    assert url.startswith("tailscale://sign-device/v1/?dn=")
    keys = [part.split("=")[0] for part in url.split("?", 1)[1].split("&")]
    assert keys == ["dn", "em", "hm", "nk", "os", "tp"]
