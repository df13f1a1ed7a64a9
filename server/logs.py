"""Structured logs: one JSON object per line on stderr, within a byte budget.

Only identifiers and outcomes are logged (method, path without query,
status, duration, tailnet, node ID, error code, event fields). Request
bodies, tokens and disablement secrets never reach a log line: the request
logger is only ever handed the fields listed above.

Whatever is thrown at the service, the log stays small and parseable:

* :class:`BudgetHandler` writes at most *bytes_per_minute* in any minute: a
  token bucket holding a quarter of it, refilled at 70 % of it per minute
  (the rest is room for the summaries). One kind of line (an event, a
  request status, a logger's message template) may use at most half of the
  bucket, and a kind that had lines dropped in the last minute may not use
  its last quarter, which stays for the kinds that are not flooding (a
  start, a stop, a rare error). Lines over budget are counted, and one
  ``log_suppressed`` line (at most every 10 s) says how many of each kind
  were dropped.
* Every record becomes one JSON line of at most 4 KiB: an exception gives
  its type and the place it was raised, never a traceback (its message
  could carry request data). uvicorn's loggers, ``asyncio``'s, the root
  logger, warnings, uncaught exceptions in threads, unraisable exceptions
  and the event loop's exception handler (:func:`install_hooks`) all go
  through it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, TextIO

__all__ = [
    "DEFAULT_LOG_BYTES_PER_MINUTE",
    "LOGGER_NAME",
    "BudgetHandler",
    "JSONFormatter",
    "install_hooks",
    "log_config",
    "log_event",
]

LOGGER_NAME: Final = "tka.server"
DEFAULT_LOG_BYTES_PER_MINUTE: Final = 1_000_000
SUMMARY_INTERVAL: Final = 10.0
"""Seconds between two ``log_suppressed`` lines, at least."""
_MAX_LINE: Final = 4096
_MAX_MSG: Final = 1024
_MAX_KINDS_LISTED: Final = 20


class JSONFormatter(logging.Formatter):
    """Format records as single-line JSON: ``ts``, ``level``, ``logger``, message fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["msg"] = record.getMessage()[:_MAX_MSG]
        if record.exc_info and record.exc_info[0] is not None:
            # The type and the code location only: exception messages could
            # in principle carry request data.
            out["exception"] = record.exc_info[0].__name__
            tb = record.exc_info[2]
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                out["where"] = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        line = json.dumps(out, separators=(",", ":"), default=str)
        if len(line) > _MAX_LINE:
            keep: dict[str, Any] = {
                k: out[k] for k in ("ts", "level", "logger", "event") if k in out
            }
            keep["truncated"] = len(line)
            line = json.dumps(keep, separators=(",", ":"), default=str)
        return line


def _kind(record: logging.LogRecord) -> str:
    """What a line is, for the per-kind share and the suppression counts."""
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict) and "event" in fields:
        event = str(fields["event"])
        if event == "request":
            return f"request {fields.get('status', '')}"
        return event[:64]
    return f"{record.name}: {record.msg}"[:64]


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now


class BudgetHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes at most *bytes_per_minute* in any minute (see the module)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        bytes_per_minute: int = DEFAULT_LOG_BYTES_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream)
        self.clock = clock
        self.bytes_per_minute = bytes_per_minute
        now = clock()
        self._total = _Bucket(bytes_per_minute / 4, bytes_per_minute * 0.70 / 60, now)
        self._kinds: dict[str, _Bucket] = {}
        self._suppressed: Counter[str] = Counter()
        self._flooding: dict[str, float] = {}  # kind -> when a line of it was last dropped
        self._last_summary = now

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            now = self.clock()
            kind = _kind(record)
            if self._allow(kind, len(line), now):
                self.stream.write(line)
            else:
                self._suppressed[kind] += 1
                self._flooding[kind] = now
            self._maybe_summary(now)
            self.flush()
        except Exception:
            self.handleError(record)

    def _allow(self, kind: str, size: int, now: float) -> bool:
        total = self._total
        total.refill(now)
        bucket = self._kinds.get(kind)
        if bucket is None:
            if len(self._kinds) >= 1000:
                self._kinds.clear()  # kinds are few; this only bounds memory
                self._flooding.clear()
            bucket = self._kinds[kind] = _Bucket(total.capacity / 2, total.rate / 2, now)
        bucket.refill(now)
        floor = 0.0
        dropped_at = self._flooding.get(kind)
        if dropped_at is not None:
            if now - dropped_at < 60:
                floor = total.capacity / 4  # kept for the kinds that are not flooding
            else:
                del self._flooding[kind]
        if size > total.level - floor or size > bucket.level:
            return False
        total.level -= size
        bucket.level -= size
        return True

    def _maybe_summary(self, now: float, force: bool = False) -> None:
        if not self._suppressed or (not force and now - self._last_summary < SUMMARY_INTERVAL):
            return
        top = self._suppressed.most_common(_MAX_KINDS_LISTED)
        others = sum(self._suppressed.values()) - sum(n for _, n in top)
        fields: dict[str, Any] = {
            "event": "log_suppressed",
            "seconds": round(now - self._last_summary, 1),
            "lines": dict(top),
        }
        if others:
            fields["other_lines"] = others
        line = JSONFormatter().format(_record(logging.WARNING, fields)) + self.terminator
        # Charged to the budget (the bucket may go below zero: later lines wait).
        self._total.level -= len(line)
        self.stream.write(line)
        self._suppressed.clear()
        self._last_summary = now

    def tick(self, force: bool = False) -> None:
        """Write a due ``log_suppressed`` line even if nothing else is logged (*force*: now)."""
        self.acquire()
        try:
            self._maybe_summary(self.clock(), force)
            self.flush()
        except Exception:
            pass
        finally:
            self.release()


def _record(level: int, fields: dict[str, Any]) -> logging.LogRecord:
    record = logging.LogRecord(LOGGER_NAME, level, __file__, 0, str(fields["event"]), None, None)
    record.fields = fields
    return record


def log_config(
    level: str = "info", bytes_per_minute: int = DEFAULT_LOG_BYTES_PER_MINUTE
) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dict routing every log to budgeted JSON lines."""
    handler = {
        "()": BudgetHandler,
        "formatter": "json",
        "stream": "ext://sys.stderr",
        "bytes_per_minute": bytes_per_minute,
    }
    lvl = level.upper()
    quiet = {"handlers": ["stderr"], "level": "WARNING", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JSONFormatter}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            LOGGER_NAME: {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            # Requests are logged by tka_server itself, with its own fields.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "asyncio": quiet,
            "py.warnings": quiet,
        },
    }


def budget_handler() -> BudgetHandler | None:
    """The :class:`BudgetHandler` that :func:`log_config` installed, if any."""
    for h in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(h, BudgetHandler):
            return h
    return None


def install_hooks(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Send the last ways of reaching stderr through the JSON log.

    The event loop's exception handler (e.g. a failed ``accept()``), uncaught
    exceptions in threads, unraisable exceptions and warnings become
    structured, budgeted lines without a traceback. Logging's own errors
    are not printed (``logging.raiseExceptions``).
    """
    logging.raiseExceptions = False
    logging.captureWarnings(True)
    log = logging.getLogger(LOGGER_NAME)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        log.error(
            "thread_error",
            exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
            extra={"fields": {"event": "thread_error"}},
        )

    def unraisable_hook(args: Any) -> None:
        exc = args.exc_value
        log.warning(
            "unraisable",
            exc_info=(type(exc), exc, args.exc_traceback) if exc is not None else None,
            extra={"fields": {"event": "unraisable"}},
        )

    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook
    if loop is not None:
        loop.set_exception_handler(_loop_exception_handler)


def _loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    fields: dict[str, Any] = {
        "event": "loop_error",
        "message": str(context.get("message", ""))[:200],
    }
    if isinstance(exc, OSError) and exc.errno is not None:
        fields["errno"] = exc.errno
    logging.getLogger(LOGGER_NAME).warning(
        "loop_error",
        exc_info=(type(exc), exc, exc.__traceback__) if isinstance(exc, BaseException) else None,
        extra={"fields": fields},
    )


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event."""
    logging.getLogger(LOGGER_NAME).log(level, event, extra={"fields": {"event": event, **fields}})


def now_ms() -> float:
    """A monotonic clock in milliseconds, for request durations."""
    return time.monotonic() * 1000.0
