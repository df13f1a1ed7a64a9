"""Differential tests: tka against Tailscale's own ``tka`` (``tka-oracle``).

Each test generates inputs (see ``tests/_oracle_gen.py``), asks the oracle and
tka, and requires the same verdicts and, where both accept, the same bytes,
hashes, heads and states. The comparison of one case is the vector checker of
its kind (``tka.conformance.<kind>.check``): the oracle answers in the vector
format, so each answer is a fresh vector.

Budget: a fixed number of examples per family, derandomized, so CI runs the
same cases every time in well under a minute. A long campaign:
``TKA_DIFF_EXAMPLES=5000 [TKA_DIFF_SEED=7] pytest tests/test_oracle_diff.py``
(random, or seeded, generation with that many examples per family). Where a
Go panic is the oracle's answer (Tailscale's nodes crash), tka must refuse
with a StorageError (see ``CONFORMANCE.md``).

Sync has two generations of rules (``tka/sync.py``): the oracle is asked once
which ``tailscale.com`` it was built against (its ``version`` op; an oracle
without one is the prebuilt main binary) and sync is compared under that
generation's rules, cross-checked by one probe exchange. Tailscale's
``ChonkDir`` also changed (v1.102.3, ``ea9b1a230``): before it, ``ChildAUMs``
matched a stored previous hash byte for byte, so an AUM whose previous hash is
not 32 bytes was no AUM's child; since, it is indexed under ``AUM.Parent``
(truncated or zero-padded), as tka's stores do. Against an older oracle the
on-disk leg of the chain tests is compared with an in-memory store that
matches byte for byte (``_ByteExactChildren``), and the damaged-store test
leaves such chains out.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from _oracle import Oracle, oracle_or_skip
from _oracle_gen import (
    PRIVS,
    PUBS,
    ChainCase,
    InformCase,
    NKSCase,
    SyncCase,
    aum_bytes,
    chain_cases,
    ed25519_triples,
    genesis_for,
    inform_cases,
    mutate_tree,
    nks_cases,
    signed,
    sync_cases,
)
from hypothesis import HealthCheck, Phase, assume, event, given, seed, settings
from hypothesis import strategies as st

from tka.aum import AUM, AUMKind, hash_to_text
from tka.authority import Authority
from tka.conformance import Context
from tka.conformance import aum as aum_kind
from tka.conformance import chain as chain_kind
from tka.conformance import disablement as disablement_kind
from tka.conformance import ed25519 as ed25519_kind
from tka.conformance import inform as inform_kind
from tka.conformance import nks as nks_kind
from tka.conformance import resign as resign_kind
from tka.conformance import sync as sync_kind
from tka.conformance._json import b32, state_json
from tka.errors import StorageError, TKAError
from tka.key import Key
from tka.sig import NodeKeySignature, SigKind, node_key_binary
from tka.state import State
from tka.storage.fs import FilesystemStore
from tka.storage.memory import MemoryStore
from tka.sync import SYNC_RULES_MAIN, SYNC_RULES_V1_102, SyncRules, sync_offer

F = TypeVar("F", bound=Callable[..., Any])

_CAMPAIGN = int(os.environ.get("TKA_DIFF_EXAMPLES", "0") or 0)
_SEED = os.environ.get("TKA_DIFF_SEED")


def budget(examples: int) -> Callable[[F], F]:
    """Hypothesis settings for one family: *examples* in CI, ``$TKA_DIFF_EXAMPLES`` on demand."""
    s = settings(
        max_examples=_CAMPAIGN or examples,
        derandomize=not _CAMPAIGN,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
        # TKA_DIFF_NO_SHRINK=1 reports the first failure as found (shrinking
        # a slow generator can take minutes).
        phases=[
            p for p in Phase if not (os.environ.get("TKA_DIFF_NO_SHRINK") and p is Phase.shrink)
        ],
    )

    def wrap(f: F) -> F:
        out = s(f)
        if _CAMPAIGN and _SEED:
            out = seed(int(_SEED))(out)
        return out

    return wrap


@pytest.fixture(scope="session")
def oracle() -> Oracle:
    """The session's one oracle process (see ``tests/_oracle.py``)."""
    return oracle_or_skip()


