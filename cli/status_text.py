"""The text of ``tka lock status``, without click.

Shared by the click command (:mod:`tka_cli.lock`) and by the start-up fast
path (:mod:`tka_cli.fast_path`), so both print the same lines. Only the
standard library and the modules ``status`` already needs are imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tka.aum import AUM
    from tka.nlkeys import NodePublic
    from tka.statedir import NodeState

__all__ = ["offline_status_text", "status_text"]


def status_text(
    pub: str | None,
    head: tuple[AUM, Any] | None,
    disabled: dict[str, Any] | None,
    signed: tuple[bool, str] | None,
    node_key: NodePublic | None,
) -> str:
    """The lines ``tka lock status`` prints (without the final newline).

    *pub* is this node's ``tlpub:`` key, *head* the head AUM and the state
    there (``None`` before ``init``), *disabled* how lock was turned off
    here, *signed* whether control's copy of this node's signature verifies
    (and why not), *node_key* this node's node key when control is used.
    """
    enabled = head is not None and disabled is None
    lines = [f"Tailnet lock is {'ENABLED' if enabled else 'NOT enabled'}."]
    if disabled is not None:
        how = disabled.get("how")
        back = (
            "'tka lock local-enable' turns it back on"
            if how == "local"
            else "'tka lock init' starts a new lock"
        )
        lines.append(f"It was disabled on this node ({how}); {back}.")
    if signed is not None and signed[0]:
        lines.append("This node is accessible under tailnet lock: its node-key signature is valid.")
    elif signed is not None:
        nk_text = node_key.text() if node_key is not None else "NODEKEY"
        lines.append(
            "This node is LOCKED OUT by tailnet lock, and action is required to establish "
            f"connectivity: {signed[1]}. Have a signing node run: tka lock sign {nk_text}"
        )
    if node_key is not None:
        lines.append(f"This node's node key: {node_key.text()}")
    if pub is not None:
        lines.append(f"This node's tailnet-lock key: {pub}")
    if head is not None and enabled:
        aum, state = head
        lines.append(f"Head: {aum.hash_text}")
        lines.append("")
        lines.append("Trusted signing keys:")
        for k in state.keys or ():
            key = f"tlpub:{(k.public or b'').hex()}"
            me = " (self)" if key == pub else ""
            lines.append(f"\t{key}\t{k.votes}{me}")
    return "\n".join(lines)


def offline_status_text(node: NodeState) -> str:
    """``tka lock status`` of a node without a control service.

    Reads the stored key and chain only: no crypto library and no authority
    engine (the chain was verified when it was stored).
    """
    return status_text(node.public_key_text(), node.head_state(), node.disabled(), None, None)
