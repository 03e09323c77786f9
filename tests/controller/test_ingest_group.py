"""Group commit: batches of different agents that arrive during a transaction are stored together in the next.

It is on by default on PostgreSQL only; the tests turn it on for SQLite too, so its handling of every case
is checked on both back ends.

The tests hold the database's writes (SQLite: its write lock; PostgreSQL: a lock on the fact table) so
that one group's transaction stays open while other batches arrive, then count the transactions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.engine import Engine

from controller.db import make_engine
from controller.errors import NotFound, Unauthenticated
from controller.ingest import IngestResult, IngestService
from controller.models import Agent
from tests.controller.test_ingest import add_agent, agent_row, started, stored_facts

TIMEOUT = 30.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting until {what}"
        time.sleep(0.01)


@contextmanager
def writes_held(database_url: str) -> Iterator[None]:
    """Hold, from another connection, what every ingest transaction needs to write its facts."""
    other = make_engine(database_url)
    try:
        with other.connect() as conn:
            if other.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(text("LOCK TABLE fact IN SHARE MODE"))
            try:
                yield
            finally:
                conn.rollback()
    finally:
        other.dispose()


@contextmanager
def counted_commits(engine: Engine) -> Iterator[list[int]]:
    """The number of commits made on ``engine`` while the block runs (one element, updated live)."""
    count = [0]

    def commit(_conn: Any) -> None:
        count[0] += 1

    event.listen(engine, "commit", commit)
    try:
        yield count
    finally:
        event.remove(engine, "commit", commit)


def send(pool: ThreadPoolExecutor, service: IngestService, agent_id: str, sequences: range,
         clock: Any, **kwargs: Any) -> Future[IngestResult]:
    return pool.submit(service.ingest, agent_id, [started(s, clock()) for s in sequences], **kwargs)


def test_batches_arriving_during_a_transaction_are_stored_together_in_the_next(engine: Engine, database_url: str,
                                                                                clock) -> None:
    for agent_id in ("ag-a", "ag-b", "ag-c", "ag-d"):
        add_agent(engine, agent_id)
    groups: list[int] = []
    service = IngestService(engine, clock, group_limit=64, on_group=groups.append)

    with ThreadPoolExecutor(8) as pool, counted_commits(engine) as commits:
        with writes_held(database_url):
            first = send(pool, service, "ag-a", range(1, 3), clock)
            wait_until(lambda: service.storing == 1, "the first batch's transaction waits for the writes")
            b1 = send(pool, service, "ag-b", range(1, 4), clock)
            c = send(pool, service, "ag-c", range(1, 2), clock)
            wait_until(lambda: service.queued == 2, "b and c wait")
            b2 = send(pool, service, "ag-b", range(4, 6), clock)  # a second batch of b: in the group after
            d = send(pool, service, "ag-d", range(1, 5), clock, outbox_depth=7)
            wait_until(lambda: service.queued == 4, "all have arrived")
            assert commits[0] == 0 and not first.done()

        results = [f.result(TIMEOUT) for f in (first, b1, c, b2, d)]

    assert [r.acknowledged_sequence for r in results] == [2, 3, 1, 5, 4]
    assert [r.stored for r in results] == [2, 3, 1, 2, 4]
    assert commits[0] == 3 and groups == [1, 3, 1]  # a; then b's first batch, c and d together; then b's second
    assert stored_facts(engine, "ag-b") == [(s, "process_started") for s in range(1, 6)]
    assert [stored_facts(engine, a) for a in ("ag-a", "ag-c", "ag-d")] == [
        [(s, "process_started") for s in range(1, n + 1)] for n in (2, 1, 4)]
    assert (agent_row(engine, "ag-b").last_sequence, agent_row(engine, "ag-d").outbox_depth) == (5, 7)
    assert agent_row(engine, "ag-b").last_seen_at == clock()
    assert service.queued == 0 and service.storing == 0


def test_a_batch_that_may_not_be_stored_is_refused_without_holding_back_its_group(engine: Engine,
                                                                                   database_url: str,
                                                                                   clock) -> None:
    add_agent(engine, "ag-good")
    add_agent(engine, "ag-other")
    add_agent(engine, "ag-revoked", revoked=True)
    service = IngestService(engine, clock, group_limit=64)

    with ThreadPoolExecutor(8) as pool:
        with writes_held(database_url):
            first = send(pool, service, "ag-other", range(1, 2), clock)
            wait_until(lambda: service.storing == 1, "the first transaction waits")
            good = send(pool, service, "ag-good", range(1, 3), clock, presented="fp-ag-good")
            forged = send(pool, service, "ag-other", range(2, 3), clock, presented="fp-of-someone-else")
            revoked = send(pool, service, "ag-revoked", range(1, 2), clock)
            unknown = send(pool, service, "ag-nobody", range(1, 2), clock)
            wait_until(lambda: service.queued == 4, "all have arrived")

        assert first.result(TIMEOUT).acknowledged_sequence == 1
        assert good.result(TIMEOUT).acknowledged_sequence == 2
        with pytest.raises(Unauthenticated, match="the certificate presented is not the one issued to agent 'ag-other'"):
            forged.result(TIMEOUT)
        with pytest.raises(Unauthenticated, match="agent 'ag-revoked' was revoked"):
            revoked.result(TIMEOUT)
        with pytest.raises(NotFound, match="no agent 'ag-nobody'"):
            unknown.result(TIMEOUT)

    assert stored_facts(engine, "ag-good") == [(1, "process_started"), (2, "process_started")]
    assert stored_facts(engine, "ag-other") == [(1, "process_started")]
    assert stored_facts(engine, "ag-revoked") == [] and stored_facts(engine, "ag-nobody") == []
    assert agent_row(engine, "ag-other").last_sequence == 1


@pytest.mark.postgres
def test_an_agent_whose_row_another_transaction_holds_does_not_hold_up_the_others(postgres_url: str,
                                                                                  clock) -> None:
    """An evaluation (or another replica) holds one agent's row: the others are stored meanwhile."""
    from controller.migrate import upgrade

    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        add_agent(engine, "ag-busy")
        add_agent(engine, "ag-free")
        service = IngestService(engine, clock, group_limit=64)
        with ThreadPoolExecutor(4) as pool:
            with engine.begin() as conn:  # as an evaluation of the busy agent would
                conn.execute(update(Agent).where(Agent.id == "ag-busy").values(hostname="held"))
                busy = send(pool, service, "ag-busy", range(1, 3), clock)
                free = send(pool, service, "ag-free", range(1, 3), clock)
                assert free.result(TIMEOUT).acknowledged_sequence == 2  # while the busy agent's row is held
                assert not busy.done()
            assert busy.result(TIMEOUT).acknowledged_sequence == 2
        assert stored_facts(engine, "ag-busy") == [(1, "process_started"), (2, "process_started")]
    finally:
        engine.dispose()


