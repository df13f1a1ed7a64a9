#!/usr/bin/env python3
"""Build Tailscale's and Headscale's Go programs the tests talk to, into a cache.

tka's claim is that it agrees with Tailscale's own code. The tests check it
against programs built here from Tailscale's published Go modules, not
against binaries that happen to lie beside a checkout:

``oracle``
    ``integrations/tailscale/cmd/tka-oracle``: Tailscale's ``tka`` package as
    a JSON-lines program (see ``integrations/tailscale/README.md``).
``client``
    The real ``tailscaled`` and ``tailscale`` (``tailscale.com/cmd/...``).
``headscale``
    Headscale at the version ``integrations/headscale/build.sh`` pins, with
    the patch series in ``integrations/headscale/patches/`` applied.

Each build lands in ``$TKA_BUILD_CACHE`` (default: the user's cache
directory, ``~/.cache/tka-build``), in a folder named by a digest of
everything that decides its output (the sources, the patches, the Tailscale
version, the Go version), so a second run reuses it and a changed input
rebuilds. Builds are made in a temporary folder and renamed into place, so an
interrupted build never leaves a half-written binary; a lock file serialises
concurrent builds of the same thing (pytest-xdist workers ask at once).

``TKA_TAILSCALE_VERSION=v1.x.y`` (or ``--tailscale-version``) builds the
oracle and the client against another ``tailscale.com`` release: the module
is copied, its requirement rewritten and ``go.sum`` completed through the Go
module proxy. Needs Go (``go`` on PATH or ``$TKA_GO``) and network access to
the module proxy for the first build of each version.

Usage::

    python3 integrations/build.py oracle            # prints the oracle's path
    python3 integrations/build.py client            # prints the folder holding both binaries
    python3 integrations/build.py headscale         # prints the patched headscale's path
    python3 integrations/build.py --tailscale-version v1.101.0-pre oracle

Only the standard library is used, so CI can run it before installing tka.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "HEADSCALE_TAILSCALE_VERSION",
    "PINNED_TAILSCALE_VERSION",
    "BuildError",
    "GoUnavailable",
    "build_client",
    "build_headscale",
    "build_oracle",
    "cache_root",
    "find_go",
    "tailscale_version",
]

HERE = Path(__file__).resolve().parent
# This file: the build recipe, part of every build's key (a changed recipe rebuilds).
RECIPE = Path(__file__).resolve()
TAILSCALE_MODULE_DIR = HERE / "tailscale"
HEADSCALE_DIR = HERE / "headscale"

# The tailscale.com version integrations/tailscale/go.mod pins; the default
# for every build and what CI's main run tests against.
PINNED_TAILSCALE_VERSION = "v1.102.5"

# The tailscale.com version Headscale's go.mod requires at the version
# integrations/headscale pins (a pre-release tag): CI runs the differential
# suite against it as well. tests/test_build.py checks it against that go.mod.
HEADSCALE_TAILSCALE_VERSION = "v1.101.0-pre"

# One build of tailscaled takes about three minutes on two cores; anything
# past this is a hang, and the caller gets an error instead of waiting forever.
BUILD_TIMEOUT_S = 30 * 60


class BuildError(Exception):
    """A build failed; the message says which step and ends with Go's own output."""


class GoUnavailable(BuildError):
    """No Go toolchain: the caller may skip, saying so."""


def find_go() -> str:
    """The ``go`` command to use (``$TKA_GO``, else ``go`` on PATH)."""
    configured = os.environ.get("TKA_GO")
    found = configured or shutil.which("go")
    if not found or not Path(found).exists():
        raise GoUnavailable(
            "Go is not installed (no `go` on PATH and no $TKA_GO): building Tailscale's "
            "code from source needs Go 1.26 and access to the Go module proxy"
        )
    return found


def tailscale_version(explicit: str | None = None, variable: str = "TKA_TAILSCALE_VERSION") -> str:
    """The tailscale.com version to build: *explicit*, ``$variable``, or pinned.

    ``TKA_TAILSCALE_VERSION`` picks the oracle's version (the differential
    suite); ``TKA_CLIENT_VERSION`` the real clients' (see :func:`build_client`).
    """
    version = explicit or os.environ.get(variable) or PINNED_TAILSCALE_VERSION
    version = version.strip()
    # A module version is a short token; refuse anything that could be read
    # as a flag or a path by the go command.
    if (
        not version.startswith("v")
        or len(version) > 80
        or not all(c.isalnum() or c in ".-+" for c in version)
    ):
        raise BuildError(f"not a Go module version: {version!r} (want e.g. v1.102.5)")
    return version


