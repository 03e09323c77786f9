"""The Windows service ``CounterGuardAgent``: :class:`~agent.service.AgentService` under the Service Control Manager.

``install`` (:mod:`agent.windows.install`) registers ``python.exe … agent.cli … service`` as the service's
command line; at boot the SCM starts it as LocalSystem, and ``counterguard-agent service`` calls :func:`host`,
which hands :func:`service_class` to pywin32's ``servicemanager`` and blocks in ``StartServiceCtrlDispatcher``
while the SCM runs ``SvcRun`` on a thread of its own.

:func:`host` also opens the agent's log file in the state folder. ``SvcDoRun`` lowers the process to
below-normal priority and runs the agent (:class:`ServiceHost`) until ``SvcStop`` or ``SvcShutdown`` reports
STOP_PENDING, with a wait hint long enough for the agent's last send, and asks it to stop. A failure (not
enrolled, an unreadable state folder, the agent returning an error) goes to the Application event log in one
sentence and is raised: pywin32 then reports the stop with an error code, and the recovery settings ``install``
makes (restart after 5 s, 5 s, then every 60 s, also on such non-crash failures) start the service again. So a
PC enrolled after the service was installed is picked up within a minute, and an agent whose self-limits ask
for a fresh process (:mod:`agent.selflimit`; a service cannot re-execute itself) gets one 5 s later.

``SvcShutdown`` (Windows is shutting down or restarting) also tells the power collector
(:func:`agent.collectors._power_windows.note_system_stopping`), so the agent queues a shutdown fact before its
last send; a plain stop does not.

COM: the WMI probes run on the agent's own threads. :func:`host` (and ``counterguard-agent run`` on Windows)
puts the main thread, which lives as long as the process, in the multithreaded apartment before anything else
(:func:`enter_multithreaded_apartment`), so every other thread of the process is in it implicitly and one WMI
connection may be used from any of them.

pywin32 is imported by name, only inside :func:`service_class`, :func:`host` and
:func:`enter_multithreaded_apartment`; tests put stand-ins for its modules in ``sys.modules``. None of this has
run on Windows (see the README).
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

from agent.config import AgentConfig
from agent.errors import AgentError

log = logging.getLogger(__name__)

SERVICE_NAME = "CounterGuardAgent"
DISPLAY_NAME = "CounterGuard Agent"
DESCRIPTION = ("CounterGuard 窗口终端合规代理：采集本机硬件、软件、程序、会话与外接存储等情况并报送管理端。"
               " CounterGuard workstation agent: reports this PC's hardware, software, programs, sessions and"
               " removable storage to the CounterGuard controller.")
ERROR_FAILED_SERVICE_CONTROLLER_CONNECT = 1063  # StartServiceCtrlDispatcher outside the SCM (from a prompt)
_COINIT_MULTITHREADED = 0
_STOP_MARGIN_SECONDS = 5


class ServiceFailure(AgentError):
    """The agent could not run, or stopped with an error, as the service."""


class Agent(Protocol):
    """What the service needs of :class:`~agent.service.AgentService`."""

    restart_requested: bool

    def run(self) -> int: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


def stop_wait_hint_ms(config: AgentConfig) -> int:
    """How long the SCM should wait after STOP_PENDING: the agent's threads finishing a call, then its last send."""
    seconds = config.rpc_timeout_seconds + 1 + config.shutdown_send_timeout_seconds + _STOP_MARGIN_SECONDS
    return int(seconds * 1000)


def below_normal_priority() -> None:
    """Run this process at below-normal priority, so the person at the PC always comes first."""
    from agent.selflimit import lower_priority

    lower_priority()


