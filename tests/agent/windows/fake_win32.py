"""A stand-in for the Windows OS boundary the power, session and storage probes call: ``kernel32``'s tick counts and
drive letters, the System event log (``wevtapi``) and the Remote Desktop Services session API (``wtsapi32``).

:class:`FakeWindows` holds one PC's state and answers with the Win32 names and calling conventions: out
parameters are written through the ctypes pointers the caller passes, buffers the API "allocates" are real
ctypes memory, handles are numbers. It keeps the books a real system would make a bug visible by: every event
handle must be closed, every ``WTSFreeMemory`` must free a live allocation (freed memory is overwritten, so
reading it after the free shows), and the last error is per call. A unit test passes a :class:`FakeWindows`
as the ``api`` of a back end; :func:`install` goes further and makes ``ctypes.WinDLL``, ``winreg`` and
``win32com.client`` answer from it and from recorded registry and WMI data, for code run with ``sys.platform``
forced to ``win32`` (``forced_windows.py``).

The event XML is hand-made in the shape ``EvtRender`` (and ``wevtutil qe /f:xml``) gives: single-quoted
attributes, the event namespace, ``SystemTime`` with seven decimals. It was not captured on a real machine.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.collectors._sessions_windows import WTS_SESSION_INFOW, WTSINFOW

ERROR_INVALID_PARAMETER = 87
ERROR_CALL_NOT_IMPLEMENTED = 120
ERROR_INSUFFICIENT_BUFFER = 122
ERROR_NO_MORE_ITEMS = 259
RPC_S_SERVER_UNAVAILABLE = 1722
ERROR_CTX_WINSTATION_NOT_FOUND = 7022
FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
DLL_FUNCTIONS = {
    "kernel32": ("GetTickCount64", "QueryUnbiasedInterruptTime", "GetLogicalDrives", "GetDriveTypeW"),
    "wevtapi": ("EvtQuery", "EvtNext", "EvtRender", "EvtClose"),
    "wtsapi32": ("WTSEnumerateSessionsW", "WTSQuerySessionInformationW", "WTSFreeMemory"),
}


def filetime(moment: dt.datetime) -> int:
    """An aware datetime as a FILETIME (100 ns since 1601-01-01 UTC)."""
    delta = moment - FILETIME_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def system_time(moment: dt.datetime) -> str:
    """``TimeCreated/@SystemTime`` as Windows 10 writes it: seven decimals and a ``Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def kernel_boot_event(at: dt.datetime, boot_type: str, record: int) -> str:
    """Kernel-Boot event 27, "The boot type was 0x1", as ``EvtRender`` renders it."""
    return (
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        "<Provider Name='Microsoft-Windows-Kernel-Boot' Guid='{15ca44ff-4d7a-4baa-bba5-0998955e531e}'/>"
        "<EventID>27</EventID><Version>0</Version><Level>4</Level><Task>33</Task><Opcode>0</Opcode>"
        f"<Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime='{system_time(at)}'/>"
        f"<EventRecordID>{record}</EventRecordID><Correlation/><Execution ProcessID='4' ThreadID='8'/>"
        "<Channel>System</Channel><Computer>CK-3F-W07</Computer><Security UserID='S-1-5-18'/></System>"
        f"<EventData><Data Name='BootType'>{boot_type}</Data><Data Name='LoadOptions'> NOEXECUTE=OPTIN</Data>"
        "</EventData></Event>"
    )


def service_stop_event(at: dt.datetime, record: int) -> str:
    """EventLog event 6006 ("The Event log service was stopped"): classic provider, no named data."""
    return (
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        "<Provider Name='EventLog'/><EventID Qualifiers='32768'>6006</EventID><Version>0</Version><Level>4</Level>"
        f"<Task>0</Task><Keywords>0x80000000000000</Keywords><TimeCreated SystemTime='{system_time(at)}'/>"
        f"<EventRecordID>{record}</EventRecordID><Channel>System</Channel><Computer>CK-3F-W07</Computer>"
        "<Security/></System><EventData><Binary>E90702000100020016000600000000000000</Binary></EventData></Event>"
    )


