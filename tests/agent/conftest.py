"""Agent test fixtures: a real gRPC controller stand-in on 127.0.0.1 with real certificates.

:class:`FakeController` is a test-local ``AgentServiceServicer``: it records what it got, answers
Report with scripted status codes, and holds facts by sequence like the real controller (a batch
sent twice changes nothing). :class:`ControllerServer` serves it on two ports made the way the
controller makes them: server-authenticated TLS for enrolment and mutual TLS for reports.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from agent.config import AgentConfig
from agent.enroll import Enrollment, write_private
from agent.outbox import Outbox
from controller.pki import ServerPKI, cert_pem, generate_private_key, key_pem, sign_csr
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc, facts_pb2

AGENT_ID = "agent-7f3a"
TOKEN = "good-token"


class FakeController(agent_pb2_grpc.AgentServiceServicer):
    """Records requests and answers them from a script; thread-safe."""

    def __init__(self, pki: ServerPKI, now: dt.datetime) -> None:
        self.pki, self.now = pki, now
        self.lock = threading.Lock()
        self.enroll_requests: list[tuple[agent_pb2.EnrollRequest, dict[str, list[bytes]]]] = []
        self.reports: list[tuple[str, agent_pb2.ReportRequest]] = []  # (client certificate CN, request)
        self.held: dict[int, facts_pb2.Fact] = {}
        self.received = collections.Counter[int]()  # accepted deliveries per sequence
        self.script: list[tuple[grpc.StatusCode, str]] = []  # next Report answers, before normal handling
        self.max_request_bytes: int | None = None  # RESOURCE_EXHAUSTED above this size
        self.invalid: Callable[[facts_pb2.Fact], str] = lambda fact: ""  # a reason: INVALID_ARGUMENT, whole batch
        self.enroll_error: tuple[grpc.StatusCode, str] | None = None
        self.commands: list[agent_pb2.Command] = []  # sent once with the next successful answer
        self.policy_version = ""
        self.policy = agent_pb2.AgentPolicy()
        self.policy_fetches: list[str] = []
        self.report_host = ""
        self.report_port = 0
        self.agent_id = AGENT_ID

    def Enroll(self, request: agent_pb2.EnrollRequest, context: grpc.ServicerContext) -> agent_pb2.EnrollResponse:
        with self.lock:
            self.enroll_requests.append((request, dict(context.auth_context())))
        if self.enroll_error is not None:
            context.abort(*self.enroll_error)
        if request.token != TOKEN:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "the enrolment token is unknown or used up")
        cert = sign_csr(self.pki.ca_key, self.pki.ca_cert, request.csr_pem, self.agent_id, self.now, 30)
        return agent_pb2.EnrollResponse(
            agent_id=self.agent_id, certificate_pem=cert_pem(cert), ca_certificate_pem=self.pki.ca_cert_pem,
            report_host=self.report_host, report_port=self.report_port, window="W07",
        )

    def Report(self, request: agent_pb2.ReportRequest, context: grpc.ServicerContext) -> agent_pb2.ReportResponse:
        names = dict(context.auth_context()).get("x509_common_name", [b""])
        with self.lock:
            self.reports.append((names[0].decode(), request))
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            context.abort(*scripted)
        if self.max_request_bytes is not None and request.ByteSize() > self.max_request_bytes:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the batch is larger than the controller accepts")
        for fact in request.facts:
            if reason := self.invalid(fact):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"fact {fact.sequence}: {reason}")
        with self.lock:
            conflicts = []  # held under the same number with another content, as the controller answers
            for fact in request.facts:
                if fact.sequence not in self.held:
                    self.held[fact.sequence] = fact
                    self.received[fact.sequence] += 1
                elif self.held[fact.sequence] != fact:
                    conflicts.append(fact.sequence)
            commands, self.commands = self.commands, []
            return agent_pb2.ReportResponse(
                acknowledged_sequence=max(self.held, default=0), policy_version=self.policy_version,
                commands=commands, conflicting_sequences=conflicts)

    def FetchPolicy(self, request: agent_pb2.FetchPolicyRequest, context: grpc.ServicerContext) -> agent_pb2.FetchPolicyResponse:
        with self.lock:
            self.policy_fetches.append(request.current_version)
        if request.current_version == self.policy_version:
            return agent_pb2.FetchPolicyResponse(version=self.policy_version, changed=False)
        return agent_pb2.FetchPolicyResponse(version=self.policy_version, changed=True, policy=self.policy)

    def kinds_held(self) -> list[str]:
        with self.lock:
            return [self.held[s].WhichOneof("kind") or "" for s in sorted(self.held)]


@dataclass
class ControllerServer:
    """The fake controller served on an enrolment port (TLS) and a report port (mutual TLS)."""

    servicer: FakeController
    pki: ServerPKI
    enroll_port: int = 0
    report_port: int = 0
    _server: grpc.Server | None = field(default=None, repr=False)

    def start(self) -> ControllerServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self.servicer, server)
        pair = [(self.pki.server_key_pem, self.pki.server_cert_pem)]
        self.enroll_port = server.add_secure_port(f"127.0.0.1:{self.enroll_port}", grpc.ssl_server_credentials(pair))
        self.report_port = server.add_secure_port(
            f"127.0.0.1:{self.report_port}",
            grpc.ssl_server_credentials(pair, root_certificates=self.pki.ca_cert_pem, require_client_auth=True),
        )
        assert self.enroll_port and self.report_port, "could not bind the test server's ports"
        self.servicer.report_port = self.report_port
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    @property
    def enroll_address(self) -> str:
        return f"127.0.0.1:{self.enroll_port}"


class FakeMonotonic:
    """A monotonic clock for backoff: ``advance(seconds)`` moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def controller(pki: ServerPKI, clock) -> Iterator[ControllerServer]:
    server = ControllerServer(FakeController(pki, clock()), pki).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def agent_config(tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        state_dir=tmp_path / "agent", run_dir=tmp_path / "run", rpc_timeout_seconds=5, backoff_initial_seconds=1,
        backoff_max_seconds=60, outbox_max_facts=1000, run_once_timeout_seconds=20,
    )


