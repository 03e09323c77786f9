"""What ``counterguard doctor`` checks, and what counts as healthy.

Each check gives ``OK``, ``WARN`` (works, but needs attention soon), ``FAIL`` (something is broken)
or ``SKIP`` (not checked because a check it depends on failed), with one sentence saying why.
Nothing here changes anything: the database is neither created nor migrated, certificates are
only read, and the controller is only asked for its health.

- database: it can be opened; its server version; the round-trip time of a query.
- schema: the database's migration is this controller's newest one.
- CA certificate, server certificate: present, readable, valid now and for 30 more days, the key
  beside each is its key, and the server certificate was issued by the CA.
- clock: this host's clock against the database server's (PostgreSQL); a few seconds off is a
  warning (working hours and agents' skew are judged by it), minutes off a failure.
- policy: the active policy loads with this controller's rules.
- controller: whether a controller answers on the configured ports (health over TLS).
"""

from __future__ import annotations

import datetime as dt
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from controller.clock import Clock, utc_now
from controller.config import Settings

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
EXPIRY_WARNING = dt.timedelta(days=30)
CLOCK_WARNING = dt.timedelta(seconds=5)
CLOCK_FAILURE = dt.timedelta(minutes=5)  # beyond what certificates' back-dating and the rules tolerate
LATENCY_WARNING_MS = 100.0
CONNECT_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    check: str
    status: str
    detail: str


def run_checks(settings: Settings, clock: Clock = utc_now) -> list[Check]:
    """Every check, in the order they are shown."""
    checks: list[Check] = []
    with _database(settings) as (engine, opened):
        checks.append(opened)
        if engine is None:
            checks += [Check(name, SKIP, "not checked: the database cannot be used") for name in
                       ("schema", "clock", "policy")]
        else:
            schema = schema_check(engine)
            checks += [schema, clock_check(engine, clock)]
            checks.append(policy_check(engine, clock) if schema.status == OK else
                          Check("policy", SKIP, "not checked: the schema is not this controller's"))
    checks += certificate_checks(settings, clock())
    checks.append(controller_check(settings))
    return checks


# ------------------------------------------------------------------------------------ the database


@contextmanager
def _database(settings: Settings) -> Iterator[tuple[Engine | None, Check]]:
    """An engine on the configured database and the database check; no engine when it cannot be used."""
    from controller.db import make_engine

    url = settings.resolved_database_url
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        yield None, Check("database", FAIL, f"the database URL {url!r} is not valid: {exc}")
        return
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        yield None, Check("database", FAIL, f"there is no database file {parsed.database} "
                                            "(`counterguard serve` creates it on its first start)")
        return
    if parsed.get_backend_name() == "postgresql":
        url = parsed.update_query_dict({"connect_timeout": str(int(CONNECT_TIMEOUT_SECONDS))}).render_as_string(
            hide_password=False)
    engine = make_engine(url)
    try:
        opened = database_check(engine, shown)
        yield (None if opened.status == FAIL else engine), opened
    finally:
        engine.dispose()


def database_check(engine: Engine, shown: str) -> Check:
    """Open the database, read its version and time a trivial query (best of three)."""
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                version = "PostgreSQL " + str(conn.execute(text("SHOW server_version")).scalar())
            else:
                version = "SQLite " + sqlite3.sqlite_version
            rounds = []
            for _ in range(3):
                began = time.perf_counter()
                conn.execute(text("SELECT 1")).scalar()
                rounds.append((time.perf_counter() - began) * 1000)
    except DBAPIError as exc:
        reason = " ".join(str(exc.orig).split())
        return Check("database", FAIL, f"cannot open the database {shown}: {reason}")
    latency = min(rounds)
    status = WARN if latency > LATENCY_WARNING_MS else OK
    return Check("database", status, f"{shown}: {version}, a query takes {latency:.1f} ms")


def schema_check(engine: Engine) -> Check:
    """The database's revision against the newest this controller knows."""
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    from controller.migrate import alembic_config, current_revision, head_revision

    head = head_revision()
    try:
        current = current_revision(engine)
    except DBAPIError as exc:
        return Check("schema", FAIL, f"cannot read the schema version: {' '.join(str(exc.orig).split())}")
    if current == head:
        return Check("schema", OK, f"at revision {head}, this controller's newest")
    if current is None:
        return Check("schema", FAIL, "the database has no CounterGuard schema yet "
                                     "(`counterguard serve` or any admin command creates it)")
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(current)
    except CommandError:
        return Check("schema", FAIL, f"at revision {current!r}, which this controller does not know "
                                     "(was it migrated by a newer CounterGuard?)")
    return Check("schema", FAIL, f"at revision {current}, behind this controller's {head}: "
                                 "start `counterguard serve` (or any admin command) to migrate it")


def clock_check(engine: Engine, clock: Clock) -> Check:
    """This host's clock against the database server's."""
    if engine.dialect.name != "postgresql":
        return Check("clock", OK, f"{_utc(clock())}; the database is a file on this host (one clock)")
    try:
        with engine.connect() as conn:
            before = clock()
            theirs = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
            after = clock()
    except DBAPIError as exc:
        return Check("clock", FAIL, f"cannot read the database server's time: {' '.join(str(exc.orig).split())}")
    ours = before + (after - before) / 2
    skew = ours - theirs
    off = abs(skew.total_seconds())
    direction = "ahead of" if skew > dt.timedelta(0) else "behind"
    detail = f"this host is {off:.1f} s {direction} the database server ({_utc(theirs)})"
    if abs(skew) > CLOCK_FAILURE:
        return Check("clock", FAIL, detail + "; set both clocks by NTP")
    if abs(skew) > CLOCK_WARNING:
        return Check("clock", WARN, detail + "; check NTP on both hosts")
    return Check("clock", OK, detail)


