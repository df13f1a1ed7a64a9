"""The README's "Watch a tailnet" commands, run as written.

Each crontab line is split at ``&&``; ``cd DIR`` becomes the test's
directory, ``tailscale lock log --json --limit N > log.json`` is replaced
by exactly what Tailscale's CLI prints for the chain at that limit, and
every ``tka ...`` part runs through a shell, verbatim, with the installed
console script first on PATH.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_audit_watch import NAMES, PUBS, Chain

from tka.audit import load_pin, parse_policy
from tka.key import Key

ROOT = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).parent)


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Watch a tailnet", 1)[1].split("\n## ", 1)[0]


def _blocks() -> list[str]:
    return re.findall(r"```\n(.*?)```", _section(), flags=re.S)


def _cron_lines() -> list[str]:
    return [ln for b in _blocks() for ln in b.splitlines() if re.match(r"^[\d*]", ln)]


def _policy_text() -> str:
    (policy,) = [b for b in _blocks() if b.lstrip().startswith("{")]
    return policy


def _write_policy(where: Path) -> None:
    text = _policy_text().replace('"tlpub:...", "tlpub:..."', json.dumps(NAMES[:4])[1:-1])
    (where / "policy.json").write_text(text)
    parse_policy(json.loads(text))


def _run_line(line: str, where: Path, env: dict[str, str], chain: Chain | None) -> int:
    """Run one crontab line's command in *where*; the exit status of the last part."""
    command = line.split(None, 5)[5]  # past the five schedule fields
    status = 0
    for part in (p.strip() for p in command.split("&&")):
        if part.startswith("cd "):
            continue
        m = re.fullmatch(r"tailscale lock log --json --limit (\d+) > (\S+)", part)
        if m:
            assert chain is not None
            chain.log(where / m.group(2), limit=int(m.group(1)))
            continue
        assert part.startswith("tka "), part
        proc = subprocess.run(
            ["bash", "-c", part], cwd=where, env=env, capture_output=True, text=True, timeout=120
        )
        status = proc.returncode
        assert "Traceback" not in proc.stderr, proc.stderr
        if status:
            return status
    return status


def test_the_policy_shown_is_a_valid_policy(tmp_path: Path) -> None:
    _write_policy(tmp_path)


def test_the_hosted_tailscale_cron_line_runs_as_written(tmp_path: Path) -> None:
    (line,) = [ln for ln in _cron_lines() if "tailscale lock log" in ln]
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    _write_policy(tmp_path)
    chain = Chain()
    assert _run_line(line, tmp_path, env, chain) == 0
    pin = load_pin(str(tmp_path / "tailnet.pin"))
    assert pin is not None and pin.head == chain.head
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    chain.update(lambda b: b.add_key(Key.ed25519(PUBS[3], votes=2)), 0)
    assert _run_line(line, tmp_path, env, chain) == 0
    # A key outside the policy: the same line now fails.
    chain.update(lambda b: b.add_key(Key.ed25519(PUBS[5])), 0)
    assert _run_line(line, tmp_path, env, chain) == 1
    assert NAMES[5] in (tmp_path / "report.html").read_text()


def test_the_tka_serve_cron_line_runs_as_written(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from _server_harness import ServerProcess, tka_command

    (line,) = [ln for ln in _cron_lines() if "tka control log" in ln]
    tailnet = line.split("tka control log ", 1)[1].split()[0]
    token = tmp_path / "admin.token"
    store = f"sqlite:///{tmp_path}/control.db"
    env = {
        **os.environ,
        "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
        "TKA_ADMIN_TOKEN_FILE": str(token),
    }

    def run(*args: str) -> str:
        proc = subprocess.run(
            [*tka_command(), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout

    run("control", "admin-token", "--store", store, "--out", str(token))
    with ServerProcess(store, str(tmp_path)) as server:
        env["TKA_CONTROL_URL"] = server.url
        node = str(tmp_path / "node")
        key = run("lock", "--state-dir", node, "key").strip()
        node_key = run("lock", "--state-dir", node, "node-key").strip()
        run("control", "create-tailnet", tailnet)
        cred = str(tmp_path / "n1.json")
        run("control", "register", tailnet, node_key, "--nl-key", key, "--may-init", "--out", cred)
        run("lock", "--state-dir", node, "--control", server.url, "login", cred)
        run("lock", "--state-dir", node, "init", "--gen-disablements", "2", "--confirm", key)
        watch = tmp_path / "watch"
        watch.mkdir()
        (watch / "policy.json").write_text(
            _policy_text()
            .replace('"tlpub:...", "tlpub:..."', json.dumps(key))
            .replace('"min_trusted_keys": 2', '"min_trusted_keys": 1')
        )
        assert _run_line(line, watch, env, None) == 0
        assert (watch / "tailnet.pin").exists() and (watch / "report.html").exists()
        assert _run_line(line, watch, env, None) == 0  # unchanged: still passes
