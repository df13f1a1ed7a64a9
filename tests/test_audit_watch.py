"""`tka audit` as a watchdog: pinned continuity, a policy, inputs as people have them.

Every check runs the installed console script on real files: the first run
records the pin, later runs must extend it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tka import ed25519
from tka.audit import AuditOutcome, audit_log, load_pin, read_source
from tka.audit.sources import UnreadableInput, read_capped
from tka.aum import AUM, hash_from_text
from tka.authority import Authority, Signer
from tka.builder import UpdateBuilder
from tka.bundle import Bundle
from tka.disablement import disablement_kdf
from tka.key import Key
from tka.lockjson import log_walk_storage, render_log
from tka.state import State
from tka.storage.memory import MemoryStore

TKA = str(Path(sys.executable).parent / "tka")
SEEDS = [bytes([i + 60]) * 32 for i in range(6)]
PUBS = [ed25519.public_from_seed(s) for s in SEEDS]
NAMES = ["tlpub:" + p.hex() for p in PUBS]
VALUES = (disablement_kdf(b"watch-1"), disablement_kdf(b"watch-2"))


def tka(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `tka` console script; never raises on a non-zero exit."""
    proc = subprocess.run(
        [TKA, *args], capture_output=True, timeout=120, input=stdin if stdin is not None else b""
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


class Chain:
    """A tailnet's authority in memory, and its `lock log --json` / bundle as files."""

    def __init__(self, keys: int = 3, seed_offset: int = 0, genesis: AUM | None = None) -> None:
        self.store = MemoryStore()
        if genesis is None:
            state = State(
                disablement_values=VALUES,
                keys=tuple(Key.ed25519(p) for p in PUBS[:keys]),
                state_id1=7 + seed_offset,
                state_id2=9,
            )
            self.authority, self.genesis = Authority.create(self.store, state, Signer((SEEDS[0],)))
        else:
            self.genesis = genesis
            self.authority = Authority.bootstrap(self.store, genesis)

    @property
    def head(self) -> str:
        return self.authority.head.hash_text

    def update(self, build: Callable[[UpdateBuilder], None], *signers: int) -> list[AUM]:
        b = UpdateBuilder(self.authority, Signer(tuple(SEEDS[i] for i in signers or (0,))))
        build(b)
        aums = b.finalize(self.store)
        self.authority.inform(self.store, aums)
        return aums

    def add_meta(self, n: int) -> None:
        """*n* updates that each change a key's metadata (any chain length, cheaply)."""
        for i in range(n):
            self.update(lambda b, i=i: b.set_key_meta(PUBS[1], {"n": str(i)}))  # type: ignore[misc]

    def log(self, path: Path, limit: int = 1000) -> str:
        aums = log_walk_storage(self.store, self.authority.head_hash, limit)
        path.write_text(render_log(aums, limit))
        return str(path)

    def bundle(self, path: Path, extra: list[AUM] | None = None) -> str:
        aums = [a for h in self.store.all_hashes() if (a := self.store.get(h)) is not None]
        path.write_bytes(Bundle(self.authority.head_hash, tuple(aums + (extra or []))).to_json())
        return str(path)


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


# -- pinned continuity --------------------------------------------------------------------


def test_first_run_records_the_pin_and_an_extension_passes_listing_every_change(
    tmp_path: Path,
) -> None:
    chain = Chain()
    pin = tmp_path / "tailnet.pin"
    first = tka("audit", chain.log(tmp_path / "log.json"), "--pin", str(pin), "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    doc = _json(first)
    assert doc["pin"]["status"] == "created" and doc["pin"]["updated"]
    recorded = load_pin(str(pin))
    assert recorded is not None and recorded.head == chain.head
    assert recorded.genesis == chain.genesis.hash_text and recorded.chain == (chain.head,)
    pinned = chain.head

    added = chain.update(lambda b: b.add_key(Key.ed25519(PUBS[3], votes=2)), 0)
    removed = chain.update(lambda b: b.remove_key(PUBS[2]), 1)
    reweighted = chain.update(lambda b: b.set_key_vote(PUBS[1], 3), 0, 1)
    proc = tka("audit", chain.log(tmp_path / "log.json"), "--pin", str(pin), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    p = _json(proc)["pin"]
    assert p["status"] == "extends" and p["pinned_head"] == pinned and p["new_head"] == chain.head
    assert [k["key"] for k in p["changes"]["keys_added"]] == [NAMES[3]]
    assert p["changes"]["keys_added"][0]["votes_after"] == 2
    assert [k["key"] for k in p["changes"]["keys_removed"]] == [NAMES[2]]
    assert p["changes"]["keys_reweighted"] == [
        {"key": NAMES[1], "votes_before": 1, "votes_after": 3, "meta_changed": False}
    ]
    since = p["aums_since"]
    assert [a["hash"] for a in since] == [a.hash_text for a in (*added, *removed, *reweighted)]
    assert [a["signers"] for a in since] == [[NAMES[0]], [NAMES[1]], [NAMES[0], NAMES[1]]]
    assert since[0]["keys_added"] == [NAMES[3]] and since[1]["keys_removed"] == [NAMES[2]]
    moved = load_pin(str(pin))
    assert moved is not None and moved.head == chain.head and len(moved.chain) == 4

    # The text report says the same to a person.
    chain.update(lambda b: b.add_key(Key.ed25519(PUBS[4])), 0)
    before = pin.read_bytes()
    text = tka("audit", chain.log(tmp_path / "log.json"), "--pin", str(pin), "--no-update")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "pin (" in text.stdout and "EXTENDS" in text.stdout
    assert f"key added: {NAMES[4]} (votes 1)" in text.stdout
    assert f"signed by {NAMES[0]}" in text.stdout and "result: PASS" in text.stdout
    assert pin.read_bytes() == before  # --no-update left it
    again = tka("audit", str(tmp_path / "log.json"), "--pin", str(pin), "--json")
    assert _json(again)["pin"]["status"] == "extends"
    same = tka("audit", str(tmp_path / "log.json"), "--pin", str(pin), "--json")
    assert same.returncode == 0 and _json(same)["pin"]["status"] == "unchanged"


def _refused(proc: subprocess.CompletedProcess[str], status: str, *heads: str) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = _json(proc)
    assert doc["pin"]["status"] == status, doc["pin"]
    assert doc["outcome"]["result"] == "fail"
    reason = " ".join(doc["pin"]["reasons"])
    for h in heads:
        assert h in reason, (h, reason)
    return reason


def test_a_rollback_behind_the_pin_fails_naming_both_heads(tmp_path: Path) -> None:
    chain = Chain()
    chain.add_meta(2)
    old_log = chain.log(tmp_path / "old.json")
    old_head = chain.head
    chain.add_meta(2)
    pin = str(tmp_path / "pin")
    assert tka("audit", chain.log(tmp_path / "new.json"), "--pin", pin).returncode == 0
    before = Path(pin).read_bytes()
    reason = _refused(
        tka("audit", old_log, "--pin", pin, "--json"), "rollback", old_head, chain.head
    )
    assert "2 AUM(s) behind" in reason
    assert Path(pin).read_bytes() == before  # a failing run never moves the pin


def test_a_rewritten_history_fails(tmp_path: Path) -> None:
    chain = Chain()
    chain.add_meta(1)
    shared = chain.head
    other = Chain(genesis=chain.genesis)
    for a in log_walk_storage(chain.store, chain.authority.head_hash)[::-1][1:]:
        other.authority.inform(other.store, [a])
    chain.add_meta(2)
    pin = str(tmp_path / "pin")
    assert tka("audit", chain.log(tmp_path / "a.json"), "--pin", pin).returncode == 0
    other.update(lambda b: b.add_key(Key.ed25519(PUBS[5])), 0)
    reason = _refused(
        tka("audit", other.log(tmp_path / "b.json"), "--pin", pin, "--json"),
        "rewritten",
        chain.head,
        other.head,
    )
    assert f"after {shared}" in reason


def test_a_chain_with_another_genesis_fails(tmp_path: Path) -> None:
    chain, impostor = Chain(), Chain(seed_offset=1)
    pin = str(tmp_path / "pin")
    assert tka("audit", chain.log(tmp_path / "a.json"), "--pin", pin).returncode == 0
    reason = _refused(
        tka("audit", impostor.log(tmp_path / "b.json"), "--pin", pin, "--json"),
        "other-genesis",
        chain.head,
        impostor.head,
    )
    assert impostor.genesis.hash_text in reason


def test_a_fork_that_abandoned_the_pinned_head_fails(tmp_path: Path) -> None:
    chain = Chain()
    rival = Chain(genesis=chain.genesis)
    chain.update(lambda b: b.add_key(Key.ed25519(PUBS[4])), 0)  # one vote
    pin = str(tmp_path / "pin")
    assert tka("audit", chain.bundle(tmp_path / "a.json"), "--pin", pin).returncode == 0
    pinned = chain.head
    # Another node, signing with two keys, makes a sibling: it wins the fork by votes.
    won = rival.update(lambda b: b.remove_key(PUBS[0]), 1, 2)
    chain.authority.inform(chain.store, won)
    assert chain.head == won[0].hash_text
    reason = _refused(
        tka("audit", chain.bundle(tmp_path / "b.json"), "--pin", pin, "--json"),
        "abandoned-fork",
        pinned,
        chain.head,
    )
    assert "won by votes" in reason
    # The lock log of the winner no longer holds the pinned head at all.
    _refused(
        tka("audit", chain.log(tmp_path / "c.json"), "--pin", pin, "--json"),
        "rewritten",
        pinned,
    )


def test_a_log_cut_before_the_pin_says_so_and_which_limit_reaches_it(tmp_path: Path) -> None:
    chain = Chain()
    chain.add_meta(5)
    pin = str(tmp_path / "pin")
    assert tka("audit", chain.log(tmp_path / "a.json"), "--pin", pin).returncode == 0
    pinned = chain.head
    chain.add_meta(60)  # the builder adds a checkpoint on the way
    proc = tka("audit", chain.log(tmp_path / "b.json", limit=50), "--pin", pin, "--json")
    reason = _refused(proc, "not-reached", pinned)
    assert _json(proc)["pin"]["suggested_limit"] == 51
    assert "--limit 51" in reason and "50 message(s)" in reason and "at least 51 AUM" in reason
    # A limit that reaches the pin: the part after it is verified from the pinned state.
    proc = tka("audit", chain.log(tmp_path / "c.json", limit=61), "--pin", pin, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = _json(proc)
    assert doc["verdict"] == "incomplete" and doc["outcome"]["result"] == "pass"
    assert doc["pin"]["status"] == "extends" and doc["pin"]["verified_from_pin"]
    assert doc["outcome"]["head"] == chain.head and len(doc["pin"]["aums_since"]) == 61
    # Once moved, a log of the default 50 reaches it again.
    chain.add_meta(3)
    proc = tka("audit", chain.log(tmp_path / "d.json", limit=50), "--pin", pin, "--json")
    assert proc.returncode == 0 and _json(proc)["pin"]["status"] == "extends"


def test_a_tampered_aum_after_the_pin_in_a_cut_log_fails(tmp_path: Path) -> None:
    chain = Chain()
    chain.add_meta(55)
    pin = str(tmp_path / "pin")
    assert tka("audit", chain.log(tmp_path / "a.json"), "--pin", pin).returncode == 0
    # An update signed by a key that is not trusted, spliced into a cut log.
    forged = UpdateBuilder(chain.authority, Signer((SEEDS[5],)))
    forged.add_key(Key.ed25519(PUBS[5]))
    aums = forged.finalize(chain.store)
    chain.store.commit_verified(list(aums))  # bypassing the checks, as a hostile server would
    path = tmp_path / "b.json"
    path.write_text(render_log(log_walk_storage(chain.store, aums[-1].hash, 20), 20))
    proc = tka("audit", str(path), "--pin", pin, "--json")
    assert proc.returncode == 1
    assert _json(proc)["pin"]["status"] == "invalid-after-pin"


def test_a_cut_log_cannot_start_a_pin(tmp_path: Path) -> None:
    chain = Chain()
    chain.add_meta(60)
    proc = tka("audit", chain.log(tmp_path / "a.json", limit=50), "--pin", str(tmp_path / "p"))
    assert proc.returncode == 1 and "rerun with a larger --limit" in proc.stdout
    assert not (tmp_path / "p").exists()


def test_a_damaged_pin_file_is_unreadable_input(tmp_path: Path) -> None:
    chain = Chain()
    pin = tmp_path / "pin"
    pin.write_text('{"format": "tka-pin/1", "head": "nope"}')
    proc = tka("audit", chain.log(tmp_path / "a.json"), "--pin", str(pin))
    assert proc.returncode == 3 and proc.stderr.startswith("tka: error: pin file")
    assert proc.stderr.count("\n") == 1


# -- policy --------------------------------------------------------------------------------


def test_policy_violations_name_the_key_or_value(tmp_path: Path) -> None:
    chain = Chain(keys=2)
    chain.update(lambda b: b.add_key(Key.ed25519(PUBS[4])), 0)
    chain.update(lambda b: b.add_key(Key.ed25519(PUBS[5])), 1)
    chain.update(lambda b: b.remove_key(PUBS[5]), 0)
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "trusted_keys": NAMES[:2],
                "min_trusted_keys": 4,
                "min_disablement_values": 3,
                "genesis": chain.genesis.hash_text,
            }
        )
    )
    proc = tka("audit", chain.log(tmp_path / "log.json"), "--policy", str(policy), "--json")
    assert proc.returncode == 1
    doc = _json(proc)
    assert doc["verdict"] == "valid" and doc["outcome"]["result"] == "fail"
    violations = doc["policy"]["violations"]
    by_rule = {(v["rule"], v["key"]) for v in violations}
    assert by_rule == {
        ("trusted_keys", NAMES[4]),
        ("trusted_keys", NAMES[5]),
        ("min_trusted_keys", None),
        ("min_disablement_values", None),
    }
    texts = " ".join(v["text"] for v in violations)
    assert f"key {NAMES[4]} is trusted but not in the policy's trusted_keys" in texts
    assert f"signed by {NAMES[1]}" in texts  # who brought PUBS[5] in
    assert "3 trusted key(s) at the head, the policy requires at least 4" in texts
    assert "2 disablement value(s), the policy requires at least 3" in texts
    text = tka("audit", str(tmp_path / "log.json"), "--policy", str(policy))
    assert "policy (" in text.stdout and "VIOLATED" in text.stdout
    assert f"reason: policy: key {NAMES[4]}" in text.stdout

    # TOML too; a policy that holds passes.
    toml = tmp_path / "policy.toml"
    toml.write_text(
        "trusted_keys = [" + ", ".join(f'"{n}"' for n in NAMES) + "]\nmin_trusted_keys = 3\n"
    )
    ok = tka("audit", str(tmp_path / "log.json"), "--policy", str(toml), "--json")
    assert ok.returncode == 0 and _json(ok)["policy"]["ok"], ok.stdout + ok.stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"trusted_key": []}', "unknown field 'trusted_key'"),
        ('{"min_trusted_keys": "2"}', "min_trusted_keys must be a whole number"),
        ('{"min_trusted_keys": true}', "min_trusted_keys must be a whole number"),
        ('{"trusted_keys": ["tlpub:zz"]}', "trusted_keys[0]"),
        ("[1, 2]", "expected an object"),
        ("{", "not valid JSON"),
    ],
)
def test_a_bad_policy_is_bad_usage(tmp_path: Path, content: str, needle: str) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(content)
    proc = tka("audit", Chain().log(tmp_path / "log.json"), "--policy", str(policy))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and proc.stderr.count("\n") == 1


