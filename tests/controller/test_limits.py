"""Limits: per-agent rate limits on Report over real gRPC, and the size limits checked before anything is stored.

The rate-limit tests run :func:`controller.server.build_server` on loopback with real certificates
(the fixtures of ``test_grpc_server``), once per database back end; the agent's own transport is
driven against it to show that a rate-limited agent waits and loses nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from agent.config import AgentConfig
from agent.enroll import enroll as agent_enroll
from agent.errors import EnrollError
from agent.outbox import Outbox
from agent.transport import Transport
from controller.config import Settings
from controller.convert import datetime_to_timestamp
from controller.db import session_scope
from controller.errors import InvalidInput
from controller.ingest import IngestLimits, IngestService, validate_batch
from controller.limits import NOT_A_REPORT, RETRY_AFTER_KEY, RateLimits, TokenBuckets, peer_address
from controller.models import Agent
from controller.pki import ServerPKI
from controller.server import RunningServer, build_server
from controller.tokens import TokenService
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc, facts_pb2
from tests.controller.test_grpc_server import (  # noqa: F401 - fixtures
    TIMEOUT,
    Enrolled,
    _key_and_csr,
    clock,
    enrol,
    enrol_channel,
    heartbeat,
    mtls,
    new_token,
    report,
    rpc_error,
    settings,
    stored_facts,
)
from tests.controller.test_ingest import add_agent

REPORT = "/counterguard.v1.AgentService/Report"


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------- token buckets


def test_a_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    monotonic = FakeMonotonic()
    buckets = TokenBuckets(rate=2, burst=3, monotonic=monotonic)
    assert [buckets.take("ag-a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("ag-a") == pytest.approx(0.5)  # one token at 2 per second
    monotonic.now += 0.5
    assert buckets.take("ag-a") == 0.0
    monotonic.now += 60
    assert [buckets.take("ag-a") for _ in range(4)][-1] == pytest.approx(0.5), "refills only up to the burst"


def test_a_refused_take_costs_nothing_and_keys_do_not_share_a_bucket() -> None:
    monotonic = FakeMonotonic()
    buckets = TokenBuckets(rate=10, burst=10, monotonic=monotonic)
    assert buckets.take("ag-a", 8) == 0.0
    assert buckets.take("ag-a", 5) == pytest.approx(0.3)
    assert buckets.take("ag-a", 2) == 0.0, "the refused take of 5 took nothing"
    assert buckets.take("ag-b", 10) == 0.0


def test_a_cost_above_the_burst_waits_for_a_full_bucket() -> None:
    monotonic = FakeMonotonic()
    buckets = TokenBuckets(rate=100, burst=50, monotonic=monotonic)
    assert buckets.take("ag-a", 500) == 0.0
    assert buckets.take("ag-a", 500) == pytest.approx(0.5)


def test_full_buckets_are_forgotten_when_there_are_too_many() -> None:
    monotonic = FakeMonotonic()
    buckets = TokenBuckets(rate=1, burst=1, monotonic=monotonic, max_keys=3)
    for key in ("a", "b", "c"):
        buckets.take(key)
    monotonic.now += 5  # all three are full again
    buckets.take("d")
    assert len(buckets) == 1
    assert buckets.take("a") == 0.0


def test_a_bucket_needs_a_positive_rate_and_burst() -> None:
    with pytest.raises(ValueError, match="rate above 0 and a burst of at least 1"):
        TokenBuckets(rate=0, burst=5)


def test_the_limits_come_from_the_settings() -> None:
    settings = Settings(agent_reports_per_second=0.5, agent_report_burst=4, agent_facts_per_second=50,
                        agent_fact_burst=60, agent_policy_fetches_per_minute=6, agent_policy_fetch_burst=2,
                        enroll_failures_per_minute=3, enroll_failure_burst=5)
    assert RateLimits.from_settings(settings) == RateLimits(0.5, 4, 50, 60, 6, 2, 3, 5)
    assert RateLimits.from_settings(Settings(agent_reports_per_second=0, agent_report_burst=0)).reports_per_second == 0
    with pytest.raises(InvalidInput, match="^setting agent_fact_burst must be at least 1 while "
                                           "agent_facts_per_second is above 0, not 0$"):
        RateLimits.from_settings(Settings(agent_fact_burst=0))
    with pytest.raises(InvalidInput, match="^setting enroll_failure_burst must be at least 1 while "
                                           "enroll_failures_per_minute is above 0, not 0$"):
        RateLimits.from_settings(Settings(enroll_failure_burst=0))


def test_a_bucket_says_how_long_until_it_holds_enough_without_taking() -> None:
    monotonic = FakeMonotonic()
    buckets = TokenBuckets(rate=1, burst=2, monotonic=monotonic)
    assert buckets.wait("10.0.0.7") == 0.0 and len(buckets) == 0
    assert buckets.take("10.0.0.7", 2) == 0.0
    assert buckets.wait("10.0.0.7") == pytest.approx(1.0) and buckets.wait("10.0.0.7") == pytest.approx(1.0)
    monotonic.now += 1
    assert buckets.wait("10.0.0.7") == 0.0 and buckets.take("10.0.0.7") == 0.0


@pytest.mark.parametrize("peer, address", [
    ("ipv4:10.20.3.4:51234", "10.20.3.4"),
    ("ipv6:[::1]:51234", "::1"),
    ("ipv6:%5Bfe80::1%5D:443", "fe80::1"),
    ("unix:/run/counterguard.sock", "/run/counterguard.sock"),
])
def test_the_address_of_a_peer(peer: str, address: str) -> None:
    assert peer_address(peer) == address


# ----------------------------------------------------------------------------- over real gRPC


def limited_server(
    settings: Settings, engine: Engine, pki: ServerPKI, clock, **limits: int  # type: ignore[no-untyped-def]
) -> RunningServer:
    server = build_server(dataclasses.replace(settings, **limits), engine, pki, clock)
    server.start()
    return server


@pytest.fixture
def limited(settings: Settings, engine: Engine, pki: ServerPKI, clock) -> Iterator[RunningServer]:
    """A controller allowing each agent a report every 2 s (burst 2) and 2 facts per second (burst 20)."""
    server = limited_server(settings, engine, pki, clock, agent_reports_per_second=0.5, agent_report_burst=2,
                            agent_facts_per_second=2, agent_fact_burst=20)
    yield server
    server.stop(None)


def enrolled_agent(server: RunningServer, pki: ServerPKI, engine: Engine, clock) -> Enrolled:  # type: ignore[no-untyped-def]
    key, csr = _key_and_csr()
    return Enrolled(enrol(server, pki, new_token(engine, clock), csr), key)


def refused(channel: grpc.Channel, request: agent_pb2.ReportRequest | bytes) -> grpc.RpcError:
    call = channel.unary_unary(REPORT, request_serializer=None if isinstance(request, bytes) else
                               agent_pb2.ReportRequest.SerializeToString)
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT)
    return caught.value  # type: ignore[return-value]


def retry_after_ms(error: grpc.RpcError) -> int:
    values = [value for key, value in error.trailing_metadata() or () if key == RETRY_AFTER_KEY]
    assert len(values) == 1, error.trailing_metadata()
    return int(values[0])


def test_reports_over_the_limit_are_refused_with_a_retry_hint_and_store_nothing(
    limited: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    agent = enrolled_agent(limited, pki, engine, clock)
    with mtls(limited, agent) as channel:
        assert report(channel, [heartbeat(1, clock())]).acknowledged_sequence == 1
        assert report(channel, [heartbeat(2, clock())]).acknowledged_sequence == 2
        error = refused(channel, agent_pb2.ReportRequest(facts=[heartbeat(3, clock())]))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details().startswith(
            f"agent {agent.agent_id} is over its limit of 0.5 reports per second (burst 2); retry in ")
        wait = retry_after_ms(error)
        assert 0 < wait <= 2000 and error.details().endswith(f"retry in {wait} ms")
        assert stored_facts(engine) == 2
        time.sleep(wait / 1000)
        assert report(channel, [heartbeat(3, clock())]).acknowledged_sequence == 3
    assert stored_facts(engine) == 3


def test_facts_over_the_limit_are_refused_and_each_agent_has_its_own_buckets(
    limited: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    first, second = (enrolled_agent(limited, pki, engine, clock) for _ in range(2))
    with mtls(limited, first) as channel:
        assert report(channel, [heartbeat(n, clock()) for n in range(1, 16)]).acknowledged_sequence == 15
        error = refused(channel, agent_pb2.ReportRequest(facts=[heartbeat(n, clock()) for n in range(16, 26)]))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"agent {first.agent_id} is over its limit of 2 facts per second (burst 20)" in error.details()
    assert 0 < retry_after_ms(error) <= 2500  # 5 facts short at 2 per second, less what refilled meanwhile
    with mtls(limited, second) as channel:  # the other agent's buckets are full
        assert report(channel, [heartbeat(n, clock()) for n in range(1, 21)]).acknowledged_sequence == 20
    assert stored_facts(engine) == 35


def test_the_call_limit_is_checked_before_the_request_is_parsed(
    limited: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    agent = enrolled_agent(limited, pki, engine, clock)
    with mtls(limited, agent) as channel:
        garbage = refused(channel, b"\xff\xff\xff\xff")
        assert (garbage.code(), garbage.details()) == (grpc.StatusCode.INVALID_ARGUMENT, NOT_A_REPORT)
        assert report(channel, [heartbeat(1, clock())]).acknowledged_sequence == 1
        limited_garbage = refused(channel, b"\xff\xff\xff\xff")
    assert limited_garbage.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, "refused unparsed"
    assert stored_facts(engine) == 1


def test_bytes_that_are_no_request_are_invalid_argument_for_every_method(
    limited: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    agent = enrolled_agent(limited, pki, engine, clock)
    garbage = b"\x0a\xff\xff\xff\x0f"  # a length far beyond the end
    with enrol_channel(limited, pki) as channel:
        enrolling = rpc_error(channel.unary_unary("/counterguard.v1.AgentService/Enroll"), garbage)
    with mtls(limited, agent) as channel:
        fetching = rpc_error(channel.unary_unary("/counterguard.v1.AgentService/FetchPolicy"), garbage)
    assert (enrolling.code(), enrolling.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid EnrollRequest message (protobuf wire format)")
    assert (fetching.code(), fetching.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid FetchPolicyRequest message (protobuf wire format)")


def test_a_rate_of_zero_turns_the_limits_off(settings: Settings, engine: Engine, pki: ServerPKI, clock) -> None:
    server = limited_server(settings, engine, pki, clock, agent_reports_per_second=0, agent_facts_per_second=0)
    try:
        agent = enrolled_agent(server, pki, engine, clock)
        with mtls(server, agent) as channel:
            for n in range(1, 41):
                report(channel, [heartbeat(n, clock())])
    finally:
        server.stop(None)
    assert stored_facts(engine) == 40


def test_policy_fetches_over_the_limit_are_refused_per_agent_with_a_retry_hint(
    settings: Settings, engine: Engine, pki: ServerPKI, clock
) -> None:
    server = limited_server(settings, engine, pki, clock, agent_policy_fetches_per_minute=60,
                            agent_policy_fetch_burst=2)
    try:
        first, second = (enrolled_agent(server, pki, engine, clock) for _ in range(2))
        with mtls(server, first) as channel:
            fetch = agent_pb2_grpc.AgentServiceStub(channel).FetchPolicy
            assert [fetch(agent_pb2.FetchPolicyRequest(), timeout=TIMEOUT).changed for _ in range(2)] == [True, True]
            error = rpc_error(fetch, agent_pb2.FetchPolicyRequest())
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            wait = retry_after_ms(error)
            assert 0 < wait <= 1000
            assert error.details() == (f"agent {first.agent_id} is over its limit of 60 policy fetches per minute "
                                       f"(burst 2); retry in {wait} ms")
            with mtls(server, second) as other:  # another agent has its own bucket
                assert agent_pb2_grpc.AgentServiceStub(other).FetchPolicy(
                    agent_pb2.FetchPolicyRequest(), timeout=TIMEOUT).version
            assert report(channel, [heartbeat(1, clock())]).acknowledged_sequence == 1  # reports are not held up
            time.sleep(wait / 1000)
            assert fetch(agent_pb2.FetchPolicyRequest(), timeout=TIMEOUT).version
    finally:
        server.stop(None)


def test_enrolment_failures_from_an_address_are_limited_and_successes_are_not(
    settings: Settings, engine: Engine, pki: ServerPKI, clock, tmp_path: Path
) -> None:
    """Guessing tokens from one address stops after the burst, before the token is even looked at; a hall
    enrolling all its PCs from one address is never held up."""
    server = limited_server(settings, engine, pki, clock, enroll_failures_per_minute=30, enroll_failure_burst=2)
    try:
        for _ in range(4):  # more successes than the burst
            enrol(server, pki, new_token(engine, clock))
        guesses = [rpc_error(lambda **kw: enrol(server, pki, "0123456789ab.secret")) for _ in range(2)]
        assert [e.code() for e in guesses] == [grpc.StatusCode.PERMISSION_DENIED] * 2

        good = new_token(engine, clock)
        limited = rpc_error(lambda **kw: enrol(server, pki, good))
        assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        wait = retry_after_ms(limited)
        assert 0 < wait <= 2000
        assert limited.details() == (f"address 127.0.0.1 is over its limit of 30 failed enrolments per minute "
                                     f"(burst 2); retry in {wait} ms")
        token_id = good.partition(".")[0]
        assert [t.uses for t in TokenService(engine, clock).list() if t.token_id == token_id] == [0]  # untouched

        ca = tmp_path / "ca.pem"
        ca.write_bytes(pki.ca_cert_pem)
        with pytest.raises(EnrollError, match=r"^the controller refuses enrolments from here for now: address "
                                              r"127\.0\.0\.1 is over its limit .*; retry in \d+ ms$"):
            agent_enroll(f"127.0.0.1:{server.enroll_port}", good, ca, tmp_path / "agent")  # what the installer says

        time.sleep(wait / 1000)
        assert enrol(server, pki, good).agent_id  # the same token, once the address may try again
    finally:
        server.stop(None)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Agent)) == 5


def test_enrolment_failures_that_are_the_controllers_cost_the_address_nothing(
    settings: Settings, engine: Engine, pki: ServerPKI, clock
) -> None:
    """A database the controller cannot use (here: the token table gone) fails enrolments with UNAVAILABLE
    or INTERNAL; the hall's installers must not be locked out for it once the database is back."""
    server = limited_server(settings, engine, pki, clock, enroll_failures_per_minute=1, enroll_failure_burst=2)
    good = new_token(engine, clock)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE enrollment_token RENAME TO enrollment_token_away"))
        failures = [rpc_error(lambda **kw: enrol(server, pki, good)) for _ in range(4)]  # twice the burst
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE enrollment_token_away RENAME TO enrollment_token"))

        assert {(e.code(), e.details()) for e in failures} <= {
            (grpc.StatusCode.UNAVAILABLE, "the controller's database is unavailable; try again later"),  # SQLite
            (grpc.StatusCode.INTERNAL, "the controller could not handle this Enroll; its log says why"),  # PostgreSQL
        }, failures
        assert enrol(server, pki, good).agent_id  # not RESOURCE_EXHAUSTED: those failures were not counted
    finally:
        server.stop(None)


