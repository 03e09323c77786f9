"""Windows power state: when the running system last started from off, and whether Windows is shutting it down.

Boot time. The kernel booted ``GetTickCount64`` milliseconds ago. But with Fast Startup (on by default since
Windows 8) "Shut down" logs everyone off and hibernates the kernel: after the next power-on the tick count
(which counts the time off), and WMI's ``LastBootUpTime`` with it, still name the last full boot, days ago,
and this agent's own process wakes up where it stopped. So the boot time is the newest
``Microsoft-Windows-Kernel-Boot`` event 27 in the System log whose ``BootType`` is 0 (started after a full
shutdown) or 1 (after a Fast Startup shutdown); 2, a resume from hibernation, is not a boot, as on Linux. An
event older than the kernel's boot (by more than :data:`CLOCK_SLACK`, for a clock set right after boot) is
from an earlier boot and not used; without a usable event (a cleared or unreadable log) the boot time is the
kernel's. The event's time, once written, does not move when the clock is corrected later, so every fact of
one boot names the same boot time.

The log is read (:mod:`._eventlog_windows`) at the first reading and again only when the kernel's boot
moved (a clock change) or the time spent asleep or off (``GetTickCount64`` less ``QueryUnbiasedInterruptTime``)
grew, so a heartbeat costs two calls.

Stopping. The Service Control Manager tells the service when Windows shuts down or restarts
(``SERVICE_CONTROL_SHUTDOWN``); the service calls :func:`note_system_stopping`, and :func:`system_is_stopping`
is true from then on. A Fast Startup shutdown stops no service (session 0 hibernates with it): it shows
only afterwards, as a new boot time on the next heartbeat.

The Win32 calls go through objects with the Win32 names (:class:`TickApi`, and the event log's
:class:`~agent.collectors._eventlog_windows.EvtApi`), loaded on Windows at the first reading; tests give fakes.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import sys
import threading
from typing import Any, Protocol

from agent.clock import Clock, utc_now
from agent.collectors import Roots
from agent.collectors._eventlog_windows import EventLogError, EvtApi, data_int, load_wevtapi, parse_event, query_xml
from agent.collectors._probes import LogOnce

log = logging.getLogger(__name__)
KERNEL_BOOT = "Microsoft-Windows-Kernel-Boot"
BOOT_TYPE_EVENT = 27
BOOT_TYPES = frozenset({0, 1})  # after a full shutdown, after a Fast Startup (hybrid) shutdown
BOOT_QUERY = f"*[System[Provider[@Name='{KERNEL_BOOT}'] and EventID={BOOT_TYPE_EVENT}]]"
BOOT_EVENTS_READ = 8  # newest first: enough to get past a few hibernation resumes
CLOCK_SLACK = dt.timedelta(hours=1)  # a PC's clock corrected after boot is rarely further off
_MOVED = dt.timedelta(seconds=2)
_stopping = threading.Event()


class TickApi(Protocol):
    """``kernel32.GetTickCount64`` (ms since boot, time asleep included) and ``QueryUnbiasedInterruptTime``
    (100 ns units since boot, time asleep left out; writes through the pointer it is given)."""

    def GetTickCount64(self) -> int: ...
    def QueryUnbiasedInterruptTime(self, time: Any) -> int: ...


class _Kernel32:
    """The two real ``kernel32`` functions with their prototypes declared."""

    def __init__(self) -> None:
        dll: Any = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        dll.GetTickCount64.restype, dll.GetTickCount64.argtypes = ctypes.c_uint64, []
        dll.QueryUnbiasedInterruptTime.restype = ctypes.c_int
        dll.QueryUnbiasedInterruptTime.argtypes = [ctypes.POINTER(ctypes.c_uint64)]
        self.GetTickCount64, self.QueryUnbiasedInterruptTime = dll.GetTickCount64, dll.QueryUnbiasedInterruptTime


def load_kernel32() -> TickApi | None:
    """The real tick calls; ``None`` off Windows."""
    return _Kernel32() if sys.platform == "win32" else None


def kernel_boot(api: TickApi, now: dt.datetime) -> tuple[dt.datetime, dt.timedelta]:
    """When the kernel booted (now less the tick count), and how long it has been asleep or off since."""
    ticks_ms = int(api.GetTickCount64())
    unbiased = ctypes.c_uint64(0)
    awake = dt.timedelta(microseconds=unbiased.value / 10) if api.QueryUnbiasedInterruptTime(
        ctypes.pointer(unbiased)) else dt.timedelta(milliseconds=ticks_ms)
    up = dt.timedelta(milliseconds=ticks_ms)
    return now - up, max(up - awake, dt.timedelta(0))


def last_start(events_xml: list[str]) -> dt.datetime | None:
    """The time of the newest Kernel-Boot event 27 that is a start from off (``BootType`` 0 or 1)."""
    for xml in events_xml:
        event = parse_event(xml)
        if (event is not None and event.provider == KERNEL_BOOT and event.event_id == BOOT_TYPE_EVENT
                and data_int(event, "BootType") in BOOT_TYPES):
            return event.time_created
    return None


def choose_boot_time(kernel: dt.datetime, started: dt.datetime | None) -> dt.datetime:
    """The last start from off when it belongs to this kernel's boot or came after it; else the kernel's boot."""
    return started if started is not None and started >= kernel - CLOCK_SLACK else kernel


class BootClock:
    """When the running system last started from off (see the module docstring); thread-safe.

    ``ticks`` and ``events`` are the Win32 calls; those not given are loaded at the first reading (the real
    DLLs on Windows, nothing elsewhere).
    """

    def __init__(self, ticks: TickApi | None = None, events: EvtApi | None = None, clock: Clock = utc_now) -> None:
        self._ticks, self._events, self._clock = ticks, events, clock
        self._loaded = False
        self._lock = threading.Lock()
        self._read_at: tuple[dt.datetime, dt.timedelta] | None = None  # kernel boot and time asleep, at the last read
        self._started: dt.datetime | None = None
        self._log_once = LogOnce(log, "boot time")

    def __call__(self) -> dt.datetime | None:
        with self._lock:
            if not self._loaded:
                self._ticks = self._ticks or load_kernel32()
                self._events = self._events or load_wevtapi()
                self._loaded = True
            if self._ticks is None:
                self._log_once("the Win32 tick count is not available on this platform")
                return None
            kernel, asleep = kernel_boot(self._ticks, self._clock())
            if self._read_at is None or _moved(self._read_at, (kernel, asleep)):
                self._started, read = self._read_start()
                self._read_at = (kernel, asleep) if read else None  # a failed read is tried again next time
            return choose_boot_time(kernel, self._started)

    def _read_start(self) -> tuple[dt.datetime | None, bool]:
        """The last start from off in the System log, and whether the log could be read."""
        if self._events is None:
            self._log_once("the event log is not available on this platform; the kernel's boot stands")
            return None, True
        try:
            started = last_start(query_xml(self._events, "System", BOOT_QUERY, BOOT_EVENTS_READ))
        except EventLogError as exc:
            self._log_once(f"{exc}; the kernel's boot stands")
            return None, False
        self._log_once.clear()
        return started, True


def _moved(before: tuple[dt.datetime, dt.timedelta], now: tuple[dt.datetime, dt.timedelta]) -> bool:
    """The kernel's boot moved (the clock was set) or the machine slept or was off since the last read."""
    return abs(now[0] - before[0]) > _MOVED or now[1] - before[1] > _MOVED


_boot_clock = BootClock()


def read_boot_time(roots: Roots) -> dt.datetime | None:
    """When the running system last started from off, aware UTC; ``None`` when Windows does not say.

    ``roots`` is the Linux back end's and unused here.
    """
    del roots
    return _boot_clock()


def note_system_stopping() -> None:
    """Windows told this process that the system is shutting down or restarting (the service's SHUTDOWN control)."""
    _stopping.set()


def system_is_stopping(roots: Roots = Roots(), clock: Clock = utc_now) -> bool:
    """Whether Windows said it is shutting down or restarting (see the module docstring)."""
    del roots, clock
    return _stopping.is_set()
