"""``tka serve``, ``tka control ...`` and the node side of ``tka lock --control URL``.

Three parts:

* ``tka serve``: run the control service (needs ``pip install 'tka[server]'``);
* ``tka control ...``: admin commands (mint the admin token, create tailnets,
  register nodes and mint their tokens, list nodes and who is locked out, read
  the lock log), over the admin API;
* node side: ``tka lock node-key``, ``login``, ``sync``, ``rotate-node-key``,
  and the helpers ``cli/lock.py`` calls so that, once a control URL is set,
  init, sign, add/remove, disable and revoke-keys talk to the service the way
  a Tailscale node does, and ``status`` syncs first.

A node's control settings live in its state directory: ``control.json`` (the
URL), ``node-key.json`` (its node key, 0600) and ``control-node.json`` (its
tailnet, node ID and token, 0600).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from tka.aum import AUM, hash_to_text
from tka.authority import Authority, Signer
from tka.errors import DecodeError, NotAuthorized, TKAError
from tka.keyfile import load_private_key
from tka.nlkeys import NLPrivate, NLPublic, NodePublic
from tka.sig import NodeKeySignature, authorize_node_key, resign_nks, sign_direct
from tka.state import State
from tka.statedir import NodeState, SignatureRecord

from ._common import EXIT_USAGE, Fail, emit, fail, read_arg
from .lock import _lock_params, _node, _passphrase
from .lock import lock as lock_group

if TYPE_CHECKING:
    # Imported where used: every 'tka' command loads this module, and most
    # never talk to a control service.
    from tka.control.client import AdminClient, ControlClient, SyncResult

__all__ = [
    "control",
    "control_client",
    "control_disable",
    "control_init",
    "control_resign",
    "register",
    "serve",
    "submit_signatures",
    "sync_after_change",
    "sync_for_status",
]


def _warn(message: str) -> None:
    click.echo(f"tka: warning: {message}", err=True)


# -- tka serve ----------------------------------------------------------------------------


def _default_store() -> str:
    import platformdirs

    return "sqlite:///" + os.path.join(platformdirs.user_data_dir("tka"), "control.db").lstrip("/")


@click.command("serve")
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    help="HOST:PORT to listen on (loopback by default; port 0 picks a free one).",
)
@click.option(
    "--store",
    "store_url",
    envvar="TKA_STORE",
    help="sqlite:///PATH (default: control.db in the user data dir) or postgresql://...",
)
@click.option("--port-file", type=click.Path(dir_okay=False), help="Write the bound port here.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--graceful-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to let requests in flight finish on SIGTERM/SIGINT.",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Key of --tls-cert.")
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="Seconds a client has to send a whole request head; then it is cut off.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Grace seconds for a request body before --body-min-rate applies (then 408).",
)
@click.option(
    "--body-min-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=16384.0,
    show_default=True,
    help="Bytes per second a request body must average after the grace.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Concurrent connections; past it new requests get 503.",
)
def serve(
    listen: str,
    store_url: str | None,
    port_file: str | None,
    log_level: str,
    graceful_timeout: float,
    tls_cert: str | None,
    tls_key: str | None,
    header_timeout: float,
    body_timeout: float,
    body_min_rate: float,
    max_connections: int,
) -> None:
    """Run the tailnet-lock control service (Tailscale's TKA RPCs over HTTP).

    Logs are JSON lines on stderr. Stop with SIGTERM or Ctrl-C: requests in
    flight finish, and every answered write is already committed. Slow
    clients are cut off (--header-timeout, --body-timeout, --body-min-rate);
    a request's token is checked before its body is read.

    \b
    Examples:
      tka control admin-token --store sqlite:///var/lib/tka/control.db --out admin.token
      tka serve --store sqlite:///var/lib/tka/control.db --listen 127.0.0.1:8080
      tka serve --store postgresql://tka@db/tka --listen 0.0.0.0:8080 \\
                --tls-cert cert.pem --tls-key key.pem
    """
    if bool(tls_cert) != bool(tls_key):
        fail("--tls-cert and --tls-key go together", EXIT_USAGE)
    try:
        from tka_server.run import (  # type: ignore[import-not-found,unused-ignore]
            Limits,
        )
        from tka_server.run import serve as run_server  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        fail(f"the server is not installed ({exc.name}): pip install 'tka[server]'", EXIT_USAGE)
    run_server(
        store_url or _default_store(),
        listen,
        port_file=port_file,
        log_level=log_level,
        graceful_timeout=graceful_timeout,
        tls_cert=tls_cert,
        tls_key=tls_key,
        limits=Limits(
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            body_min_rate=body_min_rate,
            max_connections=max_connections,
        ),
    )


# -- tka control (admin) ---------------------------------------------------------------------


def _admin(ctx: click.Context) -> AdminClient:
    from tka.control.client import AdminClient

    c: click.Context | None = ctx
    while c is not None and c.command.name != "control":
        c = c.parent
    params = c.params if c is not None else {}
    url = params.get("control_url") or os.environ.get("TKA_CONTROL_URL")
    if not url:
        fail("no control URL: pass --control URL or set TKA_CONTROL_URL", EXIT_USAGE)
    token = os.environ.get("TKA_ADMIN_TOKEN")
    path = params.get("admin_token_file") or os.environ.get("TKA_ADMIN_TOKEN_FILE")
    if path:
        try:
            with open(path, encoding="ascii") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read admin token file {path}: {exc}", EXIT_USAGE)
    if not token:
        fail(
            "no admin token: pass --admin-token-file or set TKA_ADMIN_TOKEN "
            "(mint one with 'tka control admin-token --store URL')",
            EXIT_USAGE,
        )
    return AdminClient(url, token)


@click.group("control")
@click.option(
    "--control", "control_url", metavar="URL", help="The service's URL (default: $TKA_CONTROL_URL)."
)
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False),
    help="File holding the admin token (default: $TKA_ADMIN_TOKEN_FILE or $TKA_ADMIN_TOKEN).",
)
def control(control_url: str | None, admin_token_file: str | None) -> None:
    """Administer a tka control service: tailnets, nodes, tokens, lock state.

    \b
    Example:
      tka control admin-token --store sqlite:///srv/control.db --out admin.token
      export TKA_CONTROL_URL=http://127.0.0.1:8080 TKA_ADMIN_TOKEN_FILE=admin.token
      tka control create-tailnet example
      tka control register example nodekey:3c.. --rotation-key tlpub:77.. --may-init --out n1.json
      tka control nodes example
    """


@control.command("admin-token")
@click.option("--store", "store_url", required=True, envvar="TKA_STORE", help="The store URL.")
@click.option("--label", default="", help="A note kept with the token's hash.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Write it here (0600).")
def admin_token_cmd(store_url: str, label: str, out_file: str | None) -> None:
    """Mint an admin token directly in the store (only its hash is kept).

    \b
    Example:
      tka control admin-token --store sqlite:///srv/control.db --out admin.token
    """
    from tka._fileutil import atomic_write
    from tka.control.service import ControlService
    from tka.control.store import open_store

    store = open_store(store_url)
    try:
        token = ControlService(store).mint_admin_token(label)
    finally:
        store.close()
    if out_file:
        atomic_write(os.path.abspath(out_file), (token + "\n").encode(), 0o600)
        click.echo(f"Admin token written to {out_file}.")
    else:
        click.echo(token)


@control.command("create-tailnet")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def create_tailnet_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """Create a tailnet (tailnet lock stays off until a node initializes it)."""
    out = _admin(ctx).create_tailnet(name)
    emit(out, as_json, f"Created tailnet {out['Name']}.")


@control.command("tailnets")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def tailnets_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the tailnets."""
    out = _admin(ctx).tailnets()
    lines = [f"{t['Name']}\t{t['Status']}\t{t['Nodes']} nodes" for t in out]
    emit(out, as_json, "\n".join(lines) or "(no tailnets)")


@control.command("status")
@click.argument("tailnet")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status_cmd(ctx: click.Context, tailnet: str, as_json: bool) -> None:
    """Show a tailnet's lock status: head, trusted keys, locked-out count."""
    out = _admin(ctx).status(tailnet)
    lines = [f"Tailnet {out['Name']}: lock {out['Status']}; {out['Nodes']} nodes."]
    if "Head" in out:
        lines.append(f"Head: {out['Head']}")
        lines += [f"Trusted: {k['Key']} ({k['Votes']} votes)" for k in out["TrustedKeys"]]
        lines.append(f"Locked out: {out['LockedOut']}")
    emit(out, as_json, "\n".join(lines))


def _key_arg(text: str | None, what: str) -> bytes:
    if not text:
        return b""
    try:
        return NLPublic.from_text(read_arg(text)).raw
    except DecodeError as exc:
        fail(f"{what}: {exc}", EXIT_USAGE)


@control.command("register")
@click.argument("tailnet")
@click.argument("node_key")
@click.option("--rotation-key", help="The node's rotation key (tlpub:...), kept for signing.")
@click.option("--nl-key", help="The node's tailnet-lock key (tlpub:...), if it has one.")
@click.option("--name", default="", help="A name for the node.")
@click.option(
    "--may-init",
    is_flag=True,
    help="Allow this node to initialize tailnet lock (init/begin); off by default.",
)
@click.option(
    "--out", "out_file", type=click.Path(dir_okay=False), help="Write the credentials here (0600)."
)
@click.pass_context
def register_cmd(
    ctx: click.Context,
    tailnet: str,
    node_key: str,
    rotation_key: str | None,
    nl_key: str | None,
    name: str,
    may_init: bool,
    out_file: str | None,
) -> None:
    """Register NODE_KEY in TAILNET and mint the node's token.

    Prints (or writes to --out) the node's credentials as JSON, token
    included: hand them to the node for 'tka lock login'. The token is shown
    once; the service keeps only its hash. Only a node registered with
    --may-init (or granted it later with 'tka control allow-init') may
    initialize tailnet lock.

    \b
    Example:
      tka control register example nodekey:3c.. --rotation-key tlpub:77.. --may-init --out n1.json
    """
    try:
        nk = NodePublic.from_text(read_arg(node_key))
    except DecodeError as exc:
        fail(f"node key: {exc}", EXIT_USAGE)
    out = _admin(ctx).register_node(
        tailnet,
        nk,
        _key_arg(rotation_key, "--rotation-key"),
        _key_arg(nl_key, "--nl-key"),
        name,
        may_init=may_init,
    )
    _write_credentials(out, out_file, f"Registered node {out['NodeID']}")


def _write_credentials(out: dict[str, Any], out_file: str | None, what: str) -> None:
    text = json.dumps(out, indent=1)
    if out_file:
        from tka._fileutil import atomic_write

        atomic_write(os.path.abspath(out_file), text.encode(), 0o600)
        click.echo(f"{what}; credentials written to {out_file}.")
    else:
        click.echo(text)


@control.command("allow-init")
@click.argument("tailnet")
@click.argument("node_id", type=click.IntRange(min=0))
@click.option("--revoke", is_flag=True, help="Take the permission away instead.")
@click.pass_context
def allow_init_cmd(ctx: click.Context, tailnet: str, node_id: int, revoke: bool) -> None:
    """Allow node NODE_ID to initialize tailnet lock in TAILNET (or, with --revoke, forbid it).

    \b
    Example:
      tka control allow-init example 1
    """
    _admin(ctx).set_may_init(tailnet, node_id, not revoke)
    click.echo(f"Node {node_id} {'may not' if revoke else 'may'} initialize tailnet lock.")


@control.command("remint-token")
@click.argument("tailnet")
@click.argument("node_id", type=click.IntRange(min=0))
@click.option(
    "--out", "out_file", type=click.Path(dir_okay=False), help="Write the credentials here (0600)."
)
@click.pass_context
def remint_token_cmd(ctx: click.Context, tailnet: str, node_id: int, out_file: str | None) -> None:
    """Give node NODE_ID a new token; the old one stops working at once.

    Prints (or writes to --out) the node's credentials, as 'register' does.

    \b
    Example:
      tka control remint-token example 1 --out n1.json
    """
    out = _admin(ctx).remint_node_token(tailnet, node_id)
    _write_credentials(out, out_file, f"New token for node {node_id}")


@control.command("admin-tokens")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def admin_tokens_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the admin tokens: ID, creation time, label (never the secret)."""
    import datetime

    out = _admin(ctx).admin_tokens()
    lines = [
        f"{t['ID']}\t"
        f"{datetime.datetime.fromtimestamp(t['Created'], datetime.UTC):%Y-%m-%dT%H:%M:%SZ}\t"
        f"{t['Label'] or '-'}"
        for t in out
    ]
    emit(out, as_json, "\n".join(lines) or "(no admin tokens)")


@control.command("revoke-admin-token")
@click.argument("token_id", type=click.IntRange(min=0))
@click.pass_context
def revoke_admin_token_cmd(ctx: click.Context, token_id: int) -> None:
    """Revoke admin token TOKEN_ID (see 'admin-tokens'); it stops working at once."""
    _admin(ctx).revoke_admin_token(token_id)
    click.echo(f"Revoked admin token {token_id}.")


def _nodes_text(nodes: list[Any]) -> str:
    lines = []
    for n in nodes:
        state = "admitted" if n.admitted else "LOCKED OUT"
        key = n.node_key.text() if n.node_key else "?"
        lines.append(f"{n.node_id}\t{n.name or '-'}\t{key}\t{state}\t{n.reason}")
    return "\n".join(lines) or "(no nodes)"


@control.command("nodes")
@click.argument("tailnet")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def nodes_cmd(ctx: click.Context, tailnet: str, as_json: bool) -> None:
    """List a tailnet's nodes with the authority's decision and reason."""
    from tka.control import wire

    nodes = _admin(ctx).nodes(tailnet)
    emit([wire.encode(n) for n in nodes], as_json, _nodes_text(nodes))


@control.command("locked-out")
@click.argument("tailnet")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def locked_out_cmd(ctx: click.Context, tailnet: str, as_json: bool) -> None:
    """List the nodes the authority does not admit, and why."""
    from tka.control import wire

    nodes = _admin(ctx).locked_out(tailnet)
    emit([wire.encode(n) for n in nodes], as_json, _nodes_text(nodes))


@control.command("log")
@click.argument("tailnet")
@click.option("--limit", default=50, show_default=True, help="How many updates to show.")
@click.pass_context
def log_cmd(ctx: click.Context, tailnet: str, limit: int) -> None:
    """Print the tailnet's lock log in Tailscale's v1 JSON schema (for 'tka audit')."""
    sys.stdout.buffer.write(_admin(ctx).log(tailnet, limit))
    sys.stdout.flush()


@control.command("affected-sigs")
@click.argument("tailnet")
@click.argument("key")
@click.pass_context
def affected_sigs_cmd(ctx: click.Context, tailnet: str, key: str) -> None:
    """Print the valid node-key signatures rooted in KEY (tlpub:...), one per line."""
    for s in _admin(ctx).affected_sigs(tailnet, read_arg(key)):
        click.echo(s)


@control.command("remove-node")
@click.argument("tailnet")
@click.argument("node_id", type=int)
@click.pass_context
def remove_node_cmd(ctx: click.Context, tailnet: str, node_id: int) -> None:
    """Forget a node; its token stops working."""
    _admin(ctx).delete_node(tailnet, node_id)
    click.echo(f"Removed node {node_id}.")


# -- node side: helpers for cli/lock.py -------------------------------------------------------


def control_client(ctx: click.Context, node: NodeState) -> ControlClient | None:
    """The node's control client, or ``None`` when no control URL was ever given.

    A ``--control URL`` on the ``lock`` group is saved for later commands.
    """
    from tka.control.client import ControlClient, NodeCredentials, NodeKeyPair

    url = _lock_params(ctx).get("control")
    if url:
        try:
            ControlClient(url, "", NodePublic(bytes(32)))  # checks the URL's form
        except DecodeError as exc:
            fail(f"--control: {exc}", EXIT_USAGE)
        if url != node.control_url():
            node.set_control_url(url)
    else:
        url = node.control_url()
    if not url:
        return None
    creds = NodeCredentials.load(node.path)
    keys = NodeKeyPair.load(node.path)
    if creds is None or keys is None:
        fail(
            f"this node has no credentials for control {url}: run 'tka lock node-key', have "
            "an admin run 'tka control register', then 'tka lock login CREDENTIALS'"
        )
    return ControlClient(url, creds.token, keys.public)


def _record_sync(node: NodeState, result: SyncResult) -> None:
    if result.disablement_secret is not None and node.disabled() is None:
        node.set_disabled("secret", result.disablement_secret)


def _sync(ctx: click.Context, node: NodeState, authority: Authority | None) -> SyncResult | None:
    from tka.control.client import sync_node

    client = control_client(ctx, node)
    if client is None or node.disabled() is not None:
        return None
    _, result = sync_node(client, node.store, authority)
    _record_sync(node, result)
    return result


def sync_after_change(node: NodeState, authority: Authority, aums: list[AUM]) -> None:
    """Send a change just made on this node to control (when one is set).

    A change that lost a fork to a concurrent one is reported as a warning:
    every node and the service still agree on the winner.
    """
    ctx = click.get_current_context()
    try:
        result = _sync(ctx, node, authority)
    except TKAError as exc:
        fail(
            f"the change is saved on this node but was not sent to control: {exc}; "
            "run 'tka lock sync' to send it"
        )
    if result is None or not aums:
        return
    if result.control_head != aums[-1].hash and authority.head_hash != aums[-1].hash:
        _warn(
            "this change lost a fork to a concurrent change (by Tailscale's fork rules); "
            f"the active head is {hash_to_text(authority.head_hash)}"
        )


def sync_for_status(ctx: click.Context, node: NodeState) -> None:
    """Sync before showing status; a failure is a warning (status works offline)."""
    try:
        _sync(ctx, node, node.authority())
    except (TKAError, Fail) as exc:
        _warn(f"could not sync with control: {exc}")


def control_init(
    client: ControlClient, node: NodeState, state: State, priv: NLPrivate
) -> Authority:
    """Initialize lock through control: begin, sign every node, finish, then keep the genesis.

    Nothing is stored on this node unless control accepted both steps.
    """
    from tka.control.client import sync_node
    from tka.control.errors import ControlRequestError
    from tka.storage.memory import MemoryStore

    _, genesis = Authority.create(MemoryStore(), state, Signer((priv.raw,)))
    need = client.init_begin(genesis)
    sigs: dict[int, bytes] = {}
    records = []
    for info in need:
        if info.node_public is None:
            raise ControlRequestError(
                f"control {client.url}: init/begin named a node without a key"
            )
        sig = sign_direct(priv.raw, info.node_public.raw, info.rotation_pubkey or None)
        sigs[info.node_id] = sig.to_bytes()
        records.append(
            SignatureRecord(info.node_public.text(), sig.to_bytes(), priv.public().cli_text())
        )
    client.init_finish(sigs)
    authority = Authority.bootstrap(node.store, genesis)
    node.record_signatures(records)
    try:
        sync_node(client, node.store, authority)  # tells control this node's head
    except TKAError as exc:
        _warn(f"initialized, but the first sync failed: {exc}")
    return authority


def submit_signatures(ctx: click.Context, node: NodeState, records: list[SignatureRecord]) -> None:
    """Send signatures made on this node to control (when one is set)."""
    client = control_client(ctx, node)
    if client is None:
        return
    for rec in records:
        try:
            client.sign(rec.signature)
        except TKAError as exc:
            fail(f"signature for {rec.node_key} is saved here but control refused it: {exc}")


def control_resign(
    ctx: click.Context,
    node: NodeState,
    priv: NLPrivate,
    authority: Authority,
    removed: set[bytes],
    local: list[SignatureRecord],
) -> list[SignatureRecord]:
    """Before removing keys: re-sign, with this node's key, what control says they signed.

    Submits the re-signatures (and *local* ones, found in this node's
    records) to control before the removal is made, so no node is locked
    out in between. Returns the extra records made from control's list.
    """
    from tka.control.errors import ControlRequestError

    client = control_client(ctx, node)
    if client is None:
        return []
    done = {r.node_key for r in local}
    extra: list[SignatureRecord] = []
    for key_id in sorted(removed):
        for raw in client.affected_sigs(key_id):
            try:
                sig = NodeKeySignature.from_bytes(raw)
                nk = NodePublic.from_binary(sig.pubkey or b"")
                authorize_node_key(authority.state, nk.raw, sig)
            except (DecodeError, NotAuthorized) as exc:
                fail(f"control returned a signature that does not verify here: {exc}")
            if sig.authorizing_key_id() != key_id or nk.text() in done:
                continue
            new = sign_direct(priv.raw, nk.raw, sig.wrapping_public())
            extra.append(SignatureRecord(nk.text(), new.to_bytes(), priv.public().cli_text()))
            done.add(nk.text())
    for rec in local + extra:
        try:
            client.sign(rec.signature)
        except ControlRequestError as exc:
            if exc.status == 404 and rec in local:
                continue  # a node this control plane does not know
            fail(f"re-signing {rec.node_key} failed, nothing was removed: {exc}")
    return extra


def control_disable(
    ctx: click.Context, node: NodeState, authority: Authority, secret: bytes
) -> None:
    """Disable lock for the whole tailnet through control (when one is set)."""
    from tka.control.client import sync_node

    client = control_client(ctx, node)
    if client is None:
        return
    try:
        # Control accepts a disablement at a head it holds: sync first.
        _, result = sync_node(client, node.store, authority)
        if result.disablement_secret is not None:
            return  # already disabled through control (the caller records it)
        client.disable(authority.head_hash, secret)
    except TKAError as exc:
        fail(f"control did not disable tailnet lock: {exc}")


# -- node side: commands ------------------------------------------------------------------------


@click.command("node-key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def node_key_cmd(ctx: click.Context, as_json: bool) -> None:
    """Print this node's node key (nodekey:...), creating it on first use.

    It stands for the node's WireGuard key: the key an admin registers
    ('tka control register') and signers sign.
    """
    from tka.control.client import NodeKeyPair

    with _node(ctx) as node:
        pair = NodeKeyPair.load(node.path)
        created = pair is None
        if pair is None:
            pair = NodeKeyPair.generate()
            pair.save(node.path)
    emit({"NodeKey": pair.public.text(), "Created": created}, as_json, pair.public.text())


@click.command("login")
@click.argument("credentials")
@click.pass_context
def login_cmd(ctx: click.Context, credentials: str) -> None:
    """Keep the CREDENTIALS file an admin made ('tka control register') and sync.

    Needs --control URL (saved for later commands) unless one was set before.

    \b
    Example:
      tka lock --control http://127.0.0.1:8080 login n1.json
    """
    from tka.control.client import ControlClient, NodeCredentials, NodeKeyPair

    try:
        with open(credentials, "rb") as f:
            data = f.read()
    except OSError as exc:
        fail(f"cannot read {credentials}: {exc.strerror}", EXIT_USAGE)
    creds = NodeCredentials.from_json(data)
    declared = json.loads(data).get("NodeKey")
    with _node(ctx) as node:
        pair = NodeKeyPair.load(node.path)
        if pair is None:
            fail("this node has no node key yet: run 'tka lock node-key' first")
        if declared is not None and declared != pair.public.text():
            fail("the credentials are for another node key than this node's")
        url = _lock_params(ctx).get("control") or node.control_url()
        if not url:
            fail("no control URL: pass --control URL", EXIT_USAGE)
        client = ControlClient(url, creds.token, pair.public)
        client.map()  # the token works, or this fails with the service's reason
        creds.save(node.path)
        if url != node.control_url():
            node.set_control_url(url)
        result = _sync(ctx, node, node.authority())
    what = f"; {result.action}" if result is not None else ""
    click.echo(f"Logged in to {url} as node {creds.node_id} of tailnet {creds.tailnet}{what}.")


@click.command("sync")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sync_cmd(ctx: click.Context, as_json: bool) -> None:
    """Sync this node's AUMs with control now (bootstrap, offer, send).

    \b
    Example:
      tka lock sync
    """
    with _node(ctx) as node:
        if control_client(ctx, node) is None:
            fail("no control URL: pass --control URL", EXIT_USAGE)
        if node.disabled() is not None:
            emit({"Action": "disabled"}, as_json, "Tailnet lock is disabled on this node.")
            return
        result = _sync(ctx, node, node.authority())
    assert result is not None
    doc = {
        "Action": result.action,
        "Head": hash_to_text(result.head) if result.head else None,
        "ControlHead": hash_to_text(result.control_head) if result.control_head else None,
        "Received": result.received,
        "Sent": result.sent,
    }
    head = f"; head {doc['Head']}" if doc["Head"] else ""
    emit(doc, as_json, f"Sync: {result.action}, {result.received} in, {result.sent} out{head}.")
    if result.action.endswith("synced") and not result.agreed:
        _warn("the service ended on another head: run 'tka lock sync' again")


@click.command("rotate-node-key")
@click.option(
    "--rotation-key",
    "rotation_key_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="File holding the node's rotation private key (nlpriv:...).",
)
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

    rot = load_private_key(rotation_key_file, _passphrase(_lock_params(ctx).get("passphrase_file")))
    with _node(ctx) as node:
        client = control_client(ctx, node)
        if client is None:
            fail("no control URL: pass --control URL", EXIT_USAGE)
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


# -- registration ------------------------------------------------------------------------------


def register(cli: click.Group) -> None:
    """Add ``serve``, ``control`` and the node-side ``lock`` commands to *cli*."""
    cli.add_command(serve)
    cli.add_command(control)
    for cmd in (node_key_cmd, login_cmd, sync_cmd, rotate_node_key_cmd):
        lock_group.add_command(cmd)