@dataclass
class Session:
    """One session as Windows keeps it."""

    id: int
    station: str
    state: int
    user: str = ""
    domain: str = ""
    client: str = ""
    protocol: int = 0
    logon: dt.datetime | None = None


class _Fn:
    """A DLL function: callable, and takes ``restype``/``argtypes`` as ctypes functions do."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)


def _provider(xml: str) -> str:
    match = re.search(r"Provider Name='([^']+)'", xml)
    return match.group(1) if match else ""


def _event_id(xml: str) -> int:
    match = re.search(r">(\d+)</EventID>", xml)
    return int(match.group(1)) if match else -1


def _address(pointer: Any) -> int:
    if isinstance(pointer, int) or pointer is None:
        return pointer or 0
    return ctypes.cast(pointer, ctypes.c_void_p).value or 0


class FakeWindows:
    """One PC's ticks, System log and sessions behind the Win32 calls."""

    def __init__(self) -> None:
        self.ticks_ms = 0
        self.asleep_ms = 0  # in GetTickCount64, not in QueryUnbiasedInterruptTime
        self.events: list[str] = []  # the System log, oldest first
        self.sessions: list[Session] = []
        self.drives: dict[str, int] = {}  # "C:" -> drive type
        self.error = 0
        self.failures: dict[str, int] = {}  # function name -> the error it fails with
        self.queries: list[tuple[str, str, int]] = []
        self.calls: list[str] = []
        self.queried: list[tuple[int, int]] = []  # WTSQuerySessionInformationW: (session, info class)
        self.open_handles: set[int] = set()
        self.allocations: dict[int, ctypes.Array[Any] | ctypes.Structure | ctypes.c_uint16] = {}
        self.bad_frees: list[int] = []
        self._results: dict[int, list[str]] = {}
        self._rendered: dict[int, str] = {}
        self._next_handle = 0x100

    def last_error(self) -> int:
        return self.error

    def _fails(self, name: str) -> bool:
        self.calls.append(name)
        self.error = self.failures.get(name, 0)
        return bool(self.error)

    def _handle(self) -> int:
        self._next_handle += 4
        self.open_handles.add(self._next_handle)
        return self._next_handle

    # ------------------------------------------------------------------ kernel32

    def GetTickCount64(self) -> int:  # noqa: N802 - the Win32 names
        self.calls.append("GetTickCount64")
        return self.ticks_ms

    def QueryUnbiasedInterruptTime(self, time: Any) -> int:  # noqa: N802
        if self._fails("QueryUnbiasedInterruptTime"):
            return 0
        time[0] = (self.ticks_ms - self.asleep_ms) * 10_000
        return 1

    def GetLogicalDrives(self) -> int:  # noqa: N802
        return sum(1 << (ord(letter[0]) - ord("A")) for letter in self.drives)

    def GetDriveTypeW(self, root: str) -> int:  # noqa: N802
        return self.drives.get(root.rstrip("\\"), 0)

    # ------------------------------------------------------------------ wevtapi

    def EvtQuery(self, session: Any, path: str, query: str, flags: int) -> int:  # noqa: N802
        self.queries.append((path, query, flags))
        if self._fails("EvtQuery"):
            return 0
        providers = set(re.findall(r"Provider\[@Name='([^']+)'\]", query))
        ids = {int(number) for number in re.findall(r"EventID=(\d+)", query)}
        matching = [xml for xml in self.events if (not providers or _provider(xml) in providers)
                    and (not ids or _event_id(xml) in ids)]
        handle = self._handle()
        self._results[handle] = matching[::-1] if flags & 0x200 else matching
        return handle

    def EvtNext(self, results: int, size: int, events: Any, timeout: int, flags: int,  # noqa: N802
                returned: Any) -> int:
        if self._fails("EvtNext"):
            return 0
        pending = self._results[results]
        if not pending:
            self.error = ERROR_NO_MORE_ITEMS
            return 0
        taken, self._results[results] = pending[:size], pending[size:]
        for index, xml in enumerate(taken):
            handle = self._handle()
            self._rendered[handle] = xml
            events[index] = handle
        returned[0] = len(taken)
        return 1

    def EvtRender(self, context: Any, fragment: int, flags: int, size: int, buffer: Any, used: Any,  # noqa: N802
                  count: Any) -> int:
        if self._fails("EvtRender"):
            return 0
        if flags != 1 or fragment not in self.open_handles:
            self.error = ERROR_INVALID_PARAMETER
            return 0
        text = ctypes.create_unicode_buffer(self._rendered[fragment])
        used[0], count[0] = ctypes.sizeof(text), 0
        if size < ctypes.sizeof(text):
            self.error = ERROR_INSUFFICIENT_BUFFER
            return 0
        ctypes.memmove(buffer, text, ctypes.sizeof(text))
        self.error = 0
        return 1

    def EvtClose(self, handle: int) -> int:  # noqa: N802
        self.open_handles.discard(handle)
        self._results.pop(handle, None)
        self._rendered.pop(handle, None)
        return 1

    # ------------------------------------------------------------------ wtsapi32

    def _allocate(self, memory: Any) -> int:
        address = ctypes.addressof(memory)
        self.allocations[address] = memory
        return address

    def WTSEnumerateSessionsW(self, server: Any, reserved: int, version: int, info: Any,  # noqa: N802
                              count: Any) -> int:
        if self._fails("WTSEnumerateSessionsW"):
            return 0
        listing = (WTS_SESSION_INFOW * len(self.sessions))()
        for entry, session in zip(listing, self.sessions):
            entry.SessionId, entry.pWinStationName, entry.State = session.id, session.station or None, session.state
        info[0] = ctypes.cast(self._allocate(listing), ctypes.POINTER(WTS_SESSION_INFOW))
        count[0] = len(self.sessions)
        return 1

    def WTSQuerySessionInformationW(self, server: Any, session_id: int, info_class: int, buffer: Any,  # noqa: N802
                                    size: Any) -> int:
        self.queried.append((session_id, info_class))
        if self._fails("WTSQuerySessionInformationW"):
            return 0
        session = next((s for s in self.sessions if s.id == session_id), None)
        if session is None:
            self.error = ERROR_CTX_WINSTATION_NOT_FOUND
            return 0
        texts = {5: session.user, 7: session.domain, 10: session.client}
        memory: Any
        if info_class in texts:
            memory = ctypes.create_unicode_buffer(texts[info_class])
        elif info_class == 16:
            memory = ctypes.c_uint16(session.protocol)
        elif info_class == 24:
            memory = WTSINFOW(State=session.state, SessionId=session.id,
                              LogonTime=filetime(session.logon) if session.logon else 0)
        else:
            self.error = ERROR_INVALID_PARAMETER
            return 0
        buffer[0] = self._allocate(memory)
        size[0] = ctypes.sizeof(memory)
        return 1

    def WTSFreeMemory(self, memory: Any) -> None:  # noqa: N802
        address = _address(memory)
        freed = self.allocations.pop(address, None)
        if freed is None:
            self.bad_frees.append(address)
            return
        ctypes.memset(address, 0xA5, ctypes.sizeof(freed))  # what is read after the free is garbage

    # ------------------------------------------------------------------ DLLs

    def dll(self, name: str) -> types.SimpleNamespace:
        """``ctypes.WinDLL(name)``: this PC's functions of that DLL; any other function fails with
        ERROR_CALL_NOT_IMPLEMENTED (the pipe, toast and input calls are not part of this fake)."""
        known = DLL_FUNCTIONS.get(name.lower().removesuffix(".dll"), ())
        namespace = _Namespace(self)
        for function in known:
            setattr(namespace, function, _Fn(getattr(self, function)))
        return namespace


