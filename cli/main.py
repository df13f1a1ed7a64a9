"""Entry point of the ``tka`` console script.

The CLI is a thin adapter: it parses arguments, calls the library and renders
the result. It is the only place that prints or chooses an exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tka.conformance import KINDS, Context
from tka.conformance import run as run_vectors

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show a traceback when a command fails.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tailnet Lock toolkit: manage and verify a Tailnet Key Authority.

    \b
    Example:
      tka vectors vectors/
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command("vectors")
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
    debug = bool(ctx.obj.get("debug"))
    result = run_vectors(list(dirs), kinds or None, Context(store=store), debug=debug)
    if not result.kinds:
        click.echo("error: no vector files found", err=True)
        sys.exit(2)
    for k in result.kinds:
        note = " (kind not supported yet)" if k.unsupported else ""
        click.echo(f"{k.kind}: {k.passed} passed, {k.failed} failed{note}")
    for k in result.kinds:
        for name, why in k.failures[:show]:
            click.echo(f"  FAIL {k.kind} {name}: {why}")
    click.echo(f"{result.passed} passed, {result.failed} failed")
    sys.exit(1 if result.failed else 0)


def main() -> None:
    """Run the ``tka`` command line."""
    cli(obj={})


if __name__ == "__main__":
    main()
