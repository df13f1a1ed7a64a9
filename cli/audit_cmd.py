"""``tka audit``: verify a chain, keep watch over it with a pin and a policy, and report.

Exit codes (also in ``tka audit --help``): 0 the chain is valid (and
extends the pin, and meets the policy); 1 refused: the chain does not
verify, breaks the pin or violates the policy; 2 bad usage (unknown
option, a policy file with unknown or mistyped fields, a --pin or --html
path holding something tka must not replace); 3 an input cannot be read
(missing, too large, not text, not JSON, a damaged pin file) or the HTML
report cannot be written.

Writing never destroys what was at a path: the pin is updated only if it
is a regular file (or created); ``--html`` replaces an earlier tka report
(any other file only with ``--force``), writes through a FIFO, /dev/null or
/dev/stdout, and ``-`` prints the page on stdout instead of the report; a
folder, a symbolic link to anything else, or a device is refused (exit 2).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import click

from ._common import EXIT_STATE, EXIT_USAGE, fail, force_option, output_plan, write_output

__all__ = ["audit"]

EXIT_UNREADABLE = EXIT_STATE  # 3: the same number the other commands use for unusable state

#: Chains from this many AUMs get a progress bar (on a terminal, without --quiet).
PROGRESS_FROM = 1000

EPILOG = """\b
Exit codes: 0 valid (and extends the pin, and meets the policy);
1 refused: does not verify, breaks the pin, or violates the policy;
2 bad usage (unknown option, a policy with unknown or mistyped fields,
a --pin or --html path holding a folder, link, device or FIFO, or a
--html file that is not an earlier report, without --force);
3 an input cannot be read (missing, too large, not text or JSON, a
damaged pin file), or the --html file cannot be written.

\b
--json prints a versioned 'tka-audit/1' report (see tka/audit/__init__.py):
verdict, reasons, head, state, per-AUM history, forks, warnings, and
'outcome', 'pin' and 'policy'."""


@contextlib.contextmanager
def _progress(estimate: int, quiet: bool) -> Iterator[object]:
    """A click progress bar on stderr for long chains, or nothing."""
    if quiet or estimate < PROGRESS_FROM or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(
        length=estimate, label="verifying AUMs", file=sys.stderr, show_pos=True
    ) as bar:
        yield bar


#: How an earlier report begins (render_html's template), to tell it from other files.
_REPORT_MARK = b"<title>tka audit: "


def _is_report(path: str) -> bool:
    """Whether *path* is a regular file holding an earlier 'tka audit --html' report."""
    if path == "-" or not os.path.isfile(path) or os.path.islink(path):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        return _REPORT_MARK in f.read(4096)


def _check_pin_path(path: str) -> None:
    """Exit 2 if what is at *path* is not a pin tka may move forward (a regular file, or none)."""
    from tka._fileutil import TargetRefused, check_target

    try:
        check_target(os.path.abspath(path), replace=True)
    except TargetRefused as exc:
        exc.path = path
        fail(f"{exc}; a pin is a regular file (--no-update only reads it)", EXIT_USAGE)
    except OSError:
        pass  # the pin's own read or write reports it (exit 3)


@click.command("audit", epilog=EPILOG)
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (tka-audit/1).")
@click.option(
    "--pin",
    "pin_path",
    metavar="PINFILE",
    help="Continuity: record the head on the first run; later runs must extend it.",
)
@click.option(
    "--no-update", is_flag=True, help="With --pin: check against the pin but leave it as it was."
)
@click.option(
    "--policy",
    "policy_path",
    metavar="FILE",
    help="Rules (JSON, or TOML if *.toml): trusted_keys, min_trusted_keys, "
    "min_disablement_values, genesis.",
)
@click.option(
    "--html",
    "html_path",
    metavar="FILE",
    help="Also write a self-contained HTML report ('-': on stdout, instead of the report).",
)
@force_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar on stderr.")
def audit(
    source: str,
    as_json: bool,
    pin_path: str | None,
    no_update: bool,
    policy_path: str | None,
    html_path: str | None,
    force: bool,
    quiet: bool,
) -> None:
    """Verify a chain from a 'lock log --json' file, a Tailscale TKA directory or a bundle.

    SOURCE is a file, '-' for standard input, or a node's TKA directory.
    Checks every signature and hash link, resolves forks and reports the
    resulting state, who signed what, and warnings. With --pin, the chain
    must extend the head recorded last time (a rollback, a rewritten
    history, another genesis or an abandoned fork fail, naming both heads);
    on success it lists what changed and moves the pin forward. With
    --policy, each rule broken is a reason naming the key or value.

    --html replaces an earlier tka report at FILE; any other file only with
    --force. A FIFO, /dev/null or /dev/stdout is written through; a folder,
    another device or another symbolic link is refused, never replaced, as
    is a PINFILE that is not a regular file.

    \b
    Examples:
      tka audit log.json
      tka audit log.json --pin tailnet.pin --policy policy.json --html report.html
      tailscale lock log --json --limit 1000 | tka audit - --pin tailnet.pin --quiet
      tka audit tka-profiles/1a2b --json     # a node's TKA dir, under /var/lib/tailscale
      tka audit node1-export.json            # a 'tka lock export' bundle
    """
    import tka.audit as auditing
    from tka.audit.render_json import render_json
    from tka.audit.render_text import render_outcome_text

    if no_update and pin_path is None:
        fail("--no-update needs --pin", EXIT_USAGE)
    if force and html_path is None:
        fail("--force applies to --html", EXIT_USAGE)
    if pin_path == "-":
        fail("--pin needs a file (tka reads it and moves it forward), not '-'", EXIT_USAGE)
    if pin_path is not None and not no_update:
        _check_pin_path(pin_path)
    if html_path == "-" and as_json:
        fail("--html - and --json both want stdout; write the page to a file", EXIT_USAGE)
    if html_path is not None:
        output_plan(html_path, update=_is_report(html_path), force=force, io_code=EXIT_UNREADABLE)
    try:
        policy = auditing.load_policy(policy_path) if policy_path is not None else None
        src = auditing.read_source(source)
        with _progress(src.estimate, quiet) as bar:
            step = None if bar is None else getattr(bar, "update", None)
            outcome = auditing.run_audit(
                src,
                pin_path=pin_path,
                policy=policy,
                policy_path=policy_path or "",
                update_pin=not no_update,
                progress=step,
            )
    except auditing.UnreadableInput as exc:
        fail(str(exc), EXIT_UNREADABLE)
    except auditing.PolicyError as exc:
        fail(str(exc), EXIT_USAGE)
    if html_path is not None:
        from tka.audit.render_html import render_html

        page = render_html(outcome).encode("utf-8")
        update = _is_report(html_path)
        write_output(html_path, page, update=update, force=force, io_code=EXIT_UNREADABLE)
    if html_path != "-":
        click.echo(render_json(outcome) if as_json else render_outcome_text(outcome))
    if outcome.exit_code:
        raise click.exceptions.Exit(outcome.exit_code)