# -- inputs and exit codes -----------------------------------------------------------------


def test_standard_input_bom_and_utf16_are_read(tmp_path: Path) -> None:
    chain = Chain()
    text = Path(chain.log(tmp_path / "log.json")).read_text()
    for data in (
        text.encode(),
        b"\xef\xbb\xbf" + text.encode(),
        text.encode("utf-16"),  # with its BOM, as PowerShell 5's '>' writes it
    ):
        proc = tka("audit", "-", "--json", stdin=data)
        assert proc.returncode == 0, proc.stderr
        assert _json(proc)["head"] == chain.head
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert tka("audit", str(tmp_path / "bom.json")).returncode == 0


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: str(p / "missing.json"), "no such file"),
        (lambda p: (p / "x.json").write_bytes(b"\xff\x00garbage") and str(p / "x.json"), "UTF-8"),
        (lambda p: (p / "y.json").write_text("not json") and str(p / "y.json"), "not JSON"),
        (lambda p: (p / "z.json").write_text("") or str(p / "z.json"), "empty"),
    ],
)
def test_unreadable_input_exits_3_with_one_line(
    tmp_path: Path, make: Callable[[Path], str], needle: str
) -> None:
    proc = tka("audit", make(tmp_path))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert needle in proc.stderr and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_inputs_are_size_capped(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(64 * 1024 * 1024 + 1)  # sparse: cheap to make
    proc = tka("audit", str(big))
    assert proc.returncode == 3 and "larger than the 64 MiB limit" in proc.stderr
    import io

    with pytest.raises(UnreadableInput, match="larger than"):
        read_capped(io.BytesIO(b"x" * 11), "stdin", cap=10)


def test_bad_usage_exits_2() -> None:
    proc = tka("audit", "x.json", "--no-update")
    assert proc.returncode == 2 and "--no-update needs --pin" in proc.stderr
    assert tka("audit", "x.json", "--frobnicate").returncode == 2


def test_a_tampered_log_is_refused_with_exit_1(tmp_path: Path) -> None:
    chain = Chain()
    chain.add_meta(2)
    doc = json.loads(Path(chain.log(tmp_path / "log.json")).read_text())
    doc["Messages"].pop(1)
    (tmp_path / "log.json").write_text(json.dumps(doc))
    proc = tka("audit", str(tmp_path / "log.json"), "--json")
    assert proc.returncode == 1 and _json(proc)["verdict"] == "invalid"


def test_a_tka_directory_with_an_orphan_aum_is_not_valid(tmp_path: Path) -> None:
    from tka.storage.fs import FilesystemStore, encode_entry

    path = tmp_path / "tka"
    store = FilesystemStore(path)
    state = State(disablement_values=VALUES, keys=(Key.ed25519(PUBS[0]), Key.ed25519(PUBS[1])))
    authority, _ = Authority.create(store, state, Signer((SEEDS[0],)))
    b = UpdateBuilder(authority, Signer((SEEDS[0],)))
    b.add_key(Key.ed25519(PUBS[2]))
    b.add_key(Key.ed25519(PUBS[3]))
    first, second = b.finalize(store)
    authority.inform(store, [first, second])
    store.close()
    good = tka("audit", str(path), "--json")
    assert good.returncode == 0 and _json(good)["history"][0]["time"] is not None
    # Remove the middle AUM's file: its child is now an orphan.
    name = first.hash_text
    os.remove(path / name[:2] / name)
    assert encode_entry  # the layout is Tailscale's, see tka.storage.fs
    proc = tka("audit", str(path), "--json")
    assert proc.returncode == 1, proc.stdout
    doc = _json(proc)
    assert doc["verdict"] == "invalid"
    assert any(second.hash_text in r["text"] for r in doc["reasons"])


def test_progress_is_quiet_when_not_a_terminal(tmp_path: Path) -> None:
    chain = Chain()
    chain.add_meta(3)
    proc = tka("audit", chain.log(tmp_path / "log.json"))
    assert proc.returncode == 0 and proc.stderr == ""


def test_outcome_of_a_plain_audit_matches_the_report() -> None:
    chain = Chain()
    report = audit_log(render_log(log_walk_storage(chain.store, chain.authority.head_hash)))
    outcome = AuditOutcome(report)
    assert outcome.ok and outcome.exit_code == 0 and outcome.head == chain.head
    assert read_source  # the reader is public for library users


# -- the --help examples, run as written ----------------------------------------------------


def test_the_help_examples_run_as_written(tmp_path: Path) -> None:
    from tka.storage.fs import FilesystemStore

    help_text = tka("audit", "--help").stdout
    examples = help_text.split("Examples:", 1)[1].split("Options:", 1)[0]
    lines = [ln.split("  #", 1)[0].strip() for ln in examples.splitlines() if ln.strip()]
    assert len(lines) == 5, lines
    chain = Chain()
    chain.log(tmp_path / "log.json")
    chain.bundle(tmp_path / "node1-export.json")
    (tmp_path / "policy.json").write_text(json.dumps({"trusted_keys": NAMES[:3]}))
    store = FilesystemStore(tmp_path / "tka-profiles" / "1a2b")
    store.commit_verified([a for h in chain.store.all_hashes() if (a := chain.store.get(h))])
    store.set_last_active_ancestor(chain.genesis.hash)
    store.close()
    env = {**os.environ, "PATH": str(Path(TKA).parent) + os.pathsep + os.environ["PATH"]}
    for line in lines:
        stdin = None
        if line.startswith("tailscale lock log"):
            # What Tailscale's CLI prints, piped in as the example pipes it.
            producer, line = (p.strip() for p in line.split("|", 1))
            stdin = (tmp_path / "log.json").read_text()
            assert producer == "tailscale lock log --json --limit 1000"
        proc = subprocess.run(
            ["bash", "-c", line],
            cwd=tmp_path,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
    assert (tmp_path / "report.html").exists() and (tmp_path / "tailnet.pin").exists()


def test_a_long_chain_shows_a_progress_bar_at_a_terminal_only(tmp_path: Path) -> None:
    import pty
    import select

    chain = Chain()
    chain.add_meta(1100)
    log = chain.log(tmp_path / "log.json", limit=5000)

    def stderr_at_a_terminal(*extra: str) -> str:
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [TKA, "audit", log, *extra], stdout=subprocess.DEVNULL, stderr=slave
        )
        os.close(slave)
        out = b""
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the pty closes when the process exits
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=60) == 0
        os.close(master)
        return out.decode(errors="replace")

    assert "verifying AUMs" in stderr_at_a_terminal()
    assert stderr_at_a_terminal("--quiet") == ""
    assert tka("audit", log).stderr == ""  # not a terminal: quiet


