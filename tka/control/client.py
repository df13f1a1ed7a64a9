"""Talking to a tka control service over HTTP(S), as a Tailscale node does.

:class:`ControlClient` sends the TKA RPCs the way ``ipn/ipnlocal`` does (GET
with a JSON body, ``tailcfg`` shapes, a one-minute timeout, answers read up
to 10 MiB for init/begin and sync, 1 MiB otherwise) plus the node token.
:func:`sync_node` is Tailscale's ``tkaSyncIfNeeded`` + ``tkaSyncLocked``:
bootstrap or learn a disablement, then offer, apply what control sent, send
what control lacks. :class:`AdminClient` drives the admin API.
:class:`NodeCredentials` and :class:`NodeKeyPair` are what a node keeps in
its state directory to do so.

Standard library only (``urllib``), so a node needs no server packages.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import nacl.exceptions
import nacl.public

from tka._fileutil import atomic_write
from tka.aum import AUM
from tka.authority import Authority
from tka.control import wire
from tka.control.errors import ControlRequestError
from tka.errors import DecodeError, StorageError, VerificationError
from tka.nlkeys import NodePublic
from tka.storage import Storage
from tka.sync import NoIntersection, SyncOffer, missing_aums, sync_offer

__all__ = [
    "CAPABILITY_VERSION",
    "AdminClient",
    "ControlClient",
    "NodeCredentials",
    "NodeKeyPair",
    "SyncResult",
    "sync_node",
]

#: The ``tailcfg.CapabilityVersion`` this client reports.
CAPABILITY_VERSION: Final = 131
LARGE_READ: Final = 10 * 1024 * 1024
SMALL_READ: Final = 1024 * 1024
#: A whole map: about 300 bytes per admitted node, so room for 200,000 nodes.
MAP_READ: Final = 64 * 1024 * 1024
#: Nodes per page of the admin listings (a page's answer stays far below SMALL_READ).
NODE_PAGE_SIZE: Final = 500
DEFAULT_TIMEOUT: Final = 60.0
CREDENTIALS_FILE: Final = "control-node.json"
NODE_KEY_FILE: Final = "node-key.json"

R = TypeVar("R")


def _check_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DecodeError("control URL: expected http://HOST:PORT or https://HOST[:PORT]")
    return url.rstrip("/")


class _HTTP:
    """One base URL, JSON bodies, bearer token, bounded reads."""

    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        self.base_url = _check_url(base_url)
        self._token = token
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        read_limit: int = SMALL_READ,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """Send one request; the response body on 2xx, :class:`ControlRequestError` otherwise.

        *headers*, when given, receives the answer's headers (lower-case names).
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        where = f"control {self.base_url}{path.split('?')[0]}"
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                out: bytes = resp.read(read_limit + 1)
                if headers is not None:
                    headers.update((k.lower(), v) for k, v in resp.headers.items())
        except urllib.error.HTTPError as exc:
            raw = exc.read(SMALL_READ)
            message, code = f"HTTP {exc.code}", ""
            try:
                doc = json.loads(raw)
                if isinstance(doc, dict):
                    message = str(doc.get("error") or message)
                    code = str(doc.get("code") or "")
            except ValueError:
                pass
            raise ControlRequestError(f"{where}: {message} ({exc.code})", exc.code, code) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ControlRequestError(f"{where}: cannot reach the service ({reason})") from None
        if len(out) > read_limit:
            raise ControlRequestError(f"{where}: answer over the {read_limit}-byte limit")
        return out

    def request_headers(
        self, method: str, path: str, read_limit: int = SMALL_READ
    ) -> tuple[bytes, dict[str, str]]:
        """Like :meth:`request` (no body), with the answer's headers (lower-case names)."""
        box: dict[str, str] = {}
        out = self.request(method, path, None, read_limit, box)
        return out, box

    def json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        read_limit: int = SMALL_READ,
    ) -> Any:
        """Like :meth:`request`, decoding the JSON answer."""
        raw = self.request(method, path, body, read_limit)
        try:
            return json.loads(raw)
        except ValueError:
            raise ControlRequestError(
                f"control {self.base_url}{path}: answer is not JSON"
            ) from None


