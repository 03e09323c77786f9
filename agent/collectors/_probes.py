"""What the platform back ends of the desktop probes (foreground window, input idleness) hand back, and
:class:`LogOnce`, which says once why a probe sees nothing.

A probe whose capability is absent (no X display, no logind, another platform) reports nothing; the
agent logs the reason when it first appears and again only when the reason changes, not on every poll.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple


class ForegroundSample(NamedTuple):
    """The window in the foreground: its title (never reported unless the policy asks) and its process."""

    title: str
    pid: int  # 0 when the window does not say
    display: str = ""  # X display or Windows session the window is on


class IdleSample(NamedTuple):
    """How long the person at the workstation has not touched keyboard or mouse, and where."""

    idle_seconds: float
    username: str
    session: str  # X display, logind session id or Windows session id
    source: str  # "x11", "logind" or "windows"


class LogOnce:
    """Logs a probe's reason for seeing nothing when it first appears and when it changes; thread-safe."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._last = ""
        self._lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        """Note that the probe sees nothing, and why."""
        with self._lock:
            if reason == self._last:
                return
            self._last = reason
        self._log.info("%s: nothing to report: %s", self._what, reason)

    def clear(self) -> None:
        """The probe works again: the next failure is logged afresh."""
        with self._lock:
            self._last = ""
