"""Tailscale's conformance vectors, run through the library and the ``tka vectors`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tka.conformance import Context, run

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

CORE_KINDS = ["aum", "nks", "ed25519", "disablement", "resign", "authkey", "keys", "deeplink"]
ENGINE_KINDS = ["chain", "inform", "builder", "sync", "compaction", "tailchonk_fs"]


@pytest.mark.parametrize("kind", CORE_KINDS + ENGINE_KINDS)
def test_every_vector_of_a_kind_passes(kind: str) -> None:
    result = run([VECTORS], [kind])
    (res,) = result.kinds
    assert not res.unsupported
    assert res.passed > 0
    assert res.failed == 0, res.failures[:5]


@pytest.mark.parametrize("store", ["sqlite", "fs"])
@pytest.mark.parametrize("kind", ["chain", "inform", "sync", "compaction", "builder"])
def test_engine_vectors_pass_on_disk_backed_stores(kind: str, store: str) -> None:
    result = run([VECTORS], [kind], Context(store=store))
    (res,) = result.kinds
    assert res.failed == 0, res.failures[:5]
    assert res.passed > 0


def _tka(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("tka")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tka_cli.main"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=300, env={**os.environ}
    )


def test_runner_prints_one_line_per_kind_and_a_closing_line() -> None:
    proc = _tka("vectors", "--kind", "keys", "--kind", "deeplink", str(VECTORS))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("keys: ") and lines[0].endswith(" passed, 0 failed")
    assert lines[1].startswith("deeplink: ")
    assert lines[-1] == "52 passed, 0 failed"


def test_runner_counts_a_failing_case_and_exits_non_zero(tmp_path: Path) -> None:
    doc = json.loads((VECTORS / "keys.json").read_text())
    # Corrupt one expected value: the runner must report it as a failure.
    case = next(c for c in doc["cases"] if "public_cli_text" in c)
    case["public_cli_text"] = "tlpub:" + "00" * 32
    (tmp_path / "keys.json").write_text(json.dumps(doc))
    proc = _tka("vectors", str(tmp_path))
    assert proc.returncode == 1
    assert "1 failed" in proc.stdout.splitlines()[-1]
    assert "FAIL keys " in proc.stdout


def test_runner_counts_unsupported_kinds_as_failed(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(
        '{"format": "tka-vectors/1", "kind": "future_kind", "cases": [{"name": "a/b"}]}'
    )
    proc = _tka("vectors", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == "0 passed, 1 failed"
