"""A real ``dpkg -i`` on this machine reaches a real controller's software list in seconds, and ``dpkg -r`` too.

A tiny package is built with ``dpkg-deb``, installed while a real agent runs (its software rescan an
hour away, so only the install watcher can find it in time), looked for with ``counterguard software
list`` and removed in a ``finally``. Installing needs root: without it the test fails and says so.
The wait is generous (30 s) so a busy shared machine cannot fail it; the 10 s target is measured by
``bench/agent.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.processes import Agent, Controller, wait_for

pytestmark = pytest.mark.integration
DPKG_LOCK_WAIT = 120  # another engineer's test may be installing a package right now


def build_deb(folder: Path, name: str) -> Path:
    """A package holding one documentation file, in Section games."""
    tree = folder / name
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0-1\nSection: games\nPriority: optional\nArchitecture: all\n"
        "Maintainer: CounterGuard Tests <tests@counterguard.invalid>\n"
        "Description: install-detection probe of the CounterGuard tests\n", encoding="utf-8")
    doc = tree / "usr/share/doc" / name
    doc.mkdir(parents=True)
    (doc / "README").write_text("Installed by the CounterGuard tests; removed when they end.\n", encoding="utf-8")
    deb = folder / f"{name}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)
    return deb


def dpkg(*args: str) -> None:
    """``dpkg`` with the arguments, retried while another dpkg holds the lock."""
    deadline = time.monotonic() + DPKG_LOCK_WAIT
    while True:
        result = subprocess.run(["dpkg", *args], capture_output=True, text=True)
        if result.returncode == 0:
            return
        if "lock" not in result.stderr or time.monotonic() > deadline:
            raise AssertionError(f"dpkg {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        time.sleep(1)


def listed(controller: Controller, agent_id: str, name: str) -> dict | None:
    return next((s for s in controller.json("software", "list", agent_id) if s["name"] == name), None)


def test_a_dpkg_install_and_removal_reach_the_software_list(controller: Controller, agent: Agent,
                                                            tmp_path: Path) -> None:
    assert os.geteuid() == 0, ("this test installs a .deb with `dpkg -i` and must run as root "
                               f"(it runs as uid {os.geteuid()}); CI runs it as root")
    assert shutil.which("dpkg") and shutil.which("dpkg-deb"), "dpkg and dpkg-deb are needed (a Debian-based system)"
    name = f"counterguard-probe-{os.getpid()}"
    deb = build_deb(tmp_path, name)
    agent_id = agent.enroll(controller, controller.token("W07"))
    agent.settings["software_scan_interval_seconds"] = "3600"
    process = agent.start_logged(tmp_path / "agent-run.log")
    try:
        wait_for(lambda: listed(controller, agent_id, "dpkg"), timeout=60, what="the agent's first software list")
        assert listed(controller, agent_id, name) is None
        try:
            started = time.monotonic()
            dpkg("-i", str(deb))
            entry = wait_for(lambda: listed(controller, agent_id, name), timeout=30,
                             what=f"{name} in `counterguard software list`")
            print(f"dpkg -i to the software list: {time.monotonic() - started:.1f} s")
        finally:
            dpkg("-r", name)
        assert (entry["version"], entry["section"], entry["source"]) == ("1.0-1", "games", "dpkg")
        wait_for(lambda: listed(controller, agent_id, name) is None, timeout=30, what=f"{name} gone from the list")
    finally:
        process.terminate()
        process.wait(30)
