"""What reading a node's state loads: heavy modules stay off the path of 'tka lock status'.

A structural check in a fresh interpreter, not a timing: each module named
here costs milliseconds of start-up (dataclasses pulls in inspect, ast, dis
and tokenize; the crypto libraries load shared objects), and 'tka lock
status' on an initialized node needs none of them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The modules 'tka lock status' imports to read a node and print its status
# (tka_cli.fast_path answers it before click loads).
STATUS_PATH = (
    "tka_cli.fast_path",
    "tka_cli.status_text",
    "tka.statedir",
    "tka.chain",
    "tka.storage.fs",
)

KEPT_OFF = ("dataclasses", "inspect", "click", "threading", "nacl", "cryptography")


def _loaded_after(*modules: str) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    # -I: no user site, no PYTHON* variables, no current directory on the path,
    # so nothing but the modules themselves decides what gets loaded.
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout))


@pytest.fixture(scope="module")
def status_modules() -> set[str]:
    return _loaded_after(*STATUS_PATH)


@pytest.mark.parametrize("heavy", KEPT_OFF)
def test_reading_a_node_does_not_import(heavy: str, status_modules: set[str]) -> None:
    assert heavy not in status_modules, f"{heavy} is imported by {', '.join(STATUS_PATH)}"


def test_the_check_sees_what_it_looks_for(status_modules: set[str]) -> None:
    # Guards against a probe that silently imports nothing: the modules
    # themselves, and a module the verification path does load, are seen.
    assert set(STATUS_PATH) <= status_modules
    assert "tka.ed25519" in _loaded_after("tka.authority")