def test_a_rate_limited_agent_waits_as_told_and_loses_nothing(
    settings: Settings, engine: Engine, pki: ServerPKI, clock, tmp_path: Path
) -> None:
    server = limited_server(settings, engine, pki, clock, agent_reports_per_second=2, agent_report_burst=1,
                            agent_facts_per_second=1000, agent_fact_burst=1000)
    try:
        ca = tmp_path / "ca.pem"
        ca.write_bytes(pki.ca_cert_pem)
        config = AgentConfig(state_dir=tmp_path / "agent", batch_max_facts=4, backoff_initial_seconds=1,
                             backoff_max_seconds=60, rpc_timeout_seconds=TIMEOUT)
        agent_enroll(f"127.0.0.1:{server.enroll_port}", new_token(engine, clock), ca, config.state_dir,
                     hostname="counter-07")
        outbox = Outbox(config.outbox_path)
        outbox.put_many([facts_pb2.PowerEvent(kind=facts_pb2.PowerEvent.KIND_HEARTBEAT)] * 40)
        transport = Transport(config, outbox)
        throttled = []
        deadline = time.monotonic() + 60
        while outbox.depth() and time.monotonic() < deadline:
            transport.send_pending()
            if transport.retry_after():
                throttled.append((transport.last_error, transport.retry_after()))
                time.sleep(transport.retry_after())
        transport.close()
        stats = outbox.stats()
        outbox.close()
    finally:
        server.stop(None)
    assert stats.depth == 0 and stats.set_aside == 0 and not stats.dropped
    assert stored_facts(engine) == 40
    assert throttled, "10 batches sent back to back at 2 per second with a burst of 1 meet the limit"
    assert all("RESOURCE_EXHAUSTED" in error and 0 < wait <= 0.5 for error, wait in throttled), throttled
    assert transport.failures == 0, "waiting as told is not a failure: no exponential backoff"


