"""How loaded this controller process is, measured where calls wait: the gRPC thread pool.

Every call waits for one of the pool's ``max_workers`` threads. While the answers keep up nothing
waits; past capacity the queue is what grows (the work per call stays about the same), until calls
run into the agents' deadline, are sent again, and the controller spends its time on answers nobody
waits for any more. :class:`ReportLoad` turns the queue into two decisions:

- **Refuse early.** While ``report_queue_limit`` calls already wait for a thread, a new Report is
  refused at once with ``RESOURCE_EXHAUSTED`` and ``retry-after-ms`` (see :mod:`controller.limits`):
  decided when the call arrives, before it is read, and answered from a thread of its own, so the
  refusal does not wait behind the queue it is about. The agent keeps the facts in its outbox and
  sends them, with whatever it observed meanwhile, in one batch after the wait asked for (5 to 30 s,
  spread at random so the refused agents do not come back together). By reckoning (not measured),
  a queue of that length holds the calls it admits about a second at the 60–80 Reports a second one
  worker answered in the fleet simulator.
- **The rules yield.** While the Reports of the last few seconds took on average longer than
  ``rules_yield_ms`` (waiting for a thread and handling, but not an answer's chosen wait for its own
  evaluation: see :func:`not_load`), :class:`controller.evaluation.EvaluationQueue` runs one
  evaluation at a time and no answer waits for one. Judging falls behind, coalesced per agent,
  instead of taking the database from the answers; it catches up when the load drops.

:class:`TimedExecutor` is the pool: it counts the calls handed to it and not finished, and
:func:`queue_wait` tells a call, once a thread runs it, how long it waited; :func:`call_load` how long
it has taken so far, less what it spent in :func:`not_load`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

from controller.config import Settings
from controller.errors import InvalidInput

# The average Report time the rules yield to is taken over about this many seconds.
PRESSURE_SECONDS = 3.0
# A refused Report is asked to come back after a wait drawn evenly from this range (seconds).
MIN_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 30.0

_running = threading.local()


class TimedExecutor(futures.ThreadPoolExecutor):
    """A thread pool that counts the calls it holds and lets each know how long it waited for a thread."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.threads = max_workers
        self._held = 0
        self._count = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        with self._count:
            self._held += 1
        try:
            return super().submit(self._timed, time.monotonic(), fn, args, kwargs)
        except BaseException:
            self._done()
            raise

    @property
    def waiting(self) -> int:
        """Calls handed to the pool that no thread runs yet."""
        return max(0, self._held - self.threads)

    def _timed(self, queued: float, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        _running.queued, _running.set_aside = queued, 0.0
        try:
            return fn(*args, **kwargs)
        finally:
            _running.queued = None
            self._done()

    def _done(self) -> None:
        with self._count:
            self._held -= 1


def queue_wait() -> float:
    """Seconds since the call running in this thread was handed to the pool (0 outside a :class:`TimedExecutor`)."""
    queued = getattr(_running, "queued", None)
    return 0.0 if queued is None else max(0.0, time.monotonic() - queued)


def call_load() -> float:
    """Seconds the call running in this thread has taken since it was handed to the pool, less its time
    in :func:`not_load` (0 outside a :class:`TimedExecutor`): what the rules' yielding is measured on."""
    return max(0.0, queue_wait() - getattr(_running, "set_aside", 0.0))


@contextmanager
def not_load() -> Iterator[None]:
    """Time spent inside is not counted by :func:`call_load`: a Report's wait for its own evaluation,
    which the queue allows only while evaluation threads are free. Counted, one workstation whose
    evaluations are slow (its first inventory and software, a slow host) would make the rules yield,
    and then no answer would carry its notices: they would wait for the next report, up to a
    heartbeat later."""
    began = time.monotonic()
    try:
        yield
    finally:
        if getattr(_running, "queued", None) is not None:  # in a TimedExecutor call, which set set_aside
            _running.set_aside += time.monotonic() - began


class ReportLoad:
    """The two decisions of the module docstring, for one controller process; thread-safe.

    ``queue_limit`` and ``yield_after`` are seconds; 0 turns that decision off.
    """

    def __init__(self, queue_limit: int, yield_after: float, *, monotonic: Callable[[], float] = time.monotonic,
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
        self._pool: TimedExecutor | None = None
        # Refusals are answered here, not behind the queue they are about.
        self.refusals = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="grpc-refuse")

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportLoad:
        """The limits the settings give; :class:`InvalidInput` names one below 0."""
        for name in ("report_queue_limit", "rules_yield_ms"):
            if getattr(settings, name) < 0:
                raise InvalidInput(f"setting {name} must be 0 (off) or more, not {getattr(settings, name)}")
        return cls(settings.report_queue_limit, settings.rules_yield_ms / 1000)

    def watch(self, pool: TimedExecutor) -> TimedExecutor:
        """Measure the queue of ``pool`` (the server's); returns it."""
        self._pool = pool
        return pool

    @property
    def waiting(self) -> int:
        """Calls waiting for a thread of the watched pool now."""
        return self._pool.waiting if self._pool is not None else 0

    def retry_after(self) -> float | None:
        """Seconds a Report arriving now should come back after, or None to take it (see the module docstring)."""
        if not self.queue_limit or self.waiting < self.queue_limit:
            return None
        return MIN_RETRY_SECONDS + self._rand() * (MAX_RETRY_SECONDS - MIN_RETRY_SECONDS)

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
