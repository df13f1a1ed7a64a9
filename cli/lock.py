"""``tka lock ...``: the tailnet-lock lifecycle of one node, offline or through control.

Each node has a state directory (``--state-dir``, else ``$TKA_STATE_DIR``,
else the platform's user data directory) holding its tailnet-lock key and its
AUMs in Tailscale's on-disk layout. Nodes exchange changes as files
(``lock export`` / ``lock import``), in any order, or through a control
service (see :mod:`tka_cli.node`).

Imports of the library are inside the commands: ``tka lock status`` loads
only what it shows.
"""

from __future__ import annotations

import base64
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from ._common import (
    EXIT_REFUSED,
    EXIT_USAGE,
    MAX_SMALL_INPUT_BYTES,
    TkaGroup,
    emit,
    fail,
    force_option,
    output_plan,
    parse_key_arg,
    read_arg,
    read_input,
    rotation_key_option,
    show_progress,
    warn,
    write_output,
)
from .node import open_node, passphrase, private_key
from .status_text import offline_status_text, status_text

if TYPE_CHECKING:
    from tka.aum import AUM
    from tka.authority import Authority, Signer
    from tka.builder import UpdateBuilder
    from tka.key import Key
    from tka.nlkeys import NLPrivate, NLPublic, NodePublic
    from tka.statedir import NodeState, SignatureRecord

__all__ = ["demo", "keygen", "lock"]


# -- helpers ---------------------------------------------------------------------------


def _signer(ctx: click.Context, node: NodeState) -> tuple[NLPrivate, Signer]:
    from tka.authority import Signer

    priv = private_key(ctx, node)
    return priv, Signer((priv.raw,))


def _require_trusted(authority: Authority, key: NLPublic) -> None:
    if not authority.key_trusted(key.raw):
        fail(
            f"this node's key {key.cli_text()} is not trusted by the authority: "
            "sign on a node whose key is trusted"
        )


def _require_enabled(ctx: click.Context, node: NodeState, *, catch_up: bool = False) -> Authority:
    """The authority, refusing a node where lock is off.

    With *catch_up* and a control service, sync first, so that the command
    acts on the tailnet's latest head (``status`` and ``sync`` do this too;
    other changes are made where the node stands and synced after, so two
    nodes may fork as Tailscale nodes can).
    """
    from .node import control_url, sync_for_status

    if catch_up and control_url(ctx, node):
        sync_for_status(ctx, node)
    authority = node.require_authority()
    disabled = node.disabled()
    if disabled is not None:
        how = (
            "'tka lock local-enable' undoes it"
            if disabled.get("how") == "local"
            else "start a new lock with 'tka lock init'"
        )
        fail(f"tailnet lock is disabled on this node ({how})")
    return authority


def _parse_node_key(text: str) -> NodePublic:
    from tka.errors import DecodeError
    from tka.nlkeys import NodePublic

    try:
        return NodePublic.from_text(text)
    except DecodeError as exc:
        fail(f"node key: {exc}", EXIT_USAGE)


def _parse_signature(text: str) -> bytes:
    """A serialized node-key signature given as base64 (as printed) or hex."""
    import binascii

    text = text.strip()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return bytes.fromhex(text)
    except ValueError:
        fail("signature: expected base64 (as 'tka lock sign' prints it) or hex", EXIT_USAGE)


def _finalize(node: NodeState, authority: Authority, builder: UpdateBuilder) -> list[AUM]:
    from .node import sync_after_change

    aums = builder.finalize(node.store)
    if aums:
        authority.inform(node.store, aums)
        sync_after_change(node, authority, aums)  # control: send the change (no-op without one)
    return aums


def _key_text(key_id: bytes) -> str:
    return f"tlpub:{key_id.hex()}"


# -- the group ------------------------------------------------------------------------


@click.group(
    "lock",
    cls=TkaGroup,
    # The node-side control commands, in their own module (neither imports the other).
    lazy={
        "node-key": ("node_control", "node_key_cmd"),
        "login": ("node_control", "login_cmd"),
        "sync": ("node_control", "sync_cmd"),
        "rotate-node-key": ("node_control", "rotate_node_key_cmd"),
    },
)
def lock() -> None:
    """Manage tailnet lock on this node (Tailscale's 'tailscale lock').

    With a control URL (--control URL, remembered afterwards, or
    $TKA_CONTROL_URL) the node talks to a control service as a Tailscale
    node does: init, sign, add/remove, disable and revoke-keys go through
    it, and status syncs first. Without one, nodes exchange export files.

    The options --state-dir, --passphrase-file, --control, --lock-timeout
    and --debug may be given before or after the subcommand.

    \b
    Example lifecycle (two nodes exchanging files):
      tka lock key                                  # prints tlpub:...; run on each signer
      tka lock init --gen-disablements 2 --confirm tlpub:AAA tlpub:BBB
      tka lock sign nodekey:...                     # prints the node-key signature
      tka lock export /tmp/a.json                   # carry to the other node
      tka --state-dir node2 lock key                # creates node2 (import needs it)
      tka --state-dir node2 lock import /tmp/a.json
      tka lock status
    """


