"""Shared plumbing of the ``tka`` command line: errors, exit codes, options, files, output.

Exit codes (stable, documented in ``tka --help``):

==  ===============================================================
0   success (for ``lock check``: the node is admitted)
1   refused: a check failed, a signature or chain does not verify,
    the operation does not apply (for ``lock check``: not admitted)
2   bad usage: unknown option, malformed argument (wrong prefix, bad hex,
    a file that cannot be read, a folder to write into that is missing,
    a path to write that holds something tka must not replace)
3   the state directory is missing, locked by another process, or damaged
==  ===============================================================

This module is imported by every command, so it imports nothing heavy:
the tka modules a helper needs are imported inside it.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from tka.errors import TKAError
    from tka.key import Key

__all__ = [
    "EXIT_REFUSED",
    "EXIT_STATE",
    "EXIT_USAGE",
    "GLOBAL_OPTION_NAMES",
    "MAX_INPUT_BYTES",
    "MAX_SMALL_INPUT_BYTES",
    "Fail",
    "TkaGroup",
    "add_global_options",
    "emit",
    "err_line",
    "exit_code_for",
    "fail",
    "force_option",
    "global_opt",
    "output_plan",
    "parse_key_arg",
    "read_arg",
    "read_input",
    "rotation_key_option",
    "show_progress",
    "warn",
    "write_output",
]

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_STATE = 3

#: Cap on a file the CLI reads whole (bundles, recovery files, signing
#: lists): far above any real chain (2,000 AUMs of a few KiB each, base64),
#: far below what would exhaust memory.
MAX_INPUT_BYTES = 64 * 1024 * 1024
#: Cap on a small input: a key, a secret, a passphrase, credentials.
MAX_SMALL_INPUT_BYTES = 64 * 1024


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
    from tka.errors import DecodeError, StorageError, UsageError

    if isinstance(exc, StorageError):
        return EXIT_STATE
    if isinstance(exc, (DecodeError, UsageError)):
        return EXIT_USAGE
    return EXIT_REFUSED


# -- options shared by several commands -----------------------------------------------

#: ``--rotation-key FILE`` of the commands that re-sign a node key (``lock
#: resign``, ``lock rotate-node-key``).
rotation_key_option = click.option(
    "--rotation-key",
    "rotation_key_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="File holding the node's rotation private key (nlpriv:...).",
)


# -- options that belong to the whole program --------------------------------------

#: Options accepted before or after any subcommand (``tka --state-dir D lock
#: status`` and ``tka lock status --state-dir D`` mean the same); the one
#: nearest the end of the command line wins.
GLOBAL_OPTION_NAMES = ("state_dir", "passphrase_file", "control", "lock_timeout", "debug")

_META = "tka.global"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value is not False and param.name is not None:
        ctx.find_root().meta.setdefault(_META, {})[param.name] = value
    return value


def _global_options() -> list[click.Option]:
    return [
        click.Option(
            ["--state-dir"],
            type=click.Path(file_okay=False),
            expose_value=False,
            callback=_remember,
            help="This node's state directory (default: $TKA_STATE_DIR, else the user data dir).",
        ),
        click.Option(
            ["--passphrase-file"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_remember,
            help="File holding the passphrase of an encrypted key (default: $TKA_PASSPHRASE_FILE).",
        ),
        click.Option(
            ["--control"],
            metavar="URL",
            expose_value=False,
            callback=_remember,
            help="Control service to sync with (default: $TKA_CONTROL_URL, else the saved one).",
        ),
        click.Option(
            ["--lock-timeout"],
            type=float,
            expose_value=False,
            callback=_remember,
            help="Seconds to wait for another tka process on the same state dir [default: 10].",
        ),
        click.Option(
            ["--debug"],
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Show a traceback when a command fails (not for usage errors).",
        ),
    ]


def add_global_options(cmd: click.Command) -> click.Command:
    """Give *cmd* (and its loaded subcommands) the global options it lacks. Idempotent."""
    if not getattr(cmd, "_tka_globals", False):
        taken = {o for p in cmd.params for o in getattr(p, "opts", ())}
        # A command that is no node command (tka serve) names the few it takes.
        only = getattr(cmd, "tka_global_options", None)
        cmd.params.extend(
            o
            for o in _global_options()
            if not set(o.opts) & taken and (only is None or o.name in only)
        )
        cmd._tka_globals = True  # type: ignore[attr-defined]
    if isinstance(cmd, click.Group) and not isinstance(cmd, TkaGroup):
        # A plain group (tka control) resolves its subcommands itself: give
        # them the options now. A TkaGroup does it as each one is resolved,
        # so 'tka lock status' builds the options of one command, not 20.
        for sub in cmd.commands.values():
            add_global_options(sub)
    return cmd


class TkaGroup(click.Group):
    """A group whose subcommands take the global options, some loaded only when used.

    *lazy* maps a subcommand name to ``(module, attribute)`` in this
    package: the module is imported the first time the subcommand is
    asked for (to run it, complete it or list it in help).
    """

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every subcommand, loaded or not, sorted."""
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The subcommand (imported on first use), with the global options attached."""
        if cmd_name not in self.commands and cmd_name in self.lazy:
            from importlib import import_module

            module_name, attr = self.lazy[cmd_name]
            module = import_module(f"{__package__}.{module_name}")
            self.add_command(getattr(module, attr), cmd_name)
        cmd = super().get_command(ctx, cmd_name)
        return add_global_options(cmd) if cmd is not None else None


def global_opt(ctx: click.Context | None, name: str) -> Any:
    """The value of global option *name* wherever it was given, else ``None``."""
    if ctx is None:
        return None
    return ctx.find_root().meta.get(_META, {}).get(name)


# -- files ---------------------------------------------------------------------------


def read_input(path: str, what: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of input file *path* (``-`` for stdin), refusing more than *limit* bytes.

    The size is checked before reading, so a huge file fails at once rather
    than after filling memory; a pipe is read up to the cap.
    """
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
        if len(data) > limit:
            fail(f"{what} on stdin is larger than {_size(limit)}", EXIT_USAGE)
        return data
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                fail(
                    f"{what} {path} is {_size(size)}, more than the {_size(limit)} allowed",
                    EXIT_USAGE,
                )
            data = f.read(limit + 1)
    except IsADirectoryError:
        fail(f"cannot read {what} {path}: it is a directory", EXIT_USAGE)
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror}", EXIT_USAGE)
    if len(data) > limit:
        fail(f"{what} {path} is more than the {_size(limit)} allowed", EXIT_USAGE)
    return data


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.0f} {unit}"
        n //= 1024
    return f"{n} GiB"  # pragma: no cover


