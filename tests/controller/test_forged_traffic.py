"""Replayed, reordered and forged traffic over real gRPC with real certificates, once per database back end.

Another agent's sequence numbers, facts replayed after their acknowledgement, batches out of order,
a revoked certificate, a certificate from another CA, one enrolment token raced from several
threads, and one agent flooding the controller while another keeps reporting.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from controller.agents import AgentDirectory
from controller.config import Settings
from controller.db import session_scope
from controller.limits import RETRY_AFTER_KEY
from controller.models import Agent, Fact
from controller.pki import ServerPKI, cert_pem, create_ca, sign_csr
from controller.server import RunningServer, build_server
from controller.tokens import TokenService
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc, facts_pb2
from tests.controller.test_grpc_server import (  # noqa: F401 - fixtures
    TIMEOUT,
    Enrolled,
    _key_and_csr,
    agent_channel,
    clock,
    enrol,
    enrol_channel,
    enrolled,
    fact,
    heartbeat,
    mtls,
    new_token,
    report,
    rpc_error,
    running,
    settings,
    stored_facts,
)


def new_agent(running: RunningServer, pki: ServerPKI, engine: Engine, clock) -> Enrolled:  # type: ignore[no-untyped-def]
    key, csr = _key_and_csr()
    return Enrolled(enrol(running, pki, new_token(engine, clock), csr), key)


def held(engine: Engine, agent_id: str) -> dict[int, bytes]:
    """The agent's stored facts: sequence -> payload."""
    with engine.connect() as conn:
        rows = conn.execute(select(Fact.sequence, Fact.payload).where(Fact.agent_id == agent_id))
        return {int(sequence): bytes(payload) for sequence, payload in rows}


def started(sequence: int, when, name: str) -> facts_pb2.Fact:  # type: ignore[no-untyped-def]
    return fact(sequence, when, process_started=facts_pb2.ProcessStarted(
        process=facts_pb2.ProcessInfo(pid=1000 + sequence, name=name)))


def report_call(channel: grpc.Channel, facts: list[facts_pb2.Fact]) -> grpc.RpcError:
    return rpc_error(agent_pb2_grpc.AgentServiceStub(channel).Report, agent_pb2.ReportRequest(facts=facts))


# ----------------------------------------------------------------------------- sequence numbers


def test_each_agent_numbers_its_own_facts(running: RunningServer, pki: ServerPKI, engine: Engine, clock) -> None:
    first, second = new_agent(running, pki, engine, clock), new_agent(running, pki, engine, clock)
    with mtls(running, first) as channel:
        assert report(channel, [started(n, clock(), "first.exe") for n in (1, 2, 3)]).acknowledged_sequence == 3
    with mtls(running, second) as channel:  # the numbers the first agent used: separate, not duplicates
        answer = report(channel, [started(n, clock(), "second.exe") for n in (2, 3)])
    assert (answer.acknowledged_sequence, list(answer.conflicting_sequences)) == (3, [])

    first_held, second_held = held(engine, first.agent_id), held(engine, second.agent_id)
    assert sorted(first_held) == [1, 2, 3] and sorted(second_held) == [2, 3]
    assert all(b"first.exe" in payload for payload in first_held.values())
    assert all(b"second.exe" in payload for payload in second_held.values())
    directory = AgentDirectory(engine, clock)
    assert (directory.get(first.agent_id).last_sequence, directory.get(second.agent_id).last_sequence) == (3, 3)


