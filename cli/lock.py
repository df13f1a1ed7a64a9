"""``tka lock ...``: the tailnet-lock lifecycle of one node, offline.

Each node has a state directory (``--state-dir``, else ``$TKA_STATE_DIR``,
else the platform's user data directory) holding its tailnet-lock key and its
AUMs in Tailscale's on-disk layout. Nodes exchange changes as files
(``lock export`` / ``lock import``), in any order.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from tka import disablement
from tka._fileutil import atomic_write
from tka.aum import AUM, hash_from_text, hash_to_text
from tka.authkey import decode_wrapped_authkey, wrap_authkey
from tka.authority import Authority, Signer
from tka.builder import KeySetWarning, UpdateBuilder
from tka.bundle import Bundle, export_bundle, import_bundle
from tka.errors import DecodeError, TKAError
from tka.key import Key
from tka.keyfile import load_private_key, save_private_key
from tka.lockjson import log_walk_storage, render_log, render_status
from tka.nlkeys import NLPrivate, NLPublic, NodePublic
from tka.revocation import (
    check_recovery,
    cosign_recovery,
    finish_recovery,
    make_retroactive_revocation,
)
from tka.sig import (
    NodeKeySignature,
    authorize_node_key,
    resign_nks,
    sign_by_credential,
    sign_direct,
)
from tka.state import State
from tka.statedir import NodeState, SignatureRecord, iter_lines

from ._common import (
    EXIT_REFUSED,
    EXIT_USAGE,
    default_state_dir,
    emit,
    fail,
    parse_key_arg,
    read_arg,
)

__all__ = ["demo", "keygen", "lock"]


# -- shared options ----------------------------------------------------------------


def _passphrase(path: str | None) -> bytes | None:
    path = path or os.environ.get("TKA_PASSPHRASE_FILE")
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read().rstrip(b"\r\n")
    except OSError as exc:
        fail(f"cannot read passphrase file {path}: {exc.strerror}", EXIT_USAGE)
    if not data:
        fail(f"passphrase file {path} is empty", EXIT_USAGE)
    return data


def _lock_params(ctx: click.Context) -> dict[str, Any]:
    """The options given to the ``lock`` group (state dir, passphrase, lock timeout)."""
    c: click.Context | None = ctx
    while c is not None and c.command.name != "lock":
        c = c.parent
    return dict(c.params) if c is not None else {}


@contextmanager
def _node(ctx: click.Context) -> Iterator[NodeState]:
    params = _lock_params(ctx)
    path = params.get("state_dir") or default_state_dir()
    with NodeState(path, lock_timeout=float(params.get("lock_timeout") or 10.0)) as node:
        yield node


def _private_key(ctx: click.Context, node: NodeState) -> NLPrivate:
    return node.private_key(_passphrase(_lock_params(ctx).get("passphrase_file")))


def _signer(ctx: click.Context, node: NodeState) -> tuple[NLPrivate, Signer]:
    priv = _private_key(ctx, node)
    return priv, Signer((priv.raw,))


def _require_trusted(authority: Authority, key: NLPublic) -> None:
    if not authority.key_trusted(key.raw):
        fail(
            f"this node's key {key.cli_text()} is not trusted by the authority: "
            "sign on a node whose key is trusted"
        )


def _require_enabled(node: NodeState) -> Authority:
    authority = node.require_authority()
    if node.disabled() is not None:
        fail("tailnet lock is disabled on this node")
    return authority


def _parse_node_key(text: str) -> NodePublic:
    try:
        return NodePublic.from_text(text)
    except DecodeError as exc:
        fail(f"node key: {exc}", EXIT_USAGE)


def _parse_signature(text: str) -> bytes:
    """A serialized node-key signature given as base64 (as printed) or hex."""
    text = text.strip()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return bytes.fromhex(text)
    except ValueError:
        fail("signature: expected base64 (as 'tka lock sign' prints it) or hex", EXIT_USAGE)


def _key_json(k: Key) -> dict[str, Any]:
    out: dict[str, Any] = {"Key": f"tlpub:{(k.public or b'').hex()}", "Votes": k.votes}
    if k.meta:
        out["Metadata"] = dict(k.meta)
    return out


def _finalize(node: NodeState, authority: Authority, builder: UpdateBuilder) -> list[AUM]:
    aums = builder.finalize(node.store)
    if aums:
        authority.inform(node.store, aums)
        from .serve import sync_after_change  # control: send the change (no-op without one)

        sync_after_change(node, authority, aums)
    return aums


# -- the group ------------------------------------------------------------------------


@click.group("lock")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="This node's state directory (default: $TKA_STATE_DIR, else the user data dir).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="File holding the passphrase of an encrypted key (default: $TKA_PASSPHRASE_FILE).",
)
@click.option(
    "--lock-timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for another tka process using the same state directory.",
)
@click.option(
    "--control",
    metavar="URL",
    help="Control service to sync with (tka serve); saved in the state directory.",
)
def lock(
    state_dir: str | None, passphrase_file: str | None, lock_timeout: float, control: str | None
) -> None:
    """Manage tailnet lock on this node (Tailscale's 'tailscale lock').

    With --control URL (remembered afterwards) the node talks to a control
    service as a Tailscale node does: init, sign, add/remove, disable and
    revoke-keys go through it, and status syncs first. Without it, nodes
    exchange export files.

    \b
    Example lifecycle (two nodes exchanging files):
      tka lock key                                  # prints tlpub:...; run on each signer
      tka lock init --gen-disablements 2 --confirm tlpub:AAA tlpub:BBB
      tka lock sign nodekey:...                     # prints the node-key signature
      tka lock export /tmp/a.json                   # carry to the other node
      tka --state-dir node2 lock import /tmp/a.json
      tka lock status
    """


@lock.command("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def key_cmd(ctx: click.Context, as_json: bool) -> None:
    """Print this node's tailnet-lock public key, creating the key on first use.

    The private key is stored 0600 in the state directory (encrypted when a
    passphrase file is given) and never printed.

    \b
    Example:
      tka lock key
      tka --debug lock --state-dir ./node1 --passphrase-file pw.txt key
    """
    with _node(ctx) as node:
        created = False
        if not node.has_key():
            node.create_key(_passphrase(_lock_params(ctx).get("passphrase_file")))
            created = True
        pub = node.public_key()
    emit({"PublicKey": pub.cli_text(), "Created": created}, as_json, pub.cli_text())


@lock.command("init")
@click.argument("args", nargs=-1)
@click.option(
    "--gen-disablements", default=1, show_default=True, help="Disablement secrets to generate."
)
@click.option("--confirm", is_flag=True, help="Really initialize (otherwise only explain).")
@click.pass_context
def init_cmd(
    ctx: click.Context, args: tuple[str, ...], gen_disablements: int, confirm: bool
) -> None:
    """Initialize tailnet lock with trusted KEYs (tlpub:<hex>[?votes]) and disablement values.

    Without --confirm it only explains what it would do. Generated
    disablement secrets are printed once: store them offline, they are the
    only way to switch tailnet lock off if every signing key is lost.

    \b
    Example:
      tka lock init --gen-disablements 2 --confirm tlpub:1f.. tlpub:9c..?2
    """
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
    if not values and gen_disablements == 0:
        fail("at least one disablement value is required: use --gen-disablements", EXIT_USAGE)
    with _node(ctx) as node:
        if node.authority() is not None:
            fail("tailnet lock is already initialized on this node")
        me = node.public_key()
        if not any(k.key_id == me.raw for k in keys):
            fail("this node's tailnet-lock key must be one of the trusted keys")
        lines = ["You are initializing tailnet lock with the following trusted signing keys:"]
        lines += [f" - tlpub:{(k.public or b'').hex()} ({k.votes} votes)" for k in keys]
        if not confirm:
            lines += [
                "",
                f"{gen_disablements} disablement secrets will be generated.",
                "If this is correct, re-run this command with --confirm.",
            ]
            click.echo("\n".join(lines))
            return
        secrets_out = [disablement.generate_secret() for _ in range(gen_disablements)]
        values += [disablement.disablement_kdf(s) for s in secrets_out]
        priv, signer = _signer(ctx, node)
        entropy = secrets.token_bytes(16)
        state = State(
            disablement_values=tuple(values),
            keys=tuple(keys),
            state_id1=int.from_bytes(entropy[:8], "little"),
            state_id2=int.from_bytes(entropy[8:], "little"),
        )
        from .serve import control_client, control_init

        client = control_client(ctx, node)
        if client is None:
            authority, _genesis = Authority.create(node.store, state, signer)
        else:
            authority = control_init(client, node, state, priv)
    click.echo("\n".join(lines))
    click.echo("")
    if secrets_out:
        click.echo(
            f"{len(secrets_out)} disablement secrets have been generated and are printed "
            "below. Store them offline now: they WILL NOT be shown again."
        )
        for s in secrets_out:
            click.echo(f"\t{disablement.format_secret(s)}")
    click.echo(f"Tailnet lock initialized; head {authority.head.hash_text}.")


@lock.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (Tailscale's v1 schema).")
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show whether tailnet lock is enabled, the head and the trusted keys.

    \b
    Example:
      tka lock status --json
    """
    with _node(ctx) as node:
        from .serve import sync_for_status  # control: sync first (a warning if it fails)

        sync_for_status(ctx, node)
        pub = node.public_key() if node.has_key() else None
        authority = node.authority()
        disabled = node.disabled()
    enabled = authority is not None and disabled is None
    if as_json:
        # Tailscale's `lock status --json` v1 document, byte for byte.
        click.echo(render_status(authority if enabled else None, public_key=pub), nl=False)
        return
    lines = [f"Tailnet lock is {'ENABLED' if enabled else 'NOT enabled'}."]
    if disabled is not None:
        lines.append(f"It was disabled on this node ({disabled.get('how')}).")
    if pub is not None:
        lines.append(f"This node's tailnet-lock key: {pub.cli_text()}")
    if authority is not None and enabled:
        lines.append(f"Head: {authority.head.hash_text}")
        lines.append("")
        lines.append("Trusted signing keys:")
        for k in authority.keys:
            me = " (self)" if pub is not None and k.key_id == pub.raw else ""
            lines.append(f"\ttlpub:{(k.public or b'').hex()}\t{k.votes}{me}")
    click.echo("\n".join(lines))


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
    if limit < 1:
        fail("--limit must be at least 1", EXIT_USAGE)
    with _node(ctx) as node:
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
    parsed = [parse_key_arg(read_arg(k), i) for i, k in enumerate(keys, start=1)]
    with _node(ctx) as node:
        authority = _require_enabled(node)
        priv, signer = _signer(ctx, node)
        _require_trusted(authority, priv.public())
        builder = UpdateBuilder(authority, signer)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", KeySetWarning)
            for k in parsed:
                builder.add_key(k)
        for w in caught:
            click.echo(f"tka: warning: {w.message}", err=True)
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
    parsed = [parse_key_arg(read_arg(k), i) for i, k in enumerate(keys, start=1)]
    with _node(ctx) as node:
        authority = _require_enabled(node)
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
            from .serve import control_resign  # control: re-sign what it knows, first

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
    node: NodeState, priv: NLPrivate, authority: Authority, args: list[str]
) -> SignatureRecord:
    nk = _parse_node_key(args[0])
    rotation = None
    if len(args) > 1:
        try:
            rotation = NLPublic.from_text(args[1]).raw
        except DecodeError as exc:
            fail(f"rotation key: {exc}", EXIT_USAGE)
    sig = sign_direct(priv.raw, nk.raw, rotation)
    # Check what we made before anyone relies on it.
    authorize_node_key(authority.state, nk.raw, sig)
    return SignatureRecord(nk.text(), sig.to_bytes(), priv.public().cli_text())


