"""The agent directory: list, details, revocation, and authenticating a presented certificate."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy.engine import Engine

from controller.agents import AgentDirectory
from controller.db import make_engine
from controller.enrollment import EnrollmentService, EnrollResult
from controller.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from controller.pki import ServerPKI, cert_pem, create_ca, sign_csr
from controller.tokens import TokenService


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pc")])
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)


def _enrol(engine: Engine, clock, pki: ServerPKI, window: str, hostname: str) -> EnrollResult:
    token = TokenService(engine, clock).create(window, expires_in=dt.timedelta(hours=1)).token
    return EnrollmentService(engine, pki, clock).enroll(token, _csr(), hostname=hostname, os_family="linux")


def test_list_and_get(engine: Engine, clock, pki: ServerPKI) -> None:
    b = _enrol(engine, clock, pki, "W02", "pc-b")
    a = _enrol(engine, clock, pki, "W01", "pc-a")
    directory = AgentDirectory(engine, clock)

    listed = directory.list()

    assert [(s.id, s.hostname, s.window) for s in listed] == [
        (a.agent_id, "pc-a", "W01"),
        (b.agent_id, "pc-b", "W02"),
    ]
    assert all(s.enrolled_at == clock() and s.last_seen_at is None and s.last_sequence == 0 for s in listed)
    assert not any(s.revoked for s in listed)
    details = directory.get(a.agent_id)
    certificate = x509.load_pem_x509_certificate(a.certificate_pem)
    assert details.cert_serial == format(certificate.serial_number, "x")
    assert details.cert_not_after == certificate.not_valid_after_utc
    assert (details.os_family, details.revoked, details.revoked_at) == ("linux", False, None)
    with pytest.raises(NotFound, match="no agent 'ag-0000000000'"):
        directory.get("ag-0000000000")


def test_revoke_once_with_reason(engine: Engine, clock, pki: ServerPKI) -> None:
    enrolled = _enrol(engine, clock, pki, "W01", "pc-a")
    directory = AgentDirectory(engine, clock)
    clock.advance(hours=3)

    details = directory.revoke(enrolled.agent_id, "PC replaced")

    assert (details.revoked, details.revoked_at, details.revoked_reason) == (True, clock(), "PC replaced")
    assert directory.list()[0].revoked
    with pytest.raises(Conflict, match="already revoked"):
        directory.revoke(enrolled.agent_id)
    with pytest.raises(NotFound):
        directory.revoke("ag-0000000000")
    with pytest.raises(InvalidInput, match="reason is longer"):
        directory.revoke(enrolled.agent_id, "r" * 257)


def test_authenticate_accepts_the_issued_certificate(engine: Engine, clock, pki: ServerPKI) -> None:
    enrolled = _enrol(engine, clock, pki, "W01", "pc-a")
    agent = AgentDirectory(engine, clock).authenticate(enrolled.certificate_pem)
    assert (agent.id, agent.hostname, agent.window) == (enrolled.agent_id, "pc-a", "W01")


def test_authenticate_refuses_another_certificate_for_the_same_agent(engine: Engine, clock, pki: ServerPKI) -> None:
    enrolled = _enrol(engine, clock, pki, "W01", "pc-a")
    # Signed by the same CA for the same id, but not the certificate that was issued and stored.
    twin = sign_csr(pki.ca_key, pki.ca_cert, _csr(), enrolled.agent_id, clock(), 30)
    with pytest.raises(Unauthenticated, match=f"not the one issued to agent '{enrolled.agent_id}'"):
        AgentDirectory(engine, clock).authenticate(cert_pem(twin))


def test_authenticate_refuses_unknown_agents_and_unreadable_certificates(engine: Engine, clock, pki: ServerPKI) -> None:
    stranger = sign_csr(pki.ca_key, pki.ca_cert, _csr(), "ag-ffffffffff", clock(), 30)
    ca_key, ca_cert = create_ca(clock(), common_name="Some CA")
    nameless = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(clock())
        .not_valid_after(clock() + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    directory = AgentDirectory(engine, clock)
    with pytest.raises(Unauthenticated, match="unknown agent 'ag-ffffffffff'"):
        directory.authenticate(cert_pem(stranger))
    with pytest.raises(Unauthenticated, match="names no agent"):
        directory.authenticate(cert_pem(nameless))
    with pytest.raises(Unauthenticated, match="cannot be read"):
        directory.authenticate(b"not a certificate")


def test_revocation_through_another_process_takes_effect_at_the_next_call(
    engine: Engine, database_url: str, clock, pki: ServerPKI
) -> None:
    enrolled = _enrol(engine, clock, pki, "W01", "pc-a")
    serving = AgentDirectory(engine, clock)
    assert serving.authenticate(enrolled.certificate_pem).id == enrolled.agent_id

    admin_engine = make_engine(database_url)  # another connection pool, as the CLI or another replica has
    try:
        AgentDirectory(admin_engine, clock).revoke(enrolled.agent_id, "stolen")
    finally:
        admin_engine.dispose()

    with pytest.raises(Unauthenticated, match=f"agent '{enrolled.agent_id}' is revoked: stolen"):
        serving.authenticate(enrolled.certificate_pem)


def test_authenticate_is_one_query_per_call(engine: Engine, clock, pki: ServerPKI) -> None:
    from sqlalchemy import event

    enrolled = _enrol(engine, clock, pki, "W01", "pc-a")
    directory = AgentDirectory(engine, clock)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            directory.authenticate(enrolled.certificate_pem)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 3, statements
    assert all("FROM agent" in s and "agent.id =" in s for s in statements), statements
