"""Property-based fuzzing of the ingest path: random and damaged Reports never crash it or half-store a batch.

Through the real gRPC server (mutual TLS, a really enrolled agent) every answer is OK,
INVALID_ARGUMENT or RESOURCE_EXHAUSTED with a reason, the agent's stored facts change by exactly the
batch's new facts or not at all, and the server keeps answering. The same batches go straight into
:class:`~controller.ingest.IngestService` (with small limits, so every limit is reached) for more
examples per second. Each runs once per database back end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from controller.config import Settings
from controller.errors import InvalidInput
from controller.ingest import IngestLimits, IngestService
from controller.models import Fact
from controller.pki import ServerPKI
from controller.server import RunningServer, build_server
from protos.counterguard.v1 import agent_pb2, facts_pb2
from tests.controller.fuzz.reports import mutated_batches, report_bytes
from tests.controller.test_grpc_server import (  # noqa: F401 - fixtures
    TIMEOUT,
    Enrolled,
    _key_and_csr,
    clock,
    enrol,
    heartbeat,
    mtls,
    new_token,
    report,
    settings as server_settings,
)
from tests.controller.test_ingest import add_agent

ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
REPORT = "/counterguard.v1.AgentService/Report"


def held(engine: Engine, agent_id: str) -> dict[int, bytes]:
    with engine.connect() as conn:
        rows = conn.execute(select(Fact.sequence, Fact.payload).where(Fact.agent_id == agent_id))
        return {int(sequence): bytes(payload) for sequence, payload in rows}


def assert_all_or_nothing(
    before: dict[int, bytes], after: dict[int, bytes], stored: list[facts_pb2.Fact] | None
) -> None:
    """Nothing held changed; the new facts are exactly the batch's unseen ones (``stored``) or none (``None``)."""
    assert {s: after[s] for s in before} == before, "a held fact changed"
    added = {s: p for s, p in after.items() if s not in before}
    expected = {} if stored is None else {
        f.sequence: f.SerializeToString(deterministic=True) for f in stored if f.sequence not in before
    }
    assert added == expected


@pytest.fixture
def server(server_settings: Settings, engine: Engine, pki: ServerPKI, clock) -> Iterator[RunningServer]:
    """The real server; rate limits high enough that the fuzzing is not simply refused as a flood."""
    changed = dataclasses.replace(server_settings, agent_reports_per_second=100_000, agent_report_burst=100_000,
                                  agent_facts_per_second=1_000_000, agent_fact_burst=1_000_000)
    running = build_server(changed, engine, pki, clock)
    running.start()
    yield running
    running.stop(None)


def test_reports_over_real_grpc(server: RunningServer, pki: ServerPKI, engine: Engine, clock) -> None:
    key, csr = _key_and_csr()
    agent = Enrolled(enrol(server, pki, new_token(engine, clock), csr), key)
    seen: set[str] = set()
    with mtls(server, agent) as channel:
        call = channel.unary_unary(REPORT, request_serializer=None,
                                   response_deserializer=agent_pb2.ReportResponse.FromString)
        health = health_pb2_grpc.HealthStub(channel)

        @settings(max_examples=75)
        @given(raw=report_bytes())
        def sent(raw: bytes) -> None:
            before = held(engine, agent.agent_id)
            try:
                answer = call(raw, timeout=TIMEOUT)
                code, stored = grpc.StatusCode.OK, list(agent_pb2.ReportRequest.FromString(raw).facts)
                assert answer.acknowledged_sequence == max(held(engine, agent.agent_id), default=0)
            except grpc.RpcError as error:
                code, stored = error.code(), None
                assert error.details(), f"{code.name} without a reason"
            seen.add(code.name)
            assert code in ANSWERS
            assert_all_or_nothing(before, held(engine, agent.agent_id), stored)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == \
                health_pb2.HealthCheckResponse.SERVING

        sent()
        last = max(held(engine, agent.agent_id), default=0)
        assert report(channel, [heartbeat(last + 1, clock())]).acknowledged_sequence == last + 1
    assert seen == {code.name for code in ANSWERS}, "the examples reach every kind of answer"


SMALL = IngestLimits(max_facts_per_batch=6, max_string_length=4096, max_repeated=40, max_map_entries=100,
                     max_elements_per_batch=60, max_fact_bytes=8192)


def _parsed(raw: bytes) -> list[facts_pb2.Fact] | None:
    try:
        return list(agent_pb2.ReportRequest.FromString(raw).facts)
    except DecodeError:
        return None


def test_batches_straight_into_the_ingest_service(engine: Engine, clock) -> None:
    add_agent(engine, "ag-fuzz")
    service = IngestService(engine, clock, SMALL)
    outcomes: set[str] = set()

    @settings(max_examples=150)
    @given(batch=st.one_of(mutated_batches(), report_bytes().map(_parsed).filter(lambda b: b is not None)))
    def ingested(batch: list[facts_pb2.Fact]) -> None:
        before = held(engine, "ag-fuzz")
        try:
            result = service.ingest("ag-fuzz", batch)
        except InvalidInput as error:
            assert str(error).startswith(("batch has ", "fact ")), str(error)
            outcomes.add("invalid")
            assert_all_or_nothing(before, held(engine, "ag-fuzz"), None)
            return
        outcomes.add("stored" if result.stored else "nothing new")
        assert_all_or_nothing(before, held(engine, "ag-fuzz"), batch)
        assert result.acknowledged_sequence == max(held(engine, "ag-fuzz"), default=0)

    ingested()
    assert outcomes == {"invalid", "stored", "nothing new"}
