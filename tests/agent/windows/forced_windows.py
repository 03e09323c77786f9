"""Agent code run with ``sys.platform`` forced to ``win32`` and the OS boundary faked (``fake_win32``), in a
process of its own: ``python -m tests.agent.windows.forced_windows SCENARIO JSON`` prints one JSON line.

The collectors choose their Windows back ends at import and load the Win32 DLLs, ``winreg`` and WMI when first
used, exactly as on a PC; here those answer from :class:`~tests.agent.windows.fake_win32.FakeWindows` and from
the recorded registry and WMI dumps of the back-end tests. Modules from outside the agent that choose their own
back end at import (psutil, watchdog, subprocess, multiprocessing, ...) are imported first, as Linux ones: they
are not what is tested.

Scenarios (the JSON gives the PC: ``ticks_ms``, ``asleep_ms``, ``events`` (System log XML, oldest first),
``sessions``, ``state_dir``, ``run_dir``):

- ``collect``: the power and session collectors' facts, then those after the sessions change to ``later``;
- ``run-once``: ``AgentService(config).run_once()`` against the controller the enrolment in ``state_dir`` names;
- ``service``: the Windows service (``host``, pywin32 replaced by ``fake_pywin32``) runs the agent until every
  start-up fact is delivered, then the fake SCM sends ``control`` (stop or shutdown).
"""

from __future__ import annotations

import concurrent.futures  # noqa: F401 - imported before the platform is forced, as are the rest of these
import datetime as dt
import json
import logging.handlers  # noqa: F401
import multiprocessing.connection  # noqa: F401
import socket  # noqa: F401
import sqlite3  # noqa: F401
import ssl  # noqa: F401
import subprocess  # noqa: F401
import sys
import threading
import time
from pathlib import Path
from typing import Any

import google.protobuf.json_format
import grpc  # noqa: F401
import jeepney  # noqa: F401
import psutil  # noqa: F401
import watchdog.events  # noqa: F401
import watchdog.observers  # noqa: F401

REPO = Path(__file__).resolve().parents[3]
RECORDED_REGISTRY = REPO / "tests/agent/collectors/data/windows/registry_office_pc.json"
RECORDED_WMI = REPO / "tests/agent/collectors/data/windows/wmi_lenovo_m720t.json"


def _as_dict(message: Any) -> dict[str, Any]:
    return google.protobuf.json_format.MessageToDict(message)


def _windows(spec: dict[str, Any]) -> Any:
    from tests.agent.windows.fake_win32 import FakeWindows

    windows = FakeWindows()
    windows.ticks_ms, windows.asleep_ms = spec["ticks_ms"], spec.get("asleep_ms", 0)
    windows.events = list(spec.get("events", []))
    windows.sessions = [_session(s) for s in spec.get("sessions", [])]
    windows.drives = {"C:": 3}
    return windows


def _session(raw: dict[str, Any]) -> Any:
    from tests.agent.windows.fake_win32 import Session

    fields = dict(raw)
    logon = fields.pop("logon", None)
    return Session(**fields, logon=dt.datetime.fromisoformat(logon) if logon else None)


def _collect(windows: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from agent.collectors import Roots, power, sessions

    roots = Roots()
    tracker = sessions.SessionTracker(roots)
    result = {
        "backends": [power._backend.__name__, sessions._backend.__name__],
        "boot": _as_dict(power.boot_event(roots)),
        "heartbeat": _as_dict(power.heartbeat(roots)),
        "stopping_before": power.system_is_stopping(),
        "snapshot": _as_dict(tracker.snapshot()),
    }
    windows.sessions = [_session(s) for s in spec["later"]]
    result["events"] = [_as_dict(event) for event in tracker.poll()]
    from agent.collectors import _power_windows

    _power_windows.note_system_stopping()
    result["stopping_after"] = power.system_is_stopping()
    result["shutdown"] = _as_dict(power.shutdown_event(roots))
    result["unfreed"] = len(windows.allocations) + len(windows.bad_frees) + len(windows.open_handles)
    return result


def _config(spec: dict[str, Any], **overrides: Any) -> Any:
    from agent.config import AgentConfig

    return AgentConfig(state_dir=Path(spec["state_dir"]), run_dir=Path(spec["run_dir"]), rpc_timeout_seconds=5,
                       run_once_timeout_seconds=20, **overrides)


def _run_once(windows: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from agent.service import AgentService

    service = AgentService(_config(spec))
    try:
        delivered = service.run_once()
    finally:
        service.close()
    return {"delivered": delivered, "unfreed": len(windows.allocations) + len(windows.bad_frees)}


def _service(windows: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from agent.outbox import Outbox
    from agent.windows.service import host
    from tests.agent.windows.fake_pywin32 import FakeScm

    scm = FakeScm()
    sys.modules.update(scm.modules())
    config = _config(spec, report_interval_seconds=0.2, heartbeat_interval_seconds=30)
    thread = threading.Thread(target=host, args=(config,), kwargs={"lower_priority": lambda: None})
    thread.start()
    assert scm.running.wait(20), "the service never reported RUNNING"
    deadline = time.monotonic() + 20
    while True:  # every start-up fact delivered
        with Outbox(config.outbox_path, max_facts=config.outbox_max_facts) as outbox:
            if outbox.last_sequence() > 0 and outbox.depth() == 0:
                break
        assert time.monotonic() < deadline, f"the start-up facts were not delivered ({scm.failure!r}, {scm.states()})"
        time.sleep(0.1)
    scm.control(spec["control"])
    assert scm.stopped.wait(30), "the service did not stop"
    thread.join(30)
    with Outbox(config.outbox_path, max_facts=config.outbox_max_facts) as outbox:
        depth, last = outbox.depth(), outbox.last_sequence()
    return {"states": scm.states(), "failure": repr(scm.failure) if scm.failure else None, "depth": depth,
            "last_sequence": last}


SCENARIOS = {"collect": _collect, "run-once": _run_once, "service": _service}


def main(scenario: str, spec: dict[str, Any]) -> None:
    from tests.agent.windows import fake_win32

    sys.platform = "win32"
    windows = _windows(spec)
    fake_win32.install(windows, json.loads(RECORDED_REGISTRY.read_text(encoding="utf-8"))["keys"],
                       json.loads(RECORDED_WMI.read_text(encoding="utf-8"))["classes"])
    print(json.dumps(SCENARIOS[scenario](windows, spec)))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
