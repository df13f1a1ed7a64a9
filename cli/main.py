"""Entry point of the ``tka`` console script.

The CLI is a thin adapter: it parses arguments, calls the library and renders
the result. It is the only place that prints or chooses an exit code; every
failure is one line on stderr (``--debug`` shows the traceback).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from tka.conformance import KINDS, Context
from tka.conformance import run as run_vectors
from tka.errors import TKAError

from ._common import EXIT_USAGE, Fail, err_line, exit_code_for

__all__ = ["cli", "main"]

EPILOG = """\b
Exit codes: 0 success; 1 refused (a check failed, does not verify, does
not apply); 2 bad usage or malformed argument; 3 state directory missing,
locked by another process, or damaged."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.option("--debug", is_flag=True, help="Show a traceback when a command fails.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tailnet Lock toolkit: manage and verify a Tailnet Key Authority offline.

    \b
    Examples:
      tka lock key                         # this node's tlpub: key
      tka lock init --gen-disablements 2 --confirm tlpub:...
      tka lock check nodekey:... <signature>
      tka audit chain-export.json
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
        raise Fail("no vector files found", EXIT_USAGE)
    for k in result.kinds:
        note = " (kind not supported yet)" if k.unsupported else ""
        click.echo(f"{k.kind}: {k.passed} passed, {k.failed} failed{note}")
    for k in result.kinds:
        for name, why in k.failures[:show]:
            click.echo(f"  FAIL {k.kind} {name}: {why}")
    click.echo(f"{result.passed} passed, {result.failed} failed")
    sys.exit(1 if result.failed else 0)


def _register_subcommands() -> None:
    from . import audit_cmd, lock, serve

    cli.add_command(lock.lock)
    cli.add_command(lock.keygen)
    cli.add_command(lock.demo)
    cli.add_command(audit_cmd.audit)
    serve.register(cli)


_register_subcommands()


def main(argv: list[str] | None = None) -> None:
    """Run the ``tka`` command line; every failure is one stderr line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        rv = cli.main(args=args, prog_name="tka", standalone_mode=False, obj={})
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_line("aborted")
        sys.exit(1)
    except click.ClickException as exc:
        if debug:
            traceback.print_exc()
        err_line(exc.format_message())
        sys.exit(EXIT_USAGE)
    except Fail as exc:
        if debug:
            traceback.print_exc()
        err_line(str(exc))
        sys.exit(exc.code)
    except TKAError as exc:
        if debug:
            traceback.print_exc()
        err_line(str(exc))
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        err_line("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            traceback.print_exc()
        err_line(f"internal error ({type(exc).__name__}): {exc}; rerun with --debug for details")
        sys.exit(1)
    # Without standalone mode click returns the code a command exited with.
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