def policy_check(engine: Engine, clock: Clock) -> Check:
    """The active policy, loaded the way the controller loads it."""
    from controller.policy.loader import PolicyError
    from controller.policy.store import PolicyStore

    store = PolicyStore(engine, clock)
    history = store.history(limit=1)
    if not history:
        return Check("policy", WARN,
                     "no policy applied yet (`counterguard serve` applies the default on its first start)")
    record = history[0]
    try:
        loaded = store.load(record)
    except PolicyError as exc:
        first = str(exc).splitlines()[0]
        return Check("policy", FAIL, f"the active policy {record.label} does not load: {first}")
    enabled = sum(1 for rule in loaded.policy.rules if rule.enabled)
    return Check("policy", OK, f"{record.label}, applied by {record.applied_by or 'someone'} on "
                               f"{_utc(record.applied_at)}; {enabled} rules in force")


# ------------------------------------------------------------------------------------ certificates


def certificate_checks(settings: Settings, now: dt.datetime) -> list[Check]:
    """The CA and the server certificate, each with its key; the server's issued by the CA."""
    folder = settings.pki_dir
    ca_path = Path(settings.ca_cert) if settings.ca_cert else folder / "ca.pem"
    ca_key = Path(settings.ca_key) if settings.ca_key else folder / "ca.key"
    server_path = Path(settings.server_cert) if settings.server_cert else folder / "server.pem"
    server_key = Path(settings.server_key) if settings.server_key else folder / "server.key"
    ca, ca_check = _certificate("CA certificate", ca_path, ca_key, now)
    server, server_check = _certificate("server certificate", server_path, server_key, now)
    if ca is not None and server is not None and server_check.status != FAIL:
        try:
            server.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            server_check = Check("server certificate", FAIL,
                                 f"{server_path} was not issued by the CA {ca_path} ({exc.__class__.__name__})")
    return [ca_check, server_check]


def _certificate(name: str, path: Path, key_path: Path, now: dt.datetime) -> tuple[x509.Certificate | None, Check]:
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return None, Check(name, FAIL, f"{path} does not exist (`counterguard serve` creates it on its first start)")
    except (OSError, ValueError) as exc:
        return None, Check(name, FAIL, f"{path} cannot be read as a PEM certificate: {exc}")
    problem = _key_problem(certificate, key_path)
    if problem:
        return certificate, Check(name, FAIL, problem)
    until = certificate.not_valid_after_utc
    if certificate.not_valid_before_utc > now:
        return certificate, Check(name, FAIL, f"{path} is not valid before {_utc(certificate.not_valid_before_utc)}")
    if until <= now:
        return certificate, Check(name, FAIL, f"{path} expired on {_utc(until)}")
    left = until - now
    detail = f"{path} valid until {_utc(until)} ({left.days} days), its key {key_path} matches"
    return certificate, Check(name, WARN if left < EXPIRY_WARNING else OK, detail)


def _key_problem(certificate: x509.Certificate, key_path: Path) -> str | None:
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        return f"its key {key_path} does not exist"
    except (OSError, ValueError, TypeError) as exc:
        return f"its key {key_path} cannot be read: {exc}"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    ours = key.public_key().public_bytes(serialization.Encoding.DER, public)
    if ours != certificate.public_key().public_bytes(serialization.Encoding.DER, public):
        return f"the key {key_path} does not match the certificate"
    return None


# ------------------------------------------------------------------------------------ the running controller


def controller_check(settings: Settings) -> Check:
    """Whether a controller answers on the configured ports: TCP on both, health over TLS on the enrolment port."""
    agents, enrolment = _local(settings.listen), _local(settings.enroll_listen)
    open_agents, open_enrolment = _accepts(agents), _accepts(enrolment)
    if not open_agents and not open_enrolment:
        return Check("controller", WARN, f"no controller is listening on {agents} or {enrolment} on this host")
    if not open_agents or not open_enrolment:
        closed, other = (agents, enrolment) if not open_agents else (enrolment, agents)
        return Check("controller", FAIL, f"{other} is open but {closed} is not: is a controller half started?")
    problem = _health_problem(settings, enrolment)
    if problem:
        return Check("controller", FAIL, f"something listens on {enrolment} but {problem}")
    return Check("controller", OK, f"answering on {agents} (agents) and {enrolment} (enrolment): SERVING")


def _local(address: str) -> str:
    """Where to reach a server that listens on ``address`` from this host."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_SECONDS):
            return True
    except (OSError, ValueError):
        return False


def _health_problem(settings: Settings, address: str) -> str | None:
    """Why the server at ``address`` is not a healthy CounterGuard controller, or ``None``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from controller.grpc_server import SERVICE_NAME

    ca_path = Path(settings.ca_cert) if settings.ca_cert else settings.pki_dir / "ca.pem"
    try:
        credentials = grpc.ssl_channel_credentials(ca_path.read_bytes())
    except OSError:
        return f"its TLS certificate cannot be checked without the CA certificate {ca_path}"
    with grpc.secure_channel(address, credentials) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=CONNECT_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            details = exc.details() if hasattr(exc, "details") else str(exc)  # type: ignore[attr-defined]
            return f"does not answer as a CounterGuard controller: {details}"
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        return f"reports {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}"
    return None


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
