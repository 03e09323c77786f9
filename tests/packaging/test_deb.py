"""The agent's Debian package: built once per module with ``scripts/build-deb.sh``, inspected, then
installed on this machine with ``dpkg -i``, run, removed and purged.

It needs root and dpkg (CI and the developers' machines are root on Debian 12); without them it fails
with the reason rather than skipping. systemd is not PID 1 here, so the maintainer scripts take their
"no systemd" path; ``systemd-analyze verify`` still checks the installed unit. The installed agent is
also enrolled with a real controller from this tree and delivers its start-up facts, which proves the
private environment has everything the agent imports (grpcio, protobuf, cryptography, ...).
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "counterguard-agent"
PREFIX = Path("/opt/counterguard-agent")
UNIT = Path("/lib/systemd/system/counterguard-agent.service")
CONFFILE = Path("/etc/counterguard/agent.toml")
STATE = Path("/var/lib/counterguard-agent")
WRAPPER = Path("/usr/bin/counterguard-agent")


@dataclass(frozen=True)
class Built:
    path: Path
    seconds: float


def _run(*cmd: str | Path, check: bool = True, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command without this environment's COUNTERGUARD_* settings; fail with its output unless it succeeds."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERGUARD_")}
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env={**clean, **(env or {})},
                            cwd=cwd, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _installed() -> bool:
    result = _run("dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE, check=False)
    return result.returncode == 0 and result.stdout.strip() not in ("", "not-installed")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The package, built into a temporary folder (not the repository's dist/)."""
    if os.geteuid() != 0 or shutil.which("dpkg-deb") is None:
        pytest.fail("the packaging tests build and install a .deb: they need root and dpkg-deb (Debian)")
    dist = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    _run("bash", REPO / "scripts" / "build-deb.sh", env={"DIST": str(dist)})
    seconds = time.monotonic() - started
    (path,) = dist.glob(f"{PACKAGE}_*.deb")
    return Built(path, seconds)


@pytest.fixture(scope="module")
def contents(deb: Built) -> list[str]:
    """The paths in the package, without the leading ``.``."""
    listing = _run("dpkg-deb", "--contents", deb.path).stdout
    return [line.split(maxsplit=5)[5].split(" -> ")[0].lstrip(".") for line in listing.splitlines()]


@pytest.fixture
def purge_afterwards() -> Iterator[None]:
    """Whatever happens in the test, the package does not stay on this machine."""
    try:
        yield
    finally:
        if _installed():
            _run("dpkg", "--purge", PACKAGE, check=False)