@lock.command("sign")
@click.argument("args", nargs=-1)
@click.option(
    "--from",
    "from_file",
    type=click.Path(dir_okay=False),
    help="Sign every 'NODEKEY [ROTATION-KEY]' line of a file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sign_cmd(
    ctx: click.Context, args: tuple[str, ...], from_file: str | None, as_json: bool
) -> None:
    """Sign a node key (NODEKEY [ROTATION-KEY]) or pre-sign an auth key (tskey-auth-...).

    Prints the node-key signature (base64 of its CBOR) and records it in the
    state directory. For an auth key, prints the wrapped auth key, which
    contains a private key: handle it as a secret. Arguments may be file:PATH.

    \b
    Examples:
      tka lock sign nodekey:3c..
      tka lock sign nodekey:3c.. tlpub:77..      # with the node's rotation key
      tka lock sign --from nodes.txt --json
      tka lock sign tskey-auth-kXYZ-...
    """
    items = [read_arg(a) for a in args]
    if from_file is None and not items:
        fail("missing argument: expected a node key, an auth key, or --from FILE", EXIT_USAGE)
    with _node(ctx) as node:
        authority = _require_enabled(node)
        priv, _ = _signer(ctx, node)
        _require_trusted(authority, priv.public())
        if items and items[0].startswith("tskey-"):
            if len(items) != 1:
                fail("an auth key takes no further arguments", EXIT_USAGE)
            wrapped = wrap_authkey(items[0], priv.raw)
            emit({"AuthKey": wrapped}, as_json, wrapped)
            return
        jobs: list[list[str]] = []
        if items:
            if len(items) > 2:
                fail("expected NODEKEY [ROTATION-KEY]", EXIT_USAGE)
            jobs.append(items)
        if from_file is not None:
            for n, line in enumerate(iter_lines(from_file), start=1):
                parts = line.split()
                if len(parts) > 2:
                    fail(f"{from_file} line {n}: expected NODEKEY [ROTATION-KEY]", EXIT_USAGE)
                jobs.append(parts)
        records = [_sign_one(node, priv, authority, job) for job in jobs]
        node.record_signatures(records)
        from .serve import submit_signatures  # control: hand it the signatures

        submit_signatures(ctx, node, records)
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
    nk = _parse_node_key(read_arg(node_key))
    raw = _parse_signature(read_arg(signature))
    with _node(ctx) as node:
        authority = _require_enabled(node)
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
@click.option(
    "--rotation-key",
    "rotation_key_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="File holding the node's rotation private key (nlpriv:...).",
)
@click.pass_context
def resign_cmd(
    ctx: click.Context, node_key: str, old_signature: str, rotation_key_file: str
) -> None:
    """Re-sign OLD_SIGNATURE for the node's new NODE_KEY with its rotation key.

    A node that rotates its node key signs the new key with the rotation key
    named when it was first signed; no signing node is needed.

    \b
    Example:
      tka lock resign nodekey:new.. "$(cat old.b64)" --rotation-key rot.key
    """
    nk = _parse_node_key(read_arg(node_key))
    old = _parse_signature(read_arg(old_signature))
    rot = load_private_key(rotation_key_file, _passphrase(_lock_params(ctx).get("passphrase_file")))
    new = resign_nks(rot.raw, nk.raw, old)
    click.echo(base64.b64encode(new).decode())


