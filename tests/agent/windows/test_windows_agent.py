"""The agent as it would run on Windows: ``sys.platform`` forced to ``win32`` in a process of its own, every
Windows probe's OS boundary faked (``fake_win32.py``: kernel32, the System event log, the session API, winreg and
WMI with the recorded dumps), everything above it real. The agent reports over real gRPC with mutual TLS to
the agent tests' controller (``tests/agent/conftest.py``) running in this process.

Nothing here has run on Windows: what it shows is that the Windows back ends are the ones chosen, that they
work together in the real service and start-up path, and what they report for a PC in a known state.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import cli
from agent.config import AgentConfig
from protos.counterguard.v1 import facts_pb2
from tests.agent.windows import fake_pywin32
from tests.agent.windows.fake_win32 import kernel_boot_event, service_stop_event

REPO = Path(__file__).resolve().parents[3]
Power = facts_pb2.PowerEvent
NOW = dt.datetime.now(dt.UTC)
FULL_BOOT = NOW - dt.timedelta(days=5)  # the kernel's boot: Fast Startup shutdowns every evening since
POWER_ON = NOW - dt.timedelta(hours=1, microseconds=700)  # this morning's power-on, a Fast Startup
LOGON = NOW - dt.timedelta(minutes=50)


def pc(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A counter PC up five days by its tick count (four of them off), switched on an hour ago."""
    return {
        "ticks_ms": 5 * 86_400_000, "asleep_ms": 4 * 86_400_000,
        "events": [kernel_boot_event(FULL_BOOT + dt.timedelta(seconds=4), "0", 41_200),
                   service_stop_event(NOW - dt.timedelta(hours=15), 41_950),
                   kernel_boot_event(POWER_ON, "1", 42_013)],
        "sessions": [{"id": 0, "station": "Services", "state": 4},
                     {"id": 1, "station": "Console", "state": 0, "user": "zhangwei", "domain": "CK-3F-W07",
                      "logon": LOGON.isoformat()},
                     {"id": 65536, "station": "RDP-Tcp", "state": 6}],
        "state_dir": str(tmp_path / "agent"), "run_dir": str(tmp_path / "run"),
        **extra,
    }


