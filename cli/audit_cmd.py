"""``tka audit``: verify a chain, keep watch over it with a pin and a policy, and report.

Exit codes (also in ``tka audit --help``): 0 the chain is valid (and
extends the pin, and meets the policy); 1 refused: the chain does not
verify, breaks the pin or violates the policy; 2 bad usage (unknown
option, a policy file with unknown or mistyped fields); 3 an input cannot
be read (missing, too large, not text, not JSON, a damaged pin file) or
the HTML report cannot be written.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import click

from ._common import EXIT_STATE, EXIT_USAGE, fail

__all__ = ["audit"]

EXIT_UNREADABLE = EXIT_STATE  # 3: the same number the other commands use for unusable state

#: Chains from this many AUMs get a progress bar (on a terminal, without --quiet).
PROGRESS_FROM = 1000

EPILOG = """\b
Exit codes: 0 valid (and extends the pin, and meets the policy);
1 refused: does not verify, breaks the pin, or violates the policy;
2 bad usage (unknown option, a policy with unknown or mistyped fields);
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
    "--html", "html_path", metavar="FILE", help="Also write a self-contained HTML report."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar on stderr.")
def audit(
    source: str,
    as_json: bool,
    pin_path: str | None,
    no_update: bool,
    policy_path: str | None,
    html_path: str | None,
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
        from tka._fileutil import atomic_write
        from tka.audit.render_html import render_html

        page = render_html(outcome).encode("utf-8")
        try:
            atomic_write(os.path.abspath(html_path), page, mode=0o644, prefix=".tka-report-")
        except OSError as exc:
            fail(f"cannot write {html_path}: {exc.strerror}", EXIT_UNREADABLE)
    click.echo(render_json(outcome) if as_json else render_outcome_text(outcome))
    if outcome.exit_code:
        raise click.exceptions.Exit(outcome.exit_code)
