"""The controller over real gRPC on 127.0.0.1: enrolment TLS, mutual TLS, status codes, limits, health, reflection.

Every test starts :func:`controller.server.build_server` on port 0 with certificates from
:mod:`controller.pki` and talks to it with ``grpc.secure_channel``, once per database back end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from controller.agents import AgentDirectory
from controller.clock import utc_now
from controller.config import Settings
from controller.db import session_scope
from controller.errors import CounterGuardError, NotFound
from controller.grpc_server import NO_CERTIFICATE, SERVICE_NAME
from controller.models import Agent, EnrollmentToken, Fact
from controller.pki import ServerPKI, cert_pem, create_ca, key_pem, sign_csr
from controller.server import RunningServer, build_server
from controller.tokens import TokenService
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc, facts_pb2

MAX_MESSAGE = 256 * 1024
TIMEOUT = 10


@pytest.fixture
def clock(clock):  # type: ignore[no-untyped-def]
    """The shared FakeClock, set to the real present: TLS checks certificates against the real time."""
    clock.now = utc_now().replace(microsecond=0)
    return clock


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "controller",
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        max_message_bytes=MAX_MESSAGE,
        max_facts_per_batch=50,
        max_workers=8,
    )


@pytest.fixture
def running(settings: Settings, engine: Engine, pki: ServerPKI, clock) -> Iterator[RunningServer]:
    server = build_server(settings, engine, pki, clock)
    server.start()
    yield server
    server.stop(None)


# ----------------------------------------------------------------------------- client side


@dataclass
class Enrolled:
    response: agent_pb2.EnrollResponse
    key_pem: bytes

    @property
    def agent_id(self) -> str:
        return self.response.agent_id


def _key_and_csr() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "counter-pc")]))
        .sign(key, hashes.SHA256())
    )
    return key_pem(key), csr.public_bytes(Encoding.PEM)


def enrol_channel(running: RunningServer, pki: ServerPKI) -> grpc.Channel:
    return grpc.secure_channel(f"127.0.0.1:{running.enroll_port}", grpc.ssl_channel_credentials(pki.ca_cert_pem))


def agent_channel(port: int, ca_pem: bytes, key: bytes, certificate: bytes) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key, certificate_chain=certificate)
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def new_token(engine: Engine, clock, **kwargs) -> str:  # type: ignore[no-untyped-def]
    arguments = {"window": "W03", "expires_in": dt.timedelta(hours=1), **kwargs}
    return TokenService(engine, clock).create(**arguments).token


def enrol(running: RunningServer, pki: ServerPKI, token: str, csr: bytes | None = None) -> agent_pb2.EnrollResponse:
    with enrol_channel(running, pki) as channel:
        return agent_pb2_grpc.AgentServiceStub(channel).Enroll(
            agent_pb2.EnrollRequest(
                token=token,
                csr_pem=csr or _key_and_csr()[1],
                hostname="counter-03",
                os_family="linux",
                agent_version="0.1.0",
            ),
            timeout=TIMEOUT,
        )


@pytest.fixture
def enrolled(running: RunningServer, pki: ServerPKI, engine: Engine, clock) -> Enrolled:  # type: ignore[no-untyped-def]
    key, csr = _key_and_csr()
    return Enrolled(enrol(running, pki, new_token(engine, clock), csr), key)


def mtls(running: RunningServer, enrolled: Enrolled) -> grpc.Channel:
    return agent_channel(
        running.port, enrolled.response.ca_certificate_pem, enrolled.key_pem, enrolled.response.certificate_pem
    )


def fact(sequence: int, when: dt.datetime, **fields: object) -> facts_pb2.Fact:
    message = facts_pb2.Fact(sequence=sequence, **fields)  # type: ignore[arg-type]
    message.observed_at.FromDatetime(when)
    return message


def heartbeat(sequence: int, when: dt.datetime) -> facts_pb2.Fact:
    return fact(sequence, when, power=facts_pb2.PowerEvent(kind=facts_pb2.PowerEvent.KIND_HEARTBEAT))


def report(channel: grpc.Channel, facts: list[facts_pb2.Fact]) -> agent_pb2.ReportResponse:
    return agent_pb2_grpc.AgentServiceStub(channel).Report(agent_pb2.ReportRequest(facts=facts), timeout=TIMEOUT)


def stored_facts(engine: Engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Fact)) or 0


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=TIMEOUT, **kwargs)
    return caught.value  # type: ignore[return-value]


# ----------------------------------------------------------------------------- enrol, then report


def test_enrol_then_report_over_mutual_tls(running: RunningServer, pki: ServerPKI, engine: Engine, clock) -> None:
    key, csr = _key_and_csr()
    response = enrol(running, pki, new_token(engine, clock, window="W09"), csr)

    certificate = x509.load_pem_x509_certificate(response.certificate_pem)
    certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(response.ca_certificate_pem))
    assert response.ca_certificate_pem == pki.ca_cert_pem
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == response.agent_id
    assert (response.report_port, response.report_host, response.window) == (running.port, "", "W09")
    assert running.port != running.enroll_port

    with agent_channel(response.report_port, response.ca_certificate_pem, key, response.certificate_pem) as channel:
        first = report(channel, [heartbeat(1, clock()), heartbeat(2, clock())])
        again = report(channel, [heartbeat(2, clock()), heartbeat(3, clock())])

    assert (first.acknowledged_sequence, first.policy_version) == (2, "builtin-1")
    assert again.acknowledged_sequence == 3
    assert stored_facts(engine) == 3
    details = AgentDirectory(engine, clock).get(response.agent_id)
    assert (details.last_sequence, details.last_seen_at, details.hostname) == (3, clock(), "counter-03")


def test_report_host_is_the_advertised_host(settings: Settings, engine: Engine, pki: ServerPKI, clock) -> None:
    server = build_server(dataclasses.replace(settings, advertise_host="cg.hall.example"), engine, pki, clock)
    server.start()
    try:
        response = enrol(server, pki, new_token(engine, clock))
    finally:
        server.stop(None)
    assert (response.report_host, response.report_port) == ("cg.hall.example", server.port)


def test_certificate_from_another_ca_fails_the_handshake(running: RunningServer, enrolled: Enrolled, clock) -> None:
    other_key, other_ca = create_ca(clock(), common_name="Not CounterGuard")
    key, csr = _key_and_csr()
    forged = sign_csr(other_key, other_ca, csr, enrolled.agent_id, clock(), 30)  # even with a real agent's id
    with agent_channel(running.port, enrolled.response.ca_certificate_pem, key, cert_pem(forged)) as channel:
        error = rpc_error(agent_pb2_grpc.AgentServiceStub(channel).Report, agent_pb2.ReportRequest())
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_port_refuses_clients_without_a_certificate(running: RunningServer, pki: ServerPKI) -> None:
    with grpc.secure_channel(f"127.0.0.1:{running.port}", grpc.ssl_channel_credentials(pki.ca_cert_pem)) as channel:
        error = rpc_error(agent_pb2_grpc.AgentServiceStub(channel).Report, agent_pb2.ReportRequest())
    assert error.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "method, request_", [("Report", agent_pb2.ReportRequest()), ("FetchPolicy", agent_pb2.FetchPolicyRequest())]
)
def test_agent_calls_on_the_enrolment_port_are_unauthenticated(
    running: RunningServer, pki: ServerPKI, method: str, request_: object
) -> None:
    with enrol_channel(running, pki) as channel:
        error = rpc_error(getattr(agent_pb2_grpc.AgentServiceStub(channel), method), request_)
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, NO_CERTIFICATE)


def test_revoked_agent_is_refused_at_the_very_next_report(
    running: RunningServer, enrolled: Enrolled, engine: Engine, clock
) -> None:
    with mtls(running, enrolled) as channel:
        assert report(channel, [heartbeat(1, clock())]).acknowledged_sequence == 1
        AgentDirectory(engine, clock).revoke(enrolled.agent_id, "counter closed")
        error = rpc_error(
            agent_pb2_grpc.AgentServiceStub(channel).Report, agent_pb2.ReportRequest(facts=[heartbeat(2, clock())])
        )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == f"agent '{enrolled.agent_id}' is revoked: counter closed"
    assert stored_facts(engine) == 1


def test_another_certificate_for_an_enrolled_id_is_unauthenticated(
    running: RunningServer, enrolled: Enrolled, pki: ServerPKI, engine: Engine, clock
) -> None:
    key, csr = _key_and_csr()
    twin = sign_csr(pki.ca_key, pki.ca_cert, csr, enrolled.agent_id, clock(), 30)  # same CA, same CN
    with agent_channel(running.port, pki.ca_cert_pem, key, cert_pem(twin)) as channel:
        error = rpc_error(
            agent_pb2_grpc.AgentServiceStub(channel).Report, agent_pb2.ReportRequest(facts=[heartbeat(1, clock())])
        )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not the one issued" in error.details()
    assert stored_facts(engine) == 0


def test_certificate_for_an_unknown_agent_is_unauthenticated(running: RunningServer, pki: ServerPKI, clock) -> None:
    key, csr = _key_and_csr()
    stranger = sign_csr(pki.ca_key, pki.ca_cert, csr, "ag-0123456789", clock(), 30)
    with agent_channel(running.port, pki.ca_cert_pem, key, cert_pem(stranger)) as channel:
        error = rpc_error(agent_pb2_grpc.AgentServiceStub(channel).FetchPolicy, agent_pb2.FetchPolicyRequest())
    assert (error.code(), error.details()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown agent 'ag-0123456789': enrol again",
    )


# ----------------------------------------------------------------------------- enrolment refusals


def _refused_token(case: str, engine: Engine, clock) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    service = TokenService(engine, clock)
    if case == "malformed":
        return "just-some-text", "the enrolment token is malformed (expected <id>.<secret>)"
    if case == "unknown":
        return "0123456789ab.secret", "unknown enrolment token '0123456789ab'"
    token = new_token(engine, clock)
    token_id = token.partition(".")[0]
    if case == "wrong secret":
        return f"{token_id}.{'A' * 32}", f"wrong secret for enrolment token '{token_id}'"
    if case == "expired":
        clock.advance(hours=1, seconds=1)
        return token, f"enrolment token '{token_id}' is expired"
    if case == "used up":
        with session_scope(engine) as session:
            row = session.get(EnrollmentToken, token_id)
            assert row is not None
            row.uses = row.max_uses
            session.add(row)
        return token, f"enrolment token '{token_id}' is used up"
    service.revoke(token_id)
    return token, f"enrolment token '{token_id}' is revoked"


@pytest.mark.parametrize("case", ["malformed", "unknown", "wrong secret", "expired", "used up", "revoked"])
def test_refused_token_is_permission_denied_with_the_reason(
    running: RunningServer, pki: ServerPKI, engine: Engine, clock, case: str
) -> None:
    token, reason = _refused_token(case, engine, clock)
    with pytest.raises(grpc.RpcError) as caught:
        enrol(running, pki, token)
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, reason)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Agent)) == 0


def test_a_used_up_single_use_token_is_refused_after_one_enrolment(
    running: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    token = new_token(engine, clock)
    enrol(running, pki, token)
    with pytest.raises(grpc.RpcError) as caught:
        enrol(running, pki, token)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details().endswith("is used up")


def test_bad_csr_is_invalid_argument_and_keeps_the_token(
    running: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    token = new_token(engine, clock)
    with pytest.raises(grpc.RpcError) as caught:
        enrol(
            running, pki, token, csr=b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n"
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "csr_pem is not a PEM-encoded" in caught.value.details()
    assert enrol(running, pki, token).agent_id  # the single use was not consumed


def test_simultaneous_enrolments_with_a_single_use_token(
    running: RunningServer, pki: ServerPKI, engine: Engine, clock
) -> None:
    token = new_token(engine, clock)
    clients = 4
    start = threading.Barrier(clients)
    results: list[object] = []
    lock = threading.Lock()
    csrs = [_key_and_csr()[1] for _ in range(clients)]
    channels = [enrol_channel(running, pki) for _ in range(clients)]
    for channel in channels:  # connect (TLS handshake) first, so the calls themselves race
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)

    def call(channel: grpc.Channel, csr: bytes) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        start.wait()
        try:
            outcome: object = stub.Enroll(agent_pb2.EnrollRequest(token=token, csr_pem=csr), timeout=TIMEOUT)
        except grpc.RpcError as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call, args=pair) for pair in zip(channels, csrs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for channel in channels:
        channel.close()

    successes = [r for r in results if isinstance(r, agent_pb2.EnrollResponse)]
    refusals = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(successes) == 1 and len(refusals) == clients - 1, results
    assert all(r.code() == grpc.StatusCode.PERMISSION_DENIED and r.details().endswith("is used up") for r in refusals)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Agent)) == 1


# ----------------------------------------------------------------------------- bad reports and limits


def test_report_bigger_than_the_limit_is_resource_exhausted(
    running: RunningServer, enrolled: Enrolled, engine: Engine, clock
) -> None:
    huge = fact(1, clock(), inventory=facts_pb2.InventorySnapshot(hostname="x" * (MAX_MESSAGE + 1)))
    with mtls(running, enrolled) as channel:
        error = rpc_error(agent_pb2_grpc.AgentServiceStub(channel).Report, agent_pb2.ReportRequest(facts=[huge]))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert report(channel, [heartbeat(1, clock())]).acknowledged_sequence == 1  # the channel still works
    assert stored_facts(engine) == 1


def test_report_with_a_malformed_fact_is_invalid_and_stores_nothing(
    running: RunningServer, enrolled: Enrolled, engine: Engine, clock
) -> None:
    no_kind = facts_pb2.Fact(sequence=2)
    no_kind.observed_at.FromDatetime(clock())
    with mtls(running, enrolled) as channel:
        error = rpc_error(
            agent_pb2_grpc.AgentServiceStub(channel).Report,
            agent_pb2.ReportRequest(facts=[heartbeat(1, clock()), no_kind, heartbeat(3, clock())]),
        )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "fact 1 (sequence 2, no kind): no kind is set"
    assert stored_facts(engine) == 0
    assert AgentDirectory(engine, clock).get(enrolled.agent_id).last_sequence == 0


def test_report_with_more_facts_than_the_batch_limit_is_invalid(
    running: RunningServer, enrolled: Enrolled, settings: Settings, engine: Engine, clock
) -> None:
    batch = [heartbeat(n, clock()) for n in range(1, settings.max_facts_per_batch + 2)]
    with mtls(running, enrolled) as channel:
        error = rpc_error(agent_pb2_grpc.AgentServiceStub(channel).Report, agent_pb2.ReportRequest(facts=batch))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {settings.max_facts_per_batch}" in error.details()
    assert stored_facts(engine) == 0


# ----------------------------------------------------------------------------- policy, health, reflection


def test_fetch_policy_returns_the_builtin_policy_until_the_agent_has_it(
    running: RunningServer, enrolled: Enrolled
) -> None:
    with mtls(running, enrolled) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        fresh = stub.FetchPolicy(agent_pb2.FetchPolicyRequest(), timeout=TIMEOUT)
        current = stub.FetchPolicy(agent_pb2.FetchPolicyRequest(current_version="builtin-1"), timeout=TIMEOUT)
    assert (fresh.version, fresh.changed) == ("builtin-1", True)
    policy = fresh.policy
    assert (
        policy.report_interval_seconds,
        policy.heartbeat_interval_seconds,
        policy.process_poll_interval_seconds,
        policy.session_poll_interval_seconds,
        policy.software_scan_interval_seconds,
        policy.inventory_interval_seconds,
    ) == (0, 0, 0, 0, 0, 0), "without a policy file the agents keep their own intervals"
    assert (current.version, current.changed, current.HasField("policy")) == ("builtin-1", False, False)


def test_fetch_policy_returns_the_agent_part_of_the_stored_policy(
    settings: Settings, engine: Engine, pki: ServerPKI, clock
) -> None:
    from controller.policy.provider import StoredPolicyProvider, agent_policy
    from controller.policy.store import PolicyStore
    from policies import DEFAULT_POLICY

    store = PolicyStore(engine, clock)
    store.ensure_default(DEFAULT_POLICY, "test")
    server = build_server(settings, engine, pki, clock, policies=StoredPolicyProvider(store))
    server.start()
    try:
        key, csr = _key_and_csr()
        enrolled = Enrolled(enrol(server, pki, new_token(engine, clock), csr), key)
        with mtls(server, enrolled) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            fresh = stub.FetchPolicy(agent_pb2.FetchPolicyRequest(current_version="builtin-1"), timeout=TIMEOUT)
            same = stub.FetchPolicy(agent_pb2.FetchPolicyRequest(current_version=fresh.version), timeout=TIMEOUT)
            reply = report(channel, [heartbeat(1, clock.now)])
    finally:
        server.stop(None)

    loaded = store.active()
    assert loaded is not None
    assert (fresh.version, fresh.changed) == ("counterguard-default@2026.2", True)
    assert fresh.policy == agent_policy(loaded)
    assert fresh.policy.foreground_enabled and any(p.id == "taobao" for p in fresh.policy.title_patterns)
    assert (same.changed, same.HasField("policy")) == (False, False)
    assert reply.policy_version == fresh.version


def test_health_is_serving_and_not_serving_while_shutting_down(running: RunningServer, pki: ServerPKI) -> None:
    with enrol_channel(running, pki) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stopper = threading.Thread(target=running.stop, args=(3,))
        stopper.start()
        try:
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            stopper.join(timeout=TIMEOUT)


def test_reflection_lists_the_services(running: RunningServer, pki: ServerPKI) -> None:
    with enrol_channel(running, pki) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
        )
        names = {service.name for service in next(replies).list_services_response.service}
    assert {"counterguard.v1.AgentService", "grpc.health.v1.Health"} <= names


# ----------------------------------------------------------------------------- binding


def test_a_port_in_use_is_a_clear_error(settings: Settings, engine: Engine, pki: ServerPKI, clock) -> None:
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", 0))
        occupier.listen()
        taken = f"127.0.0.1:{occupier.getsockname()[1]}"
        for changed in (dataclasses.replace(settings, listen=taken), dataclasses.replace(settings, enroll_listen=taken)):
            with pytest.raises(CounterGuardError) as caught:
                build_server(changed, engine, pki, clock)
            assert str(caught.value) == f"cannot listen on {taken}: address already in use"


def test_a_second_controller_cannot_share_the_port(
    running: RunningServer, settings: Settings, engine: Engine, pki: ServerPKI, clock
) -> None:
    # gRPC turns on SO_REUSEPORT by default, which would let a second server bind silently.
    taken = f"127.0.0.1:{running.port}"
    with pytest.raises(CounterGuardError, match=f"cannot listen on {taken}: address already in use"):
        build_server(dataclasses.replace(settings, listen=taken), engine, pki, clock)


def test_a_malformed_address_is_a_clear_error(settings: Settings, engine: Engine, pki: ServerPKI, clock) -> None:
    with pytest.raises(CounterGuardError, match="cannot listen on nonsense: not a valid host:port address"):
        build_server(dataclasses.replace(settings, listen="nonsense"), engine, pki, clock)


# ----------------------------------------------------------------------------- failures behind the servicer


class _FailingIngest:
    """A stand-in for the ingest service at the boundary: it fails the way a broken back end would."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def ingest(self, agent_id: str, facts: object, presented: str | None = None,
               outbox_depth: int | None = None) -> object:
        raise self.error


@pytest.mark.parametrize(
    "error, code, details",
    [
        (
            OperationalError("INSERT …", {}, Exception("server closed the connection")),
            grpc.StatusCode.UNAVAILABLE,
            "the controller's database is unavailable; try again later",
        ),
        (NotFound("no agent 'ag-x'"), grpc.StatusCode.UNAUTHENTICATED, "no agent 'ag-x'"),
        (CounterGuardError("something unforeseen"), grpc.StatusCode.INTERNAL, "something unforeseen"),
    ],
)
def test_report_failures_map_to_status_codes(
    settings: Settings, engine: Engine, pki: ServerPKI, clock, error: Exception, code: grpc.StatusCode, details: str
) -> None:
    server = build_server(settings, engine, pki, clock, ingest=_FailingIngest(error))  # type: ignore[arg-type]
    server.start()
    try:
        key, csr = _key_and_csr()
        enrolled = Enrolled(enrol(server, pki, new_token(engine, clock), csr), key)
        with mtls(server, enrolled) as channel:
            failure = rpc_error(agent_pb2_grpc.AgentServiceStub(channel).Report, agent_pb2.ReportRequest())
    finally:
        server.stop(None)
    assert (failure.code(), failure.details()) == (code, details)
