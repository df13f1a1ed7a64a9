"""The real Tailscale client, built from ``tailscale.com`` at the pinned version, runs here.

The foundation of the real-client tests (Headscale's end-to-end tests use
the same builds): one ``tailscaled`` on loopback, asked through the real
``tailscale`` CLI. Skipped only where Go is absent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _oracle import integrations_build
from _tailscale import Tailscaled, client_or_skip


@pytest.fixture(scope="module")
def daemon() -> Iterator[Tailscaled]:
    binaries = client_or_skip()
    # Unix socket paths are short (108 bytes): a short temporary folder.
    with (
        tempfile.TemporaryDirectory(prefix="tsd-") as root,
        Tailscaled(binaries, Path(root), "n1") as d,
    ):
        yield d


def test_tailscale_version_is_the_version_built(daemon: Tailscaled) -> None:
    expected = integrations_build().tailscale_version(variable="TKA_CLIENT_VERSION").lstrip("v")
    first_line = daemon.cli("version").stdout.splitlines()[0]
    assert first_line == expected


def test_the_daemon_reports_needs_login_before_any_control_server(daemon: Tailscaled) -> None:
    status = daemon.json("status", "--json")
    assert status["BackendState"] == "NeedsLogin"
    assert status["Version"].startswith(
        integrations_build().tailscale_version(variable="TKA_CLIENT_VERSION").lstrip("v")
    )


def test_lock_status_on_a_node_without_lock_says_disabled(daemon: Tailscaled) -> None:
    text = daemon.cli("lock", "status").stdout
    assert "Tailnet Lock is NOT enabled" in text
    doc = daemon.json("lock", "status", "--json")
    assert doc == {"SchemaVersion": "1", "Enabled": False}