def test_control_fields(deb: Built, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    info = _run("dpkg-deb", "--info", deb.path).stdout
    fields = dict(line.strip().split(": ", 1) for line in info.splitlines() if line.startswith(" ") and ": " in line)
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    assert deb.path.name == f"{PACKAGE}_{fields['Version']}_{arch}.deb"
    assert (fields["Package"], fields["Architecture"]) == (PACKAGE, arch)
    assert "python3 (>= 3.11)" in fields["Depends"] and "python3 (<< 3.12)" in fields["Depends"]
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert script in info
    size_mib = deb.path.stat().st_size / 2**20
    request.node.user_properties += [("deb_size_mib", round(size_mib, 1)), ("deb_build_seconds", round(deb.seconds, 1))]
    with capsys.disabled():
        print(f"\n    [deb] {deb.path.name}: {size_mib:.1f} MiB, built in {deb.seconds:.0f} s", flush=True)
    assert size_mib < 40, f"the package is {size_mib:.1f} MiB"


def test_contents_are_the_agent_alone(contents: list[str]) -> None:
    site = f"{PREFIX}/lib/python3.11/site-packages"
    assert str(UNIT) in contents and str(CONFFILE) in contents and str(WRAPPER) in contents
    assert f"{site}/agent/cli.py" in contents and f"{site}/protos/counterguard/v1/facts_pb2.py" in contents
    assert f"{site}/grpc/__init__.py" in contents and f"{site}/psutil/__init__.py" in contents
    assert not [p for p in contents if "/controller/" in p or p.endswith("/controller")]
    assert not [p for p in contents if "/site-packages/" in p and p.split("/site-packages/")[1].split("/")[0].lower()
                in ("sqlmodel", "sqlalchemy", "typer", "yaml", "pydantic", "alembic", "psycopg", "policies")]
    assert f"{site}/protos/generate.py" not in contents
    assert not [p for p in contents if "/tests/" in p and "/site-packages/agent" in p]


def test_shipped_configuration_names_only_real_settings(tmp_path: Path) -> None:
    """packaging/agent.toml is valid as shipped, and still valid with every commented setting uncommented."""
    from agent.config import load_config

    shipped = REPO / "packaging" / "agent.toml"
    load_config(shipped, environ={})
    lines = shipped.read_text(encoding="utf-8").splitlines()
    settings = [line[2:] for line in lines if re.match(r"# [a-z_]+ = ", line)]
    assert len(settings) > 15
    uncommented = tmp_path / "agent.toml"
    uncommented.write_text("[agent]\n" + "\n".join(settings) + "\n", encoding="utf-8")
    load_config(uncommented, environ={})  # an unknown key or a bad value raises ConfigError naming it


def test_unit_has_the_required_settings() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "packaging" / "systemd" / f"{PACKAGE}.service", encoding="utf-8")
    service = unit["Service"]
    expected = {
        "Type": "simple", "ExecStart": "/usr/bin/counterguard-agent run", "Restart": "on-failure", "RestartSec": "5",
        "Nice": "10", "IOSchedulingClass": "idle", "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/counterguard-agent", "StateDirectory": "counterguard-agent",
        "ProtectHome": "read-only", "PrivateTmp": "yes", "NoNewPrivileges": "yes", "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert service.get("MemoryMax") and service.get("CPUQuota")
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_install_run_remove_purge(deb: Built, tmp_path: Path, purge_afterwards: None) -> None:
    from tests.integration.processes import start_controller

    _run("dpkg", "--install", deb.path)
    assert _installed()
    assert WRAPPER.exists() and UNIT.is_file() and CONFFILE.is_file()
    assert stat.S_IMODE(STATE.stat().st_mode) == 0o700
    assert "/etc/counterguard/agent.toml" in _run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout
    assert "/tmp" not in (PREFIX / "pyvenv.cfg").read_text(), "the staging root leaked into pyvenv.cfg"

    # The installed command, from a folder where nothing of this repository can be imported.
    helped = _run(WRAPPER, "--help", cwd=tmp_path)
    assert "enroll" in helped.stdout and "status" in helped.stdout
    status = _run(WRAPPER, "status", cwd=tmp_path, check=False)
    assert status.returncode == 0, status.stderr  # status reports "not enrolled"; it is not an error
    assert "enrolled:      no" in status.stdout and "counterguard-agent enroll" in status.stdout
    assert "Traceback" not in status.stderr
    origin = _run(PREFIX / "bin" / "python3", "-I", "-c",
                  "import agent, grpc; from agent.collectors import COLLECTORS\n"
                  "[c.load() for c in COLLECTORS]\n"
                  "print(agent.__file__)\n"
                  "try:\n    import controller\nexcept ImportError:\n    print('no controller')\n",
                  cwd=tmp_path).stdout.split()
    assert origin == [f"{PREFIX}/lib/python3.11/site-packages/agent/__init__.py", "no", "controller"]

    # The packaged agent enrols with a real controller and delivers its start-up facts.
    controller = start_controller(tmp_path / "controller")
    try:
        state = tmp_path / "agent-state"
        _run(WRAPPER, "--state-dir", state, "enroll", "--controller", f"127.0.0.1:{controller.enroll_port}",
             "--token", controller.token(), "--ca-cert", controller.ca_cert, cwd=tmp_path)
        delivered = _run(WRAPPER, "--state-dir", state, "run", "--once", cwd=tmp_path).stdout
        assert delivered.startswith("delivered ") and int(delivered.split()[1]) > 0
    finally:
        controller.stop()

    if shutil.which("systemd-analyze"):
        verify = _run("systemd-analyze", "verify", UNIT, check=False)
        complaints = [line for line in (verify.stdout + verify.stderr).splitlines() if UNIT.name in line]
        assert verify.returncode == 0 and not complaints, verify.stdout + verify.stderr

    _run("dpkg", "--remove", PACKAGE)
    assert not WRAPPER.exists() and not WRAPPER.is_symlink() and not UNIT.exists() and not PREFIX.exists()
    assert CONFFILE.is_file() and STATE.is_dir(), "remove keeps the configuration and the agent's identity"

    _run("dpkg", "--purge", PACKAGE)
    assert not _installed()
    assert not CONFFILE.exists() and not CONFFILE.parent.exists() and not STATE.exists()