class _Namespace(types.SimpleNamespace):
    def __init__(self, windows: FakeWindows) -> None:
        super().__init__()
        self._windows = windows

    def __getattr__(self, name: str) -> _Fn:
        windows = self._windows

        def not_implemented(*args: Any) -> int:
            windows.error = ERROR_CALL_NOT_IMPLEMENTED
            return 0

        function = _Fn(not_implemented)
        setattr(self, name, function)
        return function


# ---------------------------------------------------------------------- registry and WMI modules


class _Key:
    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> _Key:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def winreg_module(keys: dict[str, dict[str, Any]]) -> types.ModuleType:
    """A ``winreg`` answering from a dump ``{"HIVE\\path": {values}}``: names compare case-insensitively, a key
    that is not there raises ``FileNotFoundError`` as ``OpenKey`` does."""
    folded = {path.casefold(): (path, values) for path, values in keys.items()}
    module = types.ModuleType("winreg")
    module.HKEY_LOCAL_MACHINE, module.HKEY_USERS = "HKEY_LOCAL_MACHINE", "HKEY_USERS"  # type: ignore[attr-defined]
    module.KEY_READ, module.KEY_WOW64_64KEY = 0x20019, 0x100  # type: ignore[attr-defined]

    def children(path: str) -> list[str]:
        prefix = path.casefold() + "\\"
        found: dict[str, str] = {}
        for key, (original, _) in folded.items():
            if key.startswith(prefix):
                child = original[len(prefix):].split("\\", 1)[0]
                found.setdefault(child.casefold(), child)
        return sorted(found.values())

    def open_key(hive: str, path: str, reserved: int = 0, access: int = 0) -> _Key:
        full = f"{hive}\\{path}" if path else hive
        if full.casefold() not in folded and not children(full):
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return _Key(full)

    def values(key: _Key) -> list[tuple[str, Any, int]]:
        stored = folded.get(key.path.casefold(), ("", {}))[1]
        return [(name, value, 1 if isinstance(value, str) else 4) for name, value in stored.items()]

    module.OpenKey = open_key  # type: ignore[attr-defined]
    module.QueryInfoKey = lambda key: (len(children(key.path)), len(values(key)), 0)  # type: ignore[attr-defined]
    module.EnumKey = lambda key, index: children(key.path)[index]  # type: ignore[attr-defined]
    module.EnumValue = lambda key, index: values(key)[index]  # type: ignore[attr-defined]
    return module


