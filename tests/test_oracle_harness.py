"""The oracle harness itself: found, made executable, or skipped with a reason."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from _oracle import Oracle, OracleBuildFailed, OracleUnavailable, find_oracle


def test_a_missing_oracle_is_reported_with_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TKA_ORACLE", str(tmp_path / "nowhere"))
    with pytest.raises(OracleUnavailable, match=r"tka-oracle not found at .*nowhere.*TKA_ORACLE"):
        find_oracle()


def test_an_oracle_without_its_exec_bit_runs_from_an_executable_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        real = find_oracle()
    except OracleUnavailable as exc:
        pytest.skip(str(exc))
    plain = tmp_path / "tka-oracle"
    shutil.copyfile(real, plain)
    plain.chmod(0o644)
    monkeypatch.setenv("TKA_ORACLE", str(plain))
    path = find_oracle()
    assert path != str(plain)
    assert os.stat(path).st_mode & stat.S_IXUSR
    oracle = Oracle(path)
    try:
        assert oracle.ask("ping") == {"pong": True}
        assert oracle.ask("kdf", secret_hex="00")["kdf_hex"] == (
            "5a4eaf14aa24e503d03a29930a17aa6ada38a4e38176362f7eb5a8cb1e665d93"
        )
    finally:
        oracle.close()


def test_without_go_the_oracle_is_unavailable_naming_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TKA_ORACLE", raising=False)
    monkeypatch.setenv("TKA_GO", str(tmp_path / "no-go-here"))
    with pytest.raises(OracleUnavailable, match=r"Go is not installed"):
        find_oracle()


def test_a_bad_tailscale_version_is_a_build_failure_not_a_skip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if shutil.which("go") is None:
        pytest.skip("Go is not installed: the oracle cannot be built here")
    monkeypatch.delenv("TKA_ORACLE", raising=False)
    monkeypatch.setenv("TKA_TAILSCALE_VERSION", "--not-a-version")
    with pytest.raises(OracleBuildFailed, match=r"not a Go module version"):
        find_oracle()