# tailscale.com tags whose tka has the released sync rules: every tag up to
# v1.103.0-pre (f6fa29463, main's change, is in none of them).
_RELEASED_SYNC = re.compile(r"v1\.(?:\d|[1-9]\d|10[0-2])\.\d+(?:-pre)?|v1\.103\.0-pre")


def sync_rules_for_version(version: str | None) -> SyncRules | None:
    """The sync rules of a ``tailscale.com`` version; ``None`` when unknown.

    ``version`` ``None`` is an oracle without the ``version`` op: the prebuilt
    binary made from main at de9ec7ee, before the op existed.
    """
    if version is None:
        return SYNC_RULES_MAIN
    if _RELEASED_SYNC.fullmatch(version):
        return SYNC_RULES_V1_102
    return None


def _probe_sync_rules(oracle: Oracle) -> SyncRules:
    """Which generation the oracle's ``SyncOffer`` follows, from one exchange.

    Genesis and five NoOps: the released offer lists the AUM four steps
    back, main's lists only the oldest.
    """
    chain = [
        signed(
            AUM(AUMKind.CHECKPOINT, state=State(None, (bytes(32),), (Key(1, 1, PUBS[0]),), 1, 1)),
            [PRIVS[0]],
        )
    ]
    for i in range(5):
        chain.append(
            signed(AUM(AUMKind.NO_OP, prev_aum_hash=chain[-1].hash, key_id=bytes([i])), [PRIVS[0]])
        )
    side = {"aums_hex": _hex(chain), "last_active_ancestor_b32": chain[0].hash_text}
    answer = oracle.ask("sync_exchange", local=side, remote=side)
    store = MemoryStore()
    store.commit_verified(chain)
    authority = Authority.open(store)
    for rules in (SYNC_RULES_V1_102, SYNC_RULES_MAIN):
        head, ancestors = sync_offer(authority, store, rules=rules).to_text()
        if answer["local_offer"] == {"head_b32": head, "ancestors_b32": ancestors}:
            return rules
    raise AssertionError(f"the oracle's SyncOffer follows neither generation: {answer}")


@pytest.fixture(scope="session")
def oracle_sync_rules(oracle: Oracle, oracle_version: str | None) -> SyncRules:
    """The sync rules of the ``tailscale.com`` the oracle was built against."""
    version = oracle_version
    probed = _probe_sync_rules(oracle)
    known = sync_rules_for_version(version)
    assert known in (None, probed), (
        f"tailscale.com {version} should have the {known.name if known else '?'} sync rules "
        f"but its SyncOffer follows {probed.name}'s"
    )
    return probed


# tailscale.com tags whose ChonkDir still scanned for children (before v1.102.3).
_SCANNING_CHONKDIR = re.compile(r"v1\.(?:\d|[1-9]\d|10[01])\.\d+(?:-pre)?|v1\.102\.[0-2]")


class _ByteExactChildren(MemoryStore):
    """A store whose children are those whose previous hash is the parent's, byte for byte.

    Tailscale's ``ChonkDir`` before v1.102.3: ``ChildAUMs`` compared the
    stored ``PrevAUMHash`` with the parent hash, while ``Heads`` and walks
    back read it through ``AUM.Parent``, as now.
    """

    def children(self, aum_hash: bytes) -> list[AUM]:
        return [a for a in super().children(aum_hash) if a.prev_aum_hash == aum_hash]


def _odd_parent(aums: list[AUM]) -> bool:
    """Whether some AUM has a previous hash of other than 32 bytes."""
    return any(a.prev_aum_hash and len(a.prev_aum_hash) != 32 for a in aums)


@pytest.fixture(scope="session")
def oracle_version(oracle: Oracle) -> str | None:
    """The oracle's ``tailscale.com`` version; ``None`` when it has no ``version`` op."""
    answer = oracle.ask("version")
    if "oracle_error" in answer:
        assert answer["oracle_error"] == "unknown op version", answer
        return None
    version: str = answer["tailscale_version"]
    return version


