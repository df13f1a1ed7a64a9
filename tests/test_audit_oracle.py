"""`tka audit` on TKA directories written by Tailscale's own code (the oracle, `fs_write`).

The verdict must agree with what Tailscale's ``tka.Open`` makes of the same
directory: a directory it opens audits valid at the same head; one it
refuses (an orphan AUM whose parent is not stored) is not valid. The
oracle is the session's (``_oracle.oracle_or_skip``: built from source,
skipped only where Go is absent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _oracle import Oracle, oracle_or_skip
from test_audit_watch import PUBS, Chain, tka

from tka.aum import AUM
from tka.key import Key


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return oracle_or_skip()


def _ask(oracle: Oracle, **req: Any) -> dict[str, Any]:
    op = req.pop("op")
    answer = oracle.ask(op, **req)
    assert "oracle_error" not in answer, answer
    return answer


def _go_dir(oracle: Oracle, where: Path, aums: list[AUM], hint: AUM) -> Path:
    _ask(
        oracle,
        op="fs_write",
        dir=str(where),
        aums_hex=[a.to_bytes().hex() for a in aums],
        last_active_ancestor_b32=hint.hash_text,
    )
    return where


def _all(chain: Chain) -> list[AUM]:
    return [a for h in chain.store.all_hashes() if (a := chain.store.get(h)) is not None]


def test_a_directory_written_by_tailscale_audits_valid_at_the_head_go_opens(
    oracle: Oracle, tmp_path: Path
) -> None:
    chain = Chain()
    rival = Chain(genesis=chain.genesis)
    chain.update(lambda b: b.add_key(Key.ed25519(PUBS[4])), 0)
    chain.authority.inform(chain.store, rival.update(lambda b: b.set_key_vote(PUBS[0], 2), 1, 2))
    chain.add_meta(3)
    path = _go_dir(oracle, tmp_path / "tka", _all(chain), chain.genesis)
    go = _ask(oracle, op="fs_open", dir=str(path))
    assert go["ok"], go
    proc = tka("audit", str(path), "--json", "--pin", str(tmp_path / "pin"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "valid" and doc["head"] == go["head_b32"] == chain.head
    assert len(doc["forks"]) == 1 and all(r["time"] for r in doc["history"])


def test_an_orphan_aum_fails_as_tailscales_open_fails(oracle: Oracle, tmp_path: Path) -> None:
    chain = Chain()
    chain.add_meta(3)
    aums = _all(chain)
    # Leave out one AUM in the middle: its child is stored without its parent.
    middle = next(a for a in aums if a.parent == chain.genesis.hash)
    kept = [a for a in aums if a.hash != middle.hash]
    path = _go_dir(oracle, tmp_path / "tka", kept, chain.genesis)
    go = _ask(oracle, op="fs_open", dir=str(path))
    assert not go["ok"], go
    proc = tka("audit", str(path), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "invalid" and doc["head"] is None
    orphan = next(a for a in kept if a.parent == middle.hash)
    assert any(orphan.hash_text in r["text"] for r in doc["reasons"]), doc["reasons"]
