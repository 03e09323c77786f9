"""The rules service in two controller replicas at once (two engines on one database).

Violations of one agent evaluated by both at the same moment are stored once, with no error; the
sweep's groups are claimed by one replica per round, and a replica that falls behind leaves the
groups it has not reached to the other.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from controller.db import make_engine, session_scope
from controller.ingest import IngestService
from controller.migrate import upgrade
from controller.models import Agent
from controller.policy.model import Occurrence, RuleKind, When
from controller.rules.claims import PG_SWEEP_LOCK, sweep_group
from controller.rules.records import VIOLATION
from controller.rules.service import EvaluationResult, RulesService
from tests.controller.rules.builders import Policies, MINUTE, Facts, local, policy, rule

RULES = policy(
    rule(RuleKind.FORBIDDEN_PROGRAM, id="games", when=When.WORKING_TIME, per=Occurrence.SESSION),
    rule(RuleKind.FORBIDDEN_PROGRAM, id="games-per-day", when=When.WORKING_TIME, per=Occurrence.DAY),
    rule(RuleKind.AGENT_SILENT, id="silent", when=When.WORKING_TIME, per=Occurrence.DAY, grace_minutes=30),
)


def add_agents(engine: Engine, ids: list[str], clock: Any) -> None:
    with session_scope(engine) as session:
        for agent_id in ids:
            session.add(Agent(id=agent_id, window="W01", enrolled_at=clock(), cert_serial=agent_id,
                              cert_fingerprint=agent_id, cert_not_after=clock() + dt.timedelta(days=365),
                              last_sequence=1, last_seen_at=clock()))


@dataclass
class Replicas:
    """Two rules services, each with its own engine (its own connections), as two controller processes have."""

    engine: Engine
    services: list[RulesService]


def two_replicas(url: str, clock: Any) -> Iterator[Replicas]:
    engines = [make_engine(url) for _ in range(2)]
    upgrade(engines[0])
    services = [RulesService(engine, Policies(RULES), clock) for engine in engines]
    try:
        yield Replicas(engines[0], services)
    finally:
        for service, engine in zip(services, engines):
            service.close()
            engine.dispose()


@pytest.fixture
def replicas(database_url: str, clock: Any) -> Iterator[Replicas]:
    yield from two_replicas(database_url, clock)


@pytest.fixture
def pg_replicas(postgres_url: str, clock: Any) -> Iterator[Replicas]:
    """Sweep groups are claimed on PostgreSQL only (SQLite serves one controller host)."""
    yield from two_replicas(postgres_url, clock)


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` in threads released together; their results, or the exception each raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - returned for the test to see
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_two_replicas_evaluating_one_agent_at_once_store_each_violation_once(
        replicas: Replicas, clock: Any) -> None:
    engine = replicas.engine
    add_agents(engine, ["ag-both"], clock)
    ingest = IngestService(engine, clock)
    facts = Facts()
    facts.heartbeats(local(2026, 11, 2, 8, 30), local(2026, 11, 2, 9))
    start = local(2026, 11, 2, 8)
    created = 0
    for game in range(8):  # each round a new game: a new key both replicas find at the same moment
        begin = local(2026, 11, 2, 9, 5) + game * 10 * MINUTE
        facts.heartbeats(begin - 5 * MINUTE, begin)
        facts.start(begin, 5000 + game, "gnome-mines")
        facts.stop(begin + 3 * MINUTE, 5000 + game, "gnome-mines", begin)
        clock.now = begin + 4 * MINUTE
        ingest.ingest("ag-both", facts.facts())

        results = at_once(*(lambda r=r: r.evaluate("ag-both", start, clock.now) for r in replicas.services))

        assert [type(r) for r in results] == [EvaluationResult, EvaluationResult], results
        created += sum(r.created for r in results)

    with engine.connect() as conn:
        keys = conn.execute(select(VIOLATION.c.key, VIOLATION.c.rule_id, VIOLATION.c.status)).all()
    assert len(keys) == len({k.key for k in keys}) == 9  # 8 sessions + 1 day
    assert {(k.rule_id, k.status) for k in keys} == {("games", "open"), ("games-per-day", "open")}
    assert created == 9


@pytest.mark.postgres
def test_one_replica_sweeps_a_group_per_round(pg_replicas: Replicas, clock: Any) -> None:
    ids = [f"ag-sweep-{n:03d}" for n in range(40)]
    add_agents(pg_replicas.engine, ids, clock)
    first, second = pg_replicas.services
    clock.now = local(2026, 11, 2, 11)

    rounds = [first.sweep(), first.sweep(), second.sweep()]
    assert [r.agents if r else None for r in rounds] == [40, 40, None]  # the first holds every group
    first.close()  # the first stops: its groups are free
    rounds = [second.sweep(), first.sweep()]
    assert [r.agents if r else None for r in rounds] == [40, None]


def _held_groups(engine: Engine) -> set[int]:
    """The sweep groups held in this database (other tests' controllers hold theirs in their own)."""
    with engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = :key AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ), {"key": PG_SWEEP_LOCK}).scalars())


@pytest.mark.postgres
def test_a_replica_that_falls_behind_leaves_the_groups_it_has_not_reached_to_the_other(
        pg_replicas: Replicas, clock: Any) -> None:
    engine = pg_replicas.engine
    ids = [f"ag-slow-{n:03d}" for n in range(40)]
    add_agents(engine, ids, clock)
    groups = sorted({sweep_group(i) for i in ids})
    slow_group = groups[len(groups) // 2]
    slow_agent = next(i for i in ids if sweep_group(i) == slow_group)
    clock.now = local(2026, 11, 2, 11)
    slow, other = pg_replicas.services
    outcome: list[EvaluationResult | None] = []
    helped: list[EvaluationResult | None] = []

    with engine.connect() as holder:  # the slow agent's row is locked: the first replica waits there
        holder.execute(text("SELECT id FROM agent WHERE id = :id FOR UPDATE"), {"id": slow_agent})
        sweeping = threading.Thread(target=lambda: outcome.append(slow.sweep()))
        sweeping.start()
        deadline = time.monotonic() + 30
        while slow_group not in _held_groups(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow_group in _held_groups(engine), "the first replica never reached the slow agent's group"
        helping = threading.Thread(target=lambda: helped.append(other.sweep()))
        helping.start()
        helping.join(timeout=60)  # had it taken the slow agent's group, it would wait for the lock too
        holder.rollback()
    for thread in (helping, sweeping):
        thread.join(timeout=60)

    behind = [i for i in ids if sweep_group(i) <= slow_group]
    assert helped[0] is not None and helped[0].agents == len(ids) - len(behind)
    assert outcome[0] is not None and outcome[0].agents == len(behind)