def cache_root() -> Path:
    """Where builds are kept: ``$TKA_BUILD_CACHE`` or the user's cache directory."""
    configured = os.environ.get("TKA_BUILD_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "tka-build"


def _go_env(go: str) -> dict[str, str]:
    env = dict(os.environ)
    # Never let go.mod's `go` line fetch another toolchain: this machine's Go
    # is the one the build is made with, and a version that needs a newer one
    # should fail saying so.
    env["GOTOOLCHAIN"] = "local"
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-buildvcs=false"
    return env


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str], step: str) -> str:
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{step}: timed out after {BUILD_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-4000:]
        raise BuildError(f"{step} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def _go_version(go: str, env: dict[str, str]) -> str:
    return _run([go, "env", "GOVERSION"], HERE, env, "go env GOVERSION").strip()


def _digest(parts: Sequence[str | bytes], files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big") + data)
    for path in sorted(files):
        rel = str(path.relative_to(HERE)).encode()
        data = path.read_bytes()
        h.update(len(rel).to_bytes(8, "big") + rel + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:24]


def _source_files(root: Path) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and "__pycache__" not in p.parts
    ]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# A build step: make the outputs in ``out``, using ``work`` as scratch space.
_Build = Callable[[Path, Path], None]


def _cached_build(name: str, key: str, want: Sequence[str], build: _Build) -> Path:
    """The folder ``<cache>/<name>-<key>`` holding *want*, built by *build* when absent."""
    root = cache_root()
    final = root / f"{name}-{key}"
    if all((final / w).is_file() for w in want):
        return final
    with _locked(root / f"{name}-{key}.lock"):
        if all((final / w).is_file() for w in want):
            return final
        work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            out = work / "out"
            out.mkdir()
            started = time.monotonic()
            build(out, work)
            missing = [w for w in want if not (out / w).is_file()]
            if missing:
                raise BuildError(f"{name}: the build made no {', '.join(missing)}")
            (out / "BUILD-INFO.json").write_text(
                json.dumps({"seconds": round(time.monotonic() - started, 1)}) + "\n"
            )
            if final.exists():
                shutil.rmtree(final)
            os.replace(out, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def _tailscale_module(go: str, env: dict[str, str], version: str, work: Path) -> Path:
    """The integrations/tailscale module, as pinned or made anew for *version*.

    Another version gets a fresh module requiring only ``tailscale.com`` at
    that version (and its tools), so every dependency is the one that release
    was made with. Rewriting the pinned ``go.mod`` instead would keep the
    newer dependencies the pinned release needs (minimal version selection
    never goes down), and an older client does not build against them.
    """
    if version == PINNED_TAILSCALE_VERSION:
        return TAILSCALE_MODULE_DIR
    module = work / "module"
    module.mkdir()
    (module / "go.mod").write_text("module tka.invalid/integrations/tailscale\n\ngo 1.26\n")
    for sub in ("cmd", "overlay"):
        shutil.copytree(TAILSCALE_MODULE_DIR / sub, module / sub)
    _run(
        [go, "get", f"tailscale.com@{version}"],
        module,
        env,
        f"requiring tailscale.com {version}",
    )
    for tool in ("tailscaled", "tailscale"):
        _run(
            [go, "get", "-tool", f"tailscale.com/cmd/{tool}@{version}"],
            module,
            env,
            f"adding the {tool} tool at {version}",
        )
    _run([go, "mod", "tidy"], module, env, f"go mod tidy for tailscale.com {version}")
    return module


def _vendored_oracle_module(go: str, env: dict[str, str], module: Path, work: Path) -> Path:
    """A scratch copy of *module* with only the oracle's dependencies vendored.

    Go refuses an ``-overlay`` that replaces files in the module cache, so
    the accessors (below) are laid over a vendored copy of Tailscale's
    ``tka`` made here at build time; nothing of Tailscale's is kept in the
    repository. The client tools are dropped first so that only ``tka`` and
    what it imports are vendored (a few MB).
    """
    scratch = work / "oracle-module"
    scratch.mkdir()
    for name in ("go.mod", "go.sum"):
        shutil.copy2(module / name, scratch / name)
    shutil.copytree(module / "cmd", scratch / "cmd")
    shutil.copytree(module / "overlay", scratch / "overlay")
    _run(
        [
            go,
            "mod",
            "edit",
            "-droptool=tailscale.com/cmd/tailscaled",
            "-droptool=tailscale.com/cmd/tailscale",
        ],
        scratch,
        env,
        "dropping the client tools from the oracle's module",
    )
    _run([go, "mod", "vendor"], scratch, env, "vendoring the oracle's dependencies")
    return scratch


def _overlay(go: str, env: dict[str, str], module: Path, work: Path) -> list[str]:
    """``-overlay`` arguments adding ``overlay/*.go.in`` into the vendored tka package.

    The oracle reports an authority's state and oldest ancestor, which Go's
    package keeps unexported; the overlay adds read-only accessors beside the
    package at build time, leaving Tailscale's files as they are.
    """
    sources = sorted((module / "overlay").glob("*.go.in"))
    if not sources:
        return []
    pkg_dir = _run(
        [go, "list", "-mod=vendor", "-f", "{{.Dir}}", "tailscale.com/tka"],
        module,
        env,
        "locating the vendored tailscale.com/tka",
    ).strip()
    replace = {str(Path(pkg_dir) / src.name[: -len(".in")]): str(src) for src in sources}
    overlay = work / "overlay.json"
    overlay.write_text(json.dumps({"Replace": replace}))
    return [f"-overlay={overlay}"]


def _ldflags(version: str) -> str:
    # Without a stamp, `tailscale version` says "x.y.z-ERR-BuildInfo"; say
    # instead that this is a module build made for tka's tests.
    plain = version.lstrip("v")
    return (
        f"-X tailscale.com/version.longStamp={plain}-tka-build "
        f"-X tailscale.com/version.shortStamp={plain}"
    )


def build_oracle(version: str | None = None) -> Path:
    """The path of ``tka-oracle`` built against tailscale.com *version*."""
    go = find_go()
    env = _go_env(go)
    version = tailscale_version(version)
    key = _digest(
        ["oracle", version, _go_version(go, env)], [RECIPE, *_source_files(TAILSCALE_MODULE_DIR)]
    )

    def build_oracle_into(out: Path, work: Path) -> None:
        module = _vendored_oracle_module(go, env, _tailscale_module(go, env, version, work), work)
        cmd = [go, "build", "-mod=vendor", "-trimpath", *_overlay(go, env, module, work)]
        _run(
            [*cmd, "-o", str(out / "tka-oracle"), "./cmd/tka-oracle"],
            module,
            env,
            f"building tka-oracle (tailscale.com {version})",
        )

    return _cached_build(f"oracle-{version}", key, ["tka-oracle"], build_oracle_into) / "tka-oracle"


def build_client(version: str | None = None) -> Path:
    """The folder holding ``tailscaled`` and ``tailscale`` at tailscale.com *version*.

    By default the pinned release, or ``$TKA_CLIENT_VERSION``: the real-client
    tests (Headscale's end to end) judge tka by the clients people run, so
    ``TKA_TAILSCALE_VERSION``, which moves the differential oracle, leaves
    them alone.
    """
    go = find_go()
    env = _go_env(go)
    version = tailscale_version(version, "TKA_CLIENT_VERSION")
    files = [RECIPE, TAILSCALE_MODULE_DIR / "go.mod", TAILSCALE_MODULE_DIR / "go.sum"]
    key = _digest(["client", version, _go_version(go, env)], files)

    def build_client_into(out: Path, work: Path) -> None:
        module = _tailscale_module(go, env, version, work)
        mod_flag = "-mod=readonly" if module == TAILSCALE_MODULE_DIR else "-mod=mod"
        _run(
            [
                go,
                "build",
                mod_flag,
                "-trimpath",
                f"-ldflags={_ldflags(version)}",
                "-o",
                str(out) + os.sep,
                "tailscale.com/cmd/tailscaled",
                "tailscale.com/cmd/tailscale",
            ],
            module,
            env,
            f"building tailscaled and tailscale (tailscale.com {version})",
        )

    return _cached_build(f"client-{version}", key, ["tailscaled", "tailscale"], build_client_into)


def build_headscale() -> Path:
    """The path of Headscale built with tka's patch series (``integrations/headscale``)."""
    go = find_go()
    env = _go_env(go)
    script = HEADSCALE_DIR / "build.sh"
    if not script.is_file():
        raise BuildError(f"{script} is missing")
    files = [RECIPE, script, *sorted((HEADSCALE_DIR / "patches").glob("*.patch"))]
    key = _digest(["headscale", _go_version(go, env)], files)

    def build_headscale_into(out: Path, work: Path) -> None:
        env_with_go = dict(env, PATH=f"{Path(go).parent}{os.pathsep}{env.get('PATH', '')}")
        _run(["bash", str(script), str(out)], work, env_with_go, "building headscale")

    return _cached_build("headscale", key, ["headscale"], build_headscale_into) / "headscale"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build Tailscale's tka oracle, the real client or patched Headscale "
        "into the build cache, and print where it is.",
        epilog="example: python3 integrations/build.py oracle",
    )
    parser.add_argument("what", nargs="?", choices=["oracle", "client", "headscale"])
    parser.add_argument(
        "--print-headscale-tailscale-version",
        action="store_true",
        help="print the tailscale.com version pinned Headscale requires, and exit",
    )
    parser.add_argument(
        "--tailscale-version",
        help="tailscale.com version (default: $TKA_TAILSCALE_VERSION, else "
        f"{PINNED_TAILSCALE_VERSION})",
    )
    args = parser.parse_args(argv)
    if args.print_headscale_tailscale_version:
        print(HEADSCALE_TAILSCALE_VERSION)
        return 0
    if args.what is None:
        parser.error("say what to build: oracle, client or headscale")
    started = time.monotonic()
    try:
        if args.what == "oracle":
            path = build_oracle(args.tailscale_version)
        elif args.what == "client":
            path = build_client(args.tailscale_version)
        else:
            path = build_headscale()
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    print(path)
    print(f"build.py: {args.what} ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
