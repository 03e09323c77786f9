"""The transport against a real gRPC server on 127.0.0.1 with real certificates (mutual TLS)."""

from __future__ import annotations

import dataclasses
import logging
import time

import grpc
import pytest

from agent.config import AgentConfig
from agent.enroll import Enrollment
from agent.errors import NotEnrolledError, PolicyError
from agent.outbox import Outbox
from agent.transport import LAST_REPORT_AT, Action, Transport, backoff_delay, decide
from controller.pki import ServerPKI, create_ca
from protos.counterguard.v1 import agent_pb2, facts_pb2

Code = grpc.StatusCode


def started(pid: int, name: str = "bash") -> facts_pb2.ProcessStarted:
    return facts_pb2.ProcessStarted(process=facts_pb2.ProcessInfo(pid=pid, name=name))


def make_transport(config: AgentConfig, outbox: Outbox, clock, monotonic=time.monotonic,
                   **kwargs) -> Transport:
    """A transport whose jitter always picks the ceiling, so delays are predictable."""
    return Transport(config, outbox, clock, monotonic=monotonic, rand=lambda: 1.0, **kwargs)


# ------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(
    ("code", "size", "action"),
    [
        (Code.UNAVAILABLE, 10, Action.RETRY_LATER),
        (Code.DEADLINE_EXCEEDED, 10, Action.RETRY_LATER),
        (Code.INTERNAL, 10, Action.RETRY_LATER),
        (Code.INVALID_ARGUMENT, 10, Action.SPLIT),
        (Code.INVALID_ARGUMENT, 1, Action.SET_ASIDE),
        (Code.RESOURCE_EXHAUSTED, 2, Action.SPLIT),
        (Code.RESOURCE_EXHAUSTED, 1, Action.SET_ASIDE),
        (Code.UNAUTHENTICATED, 5, Action.REENROL),
        (Code.PERMISSION_DENIED, 5, Action.REENROL),
    ],
)
def test_decide(code: grpc.StatusCode, size: int, action: Action) -> None:
    assert decide(code, size) is action


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    ceilings = [backoff_delay(n, 1.0, 300.0, rand=lambda: 1.0) for n in range(0, 12)]
    assert ceilings == [0.0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff_delay(5, 1.0, 300.0, rand=lambda: 0.0) == 0.0
    assert backoff_delay(5, 1.0, 300.0, rand=lambda: 0.5) == 8.0
    assert backoff_delay(10_000, 2.0, 60.0, rand=lambda: 1.0) == 60.0  # no overflow after many failures


# ------------------------------------------------------------ against a server


def test_acknowledged_facts_are_deleted_and_identity_comes_from_the_certificate(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock
) -> None:
    outbox.put_many([started(i) for i in range(1, 8)])
    transport = make_transport(dataclasses.replace(agent_config, batch_max_facts=3), outbox, clock)
    assert transport.send_pending() == 7
    assert outbox.depth() == 0
    fake = controller.servicer
    assert sorted(fake.held) == list(range(1, 8))
    assert [len(request.facts) for _, request in fake.reports] == [3, 3, 1]
    assert [request.outbox_depth for _, request in fake.reports] == [4, 1, 0], "what waits behind each batch"
    assert {cn for cn, _ in fake.reports} == {fake.agent_id} and fake.agent_id
    assert outbox.get_meta(LAST_REPORT_AT) == clock().isoformat()
    transport.close()


def test_unavailable_keeps_the_facts_and_the_backoff_grows(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock, monotonic
) -> None:
    outbox.put_many([started(i) for i in range(1, 4)])
    transport = make_transport(agent_config, outbox, clock, monotonic)
    fake = controller.servicer
    fake.script = [(Code.UNAVAILABLE, "shutting down")] * 3
    delays = []
    for expected_calls in (1, 2, 3):
        assert transport.send_pending() == 0
        assert len(fake.reports) == expected_calls and outbox.depth() == 3
        delays.append(transport.retry_after())
        assert transport.send_pending() == 0  # still backing off: no call at all
        assert len(fake.reports) == expected_calls
        monotonic.advance(delays[-1])
    assert delays == [1.0, 2.0, 4.0]
    assert transport.failures == 3 and "UNAVAILABLE: shutting down" in transport.last_error
    assert transport.send_pending() == 3
    assert outbox.depth() == 0 and transport.failures == 0 and transport.retry_after() == 0
    transport.close()


def test_invalid_argument_sets_the_bad_fact_aside_and_the_notice_follows(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock
) -> None:
    outbox.put_many([started(i) for i in range(1, 9)])
    outbox.put(started(0, name=""))  # the controller refuses a process without a name: sequence 9
    outbox.put_many([started(i) for i in range(10, 13)])
    fake = controller.servicer
    fake.invalid = lambda fact: "process name is empty" if fact.HasField("process_started") and \
        not fact.process_started.process.name else ""
    transport = make_transport(agent_config, outbox, clock)
    assert transport.send_pending() == 12  # 11 good facts and the notice
    assert outbox.depth() == 0 and transport.failures == 0
    assert sorted(fake.held) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13]
    assert [len(request.facts) for _, request in fake.reports][:2] == [12, 6]  # halved, never retried whole
    assert fake.held[13].outbox_notice == facts_pb2.OutboxNotice(set_aside=1, reason="fact 9: process name is empty")
    assert outbox.stats().set_aside == 1
    transport.close()