@lock.command("sign-with-authkey")
@click.argument("wrapped_auth_key")
@click.argument("node_key")
@click.pass_context
def sign_with_authkey_cmd(ctx: click.Context, wrapped_auth_key: str, node_key: str) -> None:
    """Sign NODE_KEY with the credential inside a pre-signed (wrapped) auth key.

    Prints the node-key signature; the auth key part is what the control
    plane receives.

    \b
    Example:
      tka lock sign-with-authkey file:authkey.txt nodekey:3c..
    """
    got = decode_wrapped_authkey(read_arg(wrapped_auth_key))
    if got.signature is None or got.private_key is None:
        why = "; ".join(got.problems) or "no --TL suffix"
        fail(f"not a wrapped auth key: {why}", EXIT_USAGE)
    nk = _parse_node_key(read_arg(node_key))
    sig = sign_by_credential(got.private_key, got.signature, nk.raw)
    click.echo(base64.b64encode(sig.to_bytes()).decode())


@lock.command("disable")
@click.argument("secret")
@click.pass_context
def disable_cmd(ctx: click.Context, secret: str) -> None:
    """Disable tailnet lock with a disablement SECRET (disablement-secret:<hex>).

    The secret is kept (0600) and travels with 'lock export' so that other
    nodes learn of it, as nodes learn it from the control plane.

    \b
    Example:
      tka lock disable disablement-secret:4F..
    """
    try:
        raw = disablement.parse_secret(read_arg(secret))
    except DecodeError as exc:
        fail(str(exc), EXIT_USAGE)
    with _node(ctx) as node:
        authority = node.require_authority()
        if not authority.valid_disablement(raw):
            fail("the disablement secret does not match any disablement value of this authority")
        from .serve import control_disable  # control: disable for the whole tailnet

        control_disable(ctx, node, authority, raw)
        node.set_disabled("secret", raw)
    click.echo("Tailnet lock disabled.")


