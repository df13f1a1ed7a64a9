"""Structured logs: one JSON object per line on stderr.

Only identifiers and outcomes are logged (method, path without query,
status, duration, tailnet, node ID, error code, event fields). Request
bodies, tokens and disablement secrets never reach a log line: the request
logger is only ever handed the fields listed above.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

__all__ = ["LOGGER_NAME", "JSONFormatter", "log_config", "log_event"]

LOGGER_NAME: Final = "tka.server"


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
            out["msg"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            # The type and the code location only: exception messages could
            # in principle carry request data.
            out["exception"] = record.exc_info[0].__name__
            tb = record.exc_info[2]
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                out["where"] = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        return json.dumps(out, separators=(",", ":"), default=str)


def log_config(level: str = "info") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dict routing uvicorn and tka logs to JSON."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JSONFormatter}},
        "handlers": {"stderr": handler},
        "loggers": {
            LOGGER_NAME: {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            # Requests are logged by tka_server itself, with its own fields.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event."""
    logging.getLogger(LOGGER_NAME).log(level, event, extra={"fields": {"event": event, **fields}})


def now_ms() -> float:
    """A monotonic clock in milliseconds, for request durations."""
    return time.monotonic() * 1000.0
