"""The descriptor limit: raised at start, and the connection cap kept under it.

Every connection costs a file descriptor, and so do the store (SQLite opens
its database, journal and shared-memory files once per worker thread;
PostgreSQL holds its pool's sockets), the log and the event loop. Many
systems start services with a soft limit of 1024 and a much higher hard
limit, so :func:`raise_soft_limit` lifts the soft limit to the hard one
(``resource.setrlimit``), and :func:`connection_cap` keeps *spare*
descriptors out of the connection cap so that the cap is reached before
``accept()`` fails.
"""

from __future__ import annotations

import resource

__all__ = ["connection_cap", "raise_soft_limit"]

# What a soft limit of "unlimited" is raised to (Linux's default nr_open).
_UNLIMITED_TARGET = 1 << 20


def raise_soft_limit() -> tuple[int, int, int]:
    """Raise ``RLIMIT_NOFILE``'s soft limit to the hard one: (before, after, hard).

    An unlimited hard limit raises the soft one to 2**20; if the system
    refuses, the soft limit stays as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    else:
        target = soft
    return soft, target, hard


def connection_cap(max_connections: int, soft_limit: int, spare: int) -> int:
    """*max_connections*, lowered to leave *spare* descriptors under *soft_limit*.

    At least 1 (with a limit too low for the spare, the shortage handling
    of the accept loop is all that is left).
    """
    if soft_limit == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft_limit - spare))
