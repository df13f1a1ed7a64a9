"""Entry point of the ``tka`` console script (and of ``python -m tka``).

The CLI is a thin adapter: it parses arguments, calls the library and renders
the result. It is the only place that prints or chooses an exit code; every
failure is one line on stderr (``--debug`` shows the traceback of a failed
command, never of a usage error).

This module assembles the command tree. Each top-level command's module is
imported only when that command runs (or help lists it), so ``tka
--version`` and ``tka lock status`` load only what they use.
"""

from __future__ import annotations

import sys

import click

from tka import __version__

from ._common import (
    EXIT_USAGE,
    Fail,
    TkaGroup,
    add_global_options,
    err_line,
    exit_code_for,
)

__all__ = ["cli", "main"]

EPILOG = """\b
Exit codes: 0 success; 1 refused (a check failed, does not verify, does
not apply); 2 bad usage or malformed argument (including a file that cannot
be read or a folder to write into that does not exist); 3 state directory
missing, locked by another process, or damaged.

\b
The options --state-dir, --passphrase-file, --control, --lock-timeout and
--debug may be given before or after the subcommand."""

#: Top-level command name -> (module in this package, attribute).
_COMMANDS: dict[str, tuple[str, str]] = {
    "audit": ("audit_cmd", "audit"),
    "control": ("serve", "control"),
    "demo": ("lock", "demo"),
    "keygen": ("lock", "keygen"),
    "lock": ("lock", "lock"),
    "serve": ("serve", "serve"),
    "vectors": ("vectors_cmd", "vectors_cmd"),
}


@click.group(
    cls=TkaGroup,
    lazy=_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EPILOG,
)
@click.version_option(__version__, prog_name="tka", message="%(prog)s %(version)s")
def cli() -> None:
    """Tailnet Lock toolkit: manage and verify a Tailnet Key Authority.

    \b
    Examples:
      tka lock key                         # this node's tlpub: key
      tka lock init --gen-disablements 2 --confirm tlpub:...
      tka lock check nodekey:... <signature>
      tka audit chain-export.json
      tka vectors vectors/
    """


add_global_options(cli)


def _traceback(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()


def main(argv: list[str] | None = None) -> None:
    """Run the ``tka`` command line; every failure is one stderr line and an exit code."""
    from tka.errors import TKAError

    args = sys.argv[1:] if argv is None else argv
    ctx_debug = "--debug" in args[: args.index("--")] if "--" in args else "--debug" in args
    try:
        rv = cli.main(args=args, prog_name="tka", standalone_mode=False, obj={})
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_line("aborted")
        sys.exit(1)
    except click.ClickException as exc:
        # A usage mistake: one line, never a traceback, even with --debug.
        err_line(exc.format_message())
        sys.exit(EXIT_USAGE)
    except Fail as exc:
        _traceback(ctx_debug and exc.code != EXIT_USAGE)  # a usage mistake: no traceback
        err_line(str(exc))
        sys.exit(exc.code)
    except TKAError as exc:
        _traceback(ctx_debug)
        err_line(str(exc))
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        err_line("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:  # a bug: still one line unless --debug
        _traceback(ctx_debug)
        err_line(f"internal error ({type(exc).__name__}): {exc}; rerun with --debug for details")
        sys.exit(1)
    # Without standalone mode click returns the code a command exited with.
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