@pytest.fixture(scope="session")
def oracle_fs_byte_exact(oracle: Oracle, oracle_version: str | None) -> bool:
    """Whether the oracle's ``ChonkDir`` matches children byte for byte (before v1.102.3).

    Probed with a genesis and a child whose previous hash has a zero byte too
    many, cross-checked with the version.
    """
    g = signed(
        AUM(AUMKind.CHECKPOINT, state=State(None, (bytes(32),), (Key(1, 1, PUBS[0]),), 1, 1)),
        [PRIVS[0]],
    )
    odd = AUM(AUMKind.NO_OP, prev_aum_hash=g.hash + b"\x00", key_id=b"\x01")
    answer = oracle.ask("chain", fs=True, aums_hex=_hex([g, odd]), last_active_ancestor_b32=None)
    # Indexed under its truncated parent, the child fails to apply; matched
    # byte for byte, it is nobody's child and the genesis is the head.
    assert answer["ok"] is False, answer
    byte_exact = answer["fs_open"]["ok"]
    if oracle_version is not None and oracle_version.startswith("v"):
        assert byte_exact == bool(_SCANNING_CHONKDIR.fullmatch(oracle_version)), (
            oracle_version,
            answer,
        )
    return bool(byte_exact)


def _hex(aums: list[AUM]) -> list[str]:
    return [a.to_bytes().hex() for a in aums]


def _hint(h: bytes | None) -> str | None:
    return None if h is None else hash_to_text(h)


def _panicked(answer: dict[str, Any]) -> bool:
    err = answer.get("oracle_error")
    if err is None:
        return False
    assert str(err).startswith("panic:"), f"oracle failed: {err}"
    return True


def _open_refused_as_go_panics(store: Any) -> None:
    """Where Tailscale's Open panics, tka refuses with a StorageError naming an AUM."""
    with pytest.raises(StorageError, match=r"aum [A-Z2-7]{52}"):
        Authority.open(store)


# -- AUMs, signatures, Ed25519 ---------------------------------------------------------------


@budget(300)
@given(data=aum_bytes())
def test_aum_bytes_decode_hash_and_validate_alike(oracle: Oracle, data: bytes) -> None:
    answer = oracle.ask("aum", input_hex=data.hex())
    assert not _panicked(answer)
    event(f"decode_ok={answer['decode_ok']} valid={answer.get('static_validate_ok')}")
    aum_kind.check({"input_hex": data.hex(), **answer}, Context())


@budget(200)
@given(case=nks_cases())
def test_node_key_signatures_get_the_same_verdict(oracle: Oracle, case: NKSCase) -> None:
    request = {
        "authority_genesis_hex": case.genesis.to_bytes().hex(),
        "node_key_hex": case.node_key.hex(),
        "sig_hex": case.sig.hex(),
    }
    answer = oracle.ask("nks", **request)
    assert not _panicked(answer)
    event(f"decode_ok={answer['decode_ok']} authorized={answer['authorized']}")
    nks_kind.check({**request, **answer}, Context())


@budget(200)
@given(triple=ed25519_triples())
def test_both_ed25519_rules_agree(oracle: Oracle, triple: tuple[bytes, bytes, bytes]) -> None:
    public, message, signature = triple
    request = {
        "public_hex": public.hex(),
        "message_hex": message.hex(),
        "signature_hex": signature.hex(),
    }
    answer = oracle.ask("ed25519", **request)
    assert not _panicked(answer)
    event(f"zip215={answer['zip215_valid']} go={answer['go_stdlib_valid']}")
    ed25519_kind.check({**request, **answer}, Context())


@st.composite
def _resign_requests(draw: Any) -> dict[str, Any]:
    """An old signature (direct or credential under 0..16 rotations) and a key to re-sign with."""
    g = genesis_for(draw, [0])
    rot = draw(st.integers(0, 5))
    nks = [bytes([0x60 + i]) * 32 for i in range(20)]
    depth = draw(st.one_of(st.integers(0, 3), st.integers(13, 16)))
    if draw(st.booleans()):
        base = NodeKeySignature(SigKind.CREDENTIAL, key_id=PUBS[0], wrapping_pubkey=PUBS[rot])
    else:
        wrap = PUBS[rot] if draw(st.integers(0, 4)) else None
        base = NodeKeySignature(
            SigKind.DIRECT, pubkey=node_key_binary(nks[0]), key_id=PUBS[0], wrapping_pubkey=wrap
        )
    sig = base.with_signature(PRIVS[0].sign(base.sig_hash))
    for i in range(depth):
        r = NodeKeySignature(SigKind.ROTATION, pubkey=node_key_binary(nks[i + 1]), nested=sig)
        sig = r.with_signature(PRIVS[rot].sign(r.sig_hash))
    priv = PRIVS[rot if draw(st.integers(0, 4)) else draw(st.integers(0, 5))]
    node_key = nks[depth] if draw(st.integers(0, 6)) == 0 else nks[19]
    return {
        "priv_text": priv.text(),
        "priv_seed_hex": priv.seed.hex(),
        "node_key_hex": node_key.hex(),
        "old_sig_hex": sig.to_bytes().hex(),
        "genesis_hex": g.to_bytes().hex(),
    }