# ----------------------------------------------------------------------------- size limits, before storing


def with_observed(fact: facts_pb2.Fact, clock) -> facts_pb2.Fact:  # type: ignore[no-untyped-def]
    fact.observed_at.CopyFrom(datetime_to_timestamp(clock()))
    return fact


def test_a_fact_larger_than_the_limit_is_refused_even_in_fields_the_controller_does_not_know(clock) -> None:
    known = with_observed(facts_pb2.Fact(sequence=1, power=facts_pb2.PowerEvent(kind=1)), clock)
    unknown_field = b"\xfa\x3e" + bytes([0x80, 0x08]) + b"u" * 1024  # field 1007, 1024 bytes
    stuffed = facts_pb2.Fact.FromString(known.SerializeToString() + unknown_field)
    limits = IngestLimits(max_fact_bytes=1000)
    validate_batch([known], limits)
    with pytest.raises(InvalidInput, match=r"^fact 0 \(sequence 1, power\): the fact is 10\d\d bytes serialized; "
                                           r"at most 1000 are accepted$"):
        validate_batch([stuffed], limits)


def test_a_map_with_too_many_entries_is_refused(clock) -> None:
    notice = with_observed(facts_pb2.Fact(sequence=1), clock)
    for n in range(5):
        notice.outbox_notice.dropped[f"kind{n}"] = n
    validate_batch([notice], IngestLimits(max_map_entries=5))
    with pytest.raises(InvalidInput, match=r"outbox_notice.dropped has 5 entries; at most 4 are accepted$"):
        validate_batch([notice], IngestLimits(max_map_entries=4))


