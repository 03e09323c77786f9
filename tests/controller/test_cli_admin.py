"""The admin commands ``token …``, ``agents …`` and ``serve``, run the way an admin runs them."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import Engine

from controller.clock import utc_now
from controller.config import Settings
from controller.enrollment import EnrollmentService
from controller.errors import PermissionDenied
from controller.ingest import IngestService
from controller.pki import ServerPKI, load_or_create_pki
from tests.controller.cli_run import run

COUNTERGUARD = Path(sys.executable).with_name("counterguard")
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(tmp_path: Path, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run the CLI against the test database (both back ends) and a data folder of its own."""
    data_dir = tmp_path / "admin"

    def invoke(*args: str) -> tuple[int, str, str]:
        return run(capsys, "--data-dir", str(data_dir), "--db", database_url, *args)

    return invoke


@pytest.fixture
def controller_pki(tmp_path: Path) -> ServerPKI:
    return load_or_create_pki(Settings(data_dir=tmp_path / "admin"), utc_now())


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pc")])
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)


# ----------------------------------------------------------------------------- token


def test_token_create_prints_a_token_that_enrolment_accepts(
    cli: Cli, engine: Engine, controller_pki: ServerPKI
) -> None:
    code, out, err = cli(
        "token", "create", "--window", "W05", "--unit", "民政局", "--expires", "2d", "--note", "spare PC"
    )

    assert (code, err) == (0, "")
    tokens = re.findall(r"^\s+([0-9a-f]{12}\.[A-Za-z0-9_-]{32})$", out, re.MULTILINE)
    assert len(tokens) == 1, out
    token = tokens[0]
    assert "shown only this once" in out
    assert "counterguard-agent enroll --controller " in out and f"--token {token} --ca-cert " in out
    result = EnrollmentService(engine, controller_pki).enroll(token, _csr(), hostname="pc-05")
    assert (result.window, result.unit) == ("W05", "民政局")
    with pytest.raises(PermissionDenied, match="used up"):
        EnrollmentService(engine, controller_pki).enroll(token, _csr())


def test_token_create_json_list_and_revoke(cli: Cli) -> None:
    code, out, _ = cli("token", "create", "--window", "W06", "--uses", "3", "--expires", "12h", "--json")
    assert code == 0
    created = json.loads(out)
    token_id = created["token_id"]
    assert created["token"].startswith(token_id + ".") and created["max_uses"] == 3
    assert created["token"] in created["enroll_command"]

    code, out, _ = cli("token", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [t["token_id"] for t in listed] == [token_id]
    assert listed[0]["status"] == "active" and "token" not in listed[0] and "secret_hash" not in listed[0]
    code, out, _ = cli("token", "list")
    assert code == 0 and token_id in out and "0/3" in out and created["token"] not in out

    code, out, err = cli("token", "revoke", token_id)
    assert (code, err) == (0, "") and f"Revoked enrolment token {token_id}" in out
    assert json.loads(cli("token", "list", "--json")[1]) == []
    assert [t["status"] for t in json.loads(cli("token", "list", "--all", "--json")[1])] == ["revoked"]

    code, out, err = cli("token", "revoke", token_id)
    assert code == 1 and out == "" and err.strip() == f"error: enrolment token '{token_id}' is already revoked"


@pytest.mark.parametrize(
    "args, message",
    [
        (("--expires", "3x"), "error: invalid duration '3x': use a number and m, h, d or w, such as 30m or 7d"),
        (("--uses", "0"), "error: the number of uses must be at least 1, not 0"),
    ],
)
def test_token_create_with_bad_input_is_a_one_line_error(cli: Cli, args: tuple[str, ...], message: str) -> None:
    code, out, err = cli("token", "create", "--window", "W01", *args)
    assert (code, out) == (1, "")
    assert err.splitlines() == [message]
    assert json.loads(cli("token", "list", "--all", "--json")[1]) == []


# ----------------------------------------------------------------------------- agents


def test_agents_list_show_and_revoke(cli: Cli, engine: Engine, controller_pki: ServerPKI) -> None:
    token = json.loads(cli("token", "create", "--window", "W07", "--uses", "2", "--json")[1])["token"]
    enrolment = EnrollmentService(engine, controller_pki)
    first = enrolment.enroll(token, _csr(), hostname="pc-a", os_family="linux", agent_version="0.1.0")
    second = enrolment.enroll(token, _csr(), hostname="pc-b")
    certificate = x509.load_pem_x509_certificate(first.certificate_pem)

    code, out, _ = cli("agents", "list", "--json")
    assert code == 0
    assert [(a["id"], a["hostname"], a["window"], a["revoked"]) for a in json.loads(out)] == sorted(
        [(first.agent_id, "pc-a", "W07", False), (second.agent_id, "pc-b", "W07", False)]
    )
    code, out, _ = cli("agents", "list")
    assert code == 0 and first.agent_id in out and second.agent_id in out and "never" in out

    code, out, _ = cli("agents", "show", first.agent_id, "--json")
    shown = json.loads(out)
    assert code == 0
    assert shown["cert_serial"] == format(certificate.serial_number, "x")
    assert shown["cert_not_after"] == certificate.not_valid_after_utc.isoformat()
    assert (shown["hostname"], shown["os_family"], shown["last_seen_at"], shown["last_sequence"]) == (
        "pc-a",
        "linux",
        None,
        0,
    )
    assert shown["outbox_depth"] is None
    code, out, _ = cli("agents", "show", first.agent_id)
    assert code == 0
    for text in (first.agent_id, "pc-a", shown["cert_serial"], shown["cert_fingerprint"][:16], "never", "W07",
                 "not reported"):
        assert text in out

    IngestService(engine).ingest(second.agent_id, [], outbox_depth=3_412)
    assert "3412 facts waiting" in cli("agents", "show", second.agent_id)[1]
    assert {a["id"]: a["outbox_depth"] for a in json.loads(cli("agents", "list", "--json")[1])} == {
        first.agent_id: None, second.agent_id: 3_412}
    assert "3412" in cli("agents", "list")[1]

    code, out, err = cli("agents", "revoke", first.agent_id, "--reason", "PC replaced")
    assert (code, err) == (0, "") and f"Revoked agent {first.agent_id}" in out
    code, out, _ = cli("agents", "show", first.agent_id)
    assert "PC replaced" in out
    revoked = {a["id"]: a["revoked"] for a in json.loads(cli("agents", "list", "--json")[1])}
    assert revoked == {first.agent_id: True, second.agent_id: False}

    code, out, err = cli("agents", "revoke", first.agent_id)
    assert code == 1 and out == "" and len(err.splitlines()) == 1 and "is already revoked" in err
    code, out, err = cli("agents", "show", "ag-0000000000")
    assert (code, out, err.strip()) == (1, "", "error: no agent 'ag-0000000000'")


# ----------------------------------------------------------------------------- serve


def _health(port: int, ca_pem: bytes) -> int:
    with grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca_pem)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return reply.status