def win32com_modules(classes: dict[str, list[dict[str, Any]]]) -> dict[str, types.ModuleType]:
    """``win32com`` and ``win32com.client`` whose ``GetObject`` of ``winmgmts:`` answers WQL from recorded
    instances: each row an object with the properties asked for (absent ones ``None``, as COM gives)."""
    pattern = re.compile(r"^SELECT (.+) FROM (\w+)$")

    class Service:
        def ExecQuery(self, wql: str) -> list[types.SimpleNamespace]:  # noqa: N802
            match = pattern.match(wql)
            assert match, f"unexpected WQL: {wql}"
            names = [name.strip() for name in match.group(1).split(",")]
            return [types.SimpleNamespace(**{name: row.get(name) for name in names})
                    for row in classes.get(match.group(2), [])]

    client = types.ModuleType("win32com.client")
    client.GetObject = lambda moniker: Service()  # type: ignore[attr-defined]
    package = types.ModuleType("win32com")
    package.client = client  # type: ignore[attr-defined]
    return {"win32com": package, "win32com.client": client}


def install(windows: FakeWindows, registry: dict[str, dict[str, Any]],
            wmi: dict[str, list[dict[str, Any]]]) -> None:
    """Make this process's ``ctypes.WinDLL``, ``ctypes.get_last_error``, ``winreg``, ``win32com.client`` and
    ``pythoncom`` answer from ``windows``, ``registry`` and ``wmi`` (for a process forced to ``win32``).

    ``_winapi`` (CPython's own Windows module, which the session helpers' pipe uses) is an empty stand-in: the
    pipe is not part of this fake, so the agent logs that helpers cannot connect and runs without them.
    """
    ctypes.WinDLL = lambda name, use_last_error=False: windows.dll(name)  # type: ignore[attr-defined]
    ctypes.get_last_error = windows.last_error  # type: ignore[attr-defined]
    sys.modules["winreg"] = winreg_module(registry)
    sys.modules.update(win32com_modules(wmi))
    sys.modules.setdefault("pythoncom", types.ModuleType("pythoncom"))
    sys.modules.setdefault("_winapi", types.ModuleType("_winapi"))
