"""Fixtures shared by the control-service tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _server_harness import PostgresProvider


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresProvider]:
    """A PostgreSQL database per test module (skips where none is configured)."""
    provider = PostgresProvider()
    yield provider
    provider.close()