@lock.command("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def key_cmd(ctx: click.Context, as_json: bool) -> None:
    """Print this node's tailnet-lock public key, creating the key on first use.

    This (with 'init', 'login' and 'node-key') is a command that creates the
    state directory; the others refuse a directory that does not exist. The
    private key is stored 0600 (encrypted when a passphrase file is given)
    and never printed.

    \b
    Examples:
      tka lock key
      tka --debug lock --state-dir ./node1 --passphrase-file pw.txt key
    """
    with open_node(ctx, create=True) as node:
        created = False
        if not node.has_key():
            node.create_key(passphrase(ctx))
            created = True
        pub = node.public_key()
    emit({"PublicKey": pub.cli_text(), "Created": created}, as_json, pub.cli_text())


@lock.command("init")
@click.argument("args", nargs=-1)
@click.option(
    "--gen-disablements", default=1, show_default=True, help="Disablement secrets to generate."
)
@click.option(
    "--gen-disablement-for-support",
    is_flag=True,
    help="Also generate a disablement secret handed to the control service's operator "
    "(needs a control URL).",
)
@click.option("--confirm", is_flag=True, help="Really initialize (otherwise only explain).")
@click.pass_context
def init_cmd(
    ctx: click.Context,
    args: tuple[str, ...],
    gen_disablements: int,
    gen_disablement_for_support: bool,
    confirm: bool,
) -> None:
    """Initialize tailnet lock with trusted KEYs (tlpub:<hex>[?votes]) and disablement values.

    Without --confirm it only explains what it would do. Generated
    disablement secrets are printed once: store them offline, they are the
    only way to switch tailnet lock off if every signing key is lost.

    --gen-disablement-for-support follows Tailscale: one more secret is
    made and sent to the control service instead of being printed; on a
    self-hosted service that means whoever runs 'tka serve' and its store
    can disable lock with it. Without a control URL it is refused.

    On a node where lock was disabled by a secret, init starts a new lock:
    the old chain is moved aside (old-chain-* in the state directory).

    \b
    Example:
      tka lock init --gen-disablements 2 --confirm tlpub:1f.. tlpub:9c..?2
    """
    from tka import disablement
    from tka.errors import DecodeError

    if not 0 <= gen_disablements <= 32:
        fail("--gen-disablements must be between 0 and 32", EXIT_USAGE)
    keys: list[Key] = []
    values: list[bytes] = []
    for i, raw in enumerate(args, start=1):
        arg = read_arg(raw)
        if arg.startswith(("disablement:", "disablement-secret:")):
            try:
                values.append(disablement.parse_value(arg))
            except DecodeError as exc:
                fail(f"argument {i}: {exc}", EXIT_USAGE)
            continue
        keys.append(parse_key_arg(arg, i))
    if not keys:
        fail("missing argument: expected one or more trusted keys (tlpub:...)", EXIT_USAGE)
    if not values and gen_disablements == 0 and not gen_disablement_for_support:
        fail("at least one disablement value is required: use --gen-disablements", EXIT_USAGE)
    with open_node(ctx, create=True) as node:
        _init(ctx, node, keys, values, gen_disablements, gen_disablement_for_support, confirm)


def _init(
    ctx: click.Context,
    node: NodeState,
    keys: list[Key],
    values: list[bytes],
    gen_disablements: int,
    for_support: bool,
    confirm: bool,
) -> None:
    import secrets

    from tka import disablement
    from tka.authority import Authority
    from tka.state import State

    from .node import control_client, control_init

    disabled = node.disabled()
    if node.authority() is not None and (disabled is None or disabled.get("how") != "secret"):
        fail("tailnet lock is already initialized on this node")
    me = node.public_key()
    if not any(k.key_id == me.raw for k in keys):
        fail("this node's tailnet-lock key must be one of the trusted keys")
    client = control_client(ctx, node)
    if for_support and client is None:
        fail(
            "--gen-disablement-for-support hands a secret to the control service's operator, "
            "and this node has no control service (pass --control URL)",
            EXIT_USAGE,
        )
    lines = ["You are initializing tailnet lock with the following trusted signing keys:"]
    lines += [f" - tlpub:{(k.public or b'').hex()} ({k.votes} votes)" for k in keys]
    if not confirm:
        lines += [
            "",
            f"{gen_disablements} disablement secrets will be generated.",
            "If this is correct, re-run this command with --confirm.",
        ]
        if for_support:
            lines.insert(
                -1,
                "A disablement secret for the control service's operator will be "
                "generated and sent to it.",
            )
        click.echo("\n".join(lines))
        return
    secrets_out = [disablement.generate_secret() for _ in range(gen_disablements)]
    values += [disablement.disablement_kdf(s) for s in secrets_out]
    support = disablement.generate_secret() if for_support else b""
    if support:
        values.append(disablement.disablement_kdf(support))
    priv, signer = _signer(ctx, node)
    entropy = secrets.token_bytes(16)
    state = State(
        disablement_values=tuple(values),
        keys=tuple(keys),
        state_id1=int.from_bytes(entropy[:8], "little"),
        state_id2=int.from_bytes(entropy[8:], "little"),
    )
    if node.authority() is not None:
        archived = node.archive_chain()
        lines.insert(0, f"Lock was disabled here: the old chain is kept in {archived}.")
    if client is None:
        authority, _genesis = Authority.create(node.store, state, signer)
    else:
        authority = control_init(client, node, state, priv, support)
    click.echo("\n".join(lines))
    click.echo("")
    if secrets_out:
        click.echo(
            f"{len(secrets_out)} disablement secrets have been generated and are printed "
            "below. Store them offline now: they WILL NOT be shown again."
        )
        for s in secrets_out:
            click.echo(f"\t{disablement.format_secret(s)}")
    if support:
        click.echo("A disablement secret for the control service's operator was sent to it.")
    click.echo(f"Tailnet lock initialized; head {authority.head.hash_text}.")


def _own_signature(ctx: click.Context, node: NodeState) -> tuple[Any, Any, Any] | None:
    """(node key, its signature from control, visible peers) when control is reachable."""
    from tka.control.client import NodeKeyPair
    from tka.errors import TKAError

    from ._common import Fail
    from .node import control_client

    try:
        client = control_client(ctx, node)
        if client is None:
            return None
        pair = NodeKeyPair.load(node.path)
        netmap = client.map()
    except (TKAError, Fail) as exc:
        warn(f"could not ask control for this node's signature: {exc}")
        return None
    from tka.lockjson import PeerInfo

    peers = []
    for p in netmap.peers:
        if p.key is None:
            continue
        peers.append(PeerInfo(stable_id=str(p.id), dns_name="", node_key=p.key))
    me = netmap.node
    sig = me.key_signature if me is not None and me.key_signature else None
    return (pair.public if pair is not None else None), sig, peers


@lock.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (Tailscale's v1 schema).")
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show whether tailnet lock is enabled, the head, the trusted keys and this node's signature.

    With a control service, status syncs first and says whether this node
    is signed (admitted) or locked out, as Tailscale's 'lock status' does.

    \b
    Example:
      tka lock status --json
    """
    from .node import control_url

    with open_node(ctx) as node:
        if not as_json and not control_url(ctx, node):
            # Offline text status: read the chain without the authority engine.
            click.echo(offline_status_text(node))
            return
        _status_full(ctx, node, as_json)


def _status_full(ctx: click.Context, node: NodeState, as_json: bool) -> None:
    from .node import sync_for_status

    reached = sync_for_status(ctx, node)  # control: sync first (a warning if it fails)
    pub = node.public_key() if node.has_key() else None
    authority = node.authority()
    disabled = node.disabled()
    enabled = authority is not None and disabled is None
    own = _own_signature(ctx, node) if reached and enabled else None
    node_key, node_sig, peers = own if own is not None else (None, None, None)
    signed: tuple[bool, str] | None = None
    if own is not None and authority is not None:
        from tka.errors import TKAError

        if node_key is None or node_sig is None:
            signed = (False, "control holds no signature for this node")
        else:
            try:
                authority.node_key_authorized(node_key.raw, node_sig)
                signed = (True, "")
            except TKAError as exc:
                signed = (False, str(exc))
    if as_json:
        from tka.lockjson import render_status

        # Tailscale's `lock status --json` v1 document, byte for byte.
        click.echo(
            render_status(
                authority if enabled else None,
                public_key=pub,
                node_key=node_key,
                node_key_signature=node_sig,
                visible_peers=peers,
            ),
            nl=False,
        )
        return
    head = (authority.head, authority.state) if authority is not None else None
    click.echo(status_text(pub.cli_text() if pub else None, head, disabled, signed, node_key))


@lock.command("log")
@click.option("--limit", default=50, show_default=True, help="How many updates to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (Tailscale's v1 schema).")
@click.pass_context
def log_cmd(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List the updates of the active chain, newest first.

    \b
    Example:
      tka lock log --limit 10 --json > log.json
    """
    from tka.lockjson import log_walk_storage, render_log

    if limit < 1:
        fail("--limit must be at least 1", EXIT_USAGE)
    with open_node(ctx) as node:
        authority = node.require_authority()
        aums = log_walk_storage(node.store, authority.head_hash, limit)
    if as_json:
        click.echo(render_log(aums, limit), nl=False)
        return
    lines = []
    for a in aums:
        signers = ", ".join(f"tlpub:{(s.key_id or b'').hex()}" for s in a.signatures or ())
        lines.append(f"update {a.hash_text} ({a.kind_name})")
        if a.key is not None:
            lines.append(f"  key: tlpub:{(a.key.public or b'').hex()} ({a.key.votes} votes)")
        if a.key_id:
            lines.append(f"  key id: tlpub:{a.key_id.hex()}")
        if a.votes is not None:
            lines.append(f"  votes: {a.votes}")
        lines.append(f"  signed by: {signers or '(unsigned)'}")
    click.echo("\n".join(lines))


@lock.command("add")
@click.argument("keys", nargs=-1, required=True)
@click.pass_context
def add_cmd(ctx: click.Context, keys: tuple[str, ...]) -> None:
    """Trust further signing KEYs (tlpub:<hex>[?votes]).

    \b
    Example:
      tka lock add tlpub:9c...?2
    """
    import warnings

    from tka.builder import KeySetWarning, UpdateBuilder

    parsed = [parse_key_arg(read_arg(k), i) for i, k in enumerate(keys, start=1)]
    with open_node(ctx) as node:
        authority = _require_enabled(ctx, node)
        priv, signer = _signer(ctx, node)
        _require_trusted(authority, priv.public())
        builder = UpdateBuilder(authority, signer)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", KeySetWarning)
            for k in parsed:
                builder.add_key(k)
        for w in caught:
            warn(str(w.message))
        _finalize(node, authority, builder)
        click.echo(f"Added {len(parsed)} key(s); head {authority.head.hash_text}.")


@lock.command("remove")
@click.argument("keys", nargs=-1, required=True)
@click.option(
    "--re-sign/--no-re-sign",
    default=True,
    show_default=True,
    help="Re-sign recorded node signatures that removing the key would invalidate.",
)
@click.pass_context
def remove_cmd(ctx: click.Context, keys: tuple[str, ...], re_sign: bool) -> None:
    """Stop trusting signing KEYs. Nodes they signed are locked out unless re-signed.

    \b
    Example:
      tka lock remove tlpub:9c...
    """
    from tka.builder import UpdateBuilder
    from tka.errors import TKAError
    from tka.nlkeys import NodePublic
    from tka.sig import NodeKeySignature, sign_direct
    from tka.statedir import SignatureRecord

    from .node import control_resign

    parsed = [parse_key_arg(read_arg(k), i) for i, k in enumerate(keys, start=1)]
    with open_node(ctx) as node:
        authority = _require_enabled(ctx, node)
        priv, signer = _signer(ctx, node)
        _require_trusted(authority, priv.public())
        if len(authority.keys) == 1:
            fail(
                "cannot remove the last trusted signing key; use 'tka lock disable' "
                "or add another signing key first"
            )
        removed = {k.key_id for k in parsed}
        resigned: list[SignatureRecord] = []
        if re_sign:
            if priv.public().raw in removed:
                fail("cannot remove this node's own key while re-signing; use --no-re-sign")
            for rec in node.signatures():
                try:
                    sig = NodeKeySignature.from_bytes(rec.signature)
                    root = sig.authorizing_key_id()
                except TKAError:
                    continue
                if root not in removed or sig.pubkey is None:
                    continue
                nk = NodePublic.from_binary(sig.pubkey)
                new = sign_direct(priv.raw, nk.raw, sig.wrapping_public())
                resigned.append(
                    SignatureRecord(nk.text(), new.to_bytes(), priv.public().cli_text())
                )
            # control: re-sign what it knows, first
            resigned += control_resign(ctx, node, priv, authority, removed, resigned)
        builder = UpdateBuilder(authority, signer)
        for k in parsed:
            builder.remove_key(k.key_id)
        _finalize(node, authority, builder)
        if resigned:
            node.record_signatures(resigned)
    for rec in resigned:
        click.echo(f"{rec.node_key} {base64.b64encode(rec.signature).decode()}")
    click.echo(
        f"Removed {len(parsed)} key(s); re-signed {len(resigned)} node(s); "
        f"head {authority.head.hash_text}.",
        err=bool(resigned),
    )


def _sign_one(
    priv: NLPrivate, authority: Authority, nk: NodePublic, rotation: bytes | None
) -> SignatureRecord:
    from tka.sig import authorize_node_key, sign_direct
    from tka.statedir import SignatureRecord

    sig = sign_direct(priv.raw, nk.raw, rotation)
    # Check what we made before anyone relies on it.
    authorize_node_key(authority.state, nk.raw, sig)
    return SignatureRecord(nk.text(), sig.to_bytes(), priv.public().cli_text())


def _parse_job(parts: list[str]) -> tuple[NodePublic, bytes | None]:
    """``NODEKEY [ROTATION-KEY]``; raises :class:`~tka.errors.DecodeError` naming the field."""
    from tka.errors import DecodeError
    from tka.nlkeys import NLPublic, NodePublic

    if not 1 <= len(parts) <= 2:
        raise DecodeError("expected NODEKEY [ROTATION-KEY]")
    try:
        nk = NodePublic.from_text(parts[0])
    except DecodeError as exc:
        raise DecodeError(f"node key: {exc}") from None
    rotation = None
    if len(parts) > 1:
        try:
            rotation = NLPublic.from_text(parts[1]).raw
        except DecodeError as exc:
            raise DecodeError(f"rotation key: {exc}") from None
    return nk, rotation


def _jobs_from_file(path: str) -> list[tuple[NodePublic, bytes | None]]:
    """Every line of a --from file, all checked before anything is signed."""
    from tka.errors import DecodeError

    data = read_input(path, "node list")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        fail(f"{path} is not UTF-8 text", EXIT_USAGE)
    jobs = []
    bad: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            jobs.append(_parse_job(line.split()))
        except DecodeError as exc:
            bad.append(f"{path} line {n}: {exc}")
    if bad:
        more = f" (and {len(bad) - 1} more bad lines)" if len(bad) > 1 else ""
        for b in bad[1:20]:
            click.echo(f"tka: {b}", err=True)
        fail(f"{bad[0]}{more}; nothing was signed", EXIT_USAGE)
    return jobs


@lock.command("sign")
@click.argument("args", nargs=-1)
@click.option(
    "--from",
    "from_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Sign every 'NODEKEY [ROTATION-KEY]' line of a file ('-': stdin).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar on stderr.")
@click.pass_context
def sign_cmd(
    ctx: click.Context, args: tuple[str, ...], from_file: str | None, as_json: bool, quiet: bool
) -> None:
    """Sign a node key (NODEKEY [ROTATION-KEY]) or pre-sign an auth key (tskey-auth-...).

    Prints the node-key signature (base64 of its CBOR) and records it in the
    state directory. For an auth key, prints the wrapped auth key, which
    contains a private key: handle it as a secret. Arguments may be file:PATH.

    With --from FILE every line is checked before anything is signed: a bad
    line stops the run (exit 2) naming FILE and the line number, and nothing
    is signed or recorded. Blank lines and lines starting with # are
    skipped. Long runs show a progress bar on stderr when it is a terminal
    (not with --quiet).

    \b
    Examples:
      tka lock sign nodekey:3c..
      tka lock sign nodekey:3c.. tlpub:77..      # with the node's rotation key
      tka lock sign --from nodes.txt --json
      tka lock sign tskey-auth-kXYZ-...
    """
    from tka.authkey import wrap_authkey
    from tka.errors import DecodeError

    from .node import submit_signatures

    items = [read_arg(a) for a in args]
    if from_file is None and not items:
        fail("missing argument: expected a node key, an auth key, or --from FILE", EXIT_USAGE)
    if items and items[0].startswith("tskey-") and (len(items) != 1 or from_file is not None):
        fail("an auth key takes no further arguments", EXIT_USAGE)
    jobs: list[tuple[NodePublic, bytes | None]] = []
    if items and not items[0].startswith("tskey-"):
        try:
            jobs.append(_parse_job(items))
        except DecodeError as exc:
            fail(str(exc), EXIT_USAGE)
    if from_file is not None:
        jobs += _jobs_from_file(from_file)
    with open_node(ctx) as node:
        authority = _require_enabled(ctx, node)
        priv, _ = _signer(ctx, node)
        _require_trusted(authority, priv.public())
        if items and items[0].startswith("tskey-"):
            wrapped = wrap_authkey(items[0], priv.raw)
            emit({"AuthKey": wrapped}, as_json, wrapped)
            return
        records: list[SignatureRecord] = []
        if show_progress(len(jobs), quiet):
            with click.progressbar(
                jobs, label="Signing", file=sys.stderr, show_pos=True, show_eta=True
            ) as bar:
                records = [_sign_one(priv, authority, nk, rot) for nk, rot in bar]
        else:
            records = [_sign_one(priv, authority, nk, rot) for nk, rot in jobs]
        node.record_signatures(records)
        submit_signatures(ctx, node, records)  # control: hand it the signatures
    out = [
        {"NodeKey": r.node_key, "Signature": base64.b64encode(r.signature).decode()}
        for r in records
    ]
    if len(records) == 1 and from_file is None:
        emit(out[0], as_json, out[0]["Signature"])
    else:
        emit(out, as_json, "\n".join(f"{o['NodeKey']} {o['Signature']}" for o in out))


@lock.command("check")
@click.argument("node_key")
@click.argument("signature")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def check_cmd(ctx: click.Context, node_key: str, signature: str, as_json: bool) -> None:
    """Check offline whether SIGNATURE admits NODE_KEY under this node's authority.

    Exit 0 and the signing key when admitted; exit 1 and the reason when not.

    \b
    Example:
      tka lock check nodekey:3c.. "$(cat sig.b64)" --json
    """
    from tka.nlkeys import NodePublic

    nk = _parse_node_key(read_arg(node_key))
    raw = _parse_signature(read_arg(signature))
    with open_node(ctx) as node:
        authority = _require_enabled(ctx, node)
    from tka.admission import decide  # the control plane's admission engine, offline

    decision = decide(authority.state, nk.raw, raw)
    if not decision.admitted:
        reason = decision.reason.removeprefix("locked out: ")
        emit(
            {"NodeKey": nk.text(), "Admitted": False, "Reason": reason},
            as_json,
            f"not admitted: {reason}",
        )
        raise click.exceptions.Exit(EXIT_REFUSED) from None
    assert decision.signing_key is not None  # admitted, so the root decoded
    root = f"tlpub:{decision.signing_key.hex()}"
    doc: dict[str, Any] = {
        "NodeKey": nk.text(),
        "Admitted": True,
        "SigningKey": root,
        "Kind": decision.kind,
    }
    if decision.kind == "rotation":
        doc["PrevNodeKeys"] = [NodePublic(k).text() for k in decision.prev_node_keys]
    emit(doc, as_json, f"admitted: signed by {root} ({decision.kind})")


@lock.command("resign")
@click.argument("node_key")
@click.argument("old_signature")
@rotation_key_option
@click.pass_context
def resign_cmd(
    ctx: click.Context, node_key: str, old_signature: str, rotation_key_file: str
) -> None:
    """Re-sign OLD_SIGNATURE for the node's new NODE_KEY with its rotation key.

    A node that rotates its node key signs the new key with the rotation key
    named when it was first signed; no signing node is needed. Refused
    (exit 1) when OLD_SIGNATURE names no rotation key or another one: only
    a signing node can sign the new key then.

    \b
    Example:
      tka lock resign nodekey:new.. "$(cat old.b64)" --rotation-key rot.key
    """
    from tka.errors import DecodeError, NotAuthorized
    from tka.key import Key
    from tka.keyfile import load_private_key
    from tka.sig import NodeKeySignature, resign_nks

    nk = _parse_node_key(read_arg(node_key))
    old = _parse_signature(read_arg(old_signature))
    try:
        old_sig = NodeKeySignature.from_bytes(old)
    except DecodeError as exc:
        fail(f"old signature: {exc}", EXIT_USAGE)
    rot = load_private_key(rotation_key_file, passphrase(ctx))
    wrapping = old_sig.wrapping_public()
    if wrapping is None:
        fail(
            "the old signature names no rotation key (it was signed without one): "
            f"have a signing node run 'tka lock sign {nk.text()}'"
        )
    if wrapping != rot.public().raw:
        fail(
            f"{rotation_key_file} holds {rot.public().cli_text()}, but the old signature "
            f"names the rotation key {_key_text(wrapping)}"
        )
    new = resign_nks(rot.raw, nk.raw, old)
    try:
        root = Key.ed25519(old_sig.authorizing_key_id())
        NodeKeySignature.from_bytes(new).verify(nk.raw, root)
    except NotAuthorized as exc:
        fail(f"the new signature would not verify: {exc}")
    click.echo(base64.b64encode(new).decode())


@lock.command("sign-with-authkey")
@click.argument("wrapped_auth_key")
@click.argument("node_key")
def sign_with_authkey_cmd(wrapped_auth_key: str, node_key: str) -> None:
    """Sign NODE_KEY with the credential inside a pre-signed (wrapped) auth key.

    Prints the node-key signature; the auth key part is what the control
    plane receives.

    \b
    Example:
      tka lock sign-with-authkey file:authkey.txt nodekey:3c..
    """
    from tka.authkey import decode_wrapped_authkey
    from tka.sig import sign_by_credential

    got = decode_wrapped_authkey(read_arg(wrapped_auth_key))
    if got.signature is None or got.private_key is None:
        why = "; ".join(got.problems) or "no --TL suffix"
        fail(f"not a wrapped auth key: {why}", EXIT_USAGE)
    nk = _parse_node_key(read_arg(node_key))
    sig = sign_by_credential(got.private_key, got.signature, nk.raw)
    click.echo(base64.b64encode(sig.to_bytes()).decode())


def _read_secret(secret: str | None, secret_file: str | None) -> bytes:
    """The disablement secret from the argument, ``-`` (stdin) or --secret-file."""
    from tka import disablement
    from tka.errors import DecodeError

    if (secret is None) == (secret_file is None):
        fail(
            "give the disablement secret once: as SECRET, '-' to read it from stdin, "
            "or --secret-file FILE",
            EXIT_USAGE,
        )
    if secret_file is not None or secret == "-":
        path = secret_file or "-"
        data = read_input(path, "secret file", MAX_SMALL_INPUT_BYTES)
        try:
            text = data.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            fail("the disablement secret is not text", EXIT_USAGE)
        if not text:
            where = "standard input" if path == "-" else path
            fail(f"no disablement secret in {where}", EXIT_USAGE)
    else:
        assert secret is not None
        text = read_arg(secret)
    try:
        return disablement.parse_secret(text)
    except DecodeError as exc:
        fail(str(exc), EXIT_USAGE)


@lock.command("disable")
@click.argument("secret", required=False)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read the secret from this file instead of the command line.",
)
@click.pass_context
def disable_cmd(ctx: click.Context, secret: str | None, secret_file: str | None) -> None:
    """Disable tailnet lock with a disablement SECRET (disablement-secret:<hex>).

    SECRET '-' reads it from stdin, and --secret-file from a file, so it does
    not show in the process list. The secret is kept (0600) and travels with
    'lock export' (written 0600) so that other nodes learn of it, as nodes
    learn it from the control plane. With a control service, lock is
    disabled for the whole tailnet.

    The way back is a new lock: 'tka lock init' on a signing node (the old
    chain is moved aside); other nodes follow it through control or by
    importing its export.

    \b
    Examples:
      tka lock disable - < secret.txt
      tka lock disable --secret-file secret.txt
    """
    from .node import control_disable

    raw = _read_secret(secret, secret_file)
    with open_node(ctx) as node:
        authority = node.require_authority()
        if not authority.valid_disablement(raw):
            fail("the disablement secret does not match any disablement value of this authority")
        control_disable(ctx, node, authority, raw)  # control: disable for the whole tailnet
        node.set_disabled("secret", raw)
    click.echo("Tailnet lock disabled.")


@lock.command("local-disable")
@click.pass_context
def local_disable_cmd(ctx: click.Context) -> None:
    """Stop enforcing tailnet lock on this node only (no secret; others are unaffected).

    'tka lock local-enable' undoes it: the chain is kept, and the node
    catches up (sync or import) once enabled again.

    \b
    Example:
      tka lock local-disable
    """
    with open_node(ctx) as node:
        node.require_authority()
        if node.disabled() is not None:
            fail("tailnet lock is already disabled on this node")
        node.set_disabled("local")
    click.echo("Tailnet lock disabled on this node. Undo with: tka lock local-enable")


@lock.command("local-enable")
@click.pass_context
def local_enable_cmd(ctx: click.Context) -> None:
    """Enforce tailnet lock on this node again after 'tka lock local-disable'.

    \b
    Example:
      tka lock local-enable
    """
    with open_node(ctx) as node:
        node.require_authority()
        if not node.clear_local_disable():
            how = (node.disabled() or {}).get("how")
            if how is None:
                fail("tailnet lock was not disabled on this node")
            fail(
                "tailnet lock was disabled with a disablement secret, for every node: "
                "start a new lock with 'tka lock init'"
            )
        authority = node.require_authority()
    click.echo(f"Tailnet lock enabled on this node again; head {authority.head.hash_text}.")


@lock.command("disablement-kdf")
@click.argument("secret")
def disablement_kdf_cmd(secret: str) -> None:
    """Print the disablement value (disablement:<hex>) of a disablement SECRET ('-': stdin).

    \b
    Example:
      tka lock disablement-kdf - < secret.txt
    """
    from tka import disablement

    raw = _read_secret(secret, None)
    click.echo(disablement.format_value(disablement.disablement_kdf(raw)))


MAX_RECOVERY_FILE_BYTES = 4 * 1024 * 1024


def _read_recovery(path: str) -> AUM:
    from tka.aum import AUM
    from tka.errors import DecodeError

    blob = read_input(path, "recovery file", MAX_RECOVERY_FILE_BYTES).strip()
    try:
        return AUM.from_bytes(bytes.fromhex(blob.decode("ascii")))
    except (UnicodeDecodeError, ValueError, DecodeError):
        fail(f"{path} is not a recovery file (hex of an AUM)", EXIT_USAGE)


def _write_recovery(path: str, aum: AUM, *, force: bool = False, update: bool = False) -> bool:
    """Write the recovery file; whether this run's messages go to stderr (FILE was stdout)."""
    data = (aum.to_bytes().hex().upper() + "\n").encode()
    plan = write_output(path, data, force=force, update=update, streams=not update)
    return plan in ("stdout", "stream")


def _signed_nodes(ctx: click.Context, node: NodeState, key_ids: set[bytes]) -> list[str]:
    """Nodes whose signature is rooted in one of *key_ids*: from control when there is
    one (it knows every node), else the signatures this node recorded."""
    from tka.errors import TKAError
    from tka.nlkeys import NodePublic
    from tka.sig import NodeKeySignature

    from ._common import Fail
    from .node import control_client

    found: dict[str, bytes] = {}
    try:
        client = control_client(ctx, node)
        if client is not None:
            for key_id in sorted(key_ids):
                for raw in client.affected_sigs(key_id):
                    sig = NodeKeySignature.from_bytes(raw)
                    if sig.pubkey is not None:
                        found[NodePublic.from_binary(sig.pubkey).text()] = key_id
    except (TKAError, Fail) as exc:
        warn(f"could not ask control which nodes the revoked keys signed: {exc}")
    for rec in node.signatures():
        try:
            root = NodeKeySignature.from_bytes(rec.signature).authorizing_key_id()
        except TKAError:
            continue
        if root in key_ids:
            found.setdefault(rec.node_key, root)
    return [f"{nk} (signed by {_key_text(root)})" for nk, root in sorted(found.items())]


def _report_fallout(
    ctx: click.Context,
    node: NodeState,
    revoked: set[bytes],
    added: list[Any],
    will_revoke_added: bool,
    err: bool = False,
) -> None:
    """Name the keys the revoked keys added and the nodes they signed (on stderr if *err*)."""
    from tka.aum import hash_to_text

    if added:
        if will_revoke_added:
            click.echo("Also revoked, as added by the revoked keys (--with-added):", err=err)
        else:
            click.echo(
                "Keys the revoked keys added, which STAY TRUSTED (revoke them too with "
                "--with-added):",
                err=err,
            )
        for a in added:
            click.echo(
                f"\t{_key_text(a.key_id)}  added by {_key_text(a.by)} "
                f"in update {hash_to_text(a.aum_hash)}",
                err=err,
            )
    nodes = _signed_nodes(ctx, node, revoked)
    if nodes:
        click.echo(
            "Nodes signed by revoked keys (locked out once applied, unless re-signed):", err=err
        )
        for n in nodes:
            click.echo(f"\t{n}", err=err)


@lock.command("revoke-keys")
@click.argument("args", nargs=-1, required=True)
@click.option("--cosign", is_flag=True, help="Co-sign the recovery AUM in FILE.")
@click.option("--finish", is_flag=True, help="Submit the co-signed recovery AUM in FILE.")
@click.option("--fork-from", help="AUM hash (base32 or hex) to fork from (advanced).")
@click.option(
    "--with-added",
    is_flag=True,
    help="Also revoke the keys the revoked keys added (and those they added, ...).",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False),
    help="Where to write the recovery AUM (default: recovery.tka; '-': stdout).",
)
@force_option
@click.pass_context
def revoke_keys_cmd(
    ctx: click.Context,
    args: tuple[str, ...],
    cosign: bool,
    finish: bool,
    fork_from: str | None,
    with_added: bool,
    out_file: str | None,
    force: bool,
) -> None:
    """Retroactively revoke compromised KEYs by forking the chain from before they were trusted.

    Start on one signing node with the keys to revoke; it writes a recovery
    file. Run --cosign FILE on other signing nodes until the valid signers
    outweigh the branch being replaced, then --finish FILE.

    The recovery file is new: an existing one is replaced only with --force
    (a FIFO or /dev/stdout is written through; a folder, device or symbolic
    link is refused). --cosign updates FILE in place, if it is a regular
    file; '-' reads stdin and writes the co-signed AUM to stdout.

    Who may sign: only keys trusted at the fork point (the newest update
    before the revoked keys were trusted) and not being revoked. Others are
    refused at the start, at --cosign and at --finish, and only valid
    signers count in the votes shown.

    \b
    What is erased and what is not (as in Tailscale):
      - the revoked keys are no longer trusted;
      - node signatures made by a revoked key stop admitting their nodes
        (they are listed; re-sign them with a remaining key);
      - NOT erased: the new state is today's keys and disablement values
        minus the revoked keys, so keys the revoked keys added stay trusted
        (they are listed; --with-added revokes them too), keys they removed
        are not restored (add them again), vote changes they made stay.

    \b
    Example:
      tka lock revoke-keys tlpub:bad.. --out rec.tka
      tka --state-dir node2 lock revoke-keys --cosign rec.tka
      tka lock revoke-keys --finish rec.tka
    """
    from tka.aum import hash_from_text
    from tka.errors import DecodeError
    from tka.revocation import (
        check_recovery,
        cosign_recovery,
        finish_recovery,
        keys_added_by,
        plan_revocation,
        revoked_by,
    )

    from .node import sync_after_change

    if cosign and finish:
        fail("--cosign and --finish cannot be combined", EXIT_USAGE)
    if (cosign or finish) and (with_added or fork_from or out_file):
        fail("--with-added, --fork-from and --out apply when starting a recovery", EXIT_USAGE)
    if finish and force:
        fail("--force applies when writing a recovery file", EXIT_USAGE)
    if cosign:
        if len(args) == 1:
            output_plan(args[0], update=True, streams=False)  # a file updated in place, or '-'
    elif not finish:
        output_plan(out_file or "recovery.tka", force=force)  # refuse before signing
    with open_node(ctx) as node:
        # control: catch up first, so the keys trusted today are the tailnet's
        authority = _require_enabled(ctx, node, catch_up=True)
        if cosign or finish:
            if len(args) != 1:
                fail("expected one recovery file", EXIT_USAGE)
            path = args[0]
            aum = _read_recovery(path)
            if cosign:
                _, signer = _signer(ctx, node)
                aum = cosign_recovery(aum, signer, authority, node.store)
                err = _write_recovery(path, aum, update=True)
                verdict = check_recovery(authority, node.store, aum)
                click.echo(f"Co-signed {path}: {verdict.reason}.", err=err)
                if verdict.wins:
                    click.echo(f"Finish with: tka lock revoke-keys --finish {path}", err=err)
                return
            revoked = revoked_by(authority, node.store, aum)
            assert aum.parent is not None
            added = keys_added_by(authority, node.store, revoked, aum.parent)
            finish_recovery(authority, node.store, aum)
            sync_after_change(node, authority, [aum])  # control: submit the recovery AUM
            click.echo(f"Recovery applied; head {authority.head.hash_text}.")
            click.echo("Revoked: " + ", ".join(_key_text(k) for k in sorted(revoked)))
            _report_fallout(ctx, node, revoked, added, False)
            return
        keys = [parse_key_arg(read_arg(k), i) for i, k in enumerate(args, start=1)]
        priv, signer = _signer(ctx, node)
        fork = None
        if fork_from:
            try:
                fork = (
                    bytes.fromhex(fork_from) if len(fork_from) == 64 else hash_from_text(fork_from)
                )
            except (ValueError, DecodeError):
                fail("--fork-from: expected an AUM hash in base32 or hex", EXIT_USAGE)
        plan = plan_revocation(
            authority,
            node.store,
            [k.key_id for k in keys],
            priv.public().raw,
            fork,
            with_added=with_added,
        )
        aum = plan.aum.with_signatures(signer.sign_aum(plan.aum.sig_hash))
        path = out_file or "recovery.tka"
        err = _write_recovery(path, aum, force=force)
        verdict = check_recovery(authority, node.store, aum)
        click.echo(f"Wrote the recovery AUM to {path}: {verdict.reason}.", err=err)
        click.echo("It revokes: " + ", ".join(_key_text(k) for k in plan.revoked), err=err)
        _report_fallout(ctx, node, set(plan.revoked), list(plan.added), with_added, err)
    if path == "-":
        path = "FILE"
    if verdict.wins:
        click.echo(f"It would take effect now: tka lock revoke-keys --finish {path}", err=err)
        click.echo(
            f"(or co-sign it on more nodes first: tka lock revoke-keys --cosign {path})", err=err
        )
    else:
        click.echo(f"On another signing node run: tka lock revoke-keys --cosign {path}", err=err)


