"""The rules service in a process of its own (:mod:`controller.evaluator`), once per database back end.

Real child processes, a real database, the real ingest and a stored policy: what the controller gets
back from the child is what the rules service there stored (violations, marks), the child runs at a
lower CPU priority, a failure there is a clear error here, a child that dies fails only the calls it
held and is started again, and it ends with its parent, asked or not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from controller.clock import clock_from
from controller.evaluation import EvaluationQueue
from controller.evaluator import RESTART_DELAY_SECONDS, EvaluatorError, EvaluatorProcess
from controller.ingest import IngestService
from controller.policy.store import PolicyStore
from controller.rules.records import VIOLATION
from policies import DEFAULT_POLICY
from tests.controller.rules.builders import MINUTE, Facts
from tests.controller.test_evaluation import GAMER, NOON, enrol, game_started, heartbeat, marks


GAMES, SILENT = "games-video-music", "agent-silent"


def enrolled_under_the_default_policy(engine: Engine, clock: Any) -> None:
    clock.now = NOON
    enrol(engine, clock, GAMER)
    PolicyStore(engine, clock).apply(DEFAULT_POLICY.read_text(encoding="utf-8"), str(DEFAULT_POLICY), "test")


@pytest.fixture
def evaluator(engine: Engine, database_url: str, clock: Any) -> Any:
    enrolled_under_the_default_policy(engine, clock)
    process = EvaluatorProcess(database_url, clock=clock, niceness=5, threads=3)
    yield process
    process.close(timeout=30)


def violations(engine: Engine, rule_id: str) -> list[Any]:
    with engine.connect() as conn:
        query = select(VIOLATION).where(VIOLATION.c.agent_id == GAMER, VIOLATION.c.rule_id == rule_id)
        return list(conn.execute(query))


def test_the_child_judges_the_facts_and_the_caller_gets_what_it_stored(
        evaluator: EvaluatorProcess, engine: Engine, clock: Any, ingest: IngestService) -> None:
    facts = Facts()
    ingest.ingest(GAMER, game_started(facts, NOON))
    assert evaluator.backlog() == [GAMER]

    result = evaluator.catch_up(GAMER)

    stored = violations(engine, GAMES)
    assert result.created == 1 and len(stored) == 1
    assert [(v.rule_id, v.key, v.agent_id) for v in result.new] == [(GAMES, stored[0].key, GAMER)]
    assert marks(engine, GAMER) == (2, 2) and evaluator.backlog() == []
    assert evaluator.catch_up(GAMER).agents == 0  # nothing new


def test_the_child_runs_at_a_lower_priority_and_ends_when_closed(
        evaluator: EvaluatorProcess, caplog: pytest.LogCaptureFixture) -> None:
    evaluator.backlog()  # answered: the child is up
    child = psutil.Process(evaluator.pid)

    assert child.nice() == min(19, psutil.Process().nice() + 5)  # 19 is the nicest there is
    assert child.ppid() == os.getpid()

    evaluator.close(timeout=30)
    assert not child.is_running()
    assert "killing it" not in caplog.text  # it stopped when asked
    with pytest.raises(EvaluatorError, match="closed"):
        evaluator.backlog()


def test_the_sweep_runs_in_the_child_and_its_failure_is_a_clear_error(
        evaluator: EvaluatorProcess, engine: Engine, clock: Any, ingest: IngestService) -> None:
    ingest.ingest(GAMER, heartbeat(Facts(), NOON - MINUTE))
    evaluator.catch_up(GAMER)

    result = evaluator.sweep(NOON + 60 * MINUTE)  # silent for an hour of working time

    assert result.created == 1 and [v.rule_id for v in result.new] == [SILENT]
    assert [v.key for v in violations(engine, SILENT)] == [result.new[0].key]
    with pytest.raises(EvaluatorError, match="sweep failed in the rules process: "):
        evaluator.sweep("not a time")
    assert evaluator.sweep(NOON + 61 * MINUTE).created == 0  # the child serves on after a failed call


def test_a_child_that_dies_fails_the_calls_it_held_and_is_started_again(
        evaluator: EvaluatorProcess, engine: Engine, ingest: IngestService) -> None:
    ingest.ingest(GAMER, game_started(Facts(), NOON))
    evaluator.start()
    first = psutil.Process(evaluator.pid)
    first.suspend()  # the call below is sent and never answered
    failure: list[BaseException] = []

    def call() -> None:
        try:
            evaluator.catch_up(GAMER)
        except EvaluatorError as exc:
            failure.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    first.kill()
    caller.join(30)

    assert len(failure) == 1 and "stopped (exit code -9) before it answered" in str(failure[0])
    assert marks(engine, GAMER) == (0, 2) and violations(engine, GAMES) == []
    with pytest.raises(EvaluatorError, match="started again in"):
        evaluator.backlog()  # not restarted in a loop

    time.sleep(RESTART_DELAY_SECONDS)
    assert evaluator.catch_up(GAMER).created == 1
    assert evaluator.pid not in (None, first.pid)
    assert marks(engine, GAMER) == (2, 2)


def test_a_child_that_cannot_start_its_rules_service_fails_the_call_with_exit_code_1_and_says_why(
        capfd: pytest.CaptureFixture[str]) -> None:
    evaluator = EvaluatorProcess("nosuchdatabase://nowhere", niceness=0, threads=1)
    try:
        with pytest.raises(EvaluatorError, match=r"stopped \(exit code 1\) before it answered"):
            evaluator.backlog()
    finally:
        evaluator.close(timeout=10)

    log = capfd.readouterr().err
    assert "the rules process failed" in log and "nosuchdatabase" in log


def test_the_queue_waits_for_the_child_and_the_answer_gets_its_notices(
        evaluator: EvaluatorProcess, engine: Engine, ingest: IngestService) -> None:
    queue = EvaluationQueue(evaluator, threads=1, wait_seconds=30)
    queue.start()
    try:
        sent = game_started(Facts(), NOON)
        ingest.ingest(GAMER, sent)

        answered = queue.on_ingest(GAMER, sent)

        assert [v.rule_id for v in answered.new] == [GAMES]
        assert len(violations(engine, GAMES)) == 1 and marks(engine, GAMER) == (2, 2)
    finally:
        queue.stop()


def test_the_child_ends_when_its_parent_is_killed(database_url: str, engine: Engine) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from controller.evaluator import EvaluatorProcess\n"
         "evaluator = EvaluatorProcess(sys.argv[1])\n"
         "evaluator.start()\n"
         "print(evaluator.pid, flush=True)\n"
         "time.sleep(120)\n",
         database_url],
        stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))  # type: ignore[union-attr]
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)

        _, alive = psutil.wait_procs([child], timeout=15)
        assert alive == [], "the rules process outlived its parent"
    finally:
        parent.kill()
        parent.wait(10)


def test_a_clock_set_by_the_test_hook_reads_the_same_in_the_child(
        engine: Engine, database_url: str, clock: Any) -> None:
    """As under ``$COUNTERGUARD_FAKE_NOW``: a moved clock that runs. The child starts a while after its
    start was written down; its clock must not lag by that while, or the facts just received would lie
    in its future and be left unjudged."""
    enrolled_under_the_default_policy(engine, clock)
    running = clock_from(NOON)
    evaluator = EvaluatorProcess(database_url, clock=running)
    try:
        evaluator.backlog()  # the child is up
        IngestService(engine, running).ingest(GAMER, game_started(Facts(), running()))

        assert evaluator.catch_up(GAMER).created == 1
    finally:
        evaluator.close(timeout=30)
