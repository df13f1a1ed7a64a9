"""``tka serve`` and ``tka control ...``.

Two parts:

* ``tka serve``: run the control service (needs ``pip install 'tka[server]'``);
* ``tka control ...``: admin commands (mint the admin token, create tailnets,
  register nodes and mint their tokens, list nodes and who is locked out, read
  the lock log), over the admin API.

The node side of ``tka lock --control URL`` lives in ``cli/node.py`` (the
helpers ``lock`` uses) and ``cli/node_control.py`` (``node-key``, ``login``,
``sync``, ``rotate-node-key``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from tka.errors import DecodeError
from tka.nlkeys import NLPublic, NodePublic

from ._common import (
    EXIT_USAGE,
    MAX_SMALL_INPUT_BYTES,
    Fail,
    emit,
    fail,
    force_option,
    global_opt,
    output_plan,
    read_arg,
    read_input,
    write_output,
)

if TYPE_CHECKING:
    # Imported where used: every 'tka' command loads this module, and most
    # never talk to a control service.
    from tka.control.client import AdminClient

__all__ = ["control", "register", "serve"]


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
    "--first-byte-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds a new connection has to send its first byte; then it is closed.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
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
    help="Concurrent connections (lowered to fit the descriptor limit); when full, "
    "the longest-idle connection is closed for a new one, else 503.",
)
@click.option(
    "--max-connections-per-address",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Concurrent connections per client address (behind --trusted-proxy: "
    "requests per forwarded address); 503 past it.",
)
@click.option(
    "--spare-fds",
    type=click.IntRange(min=0),
    default=128,
    show_default=True,
    help="File descriptors kept out of --max-connections for the store and logs.",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="ADDRESS[/BITS]",
    help="A reverse proxy whose X-Forwarded-For is believed (repeatable); its "
    "requests count against the right-most untrusted address in it.",
)
@click.option(
    "--backlog",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="Connections the kernel queues until accepted (capped by net.core.somaxconn).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=256),
    default=1,
    show_default=True,
    help="Worker processes sharing the listening socket (use every core). Limits "
    "kept in the database (disable attempts) hold across them; --max-connections "
    "and --max-connections-per-address apply per worker; the log budget is shared.",
)
@click.option(
    "--log-bytes-per-minute",
    type=click.IntRange(min=10_000),
    default=1_000_000,
    show_default=True,
    help="Most log written in any minute; repeated lines past it are counted and summarized.",
)
def serve(
    listen: str,
    store_url: str | None,
    port_file: str | None,
    log_level: str,
    graceful_timeout: float,
    tls_cert: str | None,
    tls_key: str | None,
    first_byte_timeout: float,
    header_timeout: float,
    body_timeout: float,
    body_min_rate: float,
    max_connections: int,
    max_connections_per_address: int,
    spare_fds: int,
    trusted_proxies: tuple[str, ...],
    backlog: int,
    workers: int,
    log_bytes_per_minute: int,
) -> None:
    """Run the tailnet-lock control service (Tailscale's TKA RPCs over HTTP).

    Logs are JSON lines on stderr. Stop with SIGTERM or Ctrl-C: requests in
    flight finish, and every answered write is already committed. Slow
    clients are cut off (--first-byte-timeout, --header-timeout,
    --body-timeout, --body-min-rate); connections are capped per address and
    overall, idle ones making room for new ones; a request's token is checked
    before its body is read. See SECURITY.md for what each limit protects.

    \b
    Examples:
      tka control admin-token --store sqlite:///var/lib/tka/control.db --out admin.token
      tka serve --store sqlite:///var/lib/tka/control.db --listen 127.0.0.1:8080
      tka serve --store postgresql://tka@db/tka --listen 0.0.0.0:8080 \\
                --tls-cert cert.pem --tls-key key.pem --workers 4
    """
    if bool(tls_cert) != bool(tls_key):
        fail("--tls-cert and --tls-key go together", EXIT_USAGE)
    if port_file:
        # Refused (exit 2) before anything starts; a regular file is the port
        # file of an earlier run, which is what this option exists to update.
        output_plan(port_file, update=True, stdout=False, streams=False)
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
            first_byte_timeout=first_byte_timeout,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            body_min_rate=body_min_rate,
            max_connections=max_connections,
            max_connections_per_address=max_connections_per_address,
            spare_fds=spare_fds,
            trusted_proxies=trusted_proxies,
            backlog=backlog,
        ),
        log_bytes_per_minute=log_bytes_per_minute,
        workers=workers,
    )


#: The service uses none of the node-side global options (--state-dir,
#: --passphrase-file, --control, --lock-timeout): 'tka serve --help' lists only --debug.
serve.tka_global_options = ("debug",)  # type: ignore[attr-defined]


# -- tka control (admin) ---------------------------------------------------------------------


def _admin(ctx: click.Context) -> AdminClient:
    from tka.control.client import AdminClient

    c: click.Context | None = ctx
    while c is not None and c.command.name != "control":
        c = c.parent
    params = c.params if c is not None else {}
    url = (
        params.get("control_url") or global_opt(ctx, "control") or os.environ.get("TKA_CONTROL_URL")
    )
    if not url:
        fail("no control URL: pass --control URL or set TKA_CONTROL_URL", EXIT_USAGE)
    token = os.environ.get("TKA_ADMIN_TOKEN")
    path = params.get("admin_token_file") or os.environ.get("TKA_ADMIN_TOKEN_FILE")
    if path:
        data = read_input(path, "admin token file", MAX_SMALL_INPUT_BYTES)
        try:
            token = data.decode("ascii").strip()
        except UnicodeDecodeError:
            fail(f"admin token file {path} is not ASCII text", EXIT_USAGE)
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
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write it to this new file (0600; '-': stdout, as without --out).",
)
@force_option
def admin_token_cmd(store_url: str, label: str, out_file: str | None, force: bool) -> None:
    """Mint an admin token directly in the store (only its hash is kept).

    The --out file must be new (--force replaces a file); a folder, link,
    device or FIFO is refused before anything is minted.

    \b
    Example:
      tka control admin-token --store sqlite:///srv/control.db --out admin.token
    """
    _check_secret_out(out_file, force)  # before anything is minted
    from tka.control.service import ControlService
    from tka.control.store import open_store

    store = open_store(store_url)
    try:
        token = ControlService(store).mint_admin_token(label)
    finally:
        store.close()
    lost = "; the token was minted but not kept: revoke it (see 'tka control admin-tokens')"
    if _write_secret(out_file, (token + "\n").encode(), force, lost):
        click.echo(f"Admin token written to {out_file}.")


def _check_secret_out(out_file: str | None, force: bool) -> None:
    """Refuse an --out path before anything is minted (exit 2 naming what is there)."""
    if force and not out_file:
        fail("--force applies to --out FILE", EXIT_USAGE)
    if out_file:
        output_plan(out_file, secret=True, force=force)


def _write_secret(out_file: str | None, data: bytes, force: bool, lost: str) -> bool:
    """Write a just-minted secret to --out (or stdout); whether it went to a file.

    The path was checked before minting; if the write still fails, the
    message ends with *lost*, saying how to recover.
    """
    if not out_file or out_file == "-":
        sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
        sys.stdout.flush()
        return False
    try:
        write_output(out_file, data, secret=True, force=force)
    except Fail as exc:
        raise Fail(f"{exc}{lost}", exc.code) from None
    return True


@control.command("create-tailnet")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def create_tailnet_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """Create a tailnet (tailnet lock stays off until a node initializes it).

    \b
    Example:
      tka control create-tailnet example
    """
    out = _admin(ctx).create_tailnet(name)
    emit(out, as_json, f"Created tailnet {out['Name']}.")


@control.command("tailnets")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def tailnets_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the tailnets.

    \b
    Example:
      tka control tailnets --json
    """
    out = _admin(ctx).tailnets()
    lines = [f"{t['Name']}\t{t['Status']}\t{t['Nodes']} nodes" for t in out]
    emit(out, as_json, "\n".join(lines) or "(no tailnets)")


@control.command("status")
@click.argument("tailnet")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status_cmd(ctx: click.Context, tailnet: str, as_json: bool) -> None:
    """Show a tailnet's lock status: head, trusted keys, locked-out count.

    \b
    Example:
      tka control status example
    """
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
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the credentials to this new file (0600; '-': stdout, as without --out).",
)
@force_option
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
    force: bool,
) -> None:
    """Register NODE_KEY in TAILNET and mint the node's token.

    Prints (or writes to --out) the node's credentials as JSON, token
    included: hand them to the node for 'tka lock login'. The token is shown
    once; the service keeps only its hash. Only a node registered with
    --may-init (or granted it later with 'tka control allow-init') may
    initialize tailnet lock. The --out file must be new (--force replaces a
    file); a folder, link, device or FIFO is refused before registering.

    \b
    Example:
      tka control register example nodekey:3c.. --rotation-key tlpub:77.. --may-init --out n1.json
    """
    try:
        nk = NodePublic.from_text(read_arg(node_key))
    except DecodeError as exc:
        fail(f"node key: {exc}", EXIT_USAGE)
    _check_secret_out(out_file, force)
    out = _admin(ctx).register_node(
        tailnet,
        nk,
        _key_arg(rotation_key, "--rotation-key"),
        _key_arg(nl_key, "--nl-key"),
        name,
        may_init=may_init,
    )
    _write_credentials(out, out_file, force, f"Registered node {out['NodeID']}")


