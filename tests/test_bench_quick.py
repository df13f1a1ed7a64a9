"""The benchmark suite runs end to end (``--quick``: whether it runs, not how fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench" / "data"

WORKLOADS = [
    "AUMUnserializeHash/update",
    "AUMUnserializeHash/checkpoint",
    "NodeKeyAuthorized/direct",
    "NodeKeyAuthorized/rotation-2deep",
    "Verify/forged/zip215",
    "Verify/forged/go-stdlib",
    "Verify/mixed-order-key/zip215",
    "Verify/mixed-order-key/go-stdlib",
    "Admission/cached-decision",
    "Admission/evaluate-10000",
    "Admission/head-change-add-key-10000",
    "Admission/head-change-remove-key-10000",
    "Open/mem-1000",
    "Open/mem-1990",
    "Open/fs-1000",
    "Open/fs-1990",
    "Open/sqlite-1000",
    "Open/sqlite-1990",
    "Open/mem-per-AUM-growth",
    "Open/fs-per-AUM-growth",
    "Open/sqlite-per-AUM-growth",
    "Open/mem-1990-peak-memory",
    "Inform1000",
    "MissingAUMs/ahead-for-behind",
    "MissingAUMs/behind-for-ahead",
    "DisablementKDF",
    "Front/state-10000",
    *(
        f"Server/{kind}-10000/{engine}"
        for engine in ("sqlite", "postgres")
        for kind in (
            "map",
            "map-poll",
            "sync-offer",
            "bootstrap",
            "front-sync-offer",
            "catch-up",
            "front-catch-up",
        )
    ),
    "CLI/version-startup",
    "CLI/status-startup",
]
KEYS = {"ours_s", "go_s", "limit_s", "ratio_go", "ratio_limit", "target", "met"}


def test_quick_bench_writes_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    # A workload that cannot run here (PostgreSQL rows without a server) says why.
    assert sorted([*doc["workloads"], *doc["skipped"]]) == sorted(WORKLOADS)
    assert all(isinstance(why, str) and why for why in doc["skipped"].values())
    for name, row in doc["workloads"].items():
        assert set(row) >= KEYS, name
        assert isinstance(row["ours_s"], float) and row["ours_s"] > 0, name
        assert row["met"] in (True, False, None), name
    # The table on stdout has a row per workload.
    for name in WORKLOADS:
        assert name in proc.stdout, name
