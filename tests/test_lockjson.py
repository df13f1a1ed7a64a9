"""``lock log --json`` / ``lock status --json`` v1: Tailscale's exact text, strict parsing."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tka import ed25519
from tka.aum import AUM, AUMKind, Signature
from tka.authority import Authority, Signer
from tka.builder import UpdateBuilder
from tka.disablement import disablement_kdf
from tka.errors import DecodeError
from tka.key import Key
from tka.lockjson import (
    ExpandedAUM,
    LockLog,
    PeerInfo,
    expand_aum,
    go_json,
    log_message,
    log_walk_storage,
    parse_log,
    parse_status,
    render,
    render_log,
    render_status,
    status_response,
)
from tka.nlkeys import NLPublic, NodePublic
from tka.sig import sign_direct
from tka.state import State
from tka.storage.memory import MemoryStore

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "lock_log_json.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]
UNTAMPERED = [c for c in CASES if "limit" in c]
PARSEABLE = [
    c for c in CASES if c["name"] not in ("tamper/schema-version-2", "tamper/unknown-json-field")
]

SEEDS = [bytes([i + 1]) * 32 for i in range(3)]
PUBS = [ed25519.public_from_seed(s) for s in SEEDS]
FULL = next(c["json_text"] for c in CASES if c["name"] == "log/full")


def _aums_of(text: str) -> list[AUM]:
    return [AUM.from_bytes(base64.urlsafe_b64decode(m.raw)) for m in parse_log(text).messages or ()]


def _chain() -> tuple[MemoryStore, Authority]:
    store = MemoryStore()
    state = State(
        disablement_values=(disablement_kdf(b"a"), disablement_kdf(b"b")),
        keys=(Key.ed25519(PUBS[0]), Key.ed25519(PUBS[1], votes=2)),
        state_id1=7,
        state_id2=9,
    )
    authority, _ = Authority.create(store, state, Signer((SEEDS[0],)))
    b = UpdateBuilder(authority, Signer((SEEDS[0],)))
    b.add_key(Key.ed25519(PUBS[2], meta={"who": "ci <&> bot", "z": "é\u2028\x01\x7f"}))
    b.set_key_vote(PUBS[2], 3)
    b.set_key_meta(PUBS[1], {"name": "laptop"})
    b.remove_key(PUBS[2])
    authority.inform(store, b.finalize(store))
    return store, authority


# -- Tailscale's exact text ----------------------------------------------------------


@pytest.mark.parametrize("case", UNTAMPERED, ids=lambda c: c["name"])
def test_rendering_the_listed_aums_again_gives_tailscales_text(case: dict[str, Any]) -> None:
    text = case["json_text"]
    assert render_log(_aums_of(text), case["limit"]) == text


@pytest.mark.parametrize("case", PARSEABLE, ids=lambda c: c["name"])
def test_parse_then_render_is_the_identity_on_tailscale_shaped_text(case: dict[str, Any]) -> None:
    text = case["json_text"]
    assert render(parse_log(text)) == text


def test_output_is_indented_two_spaces_and_ends_with_one_newline() -> None:
    text = render_log(_aums_of(FULL), 50)
    assert text.startswith('{\n  "SchemaVersion": "1",\n  "Messages": [\n    {\n      "Hash": ')
    assert text.endswith("\n  ]\n}\n") and not text.endswith("\n\n")


def test_limit_cuts_the_walk_and_a_genesis_ends_it() -> None:
    aums = _aums_of(FULL)
    assert len(parse_log(render_log(aums, 3)).messages or ()) == 3
    assert len(parse_log(render_log(aums, 1000)).messages or ()) == 5
    # Tailscale's loop runs `for range maxEntries`: no entries, an empty list.
    assert render_log(aums, 0) == '{\n  "SchemaVersion": "1",\n  "Messages": []\n}\n'
    assert render_log(aums, -1) == render_log([], 50)


def test_walking_storage_lists_the_active_chain_newest_first() -> None:
    store, authority = _chain()
    walked = log_walk_storage(store, authority.head_hash, 50)
    assert walked[0].hash == authority.head_hash
    assert walked[-1].parent is None
    assert all(a.parent == b.hash for a, b in itertools.pairwise(walked))
    assert len(log_walk_storage(store, authority.head_hash, 2)) == 2


def test_strings_are_escaped_as_go_encoding_json_escapes_them() -> None:
    assert go_json("<a & b>") == '"\\u003ca \\u0026 b\\u003e"\n'
    assert go_json('"\\\b\f\n\r\t\x01\x1f') == '"\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f"\n'
    # Only U+2028/U+2029 among non-ASCII characters are escaped; DEL is not.
    assert go_json("é\u2028\u2029\x7f") == '"é\\u2028\\u2029\x7f"\n'
    assert go_json({"b": [], "a": {}}) == '{\n  "b": [],\n  "a": {}\n}\n'


def test_metadata_maps_are_printed_with_sorted_keys() -> None:
    store, authority = _chain()
    text = render_log(log_walk_storage(store, authority.head_hash, 50), 50)
    assert '"who": "ci \\u003c\\u0026\\u003e bot",\n' in text
    assert '"z": "é\\u2028\\u0001\x7f"' in text
    assert text.index('"who"') < text.index('"z"')
    # Round trip: the parsed log renders to the same text.
    assert render(parse_log(text)) == text


def test_zero_fields_are_omitted_and_nil_lists_print_as_null() -> None:
    # votes=0 is a present pointer on the wire, but Go's Votes uint is
    # omitzero in the JSON, so it disappears.
    upd = AUM(AUMKind.UPDATE_KEY, prev_aum_hash=b"\x01" * 32, key_id=PUBS[0], votes=0)
    obj = json.loads(render(log_message(upd)))
    assert obj["AUM"] == {
        "MessageKind": "update-key",
        "PrevAUMHash": "AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQ",
        "KeyID": "tlpub:" + PUBS[0].hex(),
    }
    # An empty checkpoint state: Go appends to nil slices, so they print as
    # null; the state IDs are always printed once the state is non-zero.
    cp = AUM(AUMKind.CHECKPOINT, state=State(disablement_values=(), keys=(), state_id1=5))
    state = json.loads(render(log_message(cp)))["AUM"]["State"]
    assert state == {"DisablementValues": None, "Keys": None, "StateID1": 5, "StateID2": 0}
    # An all-zero state is a zero struct: omitted entirely.
    empty = AUM(AUMKind.CHECKPOINT, state=State())
    assert "State" not in json.loads(render(log_message(empty)))["AUM"]


def test_expansion_uses_the_canonical_round_trip() -> None:
    # An empty-but-present meta map is dropped by the canonical encoding, so
    # Tailscale (which decodes the serialized bytes) never prints it.
    aum = AUM(AUMKind.UPDATE_KEY, prev_aum_hash=b"\x02" * 32, key_id=PUBS[1], meta={})
    msg = log_message(aum)
    assert msg.aum.meta is None
    assert expand_aum(aum).meta == {}  # the raw expansion keeps it, as Go's would
    assert base64.urlsafe_b64decode(msg.raw) == aum.to_bytes()


def test_signatures_are_padded_base64url_and_key_ids_tlpub() -> None:
    sig = Signature(PUBS[0], bytes(range(62)) + b"\xfb\xff")
    aum = AUM(AUMKind.NO_OP, prev_aum_hash=b"\x03" * 32, signatures=(sig,))
    (s,) = log_message(aum).aum.signatures or ()
    assert s.key_id == "tlpub:" + PUBS[0].hex()
    assert s.signature.endswith("PD37_w==")
    assert "+" not in s.signature and "/" not in s.signature


# -- strict parsing ----------------------------------------------------------------------


def _mutate(path: list[str | int], value: Any, text: str = FULL) -> str:
    doc = json.loads(text)
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            FULL.replace('"SchemaVersion": "1",', '"SchemaVersion": "1", "Extra": 1,'),
            'unknown field "Extra"',
        ),
        (
            _mutate(["Messages", 0, "AUM", "Votez"], 1),
            'lock log.Messages[0].AUM: unknown field "Votez"',
        ),
        (FULL.replace('"SchemaVersion"', '"Schema_Version"'), 'unknown field "Schema_Version"'),
        (_mutate(["SchemaVersion"], "2"), 'unsupported SchemaVersion "2"'),
        (
            _mutate(["Messages", 2, "AUM", "Votes"], 1.0),
            "Messages[2].AUM.Votes: want an unsigned integer",
        ),
        (
            _mutate(["Messages", 2, "AUM", "Votes"], -1),
            "Messages[2].AUM.Votes: want an unsigned integer",
        ),
        (_mutate(["Messages", 2, "AUM", "Votes"], True), "want an unsigned integer, got a boolean"),
        (_mutate(["Messages", 2, "AUM", "Votes"], "2"), "want an unsigned integer, got a string"),
        (_mutate(["Messages", 2, "AUM", "Votes"], 2**64), "out of range"),
        (_mutate(["Messages", 0, "Hash"], None), "Messages[0].Hash: want a string, got null"),
        (
            _mutate(["Messages", 0, "AUM", "Meta"], {"a": 1}),
            "Messages[0].AUM.Meta['a']: want a string",
        ),
        (_mutate(["Messages", 4, "AUM", "State", "Keys", 0, "Votes"], None), "Keys[0].Votes"),
        (_mutate(["Messages"], {}), "Messages: want an array"),
        ("[]", "lock log: want an object"),
        (FULL + "{}", "not valid JSON"),
        (
            '{"SchemaVersion": "1", "Messages": [NaN]}',
            "Messages[0]: want an object, got the number NaN",
        ),
        ('{"SchemaVersion": "1", "Messages": [], "_WARNING": "\\ud800"}', "unpaired surrogate"),
        ("[" * 100_000, "nested too deeply"),
        ('{"SchemaVersion": "1"}', 'missing field "Messages"'),
    ],
)
def test_parse_log_rejects_what_tailscale_would_not_print(text: str, needle: str) -> None:
    with pytest.raises(DecodeError) as exc:
        parse_log(text)
    assert needle in str(exc.value)


def test_parse_log_matches_field_names_as_go_does() -> None:
    # Go's encoding/json accepts any letter case and keeps the last of two
    # equal names; the harness that assigns verdicts decodes with it.
    folded = parse_log(FULL.replace('"SchemaVersion"', '"schemaVERSION"'))
    assert folded == parse_log(FULL)
    twice = FULL.replace('"SchemaVersion": "1",', '"SchemaVersion": "2", "SchemaVersion": "1",')
    assert parse_log(twice) == parse_log(FULL)


def test_parse_log_names_missing_always_printed_members() -> None:
    doc = json.loads(FULL)
    del doc["Messages"][1]["Raw"]
    with pytest.raises(DecodeError, match=r'Messages\[1\]: missing field "Raw"'):
        parse_log(json.dumps(doc))


def test_parse_log_accepts_bytes_nulls_for_slices_and_the_warning_field() -> None:
    text = '{"SchemaVersion": "1", "_WARNING": "newer schema", "Messages": null}'
    log = parse_log(text.encode())
    assert log == LockLog(messages=None, response_warning="newer schema")
    assert render(log) == (
        '{\n  "SchemaVersion": "1",\n  "_WARNING": "newer schema",\n  "Messages": null\n}\n'
    )
    with pytest.raises(DecodeError, match="not UTF-8"):
        parse_log(b'{"SchemaVersion": "\xff"}')


def test_parsed_expanded_aum_equals_tailscales_expansion_of_raw() -> None:
    log = parse_log(FULL)
    for m in log.messages or ():
        aum = AUM.from_bytes(base64.urlsafe_b64decode(m.raw))
        assert isinstance(m.aum, ExpandedAUM)
        assert expand_aum(aum) == m.aum
        assert aum.hash_text == m.hash


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_arbitrary_text_only_ever_raises_decode_error(text: str) -> None:
    with contextlib.suppress(DecodeError):
        parse_log(text)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["SchemaVersion", "Messages", "Hash", "AUM", "Raw", "MessageKind", "Key", "x"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_json_values)
def test_arbitrary_json_values_only_ever_raise_decode_error(value: Any) -> None:
    try:
        parse_log(json.dumps(value))
        parse_status(json.dumps(value))
    except DecodeError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(FULL) - 1), st.characters())
def test_corrupted_tailscale_text_only_ever_raises_decode_error(pos: int, ch: str) -> None:
    with contextlib.suppress(DecodeError):
        parse_log(FULL[:pos] + ch + FULL[pos + 1 :])


# -- lock status --json --------------------------------------------------------------------


def test_status_without_a_tailnet_lock_key_is_disabled_with_the_node_key_only() -> None:
    node = NodePublic(b"\x07" * 32)
    text = render_status(None, node_key=node)
    assert text == (
        '{\n  "SchemaVersion": "1",\n  "Enabled": false,\n'
        '  "NodeKey": "nodekey:' + "07" * 32 + '"\n}\n'
    )
    with_key = json.loads(render_status(None, public_key=NLPublic(PUBS[0]), node_key=node))
    assert list(with_key) == ["SchemaVersion", "Enabled", "PublicKey", "NodeKey"]
    assert with_key["PublicKey"] == "tlpub:" + PUBS[0].hex()


def test_enabled_status_lists_head_keys_peers_and_the_first_state_id() -> None:
    _, authority = _chain()
    node = NodePublic(b"\x09" * 32)
    sig = sign_direct(SEEDS[0], node.raw)
    peer = PeerInfo(
        "nStable1", "peer.example.ts.net.", NodePublic(b"\x0a" * 32), ("100.64.0.2",), sig
    )
    lonely = PeerInfo("nStable2", "bad.example.ts.net.", NodePublic(b"\x0b" * 32))
    status = status_response(
        authority,
        public_key=NLPublic(PUBS[0]),
        node_key=node,
        node_key_signature=sig.to_bytes(),
        visible_peers=[peer],
        filtered_peers=[lonely],
    )
    text = render(status)
    obj = json.loads(text)
    assert list(obj) == [
        "SchemaVersion",
        "Enabled",
        "PublicKey",
        "NodeKey",
        "Head",
        "NodeKeySigned",
        "NodeKeySignature",
        "TrustedKeys",
        "VisiblePeers",
        "FilteredPeers",
        "State",
    ]
    assert obj["Head"] == authority.head.hash_text and obj["State"] == 7
    assert obj["NodeKeySigned"] is True
    assert obj["NodeKeySignature"]["SigKind"] == "direct"
    # Go prints the signed node key's binary form ("np" + key) with tlpub:.
    assert obj["NodeKeySignature"]["PublicKey"] == "tlpub:6e70" + "09" * 32
    assert obj["TrustedKeys"][1] == {
        "Kind": "25519",
        "Votes": 2,
        "Public": "tlpub:" + PUBS[1].hex(),
        "Meta": {"name": "laptop"},
    }
    assert obj["VisiblePeers"][0]["TailscaleIPs"] == ["100.64.0.2"]
    assert obj["FilteredPeers"] == [
        {
            "ID": "nStable2",
            "DNSName": "bad.example.ts.net.",
            "TailscaleIPs": None,
            "NodeKey": "nodekey:" + "0b" * 32,
        }
    ]
    assert parse_status(text) == status


def test_status_before_a_netmap_reports_unsigned_with_an_empty_signature() -> None:
    _, authority = _chain()
    obj = json.loads(render_status(authority, public_key=NLPublic(PUBS[0])))
    assert obj["NodeKeySigned"] is False
    assert obj["NodeKeySignature"] == {"SigKind": "invalid", "Signature": ""}
    assert obj["VisiblePeers"] == [] and obj["FilteredPeers"] == []
    assert "NodeKey" not in obj


def test_status_with_a_signature_by_an_untrusted_key_is_not_signed() -> None:
    _, authority = _chain()
    node = NodePublic(b"\x09" * 32)
    bad = sign_direct(b"\x55" * 32, node.raw)
    status = status_response(
        authority,
        public_key=NLPublic(PUBS[0]),
        node_key=node,
        node_key_signature=bad,
        visible_peers=[],
    )
    assert status.node_key_signed is False
    assert status.node_key_signature is not None
    assert status.node_key_signature.sig_kind == "direct"
