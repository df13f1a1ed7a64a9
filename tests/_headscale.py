"""Tailnet Lock on Headscale, as an operator sets it up: README commands, real clients.

:class:`HeadscaleStack` runs the README's "Tailnet Lock on Headscale" section
as written, line by line in a fresh folder: ``tka serve`` (SQLite) and
Headscale patched by ``integrations/headscale`` (SQLite, embedded DERP, no
outside DERP map), both on loopback, then any number of real ``tailscaled``
(:class:`~_tailscale.Tailscaled`) joined with Headscale pre-auth keys. The
only liberties taken with the README are the ones an operator takes too:
waiting for a service to listen before talking to it, and filling in the
placeholders (``hskey-auth-...``, ``tlpub:N1``) with real values.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from _tailscale import ClientBinaries, Tailscaled, wait_for

__all__ = ["HeadscaleStack", "readme_section"]

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Tailnet Lock on Headscale"

# Addresses the README's configuration uses. They sit below the ephemeral
# port range, so no other test's free port can take them.
HEADSCALE_URL = "http://127.0.0.1:8080"
TKA_URL = "http://127.0.0.1:8480"


def readme_section() -> tuple[list[str], str, list[str]]:
    """The section's three blocks: operator commands, ``headscale.yaml``, node commands."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else None]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S)
    shell = [body for lang, body in blocks if lang == ""]
    yaml = [body for lang, body in blocks if lang == "yaml"]
    assert len(shell) == 2 and len(yaml) == 1, "the section has 2 command blocks and 1 yaml"

    def lines(body: str) -> list[str]:
        return [ln.strip() for ln in body.splitlines() if ln.strip()]

    return lines(shell[0]), yaml[0], lines(shell[1])


def _port_of(line: str) -> int | None:
    m = re.search(r"--listen\s+127\.0\.0\.1:(\d+)", line)
    if m:
        return int(m.group(1))
    if "headscale" in line.lower() and line.rstrip("& ").endswith(" serve"):
        return 8080
    return None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class HeadscaleStack:
    """tka serve + patched Headscale + real clients, in *root*."""

    def __init__(self, root: Path, binaries: ClientBinaries) -> None:
        self.root = root
        self.binaries = binaries
        self.work = root / "operator"
        self.work.mkdir(parents=True)
        bindir = Path(sys.executable).parent
        self.env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
        # The README's reader names their clone of tka in TKA_SRC.
        self.env["TKA_SRC"] = str(ROOT)
        self.env.pop("TKA_CONTROL_URL", None)
        self.env.pop("TKA_ADMIN_TOKEN_FILE", None)
        self.services: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.nodes: dict[str, Tailscaled] = {}
        self.transcript: list[str] = []

    # -- the operator's side -----------------------------------------------------------

    def run_readme(self) -> None:
        """Start both services exactly as the README says."""
        for port in (8080, 8480, 9090, 50443):
            assert not _listening(port), f"port {port} is taken: the README's stack needs it"
        operator, yaml, _ = readme_section()
        (self.work / "headscale.yaml").write_text(yaml)
        for line in operator:
            self.shell(line)

    def shell(self, line: str) -> str:
        """Run one README line in the operator's shell (variables carried to the next line)."""
        self.transcript.append(line)
        if line.endswith("&"):
            command = line[:-1].strip()
            log = open(self.work / f"service-{len(self.services)}.log", "ab")  # noqa: SIM115
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=self.work,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            self.services.append((command, proc))
            port = _port_of(line)
            if port is not None:
                wait_for(
                    f"{command!r} to listen on {port}",
                    lambda: True if _listening(port) else self._service_died(proc, command),
                    60,
                )
            return ""
        env_file = self.work / ".env-after"
        # allexport: a plain `X=...` line sets X for the lines after it, as
        # in the operator's interactive shell.
        script = f"set -a\n{line}\nenv -0 > {shlex.quote(str(env_file))}\n"
        proc = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=self.work,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, f"{line!r} exited {proc.returncode}: {proc.stderr[-3000:]}"
        pairs = env_file.read_bytes().split(b"\0")
        self.env = dict(
            p.decode().split("=", 1) for p in pairs if b"=" in p and not p.startswith(b"BASH_FUNC")
        )
        return proc.stdout

    def _service_died(self, proc: subprocess.Popen[bytes], command: str) -> None:
        if proc.poll() is not None:
            logs = sorted(self.work.glob("service-*.log"))
            tail = logs[-1].read_text(errors="replace")[-3000:] if logs else ""
            raise AssertionError(f"{command!r} exited {proc.returncode}: {tail}")
        return None

    def headscale(self, *args: str) -> Any:
        """``$HEADSCALE -c headscale.yaml ARGS -o json``, parsed."""
        binary = self.env["HEADSCALE"]
        proc = subprocess.run(
            [binary, "-c", "headscale.yaml", *args, "-o", "json"],
            cwd=self.work,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"headscale {' '.join(args)}: {proc.stderr or proc.stdout}"
        return json.loads(proc.stdout)

    def preauth_key(self) -> str:
        """A new reusable Headscale pre-auth key for user 1."""
        key = self.headscale("preauthkeys", "create", "--user", "1", "--reusable", "-e", "24h")
        return str(key["key"])

    def front_request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request to tka serve's front API with Headscale's front token."""
        import http.client

        token = (self.work / "front.token").read_text().strip()
        conn = http.client.HTTPConnection("127.0.0.1", 8480, timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(
                method,
                f"/front/v1/tailnets/example{path}",
                body=data,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        return resp.status, json.loads(raw) if raw else None

    # -- the nodes ---------------------------------------------------------------------

    def add_node(self, name: str, auth_key: str) -> Tailscaled:
        """Start a ``tailscaled`` and join it with *auth_key* (the README's ``up`` line)."""
        _, _, node_lines = readme_section()
        up = next(ln for ln in node_lines if ln.startswith("tailscale up "))
        args = shlex.split(up.replace("hskey-auth-...", auth_key))[1:]
        node = Tailscaled(self.binaries, self.root, name)
        node.start()
        self.nodes[name] = node
        node.cli(*args, f"--hostname={name}", "--timeout=60s", timeout=90)
        return node

    def stop(self) -> None:
        """Stop every node, then Headscale and tka serve."""
        for node in self.nodes.values():
            node.stop()
        for _, proc in reversed(self.services):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    def logs(self) -> str:
        """The services' logs, for a failure message."""
        out = []
        for path in sorted(self.work.glob("service-*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