def test_a_batch_refused_as_invalid_is_never_retried_whole(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock
) -> None:
    outbox.put_many([started(i) for i in range(1, 3)])
    fake = controller.servicer
    fake.invalid = lambda fact: "agent_version is required" if fact.WhichOneof("kind") != "outbox_notice" else ""
    transport = make_transport(agent_config, outbox, clock)
    transport.send_pending()
    # halved once, each fact alone set aside; the second notice (4) replaced the first (3) before it went out
    assert [[f.sequence for f in request.facts] for _, request in fake.reports] == [[1, 2], [1], [2], [4]]
    assert sorted(fake.held) == [4] and fake.held[4].outbox_notice.set_aside == 2
    assert outbox.depth() == 0
    transport.close()


def test_resource_exhausted_halves_the_batch_and_a_lone_giant_is_set_aside(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock
) -> None:
    fake = controller.servicer
    one = agent_pb2.ReportRequest(facts=[outbox_fact(started(1))]).ByteSize()
    fake.max_request_bytes = 3 * one + 40
    outbox.put_many([started(i) for i in range(1, 9)])
    giant = facts_pb2.ProcessSnapshot(processes=[facts_pb2.ProcessInfo(pid=p, name="x" * 50) for p in range(1, 50)])
    outbox.put(giant)
    outbox.put(started(9))
    transport = make_transport(agent_config, outbox, clock)
    transport.send_pending()
    assert outbox.depth() == 0
    sizes = [len(request.facts) for _, request in fake.reports]
    assert sizes[:3] == [10, 5, 2]  # halved until it fits
    assert all(count == 1 for count in fake.received.values())
    kinds = {fake.held[s].WhichOneof("kind") for s in fake.held}
    assert 9 not in fake.held and kinds == {"process_started", "outbox_notice"}
    assert sorted(s for s in fake.held if fake.held[s].WhichOneof("kind") == "process_started") == \
        [1, 2, 3, 4, 5, 6, 7, 8, 10]
    assert fake.held[11].outbox_notice.set_aside == 1
    assert "larger than the controller accepts" in fake.held[11].outbox_notice.reason
    transport.close()


def outbox_fact(message: facts_pb2.ProcessStarted) -> facts_pb2.Fact:
    return facts_pb2.Fact(sequence=1, process_started=message)