@budget(60)
@given(request=_resign_requests())
def test_resign_makes_the_same_bytes(oracle: Oracle, request: dict[str, Any]) -> None:
    ask = {k: v for k, v in request.items() if k != "priv_seed_hex"}
    answer = oracle.ask("resign", **ask)
    assert not _panicked(answer)
    event(f"ok={answer['ok']} authorized={answer.get('authorized')}")
    resign_kind.check({**request, **answer}, Context())


@budget(6)
@given(secret=st.binary(max_size=40), matching=st.booleans())
def test_disablement_kdf_and_check_agree(oracle: Oracle, secret: bytes, matching: bool) -> None:
    answer = oracle.ask("kdf", secret_hex=secret.hex())
    disablement_kind.check({"case_type": "kdf", "secret_hex": secret.hex(), **answer}, Context())
    value = bytes.fromhex(answer["kdf_hex"]) if matching else bytes(32)
    g = signed(
        AUM(AUMKind.CHECKPOINT, state=State(None, (value,), (Key(1, 1, PUBS[0]),), 1, 1)),
        [PRIVS[0]],
    )
    request = {"genesis_hex": g.to_bytes().hex(), "secret_hex": secret.hex()}
    answer = oracle.ask("valid_disablement", **request)
    disablement_kind.check(
        {
            "case_type": "valid_disablement",
            "disablement_values_hex": [value.hex()],
            **request,
            **answer,
        },
        Context(),
    )


# -- chains: Open on memory and on Tailscale's directory layout ------------------------------


def _check_chain(oracle: Oracle, case: ChainCase, fs_byte_exact: bool) -> None:
    request = {"aums_hex": _hex(case.aums), "last_active_ancestor_b32": _hint(case.hint)}
    answer = oracle.ask("chain", fs=True, **request)
    event("panic" if "oracle_error" in answer else f"ok={answer['ok']}")
    if _panicked(answer):
        for make in (MemoryStore, None):
            with tempfile.TemporaryDirectory() as tmp:
                store: Any = make() if make else FilesystemStore(tmp)
                store.commit_verified(case.aums)
                if case.hint is not None:
                    store.set_last_active_ancestor(case.hint)
                _open_refused_as_go_panics(store)
        return
    chain_kind.check({**request, **answer}, Context("memory"))
    fs_case = {**request, "heads_b32": answer["fs_heads_b32"], **answer["fs_open"]}
    if fs_byte_exact and _odd_parent(case.aums):
        # An older ChonkDir (see the module docstring): compare with a store
        # that matches children as it did.
        event("fs: children matched byte for byte")
        store = _ByteExactChildren()
        store.commit_verified(case.aums)
        if case.hint is not None:
            store.set_last_active_ancestor(case.hint)
        heads = sorted(a.hash_text for a in store.heads())
        assert heads == fs_case["heads_b32"]
        chain_kind.check_open(store, fs_case, "fs ")
        return
    chain_kind.check(fs_case, Context("fs"))


@budget(120)
@given(case=chain_cases())
def test_forked_chains_open_to_the_same_head(
    oracle: Oracle, oracle_fs_byte_exact: bool, case: ChainCase
) -> None:
    _check_chain(oracle, case, oracle_fs_byte_exact)


@budget(40)
@given(case=chain_cases(signed_chain=True))
def test_signed_forked_chains_open_to_the_same_head(
    oracle: Oracle, oracle_fs_byte_exact: bool, case: ChainCase
) -> None:
    _check_chain(oracle, case, oracle_fs_byte_exact)