@lock.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@force_option
@click.pass_context
def export_cmd(ctx: click.Context, file: str, force: bool) -> None:
    """Write this node's AUMs to FILE (tka-bundle/1 JSON; '-': stdout) for other nodes to import.

    After a disable the file carries the disablement secret and is written
    0600; otherwise 0644. It also carries the node-key signatures this node
    made or learnt, so that peers can name the nodes a key signed.

    A new FILE is written atomically; an existing file is replaced only with
    --force. A FIFO, /dev/null or /dev/stdout is written through (not after
    a disable: the secret goes only to a regular file or '-'); a folder, a
    symbolic link to anything else, or a device is refused, never replaced.

    \b
    Examples:
      tka lock export /media/usb/node1.json
      tka lock export node1.json --force
      tka lock export - | ssh node2 tka lock import -
    """
    from tka.aum import hash_to_text
    from tka.bundle import export_bundle

    with open_node(ctx) as node:
        authority = node.require_authority()
        disabled = node.disabled() or {}
        secret = bytes.fromhex(disabled["secret"]) if "secret" in disabled else None
        sigs = tuple((r.node_key, r.signature) for r in node.signatures())
        bundle = export_bundle(authority, node.store, secret, sigs)
    done = f"Exported {len(bundle.aums)} AUM(s); head {hash_to_text(authority.head_hash)}."
    plan = write_output(file, bundle.to_json(), secret=secret is not None, force=force)
    click.echo(done, err=plan in ("stdout", "stream"))


