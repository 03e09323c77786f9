"""How loaded this controller process is, measured where calls wait: the gRPC thread pool.

Every call waits for one of the pool's ``max_workers`` threads. While the answers keep up the wait
is nil; past capacity it is what grows (the work per call stays about the same), until calls run
into the agents' 30 s deadline, are retried, and the controller spends its time on answers nobody
waits for any more. :class:`ReportLoad` turns the wait into two decisions:

- **Shed early.** A Report that waited longer than ``report_queue_limit_ms`` for a thread is refused
  at once with ``RESOURCE_EXHAUSTED`` and ``retry-after-ms`` (see :mod:`controller.limits`), before
  it is parsed or anything is stored. The agent keeps the facts in its outbox and sends them, with
  whatever it observed meanwhile, in one batch after the wait asked for: five times as long as the
  call waited, 5 to 30 s, and up to twice that with jitter so the refused agents do not come back
  together. The wait must be long against the time between an agent's reports: refused agents
  that came back within seconds would add calls to a controller that cannot answer those it has
  (measured: at 12,000 simulated workstations a 2–4 s wait sent back 270 refused calls a second and
  let 22 reports a second through).
- **The rules yield.** While the Reports of the last few seconds took on average longer than
  ``rules_yield_ms`` (waiting and handling), :class:`controller.evaluation.EvaluationQueue` runs one
  evaluation at a time and no answer waits for one. Judging falls behind, coalesced per agent,
  instead of taking the database from the answers; it catches up when the load drops.

:class:`TimedExecutor` is the pool: it notes when each call was handed to it, and
:func:`queue_wait` tells the call, once a thread runs it, how long it waited.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

from controller.config import Settings
from controller.errors import InvalidInput

# The average Report time the rules yield to is taken over about this many seconds.
PRESSURE_SECONDS = 3.0
# A refused Report is asked to wait RETRY_FACTOR times as long as it waited for a thread, within these
# bounds, then up to twice that (jitter).
RETRY_FACTOR = 5.0
MIN_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 30.0

_running = threading.local()


class TimedExecutor(futures.ThreadPoolExecutor):
    """A thread pool that lets each call it runs know how long it waited for a thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        return super().submit(_timed, time.monotonic(), fn, args, kwargs)


def _timed(queued: float, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _running.queued = queued
    try:
        return fn(*args, **kwargs)
    finally:
        _running.queued = None


def queued_at() -> float | None:
    """When the call running in this thread was handed to the pool (monotonic); None outside a :class:`TimedExecutor`."""
    return getattr(_running, "queued", None)


def queue_wait(now: float | None = None) -> float:
    """Seconds the call running in this thread waited for it (0 outside a :class:`TimedExecutor`)."""
    queued = queued_at()
    return 0.0 if queued is None else max(0.0, (time.monotonic() if now is None else now) - queued)


class ReportLoad:
    """The two decisions of the module docstring, for one controller process; thread-safe.

    ``queue_limit`` and ``yield_after`` are seconds; 0 turns that decision off.
    """

    def __init__(self, queue_limit: float, yield_after: float, *, monotonic: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random) -> None:
        if queue_limit < 0 or yield_after < 0:
            raise ValueError(f"load limits cannot be negative, not {queue_limit} and {yield_after}")
        self.queue_limit = queue_limit
        self.yield_after = yield_after
        self._monotonic = monotonic
        self._rand = rand
        self._lock = threading.Lock()
        self._average = 0.0  # seconds per Report, decaying over PRESSURE_SECONDS
        self._updated: float | None = None  # when the latest Report was counted
        self.shed = 0  # Reports refused since start

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportLoad:
        """The limits the settings give; :class:`InvalidInput` names one below 0."""
        for name in ("report_queue_limit_ms", "rules_yield_ms"):
            if getattr(settings, name) < 0:
                raise InvalidInput(f"setting {name} must be 0 (off) or more, not {getattr(settings, name)}")
        return cls(settings.report_queue_limit_ms / 1000, settings.rules_yield_ms / 1000)

    def retry_after(self, waited: float) -> float | None:
        """Seconds the Report that waited ``waited`` s for its thread should come back after, or None to serve it."""
        if not self.queue_limit or waited <= self.queue_limit:
            return None
        self.observe(waited)
        with self._lock:
            self.shed += 1
        base = min(MAX_RETRY_SECONDS, max(MIN_RETRY_SECONDS, RETRY_FACTOR * waited))
        return base * (1.0 + self._rand())

    def observe(self, seconds: float) -> None:
        """Count one Report that took ``seconds`` from reaching the pool to its answer."""
        with self._lock:
            now = self._monotonic()
            since = math.inf if self._updated is None else max(0.0, now - self._updated)
            self._average += (seconds - self._average) * -math.expm1(-since / PRESSURE_SECONDS)
            self._updated = now

    @property
    def average(self) -> float:
        """The recent average Report time (seconds), decayed towards 0 over the quiet time since the last one."""
        with self._lock:
            if self._updated is None:
                return 0.0
            quiet = max(0.0, self._monotonic() - self._updated)
            return self._average * math.exp(-quiet / PRESSURE_SECONDS)

    def pressed(self) -> bool:
        """Whether the rules should yield now (see the module docstring)."""
        return bool(self.yield_after) and self.average > self.yield_after
