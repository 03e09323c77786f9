"""The agent's logs: JSON lines in a rotated file in the state folder, beside the plain text on stderr.

stderr (plain text, set up by the command line) is what systemd puts in the journal. The file,
``<state_dir>/agent.log``, holds one JSON object per line: ``ts`` (UTC, ISO 8601 with milliseconds),
``level``, ``logger``, ``msg``, any fields a call passed with ``extra=``, and ``exc`` with the
traceback when there is one. It is rotated by size (``log_max_bytes``, keeping ``log_backup_count``
old files), so it never fills the disk of a PC nobody looks after.

What goes into a log line is the agent's own business, never the person's: no window titles (the
foreground probe matches a title locally and nothing logs it) and no usernames beyond those the facts
report anyway (sessions, processes). ``tests/agent/test_logs.py`` runs the service with a real window
whose title carries a marker and checks that the marker never reaches the file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
from typing import Any

from agent.config import AgentConfig

log = logging.getLogger(__name__)
# The attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update((key, value) for key, value in vars(record).items() if key not in _STANDARD)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A rotated log whose every file, the new ones after a rotation too, only its owner may read (0600)."""

    def _open(self) -> Any:
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(descriptor, self.mode, encoding=self.encoding, errors=self.errors)  # noqa: SIM115 - the handler closes it


def log_to_file(config: AgentConfig) -> logging.Handler | None:
    """Add the rotated JSON-lines file to the root logger; ``None`` when the state folder is missing or unwritable.

    A missing state folder means the agent is not enrolled: no file is created for it.
    """
    path = config.log_path
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.handlers.RotatingFileHandler) and handler.baseFilename == str(path.absolute()):
            return handler
    if not config.state_dir.is_dir():
        return None
    try:
        handler = _PrivateRotatingFile(path, maxBytes=config.log_max_bytes, backupCount=config.log_backup_count,
                                       encoding="utf-8")
        os.chmod(path, 0o600)
    except OSError as exc:
        log.warning("logging to stderr only: cannot open %s (%s)", path, exc.strerror or exc)
        return None
    handler.setFormatter(JsonLineFormatter())
    root.addHandler(handler)
    return handler
