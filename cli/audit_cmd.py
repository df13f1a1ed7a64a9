"""``tka audit``: verify an exported chain end to end and print a report."""

from __future__ import annotations

import json
import os

import click

from ._common import EXIT_REFUSED, EXIT_USAGE, fail

__all__ = ["audit"]


@click.command("audit")
@click.argument("source", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def audit(source: str, as_json: bool) -> None:
    """Verify a chain from a 'lock log --json' file, a Tailscale TKA directory or a bundle.

    Checks every signature and hash link, resolves forks and reports the
    resulting state, who signed what, and warnings. Exit 0 only when the
    chain verifies; a tampered input names the first broken AUM.

    \b
    Examples:
      tka audit log.json
      tka audit /var/lib/tailscale/tka-profiles/1a2b --json
      tka audit node1-export.json
    """
    import tka.audit as auditing

    if os.path.isdir(source):
        report = auditing.audit_directory(source)
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as exc:
            fail(f"cannot read {source}: {exc.strerror}", EXIT_USAGE)
        report = auditing.audit_bytes(data)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(report.to_text())
    if report.verdict != "valid":
        raise click.exceptions.Exit(EXIT_REFUSED)