@budget(100)
@given(case=inform_cases(), on_disk=st.booleans())
def test_inform_batches_move_the_head_alike(
    oracle: Oracle, case: InformCase, on_disk: bool
) -> None:
    request = {
        "genesis_hex": case.genesis.to_bytes().hex(),
        "steps": [{"batch_hex": _hex(b)} for b in case.batches],
    }
    answer = oracle.ask("inform", fs=on_disk, **request)
    assert not _panicked(answer)
    for step in answer["steps"]:
        event(f"step ok={step['ok']}")
    inform_kind.check({**request, **answer}, Context("fs" if on_disk else "memory"))


@budget(60)
@given(case=sync_cases())
def test_sync_exchanges_agree(oracle: Oracle, oracle_sync_rules: SyncRules, case: SyncCase) -> None:
    """Offers, MissingAUMs both ways and the heads after, under the oracle's generation."""
    sides = {
        name: {"aums_hex": _hex(c.aums), "last_active_ancestor_b32": _hint(c.hint)}
        for name, c in (("local", case.local), ("remote", case.remote))
    }
    answer = oracle.ask("sync_exchange", **sides)
    assert not _panicked(answer)
    assert "open_error" not in answer, (case.shape, answer)  # the generator makes both open
    event(f"sent={len(answer['local_missing_aums'].get('hashes_b32') or [])}")
    event(f"rules={oracle_sync_rules.name}")
    event("unrelated" if case.shape.startswith("unrelated") else "sharing a prefix")
    event("compacted" if "compacted" in case.shape else "not compacted")
    lengths = [int(n) for n in re.findall(r"\d+", case.shape.split(" compacted", 1)[0])]
    event(f"longest run {'>= 255' if max(lengths, default=0) >= 255 else '< 255'}")
    sync_kind.check(
        {"case_type": "exchange", **sides, **answer},
        Context("memory", sync_rules=oracle_sync_rules),
    )


# -- Tailscale's on-disk store, damaged -------------------------------------------------------


def _ours_on_disk(root: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        with FilesystemStore(root) as store:
            out["all_aums_b32"] = sorted(hash_to_text(h) for h in store.all_hashes())
    except StorageError:
        out["all_aums_b32"] = None
    try:
        with FilesystemStore(root) as store:
            a = Authority.open(store)
    except TKAError as exc:
        out.update(ok=False, error=exc)
        return out
    out.update(
        ok=True,
        head_b32=a.head.hash_text,
        oldest_ancestor_b32=b32(a.oldest_ancestor.hash),
        state=state_json(a.state),
    )
    return out


@budget(120)
@given(
    case=chain_cases(),
    go_writes=st.booleans(),
    damages=st.integers(1, 3),
    rng=st.randoms(use_true_random=False),
)
def test_damaged_store_directories_open_alike(
    oracle: Oracle,
    oracle_fs_byte_exact: bool,
    case: ChainCase,
    go_writes: bool,
    damages: int,
    rng: random.Random,
) -> None:
    # An older ChonkDir reads such chains otherwise (see the module docstring).
    assume(not (oracle_fs_byte_exact and _odd_parent(case.aums)))
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "chonk")
        if go_writes:
            done = oracle.ask(
                "fs_write",
                dir=root,
                aums_hex=_hex(case.aums),
                last_active_ancestor_b32=_hint(case.hint),
            )
            assert done.get("ok"), done
        else:
            with FilesystemStore(root) as store:
                for a in case.aums:
                    store.commit_verified([a])
                if case.hint is not None:
                    store.set_last_active_ancestor(case.hint)
        what = mutate_tree(root, rng, case.aums, damages)
        go = oracle.ask("fs_open", dir=root)
        ours = _ours_on_disk(root)
        event(
            "panic"
            if "oracle_error" in go
            else f"listed={go['all_aums_b32'] is not None} ok={go['ok']}"
        )
        for w in what:
            event(w)
        where = f"after {what}"
        if _panicked(go):
            assert ours["ok"] is False and isinstance(ours["error"], StorageError), where
            assert re.search(r"aum [A-Z2-7]{52}", str(ours["error"])), where
            return
        go_all = go["all_aums_b32"]
        assert ours["all_aums_b32"] == (None if go_all is None else sorted(set(go_all))), where
        assert ours["ok"] == go["ok"], (where, go.get("error"), ours.get("error"))
        if go["ok"]:
            for k in ("head_b32", "oldest_ancestor_b32", "state"):
                assert ours[k] == go[k], (where, k)


# -- through the command line ---------------------------------------------------------------