def test_serve_prints_where_it_listens_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "served"
    process = subprocess.Popen(
        [
            str(COUNTERGUARD),
            "--data-dir",
            str(data_dir),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--enroll-listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("counterguard controller listening: agents (mutual TLS) on 127.0.0.1:"), line
        started = json.loads(line[line.index("{") :])
        assert started["listen"] == f"127.0.0.1:{started['port']}" and started["port"] > 0
        assert started["enroll_listen"] == f"127.0.0.1:{started['enroll_port']}" and started["enroll_port"] > 0
        assert Path(started["ca_cert"]) == data_dir / "pki" / "ca.pem"
        assert f"CA certificate {started['ca_cert']}" in line
        assert (
            _health(started["enroll_port"], Path(started["ca_cert"]).read_bytes())
            == health_pb2.HealthCheckResponse.SERVING
        )

        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.strip() == "counterguard controller stopped"
    assert "Traceback" not in err and "received SIGTERM" in err
    assert (data_dir / "counterguard.db").exists()


def test_serve_on_a_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", 0))
        occupier.listen()
        taken = f"127.0.0.1:{occupier.getsockname()[1]}"
        done = subprocess.run(
            [
                str(COUNTERGUARD),
                "--data-dir",
                str(tmp_path / "served"),
                "serve",
                "--listen",
                taken,
                "--enroll-listen",
                "127.0.0.1:0",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1 and done.stdout == ""
    assert f"error: cannot listen on {taken}: address already in use" in done.stderr.splitlines()
    assert "Traceback" not in done.stderr


def test_serve_with_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = subprocess.run(
        [
            str(COUNTERGUARD),
            "--data-dir",
            str(tmp_path / "served"),
            "--db",
            f"postgresql+psycopg://postgres:topsecret@127.0.0.1:{port}/cg",
            "serve",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    message = " ".join(done.stderr.split())  # the error console wraps long sentences at its width
    assert message.startswith(
        f"error: cannot open the database postgresql+psycopg://postgres:***@127.0.0.1:{port}/cg: "
    )
    assert "topsecret" not in done.stderr and "Traceback" not in done.stderr
