"""The running service reports a new install long before its scheduled rescan (an hour away): a .desktop
file written, and dpkg's database replaced the way dpkg does it, each reach the controller as a software
delta. How fast (target ≤ 10 s) is measured by bench/agent.py, not asserted here."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

from agent.config import AgentConfig
from agent.service import AgentService, roots_for
from protos.counterguard.v1 import facts_pb2

DPKG_BASE = "Package: dpkg\nStatus: install ok installed\nVersion: 1.21.22\nSection: admin\n"
WAIT_SECONDS = 120  # far below the hour of the scheduled rescan: only the watcher can be this quick


def deltas(controller) -> list[facts_pb2.SoftwareDelta]:
    held = controller.servicer.held
    return [held[s].software_delta for s in sorted(held) if held[s].WhichOneof("kind") == "software_delta"]


def seconds_until(condition, timeout: float = WAIT_SECONDS) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "the install never reached the controller"
        time.sleep(0.05)
    return time.monotonic() - started


def test_installs_reach_the_controller_without_waiting_for_the_scheduled_rescan(agent_config: AgentConfig, controller, enrolled, clock,
                                                          tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "applications").mkdir(parents=True)
    (root / "dpkg/info").mkdir(parents=True)
    (root / "dpkg/status").write_text(DPKG_BASE, encoding="utf-8")
    roots = dataclasses.replace(roots_for(agent_config), application_dirs=(root / "applications",),
                                dpkg_status=root / "dpkg/status", dpkg_info=root / "dpkg/info",
                                flatpak_dirs=(root / "flatpak",), snap_dir=root / "snap", opt_dirs=(root / "opt",))
    config = dataclasses.replace(agent_config, software_scan_interval_seconds=3600)  # default debounce: 2 s / 8 s
    service = AgentService(config, clock=clock, roots=roots)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        seconds_until(lambda: "software_snapshot" in {f.WhichOneof("kind") for f in controller.servicer.held.values()})

        (root / "applications/mines.desktop").write_text(
            "[Desktop Entry]\nType=Application\nName=Mines\nExec=mines\nCategories=Game;\n", encoding="utf-8")
        seconds_until(lambda: len(deltas(controller)) == 1)
        assert [item.name for item in deltas(controller)[0].added] == ["mines.desktop"]

        new = root / "dpkg/status-new"
        new.write_text(DPKG_BASE + "\nPackage: supertuxkart\nStatus: install ok installed\nVersion: 1.4\n"
                       "Section: games\n", encoding="utf-8")
        os.replace(new, root / "dpkg/status")
        seconds_until(lambda: len(deltas(controller)) == 2)
        assert [item.name for item in deltas(controller)[1].added] == ["supertuxkart"]
    finally:
        service.stop()
        thread.join(timeout=20)
        service.close()
    first, second = deltas(controller)
    assert [(i.name, list(i.categories)) for i in first.added] == [("mines.desktop", ["Game"])]
    assert [(i.name, i.section) for i in second.added] == [("supertuxkart", "games")]
    assert not (first.removed or first.changed or second.removed or second.changed)