def test_a_pin_that_cannot_be_written_is_exit_3(tmp_path: Path) -> None:
    proc = tka("audit", Chain().log(tmp_path / "log.json"), "--pin", str(tmp_path / "no/pin"))
    assert proc.returncode == 3 and "cannot write the pin file" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_json_output_has_the_documented_keys(tmp_path: Path) -> None:
    from tka import audit as audit_module

    chain = Chain()
    policy = tmp_path / "p.json"
    policy.write_text("{}")
    args = ("audit", chain.log(tmp_path / "l.json"), "--json", "--pin", str(tmp_path / "pin"))
    doc = _json(tka(*args, "--policy", str(policy)))
    assert doc["format"] == "tka-audit/1"
    documented = audit_module.__doc__ or ""
    for key in doc:
        assert f"``{key}``" in documented, key
    for section in ("outcome", "pin", "policy"):
        for key in doc[section]:
            assert f'"{key}"' in documented or f"``{key}``" in documented, (section, key)
    assert set(doc["outcome"]) == {"result", "exit_code", "reasons", "head", "notes"}
    assert doc["outcome"] == {
        "result": "pass",
        "exit_code": 0,
        "reasons": [],
        "head": chain.head,
        "notes": [f"pin recorded at {chain.head} in {tmp_path / 'pin'}"],
    }


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.integers(min_value=0, max_value=60),
    after=st.integers(min_value=0, max_value=60),
    limit=st.integers(min_value=1, max_value=130),
)
def test_a_pinned_log_passes_exactly_when_its_limit_reaches_the_pin(
    tmp_path: Path, before: int, after: int, limit: int
) -> None:
    """Library-level: any chain, any pin position, any --limit."""
    from tka.audit import Source, run_audit

    chain = Chain()
    chain.add_meta(before)
    pin = tmp_path / f"pin-{before}-{after}-{limit}"
    full = render_log(log_walk_storage(chain.store, chain.authority.head_hash, 10_000), 10_000)
    assert run_audit(Source("full", "lock-log", full), pin_path=str(pin)).ok
    chain.add_meta(after)
    distance = len(log_walk_storage(chain.store, chain.authority.head_hash, 10_000)) - len(
        log_walk_storage(chain.store, hash_from_text(load_pin(str(pin)).head), 10_000)  # type: ignore[union-attr]
    )
    cut = render_log(log_walk_storage(chain.store, chain.authority.head_hash, limit), limit)
    outcome = run_audit(Source("cut", "lock-log", cut), pin_path=str(pin), update_pin=False)
    assert outcome.pin is not None
    # The log reaches the pin when it holds the pinned head or the AUM right after it.
    assert outcome.ok == (limit >= distance), (outcome.pin.status, outcome.reasons)
    if outcome.ok:
        assert outcome.head == chain.head
        assert len(outcome.pin.aums_since) == distance
    else:
        assert outcome.pin.status == "not-reached"
        assert outcome.pin.suggested_limit is not None
        assert limit < outcome.pin.suggested_limit <= distance