TKA = str(Path(sys.executable).with_name("tka"))


def _tka(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([TKA, *args], capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def test_what_tka_lock_writes_opens_in_go_to_the_same_head(oracle: Oracle, tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    key_a = _tka("lock", "--state-dir", a, "key").stdout.strip()
    key_b = _tka("lock", "--state-dir", b, "key").stdout.strip()
    _tka("lock", "--state-dir", a, "init", "--gen-disablements", "2", "--confirm", key_a)
    _tka("lock", "--state-dir", a, "add", key_b)
    _tka("lock", "--state-dir", a, "remove", "--no-re-sign", key_b)
    _tka("lock", "--state-dir", a, "add", key_b)
    status = json.loads(_tka("lock", "--state-dir", a, "status", "--json").stdout)
    go = oracle.ask("fs_open", dir=os.path.join(a, "tka"))
    assert go["ok"], go
    assert go["head_b32"] == status["Head"]
    assert len(go["all_aums_b32"]) == 4
    ours = _ours_on_disk(os.path.join(a, "tka"))
    assert {k: ours[k] for k in ("head_b32", "oldest_ancestor_b32", "state")} == {
        k: go[k] for k in ("head_b32", "oldest_ancestor_b32", "state")
    }
    trusted = sorted("tlpub:" + k["public"] for k in go["state"]["keys"])
    assert trusted == sorted([key_a, key_b])


def _signed_history() -> list[AUM]:
    """A genesis, key changes and a fork, all really signed by trusted keys."""
    g = signed(
        AUM(
            AUMKind.CHECKPOINT,
            state=State(None, (bytes(32),), (Key(1, 2, PUBS[0]), Key(1, 1, PUBS[1])), 3, 4),
        ),
        [PRIVS[0]],
    )
    add = signed(AUM(AUMKind.ADD_KEY, prev_aum_hash=g.hash, key=Key(1, 1, PUBS[2])), [PRIVS[1]])
    upd = signed(
        AUM(AUMKind.UPDATE_KEY, prev_aum_hash=add.hash, key_id=PUBS[2], votes=3), [PRIVS[0]]
    )
    # Siblings: the one with more votes wins over the lower hash.
    weak = signed(AUM(AUMKind.NO_OP, prev_aum_hash=upd.hash, key_id=b"w"), [PRIVS[1]])
    strong = signed(AUM(AUMKind.REMOVE_KEY, prev_aum_hash=upd.hash, key_id=PUBS[1]), [PRIVS[2]])
    return [g, add, upd, weak, strong]


def test_tka_audit_reads_a_directory_go_wrote_to_the_same_head(
    oracle: Oracle, tmp_path: Path
) -> None:
    aums = _signed_history()
    root = str(tmp_path / "chonk")
    assert oracle.ask(
        "fs_write", dir=root, aums_hex=_hex(aums), last_active_ancestor_b32=aums[0].hash_text
    )["ok"]
    go = oracle.ask("fs_open", dir=root)
    assert go["ok"], go
    report = json.loads(_tka("audit", root, "--json").stdout)
    assert report["verdict"] == "valid"
    assert report["head"] == go["head_b32"] == aums[-1].hash_text
    assert report["state"]["state_id1"] == go["state"]["state_id1"]
    got = [(k["key"], k["votes"]) for k in report["state"]["keys"]]
    want = [("tlpub:" + k["public"], k["votes"]) for k in go["state"]["keys"]]
    assert got == want


def test_tka_audit_fails_a_directory_go_cannot_open(oracle: Oracle, tmp_path: Path) -> None:
    aums = _signed_history()[:3]
    orphan = signed(AUM(AUMKind.NO_OP, prev_aum_hash=b"\x07" * 32), [PRIVS[0]])
    root = str(tmp_path / "chonk")
    # The hint names the genesis, but the genesis is not on a path from a
    # head through it (it is the walk's start), so Go sees two chains.
    assert oracle.ask(
        "fs_write",
        dir=root,
        aums_hex=_hex([aums[0], orphan]),
        last_active_ancestor_b32=aums[0].hash_text,
    )["ok"]
    go = oracle.ask("fs_open", dir=root)
    assert go["ok"] is False
    proc = _tka("audit", root, "--json", ok=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["verdict"] == "invalid"
    assert "cannot open" in report["reasons"][0]["text"]
