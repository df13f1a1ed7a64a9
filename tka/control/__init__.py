"""Tailnet lock for a control plane: what a self-hosted coordination server imports.

A control plane holds each tailnet's authority (its AUMs), enforces node-key
signatures and answers the TKA RPCs Tailscale's nodes send. This package is
that piece, with no web framework inside:

* :mod:`tka.admission` (re-exported here): admitted or locked out, with a
  reason a person can read; every node re-evaluated when the head changes;
  locked-out listing; the signatures a key made; signatures verified once;
* :mod:`tka.control.wire`: the RPC bodies, shaped as ``tailcfg``'s types;
* :mod:`tka.control.service`: the RPC handlers and admin operations as plain
  functions over a store, verifying everything they are sent;
* :mod:`tka.control.store`, :mod:`tka.control.sqlite`,
  :mod:`tka.control.postgres`: where tailnets, nodes, tokens and AUMs live;
* :mod:`tka.control.client`: a node's side, over HTTP(S);
* :mod:`tka.control.errors`: errors and the HTTP statuses they map to.

``tka serve`` (package ``tka_server``, extra ``tka[server]``) runs the
service over HTTP.
"""

from __future__ import annotations

from tka.admission import (
    Admission,
    Decision,
    NodeDecision,
    NodeRecord,
    Reevaluation,
    decide,
)

__all__ = [
    "Admission",
    "Decision",
    "NodeDecision",
    "NodeRecord",
    "Reevaluation",
    "decide",
]
