"""Overload: Reports refused early while calls queue for a thread; the average the rules yield to.

Real gRPC with real certificates on each database back end; the controller gets one thread, which a
Report waiting for a database lock the test holds keeps busy, so the next Report waits in the pool's
queue as it would behind a crowd.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine

from controller.config import ConfigError, Settings, load_settings
from controller.errors import InvalidInput
from controller.limits import RETRY_AFTER_KEY
from controller.load import MAX_RETRY_SECONDS, MIN_RETRY_SECONDS, ReportLoad, TimedExecutor, queue_wait
from controller.models import Agent
from controller.pki import ServerPKI
from controller.server import RunningServer, build_server
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc
from tests.controller.test_forged_traffic import held, new_agent
from tests.controller.test_grpc_server import (  # noqa: F401 - fixtures
    TIMEOUT,
    clock,
    heartbeat,
    mtls,
    report,
    rpc_error,
    settings,
)
from tests.controller.test_limits import FakeMonotonic


@pytest.fixture
def one_thread(settings: Settings, engine: Engine, pki: ServerPKI, clock) -> Iterator[RunningServer]:
    """A controller with one gRPC thread that refuses Reports while one call already waits for it."""
    server = build_server(dataclasses.replace(settings, max_workers=1, report_queue_limit=1), engine, pki, clock)
    server.start()
    yield server
    server.stop(None)


def test_while_calls_wait_for_a_thread_a_new_report_is_refused_at_once_with_a_wait_and_nothing_stored(
    one_thread: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    busy, queued, late = (new_agent(one_thread, pki, engine, clock) for _ in range(3))
    with mtls(one_thread, busy) as busy_channel, mtls(one_thread, queued) as queued_channel, \
            mtls(one_thread, late) as late_channel:
        for channel in (busy_channel, queued_channel, late_channel):  # connected: only the pool delays what follows
            assert report(channel, [heartbeat(1, clock())]).acknowledged_sequence == 1
        with engine.begin() as conn:  # hold the busy agent's row (SQLite: the whole database) as a long report would
            conn.execute(update(Agent).where(Agent.id == busy.agent_id).values(hostname="held"))
            blocked = agent_pb2_grpc.AgentServiceStub(busy_channel).Report.future(
                agent_pb2.ReportRequest(facts=[heartbeat(2, clock())]), timeout=TIMEOUT)
            time.sleep(0.5)  # the one thread now waits for the lock with the busy agent's report
            waiting = agent_pb2_grpc.AgentServiceStub(queued_channel).Report.future(
                agent_pb2.ReportRequest(facts=[heartbeat(2, clock())]), timeout=TIMEOUT)
            time.sleep(0.5)  # ... and this one waits for the thread: the queue is at its limit

            started = time.monotonic()
            refused = rpc_error(agent_pb2_grpc.AgentServiceStub(late_channel).Report,
                                agent_pb2.ReportRequest(facts=[heartbeat(2, clock())]))
            assert time.monotonic() - started < 5  # answered while the thread is still held, not after the queue
            assert not blocked.done() and not waiting.done()

        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details().startswith(
            "the controller is overloaded: 1 calls wait for a thread (limit 1); retry in")
        retry_ms = int(dict(refused.trailing_metadata())[RETRY_AFTER_KEY])
        assert MIN_RETRY_SECONDS * 1000 <= retry_ms <= MAX_RETRY_SECONDS * 1000
        assert blocked.result(TIMEOUT).acknowledged_sequence == 2  # the lock let go: the queue is served in order
        assert waiting.result(TIMEOUT).acknowledged_sequence == 2
        assert sorted(held(engine, late.agent_id)) == [1]  # nothing of the refused report stored

        assert report(late_channel, [heartbeat(2, clock())]).acknowledged_sequence == 2  # sent again: taken
        assert sorted(held(engine, late.agent_id)) == [1, 2]


def test_reports_that_find_a_free_thread_are_never_refused(one_thread: RunningServer, pki: ServerPKI,
                                                            engine: Engine, clock) -> None:
    agent = new_agent(one_thread, pki, engine, clock)
    with mtls(one_thread, agent) as channel:
        for sequence in range(1, 16):  # within the agent's own burst of 20
            assert report(channel, [heartbeat(sequence, clock())]).acknowledged_sequence == sequence


# ----------------------------------------------------------------------------- the measures behind it


def test_the_pool_counts_the_calls_waiting_for_a_thread_and_tells_each_how_long_it_waited() -> None:
    gate = threading.Event()
    with TimedExecutor(max_workers=1) as pool:
        load = ReportLoad(2, 0.1, rand=lambda: 0.5)
        load.watch(pool)
        first = pool.submit(gate.wait, 5)
        second = pool.submit(queue_wait)
        assert pool.waiting == 1 and load.retry_after() is None  # one waits: under the limit of 2
        third = pool.submit(queue_wait)
        assert pool.waiting == 2 and load.retry_after() == pytest.approx(17.5)  # 5 + 0.5 · (30 - 5)
        time.sleep(0.3)
        gate.set()
        assert first.result(5) and second.result(5) >= 0.25 and third.result(5) >= 0.25
    assert pool.waiting == 0 and load.retry_after() is None
    assert queue_wait() == 0.0  # outside the pool
    assert ReportLoad(0, 0.1).retry_after() is None  # 0: never refused


def test_the_rules_yield_while_the_recent_average_report_time_is_above_the_limit() -> None:
    ticks = FakeMonotonic()
    load = ReportLoad(2.0, 0.1, monotonic=ticks)
    for _ in range(50):  # quick answers, 20 a second
        ticks.now += 0.05
        load.observe(0.02)
    assert not load.pressed() and load.average == pytest.approx(0.02, abs=0.005)
    for _ in range(60):  # three seconds of slow ones
        ticks.now += 0.05
        load.observe(0.5)
    assert load.pressed() and load.average > 0.3
    ticks.now += 10  # no reports for a while: the pressure is gone
    assert not load.pressed()
    assert not ReportLoad(2.0, 0).pressed()  # 0: the rules never yield


def test_negative_load_limits_are_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="setting rules_yield_ms must be 0 \\(off\\) or more, not -5"):
        ReportLoad.from_settings(Settings(rules_yield_ms=-5))
    configured = load_settings(environ={"COUNTERGUARD_REPORT_QUEUE_LIMIT": "750"})
    assert ReportLoad.from_settings(configured).queue_limit == 750
    with pytest.raises(ConfigError, match="COUNTERGUARD_REPORT_QUEUE_LIMIT: field 'report_queue_limit'"):
        load_settings(environ={"COUNTERGUARD_REPORT_QUEUE_LIMIT": "soon"})
