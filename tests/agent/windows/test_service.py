"""The Windows service entry point driving a real agent, with pywin32 replaced by a fake SCM (the OS boundary).

The agent is the real :class:`~agent.service.AgentService` reporting over real gRPC with mutual TLS, to the
agent tests' controller (``tests/agent/conftest.py``) and, in one integration test, to a real ``counterguard
serve`` process it enrolled with; only ``servicemanager``/``win32service``/``win32serviceutil``/``pywintypes``
and the process priority call are stand-ins (``fake_pywin32.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.errors import AgentError
from agent.outbox import Outbox
from agent.service import AgentService
from agent.windows import commands
from agent.windows.service import DISPLAY_NAME, SERVICE_NAME, ServiceFailure, ServiceHost, host, stop_wait_hint_ms
from protos.counterguard.v1 import facts_pb2
from tests.agent.windows import fake_pywin32 as fake
from tests.agent.windows.fake_pywin32 import FakeScm, Win32Error
from tests.integration.processes import Agent, start_controller


@pytest.fixture
def scm(monkeypatch: pytest.MonkeyPatch) -> FakeScm:
    manager = FakeScm()
    for name, module in manager.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "pythoncom", types.ModuleType("pythoncom"))
    monkeypatch.setattr(sys, "coinit_flags", None, raising=False)
    return manager


@pytest.fixture(autouse=True)
def root_log_handlers() -> Iterator[None]:
    """The service opens its log file on the root logger; the test process keeps its own handlers."""
    before = list(logging.getLogger().handlers)
    yield
    for handler in set(logging.getLogger().handlers) - set(before):
        logging.getLogger().removeHandler(handler)
        handler.close()


@pytest.fixture
def config(agent_config: AgentConfig, tmp_path: Path) -> AgentConfig:
    """The agent tests' settings, with the session channel in a folder of this test's own."""
    return dataclasses.replace(agent_config, run_dir=tmp_path / "run")


@pytest.fixture
def fast(config: AgentConfig, caplog: pytest.LogCaptureFixture) -> AgentConfig:
    caplog.set_level(logging.INFO)  # as the CLI sets it up
    return dataclasses.replace(config, report_interval_seconds=0.2, heartbeat_interval_seconds=0.2,
                               process_poll_interval_seconds=0.5, session_poll_interval_seconds=0.5)


class Priority:
    """Records the priority call instead of making it (the OS boundary)."""

    def __init__(self) -> None:
        self.lowered = 0

    def __call__(self) -> None:
        self.lowered += 1


class HostThread:
    """``counterguard-agent service`` as the SCM starts it: :func:`host`, on a thread standing in for the main one."""

    def __init__(self, config: AgentConfig, priority: Priority) -> None:
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(host(config, lower_priority=priority)))
        self.thread.start()

    def join(self) -> None:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the service dispatcher did not return"


def heartbeats(controller) -> int:
    with controller.servicer.lock:
        held = list(controller.servicer.held.values())
    return sum(1 for f in held
               if f.WhichOneof("kind") == "power" and f.power.kind == facts_pb2.PowerEvent.KIND_HEARTBEAT)


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("control", [fake.SERVICE_CONTROL_STOP, fake.SERVICE_CONTROL_SHUTDOWN],
                         ids=["stop", "shutdown"])
def test_the_scm_runs_the_agent_until_it_says_stop(scm: FakeScm, fast: AgentConfig, controller, enrolled,
                                                   control: int) -> None:
    priority = Priority()
    service = HostThread(fast, priority)
    try:
        wait_for(lambda: heartbeats(controller) >= 3)  # reporting over mTLS while the SCM says RUNNING
        assert scm.states() == [fake.SERVICE_START_PENDING, fake.SERVICE_RUNNING]
        scm.control(control)
        assert scm.stopped.wait(30)
    finally:
        if not scm.stopped.is_set():
            scm.control(fake.SERVICE_CONTROL_STOP)
        service.join()
    assert service.result == [0] and scm.failure is None
    assert scm.states() == [fake.SERVICE_START_PENDING, fake.SERVICE_RUNNING, fake.SERVICE_STOP_PENDING,
                            fake.SERVICE_STOP_PENDING, fake.SERVICE_STOPPED]
    stop_pending = scm.statuses[2]
    longest_stop = fast.rpc_timeout_seconds + fast.shutdown_send_timeout_seconds  # a call in flight, the last send
    assert stop_pending[3] == stop_wait_hint_ms(fast) >= longest_stop * 1000
    assert stop_pending[1] == fake.SERVICE_ACCEPT_STOP | fake.SERVICE_ACCEPT_SHUTDOWN
    assert scm.statuses[-1][2] == 0  # a clean stop: no recovery
    assert scm.events == [(fake.EVENTLOG_INFORMATION_TYPE, f"{SERVICE_NAME} started"),
                          (fake.EVENTLOG_INFORMATION_TYPE, f"{SERVICE_NAME} stopped")]
    assert scm.initialized and scm.event_source == SERVICE_NAME and priority.lowered == 1
    assert sys.coinit_flags == 0  # type: ignore[attr-defined]  # COM: the multithreaded apartment
    with Outbox(fast.outbox_path, max_facts=fast.outbox_max_facts) as outbox:
        assert outbox.depth() == 0  # everything observed was delivered before the stop
    assert "agent running" in fast.log_path.read_text(encoding="utf-8")  # the service logs to its state folder


@pytest.mark.integration
def test_the_service_reports_to_a_real_controller_until_the_scm_stops_it(scm: FakeScm, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    controller = start_controller(tmp_path / "controller")  # `counterguard serve` on SQLite
    try:
        agent = Agent(state_dir=tmp_path / "agent")
        agent_id = agent.enroll(controller, controller.token())
        config = AgentConfig(state_dir=agent.state_dir, run_dir=tmp_path / "run", report_interval_seconds=0.5,
                             heartbeat_interval_seconds=0.5)
        service = HostThread(config, Priority())
        try:
            wait_for(lambda: controller.json("agents", "show", agent_id).get("last_sequence", 0) >= 8, timeout=60)
        finally:
            scm.control(fake.SERVICE_CONTROL_STOP)
            service.join()
        assert scm.failure is None and scm.statuses[-1][:3] == (fake.SERVICE_STOPPED, 0, 0)
        with Outbox(config.outbox_path, max_facts=config.outbox_max_facts) as outbox:
            assert outbox.depth() == 0
            sent = outbox.last_sequence()
        assert controller.json("agents", "show", agent_id)["last_sequence"] == sent  # stored, every one
    finally:
        controller.stop()


def test_an_agent_over_its_memory_limit_gets_a_fresh_process_from_the_scm(scm: FakeScm, config: AgentConfig,
                                                                         controller, enrolled) -> None:
    config = dataclasses.replace(config, self_limit_rss_mib=5, self_limit_check_interval_seconds=0.5,
                                 self_limit_restart_checks=2, self_limit_restart_min_uptime_seconds=0)
    service = HostThread(config, Priority())
    service.join()  # the agent stops by itself
    assert isinstance(scm.failure, ServiceFailure) and "self-limits asked for one" in str(scm.failure)
    assert scm.statuses[-1][0] == fake.SERVICE_STOPPED
    assert scm.statuses[-1][2] == fake.ERROR_SERVICE_SPECIFIC_ERROR  # a failure: the recovery action restarts it
    assert scm.events[-1][0] == fake.EVENTLOG_ERROR_TYPE
    with Outbox(config.outbox_path, max_facts=config.outbox_max_facts) as outbox:
        queued = outbox.head(10_000, 1 << 26)
    health = [f.agent_health for f in [*queued, *controller.servicer.held.values()]
              if f.WhichOneof("kind") == "agent_health"]
    assert facts_pb2.AgentHealth.ACTION_RESTART in [h.action for h in health]  # said why before it went


def test_an_unenrolled_pc_fails_the_service_so_the_scm_restarts_it(scm: FakeScm, config: AgentConfig) -> None:
    service = HostThread(config, Priority())
    service.join()
    assert service.result == [0]  # the process ends normally; the service itself failed
    assert isinstance(scm.failure, ServiceFailure)
    assert scm.states()[-1] == fake.SERVICE_STOPPED and scm.statuses[-1][2] == fake.ERROR_SERVICE_SPECIFIC_ERROR
    error_type, text = scm.events[-1]
    assert error_type == fake.EVENTLOG_ERROR_TYPE
    assert text.startswith(f"{DISPLAY_NAME}: ") and "enrol" in text and "\n" not in text
    assert not config.outbox_path.exists()  # nothing written for a PC that is not enrolled


def test_a_stop_that_comes_before_the_agent_starts_keeps_it_from_starting(config: AgentConfig, controller,
                                                                         enrolled) -> None:
    created: list[AgentService] = []

    def make() -> AgentService:
        created.append(AgentService(config))
        return created[0]

    runner = ServiceHost(make, Priority())
    runner.stop()
    started = time.monotonic()
    runner.run()
    assert time.monotonic() - started < 5
    assert controller.servicer.reports == []  # it never ran
    with pytest.raises(Exception, match="closed"):
        created[0].outbox.depth()  # and it was closed


def test_an_agent_that_ends_with_an_error_fails_the_service() -> None:
    class Failing:
        restart_requested = False

        def run(self) -> int:
            return 3

        def stop(self) -> None:
            pass

        def close(self) -> None:
            pass

    with pytest.raises(ServiceFailure, match="the agent stopped with exit code 3"):
        ServiceHost(Failing, Priority()).run()


def test_the_service_command_from_a_prompt_says_what_to_do(scm: FakeScm, config: AgentConfig) -> None:
    scm.dispatcher_error = Win32Error(1063, "StartServiceCtrlDispatcher",
                                      "The service process could not connect to the service controller.")
    args = argparse.Namespace(command="service", config=None, state_dir=None)
    with pytest.raises(AgentError, match=rf"is what the Service Control Manager starts; run `sc start {SERVICE_NAME}`"):
        commands.run(config, args, platform="win32")
    scm.dispatcher_error = Win32Error(5, "StartServiceCtrlDispatcher", "Access is denied.")
    with pytest.raises(AgentError, match=r"could not reach the Service Control Manager: Access is denied. \(error 5\)"):
        commands.run(config, args, platform="win32")


def test_pythoncom_is_imported_after_choosing_the_multithreaded_apartment(scm: FakeScm, config: AgentConfig,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pythoncom.py").write_text("import sys\nFLAGS_AT_IMPORT = getattr(sys, 'coinit_flags', None)\n")
    monkeypatch.delitem(sys.modules, "pythoncom")
    monkeypatch.syspath_prepend(str(tmp_path))
    scm.dispatcher_error = Win32Error(1063, "StartServiceCtrlDispatcher", "not started by the SCM")
    with pytest.raises(AgentError):
        host(config, lower_priority=Priority())
    assert sys.modules["pythoncom"].FLAGS_AT_IMPORT == 0  # COINIT_MULTITHREADED
    monkeypatch.delitem(sys.modules, "pythoncom")

