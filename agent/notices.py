"""Notices from the controller, handed to the person at the screen without ever holding up the agent.

When the policy the agent holds has notices on, the transport thread passes every ``Notice`` of a
``Report`` answer to :meth:`NoticeDispatcher.submit`, which only queues it. A thread of the
dispatcher's own delivers them through ``deliver`` (the session hub: it returns to how many session
helpers a notice went), at most :data:`PER_MINUTE` in any 60 seconds. What exceeds that waits until
a slot frees up; then as many as there are free slots are shown, the last of them with "(另有 N 条记录)"
added, N being how many more were waiting, so a burst of violations makes a few notices, not a dozen.

A notice that reaches no helper is logged as not shown; a failing ``deliver`` is logged once per
reason (:class:`WarnOnce`) and never ends the agent.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from protos.counterguard.v1 import agent_pb2

log = logging.getLogger(__name__)
PER_MINUTE = 3
WINDOW = 60.0
MAX_WAITING = 500  # beyond this, the oldest waiting notices are only counted


class WarnOnce:
    """Logs a reason when it first appears and when it changes, not on every repeat; thread-safe."""

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING) -> None:
        self._log, self._level = logger, level
        self._last = ""
        self._lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        with self._lock:
            if reason == self._last:
                return
            self._last = reason
        self._log.log(self._level, "%s", reason)

    def clear(self) -> None:
        """Things work again: the next failure is logged afresh."""
        with self._lock:
            self._last = ""


def coalesce(waiting: Sequence[agent_pb2.Notice], slots: int, dropped: int = 0) -> list[agent_pb2.Notice]:
    """What to show now of the ``waiting`` notices with ``slots`` free: the first ``slots`` of them, the
    last of those saying how many more there were ("另有 N 条记录", ``dropped`` ones counted too)."""
    if slots <= 0 or not waiting:
        return []
    shown = list(waiting[:slots])
    rest = len(waiting) - len(shown) + dropped
    if rest:
        last = agent_pb2.Notice()
        last.CopyFrom(shown[-1])
        last.body = f"{last.body}(另有 {rest} 条记录)"
        shown[-1] = last
    return shown


class NoticeDispatcher:
    """Queues notices and shows them from its own thread, rate-limited; see the module docstring."""

    def __init__(self, deliver: Callable[[agent_pb2.Notice], int], *, per_minute: int = PER_MINUTE,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._deliver = deliver
        self._per_minute = per_minute
        self._monotonic = monotonic
        self._waiting: collections.deque[agent_pb2.Notice] = collections.deque()
        self._overflow = 0
        self._shown_at: collections.deque[float] = collections.deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._failures = WarnOnce(log)

    def submit(self, notices: Iterable[agent_pb2.Notice]) -> None:
        """Queue notices to show; returns at once."""
        with self._cond:
            for notice in notices:
                if len(self._waiting) >= MAX_WAITING:
                    self._waiting.popleft()
                    self._overflow += 1
                self._waiting.append(notice)
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="notices", daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        """Stop the delivery thread; notices still waiting are logged as not shown."""
        with self._cond:
            self._stopped = True
            left = len(self._waiting) + self._overflow
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if left:
            log.warning("%d notices not shown: the agent is stopping", left)

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
            for notice in batch:
                self._show(notice)

    def _next_batch(self) -> list[agent_pb2.Notice] | None:
        """Wait (holding the condition) until notices may be shown; ``None`` once stopped."""
        while not self._stopped:
            now = self._monotonic()
            while self._shown_at and now - self._shown_at[0] >= WINDOW:
                self._shown_at.popleft()
            slots = self._per_minute - len(self._shown_at)
            if self._waiting and slots > 0:
                batch = coalesce(list(self._waiting), slots, self._overflow)
                self._waiting.clear()
                self._overflow = 0
                self._shown_at.extend([now] * len(batch))
                return batch
            timeout = None if not self._waiting else WINDOW - (now - self._shown_at[0])
            self._cond.wait(timeout)
        return None

    def _show(self, notice: agent_pb2.Notice) -> None:
        try:
            reached = self._deliver(notice)
        except Exception as exc:  # noqa: BLE001 - a broken notifier must never stop the agent
            self._failures(f"notices cannot be delivered to the session helpers: {exc!r}")
            return
        self._failures.clear()
        if reached:
            log.info("notice handed to %d session helper(s) rule=%s key=%s", reached, notice.rule_id,
                     notice.violation_key)
        else:
            log.warning("notice not shown: no session helper is connected rule=%s key=%s title=%s",
                        notice.rule_id, notice.violation_key, notice.title)
