"""A node's state directory and its control service, as every ``tka lock`` command needs them.

``cli/lock.py`` (the offline lifecycle) and ``cli/node_control.py`` (the
node-side control commands) both import this module; neither imports the
other, nor ``cli/serve.py``; ``cli/main.py`` assembles the command tree
(the ``lock`` group loads ``node_control`` by name).

Once a control URL is known (``--control URL``, saved in the state
directory, or ``$TKA_CONTROL_URL``), init, sign, add/remove, disable and
revoke-keys talk to the service the way a Tailscale node does, and status
syncs first. Every tka import is inside the function that needs it, so a
command that never talks to control never loads the client.

A node's control settings live in its state directory: ``control.json`` (the
URL), ``node-key.json`` (its node key, 0600) and ``control-node.json`` (its
tailnet, node ID and token, 0600).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from ._common import (
    EXIT_STATE,
    EXIT_USAGE,
    MAX_SMALL_INPUT_BYTES,
    Fail,
    fail,
    global_opt,
    read_input,
    warn,
)

if TYPE_CHECKING:
    from tka.aum import AUM
    from tka.authority import Authority
    from tka.control.client import ControlClient, SyncResult
    from tka.nlkeys import NLPrivate
    from tka.state import State
    from tka.statedir import NodeState, SignatureRecord

__all__ = [
    "control_client",
    "control_disable",
    "control_init",
    "control_resign",
    "control_url",
    "open_node",
    "passphrase",
    "private_key",
    "submit_signatures",
    "sync",
    "sync_after_change",
    "sync_for_status",
]


# -- the state directory ---------------------------------------------------------------


def passphrase(ctx: click.Context | None, path: str | None = None) -> bytes | None:
    """The passphrase from --passphrase-file (or *path*), else $TKA_PASSPHRASE_FILE."""
    path = path or global_opt(ctx, "passphrase_file") or os.environ.get("TKA_PASSPHRASE_FILE")
    if not path:
        return None
    data = read_input(path, "passphrase file", MAX_SMALL_INPUT_BYTES).rstrip(b"\r\n")
    if not data:
        fail(f"passphrase file {path} is empty", EXIT_USAGE)
    return data


def state_dir(ctx: click.Context) -> str:
    """The state directory chosen by --state-dir, $TKA_STATE_DIR or the platform default."""
    from ._paths import default_state_dir

    return str(global_opt(ctx, "state_dir") or default_state_dir())


@contextmanager
def open_node(ctx: click.Context, *, create: bool = False) -> Iterator[NodeState]:
    """Hold this node's state directory for the command.

    Only commands that create a node (``key``, ``init``, ``login``,
    ``node-key``) pass *create*; for every other command a missing
    directory is exit 3 naming it, so a typo never makes an empty node.
    """
    from tka.statedir import NodeState

    path = state_dir(ctx)
    if not create and not os.path.isdir(path):
        fail(
            f"state directory {os.path.abspath(path)} does not exist: check --state-dir, "
            "or create the node with 'tka lock key'",
            EXIT_STATE,
        )
    timeout = global_opt(ctx, "lock_timeout")
    with NodeState(path, lock_timeout=10.0 if timeout is None else float(timeout)) as node:
        yield node


def private_key(ctx: click.Context, node: NodeState) -> NLPrivate:
    """This node's tailnet-lock private key (decrypted with the passphrase when needed)."""
    return node.private_key(passphrase(ctx))


# -- control ---------------------------------------------------------------------------


def control_url(ctx: click.Context, node: NodeState) -> str | None:
    """--control URL (saved for later commands), else $TKA_CONTROL_URL, else the saved URL."""
    url = global_opt(ctx, "control")
    if url:
        from tka.control.client import ControlClient
        from tka.errors import DecodeError
        from tka.nlkeys import NodePublic

        try:
            ControlClient(url, "", NodePublic(bytes(32)))  # checks the URL's form
        except DecodeError as exc:
            fail(f"--control: {exc}", EXIT_USAGE)
        if url != node.control_url():
            node.set_control_url(url)
        return str(url)
    return os.environ.get("TKA_CONTROL_URL") or node.control_url()


def control_client(ctx: click.Context, node: NodeState) -> ControlClient | None:
    """The node's control client, or ``None`` when no control URL is known."""
    url = control_url(ctx, node)
    if not url:
        return None
    from tka.control.client import ControlClient, NodeCredentials, NodeKeyPair

    creds = NodeCredentials.load(node.path)
    keys = NodeKeyPair.load(node.path)
    if creds is None or keys is None:
        fail(
            f"this node has no credentials for control {url}: run 'tka lock node-key', have "
            "an admin run 'tka control register', then 'tka lock login CREDENTIALS'"
        )
    return ControlClient(url, creds.token, keys.public)


