"""How the controller writes its log: plain text or JSON lines on stderr, timestamps always in UTC.

``text``: ``2026-11-02T01:30:00.123Z INFO controller.server: message``.
``json``: one object per line with ``time`` (ISO 8601, UTC, ``Z``), ``level``, ``logger``, ``message``,
``process`` (the process id, so the lines of several worker processes can be told apart), any
``extra={...}`` fields the call gave, and ``exception`` with the trace when there was one. Log
shippers read these lines without a parsing rule.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, TextIO

from controller.errors import InvalidInput

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has; anything else on a record came from ``extra=`` and is written out in JSON.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def utc_time(record: logging.LogRecord) -> str:
    """The record's time as ISO 8601 in UTC with milliseconds: ``2026-11-02T01:30:00.123Z``."""
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UtcTextFormatter(logging.Formatter):
    """The text format, with UTC ISO timestamps."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return utc_time(record)


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(log_format: str, stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Send the controller's log to ``stream`` (stderr) in ``log_format``; replaces the root logger's handlers."""
    if log_format not in FORMATS:
        raise InvalidInput(f"unknown log format {log_format!r}: use {' or '.join(FORMATS)}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLinesFormatter() if log_format == "json" else UtcTextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
