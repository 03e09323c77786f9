"""Antivirus: installed by dpkg package (a fake status file) or by path, running by a real process that
starts and stops, reported at the first check and then only when something changed."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.collectors._antivirus_linux import installed_packages
from agent.collectors.antivirus import AntivirusChecker, product_status, running_process_names
from protos.counterguard.v1 import agent_pb2

if TYPE_CHECKING:
    from conftest import FakeSystem

CLAMAV = agent_pb2.AntivirusProbe(name="ClamAV", process_names=["CLAMD", "freshclam"],
                                  packages=["clamav-daemon", "clamav"])
QIHOO = agent_pb2.AntivirusProbe(name="360 终端安全", process_names=["360EntClient.exe"],
                                 paths=["/opt/apps/360epp/files/bin/360EntClient"])


def status_file(fake: FakeSystem) -> None:
    fake.dpkg_status(
        "Package: clamav-daemon\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0.7+dfsg-1~deb12u1\n",
        "Package: clamav\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0.5+dfsg-1\n",
        "Package: libclamav11\nStatus: install ok installed\nArchitecture: i386\nMulti-Arch: same\nVersion: 1.0.7\n",
    )


def test_installed_packages_come_from_the_dpkg_parser(fake: FakeSystem) -> None:
    status_file(fake)
    assert installed_packages(fake.roots) == {
        "clamav-daemon": "1.0.7+dfsg-1~deb12u1", "clamav-daemon:amd64": "1.0.7+dfsg-1~deb12u1",
        "libclamav11": "1.0.7", "libclamav11:i386": "1.0.7",
    }  # clamav has only its configuration files left: not installed


def test_a_product_is_installed_by_package_or_path_and_running_by_name(tmp_path: Path) -> None:
    packages = {"clamav-daemon": "1.0.7"}
    clam = product_status(CLAMAV, packages, {"clamd", "bash"})
    assert (clam.name, clam.installed, clam.running, clam.version) == ("ClamAV", True, True, "1.0.7")
    assert not product_status(CLAMAV, {}, {"bash"}).installed
    marker = tmp_path / "360EntClient"
    probe = agent_pb2.AntivirusProbe(name="360", process_names=["360EntClient.exe"], paths=[str(marker)])
    assert not product_status(probe, packages, set()).installed
    marker.touch()
    found = product_status(probe, packages, {"360entclient"})  # Windows names match with or without .exe
    assert (found.installed, found.running, found.version) == (True, True, "")


@pytest.fixture
def fake_clamd(tmp_path: Path) -> Iterator[Path]:
    """A real program called ``clamd``: a copy of sleep."""
    program = tmp_path / "bin" / "clamd"
    program.parent.mkdir()
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", program)
    yield program


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_real_process_is_seen_running_and_then_stopped(fake: FakeSystem, fake_clamd: Path) -> None:
    status_file(fake)
    checker = AntivirusChecker([CLAMAV, QIHOO], fake.roots)
    first = checker.check()
    assert first is not None
    clam, qihoo = first.products
    assert (clam.installed, clam.running, clam.version) == (True, False, "1.0.7+dfsg-1~deb12u1")
    assert (qihoo.name, qihoo.installed, qihoo.running) == ("360 终端安全", False, False)
    assert checker.check() is None  # nothing changed
    process = subprocess.Popen([str(fake_clamd), "60"])
    try:
        wait_until(lambda: "clamd" in running_process_names())
        running = checker.check()
        assert running is not None and running.products[0].running and not running.products[1].running
        assert checker.check() is None
    finally:
        process.kill()
        process.wait()
    stopped = checker.check()
    assert stopped is not None and not stopped.products[0].running


def test_no_products_no_report_and_new_products_are_reported_at_once(fake: FakeSystem) -> None:
    status_file(fake)
    checker = AntivirusChecker([], fake.roots, running_names=set)
    assert checker.check() is None
    checker.set_probes([CLAMAV])
    assert [p.name for p in checker.check().products] == ["ClamAV"]
    checker.set_probes([CLAMAV])  # the policy sent again: its state is reported again
    assert checker.check() is not None and checker.probes == [CLAMAV]