def run_forced(scenario: str, spec: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "tests.agent.windows.forced_windows", scenario, json.dumps(spec)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    answer: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return answer


def held(controller) -> list[facts_pb2.Fact]:
    with controller.servicer.lock:
        return [controller.servicer.held[sequence] for sequence in sorted(controller.servicer.held)]


def power_events(facts: list[facts_pb2.Fact]) -> list[tuple[int, dt.datetime]]:
    return [(f.power.kind, f.power.boot_time.ToDatetime(tzinfo=dt.UTC))
            for f in facts if f.WhichOneof("kind") == "power"]


def test_on_windows_the_collectors_report_the_power_on_as_the_boot_and_the_users_sessions(tmp_path: Path) -> None:
    remote = NOW - dt.timedelta(minutes=1)
    later = [{"id": 1, "station": "", "state": 4, "user": "zhangwei", "domain": "CK-3F-W07",
              "logon": LOGON.isoformat()},  # switched away from: still logged in, station name gone
             {"id": 2, "station": "RDP-Tcp#0", "state": 0, "user": "Admin", "domain": "GOV", "client": "IT-LAPTOP",
              "protocol": 2, "logon": remote.isoformat()}]
    result = run_forced("collect", pc(tmp_path, later=later))

    assert result["backends"] == ["agent.collectors._power_windows", "agent.collectors._sessions_windows"]
    # Not the kernel's boot five days ago. Compared as times: the JSON form drops trailing zeros (.767Z).
    for name, kind in (("boot", "KIND_BOOT"), ("heartbeat", "KIND_HEARTBEAT"), ("shutdown", "KIND_SHUTDOWN")):
        assert (set(result[name]), result[name]["kind"]) == ({"kind", "bootTime"}, kind)
        assert dt.datetime.fromisoformat(result[name]["bootTime"]) == POWER_ON, name
    assert result["snapshot"] == {"sessions": [{"username": "CK-3F-W07\\zhangwei", "terminal": "1",
                                                "startedAt": LOGON.strftime("%Y-%m-%dT%H:%M:%SZ")}]}
    assert result["events"] == [  # the disconnect is no logout
        {"kind": "KIND_LOGIN", "session": {"username": "GOV\\Admin", "terminal": "2", "host": "IT-LAPTOP",
                                           "startedAt": remote.strftime("%Y-%m-%dT%H:%M:%SZ")}}]
    assert (result["stopping_before"], result["stopping_after"]) == (False, True)
    assert result["unfreed"] == 0  # every session buffer freed, every event handle closed


def test_the_agent_starts_on_windows_and_delivers_its_start_up_facts(tmp_path: Path, controller, enrolled,
                                                                     agent_config: AgentConfig) -> None:
    spec = pc(tmp_path, state_dir=str(agent_config.state_dir))
    result = run_forced("run-once", spec)
    facts = held(controller)
    assert result == {"delivered": len(facts), "unfreed": 0}
    kinds = {f.WhichOneof("kind") for f in facts}
    assert {"power", "inventory", "software_snapshot", "process_snapshot", "session_snapshot",
            "removable_storage"} <= kinds
    assert power_events(facts) == [(Power.KIND_BOOT, POWER_ON), (Power.KIND_HEARTBEAT, POWER_ON)]
    (sessions,) = [f.session_snapshot for f in facts if f.WhichOneof("kind") == "session_snapshot"]
    assert [(s.username, s.terminal, s.host) for s in sessions.sessions] == [("CK-3F-W07\\zhangwei", "1", "")]
    (software,) = [f.software_snapshot for f in facts if f.WhichOneof("kind") == "software_snapshot"]
    wechat = {item.name: item for item in software.items}["WeChat"]  # through winreg, from the recorded hive
    assert (wechat.display_name, wechat.source) == ("微信", facts_pb2.SOFTWARE_SOURCE_WINDOWS_REGISTRY)
    (inventory,) = [f.inventory for f in facts if f.WhichOneof("kind") == "inventory"]
    assert (inventory.system.vendor, inventory.os.family) == ("LENOVO", "windows")  # through WMI
    sticks = [f.removable_storage for f in facts if f.WhichOneof("kind") == "removable_storage"]
    assert [(s.action, s.device, s.serial) for s in sticks] == [
        (facts_pb2.RemovableStorage.ACTION_ATTACHED, "PHYSICALDRIVE2", "4C530001230101109363")]


@pytest.mark.parametrize(("control", "shutdown"), [(fake_pywin32.SERVICE_CONTROL_SHUTDOWN, True),
                                                   (fake_pywin32.SERVICE_CONTROL_STOP, False)],
                         ids=["windows-shuts-down", "service-stopped"])
def test_the_service_reports_a_shutdown_only_when_windows_shuts_down(tmp_path: Path, controller, enrolled,
                                                                     agent_config: AgentConfig, control: int,
                                                                     shutdown: bool) -> None:
    result = run_forced("service", pc(tmp_path, state_dir=str(agent_config.state_dir), control=control))
    assert result["failure"] is None and result["states"][-1] == fake_pywin32.SERVICE_STOPPED
    facts = held(controller)
    assert result["depth"] == 0 and result["last_sequence"] == facts[-1].sequence  # the last send took the rest
    kinds = [kind for kind, _ in power_events(facts)]
    assert kinds[0] == Power.KIND_BOOT and (Power.KIND_SHUTDOWN in kinds) is shutdown
    if shutdown:
        assert power_events(facts)[-1] == (Power.KIND_SHUTDOWN, POWER_ON)


# ------------------------------------------------------------------ `counterguard-agent run` in a console


@pytest.fixture
def root_log_handlers() -> Iterator[None]:
    """``run`` opens its log file on the root logger; the test process keeps its own handlers."""
    before = list(logging.getLogger().handlers)
    yield
    for handler in set(logging.getLogger().handlers) - set(before):
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_run_in_a_windows_console_enters_the_multithreaded_apartment_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, controller, enrolled, agent_config: AgentConfig,
        root_log_handlers: None) -> None:
    (tmp_path / "pythoncom.py").write_text("import sys, threading\n"
                                           "FLAGS_AT_IMPORT = getattr(sys, 'coinit_flags', None)\n"
                                           "THREADS_AT_IMPORT = threading.active_count()\n")
    monkeypatch.delitem(sys.modules, "pythoncom", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "coinit_flags", None, raising=False)
    monkeypatch.setattr("agent.selflimit.lower_priority", lambda: None)  # the process priority: the OS boundary
    threads_before = __import__("threading").active_count()
    config = dataclasses.replace(agent_config, run_dir=tmp_path / "run")

    assert cli._run(config, argparse.Namespace(once=True), platform="win32") == 0

    pythoncom = sys.modules["pythoncom"]
    assert pythoncom.FLAGS_AT_IMPORT == 0  # COINIT_MULTITHREADED, chosen before pythoncom initialised COM
    assert pythoncom.THREADS_AT_IMPORT == threads_before  # before the agent started any thread
    assert held(controller)  # and the agent ran
    monkeypatch.delitem(sys.modules, "pythoncom")


def test_run_in_a_linux_console_leaves_com_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, controller,
                                                 enrolled, agent_config: AgentConfig, root_log_handlers: None) -> None:
    monkeypatch.delitem(sys.modules, "pythoncom", raising=False)
    monkeypatch.setattr("agent.selflimit.lower_priority", lambda: None)
    config = dataclasses.replace(agent_config, run_dir=tmp_path / "run")
    assert cli._run(config, argparse.Namespace(once=True), platform="linux") == 0
    assert "pythoncom" not in sys.modules  # nothing Windows-only imported on Linux