def test_a_message_cannot_report_for_another_agent(
    running: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    """The identity is the certificate's, whatever the message says."""
    victim, sender = new_agent(running, pki, engine, clock), new_agent(running, pki, engine, clock)
    with mtls(running, sender) as channel:
        request = agent_pb2.ReportRequest(facts=[heartbeat(1, clock())], agent_version=victim.agent_id)
        agent_pb2_grpc.AgentServiceStub(channel).Report(request, timeout=TIMEOUT)
    assert held(engine, victim.agent_id) == {} and list(held(engine, sender.agent_id)) == [1]


def test_facts_replayed_after_their_acknowledgement_are_stored_once(
    running: RunningServer, enrolled: Enrolled, engine: Engine, clock
) -> None:
    batch = [started(n, clock(), "bash") for n in range(1, 6)]
    with mtls(running, enrolled) as channel:
        first = report(channel, batch)
        replays = [report(channel, batch) for _ in range(3)]
        overlap = report(channel, batch[3:] + [started(6, clock(), "bash")])
    assert first.acknowledged_sequence == 5
    assert {r.acknowledged_sequence for r in replays} == {5} and not any(r.conflicting_sequences for r in replays)
    assert overlap.acknowledged_sequence == 6
    assert sorted(held(engine, enrolled.agent_id)) == [1, 2, 3, 4, 5, 6]


def test_a_replay_with_other_content_under_held_numbers_is_not_stored(
    running: RunningServer, enrolled: Enrolled, engine: Engine, clock
) -> None:
    with mtls(running, enrolled) as channel:
        report(channel, [started(n, clock(), "bash") for n in (1, 2)])
        before = held(engine, enrolled.agent_id)
        answer = report(channel, [started(n, clock(), "forged.exe") for n in (1, 2)])
    assert list(answer.conflicting_sequences) == [1, 2], "reported back for the agent to renumber"
    assert held(engine, enrolled.agent_id) == before


def test_batches_out_of_order(running: RunningServer, enrolled: Enrolled, engine: Engine, clock) -> None:
    with mtls(running, enrolled) as channel:
        backwards = report_call(channel, [heartbeat(n, clock()) for n in (3, 2, 1)])
        repeated = report_call(channel, [heartbeat(n, clock()) for n in (1, 1)])
        assert stored_facts(engine) == 0
        later = report(channel, [heartbeat(n, clock()) for n in (7, 8)])
        earlier = report(channel, [heartbeat(n, clock()) for n in (4, 5)])  # late, but never seen: stored
    assert backwards.code() == repeated.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fact 1 (sequence 2, power): sequence does not follow the previous fact's 3" in backwards.details()
    assert "fact 1 (sequence 1, power): sequence does not follow the previous fact's 1" in repeated.details()
    assert (later.acknowledged_sequence, earlier.acknowledged_sequence) == (8, 8)
    assert sorted(held(engine, enrolled.agent_id)) == [4, 5, 7, 8]


# ----------------------------------------------------------------------------- certificates


def test_a_revoked_certificate_is_refused_at_once_on_open_and_new_connections(
    running: RunningServer, enrolled: Enrolled, engine: Engine, clock
) -> None:
    with mtls(running, enrolled) as channel:
        report(channel, [heartbeat(1, clock())])
        AgentDirectory(engine, clock).revoke(enrolled.agent_id, "PC stolen")
        on_open = report_call(channel, [heartbeat(2, clock())])
        policy = rpc_error(agent_pb2_grpc.AgentServiceStub(channel).FetchPolicy, agent_pb2.FetchPolicyRequest())
    with mtls(running, enrolled) as channel:
        on_new = report_call(channel, [heartbeat(3, clock())])
    expected = (grpc.StatusCode.UNAUTHENTICATED, f"agent '{enrolled.agent_id}' is revoked: PC stolen")
    for error in (on_open, policy, on_new):
        assert (error.code(), error.details()) == expected
    assert list(held(engine, enrolled.agent_id)) == [1]


def test_certificates_not_signed_by_our_ca_fail_the_handshake(
    running: RunningServer, enrolled: Enrolled, engine: Engine, clock
) -> None:
    other_key, other_ca = create_ca(clock(), common_name="CounterGuard CA")  # even the same name
    key, csr = _key_and_csr()
    forged = cert_pem(sign_csr(other_key, other_ca, csr, enrolled.agent_id, clock(), 30))
    for chain in (forged, forged + cert_pem(other_ca)):
        with agent_channel(running.port, enrolled.response.ca_certificate_pem, key, chain) as channel:
            error = report_call(channel, [heartbeat(1, clock())])
        assert error.code() == grpc.StatusCode.UNAVAILABLE  # no TLS session, so no call at all
    assert stored_facts(engine) == 0
    with mtls(running, enrolled) as channel:  # the real agent is unaffected
        assert report(channel, [heartbeat(1, clock())]).acknowledged_sequence == 1


# ----------------------------------------------------------------------------- enrolment tokens


def race_enrolments(running: RunningServer, pki: ServerPKI, token: str, clients: int) -> list[object]:
    """``clients`` threads call Enroll with ``token`` at the same moment, each on its own connection."""
    channels = [enrol_channel(running, pki) for _ in range(clients)]
    for channel in channels:  # TLS handshakes first, so the calls themselves race
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    barrier = threading.Barrier(clients)
    results: list[object] = [None] * clients

    def call(index: int) -> None:
        request = agent_pb2.EnrollRequest(token=token, csr_pem=_key_and_csr()[1], hostname=f"pc-{index}")
        stub = agent_pb2_grpc.AgentServiceStub(channels[index])
        barrier.wait()
        try:
            results[index] = stub.Enroll(request, timeout=TIMEOUT)
        except grpc.RpcError as exc:
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for channel in channels:
        channel.close()
    return results


def agents_count(engine: Engine) -> int:
    with session_scope(engine) as session:
        return len(session.scalars(select(Agent.id)).all())


@pytest.mark.parametrize("max_uses, clients", [(1, 2), (2, 5)])
def test_one_token_used_at_the_same_moment_enrols_only_as_often_as_allowed(
    running: RunningServer, pki: ServerPKI, engine: Engine, clock, max_uses: int, clients: int
) -> None:
    enrolled_total = 0
    for _ in range(3):  # three races, each with a fresh token
        token = TokenService(engine, clock).create("W05", expires_in=dt.timedelta(hours=1), max_uses=max_uses).token
        results = race_enrolments(running, pki, token, clients)
        successes = [r for r in results if isinstance(r, agent_pb2.EnrollResponse)]
        refusals = [r for r in results if isinstance(r, grpc.RpcError)]
        assert len(successes) == max_uses and len(refusals) == clients - max_uses, results
        assert all(r.code() == grpc.StatusCode.PERMISSION_DENIED and r.details().endswith("is used up")
                   for r in refusals)
        assert len({s.agent_id for s in successes}) == max_uses
        enrolled_total += max_uses
        assert agents_count(engine) == enrolled_total
    used = {t.token_id: t for t in TokenService(engine, clock).list(include_expired=True)}
    assert {(t.uses, t.status) for t in used.values()} == {(max_uses, "used up")}


# ----------------------------------------------------------------------------- a flood from one agent


@pytest.fixture
def guarded(settings: Settings, engine: Engine, pki: ServerPKI, clock) -> Iterator[RunningServer]:
    """A controller allowing each agent 10 reports per second (burst 10)."""
    server = build_server(dataclasses.replace(settings, agent_reports_per_second=10, agent_report_burst=10,
                                              max_workers=8), engine, pki, clock)
    server.start()
    yield server
    server.stop(None)


def test_a_flooding_agent_is_refused_while_another_keeps_reporting(
    guarded: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    flooder, neighbour = new_agent(guarded, pki, engine, clock), new_agent(guarded, pki, engine, clock)
    stop = threading.Event()
    outcomes: list[grpc.StatusCode] = []
    hints: list[str] = []
    lock = threading.Lock()

    def flood(thread: int) -> None:
        with mtls(guarded, flooder) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            sequence = thread * 1_000_000
            while not stop.is_set():
                sequence += 1
                try:
                    stub.Report(agent_pb2.ReportRequest(facts=[heartbeat(sequence, clock())]), timeout=TIMEOUT)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                    with lock:
                        hints.extend(v for k, v in exc.trailing_metadata() or () if k == RETRY_AFTER_KEY)
                with lock:
                    outcomes.append(code)

    flooders = [threading.Thread(target=flood, args=(n,)) for n in range(4)]
    for thread in flooders:
        thread.start()
    neighbour_answers = []
    try:
        with mtls(guarded, neighbour) as channel:
            for sequence in range(1, 16):  # 5 reports per second, half its limit
                neighbour_answers.append(report(channel, [heartbeat(sequence, clock())]).acknowledged_sequence)
                time.sleep(0.2)
    finally:
        stop.set()
        for thread in flooders:
            thread.join(timeout=60)

    assert neighbour_answers == list(range(1, 16)), "every report of the neighbour was answered OK"
    assert sorted(held(engine, neighbour.agent_id)) == list(range(1, 16))
    refused = outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    accepted = outcomes.count(grpc.StatusCode.OK)
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert refused > accepted > 0, (refused, accepted)
    assert len(hints) == refused and all(0 < int(h) <= 100 for h in hints)
    assert len(held(engine, flooder.agent_id)) == accepted