@lock.command("local-disable")
@click.pass_context
def local_disable_cmd(ctx: click.Context) -> None:
    """Stop enforcing tailnet lock on this node only (no secret; others are unaffected).

    \b
    Example:
      tka lock local-disable
    """
    with _node(ctx) as node:
        node.require_authority()
        node.set_disabled("local")
    click.echo("Tailnet lock disabled on this node.")


@lock.command("disablement-kdf")
@click.argument("secret")
def disablement_kdf_cmd(secret: str) -> None:
    """Print the disablement value (disablement:<hex>) of a disablement SECRET.

    \b
    Example:
      tka lock disablement-kdf disablement-secret:4F..
    """
    try:
        raw = disablement.parse_secret(read_arg(secret))
    except DecodeError as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(disablement.format_value(disablement.disablement_kdf(raw)))


@lock.command("revoke-keys")
@click.argument("args", nargs=-1, required=True)
@click.option("--cosign", is_flag=True, help="Co-sign the recovery AUM in FILE.")
@click.option("--finish", is_flag=True, help="Submit the co-signed recovery AUM in FILE.")
@click.option("--fork-from", help="AUM hash (base32 or hex) to fork from (advanced).")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False),
    help="Where to write the recovery AUM (default: recovery.tka).",
)
@click.pass_context
def revoke_keys_cmd(
    ctx: click.Context,
    args: tuple[str, ...],
    cosign: bool,
    finish: bool,
    fork_from: str | None,
    out_file: str | None,
) -> None:
    """Retroactively revoke compromised KEYs, erasing what they signed.

    Start on one signing node with the keys to revoke; it writes a recovery
    file. Run --cosign FILE on other signing nodes until the signers outweigh
    the revoked keys, then --finish FILE. --finish refuses a recovery that
    would not win the fork.

    \b
    Example:
      tka lock revoke-keys tlpub:bad.. --out rec.tka
      tka --state-dir node2 lock revoke-keys --cosign rec.tka
      tka lock revoke-keys --finish rec.tka
    """
    if cosign and finish:
        fail("--cosign and --finish cannot be combined", EXIT_USAGE)
    with _node(ctx) as node:
        authority = _require_enabled(node)
        if cosign or finish:
            if len(args) != 1:
                fail("expected one recovery file", EXIT_USAGE)
            path = args[0]
            try:
                with open(path, "rb") as f:
                    blob = f.read().strip()
                aum = AUM.from_bytes(bytes.fromhex(blob.decode("ascii")))
            except OSError as exc:
                fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
            except (UnicodeDecodeError, ValueError):
                fail(f"{path} is not a recovery file (hex of an AUM)", EXIT_USAGE)
            if cosign:
                _, signer = _signer(ctx, node)
                aum = cosign_recovery(aum, signer)
                _write_recovery(path, aum)
                verdict = check_recovery(authority, node.store, aum)
                click.echo(f"Co-signed {path}: {verdict.reason}.")
                if verdict.wins:
                    click.echo(f"Finish with: tka lock revoke-keys --finish {path}")
                return
            finish_recovery(authority, node.store, aum)
            from .serve import sync_after_change  # control: submit the recovery AUM

            sync_after_change(node, authority, [aum])
            click.echo(f"Recovery applied; head {authority.head.hash_text}.")
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
        aum = make_retroactive_revocation(
            authority, node.store, [k.key_id for k in keys], priv.public().raw, fork
        )
        aum = aum.with_signatures(signer.sign_aum(aum.sig_hash))
        path = out_file or "recovery.tka"
        _write_recovery(path, aum)
        verdict = check_recovery(authority, node.store, aum)
    click.echo(f"Wrote the recovery AUM to {path}: {verdict.reason}.")
    click.echo(f"On another signing node run: tka lock revoke-keys --cosign {path}")


