"""Stand-ins for the pywin32 modules the Windows service uses, with a fake Service Control Manager behind them.

:class:`FakeScm` does what the SCM and pywin32's C layer (``servicemanager``) do for one own-process service:
``StartServiceCtrlDispatcher`` blocks while the service runs ``SvcRun`` on a thread of its own; a control
(stop, shutdown) goes to the handler the service registered; when ``SvcRun`` returns the service is STOPPED
with exit code 0, when it raises, STOPPED with ``ERROR_SERVICE_SPECIFIC_ERROR`` (pywin32 306 and later), which
with ``failureflag 1`` is a failure the recovery actions answer. Every reported status and event-log entry is
recorded. ``win32serviceutil.ServiceFramework`` is a small equivalent of pywin32's (register the handler,
report statuses, dispatch controls, ``SvcRun`` = RUNNING, ``SvcDoRun``, STOP_PENDING).
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any

SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN = 1, 5
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN = 1, 4
ERROR_SERVICE_SPECIFIC_ERROR = 1066
EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE = 1, 4
PYS_SERVICE_STARTED, PYS_SERVICE_STOPPED = 0x40000001, 0x40000002  # distinct ids, as in servicemanager


class Win32Error(Exception):
    """``pywintypes.error``: (winerror, funcname, strerror)."""

    def __init__(self, winerror: int, funcname: str, strerror: str) -> None:
        super().__init__(winerror, funcname, strerror)
        self.winerror, self.funcname, self.strerror = winerror, funcname, strerror


class FakeScm:
    """One service's Service Control Manager, and the pywin32 modules that talk to it."""

    def __init__(self) -> None:
        self.statuses: list[tuple[int, int, int, int]] = []  # (state, controls accepted, win32 exit code, wait hint)
        self.events: list[tuple[int, str]] = []  # (event type, text)
        self.event_source = ""
        self.handler: Callable[[int, int, Any], Any] | None = None
        self.prepared: type | None = None
        self.initialized = False
        self.dispatcher_error: Win32Error | None = None
        self.failure: BaseException | None = None
        self.running = threading.Event()
        self.stopped = threading.Event()

    # ---------------------------------------------------------------- what a test does

    def control(self, code: int) -> Any:
        """Send a control (SERVICE_CONTROL_STOP, ...) as the SCM does, on the caller's thread."""
        assert self.handler is not None, "the service registered no control handler"
        return self.handler(code, 0, None)

    def states(self) -> list[int]:
        return [state for state, *_ in self.statuses]

    # ---------------------------------------------------------------- the SCM side

    def _service_main(self) -> None:
        assert self.prepared is not None
        try:
            instance = self.prepared([self.prepared._svc_name_])
            self._set_status(SERVICE_START_PENDING, 0, 0, 5000)
            instance.SvcRun()
        except BaseException as exc:  # noqa: BLE001 - the C layer catches everything SvcRun raises
            self.failure = exc
            self._set_status(SERVICE_STOPPED, 0, ERROR_SERVICE_SPECIFIC_ERROR, 0)
        else:
            self._set_status(SERVICE_STOPPED, 0, 0, 0)
        finally:
            self.stopped.set()

    def _set_status(self, state: int, accepted: int, exit_code: int, wait_hint: int) -> None:
        self.statuses.append((state, accepted, exit_code, wait_hint))
        if state == SERVICE_RUNNING:
            self.running.set()

    def _start_dispatcher(self) -> None:
        if self.dispatcher_error is not None:
            raise self.dispatcher_error
        thread = threading.Thread(target=self._service_main, name="ServiceMain")
        thread.start()
        thread.join()

    # ---------------------------------------------------------------- the modules

    def modules(self) -> dict[str, types.ModuleType]:
        """``servicemanager``, ``win32service``, ``win32serviceutil`` and ``pywintypes`` bound to this SCM."""
        scm = self
        pywintypes = types.ModuleType("pywintypes")
        pywintypes.error = Win32Error  # type: ignore[attr-defined]

        win32service = types.ModuleType("win32service")
        for name, value in globals().items():
            if name.startswith("SERVICE_"):
                setattr(win32service, name, value)

        def set_service_status(handle: int, status: tuple[int, ...]) -> None:
            assert handle == 1, "status reported with a handle the SCM did not give"
            _type, state, accepted, exit_code, _specific, _checkpoint, wait_hint = status
            scm._set_status(state, accepted, exit_code, wait_hint)

        win32service.SetServiceStatus = set_service_status  # type: ignore[attr-defined]

        servicemanager = types.ModuleType("servicemanager")
        for name in ("EVENTLOG_ERROR_TYPE", "EVENTLOG_INFORMATION_TYPE", "PYS_SERVICE_STARTED", "PYS_SERVICE_STOPPED"):
            setattr(servicemanager, name, globals()[name])

        def register(name: str, handler: Callable[[int, int, Any], Any], extended: bool) -> int:
            assert extended, "pywin32 registers the extended handler"
            scm.handler = handler
            return 1

        def log_msg(event_type: int, event_id: int, inserts: tuple[str, ...]) -> None:
            kind = {PYS_SERVICE_STARTED: "started", PYS_SERVICE_STOPPED: "stopped"}[event_id]
            scm.events.append((event_type, f"{inserts[0]} {kind}"))

        def prepare(cls: type) -> None:
            scm.prepared = cls

        def initialize() -> None:
            scm.initialized = True

        functions: dict[str, Callable[..., Any]] = {
            "RegisterServiceCtrlHandler": register,
            "SetEventSourceName": lambda name: setattr(scm, "event_source", name),
            "LogMsg": log_msg,
            "LogErrorMsg": lambda text: scm.events.append((EVENTLOG_ERROR_TYPE, text)),
            "Initialize": initialize,
            "PrepareToHostSingle": prepare,
            "StartServiceCtrlDispatcher": scm._start_dispatcher,
        }
        for name, function in functions.items():
            setattr(servicemanager, name, function)

        win32serviceutil = types.ModuleType("win32serviceutil")
        win32serviceutil.ServiceFramework = _framework(servicemanager, win32service)  # type: ignore[attr-defined]
        return {"pywintypes": pywintypes, "win32service": win32service, "servicemanager": servicemanager,
                "win32serviceutil": win32serviceutil}