class ServiceHost:
    """Runs one agent until :meth:`stop`, from any thread; knows nothing of pywin32."""

    def __init__(self, make_agent: Callable[[], Agent],
                 lower_priority: Callable[[], None] = below_normal_priority) -> None:
        self._make_agent = make_agent
        self._lower_priority = lower_priority
        self._lock = threading.Lock()
        self._agent: Agent | None = None
        self._stopping = False

    def run(self) -> None:
        """Run the agent until it is stopped; :class:`ServiceFailure` when it cannot run or stops with an error."""
        self._lower_priority()
        try:
            agent = self._make_agent()
        except (AgentError, NotImplementedError) as exc:  # not enrolled; a collector missing on this platform
            raise ServiceFailure(str(exc)) from exc
        except OSError as exc:
            raise ServiceFailure(f"{exc.filename or 'the state folder'}: {exc.strerror or exc}") from exc
        with self._lock:
            if self._stopping:  # stopped while starting
                agent.close()
                return
            self._agent = agent
        try:
            code = agent.run()
        finally:
            agent.close()
        if agent.restart_requested:
            raise ServiceFailure("the agent stopped for a fresh start (its self-limits asked for one); "
                                 "the service restarts in 5 s")
        if code != 0:
            raise ServiceFailure(f"the agent stopped with exit code {code}")

    def stop(self) -> None:
        """Ask the agent to stop (before it started, it will not start)."""
        with self._lock:
            self._stopping = True
            agent = self._agent
        if agent is not None:
            agent.stop()


def _default_agent(config: AgentConfig) -> Callable[[], Agent]:
    def make() -> Agent:
        from agent.service import AgentService

        return AgentService(config)

    return make


def service_class(config: AgentConfig, lower_priority: Callable[[], None] = below_normal_priority) -> type:
    """The ``win32serviceutil.ServiceFramework`` subclass that runs the agent with ``config``."""
    servicemanager: Any = importlib.import_module("servicemanager")
    win32service: Any = importlib.import_module("win32service")
    win32serviceutil: Any = importlib.import_module("win32serviceutil")
    factory = _default_agent(config)
    wait_hint = stop_wait_hint_ms(config)

    class CounterGuardAgentService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.host = ServiceHost(factory, lower_priority)

        def SvcDoRun(self) -> None:  # noqa: N802 - pywin32's names
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STARTED,
                                  (self._svc_name_, ""))
            try:
                self.host.run()
            except ServiceFailure as exc:
                log.error("the service stops with an error: %s", exc)
                servicemanager.LogErrorMsg(f"{DISPLAY_NAME}: {exc}")
                raise
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STOPPED,
                                  (self._svc_name_, ""))

        def SvcStop(self) -> None:  # noqa: N802
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=wait_hint)
            self.host.stop()

        def SvcShutdown(self) -> None:  # noqa: N802 - Windows is shutting down
            from agent.collectors import _power_windows

            _power_windows.note_system_stopping()
            self.SvcStop()

    return CounterGuardAgentService


def enter_multithreaded_apartment() -> None:
    """Put the calling thread, and with it the whole process, in COM's multithreaded apartment.

    Call it on the main thread before any other thread starts and before anything imports ``pythoncom``:
    ``pythoncom`` initialises COM with ``sys.coinit_flags`` when it is first imported.
    """
    sys.coinit_flags = _COINIT_MULTITHREADED  # type: ignore[attr-defined]  # read by pythoncom on import
    importlib.import_module("pythoncom")


def host(config: AgentConfig, lower_priority: Callable[[], None] = below_normal_priority) -> int:
    """Serve the Service Control Manager until it stops the service (``counterguard-agent service``)."""
    from agent.logs import log_to_file

    log_to_file(config)
    enter_multithreaded_apartment()
    servicemanager: Any = importlib.import_module("servicemanager")
    pywintypes: Any = importlib.import_module("pywintypes")
    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(service_class(config, lower_priority))
    try:
        servicemanager.StartServiceCtrlDispatcher()
    except pywintypes.error as exc:
        if exc.winerror == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT:
            raise AgentError(f"`counterguard-agent service` is what the Service Control Manager starts; run "
                             f"`sc start {SERVICE_NAME}`, or `counterguard-agent run` to run the agent in this "
                             f"window") from None
        raise AgentError(f"the service could not reach the Service Control Manager: {exc.strerror} "
                         f"(error {exc.winerror})") from None
    return 0
