"""Commands answered before click and the command tree are imported.

``import click`` alone costs about three times a bare interpreter start on
the machines we measure, so the two commands people and scripts run most
often, ``tka --version`` and the offline ``tka lock status``, are answered
here when the command line is exactly one of the plain forms below. Every
other command line, and every case this module is not sure about (an
option it does not know, a control service to sync with, a busy or damaged
state directory, an error of any kind), is left to the full command,
which prints exactly what it always prints: so the fast path never changes
what a command says, only how soon it says it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["answer"]

_STATE_DIR = "--state-dir"


def answer(args: Sequence[str]) -> int | None:
    """Run *args* (the command line without the program name) if it is answered here.

    Returns the exit code when it was, ``None`` when the full command
    line interface must run it.
    """
    if list(args) == ["--version"]:
        from tka import __version__

        sys.stdout.write(f"tka {__version__}\n")
        return 0
    state_dir = _lock_status_state_dir(args)
    if state_dir is None:
        return None
    return _offline_status(state_dir)


def _lock_status_state_dir(args: Sequence[str]) -> str | None:
    """The state directory of a plain ``tka lock status`` command line, else ``None``.

    Accepted: ``lock status`` with any number of ``--state-dir DIR`` (or
    ``--state-dir=DIR``) before, between or after the words; the last one
    wins, as in the full command. Without one, ``$TKA_STATE_DIR`` or the
    platform's default, as the full command chooses.
    """
    words: list[str] = []
    chosen: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == _STATE_DIR:
            if i + 1 >= len(args):
                return None  # a usage error: the full command explains it
            chosen = args[i + 1]
            i += 2
            continue
        if arg.startswith(_STATE_DIR + "="):
            chosen = arg[len(_STATE_DIR) + 1 :]
        elif arg.startswith("-"):
            return None  # --json, --control, --debug, --help, "--", ...: not a plain status
        else:
            words.append(arg)
        i += 1
    if words != ["lock", "status"] or chosen == "":
        return None
    if chosen is not None:
        return chosen
    from ._paths import default_state_dir

    return default_state_dir()


def _offline_status(path: str) -> int | None:
    """Print the offline status of the node at *path*, or ``None`` to leave it to click."""
    if os.environ.get("TKA_CONTROL_URL") or not os.path.isdir(path):
        return None
    from tka.errors import TKAError
    from tka.statedir import NodeState

    from .status_text import offline_status_text

    try:
        # lock_timeout=0: when another tka process holds the directory, the
        # full command waits for it (for --lock-timeout), not this one too.
        with NodeState(path, lock_timeout=0, create=False) as node:
            if node.control_url():
                return None  # status syncs with control first
            text = offline_status_text(node)
    except (TKAError, OSError):
        return None  # the full command reports it, with its exit code
    if not text.isascii() or not all(c.isprintable() or c in "\t\n" for c in text):
        # Terminal escapes (which click strips) or characters the terminal's
        # encoding may lack: the full command handles those as it always has.
        return None
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        return 1  # as the full command exits when its reader goes away
    return 0
