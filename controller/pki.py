"""The controller's certificate authority: its CA, its server certificate, and agent client certificates.

On first start the controller creates an EC P-256 CA and a server certificate under
``<data_dir>/pki`` (private keys mode 0600) unless the admin configured their own. Agents send a
CSR at enrolment; :func:`sign_csr` issues a client certificate whose subject common name is the
agent id, whatever the CSR asked for, so identity always comes from us.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.config import Settings
from controller.errors import InvalidInput

PrivateKey = ec.EllipticCurvePrivateKey
CA_COMMON_NAME = "CounterGuard CA"
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock differences between hosts


@dataclass(frozen=True)
class ServerPKI:
    """What the gRPC server needs: its key pair, and the CA that signs and verifies agents."""

    ca_cert: x509.Certificate
    ca_key: PrivateKey
    server_cert_pem: bytes
    server_key_pem: bytes

    @property
    def ca_cert_pem(self) -> bytes:
        return cert_pem(self.ca_cert)


def generate_private_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CounterGuard"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_ca(now: dt.datetime, days: int = 3650, common_name: str = CA_COMMON_NAME) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = generate_private_key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _subject_alt_names(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):  # keep order, drop repeats
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _leaf(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    usage: x509.ObjectIdentifier,
    now: dt.datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )


def issue_server_cert(
    ca_key: PrivateKey, ca_cert: x509.Certificate, names: Sequence[str], now: dt.datetime, days: int = 825
) -> tuple[PrivateKey, x509.Certificate]:
    """A TLS server certificate for ``names`` (DNS names or IP addresses; the first is the CN)."""
    if not names:
        raise InvalidInput("a server certificate needs at least one host name or address")
    key = generate_private_key()
    cert = (
        _leaf(ca_key, ca_cert, _name(names[0]), key.public_key(), ExtendedKeyUsageOID.SERVER_AUTH, now, days)
        .add_extension(_subject_alt_names(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def sign_csr(
    ca_key: PrivateKey, ca_cert: x509.Certificate, csr_pem: bytes, agent_id: str, now: dt.datetime, days: int
) -> x509.Certificate:
    """Issue the client certificate for ``agent_id`` from an agent's CSR (its subject is ignored)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise InvalidInput("csr_pem is not a PEM-encoded PKCS#10 certificate request") from None
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, ValueError):
        valid = False
    if not valid:
        raise InvalidInput("the CSR's signature does not match its public key")
    public_key = csr.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise InvalidInput("the CSR's RSA key is shorter than 2048 bits")
    elif not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise InvalidInput("the CSR's key must be EC or RSA")
    return _leaf(
        ca_key, ca_cert, _name(agent_id), public_key, ExtendedKeyUsageOID.CLIENT_AUTH, now, days
    ).sign(ca_key, hashes.SHA256())


def agent_id_of(cert_pem_bytes: bytes) -> tuple[str, str]:
    """The agent id (subject CN) and fingerprint of a client certificate presented over mTLS."""
    cert = x509.load_pem_x509_certificate(cert_pem_bytes)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (str(names[0].value) if names else ""), fingerprint(cert)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def default_server_names(extra: Sequence[str] = ()) -> list[str]:
    """The names our own server certificate covers: this host, localhost and loopback, plus ``extra``."""
    names = [socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1", *extra]
    return [n for n in dict.fromkeys(names) if n]


def _load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{path}: the CA key must be an EC private key")
    return key


def load_or_create_pki(settings: Settings, now: dt.datetime) -> ServerPKI:
    """Use the admin's CA/server files when configured, else ours under ``<data_dir>/pki``, creating them once."""
    folder = settings.pki_dir
    ca_cert_path = Path(settings.ca_cert) if settings.ca_cert else folder / "ca.pem"
    ca_key_path = Path(settings.ca_key) if settings.ca_key else folder / "ca.key"
    server_cert_path = Path(settings.server_cert) if settings.server_cert else folder / "server.pem"
    server_key_path = Path(settings.server_key) if settings.server_key else folder / "server.key"

    if not ca_cert_path.exists() and not settings.ca_cert:
        ca_key, ca_cert = create_ca(now)
        _write_private(ca_key_path, key_pem(ca_key))
        folder.mkdir(parents=True, exist_ok=True)
        ca_cert_path.write_bytes(cert_pem(ca_cert))
    for path in (ca_cert_path, ca_key_path):
        if not path.exists():
            raise InvalidInput(f"{path}: file not found (configured CA certificate and key must both exist)")
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = _load_key(ca_key_path)
    except ValueError as exc:
        raise InvalidInput(f"cannot read the CA from {ca_cert_path} / {ca_key_path}: {exc}") from None

    if not server_cert_path.exists() and not settings.server_cert:
        key, cert = issue_server_cert(ca_key, ca_cert, default_server_names(settings.server_names), now)
        _write_private(server_key_path, key_pem(key))
        server_cert_path.write_bytes(cert_pem(cert))
    for path in (server_cert_path, server_key_path):
        if not path.exists():
            raise InvalidInput(f"{path}: file not found (configured server certificate and key must both exist)")
    return ServerPKI(
        ca_cert=ca_cert,
        ca_key=ca_key,
        server_cert_pem=server_cert_path.read_bytes(),
        server_key_pem=server_key_path.read_bytes(),
    )