def _write_recovery(path: str, aum: AUM) -> None:
    atomic_write(path, (aum.to_bytes().hex().upper() + "\n").encode(), 0o644)


@lock.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def export_cmd(ctx: click.Context, file: str) -> None:
    """Write this node's AUMs to FILE (tka-bundle/1 JSON) for other nodes to import.

    \b
    Example:
      tka lock export /media/usb/node1.json
    """
    with _node(ctx) as node:
        authority = node.require_authority()
        disabled = node.disabled() or {}
        secret = bytes.fromhex(disabled["secret"]) if "secret" in disabled else None
        bundle = export_bundle(authority, node.store, secret)
    atomic_write(os.path.abspath(file), bundle.to_json(), 0o644)
    click.echo(f"Exported {len(bundle.aums)} AUM(s); head {hash_to_text(authority.head_hash)}.")


@lock.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def import_cmd(ctx: click.Context, file: str) -> None:
    """Verify and apply the AUMs of an exported FILE (bootstraps a node with none).

    \b
    Example:
      tka --state-dir node2 lock import /media/usb/node1.json
    """
    try:
        with open(file, "rb") as f:
            bundle = Bundle.from_json(f.read())
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", EXIT_USAGE)
    with _node(ctx) as node:
        authority = import_bundle(node.store, node.authority(), bundle)
        learned = ""
        secret = bundle.disablement_secret
        if secret is not None and node.disabled() is None and authority.valid_disablement(secret):
            node.set_disabled("secret", secret)
            learned = " Tailnet lock was disabled by a disablement secret."
    click.echo(f"Imported; head {authority.head.hash_text}.{learned}")


# -- top-level helpers ----------------------------------------------------------------


@click.command("keygen")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="Encrypt the key with this passphrase.",
)
def keygen(file: str, passphrase_file: str | None) -> None:
    """Create a new tailnet-lock key pair in FILE (0600) and print its public key.

    Useful for a node's rotation key.

    \b
    Example:
      tka keygen rotation.key
    """
    key = NLPrivate.generate()
    save_private_key(file, key, _passphrase(passphrase_file))
    click.echo(key.public().cli_text())


@click.command("demo")
@click.option(
    "--keep", type=click.Path(file_okay=False), help="Keep the demo state directories here."
)
def demo(keep: str | None) -> None:
    """Walk through a tailnet-lock lifecycle on two simulated nodes, narrating each step.

    \b
    Example:
      tka demo
    """
    from .demo import run_demo

    if keep:
        os.makedirs(keep, exist_ok=True)
        run_demo(keep)
        return
    with tempfile.TemporaryDirectory(prefix="tka-demo-") as tmp:
        run_demo(tmp)
