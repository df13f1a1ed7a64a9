"""Conformance checks for the ``deeplink`` kind: building and validating sign-device links."""

from __future__ import annotations

import re
from typing import Any

from tka.conformance._util import Context, Mismatch, expect
from tka.deeplink import new_deeplink, validate_deeplink
from tka.errors import TKAError

__all__ = ["check"]

_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _as_go_json(text: str) -> str:
    """Render a field as Go's JSON encoder would: each non-UTF-8 byte becomes U+FFFD."""
    return _ESCAPED_BYTE.sub("\ufffd", text)


def _check_new(case: dict[str, Any]) -> None:
    p = case["params"]
    try:
        url = new_deeplink(
            case["state_id1"],
            p["node_key"],
            p["tl_pub"],
            p["device_name"],
            p["os_name"],
            p["login_name"],
        )
    except TKAError:
        expect("ok", False, case["ok"])
        return
    expect("ok", True, case["ok"])
    expect("url", url, case["url"])
    # What NewDeeplink makes, ValidateDeeplink with the same StateID accepts.
    expect("round trip", validate_deeplink(case["state_id1"], url).is_valid, True)


def _check_validate(case: dict[str, Any]) -> None:
    want = case["result"]
    res = validate_deeplink(case["state_id1"], case["url"])
    expect("is_valid", res.is_valid, want["is_valid"])
    # Error texts are informative, not part of the contract: only whether
    # there is one is compared.
    expect("error present", res.error != "", want["error"] != "")
    expect("version", res.version, want["version"])
    expect("node_key", _as_go_json(res.node_key), want["node_key"])
    expect("tl_pub", _as_go_json(res.tl_pub), want["tl_pub"])
    expect("device_name", _as_go_json(res.device_name), want["device_name"])
    expect("os_name", _as_go_json(res.os_name), want["os_name"])
    expect("email_address", _as_go_json(res.email_address), want["email_address"])


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``deeplink`` vector case."""
    kind = case.get("case_type")
    if kind == "new":
        _check_new(case)
    elif kind == "validate":
        _check_validate(case)
    else:
        raise Mismatch(f"unknown deeplink case_type {kind!r}")
