"""Enrolment against a real gRPC server on 127.0.0.1: the key stays here, the certificate comes back."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from agent.cli import main
from agent.config import AgentConfig
from agent.enroll import Enrollment, enroll, load_enrollment, parse_address
from agent.errors import EnrollError, NotEnrolledError
from agent.outbox import Outbox
from agent.transport import Transport
from controller.pki import create_ca, cert_pem
from protos.counterguard.v1 import facts_pb2

TOKEN = "good-token"


def ca_file(tmp_path: Path, pki) -> Path:
    path = tmp_path / "controller-ca.pem"
    path.write_bytes(pki.ca_cert_pem)
    return path


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def do_enroll(controller, state_dir: Path, ca: Path, token: str = TOKEN, **kwargs) -> Enrollment:
    return enroll(controller.enroll_address, token, ca, state_dir, "counter-07", "0123abcd", timeout=5, **kwargs)


def test_enrolment_stores_a_certificate_for_a_key_that_never_left(controller, pki, tmp_path: Path, clock) -> None:
    state = tmp_path / "agent"
    enrollment = do_enroll(controller, state, ca_file(tmp_path, pki), clock=clock)

    fake = controller.servicer
    assert enrollment.agent_id == fake.agent_id
    cert = x509.load_pem_x509_certificate((state / "cert.pem").read_bytes())
    cert.verify_directly_issued_by(pki.ca_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == fake.agent_id
    key = serialization.load_pem_private_key((state / "key.pem").read_bytes(), password=None)
    assert cert.public_key() == key.public_key()
    assert stat.S_IMODE((state / "key.pem").stat().st_mode) == 0o600
    assert not (state / "key.pem.new").exists()
    assert pki.ca_cert_pem.strip() in (state / "ca.pem").read_bytes()

    ((request, auth),) = fake.enroll_requests
    assert "x509_common_name" not in auth  # server-authenticated TLS: the agent showed no certificate
    assert (request.token, request.hostname, request.machine_id, request.os_family) == (TOKEN, "counter-07", "0123abcd", "linux")
    assert x509.load_pem_x509_csr(request.csr_pem).public_key() == key.public_key()
    assert b"PRIVATE KEY" not in request.SerializeToString()

    record = json.loads((state / "enrollment.json").read_text())
    assert record["agent_id"] == fake.agent_id and record["window"] == "W07"
    assert record["report_host"] == "127.0.0.1" and record["report_port"] == controller.report_port
    assert record["controller"] == controller.enroll_address and record["enrolled_at"] == clock().isoformat()
    assert load_enrollment(state) == enrollment


def test_the_stored_credentials_report_over_mutual_tls(controller, pki, tmp_path: Path, clock) -> None:
    config = AgentConfig(state_dir=tmp_path / "agent", rpc_timeout_seconds=5)
    do_enroll(controller, config.state_dir, ca_file(tmp_path, pki))
    with Outbox(config.outbox_path, clock=clock) as outbox:
        outbox.put(facts_pb2.PowerEvent(kind=facts_pb2.PowerEvent.KIND_HEARTBEAT))
        transport = Transport(config, outbox, clock)
        assert transport.send_pending() == 1
        transport.close()
    assert [cn for cn, _ in controller.servicer.reports] == [controller.servicer.agent_id]


def test_the_report_host_the_controller_names_is_used(controller, pki, tmp_path: Path) -> None:
    controller.servicer.report_host = "localhost"
    enrollment = do_enroll(controller, tmp_path / "agent", ca_file(tmp_path, pki))
    assert enrollment.report_address == f"localhost:{controller.report_port}"


def test_a_refused_token_is_an_error_with_the_controllers_reason(controller, pki, tmp_path: Path) -> None:
    state = tmp_path / "agent"
    with pytest.raises(EnrollError, match="the controller refused the enrolment: the enrolment token is unknown or used up"):
        do_enroll(controller, state, ca_file(tmp_path, pki), token="stale")
    assert not (state / "enrollment.json").exists() and not (state / "key.pem").exists()
    assert not (state / "key.pem.new").exists()
    controller.servicer.enroll_error = (grpc.StatusCode.INVALID_ARGUMENT, "csr_pem is not a PEM-encoded PKCS#10 request")
    with pytest.raises(EnrollError, match="refused the enrolment: csr_pem is not"):
        do_enroll(controller, state, ca_file(tmp_path, pki))


def test_an_existing_enrolment_is_kept_unless_forced(controller, pki, tmp_path: Path) -> None:
    state, ca = tmp_path / "agent", ca_file(tmp_path, pki)
    first = do_enroll(controller, state, ca)
    first_key = (state / "key.pem").read_bytes()
    with pytest.raises(EnrollError, match="already enrolled .*use --force"):
        do_enroll(controller, state, ca)
    with pytest.raises(EnrollError, match="refused"):
        do_enroll(controller, state, ca, token="stale", force=True)
    assert (state / "key.pem").read_bytes() == first_key and load_enrollment(state) == first  # a failed retry broke nothing
    controller.servicer.agent_id = "agent-second"
    second = do_enroll(controller, state, ca, force=True)
    assert second.agent_id == "agent-second" and (state / "key.pem").read_bytes() != first_key
    cert = x509.load_pem_x509_certificate((state / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((state / "key.pem").read_bytes(), password=None)
    assert cert.public_key() == key.public_key()


def test_a_controller_we_cannot_reach_or_do_not_trust(controller, pki, tmp_path: Path, clock) -> None:
    ca = ca_file(tmp_path, pki)
    port = closed_port()
    with pytest.raises(EnrollError, match=rf"cannot reach the controller at 127\.0\.0\.1:{port}"):
        enroll(f"127.0.0.1:{port}", TOKEN, ca, tmp_path / "a", timeout=5)
    _, other_ca = create_ca(clock())
    stranger = tmp_path / "other-ca.pem"
    stranger.write_bytes(cert_pem(other_ca))
    with pytest.raises(EnrollError, match="presented a certificate that .*other-ca.pem does not vouch for"):
        do_enroll(controller, tmp_path / "b", stranger)
    assert controller.servicer.enroll_requests == []  # TLS failed before any request


@pytest.mark.parametrize("address", ["controller", "controller:", "controller:http", "::1:50052", "host:70000"])
def test_a_bad_controller_address_is_an_error(address: str, tmp_path: Path) -> None:
    with pytest.raises(EnrollError, match="--controller: .* is not HOST:PORT"):
        enroll(address, TOKEN, tmp_path / "ca.pem", tmp_path / "agent")


def test_address_parsing() -> None:
    assert parse_address("cg.example:50052") == ("cg.example", 50052)
    assert parse_address("[::1]:50052") == ("::1", 50052)
    assert Enrollment("a", None, "x", "::1", 5, "").report_address == "[::1]:5"  # type: ignore[arg-type]


def test_an_unreadable_ca_file(tmp_path: Path) -> None:
    with pytest.raises(EnrollError, match="cannot read the CA certificate"):
        enroll("127.0.0.1:1", TOKEN, tmp_path / "missing.pem", tmp_path / "agent")
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(EnrollError, match="junk.pem: not a PEM certificate"):
        enroll("127.0.0.1:1", TOKEN, tmp_path / "junk.pem", tmp_path / "agent")


def test_not_enrolled_and_a_damaged_record(tmp_path: Path) -> None:
    with pytest.raises(NotEnrolledError, match="not enrolled"):
        load_enrollment(tmp_path)
    (tmp_path / "enrollment.json").write_text("{")
    with pytest.raises(NotEnrolledError, match=r"enrollment.json: the enrolment record is unreadable .*; enrol again"):
        load_enrollment(tmp_path)


def test_the_enroll_command(controller, pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, ca = tmp_path / "agent", ca_file(tmp_path, pki)
    argv = ["--state-dir", str(state), "enroll", "--controller", controller.enroll_address, "--ca-cert", str(ca)]
    assert main([*argv, "--token", TOKEN]) == 0
    assert f"enrolled as {controller.servicer.agent_id} (window W07)" in capsys.readouterr().out
    assert main([*argv, "--token", TOKEN]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: this agent is already enrolled") and "Traceback" not in err
    assert main([*argv, "--token", "stale", "--force"]) == 1
    assert capsys.readouterr().err.strip() == "error: the controller refused the enrolment: the enrolment token is unknown or used up"
