"""The Windows event log, read in-process through ``wevtapi``, and the event XML parsed.

:func:`query_xml` asks one channel (``System``) for the events an XPath query selects, newest first, each
rendered as the XML ``wevtutil qe System /q:"<query>" /f:xml /rd:true /c:<n>`` prints: ``wevtutil`` is a
thin front end to the same three calls (``EvtQuery``, ``EvtNext``, ``EvtRender``), and collectors start no
subprocess. :func:`parse_event` reads what the probes need from one event: provider, event id, record id,
when it was written (``TimeCreated/@SystemTime``, UTC, with up to seven decimals) and the named
``EventData`` values, whichever quotes the renderer used and whatever the display language.

The calls go through an object with the Win32 names (:class:`EvtApi`); :func:`load_wevtapi` gives the real
``wevtapi.dll`` on Windows, tests give a fake that hands out handles and rendered XML.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import re
import sys
import xml.etree.ElementTree as ET
from typing import Any, NamedTuple, Protocol

from agent.errors import AgentError

EVENT_NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
EVT_QUERY_CHANNEL_PATH = 0x1
EVT_QUERY_REVERSE_DIRECTION = 0x200
EVT_RENDER_EVENT_XML = 1
ERROR_INSUFFICIENT_BUFFER = 122
ERROR_NO_MORE_ITEMS = 259
INFINITE = 0xFFFFFFFF
_SYSTEM_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z$")


class EventLogError(AgentError):
    """The event log could not be queried or an event not rendered; the message names the call and the error."""


class Event(NamedTuple):
    """One event as the probes need it."""

    provider: str
    event_id: int
    record_id: int
    time_created: dt.datetime  # aware UTC
    data: dict[str, str]  # EventData/Data by Name


class EvtApi(Protocol):
    """``wevtapi.dll``'s query calls (same names and arguments as Win32), and the calling thread's last error."""

    def EvtQuery(self, session: Any, path: str, query: str, flags: int) -> Any: ...
    def EvtNext(self, results: Any, size: int, events: Any, timeout: int, flags: int, returned: Any) -> int: ...
    def EvtRender(self, context: Any, fragment: Any, flags: int, size: int, buffer: Any, used: Any,
                  count: Any) -> int: ...
    def EvtClose(self, handle: Any) -> int: ...
    def last_error(self) -> int: ...


class _Wevtapi:
    """The real ``wevtapi.dll`` with its prototypes declared."""

    def __init__(self) -> None:
        dll: Any = ctypes.WinDLL("wevtapi", use_last_error=True)  # type: ignore[attr-defined]
        handle, dword, pdword = ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)
        dll.EvtQuery.restype = handle
        dll.EvtQuery.argtypes = [handle, ctypes.c_wchar_p, ctypes.c_wchar_p, dword]
        dll.EvtNext.restype = ctypes.c_int
        dll.EvtNext.argtypes = [handle, dword, ctypes.POINTER(handle), dword, dword, pdword]
        dll.EvtRender.restype = ctypes.c_int
        dll.EvtRender.argtypes = [handle, handle, dword, dword, ctypes.c_void_p, pdword, pdword]
        dll.EvtClose.restype, dll.EvtClose.argtypes = ctypes.c_int, [handle]
        self.EvtQuery, self.EvtNext = dll.EvtQuery, dll.EvtNext
        self.EvtRender, self.EvtClose = dll.EvtRender, dll.EvtClose

    def last_error(self) -> int:
        return int(ctypes.get_last_error())  # type: ignore[attr-defined]


def load_wevtapi() -> EvtApi | None:
    """The real ``wevtapi.dll``; ``None`` off Windows."""
    return _Wevtapi() if sys.platform == "win32" else None


def _render(api: EvtApi, event: Any) -> str:
    """One event handle as XML (a second call with the size the first one asked for)."""
    used, count = ctypes.c_uint32(0), ctypes.c_uint32(0)
    buffer = ctypes.create_unicode_buffer(4096)
    for _ in range(2):
        if api.EvtRender(None, event, EVT_RENDER_EVENT_XML, ctypes.sizeof(buffer), buffer, ctypes.pointer(used),
                         ctypes.pointer(count)):
            return buffer.value
        error = api.last_error()
        if error != ERROR_INSUFFICIENT_BUFFER:
            raise EventLogError(f"EvtRender failed (error {error})")
        buffer = ctypes.create_unicode_buffer(used.value // ctypes.sizeof(ctypes.c_wchar) + 1)
    raise EventLogError("EvtRender kept asking for a larger buffer")


def query_xml(api: EvtApi, channel: str, xpath: str, limit: int) -> list[str]:
    """Up to ``limit`` events of ``channel`` that ``xpath`` selects, newest first, as event XML."""
    results = api.EvtQuery(None, channel, xpath, EVT_QUERY_CHANNEL_PATH | EVT_QUERY_REVERSE_DIRECTION)
    if not results:
        raise EventLogError(f"EvtQuery on the {channel} log failed (error {api.last_error()})")
    try:
        handles = (ctypes.c_void_p * limit)()
        returned = ctypes.c_uint32(0)
        if not api.EvtNext(results, limit, handles, INFINITE, 0, ctypes.pointer(returned)):
            error = api.last_error()
            if error == ERROR_NO_MORE_ITEMS:
                return []
            raise EventLogError(f"EvtNext on the {channel} log failed (error {error})")
        try:
            return [_render(api, handles[i]) for i in range(returned.value)]
        finally:
            for i in range(returned.value):
                api.EvtClose(handles[i])
    finally:
        api.EvtClose(results)


def system_time(text: str) -> dt.datetime | None:
    """``2026-11-30T00:58:12.4870853Z`` as aware UTC (microseconds; later decimals dropped); ``None`` if malformed."""
    match = _SYSTEM_TIME.match(text.strip())
    if match is None:
        return None
    seconds, decimals = match.groups()
    try:
        moment = dt.datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return moment.replace(microsecond=int((decimals or "0")[:6].ljust(6, "0")), tzinfo=dt.UTC)


def _int(text: str | None) -> int | None:
    """A number as event XML writes it: decimal, or hexadecimal with ``0x``."""
    try:
        return int((text or "").strip(), 0)
    except ValueError:
        return None


def parse_event(xml: str) -> Event | None:
    """The provider, ids, time and named data of one rendered event; ``None`` when it is not an event with a time."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    system = root.find(f"{EVENT_NS}System")
    if root.tag != f"{EVENT_NS}Event" or system is None:
        return None
    provider = system.find(f"{EVENT_NS}Provider")
    created = system.find(f"{EVENT_NS}TimeCreated")
    event_id = _int(system.findtext(f"{EVENT_NS}EventID"))
    moment = system_time(created.get("SystemTime", "")) if created is not None else None
    if event_id is None or moment is None:
        return None
    data = {item.get("Name", ""): (item.text or "").strip()
            for item in root.iterfind(f"{EVENT_NS}EventData/{EVENT_NS}Data")}
    return Event(provider=provider.get("Name", "") if provider is not None else "", event_id=event_id,
                 record_id=_int(system.findtext(f"{EVENT_NS}EventRecordID")) or 0, time_created=moment,
                 data={name: value for name, value in data.items() if name})


def data_int(event: Event, name: str) -> int | None:
    """A numeric ``EventData`` value (``1`` or ``0x1``); ``None`` when absent or not a number."""
    return _int(event.data.get(name))
