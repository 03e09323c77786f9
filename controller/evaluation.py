"""Rule evaluation after ingest, off the acknowledgement path and coalesced per agent.

A Report is acknowledged once its facts are committed; judging them is the rules engine's work and
costs far more than storing them. :class:`EvaluationQueue` takes that work from the answering thread:

- **Light load.** When an evaluation thread is free for it, the answering thread waits (at most
  ``wait_seconds``) for this agent's evaluation, so the answer carries the on-screen notices about what
  the report broke and a violation is in the table when the agent hears back, as with an evaluation
  in the call itself.
- **Heavy load.** When other agents keep every thread busy, the answer goes at once and the agent joins the queue.
  An agent is queued once however many reports it sends meanwhile: its next evaluation judges every
  fact stored since its last one (:meth:`controller.rules.service.RulesService.catch_up`). Under
  overload, acknowledgements stay fast and evaluations grow fewer and larger instead of piling up;
  the notices of an evaluation not waited for ride on the agent's next answer from this process.
- **Nothing lost.** What is evaluated is recorded in the database (``agent.evaluated_sequence``), not
  in this queue: a fact is marked in the transaction that stores its violations. Every
  ``scan_seconds`` the queue also takes up agents whose facts were left unevaluated (by a controller
  that stopped, or an evaluation that failed) once their last contact is ``settle_seconds`` old, so a
  replica does not race another that is evaluating them now. ``scan_seconds`` 0 scans never: in
  ``serve --workers N`` only the worker that sweeps also scans.

- **Yielding.** While ``pressed()`` says the answers are slow (:class:`controller.load.ReportLoad`),
  one evaluation runs at a time and no answer waits for its evaluation: judging falls behind,
  coalesced per agent, instead of taking the database from the answers. An answer's wait for its own
  evaluation (light load, above) is not counted as slowness (:func:`controller.load.not_load`).

Evaluations run in ``threads`` threads; one agent is evaluated by one of them at a time.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controller.clock import Clock, utc_now
from controller.load import not_load
from controller.metrics import EVALUATION_BACKLOG, EVALUATION_LAG, RULES_YIELDING, count_new_violations
from controller.policy.notices import RecordedViolation
from protos.counterguard.v1 import facts_pb2

log = logging.getLogger(__name__)

# Notices kept for an agent until its next answer from this process; older ones are dropped.
MAX_HELD_NOTICES = 20
# While yielding, a free evaluation thread looks this often whether the answers are quick again.
_RECHECK_SECONDS = 0.5


class CatchingUp(Protocol):
    """What the queue needs of :class:`controller.rules.service.RulesService`."""

    def catch_up(self, agent_id: str) -> Any: ...

    def backlog(self, settled_before: Any = None) -> list[str]: ...


@dataclass(frozen=True)
class Answered:
    """What a Report learns from the queue: the violations to announce to the agent now."""

    new: tuple[RecordedViolation, ...] = ()


class EvaluationQueue:
    """Evaluates agents' new facts in background threads; see the module docstring."""

    def __init__(
        self,
        rules: CatchingUp,
        *,
        threads: int = 2,
        wait_seconds: float = 5.0,
        scan_seconds: float = 10.0,
        settle_seconds: float = 30.0,
        clock: Clock = utc_now,
        pressed: Callable[[], bool] = lambda: False,
    ) -> None:
        if threads < 1:
            raise ValueError(f"at least one evaluation thread is needed, got {threads}")
        self._rules = rules
        self._threads_wanted = threads
        self._wait = wait_seconds
        self._scan = scan_seconds
        self._settle = settle_seconds
        self._clock = clock
        self._pressed = pressed
        self._yielding = False
        self._lock = threading.Condition()
        self._pending: OrderedDict[str, float] = OrderedDict()  # agent → when it was first queued (monotonic)
        self._running: set[str] = set()
        self._asked: dict[str, int] = {}  # agent → number of the latest request
        self._done: dict[str, int] = {}  # agent → number of the latest request its evaluations covered
        self._evaluations = 0  # evaluations that succeeded in this process
        self._succeeded: dict[str, int] = {}  # agent → value of ``_evaluations`` after its latest success
        self._notices: dict[str, deque[RecordedViolation]] = {}
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ the Report side

    def on_ingest(self, agent_id: str, facts: Sequence[facts_pb2.Fact]) -> Answered:
        """Queue the agent's evaluation after a committed report; wait for it when the queue is otherwise idle.

        Returns the notices held for the agent (from this evaluation if it was waited for, and from
        earlier ones not yet announced).
        """
        with self._lock:
            others = len(self._pending.keys() - {agent_id}) + len(self._running - {agent_id})
            ticket = self._request(agent_id)
            if others < self._threads_wanted and self._threads and not self._yield():
                with not_load():  # a wait chosen because the threads are free, not one the load imposes
                    deadline = time.monotonic() + self._wait
                    while self._done.get(agent_id, 0) < ticket and not self._stopping:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._lock.wait(left)
            return Answered(self._take_notices(agent_id))

    def _request(self, agent_id: str) -> int:
        ticket = self._asked.get(agent_id, 0) + 1
        self._asked[agent_id] = ticket
        if agent_id not in self._pending:
            self._pending[agent_id] = time.monotonic()
        EVALUATION_BACKLOG.set(len(self._pending))
        self._lock.notify_all()
        return ticket

    def _take_notices(self, agent_id: str) -> tuple[RecordedViolation, ...]:
        held = self._notices.pop(agent_id, None)
        return tuple(held) if held else ()

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        for index in range(self._threads_wanted):
            thread = threading.Thread(target=self._work, name=f"rules-eval-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._scan > 0:
            scanner = threading.Thread(target=self._scan_left_behind, name="rules-eval-scan", daemon=True)
            scanner.start()
            self._threads.append(scanner)

    def stop(self, timeout: float = 30.0) -> None:
        """Let running evaluations finish (at most ``timeout`` s); what is still queued stays marked unevaluated."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._pending:
            log.info("stopping with %d agents waiting for their evaluation; they are evaluated after the restart",
                     len(self._pending))

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running (at most ``timeout`` s); whether that happened."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    @property
    def backlog(self) -> int:
        """Agents queued for evaluation in this process."""
        with self._lock:
            return len(self._pending)

    def _yield(self) -> bool:
        """Whether the rules yield to the answers now (see the module docstring); call with the lock held."""
        yielding = self._pressed()
        if yielding != self._yielding:
            self._yielding = yielding
            RULES_YIELDING.set(int(yielding))
            if yielding:
                log.info("answers are slow: one rule evaluation at a time until they are quick again")
            else:
                log.info("answers are quick again: rule evaluations in up to %d threads", self._threads_wanted)
        return yielding

    def _next(self) -> tuple[str, float, int] | None:
        """The next queued agent nobody evaluates now, and its request number; None when stopping."""
        with self._lock:
            while not self._stopping:
                if self._running and self._yield():
                    self._lock.wait(_RECHECK_SECONDS)  # nobody says when the pressure is off: look again
                    continue
                for agent_id, queued in self._pending.items():
                    if agent_id not in self._running:
                        del self._pending[agent_id]
                        self._running.add(agent_id)
                        EVALUATION_BACKLOG.set(len(self._pending))
                        return agent_id, queued, self._asked.get(agent_id, 0)
                self._lock.wait()
            return None

    def _work(self) -> None:
        while (item := self._next()) is not None:
            agent_id, queued, ticket = item
            new: tuple[RecordedViolation, ...] = ()
            succeeded = False
            try:
                new = tuple(count_new_violations(self._rules.catch_up(agent_id)).new)
                succeeded = True
            except Exception:  # noqa: BLE001 - the facts stay unevaluated; the scan takes the agent up again
                log.exception("evaluating the rules for agent %s failed; retrying later", agent_id)
            EVALUATION_LAG.observe(time.monotonic() - queued)
            with self._lock:
                self._running.discard(agent_id)
                if succeeded:
                    self._evaluations += 1
                    self._succeeded[agent_id] = self._evaluations
                self._done[agent_id] = max(self._done.get(agent_id, 0), ticket)
                if new:
                    self._notices.setdefault(agent_id, deque(maxlen=MAX_HELD_NOTICES)).extend(new)
                self._lock.notify_all()

    def _scan_left_behind(self) -> None:
        """Queue the agents whose facts were left unevaluated (see the module docstring).

        The database is read without the lock, so an evaluation may finish meanwhile: an agent being
        evaluated now, or evaluated successfully since the read began, is left out (its evaluation read
        at least what the scan saw); one whose evaluation failed is queued again.
        """
        while True:
            with self._lock:
                if self._stopping or self._lock.wait_for(lambda: self._stopping, self._scan):
                    return
                before = self._evaluations
            try:
                settled = self._clock() - dt.timedelta(seconds=self._settle)
                left = self._rules.backlog(settled_before=settled)
            except Exception:  # noqa: BLE001 - the database may be down for a while; the next scan retries
                log.exception("looking for agents left unevaluated failed; retrying in %.0f s", self._scan)
                continue
            if left:
                log.info("%d agents have facts left unevaluated; evaluating them now", len(left))
                with self._lock:
                    for agent_id in left:
                        if agent_id not in self._running and self._succeeded.get(agent_id, -1) <= before:
                            self._request(agent_id)
