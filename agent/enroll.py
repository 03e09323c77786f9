"""Enrolment: exchange a one-time token and a CSR for an agent id and a client certificate.

The key pair is made here (EC P-256) and written mode 0600 before anything is sent; only the CSR
leaves the workstation. The call goes over server-authenticated TLS, trusting the CA file the admin
handed out. On success the state directory holds ``key.pem``, ``cert.pem`` (CN = agent id),
``ca.pem`` and ``enrollment.json`` (written last: it marks the agent as enrolled). A failed or
refused enrolment leaves an existing enrolment untouched. ``cryptography`` is imported only here,
only when enrolling, to keep the running service small.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

import agent
from agent.clock import Clock, utc_now
from agent.errors import EnrollError, NotEnrolledError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

    from protos.counterguard.v1 import agent_pb2

ENROLLMENT_FILE = "enrollment.json"
KEY_FILE = "key.pem"
CERT_FILE = "cert.pem"
CA_FILE = "ca.pem"
_REFUSED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED}


@dataclass(frozen=True)
class Enrollment:
    """What ``enrollment.json`` records: who this agent is and where it reports."""

    agent_id: str
    enrolled_at: dt.datetime
    controller: str  # the enrolment address, host:port
    report_host: str
    report_port: int
    window: str

    @property
    def report_address(self) -> str:
        """The mutual-TLS address as a gRPC target (IPv6 literals in brackets)."""
        return format_address(self.report_host, self.report_port)

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["enrolled_at"] = self.enrolled_at.isoformat()
        data["report_address"] = self.report_address
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Path) -> Enrollment:
        try:
            data = json.loads(text)
            return cls(
                agent_id=str(data["agent_id"]),
                enrolled_at=dt.datetime.fromisoformat(data["enrolled_at"]),
                controller=str(data["controller"]),
                report_host=str(data["report_host"]),
                report_port=int(data["report_port"]),
                window=str(data.get("window", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise NotEnrolledError(f"{source}: the enrolment record is unreadable ({exc!r}); enrol again") from None


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (or ``[v6]:port``) into host and port; ValueError when it is not one."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r} is not HOST:PORT (write an IPv6 address in brackets)")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def load_enrollment(state_dir: Path) -> Enrollment:
    """The stored enrolment, or NotEnrolledError when this agent was never enrolled."""
    path = state_dir / ENROLLMENT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotEnrolledError(
            f"this agent is not enrolled ({path} does not exist): run `counterguard-agent enroll`") from None
    except OSError as exc:
        raise NotEnrolledError(f"{path}: cannot read the enrolment record ({exc.strerror})") from None
    return Enrollment.from_json(text, path)


def write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only (0600 from the first byte), durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_machine_id() -> str:
    for path in (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id")):
        try:
            return path.read_text(encoding="ascii").strip()
        except OSError:
            continue
    return ""


def _make_key_and_csr(key_path: Path, hostname: str) -> tuple[bytes, EllipticCurvePublicKey]:
    """A new EC P-256 key, written to ``key_path`` before use, and a CSR for it (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname or "counterguard-agent")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), key.public_key()