@lock.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.pass_context
def import_cmd(ctx: click.Context, file: str) -> None:
    """Verify and apply the AUMs of an exported FILE ('-': stdin); bootstraps a node with none.

    When this node's own change lost a fork to the file's (Tailscale's fork
    rules), it says so and names the dropped updates. On a node where lock
    was disabled by a secret, a file holding a new authority (another
    genesis) replaces the old chain, which is moved aside.

    \b
    Example:
      tka --state-dir node2 lock import /media/usb/node1.json
    """
    from tka.bundle import MAX_BUNDLE_BYTES, Bundle, dropped_by_import, import_bundle

    bundle = Bundle.from_json(read_input(file, "bundle", MAX_BUNDLE_BYTES))
    with open_node(ctx) as node:
        before = node.authority()
        notes: list[str] = []
        disabled = node.disabled()
        if (
            before is not None
            and disabled is not None
            and disabled.get("how") == "secret"
            and bundle.disablement_secret is None
            and bundle.state_ids() not in (None, before.state_ids)
        ):
            archived = node.archive_chain()
            notes.append(f"A new authority replaces the disabled one (old chain in {archived}).")
            before = None
        old_head = before.head_hash if before is not None else None
        authority = import_bundle(node.store, before, bundle)
        if old_head is not None:
            lost = dropped_by_import(node.store, authority, old_head)
            if lost:
                notes.append(
                    f"This node's chain lost a fork to the imported one (Tailscale's fork "
                    f"rules): {len(lost)} update(s) of this node are no longer active: "
                    + ", ".join(f"{a.hash_text} ({a.kind_name})" for a in lost)
                )
        _learn_signatures(node, bundle.signatures)
        secret = bundle.disablement_secret
        if secret is not None and node.disabled() is None and authority.valid_disablement(secret):
            node.set_disabled("secret", secret)
            notes.append("Tailnet lock was disabled by a disablement secret.")
    click.echo(f"Imported; head {authority.head.hash_text}.")
    for n in notes:
        click.echo(n)


