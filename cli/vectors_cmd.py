"""``tka vectors``: run Tailscale's conformance vectors."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._common import EXIT_USAGE, fail, global_opt

__all__ = ["vectors_cmd"]

# The kinds are listed here rather than imported so that loading this
# module (for 'tka --help') does not load the conformance runner;
# tests/test_cli_e2e.py checks the list against tka.conformance.KINDS.
KINDS = (
    "aum",
    "nks",
    "ed25519",
    "disablement",
    "resign",
    "authkey",
    "keys",
    "deeplink",
    "chain",
    "inform",
    "builder",
    "sync",
    "tailchonk_fs",
    "compaction",
    "lock_log_json",
)


@click.command("vectors")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(KINDS),
    help="Run only this kind (may repeat). Default: every kind found.",
)
@click.option(
    "--store",
    type=click.Choice(["memory", "sqlite", "fs"]),
    default="memory",
    show_default=True,
    help="Storage backend for kinds that open an authority.",
)
@click.option("--show", default=5, show_default=True, help="Failures to list per kind.")
@click.pass_context
def vectors_cmd(
    ctx: click.Context, dirs: tuple[Path, ...], kinds: tuple[str, ...], store: str, show: int
) -> None:
    """Run Tailscale's conformance vectors found in DIRS.

    Prints one line per kind and a closing 'N passed, N failed' line; exits 1
    when any case fails. Kinds tka does not support yet count as failed.

    \b
    Example:
      tka vectors --kind aum --kind nks ../shared/vectors
    """
    from tka.conformance import Context
    from tka.conformance import run as run_vectors

    debug = bool(global_opt(ctx, "debug"))
    result = run_vectors(list(dirs), kinds or None, Context(store=store), debug=debug)
    if not result.kinds:
        fail("no vector files found", EXIT_USAGE)
    for k in result.kinds:
        note = " (kind not supported yet)" if k.unsupported else ""
        click.echo(f"{k.kind}: {k.passed} passed, {k.failed} failed{note}")
    for k in result.kinds:
        for name, why in k.failures[:show]:
            click.echo(f"  FAIL {k.kind} {name}: {why}")
    click.echo(f"{result.passed} passed, {result.failed} failed")
    sys.exit(1 if result.failed else 0)
