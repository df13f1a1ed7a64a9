"""Shared plumbing of the ``tka`` command line: errors, exit codes, argument parsing, output.

Exit codes (stable, documented in ``tka --help``):

==  ===============================================================
0   success (for ``lock check``: the node is admitted)
1   refused: a check failed, a signature or chain does not verify,
    the operation does not apply (for ``lock check``: not admitted)
2   bad usage: unknown option, malformed argument (wrong prefix, bad hex, ...)
3   the state directory is missing, locked by another process, or damaged
==  ===============================================================
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import click
import platformdirs

from tka.errors import DecodeError, StorageError, TKAError, UsageError
from tka.key import Key
from tka.nlkeys import NLPublic

__all__ = [
    "EXIT_REFUSED",
    "EXIT_STATE",
    "EXIT_USAGE",
    "Fail",
    "default_state_dir",
    "emit",
    "fail",
    "parse_key_arg",
    "read_arg",
]

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_STATE = 3


class Fail(Exception):
    """Stop the command with one line on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    """Stop the command: *message* on stderr, exit *code*."""
    raise Fail(message, code)


def exit_code_for(exc: TKAError) -> int:
    """The documented exit code for a library error."""
    if isinstance(exc, StorageError):
        return EXIT_STATE
    if isinstance(exc, (DecodeError, UsageError)):
        return EXIT_USAGE
    return EXIT_REFUSED


def default_state_dir() -> str:
    """``$TKA_STATE_DIR``, else the platform's user data directory for tka."""
    return os.environ.get("TKA_STATE_DIR") or platformdirs.user_data_dir("tka")


def read_arg(arg: str) -> str:
    """Tailscale's ``file:PATH`` argument form: the file's content, trimmed."""
    if arg.startswith("file:"):
        path = arg[len("file:") :]
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
        except UnicodeDecodeError:
            fail(f"{path} is not UTF-8 text", EXIT_USAGE)
    return arg


def parse_key_arg(arg: str, position: int) -> Key:
    """A trusted-key argument as Tailscale takes it: ``tlpub:<hex>[?votes]``."""
    text, _, votes_text = arg.partition("?")
    try:
        public = NLPublic.from_text(text)
    except DecodeError as exc:
        fail(f"key {position}: {exc}", EXIT_USAGE)
    votes = 1
    if votes_text:
        try:
            votes = int(votes_text, 10)
        except ValueError:
            fail(f"key {position}: votes {votes_text!r} is not a whole number", EXIT_USAGE)
        if not 1 <= votes <= 4096:
            fail(f"key {position}: votes must be between 1 and 4096, got {votes}", EXIT_USAGE)
    return Key.ed25519(public.raw, votes=votes)


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print *data* as JSON (with ``--json``) or *text*."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(text)


def err_line(message: str) -> None:
    """One line on stderr."""
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    sys.stderr.write(f"tka: error: {first}\n")
