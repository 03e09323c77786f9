"""Windows back end of the input-idle probe: ``GetLastInputInfo`` against ``GetTickCount``.

Both count milliseconds since boot in 32 bits, so the difference is taken modulo 2**32 (the counter
wraps after 49.7 days). The calls go through an injectable object with the Win32 names, so the arithmetic
is tested anywhere with a fake; the real DLLs are loaded only on Windows. ``GetLastInputInfo`` sees the
calling session's input only: a service in session 0 needs a helper in the user's session.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Any, Protocol

from agent.collectors import Roots
from agent.collectors._probes import IdleSample, LogOnce

log = logging.getLogger(__name__)
_WRAP = 1 << 32


class LASTINPUTINFO(ctypes.Structure):
    _fields_ = [("cbSize", ctypes.c_uint32), ("dwTime", ctypes.c_uint32)]


class InputApi(Protocol):
    """``user32.GetLastInputInfo``, ``kernel32.GetTickCount`` and ``kernel32.WTSGetActiveConsoleSessionId``."""

    def GetLastInputInfo(self, info: Any) -> int: ...
    def GetTickCount(self) -> int: ...
    def WTSGetActiveConsoleSessionId(self) -> int: ...


def idle_milliseconds(api: InputApi) -> int | None:
    """Milliseconds since the last keyboard or mouse input; ``None`` when Windows does not say."""
    info = LASTINPUTINFO(cbSize=ctypes.sizeof(LASTINPUTINFO))
    if not api.GetLastInputInfo(ctypes.pointer(info)):
        return None
    return (int(api.GetTickCount()) - info.dwTime) % _WRAP


class _RealApi:
    """The Win32 functions, from ``user32`` and ``kernel32``."""

    def __init__(self) -> None:
        user32: Any = ctypes.WinDLL("user32")  # type: ignore[attr-defined]
        kernel32: Any = ctypes.WinDLL("kernel32")  # type: ignore[attr-defined]
        user32.GetLastInputInfo.restype = ctypes.c_int
        user32.GetLastInputInfo.argtypes = [ctypes.POINTER(LASTINPUTINFO)]
        kernel32.GetTickCount.restype, kernel32.GetTickCount.argtypes = ctypes.c_uint32, []
        kernel32.WTSGetActiveConsoleSessionId.restype = ctypes.c_uint32
        self.GetLastInputInfo = user32.GetLastInputInfo
        self.GetTickCount = kernel32.GetTickCount
        self.WTSGetActiveConsoleSessionId = kernel32.WTSGetActiveConsoleSessionId


class IdleReader:
    """Reads input idleness through the Win32 API (the real one unless another is given)."""

    def __init__(self, api: InputApi | None = None, username: str = "") -> None:
        self._api = api if api is not None else (_RealApi() if sys.platform == "win32" else None)
        self._username = username
        self._log_once = LogOnce(log, "input idle")

    def __call__(self) -> IdleSample | None:
        if self._api is None:
            self._log_once("the Win32 input API is not available on this platform")
            return None
        idle_ms = idle_milliseconds(self._api)
        if idle_ms is None:
            self._log_once("GetLastInputInfo failed")
            return None
        session = str(self._api.WTSGetActiveConsoleSessionId())
        return IdleSample(idle_ms / 1000, self._username, session, "windows")


def default_reader(roots: Roots) -> IdleReader:
    """The idle reader for this platform (``roots`` is not used on Windows)."""
    return IdleReader()
