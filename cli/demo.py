"""``tka demo``: a narrated tailnet-lock lifecycle on two simulated nodes.

Every step is a real ``tka`` command, printed before it runs, so a new user
can read along and repeat it by hand.
"""

from __future__ import annotations

import contextlib
import io
import os
import re

import click

from tka.nlkeys import NodePublic

__all__ = ["run_demo"]


def _run(cli: click.Group, args: list[str], note: str) -> str:
    click.echo("")
    click.secho(f"# {note}", fg="cyan")
    click.echo("$ tka " + " ".join(_shorten(a) for a in args))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rv = cli.main(args=args, prog_name="tka", standalone_mode=False, obj={})
        if isinstance(rv, int) and rv != 0:
            buf.write(f"(exit code {rv})\n")
    out = buf.getvalue()
    click.echo(out, nl=False)
    return out


def _shorten(arg: str) -> str:
    # Long keys and signatures are abbreviated in the narration only.
    return re.sub(r"([0-9a-fA-F+/=]{12})[0-9a-zA-Z+/=]{20,}", r"\1…", arg)


def run_demo(workdir: str, cli: click.Group) -> None:
    """Run the demo with state directories under *workdir*, through the command tree *cli*.

    *cli* is passed in (rather than imported from ``main``) so that this
    module does not import the module that assembles it.
    """
    a = os.path.join(workdir, "alice")
    b = os.path.join(workdir, "bob")
    click.secho("Tailnet lock demo: two signing nodes, alice and bob, exchanging files.", bold=True)
    key_a = _run(
        cli, ["lock", "--state-dir", a, "key"], "alice creates her tailnet-lock key"
    ).strip()
    key_b = _run(cli, ["lock", "--state-dir", b, "key"], "bob creates his").strip()
    _run(
        cli,
        ["lock", "--state-dir", a, "init", "--gen-disablements", "1", "--confirm", key_a, key_b],
        "alice initializes tailnet lock trusting both keys (keep the secret offline!)",
    )
    bundle = os.path.join(workdir, "alice.json")
    _run(cli, ["lock", "--state-dir", a, "export", bundle], "alice exports her chain to a file")
    _run(
        cli,
        ["lock", "--state-dir", b, "import", bundle],
        "bob imports it: he now holds the same authority",
    )
    node = NodePublic(os.urandom(32)).text()
    sig = _run(
        cli, ["lock", "--state-dir", b, "sign", node], "bob signs a new device's node key"
    ).strip()
    _run(
        cli,
        ["lock", "--state-dir", a, "check", node, sig],
        "alice checks the device offline: admitted",
    )
    other = NodePublic(os.urandom(32)).text()
    _run(
        cli,
        ["lock", "--state-dir", a, "check", other, sig],
        "a different node key with that signature: refused",
    )
    _run(cli, ["lock", "--state-dir", a, "status"], "alice's view of the authority")
    click.echo("")
    click.secho("Done. Try 'tka lock --help' for every command.", bold=True)
