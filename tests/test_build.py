"""``integrations/build.py``: the README's build commands, as written, and its pins."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _oracle import integrations_build

ROOT = Path(__file__).resolve().parent.parent


def _readme_build_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^python3 integrations/build\.py \w+", text, flags=re.M)


def test_the_readme_build_commands_print_where_each_build_is() -> None:
    if shutil.which("go") is None and not os.environ.get("TKA_GO"):
        pytest.skip("Go is not installed: nothing can be built here")
    lines = _readme_build_lines()
    assert sorted(line.split()[-1] for line in lines) == ["client", "headscale", "oracle"]
    for line in lines:
        proc = subprocess.run(line.split(), cwd=ROOT, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"{line}: {proc.stderr}"
        built = Path(proc.stdout.strip())
        assert built.exists(), f"{line} printed {built}, which is not there"
        if line.endswith("client"):
            assert (built / "tailscaled").is_file() and (built / "tailscale").is_file()
        else:
            assert os.access(built, os.X_OK)


def test_the_headscale_tailscale_version_is_the_one_headscale_requires() -> None:
    go = shutil.which("go") or os.environ.get("TKA_GO")
    if not go:
        pytest.skip("Go is not installed: Headscale's go.mod cannot be fetched")
    build = integrations_build()
    script = (ROOT / "integrations" / "headscale" / "build.sh").read_text()
    version = re.search(r"^HEADSCALE_VERSION=(\S+)$", script, flags=re.M)
    assert version, "build.sh pins no HEADSCALE_VERSION"
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"github.com/juanfont/headscale@{version.group(1)}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, GOTOOLCHAIN="local"),
    )
    assert proc.returncode == 0, proc.stderr
    go_mod = Path(json.loads(proc.stdout)["GoMod"]).read_text()
    required = re.search(r"^\s*tailscale\.com (\S+)", go_mod, flags=re.M)
    assert required and required.group(1) == build.HEADSCALE_TAILSCALE_VERSION


def test_a_version_that_is_not_one_is_refused_before_go_runs() -> None:
    build = integrations_build()
    for bad in ("1.2.3", "-v1.0.0", "v1.0.0 --x", "v1/../x"):
        with pytest.raises(build.BuildError, match="not a Go module version"):
            build.tailscale_version(bad)
