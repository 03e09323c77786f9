"""Overload: Reports that waited too long for a thread are refused early; the average the rules yield to.

Real gRPC with real certificates on each database back end; the controller gets one thread, which a
Report waiting for a database lock the test holds keeps busy, so the next Report waits in the pool's
queue as it would behind a crowd.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine

from controller.config import ConfigError, Settings, load_settings
from controller.errors import InvalidInput
from controller.limits import RETRY_AFTER_KEY
from controller.load import MAX_RETRY_SECONDS, ReportLoad, TimedExecutor, queue_wait
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
    settings,
)


@pytest.fixture
def one_thread(settings: Settings, engine: Engine, pki: ServerPKI, clock) -> Iterator[RunningServer]:
    """A controller with one gRPC thread that refuses Reports which waited more than 300 ms for it."""
    server = build_server(dataclasses.replace(settings, max_workers=1, report_queue_limit_ms=300), engine, pki, clock)
    server.start()
    yield server
    server.stop(None)


def test_a_report_that_waited_too_long_for_a_thread_is_refused_at_once_with_a_wait_and_nothing_stored(
    one_thread: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    busy, waiting = new_agent(one_thread, pki, engine, clock), new_agent(one_thread, pki, engine, clock)
    with mtls(one_thread, busy) as busy_channel, mtls(one_thread, waiting) as waiting_channel:
        for channel in (busy_channel, waiting_channel):  # connected, so only the pool's queue delays what follows
            assert report(channel, [heartbeat(1, clock())]).acknowledged_sequence == 1
        with engine.begin() as conn:  # hold the busy agent's row (SQLite: the whole database) as a long report would
            conn.execute(update(Agent).where(Agent.id == busy.agent_id).values(hostname="held"))
            blocked = agent_pb2_grpc.AgentServiceStub(busy_channel).Report.future(
                agent_pb2.ReportRequest(facts=[heartbeat(2, clock())]), timeout=TIMEOUT)
            time.sleep(0.5)  # the one thread now waits for the lock with the busy agent's report
            queued = agent_pb2_grpc.AgentServiceStub(waiting_channel).Report.future(
                agent_pb2.ReportRequest(facts=[heartbeat(2, clock())]), timeout=TIMEOUT)
            time.sleep(0.8)  # ... and the waiting agent's report waits for the thread
            assert not blocked.done() and not queued.done()
        started = time.monotonic()

        assert blocked.result(TIMEOUT).acknowledged_sequence == 2
        refused = queued.exception(TIMEOUT)
        assert time.monotonic() - started < 5  # refused once it had the thread, not after the deadline

        assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the controller is overloaded: this report waited" in refused.details()
        assert "(limit 0.3 s); retry in" in refused.details()
        retry_ms = dict(refused.trailing_metadata())[RETRY_AFTER_KEY]
        assert 5000 <= int(retry_ms) <= 2 * MAX_RETRY_SECONDS * 1000  # long against its wait: 5 times, at least 5 s
        assert sorted(held(engine, waiting.agent_id)) == [1]  # nothing of the refused report stored

        assert report(waiting_channel, [heartbeat(2, clock())]).acknowledged_sequence == 2  # sent again: taken
        assert sorted(held(engine, waiting.agent_id)) == [1, 2]


def test_reports_that_find_a_free_thread_are_never_refused(one_thread: RunningServer, pki: ServerPKI,
                                                            engine: Engine, clock) -> None:
    agent = new_agent(one_thread, pki, engine, clock)
    with mtls(one_thread, agent) as channel:
        for sequence in range(1, 16):  # within the agent's own burst of 20
            assert report(channel, [heartbeat(sequence, clock())]).acknowledged_sequence == sequence


# ----------------------------------------------------------------------------- the measures behind it


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_pool_tells_each_call_how_long_it_waited_for_a_thread() -> None:
    with TimedExecutor(max_workers=1) as pool:
        first = pool.submit(time.sleep, 0.3)
        waited = pool.submit(queue_wait).result(5)
        first.result(5)
    assert 0.25 <= waited < 5
    assert queue_wait() == 0.0  # outside the pool


def test_a_report_is_refused_only_past_the_limit_and_told_to_wait_five_times_as_long_with_jitter() -> None:
    load = ReportLoad(0.5, 0.1, monotonic=Ticks(), rand=lambda: 0.5)
    assert load.retry_after(0.4) is None and load.retry_after(0.5) is None and load.shed == 0
    assert load.retry_after(3.0) == pytest.approx(22.5)  # 5 · 3 s · (1 + 0.5)
    assert load.retry_after(0.6) == pytest.approx(7.5)  # at least 5 s · (1 + 0.5)
    assert load.retry_after(500.0) == pytest.approx(MAX_RETRY_SECONDS * 1.5)  # bounded
    assert load.shed == 3
    assert ReportLoad(0, 0.1).retry_after(500.0) is None  # 0: never refused


def test_the_rules_yield_while_the_recent_average_report_time_is_above_the_limit() -> None:
    ticks = Ticks()
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
    configured = load_settings(environ={"COUNTERGUARD_REPORT_QUEUE_LIMIT_MS": "750"})
    assert ReportLoad.from_settings(configured).queue_limit == 0.75
    with pytest.raises(ConfigError, match="COUNTERGUARD_REPORT_QUEUE_LIMIT_MS: field 'report_queue_limit_ms'"):
        load_settings(environ={"COUNTERGUARD_REPORT_QUEUE_LIMIT_MS": "soon"})
