"""`tka audit --html`: one self-contained page, rendered in a real headless Chromium.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it when it
is missing); the test is skipped only where it cannot be found at all.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from test_audit_watch import NAMES, PUBS, Chain, tka

from tka.aum import AUM
from tka.key import Key

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) into rows of pixel bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        f, cur = line[0], bytearray(line[1:])
        for i in range(stride):
            a = cur[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                cur[i] = (cur[i] + a) & 0xFF
            elif f == 2:
                cur[i] = (cur[i] + b) & 0xFF
            elif f == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 0xFF
        rows.append(bytes(cur))
        prev = cur
    return width, channels, rows


def _dom_text(dom: str) -> str:
    body = re.sub(r"<style.*?</style>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def _forked_chain(tmp_path: Path) -> tuple[Chain, str, AUM]:
    chain = Chain()
    rival = Chain(genesis=chain.genesis)
    chain.update(lambda b: b.add_key(Key.ed25519(PUBS[4])), 0)
    won = rival.update(lambda b: b.set_key_vote(PUBS[0], 2), 1, 2)
    chain.authority.inform(chain.store, won)
    pin = str(tmp_path / "pin")
    assert tka("audit", chain.bundle(tmp_path / "first.json"), "--pin", pin).returncode == 0
    chain.update(lambda b: b.add_key(Key.ed25519(PUBS[3])), 0)
    return chain, pin, won[0]


def test_the_html_report_is_self_contained_and_shows_the_verdict_in_chromium(
    tmp_path: Path,
) -> None:
    chain, pin, winner = _forked_chain(tmp_path)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"trusted_keys": NAMES[:4], "min_disablement_values": 2}))
    page = tmp_path / "report.html"
    proc = tka(
        "audit",
        chain.bundle(tmp_path / "now.json"),
        "--pin",
        pin,
        "--policy",
        str(policy),
        "--html",
        str(page),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = page.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch, no scripts.
    for needle in ("http://", "https://", "<script", "<link", "src=", "url(", "@import"):
        assert needle not in text, needle

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    seen = _dom_text(dom.stdout)
    assert f"PASS: chain valid, pin extends, policy ok Head: {chain.head}" in seen
    assert "Timeline of AUMs" in seen and "Trusted keys over time" in seen
    assert f"{winner.hash_text} won by votes" in seen
    assert "key added: " + NAMES[3] in seen  # the change since the pin
    assert "fork" in seen and "warning" in seen

    shot = tmp_path / "shot.png"
    size = "--window-size=1200,900"
    run = _chromium(tmp_path, f"--screenshot={shot}", size, "--hide-scrollbars", page.as_uri())
    assert run.returncode == 0 and shot.exists(), run.stderr
    width, channels, rows = _png_pixels(shot.read_bytes())
    colors = {row[i : i + 3] for row in rows[::7] for i in range(0, width * channels, channels * 5)}
    assert len(colors) > 20, "the screenshot is blank"
    # The verdict banner is at the top, in the pass colour (#1f7a3d).
    top = rows[40]
    banner = {top[i : i + 3] for i in range(0, width * channels, channels)}
    assert bytes((0x1F, 0x7A, 0x3D)) in banner


def test_a_failing_audit_page_leads_with_fail_and_the_reasons(tmp_path: Path) -> None:
    chain = Chain()
    old = chain.log(tmp_path / "old.json")
    chain.add_meta(2)
    pin = str(tmp_path / "pin")
    assert tka("audit", chain.log(tmp_path / "new.json"), "--pin", pin).returncode == 0
    page = tmp_path / "report.html"
    proc = tka("audit", old, "--pin", pin, "--html", str(page))
    assert proc.returncode == 1
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    seen = _dom_text(dom.stdout)
    assert seen.index("FAIL: chain valid, pin rollback") < seen.index("Timeline of AUMs")
    assert f"pin: rollback: the new head {chain.genesis.hash_text}" in seen
    assert "<script" not in page.read_text()
