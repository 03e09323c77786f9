"""``counterguard doctor``: a healthy installation passes; each broken part fails its check, with the reason.

The installation is made the way ``serve`` makes it (:func:`controller.server.prepare`: migrated
database, CA and server certificate, default policy), on SQLite and PostgreSQL; the running
controller is a real gRPC server on loopback. Broken parts are real too: an expired certificate
made with ``cryptography``, a key that belongs to another certificate, an unreachable PostgreSQL, a
schema left at an old revision, an active policy that no longer loads, a port held by something
that does not speak TLS.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from controller.clock import utc_now
from controller.config import Settings
from controller.db import make_engine
from controller.doctor import FAIL, OK, SKIP, WARN, clock_check
from controller.migrate import current_revision, upgrade
from controller.pki import cert_pem, create_ca, issue_server_cert, key_pem, load_or_create_pki
from controller.policy.records import POLICY_ACTIVATION, POLICY_VERSION
from controller.server import build_server, prepare
from tests.controller.cli_run import run


@pytest.fixture
def installed(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A controller's data folder and database as ``serve`` leaves them, on free loopback ports."""
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    settings = Settings(data_dir=tmp_path / "controller", database_url=database_url,
                        listen=f"127.0.0.1:{ports[0]}", enroll_listen=f"127.0.0.1:{ports[1]}")
    monkeypatch.setenv("COUNTERGUARD_LISTEN", settings.listen)
    monkeypatch.setenv("COUNTERGUARD_ENROLL_LISTEN", settings.enroll_listen)
    prepare(settings, utc_now).engine.dispose()
    return settings


def doctor(capsys: pytest.CaptureFixture[str], settings: Settings) -> tuple[int, dict[str, tuple[str, str]]]:
    """``counterguard doctor --json``: the exit code and each check's status and detail."""
    code, out, err = run(capsys, "--data-dir", str(settings.data_dir), "--db", settings.resolved_database_url,
                         "doctor", "--json")
    assert "Traceback" not in err
    return code, {c["check"]: (c["status"], c["detail"]) for c in json.loads(out)}


@pytest.fixture
def controller(installed: Settings) -> Iterator[None]:
    engine = make_engine(installed.resolved_database_url)
    server = build_server(installed, engine, load_or_create_pki(installed, utc_now()))
    server.start()
    try:
        yield
    finally:
        server.stop(None)
        engine.dispose()


