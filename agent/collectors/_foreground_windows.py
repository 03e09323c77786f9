"""Windows back end of the foreground probe: ``GetForegroundWindow``, its title and its process id.

The three ``user32`` calls go through an injectable object with the same method names, so the parsing
is tested anywhere with a fake; the real ``user32`` is loaded only on Windows. ``GetForegroundWindow``
sees the desktop of the calling session only: an agent running as a service in session 0 gets no
window, and needs a helper in the user's session to see one.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Any, Protocol

from agent.collectors import Roots
from agent.collectors._probes import ForegroundSample, LogOnce

log = logging.getLogger(__name__)
_MAX_TITLE = 1024


class User32(Protocol):
    """The part of ``user32.dll`` the probe calls (same names and arguments as the Win32 functions)."""

    def GetForegroundWindow(self) -> int: ...
    def GetWindowTextLengthW(self, hwnd: int) -> int: ...
    def GetWindowTextW(self, hwnd: int, buffer: Any, max_count: int) -> int: ...
    def GetWindowThreadProcessId(self, hwnd: int, pid: Any) -> int: ...


def read_foreground(user32: User32) -> ForegroundSample | None:
    """The foreground window's title and process id; ``None`` when there is no foreground window."""
    hwnd = user32.GetForegroundWindow()
    if not hwnd:
        return None
    length = min(max(int(user32.GetWindowTextLengthW(hwnd)), 0), _MAX_TITLE)
    buffer = ctypes.create_unicode_buffer(length + 1)
    copied = user32.GetWindowTextW(hwnd, buffer, length + 1)
    pid = ctypes.c_uint32(0)
    user32.GetWindowThreadProcessId(hwnd, ctypes.pointer(pid))
    return ForegroundSample(title=buffer.value[:max(int(copied), 0)], pid=pid.value)


def load_user32() -> User32 | None:
    """The real ``user32.dll`` with its prototypes declared; ``None`` off Windows."""
    if sys.platform != "win32":
        return None
    dll: Any = ctypes.WinDLL("user32", use_last_error=True)  # type: ignore[attr-defined]
    dll.GetForegroundWindow.restype, dll.GetForegroundWindow.argtypes = ctypes.c_void_p, []
    dll.GetWindowTextLengthW.restype, dll.GetWindowTextLengthW.argtypes = ctypes.c_int, [ctypes.c_void_p]
    dll.GetWindowTextW.restype = ctypes.c_int
    dll.GetWindowTextW.argtypes = [ctypes.c_void_p, ctypes.c_wchar_p, ctypes.c_int]
    dll.GetWindowThreadProcessId.restype = ctypes.c_uint32
    dll.GetWindowThreadProcessId.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    return dll  # type: ignore[no-any-return]


class ForegroundReader:
    """Reads the foreground window through ``user32`` (the real one unless another is given)."""

    def __init__(self, user32: User32 | None = None) -> None:
        self._user32 = user32 if user32 is not None else load_user32()
        self._log_once = LogOnce(log, "foreground window")

    def __call__(self) -> ForegroundSample | None:
        if self._user32 is None:
            self._log_once("user32.dll is not available on this platform")
            return None
        sample = read_foreground(self._user32)
        if sample is None:
            self._log_once("no foreground window (is the agent running in the user's session?)")
        return sample


def default_reader(roots: Roots) -> ForegroundReader:
    """The foreground reader for this platform (``roots`` is not used on Windows)."""
    return ForegroundReader()
