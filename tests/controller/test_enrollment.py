"""Enrolment: token checks with their reasons, one use consumed atomically, the certificate and the agent row."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from controller.db import session_scope
from controller.enrollment import EnrollmentService
from controller.errors import CounterGuardError, InvalidInput, PermissionDenied
from controller.models import Agent, EnrollmentToken
from controller.pki import ServerPKI, fingerprint, serial_hex
from controller.tokens import TokenService


def make_csr(common_name: str = "whatever-the-agent-asks") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    return csr.public_bytes(Encoding.PEM)


def token_for(engine: Engine, clock, **kwargs) -> str:
    arguments = {"window": "W12", "unit": "税务局", "expires_in": dt.timedelta(days=1), **kwargs}
    return TokenService(engine, clock).create(**arguments).token


def uses_of(engine: Engine, token: str) -> int:
    with session_scope(engine) as session:
        row = session.get(EnrollmentToken, token.partition(".")[0])
    assert row is not None
    return row.uses


def agent_count(engine: Engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Agent)) or 0


def test_enroll_issues_a_certificate_for_the_new_agent_and_stores_it(engine: Engine, clock, pki: ServerPKI) -> None:
    token = token_for(engine, clock)
    service = EnrollmentService(engine, pki, clock, client_cert_days=30)

    result = service.enroll(
        token, make_csr(), hostname="counter-12", machine_id="m" * 32, os_family="linux", agent_version="0.1.0"
    )

    assert result.agent_id.startswith("ag-") and len(result.agent_id) == 13
    assert (result.window, result.unit) == ("W12", "税务局")
    assert result.ca_certificate_pem == pki.ca_cert_pem
    cert = x509.load_pem_x509_certificate(result.certificate_pem)
    cert.verify_directly_issued_by(pki.ca_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == result.agent_id
    assert cert.not_valid_after_utc == clock() + dt.timedelta(days=30)
    with session_scope(engine) as session:
        agent = session.get(Agent, result.agent_id)
    assert agent is not None
    assert (agent.hostname, agent.os_family, agent.agent_version, agent.window, agent.unit) == (
        "counter-12",
        "linux",
        "0.1.0",
        "W12",
        "税务局",
    )
    assert agent.token_id == token.partition(".")[0]
    assert agent.cert_fingerprint == fingerprint(cert) and agent.cert_serial == serial_hex(cert)
    assert agent.cert_not_after == cert.not_valid_after_utc and agent.enrolled_at == clock()
    assert agent.revoked_at is None and agent.last_seen_at is None
    assert uses_of(engine, token) == 1


def _refusal_cases(engine: Engine, clock) -> dict[str, tuple[str, str]]:
    good = token_for(engine, clock)
    token_id = good.partition(".")[0]
    revoked = token_for(engine, clock)
    TokenService(engine, clock).revoke(revoked.partition(".")[0])
    return {
        "malformed": ("no-dot-here", "malformed"),
        "empty": ("", "malformed"),
        "unknown": ("0123456789ab.somesecret", "unknown enrolment token '0123456789ab'"),
        "wrong secret": (f"{token_id}.{'x' * 32}", f"wrong secret for enrolment token '{token_id}'"),
        "revoked": (revoked, f"enrolment token '{revoked.partition('.')[0]}' is revoked"),
    }


@pytest.mark.parametrize("case", ["malformed", "empty", "unknown", "wrong secret", "revoked"])
def test_refused_tokens_say_why(engine: Engine, clock, pki: ServerPKI, case: str) -> None:
    token, reason = _refusal_cases(engine, clock)[case]
    with pytest.raises(PermissionDenied, match=reason):
        EnrollmentService(engine, pki, clock).enroll(token, make_csr())
    assert agent_count(engine) == 0


def test_expired_token_is_refused(engine: Engine, clock, pki: ServerPKI) -> None:
    token = token_for(engine, clock, expires_in=dt.timedelta(hours=1))
    clock.advance(hours=1)
    with pytest.raises(PermissionDenied, match="is expired"):
        EnrollmentService(engine, pki, clock).enroll(token, make_csr())
    assert uses_of(engine, token) == 0


def test_token_is_used_up_after_max_uses(engine: Engine, clock, pki: ServerPKI) -> None:
    token = token_for(engine, clock, max_uses=2)
    service = EnrollmentService(engine, pki, clock)
    first = service.enroll(token, make_csr())
    second = service.enroll(token, make_csr())
    assert first.agent_id != second.agent_id
    with pytest.raises(PermissionDenied, match="is used up"):
        service.enroll(token, make_csr())
    assert uses_of(engine, token) == 2 and agent_count(engine) == 2


@pytest.mark.parametrize(
    "csr, message",
    [
        (b"", "not a PEM-encoded"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "not a PEM-encoded"),
    ],
)
def test_bad_csr_is_invalid_and_consumes_no_use(
    engine: Engine, clock, pki: ServerPKI, csr: bytes, message: str
) -> None:
    token = token_for(engine, clock)
    service = EnrollmentService(engine, pki, clock)
    with pytest.raises(InvalidInput, match=message):
        service.enroll(token, csr)
    assert uses_of(engine, token) == 0 and agent_count(engine) == 0
    service.enroll(token, make_csr())  # the single use is still there
    assert uses_of(engine, token) == 1


def test_too_long_field_is_invalid_and_consumes_no_use(engine: Engine, clock, pki: ServerPKI) -> None:
    token = token_for(engine, clock)
    with pytest.raises(InvalidInput, match="hostname is longer than 255"):
        EnrollmentService(engine, pki, clock).enroll(token, make_csr(), hostname="h" * 256)
    assert uses_of(engine, token) == 0


def test_simultaneous_enrolments_with_a_single_use_token_make_one_agent(engine: Engine, clock, pki: ServerPKI) -> None:
    token = token_for(engine, clock)
    service = EnrollmentService(engine, pki, clock)
    csrs = [make_csr() for _ in range(8)]
    start = threading.Barrier(len(csrs))
    outcomes: list[object] = []
    lock = threading.Lock()

    def enrol(csr: bytes) -> None:
        start.wait()
        try:
            outcome: object = service.enroll(token, csr)
        except CounterGuardError as exc:  # collected and checked below
            outcome = exc
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=enrol, args=(csr,)) for csr in csrs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    refusals = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == len(csrs)
    assert len(refusals) == len(csrs) - 1, refusals
    assert all(isinstance(r, PermissionDenied) and "used up" in str(r) for r in refusals), refusals
    assert agent_count(engine) == 1 and uses_of(engine, token) == 1