def sync(ctx: click.Context, node: NodeState, authority: Authority | None) -> SyncResult | None:
    """Sync with control when one is set; ``None`` when there is none or lock is off here.

    A node disabled by a secret still asks control: when control was
    re-initialized with a new authority since, the old chain is archived
    and the node bootstraps from the new genesis (as a Tailscale node that
    wiped its disabled authority does). A node that ran ``local-disable``
    does not sync until ``local-enable``.
    """
    client = control_client(ctx, node)
    disabled = node.disabled()
    if client is None or (disabled is not None and disabled.get("how") == "local"):
        return None
    if disabled is not None:
        from tka.aum import AUM
        from tka.control.client import SyncResult

        boot = client.bootstrap(None)
        if boot.disablement_secret or not boot.genesis_aum:
            return SyncResult("disabled")
        old = node.authority()
        new_state = AUM.from_bytes(boot.genesis_aum).state
        new_ids = (new_state.state_id1, new_state.state_id2) if new_state else None
        if old is not None and new_ids == old.state_ids:
            # Control still runs the very lock this node knows to be disabled.
            warn("control still enforces the tailnet lock this node has disabled")
            return SyncResult("disabled")
        archived = node.archive_chain()
        warn(
            "control holds a new authority since tailnet lock was disabled: following it "
            f"(the old chain is kept in {archived})"
        )
        authority = None
    from tka.control.client import sync_node

    old_head = authority.head_hash if authority is not None else None
    after, result = sync_node(client, node.store, authority)
    if result.disablement_secret is not None and node.disabled() is None:
        node.set_disabled("secret", result.disablement_secret)
    if old_head is not None and after is not None and after.head_hash != old_head:
        _warn_dropped(node, after, old_head)
    return result


def _warn_dropped(node: NodeState, authority: Authority, old_head: bytes) -> None:
    """Say which of this node's updates a sync left off the active chain (a lost fork)."""
    from tka.bundle import dropped_by_import

    lost = dropped_by_import(node.store, authority, old_head)
    if lost:
        warn(
            "this node's chain lost a fork to a concurrent change (Tailscale's fork rules): "
            f"{len(lost)} update(s) of this node are no longer active: "
            + ", ".join(f"{a.hash_text} ({a.kind_name})" for a in lost)
        )


def sync_after_change(node: NodeState, authority: Authority, aums: list[AUM]) -> None:
    """Send a change just made on this node to control (when one is set).

    A change that lost a fork to a concurrent one is reported as a warning
    naming the dropped updates (see :func:`sync`): every node and the
    service still agree on the winner.
    """
    from tka.errors import TKAError

    ctx = click.get_current_context()
    try:
        sync(ctx, node, authority)
    except TKAError as exc:
        fail(
            f"the change is saved on this node but was not sent to control: {exc}; "
            "run 'tka lock sync' to send it"
        )


def sync_for_status(ctx: click.Context, node: NodeState) -> bool:
    """Sync before showing status; a failure is a warning (status works offline).

    Returns whether a control service was reached.
    """
    from tka.errors import TKAError

    try:
        return sync(ctx, node, node.authority()) is not None
    except (TKAError, Fail) as exc:
        warn(f"could not sync with control: {exc}")
        return False


def control_init(
    client: ControlClient, node: NodeState, state: State, priv: NLPrivate, support: bytes = b""
) -> Authority:
    """Initialize lock through control: begin, sign every node, finish, then keep the genesis.

    *support* is a disablement secret handed to the service's operator
    (``--gen-disablement-for-support``). Nothing is stored on this node
    unless control accepted both steps.
    """
    from tka.authority import Authority, Signer
    from tka.control.client import sync_node
    from tka.control.errors import ControlRequestError
    from tka.errors import TKAError
    from tka.sig import sign_direct
    from tka.statedir import SignatureRecord
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
    client.init_finish(sigs, support)
    authority = Authority.bootstrap(node.store, genesis)
    node.record_signatures(records)
    try:
        sync_node(client, node.store, authority)  # tells control this node's head
    except TKAError as exc:
        warn(f"initialized, but the first sync failed: {exc}")
    return authority


def submit_signatures(ctx: click.Context, node: NodeState, records: list[SignatureRecord]) -> None:
    """Send signatures made on this node to control (when one is set)."""
    from tka.errors import TKAError

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
    from tka.errors import DecodeError, NotAuthorized
    from tka.nlkeys import NodePublic
    from tka.sig import NodeKeySignature, authorize_node_key, sign_direct
    from tka.statedir import SignatureRecord

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
) -> bool:
    """Disable lock for the whole tailnet through control; ``False`` when there is none."""
    from tka.control.client import sync_node
    from tka.errors import TKAError

    client = control_client(ctx, node)
    if client is None:
        return False
    try:
        # Control accepts a disablement at a head it holds: sync first.
        _, result = sync_node(client, node.store, authority)
        if result.disablement_secret is not None:
            return True  # already disabled through control (the caller records it)
        client.disable(authority.head_hash, secret)
    except TKAError as exc:
        fail(f"control did not disable tailnet lock: {exc}")
    return True
