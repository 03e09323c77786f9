"""The input-activity collector: when the person at the workstation becomes active or idle.

:class:`ActivityTracker` is a small state machine over the platform's idle counter: no input for at
least the threshold is IDLE, anything less is ACTIVE, and only transitions are reported (the first
reading too, so the controller knows the state from the agent's start). A change of user or session in
the same state is reported as well: it is someone else's activity.

The back end for this platform is chosen once, at import: Linux asks X11, then logind (``_idle_linux``);
Windows calls ``GetLastInputInfo`` (``_idle_windows``); elsewhere the collector sees nothing and says so once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from types import ModuleType

from agent.collectors import Roots
from agent.collectors._probes import IdleSample, LogOnce
from protos.counterguard.v1 import facts_pb2

_backend: ModuleType | None
if sys.platform.startswith("linux"):
    from agent.collectors import _idle_linux as _backend
elif sys.platform == "win32":
    from agent.collectors import _idle_windows as _backend
else:  # pragma: no cover - neither Linux nor Windows
    _backend = None

__all__ = ["DEFAULT_IDLE_THRESHOLD", "ActivityTracker", "IdleReader", "IdleSample", "default_reader", "state_of"]

log = logging.getLogger(__name__)
DEFAULT_IDLE_THRESHOLD = 300.0
IdleReader = Callable[[], IdleSample | None]
"""Reads the input idle time now; ``None`` when the platform cannot tell."""
State = facts_pb2.InputActivity.State


def state_of(idle_seconds: float, threshold: float) -> State:
    """IDLE when there was no input for at least ``threshold`` seconds, else ACTIVE."""
    return facts_pb2.InputActivity.STATE_IDLE if idle_seconds >= threshold else facts_pb2.InputActivity.STATE_ACTIVE


def default_reader(roots: Roots = Roots()) -> IdleReader:
    """The idle reader of this platform; one that logs once and sees nothing where there is none."""
    if _backend is not None:
        reader: IdleReader = _backend.default_reader(roots)
        return reader
    log_once = LogOnce(log, "input idle")

    def unsupported() -> IdleSample | None:
        log_once(f"no input-idle probe for platform {sys.platform!r}")
        return None

    return unsupported


class ActivityTracker:
    """Turns idle-time readings into ACTIVE/IDLE transitions."""

    def __init__(self, threshold: float = DEFAULT_IDLE_THRESHOLD, reader: IdleReader | None = None, *,
                 roots: Roots = Roots()) -> None:
        if threshold <= 0:
            raise ValueError(f"the idle threshold must be above 0 seconds, got {threshold}")
        self.threshold = float(threshold)
        self._read = reader if reader is not None else default_reader(roots)
        self._last: tuple[State, str, str] | None = None

    def set_threshold(self, threshold: float) -> None:
        """Use a new threshold from the next poll on (a non-positive one is ignored)."""
        if threshold > 0:
            self.threshold = float(threshold)

    def poll(self) -> facts_pb2.InputActivity | None:
        """The new state when it (or the user or session) changed since the last poll, else ``None``."""
        sample = self._read()
        if sample is None:
            return None
        state = state_of(sample.idle_seconds, self.threshold)
        key = (state, sample.username, sample.session)
        if key == self._last:
            return None
        self._last = key
        return facts_pb2.InputActivity(state=state, username=sample.username, session=sample.session,
                                       idle_seconds=int(sample.idle_seconds), source=sample.source)
