"""Node-side control commands: ``tka lock node-key``, ``login``, ``sync``, ``rotate-node-key``.

They live apart from ``cli/serve.py`` (the service and its admin commands)
and use the same helpers as ``cli/lock.py`` (:mod:`tka_cli.node`); the
``lock`` group imports this module only when one of them runs.
"""

from __future__ import annotations

import base64
import json

import click

from ._common import (
    EXIT_USAGE,
    MAX_SMALL_INPUT_BYTES,
    emit,
    fail,
    read_input,
    rotation_key_option,
    warn,
)
from .node import control_client, control_url, open_node, passphrase, sync

__all__ = ["login_cmd", "node_key_cmd", "rotate_node_key_cmd", "sync_cmd"]


@click.command("node-key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def node_key_cmd(ctx: click.Context, as_json: bool) -> None:
    """Print this node's node key (nodekey:...), creating it on first use.

    It stands for the node's WireGuard key: the key an admin registers
    ('tka control register') and signers sign. Like 'lock key', it creates
    the state directory when needed.

    \b
    Example:
      tka lock node-key --json
    """
    from tka.control.client import NodeKeyPair

    with open_node(ctx, create=True) as node:
        pair = NodeKeyPair.load(node.path)
        created = pair is None
        if pair is None:
            pair = NodeKeyPair.generate()
            pair.save(node.path)
    emit({"NodeKey": pair.public.text(), "Created": created}, as_json, pair.public.text())


@click.command("login")
@click.argument("credentials", type=click.Path(dir_okay=False, allow_dash=True))
@click.pass_context
def login_cmd(ctx: click.Context, credentials: str) -> None:
    """Keep the CREDENTIALS file an admin made ('tka control register') and sync.

    Needs a control URL (--control URL, saved for later commands, or
    $TKA_CONTROL_URL) unless one was set before.

    \b
    Example:
      tka lock --control http://127.0.0.1:8080 login n1.json
    """
    from tka.control.client import ControlClient, NodeCredentials, NodeKeyPair

    data = read_input(credentials, "credentials file", MAX_SMALL_INPUT_BYTES)
    creds = NodeCredentials.from_json(data)
    declared = json.loads(data).get("NodeKey")
    with open_node(ctx, create=True) as node:
        pair = NodeKeyPair.load(node.path)
        if pair is None:
            fail("this node has no node key yet: run 'tka lock node-key' first")
        if declared is not None and declared != pair.public.text():
            fail("the credentials are for another node key than this node's")
        url = control_url(ctx, node)
        if not url:
            fail("no control URL: pass --control URL or set TKA_CONTROL_URL", EXIT_USAGE)
        client = ControlClient(url, creds.token, pair.public)
        client.map()  # the token works, or this fails with the service's reason
        creds.save(node.path)
        if url != node.control_url():
            node.set_control_url(url)
        result = sync(ctx, node, node.authority())
    what = f"; {result.action}" if result is not None else ""
    click.echo(f"Logged in to {url} as node {creds.node_id} of tailnet {creds.tailnet}{what}.")


@click.command("sync")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sync_cmd(ctx: click.Context, as_json: bool) -> None:
    """Sync this node's AUMs with control now (bootstrap, offer, send).

    A node where lock was disabled asks control whether a new lock was
    started since, and follows it (the old chain is moved aside).

    \b
    Example:
      tka lock sync --json
    """
    from tka.aum import hash_to_text

    with open_node(ctx) as node:
        if control_client(ctx, node) is None:
            fail("no control URL: pass --control URL or set TKA_CONTROL_URL", EXIT_USAGE)
        disabled = node.disabled()
        if disabled is not None and disabled.get("how") == "local":
            fail("tailnet lock is disabled on this node: 'tka lock local-enable' first")
        result = sync(ctx, node, node.authority())
    assert result is not None
    doc = {
        "Action": result.action,
        "Head": hash_to_text(result.head) if result.head else None,
        "ControlHead": hash_to_text(result.control_head) if result.control_head else None,
        "Received": result.received,
        "Sent": result.sent,
    }
    if result.action == "disabled":
        emit(doc, as_json, "Tailnet lock is disabled (control agrees).")
        return
    head = f"; head {doc['Head']}" if doc["Head"] else ""
    emit(doc, as_json, f"Sync: {result.action}, {result.received} in, {result.sent} out{head}.")
    if result.action.endswith("synced") and not result.agreed:
        warn("the service ended on another head: run 'tka lock sync' again")


@click.command("rotate-node-key")
@rotation_key_option
@click.pass_context
def rotate_node_key_cmd(ctx: click.Context, rotation_key_file: str) -> None:
    """Move this node to a fresh node key, re-signed with its rotation key.

    The new signature wraps the current one (a rotation signature), so no
    signing node is needed and the node stays admitted.

    \b
    Example:
      tka lock rotate-node-key --rotation-key rot.key
    """
    from tka.control.client import NodeKeyPair
    from tka.errors import NotAuthorized
    from tka.keyfile import load_private_key
    from tka.sig import authorize_node_key, resign_nks

    rot = load_private_key(rotation_key_file, passphrase(ctx))
    with open_node(ctx) as node:
        client = control_client(ctx, node)
        if client is None:
            fail("no control URL: pass --control URL or set TKA_CONTROL_URL", EXIT_USAGE)
        old = NodeKeyPair.load(node.path)
        assert old is not None  # control_client checked
        me = client.map().node
        if me is None or not me.key_signature:
            fail("control holds no signature for this node: have a signer sign it first")
        new = NodeKeyPair.generate()
        sig = resign_nks(rot.raw, new.public.raw, me.key_signature)
        authority = node.authority()
        if authority is not None:
            try:
                authorize_node_key(authority.state, new.public.raw, sig)
            except NotAuthorized as exc:
                fail(f"the rotation signature would not admit the new key: {exc}")
        # Keep the new key before control switches to it, so a crash cannot
        # leave control on a key this node lost; put the old one back if
        # control refuses.
        new.save(node.path)
        try:
            client.rotate(new.public, sig)
        except BaseException:
            old.save(node.path)
            raise
    click.echo(f"Rotated to {new.public.text()}.")
    click.echo(base64.b64encode(sig).decode())