#: ``--force`` of the commands that write a file the user names.
force_option = click.option(
    "--force",
    is_flag=True,
    help="Replace FILE if a file is there (never a link, device, FIFO or folder).",
)


def _refused(path: str, exc: Exception, *, secret: bool, stdout: bool) -> NoReturn:
    """Exit 2: what is at *path* may not be written (see :func:`output_plan`)."""
    kind = getattr(exc, "kind", "")
    or_stdout = " or to '-' (stdout)" if stdout else ""
    message = str(exc)
    if kind == "regular":
        message += "; pass --force to replace it"
    elif kind in ("fifo", "char-device", "symlink") and secret:
        message += f"; a secret is written only to a regular file (0600){or_stdout}"
    elif kind == "symlink":
        message += "; name the file itself" + (", or '-' for stdout" if stdout else "")
    fail(message, EXIT_USAGE)


def output_plan(
    path: str,
    *,
    secret: bool = False,
    force: bool = False,
    update: bool = False,
    stdout: bool = True,
    streams: bool = True,
    io_code: int = EXIT_USAGE,
) -> str:
    """How :func:`write_output` will write *path*, or exit 2 naming what is there.

    ``"stdout"`` for ``-`` (when *stdout*); ``"create"`` when nothing is
    there; ``"replace"`` for a regular file, only when the command exists to
    update it (*update*) or with *force*; ``"stream"`` for a FIFO, the null
    device or this process's terminal (or a link to one, such as
    /dev/stdout), with *streams* and never for a *secret*. Anything else (a
    folder, a link to anything else or to nothing, a socket, another device)
    is refused; a missing folder, or a path that cannot be looked at, is
    exit *io_code*. Commands call this first, so that a refusal comes before
    they do anything; :func:`write_output` checks again.
    """
    from tka._fileutil import TargetRefused, check_target

    if path == "-":
        if not stdout:
            fail("'-' (stdout) cannot be used here; name a file", EXIT_USAGE)
        return "stdout"
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        fail(f"cannot write {path}: the folder {folder} does not exist", io_code)
    try:
        return check_target(full, replace=force or update, streams=streams and not secret)
    except TargetRefused as exc:
        exc.path = path
        _refused(path, exc, secret=secret, stdout=stdout)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}", io_code)


