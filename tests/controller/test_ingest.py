"""Ingest: whole batches validated first, stored once per (agent, sequence), acknowledged after commit."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from controller.convert import datetime_to_timestamp, fact_kind, fact_to_row, row_to_fact, timestamp_to_datetime
from controller.db import make_engine, session_scope
from controller.errors import InvalidInput, NotFound, Unauthenticated
from controller.ingest import IngestLimits, IngestResult, IngestService
from controller.migrate import upgrade
from controller.models import Agent, Fact
from protos.counterguard.v1 import facts_pb2 as pb

AGENT = "ag-0123456789"


def add_agent(engine: Engine, agent_id: str = AGENT, *, revoked: bool = False) -> None:
    when = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    with session_scope(engine) as session:
        session.add(
            Agent(
                id=agent_id, hostname="pc-w01", window="W01", enrolled_at=when, cert_serial=f"serial-{agent_id}",
                cert_fingerprint=f"fp-{agent_id}", cert_not_after=when + dt.timedelta(days=365),
                revoked_at=when if revoked else None,
            )
        )


def started(sequence: int, observed: dt.datetime, pid: int | None = None, name: str = "bash") -> pb.Fact:
    process = pb.ProcessInfo(pid=pid or 1000 + sequence, name=name, executable=f"/usr/bin/{name}", username="zhang")
    return pb.Fact(
        sequence=sequence, observed_at=datetime_to_timestamp(observed), process_started=pb.ProcessStarted(process=process)
    )


def stored_facts(engine: Engine, agent_id: str = AGENT) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Fact.sequence, Fact.kind).where(Fact.agent_id == agent_id).order_by(Fact.sequence))
        return [(row.sequence, row.kind) for row in rows]


def agent_row(engine: Engine, agent_id: str = AGENT) -> Agent:
    with session_scope(engine) as session:
        agent = session.get(Agent, agent_id)
        assert agent is not None
        return agent


@pytest.fixture
def service(engine: Engine, clock) -> IngestService:
    add_agent(engine)
    return IngestService(engine, clock)


def test_stores_a_batch_and_acknowledges_its_highest_sequence(engine: Engine, service: IngestService, clock) -> None:
    observed = clock() - dt.timedelta(seconds=5)
    batch = [started(s, observed) for s in (1, 2, 3, 7)]

    result = service.ingest(AGENT, batch)

    assert result == IngestResult(acknowledged_sequence=7, stored=4, duplicates=0)
    assert stored_facts(engine) == [(1, "process_started"), (2, "process_started"), (3, "process_started"), (7, "process_started")]
    with engine.connect() as conn:
        row = conn.execute(select(Fact).where(Fact.sequence == 7)).one()
    assert (row.observed_at, row.received_at) == (observed, clock())
    assert row_to_fact(row.payload) == batch[3]
    agent = agent_row(engine)
    assert (agent.last_seen_at, agent.last_sequence) == (clock(), 7)


def test_the_same_batch_twice_is_stored_once(engine: Engine, service: IngestService, clock) -> None:
    batch = [started(s, clock()) for s in range(1, 6)]
    service.ingest(AGENT, batch)
    clock.advance(seconds=30)

    again = service.ingest(AGENT, batch)

    assert again == IngestResult(acknowledged_sequence=5, stored=0, duplicates=5)
    assert [s for s, _ in stored_facts(engine)] == [1, 2, 3, 4, 5]
    assert agent_row(engine).last_seen_at == clock()  # the retry is still contact


def test_other_facts_under_held_numbers_are_not_stored_but_reported_as_conflicts(
    engine: Engine, service: IngestService, clock
) -> None:
    service.ingest(AGENT, [started(s, clock()) for s in range(1, 6)])
    clock.advance(hours=1)  # the outbox was restored from an older copy and numbers from 3 again

    result = service.ingest(AGENT, [started(3, clock() - dt.timedelta(hours=1)), started(4, clock(), pid=77),
                                    started(5, clock(), pid=78), started(6, clock(), pid=79)])

    assert result == IngestResult(acknowledged_sequence=6, stored=1, duplicates=1, conflicts=(4, 5))
    with engine.connect() as conn:
        pids = dict(conn.execute(select(Fact.sequence, Fact.payload).where(Fact.agent_id == AGENT)).all())
    assert {s: row_to_fact(p).process_started.process.pid for s, p in pids.items()} == {
        1: 1001, 2: 1002, 3: 1003, 4: 1004, 5: 1005, 6: 79}, "held facts are never overwritten"


def test_an_overlapping_batch_stores_only_the_new_facts(engine: Engine, service: IngestService, clock) -> None:
    service.ingest(AGENT, [started(s, clock()) for s in range(1, 6)])

    result = service.ingest(AGENT, [started(s, clock()) for s in range(3, 9)])

    assert result == IngestResult(acknowledged_sequence=8, stored=3, duplicates=3)
    assert [s for s, _ in stored_facts(engine)] == list(range(1, 9))


def test_a_late_batch_below_the_acknowledgement_fills_the_gap(engine: Engine, service: IngestService, clock) -> None:
    service.ingest(AGENT, [started(s, clock()) for s in (1, 2, 5)])

    result = service.ingest(AGENT, [started(s, clock()) for s in (3, 4)])

    assert result == IngestResult(acknowledged_sequence=5, stored=2, duplicates=0)
    assert agent_row(engine).last_sequence == 5


def test_an_empty_batch_counts_as_contact(engine: Engine, service: IngestService, clock) -> None:
    service.ingest(AGENT, [started(1, clock())])
    clock.advance(minutes=5)

    assert service.ingest(AGENT, []) == IngestResult(acknowledged_sequence=1, stored=0, duplicates=0)
    assert agent_row(engine).last_seen_at == clock()


def _missing_time(fact: pb.Fact) -> None:
    fact.ClearField("observed_at")


def _no_kind(fact: pb.Fact) -> None:
    fact.ClearField("process_started")


def _sequence_zero(fact: pb.Fact) -> None:
    fact.sequence = 0


def _sequence_repeated(fact: pb.Fact) -> None:
    fact.sequence = 10


def _long_string(fact: pb.Fact) -> None:
    fact.process_started.process.executable = "/opt/" + "x" * 5000


def _bad_nested_time(fact: pb.Fact) -> None:
    fact.process_started.process.started_at.seconds = 10**12  # year ~33658


def _bad_time(fact: pb.Fact) -> None:
    fact.observed_at.nanos = -1


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_missing_time, "fact 1 (sequence 11, process_started): observed_at is missing"),
        (_no_kind, "fact 1 (sequence 11, no kind): no kind is set"),
        (_sequence_zero, "fact 1 (sequence 0, process_started): sequence is 0"),
        (_sequence_repeated, "fact 1 (sequence 10, process_started): sequence does not follow the previous fact's 10"),
        (_long_string, "fact 1 (sequence 11, process_started): process_started.process.executable is 5005 characters long; at most 4096"),
        (_bad_nested_time, "fact 1 (sequence 11, process_started): process_started.process.started_at is not a valid time"),
        (_bad_time, "fact 1 (sequence 11, process_started): observed_at is not a valid time"),
    ],
)
def test_a_malformed_fact_rejects_the_whole_batch(
    engine: Engine, service: IngestService, clock, spoil: Callable[[pb.Fact], None], message: str
) -> None:
    batch = [started(s, clock()) for s in (10, 11, 12)]
    spoil(batch[1])

    with pytest.raises(InvalidInput) as raised:
        service.ingest(AGENT, batch)

    assert str(raised.value).startswith(message)
    assert stored_facts(engine) == []
    assert agent_row(engine).last_seen_at is None


def test_the_outbox_depth_an_agent_reports_is_kept_until_it_reports_another(
    engine: Engine, service: IngestService, clock
) -> None:
    assert agent_row(engine).outbox_depth is None, "never reported"
    service.ingest(AGENT, [started(1, clock())], outbox_depth=1_250)
    assert agent_row(engine).outbox_depth == 1_250
    service.ingest(AGENT, [started(2, clock())])  # an older agent, or a call that did not say
    assert agent_row(engine).outbox_depth == 1_250
    service.ingest(AGENT, [], outbox_depth=0)
    assert agent_row(engine).outbox_depth == 0

    with pytest.raises(InvalidInput, match=r"outbox_depth 18446744073709551615 is out of range"):
        service.ingest(AGENT, [started(3, clock())], outbox_depth=2**64 - 1)
    assert stored_facts(engine) == [(1, "process_started"), (2, "process_started")]
    assert agent_row(engine).outbox_depth == 0


def test_an_unknown_agent_is_not_found(engine: Engine, service: IngestService, clock) -> None:
    with pytest.raises(NotFound, match="no agent 'ag-nobody'"):
        service.ingest("ag-nobody", [started(1, clock())])
    assert stored_facts(engine, "ag-nobody") == []


def test_a_revoked_agent_stores_nothing(engine: Engine, clock) -> None:
    add_agent(engine, "ag-revoked", revoked=True)

    with pytest.raises(Unauthenticated, match="agent 'ag-revoked' was revoked"):
        IngestService(engine, clock).ingest("ag-revoked", [started(1, clock())])
    assert stored_facts(engine, "ag-revoked") == []


def test_limits(engine: Engine, clock) -> None:
    add_agent(engine)
    limits = IngestLimits(max_facts_per_batch=3, max_string_length=20, max_repeated=2)
    service = IngestService(engine, clock, limits)
    snapshot = pb.Fact(sequence=4, observed_at=datetime_to_timestamp(clock()))
    snapshot.process_snapshot.processes.add(pid=1, name="init")
    snapshot.process_snapshot.processes.add(pid=2, name="kthreadd")
    snapshot.process_snapshot.processes.add(pid=3, name="ksoftirqd")
    notice = pb.Fact(sequence=5, observed_at=datetime_to_timestamp(clock()))
    notice.outbox_notice.dropped["process_started_with_a_long_kind"] = 3

    with pytest.raises(InvalidInput, match="batch has 4 facts; at most 3 are accepted"):
        service.ingest(AGENT, [started(s, clock()) for s in range(1, 5)])
    with pytest.raises(InvalidInput, match=r"fact 0 \(sequence 4, process_snapshot\): process_snapshot.processes has 3 elements; at most 2"):
        service.ingest(AGENT, [snapshot])
    with pytest.raises(InvalidInput, match=r"fact 0 \(sequence 5, outbox_notice\): outbox_notice.dropped key is 32 characters"):
        service.ingest(AGENT, [notice])
    assert stored_facts(engine) == []

    assert service.ingest(AGENT, [started(s, clock()) for s in range(1, 4)]).stored == 3


def test_replicas_ingesting_the_same_batch_at_once_store_it_once(engine: Engine, database_url: str, clock) -> None:
    """Two controller replicas (two engines on one database) get the same batch at the same moment."""
    engines = [engine, make_engine(database_url)]
    try:
        add_agent(engines[0])
        batch = [started(s, clock()) for s in range(1, 201)]
        barrier = threading.Barrier(2)
        results: list[IngestResult] = []
        errors: list[BaseException] = []

        def replica(engine: Engine) -> None:
            service = IngestService(engine, clock)
            barrier.wait()
            try:
                results.append(service.ingest(AGENT, batch))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=replica, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        assert errors == []
        assert sorted((r.stored, r.duplicates) for r in results) == [(0, 200), (200, 0)]
        assert {r.acknowledged_sequence for r in results} == {200}
        with engines[0].connect() as conn:
            count = conn.execute(select(func.count()).select_from(Fact).where(Fact.agent_id == AGENT)).scalar_one()
        assert count == 200
    finally:
        engines[1].dispose()


def test_conversion_round_trip(clock) -> None:
    fact = started(42, clock() + dt.timedelta(microseconds=123456))
    fact.observed_at.nanos += 789  # below a microsecond: kept in the payload, dropped from the column

    row = fact_to_row(AGENT, fact, clock())

    assert row["kind"] == fact_kind(fact) == "process_started"
    assert (row["agent_id"], row["sequence"], row["received_at"]) == (AGENT, 42, clock())
    assert row["observed_at"] == clock() + dt.timedelta(microseconds=123456)
    assert row_to_fact(row["payload"]) == fact
    assert timestamp_to_datetime(datetime_to_timestamp(clock())) == clock()
    with pytest.raises(InvalidInput, match="no kind set"):
        fact_kind(pb.Fact(sequence=1))


def test_the_presented_certificate_is_checked_under_the_agents_lock(service: IngestService, engine: Engine,
                                                                    clock) -> None:
    assert service.ingest(AGENT, [started(1, clock())], presented=f"fp-{AGENT}").acknowledged_sequence == 1

    with pytest.raises(Unauthenticated, match=f"the certificate presented is not the one issued to agent '{AGENT}'"):
        service.ingest(AGENT, [started(2, clock())], presented="fp-of-an-older-certificate")
    with pytest.raises(Unauthenticated, match="unknown agent 'ag-nobody': enrol again"):
        service.ingest("ag-nobody", [started(1, clock())], presented="fp-ag-nobody")
    add_agent(engine, "ag-revoked", revoked=True)
    with pytest.raises(Unauthenticated, match="agent 'ag-revoked' is revoked"):
        service.ingest("ag-revoked", [started(1, clock())], presented="fp-ag-revoked")

    assert stored_facts(engine) == [(1, "process_started")] and stored_facts(engine, "ag-revoked") == []


def test_a_batch_overlapping_what_is_held_is_checked_fact_by_fact(service: IngestService, engine: Engine,
                                                                  clock) -> None:
    """A live batch (every sequence above the held one) skips the look at held facts; a resend does not."""
    service.ingest(AGENT, [started(1, clock()), started(2, clock())])

    result = service.ingest(AGENT, [started(2, clock()), started(3, clock())])

    assert (result.acknowledged_sequence, result.stored, result.duplicates) == (3, 1, 1)
    assert agent_row(engine).last_sequence == 3


@pytest.mark.postgres
def test_after_postgresql_drops_the_connections_one_call_fails_and_the_next_succeeds(postgres_url: str,
                                                                                     clock) -> None:
    """No ping before each use: a connection closed by the server fails once, then the pool is renewed."""
    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        add_agent(engine)
        service = IngestService(engine, clock)
        service.ingest(AGENT, [started(1, clock())])
        with make_engine(postgres_url).connect() as admin:  # as a PostgreSQL restart would
            admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        with pytest.raises(OperationalError):
            service.ingest(AGENT, [started(2, clock())])

        assert service.ingest(AGENT, [started(2, clock())]).acknowledged_sequence == 2
        assert stored_facts(engine) == [(1, "process_started"), (2, "process_started")]
    finally:
        engine.dispose()
