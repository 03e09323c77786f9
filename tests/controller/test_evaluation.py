"""Rule evaluation after ingest, off the acknowledgement path: ``RulesService.catch_up`` and ``EvaluationQueue``.

Real rules service, real ingest, a real database on each back end. The only seam is :class:`Gate`, which
holds an agent's evaluation until the test lets it go, so "every thread is busy" can be arranged
without timing.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from controller.db import session_scope
from controller.evaluation import EvaluationQueue
from controller.ingest import IngestService
from controller.models import AGENT, Agent
from controller.rules.records import VIOLATION
from controller.rules.service import RulesService
from tests.controller.rules.builders import MINUTE, Facts, local
from tests.controller.rules.builders import Policies
from tests.controller.rules.test_service import RULES

GAMER, OTHER = "ag-eval-0001", "ag-eval-0002"
NOON = local(2026, 11, 2, 10)  # a Monday, working time


def enrol(engine: Engine, clock: Any, *agents: str) -> None:
    with session_scope(engine) as session:
        for index, agent in enumerate(agents):
            session.add(Agent(id=agent, window=f"W0{index}", enrolled_at=clock(), cert_serial=str(index),
                              cert_fingerprint=f"f{index}", cert_not_after=clock() + dt.timedelta(days=365)))


def game_started(facts: Facts, at: dt.datetime, pid: int = 4242) -> list[Any]:
    """The facts of one report: a heartbeat and gnome-mines started, as the agent sends them."""
    first = len(facts.stored)
    facts.heartbeats(at, at)
    facts.start(at, pid, "gnome-mines")
    return [f.fact for f in facts.stored[first:]]


def heartbeat(facts: Facts, at: dt.datetime) -> list[Any]:
    first = len(facts.stored)
    facts.heartbeats(at, at)
    return [f.fact for f in facts.stored[first:]]


def games(engine: Engine, agent: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(VIOLATION).where(VIOLATION.c.agent_id == agent, VIOLATION.c.rule_id == "games")))


def marks(engine: Engine, agent: str) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(select(AGENT.c.evaluated_sequence, AGENT.c.last_sequence).where(AGENT.c.id == agent)).one()
    return int(row.evaluated_sequence), int(row.last_sequence)


class Gate:
    """The real rules service, with the evaluations of ``held`` agents held until :meth:`release`."""

    def __init__(self, rules: RulesService, *held: str) -> None:
        self.rules = rules
        self.held = set(held)
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.calls: Counter[str] = Counter()
        self.failures: dict[str, int] = {}

    def catch_up(self, agent_id: str) -> Any:
        self.calls[agent_id] += 1
        if agent_id in self.held:
            self.entered.set()
            assert self.opened.wait(30), "the test never released the gate"
        if self.failures.get(agent_id):
            self.failures[agent_id] -= 1
            raise RuntimeError("the database went away")
        return self.rules.catch_up(agent_id)

    def backlog(self, settled_before: Any = None) -> list[str]:
        return self.rules.backlog(settled_before)

    def release(self) -> None:
        self.opened.set()


@pytest.fixture
def rules(engine: Engine, clock: Any) -> RulesService:
    enrol(engine, clock, GAMER, OTHER)
    return RulesService(engine, Policies(RULES), clock)


def test_catch_up_judges_every_report_since_the_last_evaluation_at_once(
        engine: Engine, clock: Any, rules: RulesService, ingest: IngestService) -> None:
    facts = Facts()
    clock.now = NOON
    ingest.ingest(GAMER, heartbeat(facts, NOON - MINUTE))
    rules.catch_up(GAMER)
    assert marks(engine, GAMER) == (1, 1)

    clock.now = NOON + MINUTE
    ingest.ingest(GAMER, game_started(facts, NOON))  # two reports, no evaluation between them
    ingest.ingest(GAMER, game_started(facts, NOON + MINUTE, pid=5151))
    assert marks(engine, GAMER) == (1, 5)

    result = rules.catch_up(GAMER)

    assert result.created == 2 and len(games(engine, GAMER)) == 2
    assert {v.subject for v in result.new} == {v.subject for v in games(engine, GAMER)}
    assert marks(engine, GAMER) == (5, 5)
    assert rules.catch_up(GAMER).agents == 0  # nothing new: nothing evaluated


def test_facts_that_arrive_below_the_evaluation_mark_are_judged_too(
        engine: Engine, clock: Any, rules: RulesService, ingest: IngestService) -> None:
    """An agent's two batches sent to two replicas at once can be stored out of order: the later one first,
    judged, then the earlier one, numbered below the mark that evaluation left."""
    facts = Facts()
    clock.now = NOON + MINUTE
    earlier, later = game_started(facts, NOON), game_started(facts, NOON + MINUTE, pid=5151)
    ingest.ingest(GAMER, later)
    rules.catch_up(GAMER)
    assert marks(engine, GAMER) == (4, 4) and len(games(engine, GAMER)) == 1

    ingest.ingest(GAMER, earlier)

    assert marks(engine, GAMER) == (0, 4)
    assert rules.catch_up(GAMER).created == 1
    assert len(games(engine, GAMER)) == 2 and marks(engine, GAMER) == (4, 4)


def test_facts_of_an_agent_without_policy_or_rules_to_run_are_marked_evaluated(
        engine: Engine, clock: Any, ingest: IngestService) -> None:
    enrol(engine, clock, GAMER)

    class NoPolicy:
        def active(self) -> None:
            return None

    facts = Facts()
    clock.now = NOON
    ingest.ingest(GAMER, game_started(facts, NOON))

    RulesService(engine, NoPolicy(), clock).catch_up(GAMER)

    assert marks(engine, GAMER) == (2, 2) and games(engine, GAMER) == []


def test_a_report_waits_for_its_evaluation_when_a_thread_is_free_and_gets_its_notices(
        engine: Engine, clock: Any, rules: RulesService, ingest: IngestService) -> None:
    queue = EvaluationQueue(rules, threads=1, wait_seconds=30)
    queue.start()
    try:
        facts = Facts()
        clock.now = NOON
        sent = game_started(facts, NOON)
        ingest.ingest(GAMER, sent)

        answered = queue.on_ingest(GAMER, sent)

        assert [v.rule_id for v in answered.new] == ["games"]
        assert len(games(engine, GAMER)) == 1 and marks(engine, GAMER) == (2, 2)
        assert queue.on_ingest(GAMER, []).new == ()  # announced once
    finally:
        queue.stop()


def test_under_load_the_answer_does_not_wait_and_the_notices_ride_on_the_next_answer(
        engine: Engine, clock: Any, rules: RulesService, ingest: IngestService) -> None:
    gate = Gate(rules, OTHER)
    queue = EvaluationQueue(gate, threads=1, wait_seconds=30)
    queue.start()
    try:
        other, facts = Facts(), Facts()
        clock.now = NOON
        ingest.ingest(OTHER, heartbeat(other, NOON))
        waiting_other = threading.Thread(target=queue.on_ingest, args=(OTHER, []))
        waiting_other.start()
        assert gate.entered.wait(30)  # the only thread is busy with the other agent

        first = game_started(facts, NOON)
        ingest.ingest(GAMER, first)
        assert queue.on_ingest(GAMER, first).new == ()  # answered at once: not evaluated yet
        assert games(engine, GAMER) == [] and marks(engine, GAMER) == (0, 2)
        second = heartbeat(facts, NOON + MINUTE)
        ingest.ingest(GAMER, second)
        assert queue.on_ingest(GAMER, second).new == ()
        assert queue.backlog == 1  # queued once for both reports

        gate.release()
        waiting_other.join(30)
        assert queue.idle(30)

        assert gate.calls[GAMER] == 1  # both reports judged by one evaluation
        assert len(games(engine, GAMER)) == 1 and marks(engine, GAMER) == (3, 3)
        assert [v.rule_id for v in queue.on_ingest(GAMER, []).new] == ["games"]  # the next answer announces it
    finally:
        gate.release()
        queue.stop()


def test_facts_left_unevaluated_are_taken_up_by_the_scan(
        engine: Engine, clock: Any, rules: RulesService, ingest: IngestService) -> None:
    """As after a controller stopped between acknowledging and evaluating, or an evaluation that failed."""
    facts = Facts()
    clock.now = NOON
    ingest.ingest(GAMER, game_started(facts, NOON))  # stored, never handed to a queue
    gate = Gate(rules)
    gate.failures[GAMER] = 1  # and the first attempt fails
    clock.now = NOON + dt.timedelta(minutes=2)  # its last contact is settled
    queue = EvaluationQueue(gate, threads=1, scan_seconds=0.05, settle_seconds=60)
    queue.start()
    try:
        deadline = time.monotonic() + 60
        while marks(engine, GAMER) != (2, 2):
            assert time.monotonic() < deadline, f"not evaluated after {gate.calls[GAMER]} attempts"
            time.sleep(0.05)
    finally:
        queue.stop()

    assert gate.calls[GAMER] == 2  # failed once, evaluated on the next scan
    assert len(games(engine, GAMER)) == 1


class FinishingDuringTheScan(Gate):
    """Holds the agent's evaluation until a scan has read the backlog, then lets it finish before the scan queues."""

    def __init__(self, rules: RulesService, agent: str) -> None:
        super().__init__(rules, agent)
        self.finished = threading.Event()
        self.scans = 0

    def catch_up(self, agent_id: str) -> Any:
        try:
            return super().catch_up(agent_id)
        finally:
            self.finished.set()

    def backlog(self, settled_before: Any = None) -> list[str]:
        self.scans += 1
        left = super().backlog(settled_before)
        if left and not self.opened.is_set():
            assert self.entered.wait(30)
            self.release()
            assert self.finished.wait(30)
        return left