def _learn_signatures(node: NodeState, pairs: tuple[tuple[str, bytes], ...]) -> None:
    """Record the node-key signatures a peer exported, for nodes this node has none for.

    Only well-formed signatures over the node key they are listed with are
    kept; they serve to name the nodes a key signed (``revoke-keys``,
    ``remove --re-sign``), never to admit anyone (``check`` verifies).
    """
    from tka.errors import TKAError
    from tka.nlkeys import NodePublic
    from tka.sig import NodeKeySignature
    from tka.statedir import SignatureRecord

    known = {r.node_key for r in node.signatures()}
    new = []
    for nk_text, raw in pairs:
        if nk_text in known:
            continue
        try:
            sig = NodeKeySignature.from_bytes(raw)
            if sig.pubkey is None or NodePublic.from_binary(sig.pubkey).text() != nk_text:
                continue
            root = sig.authorizing_key_id()
        except TKAError:
            continue
        new.append(SignatureRecord(nk_text, raw, _key_text(root)))
        known.add(nk_text)
    if new:
        node.record_signatures(new)


# -- top-level helpers ----------------------------------------------------------------


@click.command("keygen")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="Encrypt the key with this passphrase.",
)
@force_option
def keygen(file: str, passphrase_file: str | None, force: bool) -> None:
    """Create a new tailnet-lock key pair in FILE (0600) and print its public key.

    Useful for a node's rotation key. FILE must be new (--force replaces a
    file, never a link, device, FIFO or folder); '-' prints the private key
    on stdout and the public key on stderr.

    \b
    Example:
      tka keygen rotation.key
    """
    from tka.keyfile import private_key_bytes
    from tka.nlkeys import NLPrivate

    output_plan(file, secret=True, force=force)  # refuse before asking for a passphrase
    key = NLPrivate.generate()
    data = private_key_bytes(key, passphrase(click.get_current_context(), passphrase_file))
    plan = write_output(file, data, secret=True, force=force)
    click.echo(key.public().cli_text(), err=plan == "stdout")


@click.command("demo")
@click.option(
    "--keep", type=click.Path(file_okay=False), help="Keep the demo state directories here."
)
@click.pass_context
def demo(ctx: click.Context, keep: str | None) -> None:
    """Walk through a tailnet-lock lifecycle on two simulated nodes, narrating each step.

    \b
    Example:
      tka demo
    """
    import tempfile

    from .demo import run_demo

    root = ctx.find_root().command
    assert isinstance(root, click.Group)
    if keep:
        os.makedirs(keep, exist_ok=True)
        run_demo(keep, root)
        return
    with tempfile.TemporaryDirectory(prefix="tka-demo-") as tmp:
        run_demo(tmp, root)
