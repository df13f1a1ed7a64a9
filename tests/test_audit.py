"""Auditing exported chains: verdicts as the harness gives them, findings an auditor needs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tka import ed25519
from tka.audit import (
    AUDIT_FORMAT,
    KEY_COUNT_WARNING,
    AuditReport,
    audit_aums,
    audit_bundle,
    audit_bytes,
    audit_directory,
    audit_log,
)
from tka.aum import AUM, AUMKind, Signature
from tka.authority import Authority, Signer
from tka.builder import UpdateBuilder
from tka.bundle import Bundle
from tka.conformance._json import state_json
from tka.disablement import disablement_kdf
from tka.errors import UsageError, VerificationError
from tka.key import Key
from tka.lockjson import log_walk_storage, parse_log, render_log
from tka.revocation import cosign_recovery, finish_recovery, make_retroactive_revocation
from tka.state import State
from tka.storage import Storage
from tka.storage.memory import MemoryStore

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "lock_log_json.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]
BY_NAME = {c["name"]: c for c in CASES}

# Reasons whose wording is ours rather than the harness's: the harness prints
# Go's error texts, and these come from tka's own (equally specific) errors.
OWN_WORDING = {
    "tamper/forged-head-untrusted": "replay: update 4 invalid: signature 0: ",
    "tamper/schema-version-2": 'lock log: unsupported SchemaVersion "2"',
    "tamper/unknown-json-field": 'lock log: unknown field "Extra"',
}

SEEDS = [bytes([i + 20]) * 32 for i in range(6)]
PUBS = [ed25519.public_from_seed(s) for s in SEEDS]
VALUES = (disablement_kdf(b"one"), disablement_kdf(b"two"))


def _create(
    keys: tuple[Key, ...], values: tuple[bytes, ...] = VALUES, signer: int = 0
) -> tuple[MemoryStore, Authority]:
    store = MemoryStore()
    state = State(disablement_values=values, keys=keys, state_id1=11, state_id2=22)
    authority, _ = Authority.create(store, state, Signer((SEEDS[signer],)))
    return store, authority


def _update(
    store: Storage, authority: Authority, signer: int, build: Callable[[UpdateBuilder], None]
) -> list[AUM]:
    b = UpdateBuilder(authority, Signer((SEEDS[signer],)))
    build(b)
    aums = b.finalize(store)
    authority.inform(store, aums)
    return aums


def _all(store: MemoryStore) -> list[AUM]:
    return [a for h in store.all_hashes() if (a := store.get(h)) is not None]


def _codes(report: AuditReport) -> set[str]:
    return {w.code for w in report.warnings}


def _two_keys() -> tuple[MemoryStore, Authority]:
    return _create((Key.ed25519(PUBS[0]), Key.ed25519(PUBS[1])))


# -- the harness's verdicts --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_lock_log_vectors_get_the_harness_verdict(case: dict[str, Any]) -> None:
    report = audit_log(case["json_text"])
    assert report.verdict == case["verdict"]
    if case["verdict"] == "valid":
        assert report.head == case["head_b32"]
        assert report.state is not None and state_json(report.state) == case["state"]
    else:
        assert report.head is None and report.state is None
    got = [r.text for r in report.reasons]
    if case["name"] in OWN_WORDING:
        assert len(got) == 1 and got[0].startswith(OWN_WORDING[case["name"]])
    else:
        assert got == case["reasons"]


def test_a_tampered_message_is_named_by_index_and_by_the_hash_the_log_shows() -> None:
    text = BY_NAME["tamper/hash-changed"]["json_text"]
    shown = (parse_log(text).messages or ())[1].hash
    (reason,) = audit_log(text).reasons
    assert (reason.message_index, reason.aum) == (1, shown)
    assert shown in audit_log(text).to_text()


def test_a_replay_failure_names_the_first_aum_that_fails() -> None:
    text = BY_NAME["tamper/head-resigned-consistently"]["json_text"]
    head = (parse_log(text).messages or ())[0].hash
    report = audit_log(text)
    (reason,) = report.reasons
    assert reason.text.startswith("replay: update 3 invalid: signature 0")
    assert (reason.message_index, reason.aum) == (0, head)
    bad = [r for r in report.history if r.verified is False]
    assert [r.hash for r in bad] == [head]


def test_a_log_cut_by_limit_is_verified_from_its_checkpoint() -> None:
    text = BY_NAME["log/57-entries-default-limit"]["json_text"]
    report = audit_log(text)
    assert report.verdict == "incomplete"
    assert report.partial is not None and report.partial.ok
    assert report.partial.head == (parse_log(text).messages or ())[0].hash
    assert "partial-verification" in _codes(report)
    # Messages older than the checkpoint cannot be checked.
    assert any(r.verified is None for r in report.history)


def test_a_cut_log_without_a_checkpoint_is_unverifiable() -> None:
    report = audit_log(BY_NAME["log/limit-3"]["json_text"])
    assert report.verdict == "incomplete" and report.partial is None
    assert "unverifiable" in _codes(report)
    assert (
        report.reasons[0].aum
        == (parse_log(BY_NAME["log/limit-3"]["json_text"]).messages or ())[2].hash
    )


def test_raw_text_that_decodes_but_is_not_what_tailscale_prints_is_invalid() -> None:
    # Go's decoder skips line breaks inside base64; the bytes are canonical,
    # the text is not.
    doc = json.loads(BY_NAME["log/full"]["json_text"])
    raw = doc["Messages"][1]["Raw"]
    doc["Messages"][1]["Raw"] = raw[:8] + "\n" + raw[8:]
    (reason,) = audit_log(json.dumps(doc)).reasons
    assert reason.text == "message 1: Raw is not the canonical base64url text of its bytes"


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_auditing_arbitrary_text_never_raises(text: str) -> None:
    report = audit_log(text)
    assert report.verdict == "invalid" and report.reasons


# -- chains built here ---------------------------------------------------------------------


def test_a_rendered_log_of_a_built_chain_audits_valid_at_the_same_head() -> None:
    store, authority = _two_keys()
    _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[2], meta={"n": "x"})))
    _update(store, authority, 1, lambda b: b.set_key_vote(PUBS[2], 2))
    text = render_log(log_walk_storage(store, authority.head_hash, 50), 50)
    report = audit_log(text)
    assert report.verdict == "valid"
    assert report.head == authority.head.hash_text and report.state == authority.state
    assert [r.message_index for r in report.history] == [2, 1, 0]
    genesis, add, vote = report.history
    assert genesis.keys_added == ("tlpub:" + PUBS[0].hex(), "tlpub:" + PUBS[1].hex())
    assert add.kind == "add-key" and add.keys_added == ("tlpub:" + PUBS[2].hex(),)
    assert add.signers == ("tlpub:" + PUBS[0].hex(),)
    assert vote.keys_changed == ("tlpub:" + PUBS[2].hex(),) and vote.total_votes == 4
    assert all(r.active and r.verified for r in report.history)


def test_audit_aums_replays_any_order_to_tailscales_head() -> None:
    store, authority = _two_keys()
    _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[2])))
    _update(store, authority, 0, lambda b: b.remove_key(PUBS[2]))
    aums = _all(store)
    report = audit_aums(list(reversed(aums)) + aums[:1])
    assert report.verdict == "valid" and report.aum_count == 3
    assert report.head == authority.head.hash_text and report.state == authority.state
    assert report.history[0].kind == "checkpoint" and report.history[-1].keys_removed


def test_a_single_trusted_key_is_reported() -> None:
    store, _authority = _create((Key.ed25519(PUBS[0]),))
    report = audit_aums(_all(store))
    assert report.verdict == "valid"
    assert "single-trusted-key" in _codes(report)
    assert "vote-majority" not in _codes(report)


def test_a_key_set_near_tailscales_cap_is_reported() -> None:
    many = tuple(
        Key.ed25519(ed25519.public_from_seed(i.to_bytes(32, "big")))
        for i in range(1, 1 + KEY_COUNT_WARNING)
    )
    store = MemoryStore()
    signer_key = Key.ed25519(PUBS[0])
    state = State(disablement_values=VALUES, keys=(signer_key, *many[1:]), state_id1=1)
    Authority.create(store, state, Signer((SEEDS[0],)))
    report = audit_aums(_all(store))
    assert report.verdict == "valid"
    assert "key-count-near-limit" in _codes(report)
    store2, _ = _two_keys()
    assert "key-count-near-limit" not in _codes(audit_aums(_all(store2)))


def test_aums_signed_by_keys_removed_later_are_listed() -> None:
    store, authority = _two_keys()
    added = _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[2])))
    _update(store, authority, 1, lambda b: b.remove_key(PUBS[0]))
    report = audit_aums(_all(store))
    (w,) = [w for w in report.warnings if w.code == "signed-by-removed-key"]
    assert w.keys == ("tlpub:" + PUBS[0].hex(),)
    assert added[0].hash_text in w.aums


def test_odd_vote_weights_are_reported() -> None:
    store, _ = _create((Key.ed25519(PUBS[0], votes=3), Key.ed25519(PUBS[1]), Key.ed25519(PUBS[2])))
    report = audit_aums(_all(store))
    (w,) = [w for w in report.warnings if w.code == "vote-majority"]
    assert w.keys == ("tlpub:" + PUBS[0].hex(),) and "3 of 5 votes" in w.message
    assert "unusual-votes" in _codes(report)
    store2, _ = _create(tuple(Key.ed25519(p) for p in PUBS[:3]))
    assert not {"vote-majority", "unusual-votes"} & _codes(audit_aums(_all(store2)))


def test_a_single_disablement_value_is_reported() -> None:
    store, _ = _create((Key.ed25519(PUBS[0]), Key.ed25519(PUBS[1])), values=VALUES[:1])
    assert "single-disablement-value" in _codes(audit_aums(_all(store)))
    store2, _ = _two_keys()
    assert "single-disablement-value" not in _codes(audit_aums(_all(store2)))


def _fork(second: Callable[[UpdateBuilder], None]) -> tuple[MemoryStore, list[AUM], list[AUM]]:
    """Two updates made on the same head by different nodes, both informed."""
    store, authority = _create(tuple(Key.ed25519(p) for p in PUBS[:3]))
    other_store = MemoryStore()
    other = Authority.bootstrap(other_store, _all(store)[0])
    a = _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[4])))
    b = _update(other_store, other, 1, second)
    authority.inform(store, b)
    return store, a, b


def test_a_fork_decided_by_the_hash_tie_break_is_reported() -> None:
    store, a, b = _fork(lambda u: u.add_key(Key.ed25519(PUBS[5])))
    report = audit_aums(_all(store))
    assert report.verdict == "valid"
    (fork,) = report.forks
    assert fork.rule == "lowest-hash" and fork.active
    assert fork.winner == min(a[0], b[0], key=lambda x: x.hash).hash_text
    assert {"fork", "fork-tie-break"} <= _codes(report)
    assert report.head == Authority.open(store).head.hash_text
    inactive = [r for r in report.history if not r.active]
    assert [r.hash for r in inactive] == [max(a[0], b[0], key=lambda x: x.hash).hash_text]


def test_a_remove_key_wins_a_tied_fork() -> None:
    store, _, b = _fork(lambda u: u.remove_key(PUBS[2]))
    report = audit_aums(_all(store))
    (fork,) = report.forks
    assert fork.rule == "remove-key" and fork.winner == b[0].hash_text
    assert report.head == b[0].hash_text


def test_a_retroactive_revocation_shows_as_a_fork_won_by_votes_and_a_trust_rewrite() -> None:
    store, authority = _create(tuple(Key.ed25519(p) for p in PUBS[:3]))
    _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[5])))
    aum = make_retroactive_revocation(authority, store, [PUBS[0]], PUBS[1])
    aum = cosign_recovery(cosign_recovery(aum, Signer((SEEDS[1],))), Signer((SEEDS[2],)))
    finish_recovery(authority, store, aum)
    report = audit_aums(_all(store))
    assert report.verdict == "valid" and report.head == aum.hash_text
    (fork,) = report.forks
    assert fork.rule == "votes" and fork.winner == aum.hash_text
    assert {"fork", "checkpoint-changed-keys"} <= _codes(report)
    assert "fork-tie-break" not in _codes(report)


def test_a_set_without_its_genesis_is_incomplete_and_checked_from_a_checkpoint() -> None:
    store, authority = _two_keys()
    genesis = _all(store)[0]
    _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[2])))
    # A checkpoint restating the state, as Tailscale's builder makes every 50 AUMs.
    cp = AUM(
        AUMKind.CHECKPOINT,
        prev_aum_hash=authority.head_hash,
        state=State(
            disablement_values=VALUES,
            keys=authority.state.keys,
            state_id1=11,
            state_id2=22,
        ),
    )
    cp = cp.with_signatures(Signer((SEEDS[0],)).sign_aum(cp.sig_hash))
    authority.inform(store, [cp])
    _update(store, authority, 1, lambda b: b.remove_key(PUBS[2]))
    rest = [a for a in _all(store) if a.hash != genesis.hash]
    report = audit_aums(rest)
    assert report.verdict == "incomplete" and report.head is None
    assert report.partial is not None and report.partial.ok
    assert report.partial.anchor == cp.hash_text
    assert report.partial.head == authority.head.hash_text
    assert "checkpoint-changed-keys" not in _codes(report)


def test_aums_that_do_not_form_one_tree_are_invalid() -> None:
    store, authority = _two_keys()
    _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[2])))
    second, _ = _create((Key.ed25519(PUBS[3]),), signer=3)
    report = audit_aums(_all(store) + _all(second))
    assert report.verdict == "invalid"
    assert len(report.reasons) == 2 and all("several genesis" in r.text for r in report.reasons)
    assert audit_aums([]).verdict == "invalid"


def test_a_forged_signature_in_a_set_is_invalid_and_named() -> None:
    store, authority = _two_keys()
    (update,) = _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[2])))
    sig = (update.signatures or ())[0]
    forged = update.with_signatures((Signature(sig.key_id, bytes(64)),))
    report = audit_aums([*_all(store)[:1], forged])
    assert report.verdict == "invalid"
    (reason,) = report.reasons
    assert reason.aum == forged.hash_text and "signature 0" in reason.text
    with pytest.raises(VerificationError, match="invalid"):
        report.require_valid()


def test_a_bundle_must_hold_the_head_it_claims() -> None:
    store, authority = _two_keys()
    genesis = _all(store)[0]
    _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[2])))
    good = audit_bundle(Bundle(authority.head_hash, tuple(_all(store))))
    assert good.verdict == "valid" and good.source == "bundle"
    bad = audit_bundle(Bundle(genesis.hash, tuple(_all(store))))
    assert bad.verdict == "invalid" and "bundle's head" in bad.reasons[0].text


def test_a_tailscale_layout_directory_is_audited_read_only(tmp_path: Path) -> None:
    fs = pytest.importorskip("tka.storage.fs")
    path = tmp_path / "tka"
    store = fs.FilesystemStore(path)
    state = State(disablement_values=VALUES, keys=(Key.ed25519(PUBS[0]), Key.ed25519(PUBS[1])))
    authority, _ = Authority.create(store, state, Signer((SEEDS[0],)))
    _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[2])))
    store.close()
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    report = audit_directory(path)
    assert report.verdict == "valid" and report.head == authority.head.hash_text
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    with pytest.raises(UsageError):
        audit_directory(tmp_path / "missing")


# -- report shapes ----------------------------------------------------------------------------


def test_report_json_has_stable_keys_and_round_trips_through_json() -> None:
    report = audit_log(BY_NAME["log/full"]["json_text"])
    doc = json.loads(json.dumps(report.to_json()))
    assert list(doc) == [
        "format",
        "source",
        "verdict",
        "reasons",
        "genesis",
        "head",
        "aum_count",
        "state",
        "history",
        "forks",
        "warnings",
        "partial",
    ]
    assert doc["format"] == AUDIT_FORMAT and doc["verdict"] == "valid"
    assert doc["state"]["keys"][1]["meta"] == {"name": "laptop"}
    assert set(doc["history"][0]) == {
        "hash",
        "parent",
        "kind",
        "message_index",
        "signers",
        "keys_added",
        "keys_removed",
        "keys_changed",
        "trusted_keys",
        "total_votes",
        "active",
        "verified",
        "time",
    }
    assert {w["code"] for w in doc["warnings"]} == {"vote-majority", "unusual-votes"}
    invalid = audit_log(BY_NAME["tamper/reordered"]["json_text"]).to_json()
    assert invalid["reasons"][0] == {
        "text": "message 0: PrevAUMHash does not reference message 1",
        "message_index": 0,
        "aum": "GRBSISSIAWYJUMGOWHZ3WK4UYJGKMHT46SYLVBLI4I3ABMNA5MQQ",
    }


def test_report_text_shows_verdict_anchor_head_history_and_warnings() -> None:
    text = audit_log(BY_NAME["log/full"]["json_text"]).to_text()
    assert text.startswith("tka audit (lock-log, 5 AUM(s)): VALID\n")
    assert "genesis: XPG2PNHYZARIBJR32PP36SB3HFV6PZKCBWOKCSIEIKBTF7IQSFRA" in text
    assert "head:    GRBSISSIAWYJUMGOWHZ3WK4UYJGKMHT46SYLVBLI4I3ABMNA5MQQ" in text
    assert "[warning] vote-majority:" in text and "history (parents first):" in text
    bad = audit_log(BY_NAME["tamper/missing-link"]["json_text"]).to_text()
    assert "INVALID" in bad and "reason: message 1: PrevAUMHash" in bad


# -- files -------------------------------------------------------------------------------------


def test_audit_bytes_tells_bundles_from_lock_logs() -> None:
    store, authority = _two_keys()
    _update(store, authority, 0, lambda b: b.add_key(Key.ed25519(PUBS[2])))
    bundle = Bundle(authority.head_hash, tuple(_all(store)))
    report = audit_bytes(bundle.to_json())
    assert (report.source, report.verdict) == ("bundle", "valid")
    log = audit_bytes(BY_NAME["log/full"]["json_text"].encode())
    assert (log.source, log.verdict) == ("lock-log", "valid")
    broken = audit_bytes(b'{"format": "tka-bundle/1", "aums": 3}')
    assert (broken.source, broken.verdict) == ("bundle", "invalid")
    assert audit_bytes(b"\xff\xfe").verdict == "invalid"


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_auditing_arbitrary_bytes_never_raises(data: bytes) -> None:
    assert audit_bytes(data).verdict == "invalid"


@pytest.mark.parametrize(
    ("text", "offset"),
    [("AB=", 3), ("A===", 1), ("AB==AB==", 4), ("AB=C", 2), ("QQ", 0), ("+A==", 0)],
)
def test_raw_errors_give_gos_offsets(text: str, offset: int) -> None:
    doc = json.loads(BY_NAME["log/full"]["json_text"])
    doc["Messages"][0]["Raw"] = text
    (reason,) = audit_log(json.dumps(doc)).reasons
    assert reason.text == (
        f"message 0: Raw is not padded base64url: illegal base64 data at input byte {offset}"
    )


def test_a_compacted_directory_is_incomplete_but_checked_from_its_oldest_checkpoint(
    tmp_path: Path,
) -> None:
    fs = pytest.importorskip("tka.storage.fs")
    from tka.compaction import CompactionOptions

    now = [1000.0]
    store = fs.FilesystemStore(tmp_path, clock=lambda: now[0])
    state = State(disablement_values=VALUES, keys=(Key.ed25519(PUBS[0]), Key.ed25519(PUBS[1])))
    authority, _ = Authority.create(store, state, Signer((SEEDS[0],)))
    for i in range(60):  # past the builder's automatic checkpoint
        votes = 1 + i % 2

        def vote(b: UpdateBuilder, v: int = votes) -> None:
            b.set_key_vote(PUBS[1], v)

        _update(store, authority, 0, vote)
    now[0] = 10.0**9
    authority.compact(store, CompactionOptions(min_chain=5, min_age_seconds=1), now=now[0])
    oldest = authority.oldest_ancestor
    store.close()
    report = audit_directory(tmp_path)
    assert report.verdict == "incomplete"
    assert report.reasons[0].aum == oldest.hash_text
    assert "compaction" in report.reasons[0].text
    assert report.partial is not None and report.partial.ok
    assert report.partial.anchor == oldest.hash_text
    assert report.partial.head == authority.head.hash_text
    assert report.partial.state == authority.state