def test_the_genesis_rule_is_checked_against_the_pin_when_the_log_is_cut(tmp_path: Path) -> None:
    chain = Chain()
    pin = str(tmp_path / "pin")
    assert tka("audit", chain.log(tmp_path / "a.json"), "--pin", pin).returncode == 0
    chain.add_meta(60)
    cut = chain.log(tmp_path / "cut.json", limit=61)
    right, wrong = tmp_path / "right.json", tmp_path / "wrong.json"
    right.write_text(json.dumps({"genesis": chain.genesis.hash_text}))
    impostor = Chain(seed_offset=5).genesis.hash_text
    wrong.write_text(json.dumps({"genesis": impostor}))
    # The cut log never shows its genesis; the pin's stands for it.
    proc = tka("audit", cut, "--pin", pin, "--policy", str(wrong), "--no-update", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = _json(proc)
    assert doc["verdict"] == "incomplete" and doc["pin"]["status"] == "extends"
    [violation] = doc["policy"]["violations"]
    assert violation["rule"] == "genesis" and violation["aum"] == chain.genesis.hash_text
    assert "cut short" in violation["text"] and impostor in violation["text"]
    proc = tka("audit", cut, "--pin", pin, "--policy", str(right), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _json(proc)["policy"]["violations"] == []


def test_a_genesis_rule_that_cannot_be_checked_is_not_met() -> None:
    from tka.audit.policy import _genesis_violations

    [violation] = _genesis_violations("G" * 52, None, None)
    assert violation.rule == "genesis" and "could not be checked" in violation.text
    assert _genesis_violations("G" * 52, None, "G" * 52) == []
    assert _genesis_violations("G" * 52, "G" * 52, None) == []
