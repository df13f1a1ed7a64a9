"""Fixtures shared by the control-service tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _server_harness import PostgresProvider

from tka.control.store import ControlStore, open_store


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresProvider]:
    """A PostgreSQL database per test module (skips where none is configured)."""
    provider = PostgresProvider()
    yield provider
    provider.close()


@pytest.fixture(params=["sqlite", "postgres"])
def control_store(
    request: pytest.FixtureRequest, tmp_path: Path, pg: PostgresProvider
) -> Iterator[ControlStore]:
    """A fresh control store, once on SQLite and once on PostgreSQL (skipped where none runs)."""
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/control.db")
    else:
        if pg.unavailable:
            pytest.skip(f"PostgreSQL: {pg.unavailable}")
        s = open_store(pg.new_database())
    yield s
    s.close()