def _framework(servicemanager: Any, win32service: Any) -> type:
    """The part of ``win32serviceutil.ServiceFramework`` a service relies on."""

    class ServiceFramework:
        _svc_name_ = ""

        def __init__(self, args: list[str]) -> None:
            self.ssh = servicemanager.RegisterServiceCtrlHandler(args[0], self.ServiceCtrlHandlerEx, True)
            servicemanager.SetEventSourceName(self._svc_name_)

        def GetAcceptedControls(self) -> int:  # noqa: N802
            accepted = SERVICE_ACCEPT_STOP if hasattr(self, "SvcStop") else 0
            return accepted | (SERVICE_ACCEPT_SHUTDOWN if hasattr(self, "SvcShutdown") else 0)

        def ReportServiceStatus(self, state: int, waitHint: int = 5000, win32ExitCode: int = 0,  # noqa: N802,N803
                                svcExitCode: int = 0) -> None:  # noqa: N803
            accepted = 0 if state == SERVICE_START_PENDING else self.GetAcceptedControls()
            win32service.SetServiceStatus(self.ssh, (SERVICE_WIN32_OWN_PROCESS, state, accepted, win32ExitCode,
                                                     svcExitCode, 0, waitHint))

        def ServiceCtrlHandlerEx(self, control: int, event_type: int, data: Any) -> Any:  # noqa: N802
            if control == SERVICE_CONTROL_STOP:
                return self.SvcStop()  # type: ignore[attr-defined]
            if control == SERVICE_CONTROL_SHUTDOWN:
                return self.SvcShutdown()  # type: ignore[attr-defined]
            return None

        def SvcRun(self) -> None:  # noqa: N802
            self.ReportServiceStatus(SERVICE_RUNNING)
            self.SvcDoRun()  # type: ignore[attr-defined]
            self.ReportServiceStatus(SERVICE_STOP_PENDING)

    return ServiceFramework