def test_a_revoked_certificate_backs_off_at_the_maximum_and_says_why(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock, monotonic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox.put(started(1))
    transport = make_transport(agent_config, outbox, clock, monotonic)
    controller.servicer.script = [(Code.UNAUTHENTICATED, "certificate revoked")]
    with caplog.at_level(logging.ERROR, logger="agent.transport"):
        assert transport.send_pending() == 0
    assert transport.revoked and transport.retry_after() == agent_config.backoff_max_seconds
    assert outbox.depth() == 1
    assert "this agent's certificate was revoked or is unknown: enrol again" in caplog.text
    transport.close()


def test_server_down_loses_nothing_and_delivers_once_when_back(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock, monotonic
) -> None:
    transport = make_transport(agent_config, outbox, clock, monotonic)
    outbox.put_many([started(i) for i in range(1, 4)])
    assert transport.send_pending() == 3
    controller.stop()
    outbox.put_many([started(i) for i in range(4, 7)])
    assert transport.send_pending() == 0
    assert outbox.depth() == 3 and transport.failures == 1 and "UNAVAILABLE" in transport.last_error
    controller.start()  # same ports again
    monotonic.advance(transport.retry_after())
    assert transport.send_pending() == 3
    assert outbox.depth() == 0
    assert sorted(controller.servicer.received) == [1, 2, 3, 4, 5, 6]
    assert set(controller.servicer.received.values()) == {1}
    transport.close()


def test_a_certificate_from_another_ca_is_refused_by_the_server(
    agent_config: AgentConfig, outbox: Outbox, controller, pki, clock, write_state
) -> None:
    other_key, other_cert = create_ca(clock())
    impostor = ServerPKI(ca_cert=other_cert, ca_key=other_key, server_cert_pem=b"", server_key_pem=b"")
    write_state(agent_config, impostor, clock(), controller.report_port)
    agent_config.ca_path.write_bytes(pki.ca_cert_pem)  # it trusts the real server, but its own cert is foreign
    outbox.put(started(1))
    transport = make_transport(agent_config, outbox, clock)
    assert transport.send_pending() == 0
    assert outbox.depth() == 1 and controller.servicer.reports == []
    assert transport.failures == 1
    transport.close()


def test_commands_and_policy_version_reach_the_callback(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock
) -> None:
    fake = controller.servicer
    fake.commands = [agent_pb2.Command(kind=agent_pb2.Command.KIND_SEND_FULL_INVENTORY)]
    fake.policy_version = "p-3"
    seen: list[agent_pb2.ReportResponse] = []
    transport = make_transport(agent_config, outbox, clock, on_response=seen.append)
    outbox.put(started(1))
    transport.send_pending()
    assert len(seen) == 1
    assert [c.kind for c in seen[0].commands] == [agent_pb2.Command.KIND_SEND_FULL_INVENTORY]
    assert seen[0].policy_version == "p-3"
    transport.close()


def test_fetch_policy(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock
) -> None:
    fake = controller.servicer
    fake.policy_version = "p-3"
    fake.policy = agent_pb2.AgentPolicy(heartbeat_interval_seconds=30)
    transport = make_transport(agent_config, outbox, clock)
    answer = transport.fetch_policy("")
    assert answer.changed and answer.version == "p-3" and answer.policy.heartbeat_interval_seconds == 30
    assert not transport.fetch_policy("p-3").changed
    controller.stop()
    with pytest.raises(PolicyError, match=r"fetching the policy from 127\.0\.0\.1:\d+ failed: UNAVAILABLE"):
        transport.fetch_policy("p-3")
    transport.close()


def test_facts_under_numbers_the_controller_holds_otherwise_are_renumbered_and_stored(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock
) -> None:
    fake = controller.servicer
    # From before this outbox was reset: 2 is another fact, 500 the highest held.
    fake.held = {2: facts_pb2.Fact(sequence=2), 500: facts_pb2.Fact(sequence=500)}
    outbox.put_many([started(i) for i in range(1, 4)])  # numbered 1..3
    transport = make_transport(agent_config, outbox, clock)
    transport.send_pending()
    assert outbox.depth() == 0
    held_pids = {s: f.process_started.process.pid for s, f in fake.held.items() if f.HasField("process_started")}
    assert held_pids == {1: 1, 3: 3, 501: 2}, "the fact numbered 2 was renumbered above 500 and stored once"
    assert outbox.put(started(4)) == 502
    transport.close()


def test_a_fact_sent_again_with_the_same_content_is_not_renumbered(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock
) -> None:
    fake = controller.servicer
    outbox.put_many([started(i) for i in range(1, 4)])
    fake.held = {f.sequence: f for f in outbox.head(10, 1 << 20)}  # stored, but the acknowledgement was lost
    transport = make_transport(agent_config, outbox, clock)
    transport.send_pending()
    assert outbox.depth() == 0 and sorted(fake.held) == [1, 2, 3] and not fake.received
    transport.close()


def test_waiting_facts_behind_the_batch_are_not_acknowledged_unseen(
    agent_config: AgentConfig, outbox: Outbox, controller, enrolled: Enrollment, clock
) -> None:
    fake = controller.servicer
    fake.held = {900: facts_pb2.Fact(sequence=900)}
    outbox.put_many([started(i) for i in range(1, 6)])
    transport = make_transport(dataclasses.replace(agent_config, batch_max_facts=2), outbox, clock)
    transport.send_pending()
    assert outbox.depth() == 0
    assert sorted(s for s in fake.held if s != 900) == [1, 2, 3, 4, 5], "every fact reached the controller"
    transport.close()


def test_without_credentials_the_transport_says_enrol(agent_config: AgentConfig, outbox: Outbox) -> None:
    with pytest.raises(NotEnrolledError, match="not enrolled"):
        Transport(agent_config, outbox)