def statuses(checks: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {name: status for name, (status, _) in checks.items()}


# ------------------------------------------------------------------------------------ healthy


def test_a_healthy_installation_passes_and_a_stopped_controller_is_only_a_warning(
        installed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor(capsys, installed)

    assert code == 0
    assert statuses(checks) == {"database": OK, "schema": OK, "clock": OK, "policy": OK, "CA certificate": OK,
                                "server certificate": OK, "controller": WARN}
    assert "counterguard-default@" in checks["policy"][1]
    assert "no controller is listening" in checks["controller"][1]


def test_a_running_controller_answers(installed: Settings, controller: None,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor(capsys, installed)

    assert code == 0 and set(statuses(checks).values()) == {OK}
    assert checks["controller"][1].endswith("SERVING")


def test_the_table_names_every_check(installed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--data-dir", str(installed.data_dir), "--db", installed.resolved_database_url,
                       "doctor")
    assert code == 0
    for name in ("database", "schema", "clock", "policy", "CA certificate", "server certificate", "controller"):
        assert name in out


# ------------------------------------------------------------------------------------ certificates


def replace_server_certificate(settings: Settings, issued: dt.datetime, days: int, *, other_ca: bool = False) -> None:
    """Write a server certificate (and its key) issued at ``issued`` for ``days``, by our CA or another."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    folder = settings.pki_dir
    if other_ca:
        ca_key, ca = create_ca(issued)
    else:
        ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key(  # type: ignore[assignment]
            (folder / "ca.key").read_bytes(), password=None)
    key, certificate = issue_server_cert(ca_key, ca, ["localhost", "127.0.0.1"], issued, days=days)
    (folder / "server.pem").write_bytes(cert_pem(certificate))
    (folder / "server.key").write_bytes(key_pem(key))


def test_an_expired_server_certificate_fails(installed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    replace_server_certificate(installed, utc_now() - dt.timedelta(days=400), days=365)

    code, checks = doctor(capsys, installed)

    assert code == 1
    status, detail = checks["server certificate"]
    assert status == FAIL and "server.pem expired on" in detail
    assert checks["CA certificate"][0] == OK


def test_a_certificate_expiring_within_30_days_is_a_warning(installed: Settings,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    replace_server_certificate(installed, utc_now() - dt.timedelta(days=355), days=365)

    code, checks = doctor(capsys, installed)

    assert code == 0
    status, detail = checks["server certificate"]
    assert status == WARN and "(9 days)" in detail


def test_a_key_of_another_certificate_fails(installed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    kept = (installed.pki_dir / "server.pem").read_bytes()
    replace_server_certificate(installed, utc_now(), days=365)
    (installed.pki_dir / "server.pem").write_bytes(kept)  # the old certificate, the new key

    code, checks = doctor(capsys, installed)

    assert code == 1
    assert checks["server certificate"] == (FAIL, f"the key {installed.pki_dir / 'server.key'} does not match "
                                                  "the certificate")


def test_a_server_certificate_of_another_ca_fails(installed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    replace_server_certificate(installed, utc_now(), days=365, other_ca=True)

    code, checks = doctor(capsys, installed)

    assert code == 1
    status, detail = checks["server certificate"]
    assert status == FAIL and "was not issued by the CA" in detail


def test_missing_certificates_fail(installed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    (installed.pki_dir / "ca.pem").unlink()

    code, checks = doctor(capsys, installed)

    assert code == 1
    assert checks["CA certificate"][0] == FAIL and "does not exist" in checks["CA certificate"][1]
    assert not (installed.pki_dir / "ca.pem").exists()  # the doctor creates nothing


# ------------------------------------------------------------------------------------ database and schema


def test_an_unreachable_database_fails_and_what_needs_it_is_skipped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(data_dir=tmp_path / "controller",
                        database_url="postgresql+psycopg://postgres@127.0.0.1:1/counterguard")

    code, checks = doctor(capsys, settings)

    assert code == 1
    status, detail = checks["database"]
    assert status == FAIL and detail.startswith("cannot open the database postgresql+psycopg://postgres@127.0.0.1:1")
    assert (checks["schema"][0], checks["clock"][0], checks["policy"][0]) == (SKIP, SKIP, SKIP)


def test_a_missing_sqlite_file_fails_and_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(data_dir=tmp_path / "nothing-here")

    code, checks = doctor(capsys, settings)

    assert code == 1 and checks["database"][0] == FAIL and "there is no database file" in checks["database"][1]
    assert not (tmp_path / "nothing-here").exists()


def test_a_schema_behind_the_code_fails_and_is_left_alone(
        tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine, "0003")
        settings = Settings(data_dir=tmp_path / "controller", database_url=database_url)

        code, checks = doctor(capsys, settings)

        assert code == 1
        status, detail = checks["schema"]
        assert status == FAIL and detail.startswith("at revision 0003, behind this controller's")
        assert checks["policy"][0] == SKIP
        assert current_revision(engine) == "0003"
    finally:
        engine.dispose()


def test_an_active_policy_that_no_longer_loads_fails(installed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(installed.resolved_database_url)
    try:
        with engine.begin() as conn:
            version = conn.execute(insert(POLICY_VERSION).values(
                policy_id="counterguard-default", version="broken", sha256="0" * 64, content="id: [unclosed",
                source="hand-edited.yaml", applied_by="someone", applied_at=utc_now())).inserted_primary_key[0]
            conn.execute(insert(POLICY_ACTIVATION).values(policy_version_id=version, activated_by="someone",
                                                          activated_at=utc_now()))
    finally:
        engine.dispose()

    code, checks = doctor(capsys, installed)

    assert code == 1
    status, detail = checks["policy"]
    assert status == FAIL and detail.startswith("the active policy counterguard-default@broken does not load")


@pytest.mark.postgres
def test_a_clock_off_from_the_database_server_is_a_warning_then_a_failure(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        assert clock_check(engine, utc_now).status == OK
        ahead = clock_check(engine, lambda: utc_now() + dt.timedelta(seconds=30))
        behind = clock_check(engine, lambda: utc_now() - dt.timedelta(minutes=10))
    finally:
        engine.dispose()

    assert ahead.status == WARN and "30." in ahead.detail and "ahead of the database server" in ahead.detail
    assert behind.status == FAIL and "behind the database server" in behind.detail


# ------------------------------------------------------------------------------------ the ports


def test_something_else_on_the_ports_fails(installed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    holders = []
    for address in (installed.listen, installed.enroll_listen):
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", int(address.rpartition(":")[2])))
        holder.listen()
        holders.append(holder)
    try:
        code, checks = doctor(capsys, installed)
    finally:
        for holder in holders:
            holder.close()

    assert code == 1
    status, detail = checks["controller"]
    assert status == FAIL and "does not answer as a CounterGuard controller" in detail