def _check_answer(response: agent_pb2.EnrollResponse, public_key: EllipticCurvePublicKey, controller: str) -> None:
    """The certificate must be for our key and issued by the CA the controller returned."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        cert = x509.load_pem_x509_certificate(response.certificate_pem)
        ca = x509.load_pem_x509_certificate(response.ca_certificate_pem)
    except ValueError:
        raise EnrollError(f"the controller at {controller} answered with an unreadable certificate") from None
    if not response.agent_id or not response.report_port:
        raise EnrollError(f"the controller at {controller} answered without an agent id or report port")
    if cert.public_key() != public_key:
        raise EnrollError(f"the controller at {controller} returned a certificate for a different key")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise EnrollError(f"the certificate from {controller} is not signed by the CA it returned") from None


def _read_ca(ca_cert_path: Path) -> bytes:
    try:
        data = ca_cert_path.read_bytes()
    except OSError as exc:
        raise EnrollError(f"{ca_cert_path}: cannot read the CA certificate ({exc.strerror})") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise EnrollError(f"{ca_cert_path}: not a PEM certificate")
    return data


def _call_enroll(controller: str, ca: bytes, ca_source: Path, request: agent_pb2.EnrollRequest,
                 timeout: float) -> agent_pb2.EnrollResponse:
    from protos.counterguard.v1 import agent_pb2_grpc

    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(controller, credentials) as channel:
        try:
            stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
            response: agent_pb2.EnrollResponse = stub.Enroll(request, timeout=timeout)
            return response
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code in _REFUSED:
                raise EnrollError(f"the controller refused the enrolment: {details}") from None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # too many failed enrolments from this address
                raise EnrollError(f"the controller refuses enrolments from here for now: {details}") from None
            if "CERTIFICATE_VERIFY_FAILED" in details:
                raise EnrollError(f"the controller at {controller} presented a certificate that {ca_source} "
                                  "does not vouch for (wrong --ca-cert?)") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise EnrollError(f"cannot reach the controller at {controller}: {details}") from None
            raise EnrollError(f"enrolment at {controller} failed with {code.name}: {details}") from None


def enroll(
    controller: str,
    token: str,
    ca_cert_path: Path,
    state_dir: Path,
    hostname: str | None = None,
    machine_id: str | None = None,
    *,
    force: bool = False,
    timeout: float = 15.0,
    clock: Clock = utc_now,
) -> Enrollment:
    """Enrol this workstation with the controller at ``controller`` (host:port of its enrolment port)."""
    try:
        host, _ = parse_address(controller)
    except ValueError as exc:
        raise EnrollError(f"--controller: {exc}") from None
    if (state_dir / ENROLLMENT_FILE).exists() and not force:
        raise EnrollError(f"this agent is already enrolled ({state_dir / ENROLLMENT_FILE}); use --force to enrol again")
    ca = _read_ca(ca_cert_path)
    hostname = hostname if hostname is not None else socket.gethostname()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    new_key = state_dir / (KEY_FILE + ".new")
    csr_pem, public_key = _make_key_and_csr(new_key, hostname)
    try:
        request = _request(token, csr_pem, hostname, machine_id)
        response = _call_enroll(controller, ca, ca_cert_path, request, timeout)
        _check_answer(response, public_key, controller)
    except EnrollError:
        new_key.unlink(missing_ok=True)
        raise
    return _store(state_dir, new_key, response, ca, controller, host, clock)


def _request(token: str, csr_pem: bytes, hostname: str, machine_id: str | None) -> agent_pb2.EnrollRequest:
    from protos.counterguard.v1 import agent_pb2

    return agent_pb2.EnrollRequest(
        token=token, csr_pem=csr_pem, hostname=hostname,
        machine_id=machine_id if machine_id is not None else _read_machine_id(),
        os_family="windows" if sys.platform == "win32" else "linux", agent_version=agent.__version__,
    )


def _store(state_dir: Path, new_key: Path, response: agent_pb2.EnrollResponse, ca: bytes, controller: str,
           host: str, clock: Clock) -> Enrollment:
    """Put the new key, certificate, CA and record in place; the record goes last."""
    enrollment = Enrollment(
        agent_id=response.agent_id, enrolled_at=clock(), controller=controller,
        report_host=response.report_host or host, report_port=response.report_port, window=response.window,
    )
    bundle = bytes(response.ca_certificate_pem)
    if ca.strip() not in bundle:  # keep trusting the CA the admin gave us for the server certificate too
        bundle = bundle.rstrip(b"\n") + b"\n" + ca
    _write_atomically(state_dir / CERT_FILE, bytes(response.certificate_pem))
    _write_atomically(state_dir / CA_FILE, bundle)
    os.replace(new_key, state_dir / KEY_FILE)
    _write_atomically(state_dir / ENROLLMENT_FILE, enrollment.to_json().encode())
    return enrollment