def test_an_agent_evaluated_while_the_scan_reads_is_not_queued_again(
        engine: Engine, clock: Any, rules: RulesService, ingest: IngestService) -> None:
    """The scan saw facts that an evaluation running meanwhile has judged: no second evaluation for nothing."""
    facts = Facts()
    clock.now = NOON
    sent = game_started(facts, NOON)
    ingest.ingest(GAMER, sent)
    clock.now = NOON + dt.timedelta(minutes=2)  # settled: the scan takes it up
    gate = FinishingDuringTheScan(rules, GAMER)
    queue = EvaluationQueue(gate, threads=1, wait_seconds=0, scan_seconds=0.05, settle_seconds=60)
    queue.start()
    try:
        queue.on_ingest(GAMER, sent)
        assert gate.entered.wait(30)
        deadline = time.monotonic() + 30
        while gate.scans < 4:  # the scan that raced, and more after it
            assert time.monotonic() < deadline, "the scan stopped"
            time.sleep(0.05)
        assert queue.idle(30)
    finally:
        gate.release()
        queue.stop()

    assert gate.calls[GAMER] == 1
    assert marks(engine, GAMER) == (2, 2) and len(games(engine, GAMER)) == 1


def test_an_agent_in_flight_is_not_taken_up_by_the_scan(
        engine: Engine, clock: Any, rules: RulesService, ingest: IngestService) -> None:
    """Another replica may be evaluating an agent that has just reported: the scan leaves it alone."""
    facts = Facts()
    clock.now = NOON
    ingest.ingest(GAMER, game_started(facts, NOON))

    assert rules.backlog(settled_before=NOON - dt.timedelta(seconds=30)) == []
    assert rules.backlog(settled_before=NOON + dt.timedelta(seconds=30)) == [GAMER]
    assert rules.backlog() == [GAMER]