def test_the_elements_of_the_whole_batch_are_bounded_together(clock) -> None:
    def snapshot(sequence: int) -> facts_pb2.Fact:
        fact = with_observed(facts_pb2.Fact(sequence=sequence), clock)
        for pid in range(1, 31):
            fact.process_snapshot.processes.add(pid=pid, name="svchost.exe")
        return fact

    limits = IngestLimits(max_repeated=100, max_elements_per_batch=100)
    validate_batch([snapshot(1), snapshot(2), snapshot(3)], limits)  # 90 elements
    with pytest.raises(InvalidInput, match=r"^fact 3 \(sequence 4, process_snapshot\): process_snapshot.processes "
                                           r"takes the batch over 100 list and map elements in all$"):
        validate_batch([snapshot(n) for n in range(1, 5)], limits)


def test_ingest_refuses_an_oversized_batch_before_storing_any_of_it(engine: Engine, clock) -> None:
    add_agent(engine, "ag-0123456789")
    service = IngestService(engine, clock, IngestLimits(max_fact_bytes=200))
    small = [heartbeat(n, clock()) for n in range(1, 4)]
    big = with_observed(facts_pb2.Fact(sequence=4), clock)
    big.inventory.hostname = "h" * 300
    with pytest.raises(InvalidInput, match="fact 3 .* bytes serialized"):
        service.ingest("ag-0123456789", [*small, big])
    assert stored_facts(engine) == 0
    assert service.ingest("ag-0123456789", small).stored == 3


def test_nesting_deeper_than_protobuf_allows_is_invalid_argument(
    limited: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    agent = enrolled_agent(limited, pki, engine, clock)
    start, end = b"\xa3\x06", b"\xa4\x06"  # an unknown group, field 100, opened 200 times inside one fact
    fact = heartbeat(1, clock()).SerializeToString() + start * 200 + end * 200
    request = b"\x0a" + _varint(len(fact)) + fact
    with mtls(limited, agent) as channel:
        error = refused(channel, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, NOT_A_REPORT)
    assert stored_facts(engine) == 0


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)