def write_enrolled_state(config: AgentConfig, pki: ServerPKI, now: dt.datetime, report_port: int,
                         agent_id: str = AGENT_ID) -> Enrollment:
    """Credentials as a successful enrolment leaves them, made directly with the controller's CA."""
    key = generate_private_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-host")]))
           .sign(key, hashes.SHA256()))
    cert = sign_csr(pki.ca_key, pki.ca_cert, csr.public_bytes(serialization.Encoding.PEM), agent_id, now, 30)
    write_private(config.key_path, key_pem(key))
    config.cert_path.write_bytes(cert_pem(cert))
    config.ca_path.write_bytes(pki.ca_cert_pem)
    enrollment = Enrollment(agent_id=agent_id, enrolled_at=now, controller="127.0.0.1:1",
                            report_host="127.0.0.1", report_port=report_port, window="W07")
    config.enrollment_path.write_text(enrollment.to_json(), encoding="utf-8")
    return enrollment


@pytest.fixture
def enrolled(agent_config: AgentConfig, pki: ServerPKI, clock, controller: ControllerServer) -> Enrollment:
    """The agent's state directory as a successful enrolment with the fake controller leaves it."""
    return write_enrolled_state(agent_config, pki, clock(), controller.report_port)


@pytest.fixture
def write_state() -> Callable[..., Enrollment]:
    """:func:`write_enrolled_state`, for tests that need credentials from another CA or agent id."""
    return write_enrolled_state


@pytest.fixture
def monotonic() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def outbox(agent_config: AgentConfig, clock) -> Iterator[Outbox]:
    box = Outbox(agent_config.outbox_path, max_facts=agent_config.outbox_max_facts, clock=clock)
    try:
        yield box
    finally:
        box.close()