def write_output(
    path: str,
    data: bytes,
    *,
    secret: bool = False,
    force: bool = False,
    update: bool = False,
    stdout: bool = True,
    streams: bool = True,
    io_code: int = EXIT_USAGE,
) -> str:
    """Write *data* to *path* (``-``: stdout) without destroying what was there.

    A new or replaced file is written atomically (the old content or the
    new, never a part), 0600 when it holds a *secret*, else 0644; a stream
    is written through. What may be written where is :func:`output_plan`'s;
    a refusal is exit 2 naming the path and what is there, any other
    failure (no space, no permission) exit *io_code* with the reason, never
    a traceback. Returns the plan followed: a command prints its own
    messages on stderr after ``"stdout"`` or ``"stream"`` (which may be
    stdout too, as /dev/stdout is).
    """
    from tka._fileutil import TargetRefused, atomic_write, write_through

    plan = output_plan(
        path,
        secret=secret,
        force=force,
        update=update,
        stdout=stdout,
        streams=streams,
        io_code=io_code,
    )
    try:
        if plan == "stdout":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        elif plan == "stream":
            write_through(path, data)
        else:
            full = os.path.abspath(path)
            atomic_write(full, data, 0o600 if secret else 0o644, replace=plan == "replace")
    except TargetRefused as exc:  # something else appeared meanwhile
        exc.path = path
        _refused(path, exc, secret=secret, stdout=stdout)
    except OSError as exc:
        if plan == "stdout":
            raise
        fail(f"cannot write {path}: {exc.strerror}", io_code)
    return plan


def read_arg(arg: str) -> str:
    """Tailscale's ``file:PATH`` argument form: the file's content, trimmed."""
    if arg.startswith("file:"):
        path = arg[len("file:") :]
        data = read_input(path, "file", MAX_SMALL_INPUT_BYTES)
        try:
            return data.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            fail(f"{path} is not UTF-8 text", EXIT_USAGE)
    return arg


def parse_key_arg(arg: str, position: int) -> Key:
    """A trusted-key argument as Tailscale takes it: ``tlpub:<hex>[?votes]``."""
    from tka.errors import DecodeError
    from tka.key import Key
    from tka.nlkeys import NLPublic

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


# -- output --------------------------------------------------------------------------


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print *data* as JSON (with ``--json``) or *text*."""
    if as_json:
        import json

        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(text)


def warn(message: str) -> None:
    """A ``tka: warning:`` line on stderr."""
    click.echo(f"tka: warning: {message}", err=True)


def show_progress(total: int, quiet: bool) -> bool:
    """Whether a run over *total* items shows a progress bar on stderr.

    Only for long runs, only when stderr is a terminal, never with --quiet.
    """
    return not quiet and total >= 200 and sys.stderr.isatty()


def err_line(message: str) -> None:
    """One line on stderr."""
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    sys.stderr.write(f"tka: error: {first}\n")