class ControlClient:
    """A node's side of the TKA RPCs.

    *node_key* is the node's current node key, sent in every request;
    *token* the node's bearer token.
    """

    def __init__(
        self, url: str, token: str, node_key: NodePublic, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._http = _HTTP(url, token, timeout)
        self.node_key = node_key

    @property
    def url(self) -> str:
        """The service's base URL."""
        return self._http.base_url

    def __repr__(self) -> str:
        return f"ControlClient({self.url!r}, node_key={self.node_key.text()})"

    def _rpc(self, req: Any, response: type[R], read_limit: int = SMALL_READ) -> R:
        obj = self._rpc_json(req, read_limit)
        try:
            return wire.decode(response, obj)
        except DecodeError as exc:
            raise ControlRequestError(f"control {self.url}{req.path}: bad answer: {exc}") from None

    def _rpc_json(self, req: Any, read_limit: int) -> Any:
        try:
            return self._http.json("GET", req.path, wire.encode(req), read_limit)
        except ControlRequestError as exc:
            if exc.status != 401:
                raise
            # The usual cause: an admin re-minted this node's token (or
            # removed the node); say what fixes it.
            raise ControlRequestError(
                f"{exc}: this node's token is no longer valid; log in again with the "
                "credentials an admin gives you: tka lock login CREDENTIALS.json",
                exc.status,
                exc.code,
            ) from None

    def init_begin(self, genesis: AUM) -> tuple[wire.SignInfo, ...]:
        """Submit a genesis; the nodes that need a signature."""
        req = wire.InitBeginRequest(CAPABILITY_VERSION, self.node_key, genesis.to_bytes())
        return self._rpc(req, wire.InitBeginResponse, LARGE_READ).need_signatures

    def init_finish(self, signatures: dict[int, bytes], support_disablement: bytes = b"") -> None:
        """Submit every node's signature; lock is enforced from then on."""
        req = wire.InitFinishRequest(
            CAPABILITY_VERSION, self.node_key, signatures, support_disablement
        )
        self._rpc(req, wire.EmptyResponse)

    def bootstrap(self, head: bytes | None) -> wire.BootstrapResponse:
        """The genesis (when *head* is ``None`` and lock is on) or the disablement secret."""
        return self._rpc(
            wire.BootstrapRequest(CAPABILITY_VERSION, self.node_key, head), wire.BootstrapResponse
        )

    def sync_offer(self, offer: SyncOffer) -> wire.SyncOfferResponse:
        """Send this node's offer; the service's offer and the AUMs this node lacks."""
        req = wire.SyncOfferRequest(CAPABILITY_VERSION, self.node_key, offer.head, offer.ancestors)
        return self._rpc(req, wire.SyncOfferResponse, LARGE_READ)

    def sync_send(self, head: bytes, aums: list[AUM], interactive: bool = False) -> bytes:
        """Send the AUMs the service lacks and this node's head; the service's head."""
        req = wire.SyncSendRequest(
            CAPABILITY_VERSION, self.node_key, head, tuple(a.to_bytes() for a in aums), interactive
        )
        resp = self._rpc(req, wire.SyncSendResponse, LARGE_READ)
        if resp.head is None:
            raise ControlRequestError(f"control {self.url}: sync/send answer has no head")
        return resp.head

    def disable(self, head: bytes, secret: bytes) -> None:
        """Disable lock for the whole tailnet with a disablement secret."""
        self._rpc(
            wire.DisableRequest(CAPABILITY_VERSION, self.node_key, head, secret),
            wire.EmptyResponse,
        )

    def sign(self, signature: bytes) -> None:
        """Submit a node-key signature."""
        self._rpc(
            wire.SubmitSignatureRequest(CAPABILITY_VERSION, self.node_key, signature),
            wire.EmptyResponse,
        )

    def affected_sigs(self, key_id: bytes) -> tuple[bytes, ...]:
        """The valid signatures rooted in *key_id*."""
        req = wire.SignaturesUsingKeyRequest(CAPABILITY_VERSION, self.node_key, key_id)
        return self._rpc(req, wire.SignaturesUsingKeyResponse).signatures

    def rotate(self, new_key: NodePublic, signature: bytes) -> wire.RegisterResponse:
        """Move this node to *new_key*, admitted by *signature*."""
        req = wire.RegisterRequest(CAPABILITY_VERSION, new_key, self.node_key, signature)
        resp = self._rpc(req, wire.RegisterResponse)
        self.node_key = new_key
        return resp

    def map(self, since: wire.MapResponse | None = None) -> wire.MapResponse:
        """The lock fields of a map poll: head, this node, admitted peers.

        With *since* (an earlier answer), the service may send only what
        changed since it; the answer returned is always the whole map.
        """
        req = wire.MapRequest(
            CAPABILITY_VERSION,
            self.node_key,
            map_session_handle=since.map_session_handle if since is not None else "",
            map_session_seq=since.seq if since is not None else 0,
        )
        obj = self._rpc_json(req, MAP_READ)
        try:
            answer = wire.decode_map_response(obj)
            if answer.delta and since is None:
                raise DecodeError("a delta answer to a request for the whole map")
            return wire.apply_map_delta(since, answer) if since is not None else answer
        except DecodeError as exc:
            raise ControlRequestError(f"control {self.url}{req.path}: bad answer: {exc}") from None


class AdminClient:
    """The admin API, authenticated by an admin token."""

    def __init__(self, url: str, token: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._http = _HTTP(url, token, timeout)

    def _path(self, tailnet: str, rest: str = "") -> str:
        return f"/admin/tailnets/{urllib.parse.quote(tailnet, safe='')}{rest}"

    def create_tailnet(self, name: str) -> dict[str, Any]:
        """Create a tailnet."""
        out: dict[str, Any] = self._http.json("POST", "/admin/tailnets", {"Name": name})
        return out

    def tailnets(self) -> list[dict[str, Any]]:
        """Every tailnet."""
        out: list[dict[str, Any]] = self._http.json("GET", "/admin/tailnets")["Tailnets"]
        return out

    def status(self, tailnet: str) -> dict[str, Any]:
        """One tailnet's lock status."""
        out: dict[str, Any] = self._http.json("GET", self._path(tailnet))
        return out

    def register_node(
        self,
        tailnet: str,
        node_key: NodePublic,
        rotation_pubkey: bytes = b"",
        nl_key: bytes = b"",
        name: str = "",
        *,
        may_init: bool = False,
    ) -> dict[str, Any]:
        """Register a node; its credentials (with the token, shown once)."""
        body = wire.encode(
            wire.AdminRegisterRequest(node_key, rotation_pubkey, nl_key, name, may_init)
        )
        out: dict[str, Any] = self._http.json("POST", self._path(tailnet, "/nodes"), body)
        return out

    def nodes(self, tailnet: str) -> list[wire.AdminNode]:
        """Every node with the authority's decision."""
        return list(self.iter_nodes(tailnet))

    def locked_out(self, tailnet: str) -> list[wire.AdminNode]:
        """The nodes the authority does not admit."""
        return list(self.iter_nodes(tailnet, locked_out=True))

    def iter_nodes(
        self, tailnet: str, *, locked_out: bool = False, page_size: int = NODE_PAGE_SIZE
    ) -> Iterator[wire.AdminNode]:
        """The nodes (or only those locked out), a page of *page_size* at a time.

        Each page is its own request, its answer read up to 1 MiB, so
        neither side ever holds more than a page whatever the tailnet's size.
        """
        what = "/locked-out" if locked_out else "/nodes"
        after = 0
        while True:
            path = self._path(tailnet, f"{what}?after={after}&limit={page_size}")
            doc = self._http.json("GET", path)
            for n in doc["Nodes"]:
                yield wire.decode(wire.AdminNode, n)
            nxt = doc.get("Next")
            if nxt is None:
                return
            if not isinstance(nxt, int) or isinstance(nxt, bool) or nxt <= after:
                raise ControlRequestError(f"control {self._http.base_url}{what}: bad Next {nxt!r}")
            after = nxt

    def log(self, tailnet: str, limit: int = 50) -> bytes:
        """The lock log, v1 JSON, as Tailscale prints it: read a page at a time, joined here."""
        from tka.lockjson import LockLog, parse_log, render

        pages: list[bytes] = []
        before = ""
        remaining = limit
        for _ in range(limit + 1):
            q = urllib.parse.urlencode(
                {"limit": remaining, **({"before": before} if before else {})}
            )
            body, headers = self._http.request_headers(
                "GET", self._path(tailnet, f"/log?{q}"), LARGE_READ
            )
            pages.append(body)
            before = headers.get("tka-log-next") or ""
            if not before:
                break
            remaining -= len(parse_log(body).messages or ())
            if remaining <= 0:
                break
        if len(pages) == 1:
            return pages[0]
        messages = tuple(m for p in pages for m in (parse_log(p).messages or ()))
        return render(LockLog(messages=messages)).encode()

    def affected_sigs(self, tailnet: str, key_text: str) -> list[str]:
        """Base64 signatures rooted in a ``tlpub:`` key."""
        q = urllib.parse.urlencode({"key": key_text})
        out: list[str] = self._http.json("GET", self._path(tailnet, f"/affected-sigs?{q}"))[
            "Signatures"
        ]
        return out

    def delete_node(self, tailnet: str, node_id: int) -> None:
        """Forget a node."""
        self._http.json("DELETE", self._path(tailnet, f"/nodes/{node_id}"))

    def set_may_init(self, tailnet: str, node_id: int, may_init: bool) -> None:
        """Allow (or forbid) a node to initialize tailnet lock."""
        self._http.json("PATCH", self._path(tailnet, f"/nodes/{node_id}"), {"MayInit": may_init})

    def remint_node_token(self, tailnet: str, node_id: int) -> dict[str, Any]:
        """A new token for a node (the old one stops working); its credentials."""
        path = self._path(tailnet, f"/nodes/{node_id}/token")
        out: dict[str, Any] = self._http.json("POST", path)
        return out

    def admin_tokens(self) -> list[dict[str, Any]]:
        """The admin tokens: ``ID``, ``Label``, ``Created`` (never a secret)."""
        out: list[dict[str, Any]] = self._http.json("GET", "/admin/tokens")["Tokens"]
        return out

    def mint_admin_token(self, label: str = "") -> str:
        """A new admin token (shown once)."""
        return str(self._http.json("POST", "/admin/tokens", {"Label": label})["Token"])

    def revoke_admin_token(self, token_id: int) -> None:
        """Revoke an admin token."""
        self._http.json("DELETE", f"/admin/tokens/{token_id}")

    def mint_front_token(self, tailnet: str, label: str = "") -> dict[str, Any]:
        """A new front token for *tailnet*: ``ID``, ``Label``, ``Token`` (shown once)."""
        body = {"Label": label}
        out: dict[str, Any] = self._http.json("POST", self._path(tailnet, "/front-tokens"), body)
        return out

    def front_tokens(self, tailnet: str | None = None) -> list[dict[str, Any]]:
        """Front tokens (of one tailnet): ``ID``, ``Tailnet``, ``Label``, ``Created``."""
        path = "/admin/front-tokens" if tailnet is None else self._path(tailnet, "/front-tokens")
        out: list[dict[str, Any]] = self._http.json("GET", path)["Tokens"]
        return out

    def revoke_front_token(self, token_id: int) -> None:
        """Revoke a front token."""
        self._http.json("DELETE", f"/admin/front-tokens/{token_id}")


# -- what a node keeps ------------------------------------------------------------------


@dataclass(frozen=True)
class NodeKeyPair:
    """A node's WireGuard (Curve25519) key pair; the private half never leaves the file."""

    private: bytes
    public: NodePublic

    def __repr__(self) -> str:
        return f"NodeKeyPair({self.public.text()})"

    @classmethod
    def generate(cls) -> NodeKeyPair:
        """A fresh key pair."""
        priv = nacl.public.PrivateKey.generate()
        return cls(bytes(priv), NodePublic(bytes(priv.public_key)))

    @classmethod
    def load(cls, state_dir: str) -> NodeKeyPair | None:
        """The node key kept in *state_dir*, or ``None``."""
        path = os.path.join(state_dir, NODE_KEY_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            priv = bytes.fromhex(doc["private"])
            pair = nacl.public.PrivateKey(priv)
            return cls(priv, NodePublic(bytes(pair.public_key)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, nacl.exceptions.CryptoError):
            raise StorageError(f"{path} is damaged") from None

    def save(self, state_dir: str) -> None:
        """Keep the pair in *state_dir* (0600, atomically)."""
        doc = {"private": self.private.hex(), "public": self.public.text()}
        atomic_write(os.path.join(state_dir, NODE_KEY_FILE), json.dumps(doc).encode(), 0o600)


@dataclass(frozen=True)
class NodeCredentials:
    """What registration handed the node: its tailnet, node ID and token."""

    tailnet: str
    node_id: int
    token: str

    def __repr__(self) -> str:
        return f"NodeCredentials(tailnet={self.tailnet!r}, node_id={self.node_id})"

    @classmethod
    def from_json(cls, data: bytes | str) -> NodeCredentials:
        """Parse what ``tka control register`` prints."""
        try:
            doc = json.loads(data)
            tailnet, node_id, token = doc["Tailnet"], doc["NodeID"], doc["Token"]
        except (ValueError, KeyError, TypeError):
            raise DecodeError(
                "credentials: expected the JSON 'tka control register' prints "
                "(Tailnet, NodeID, NodeKey, Token)"
            ) from None
        if not (isinstance(tailnet, str) and isinstance(node_id, int) and isinstance(token, str)):
            raise DecodeError("credentials: Tailnet, NodeID and Token have the wrong types")
        return cls(tailnet, node_id, token)

    @classmethod
    def load(cls, state_dir: str) -> NodeCredentials | None:
        """The credentials kept in *state_dir*, or ``None``."""
        path = os.path.join(state_dir, CREDENTIALS_FILE)
        try:
            with open(path, "rb") as f:
                return cls.from_json(f.read())
        except FileNotFoundError:
            return None
        except (OSError, DecodeError):
            raise StorageError(f"{path} is damaged") from None

    def save(self, state_dir: str) -> None:
        """Keep the credentials in *state_dir* (0600: the token is a secret)."""
        doc = {"Tailnet": self.tailnet, "NodeID": self.node_id, "Token": self.token}
        atomic_write(os.path.join(state_dir, CREDENTIALS_FILE), json.dumps(doc).encode(), 0o600)


# -- sync ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncResult:
    """What one sync did."""

    action: str
    """``not-enabled``, ``disabled``, ``up-to-date`` or ``synced`` (``bootstrapped`` prefixes)."""
    head: bytes | None = None
    control_head: bytes | None = None
    received: int = 0
    sent: int = 0
    disablement_secret: bytes | None = None

    def __repr__(self) -> str:
        return f"SyncResult(action={self.action!r}, received={self.received}, sent={self.sent})"

    @property
    def agreed(self) -> bool:
        """Whether node and service ended on the same head."""
        return self.head is not None and self.head == self.control_head


def sync_node(
    client: ControlClient, storage: Storage, authority: Authority | None
) -> tuple[Authority | None, SyncResult]:
    """Bring a node's AUMs in line with the service's (``tkaSyncIfNeeded``).

    Returns the node's authority afterwards (bootstrapped if it had none)
    and what happened. A disablement secret from the service is returned
    only after it was checked against the node's own authority; the caller
    records the disablement.
    """
    boot = client.bootstrap(authority.head_hash if authority is not None else None)
    if boot.disablement_secret:
        if authority is None:
            return None, SyncResult("disabled", disablement_secret=boot.disablement_secret)
        if not authority.valid_disablement(boot.disablement_secret):
            raise VerificationError(
                "the service says tailnet lock is disabled, but its disablement secret does "
                "not match this node's authority"
            )
        return authority, SyncResult(
            "disabled", authority.head_hash, disablement_secret=boot.disablement_secret
        )
    prefix = ""
    if authority is None:
        if not boot.genesis_aum:
            return None, SyncResult("not-enabled")
        try:
            genesis = AUM.from_bytes(boot.genesis_aum)
        except DecodeError as exc:
            raise ControlRequestError(
                f"control {client.url}: genesis does not decode: {exc}"
            ) from None
        authority = Authority.bootstrap(storage, genesis)
        prefix = "bootstrapped, "
    offer = sync_offer(authority, storage)
    resp = client.sync_offer(offer)
    if resp.head is None:
        raise ControlRequestError(f"control {client.url}: sync/offer answer has no head")
    control_offer = SyncOffer(resp.head, resp.ancestors)
    if control_offer.head == offer.head:
        return authority, SyncResult(prefix + "up-to-date", offer.head, offer.head)
    # What the service lacks is computed before applying its AUMs, so this
    # node's AUMs are sent even when they lose a fork (as Tailscale does).
    try:
        to_send = missing_aums(authority, storage, control_offer)
    except NoIntersection:
        raise ControlRequestError(
            f"control {client.url}: the service holds another authority (no common AUM)"
        ) from None
    received = 0
    if resp.missing_aums:
        try:
            aums = [AUM.from_bytes(b) for b in resp.missing_aums]
        except DecodeError as exc:
            raise ControlRequestError(f"control {client.url}: AUM does not decode: {exc}") from None
        authority.inform(storage, aums)
        received = len(aums)
    control_head = client.sync_send(authority.head_hash, to_send)
    return authority, SyncResult(
        prefix + "synced", authority.head_hash, control_head, received, len(to_send)
    )