def test_a_program_still_in_use_is_judged_again_with_reports_that_name_no_program(
        engine: Engine, clock: Any, rules: RulesService, ingest: IngestService) -> None:
    """While a game runs its violation grows with every report, even one of office programs only; once the game
    stopped longer than the lookback before the previous contact, such a report judges no programs."""
    rules = RulesService(engine, Policies(RULES), clock, lookback=2 * MINUTE)
    facts = Facts()

    def office_report(minutes: int) -> Any:  # no heartbeat: the start of an office program alone
        at = NOON + minutes * MINUTE
        clock.now, first = at, len(facts.stored)
        facts.start(at, 5000 + minutes, "soffice.bin")
        ingest.ingest(GAMER, [f.fact for f in facts.stored[first:]])
        return rules.catch_up(GAMER)

    clock.now = NOON
    ingest.ingest(GAMER, game_started(facts, NOON))
    rules.catch_up(GAMER)
    [started] = games(engine, GAMER)

    assert office_report(3).updated == 1  # the game still runs: its violation grows
    [grown] = games(engine, GAMER)
    assert grown.period_end > started.period_end

    clock.now = NOON + 6 * MINUTE
    first = len(facts.stored)
    facts.stop(NOON + 6 * MINUTE, 4242, "gnome-mines", NOON)
    ingest.ingest(GAMER, [f.fact for f in facts.stored[first:]])
    rules.catch_up(GAMER)
    [stopped] = games(engine, GAMER)

    assert office_report(9).agents == 1  # it ended 3 minutes ago, less than a lookback before the contact at 6
    assert office_report(12).agents == 0  # it ended before the contact at 9 less the lookback: nothing judged
    assert games(engine, GAMER) == [stopped]
    evaluated, last = marks(engine, GAMER)
    assert evaluated == last


def test_while_the_answers_are_slow_one_evaluation_runs_at_a_time_and_no_answer_waits(
        engine: Engine, clock: Any, rules: RulesService, ingest: IngestService) -> None:
    gate = Gate(rules, OTHER)
    slow = threading.Event()
    slow.set()
    queue = EvaluationQueue(gate, threads=2, wait_seconds=30, pressed=slow.is_set)
    queue.start()
    try:
        other, facts = Facts(), Facts()
        clock.now = NOON
        ingest.ingest(OTHER, heartbeat(other, NOON))
        assert queue.on_ingest(OTHER, []).new == ()  # a thread is free, but the answer does not wait
        assert gate.entered.wait(30)  # the other agent's evaluation holds one of the two threads

        sent = game_started(facts, NOON)
        ingest.ingest(GAMER, sent)
        assert queue.on_ingest(GAMER, sent).new == ()
        time.sleep(1.5)  # three looks of the free thread: it leaves the gamer queued while the answers are slow
        assert gate.calls[GAMER] == 0 and queue.backlog == 1 and games(engine, GAMER) == []

        slow.clear()  # quick again: the free thread judges the gamer while the other evaluation still runs
        deadline = time.monotonic() + 30
        while not games(engine, GAMER) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(games(engine, GAMER)) == 1 and marks(engine, GAMER) == (2, 2)
        assert marks(engine, OTHER) == (0, 1)  # still at the gate

        gate.release()
        assert queue.idle(30)
        assert marks(engine, OTHER) == (1, 1)
        assert [v.rule_id for v in queue.on_ingest(GAMER, []).new] == ["games"]
    finally:
        gate.release()
        queue.stop()