def _write_credentials(out: dict[str, Any], out_file: str | None, force: bool, what: str) -> None:
    text = json.dumps(out, indent=1)
    lost = (
        f"; node {out.get('NodeID')}'s new token is lost: run 'tka control remint-token "
        f"{out.get('Tailnet')} {out.get('NodeID')} --out FILE'"
    )
    if _write_secret(out_file, (text + "\n").encode(), force, lost):
        click.echo(f"{what}; credentials written to {out_file}.")


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
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the credentials to this new file (0600; '-': stdout, as without --out).",
)
@force_option
@click.pass_context
def remint_token_cmd(
    ctx: click.Context, tailnet: str, node_id: int, out_file: str | None, force: bool
) -> None:
    """Give node NODE_ID a new token; the old one stops working at once.

    Prints (or writes to --out) the node's credentials, as 'register' does.
    The --out file must be new (--force replaces a file, such as the node's
    old credentials); it is checked before the old token is revoked.

    \b
    Example:
      tka control remint-token example 1 --out n1.json
    """
    _check_secret_out(out_file, force)
    out = _admin(ctx).remint_node_token(tailnet, node_id)
    _write_credentials(out, out_file, force, f"New token for node {node_id}")


@control.command("admin-tokens")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def admin_tokens_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the admin tokens: ID, creation time, label (never the secret).

    \b
    Example:
      tka control admin-tokens --json
    """
    out = _admin(ctx).admin_tokens()
    emit(out, as_json, _token_table(out, ["ID"]) or "(no admin tokens)")


def _token_table(tokens: list[dict[str, Any]], keys: list[str]) -> str:
    """Tokens as a tab-separated table: *keys*, then creation time (UTC) and label."""
    import datetime

    if not tokens:
        return ""
    lines = ["\t".join([*(k.upper() for k in keys), "CREATED", "LABEL"])]
    for t in tokens:
        created = datetime.datetime.fromtimestamp(t["Created"], datetime.UTC)
        cells = [str(t[k]) for k in keys]
        lines.append("\t".join([*cells, f"{created:%Y-%m-%dT%H:%M:%SZ}", t["Label"] or "-"]))
    return "\n".join(lines)


@control.command("revoke-admin-token")
@click.argument("token_id", type=click.IntRange(min=0))
@click.pass_context
def revoke_admin_token_cmd(ctx: click.Context, token_id: int) -> None:
    """Revoke admin token TOKEN_ID (see 'admin-tokens'); it stops working at once.

    \b
    Example:
      tka control revoke-admin-token 2
    """
    _admin(ctx).revoke_admin_token(token_id)
    click.echo(f"Revoked admin token {token_id}.")


# -- front tokens (a patched Headscale relaying to tka serve) ---------------------------------


@control.command("front-token")
@click.argument("tailnet")
@click.option("--label", default="", help="A note kept with the token's hash.")
@click.option(
    "--store",
    "store_url",
    help="Mint directly in the store at this URL (no running service or admin token needed).",
)
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write it to this new file (0600); '-' prints it.",
)
@force_option
@click.pass_context
def front_token_cmd(
    ctx: click.Context, tailnet: str, label: str, store_url: str | None, out_file: str, force: bool
) -> None:
    """Mint a front token for TAILNET (only its hash is kept).

    A front (a patched Headscale) uses it to feed its nodes, relay their
    tailnet-lock requests and read signatures and head
    (integrations/headscale/FRONT-API.md). It is scoped to TAILNET and can
    neither sign nor admit a node by itself. The --out file must be new
    (--force replaces a file).

    \b
    Examples:
      tka control front-token example --label hs --out front.token
      tka control front-token example --store sqlite:control.db --out front2.token
    """
    _check_secret_out(out_file, force)
    if store_url:
        from tka.control.service import ControlService
        from tka.control.store import open_store

        store = open_store(store_url)
        try:
            out = ControlService(store).mint_front_token(tailnet, label)
        finally:
            store.close()
    else:
        out = _admin(ctx).mint_front_token(tailnet, label)
    lost = (
        f"; front token {out['ID']} was minted but not kept: revoke it with "
        f"'tka control revoke-front-token {out['ID']}'"
    )
    if _write_secret(out_file, (str(out["Token"]) + "\n").encode(), force, lost):
        click.echo(f"Front token {out['ID']} for tailnet {tailnet} written to {out_file}.")


@control.command("front-tokens")
@click.argument("tailnet", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def front_tokens_cmd(ctx: click.Context, tailnet: str | None, as_json: bool) -> None:
    """List the front tokens (of TAILNET): ID, tailnet, creation time, label (never the secret).

    \b
    Example:
      tka control front-tokens example --json
    """
    out = _admin(ctx).front_tokens(tailnet)
    emit(out, as_json, _token_table(out, ["ID", "Tailnet"]) or "(no front tokens)")


@control.command("revoke-front-token")
@click.argument("token_id", type=click.IntRange(min=0))
@click.pass_context
def revoke_front_token_cmd(ctx: click.Context, token_id: int) -> None:
    """Revoke front token TOKEN_ID (see 'front-tokens'); it stops working at once.

    \b
    Example:
      tka control revoke-front-token 1
    """
    _admin(ctx).revoke_front_token(token_id)
    click.echo(f"Revoked front token {token_id}.")


def _emit_nodes(nodes: Iterator[Any], as_json: bool) -> None:
    """Print nodes as they come, a page at a time: a table, or (``--json``) one JSON list.

    The JSON is what ``json.dumps(list, indent=2)`` prints, written item by
    item, so memory stays one page whatever the tailnet's size.
    """
    import json

    from tka.control import wire

    out = sys.stdout
    first = True
    for n in nodes:
        if as_json:
            item = json.dumps(wire.encode(n), indent=2).replace("\n", "\n  ")
            out.write(("[\n  " if first else ",\n  ") + item)
        else:
            if first:
                out.write("NODE-ID\tNAME\tNODE-KEY\tDECISION\tREASON\n")
            state = "admitted" if n.admitted else "LOCKED OUT"
            key = n.node_key.text() if n.node_key else "?"
            out.write(f"{n.node_id}\t{n.name or '-'}\t{key}\t{state}\t{n.reason}\n")
        first = False
    if as_json:
        out.write("[]\n" if first else "\n]\n")
    elif first:
        out.write("(no nodes)\n")
    out.flush()


@control.command("nodes")
@click.argument("tailnet")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def nodes_cmd(ctx: click.Context, tailnet: str, as_json: bool) -> None:
    """List a tailnet's nodes with the authority's decision and reason.

    \b
    Example:
      tka control nodes example
    """
    _emit_nodes(_admin(ctx).iter_nodes(tailnet), as_json)


@control.command("locked-out")
@click.argument("tailnet")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def locked_out_cmd(ctx: click.Context, tailnet: str, as_json: bool) -> None:
    """List the nodes the authority does not admit, and why.

    \b
    Example:
      tka control locked-out example --json
    """
    _emit_nodes(_admin(ctx).iter_nodes(tailnet, locked_out=True), as_json)


@control.command("log")
@click.argument("tailnet")
@click.option("--limit", default=50, show_default=True, help="How many updates to show.")
@click.pass_context
def log_cmd(ctx: click.Context, tailnet: str, limit: int) -> None:
    """Print the tailnet's lock log in Tailscale's v1 JSON schema (for 'tka audit').

    \b
    Example:
      tka control log example --limit 1000 > log.json && tka audit log.json
    """
    sys.stdout.buffer.write(_admin(ctx).log(tailnet, limit))
    sys.stdout.flush()


@control.command("affected-sigs")
@click.argument("tailnet")
@click.argument("key")
@click.pass_context
def affected_sigs_cmd(ctx: click.Context, tailnet: str, key: str) -> None:
    """Print the valid node-key signatures rooted in KEY (tlpub:...), one per line.

    \b
    Example:
      tka control affected-sigs example tlpub:9c..
    """
    for s in _admin(ctx).affected_sigs(tailnet, read_arg(key)):
        click.echo(s)


@control.command("remove-node")
@click.argument("tailnet")
@click.argument("node_id", type=int)
@click.pass_context
def remove_node_cmd(ctx: click.Context, tailnet: str, node_id: int) -> None:
    """Forget a node; its token stops working.

    \b
    Example:
      tka control remove-node example 7
    """
    _admin(ctx).delete_node(tailnet, node_id)
    click.echo(f"Removed node {node_id}.")


# -- registration ------------------------------------------------------------------------------


def register(cli: click.Group) -> None:
    """Add ``serve`` and ``control`` to *cli*."""
    cli.add_command(serve)
    cli.add_command(control)