def test_a_group_whose_transaction_fails_is_stored_batch_by_batch(engine: Engine, database_url: str, clock,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A statement of the group fails (here: any insert of more than one agent's facts): each batch then goes
    in a transaction of its own, so the fault reaches the batch that causes it and no other."""
    for agent_id in ("ag-a", "ag-b", "ag-c"):
        add_agent(engine, agent_id)
    service = IngestService(engine, clock, group_limit=64)

    def refuse_mixed_inserts(_conn: Any, _cursor: Any, statement: str, _parameters: Any, context: Any,
                             executemany: bool) -> None:
        if statement.startswith("INSERT INTO fact") and executemany:
            if len({row["agent_id"] for row in context.compiled_parameters}) > 1:
                raise RuntimeError("one statement for several agents' facts refused by the test")

    event.listen(engine, "before_cursor_execute", refuse_mixed_inserts)
    try:
        with ThreadPoolExecutor(4) as pool, caplog.at_level(logging.WARNING, "controller.ingest"):
            with writes_held(database_url):
                first = send(pool, service, "ag-a", range(1, 3), clock)
                wait_until(lambda: service.storing == 1, "the first transaction waits")
                together = [send(pool, service, a, range(1, 4), clock) for a in ("ag-b", "ag-c")]
                wait_until(lambda: service.queued == 2, "both have arrived")
            assert [f.result(TIMEOUT).acknowledged_sequence for f in (first, *together)] == [2, 3, 3]
    finally:
        event.remove(engine, "before_cursor_execute", refuse_mixed_inserts)

    assert "a group of 2 batches could not be stored together; storing each alone" in caplog.text
    assert [len(stored_facts(engine, a)) for a in ("ag-a", "ag-b", "ag-c")] == [2, 3, 3]


def test_many_agents_at_once_store_every_fact_once(engine: Engine, clock) -> None:
    agents = [f"ag-{n:02}" for n in range(24)]
    for agent_id in agents:
        add_agent(engine, agent_id)
    service = IngestService(engine, clock, group_limit=64)
    batches = [(agent_id, range(start, start + 3)) for start in (1, 4, 7) for agent_id in agents]
    barrier = threading.Barrier(len(agents))

    def agent_reports(agent_id: str) -> list[int]:
        barrier.wait()
        return [service.ingest(agent_id, [started(s, clock()) for s in sequences]).acknowledged_sequence
                for a, sequences in batches if a == agent_id]

    with ThreadPoolExecutor(len(agents)) as pool:
        acknowledged = list(pool.map(agent_reports, agents))

    assert acknowledged == [[3, 6, 9]] * len(agents)
    assert all(stored_facts(engine, a) == [(s, "process_started") for s in range(1, 10)] for a in agents)


def test_by_default_batches_are_grouped_on_postgresql_only(engine: Engine, database_url: str, clock) -> None:
    for agent_id in ("ag-a", "ag-b", "ag-c"):
        add_agent(engine, agent_id)
    service = IngestService(engine, clock)

    with ThreadPoolExecutor(4) as pool, counted_commits(engine) as commits:
        with writes_held(database_url):
            first = send(pool, service, "ag-a", range(1, 2), clock)
            if engine.dialect.name == "postgresql":
                wait_until(lambda: service.storing == 1, "the first transaction waits")
                rest = [send(pool, service, a, range(1, 2), clock) for a in ("ag-b", "ag-c")]
                wait_until(lambda: service.queued == 2, "both have arrived")
            else:  # each Report waits for SQLite's write lock itself
                rest = [send(pool, service, a, range(1, 2), clock) for a in ("ag-b", "ag-c")]
                time.sleep(0.5)
                assert service.queued == 0 and service.storing == 0
        assert [f.result(TIMEOUT).acknowledged_sequence for f in (first, *rest)] == [1, 1, 1]

    assert commits[0] == (2 if engine.dialect.name == "postgresql" else 3)
