"""Errors of the control service, each tied to the HTTP status it answers with.

Every class here subclasses the matching class of :mod:`tka.errors`, so code
that only knows the library's hierarchy still handles them. :func:`http_status`
maps *any* :class:`~tka.errors.TKAError` to a status and a short machine code:
bad input is a 4xx, and only a failing database is a 5xx.

==========================  ======  =====================================
exception                   status  meaning
==========================  ======  =====================================
``BadRequest``,             400     malformed JSON, wrong types, bad
``DecodeError``,                    encodings, values that break a static
``ValidationError``,                rule
``UsageError``
``Unauthenticated``         401     missing or wrong token
``Forbidden``               403     authenticated, but not allowed
``NotFound``                404     unknown tailnet, node or path
``Conflict``, ``StateError``409     does not apply to the current state
                                    (not enabled, fork loses, replay, ...)
``RequestTimeout``          408     the body came too slowly
``PayloadTooLarge``         413     body over the size limit
``TooManyRequests``         429     too many attempts (e.g. ``disable``)
``VerificationError``,      422     a signature or chain that does not
``NotAuthorized``                   verify
``StoreUnavailable``        503     the database failed
==========================  ======  =====================================

Messages never contain tokens, disablement secrets or private keys.
"""

from __future__ import annotations

from typing import Final

from tka.errors import (
    DecodeError,
    LimitExceeded,
    StateError,
    StorageError,
    TKAError,
    UsageError,
    ValidationError,
    VerificationError,
)

__all__ = [
    "BadRequest",
    "Conflict",
    "ControlRequestError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "StoreUnavailable",
    "TooManyRequests",
    "Unauthenticated",
    "http_status",
]


class BadRequest(DecodeError):
    """A request body that is not what the RPC expects (400)."""


class Unauthenticated(VerificationError):
    """No token, or a token the service does not know (401)."""


class Forbidden(VerificationError):
    """An authenticated caller asking for something it may not do (403)."""


class NotFound(UsageError):
    """An unknown tailnet, node or path (404)."""


class Conflict(StateError):
    """A request that does not apply to the tailnet's current state (409)."""


class PayloadTooLarge(LimitExceeded):
    """A request body over the path's size limit (413)."""


class RequestTimeout(LimitExceeded):
    """A request body that did not arrive at the minimum rate (408)."""


class TooManyRequests(LimitExceeded):
    """A caller over a rate limit, or the service too busy for costly work (429)."""


class StoreUnavailable(StorageError):
    """The database failed or is unreachable (503): the request may be retried."""


class ControlRequestError(TKAError):
    """A control service answered a client's request with an error status.

    Raised by :mod:`tka.control.client`; *status* is the HTTP status (0 when
    the service could not be reached) and *code* the service's error code.
    """

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


_TABLE: Final[tuple[tuple[type[TKAError], int, str], ...]] = (
    # Most specific first: the first matching class wins.
    (Unauthenticated, 401, "unauthenticated"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (RequestTimeout, 408, "request_timeout"),
    (TooManyRequests, 429, "too_many_requests"),
    (StoreUnavailable, 503, "unavailable"),
    (BadRequest, 400, "bad_request"),
    (DecodeError, 400, "bad_request"),
    (ValidationError, 400, "invalid"),
    (UsageError, 400, "bad_request"),
    (LimitExceeded, 400, "limit_exceeded"),
    (VerificationError, 422, "verification_failed"),
    (StateError, 409, "conflict"),
    # Chain walks report AUMs a request named but the store lacks as
    # StorageError; the database itself failing is StoreUnavailable above.
    (StorageError, 409, "conflict"),
)


def http_status(exc: TKAError) -> tuple[int, str]:
    """The HTTP status and error code the service answers *exc* with."""
    for cls, status, code in _TABLE:
        if isinstance(exc, cls):
            return status, code
    return 400, "bad_request"
