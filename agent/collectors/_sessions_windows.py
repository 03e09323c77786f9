"""Logged-in sessions on Windows, from the Remote Desktop Services API (``wtsapi32``), as ``UserSession`` facts.

``WTSEnumerateSessionsW`` lists the sessions; for each, ``WTSQuerySessionInformationW`` gives the user
(``WTSUserName``, ``WTSDomainName``), the remote client (``WTSClientName``, ``WTSClientProtocolType``) and
the logon time (``LogonTime`` of ``WTSSessionInfo``, a UTC FILETIME). What is a session, and how it is named:

- skipped: session 0 (services), the listeners (``RDP-Tcp``, state Listen) and sessions being set up or torn
  down (Init, Down, Reset), and any session with no user (the console at the sign-in screen). Active and
  disconnected sessions count: a user switched away from (Fast User Switching) or a dropped Remote Desktop
  connection is still logged in, with programs running;
- ``username``: ``DOMAIN\\user`` (``DESKTOP-7Q2K\\zhangwei`` for a local account, ``GOV\\zhangwei`` for a
  domain one), as psutil names a process's user on Windows, so the session, process and input-activity facts of
  one person carry the same account name; the controller compares account names case-insensitively;
- ``terminal``: the session id (``"1"``, ``"2"``). The window-station name (``Console``, ``RDP-Tcp#3``) is not
  used: it changes when a session is disconnected or moved between console and Remote Desktop, and the
  terminal is part of what identifies a session, which must not log out and in again when that happens.
  The input-activity facts name the session by the same id;
- ``host``: the client computer's name for a Remote Desktop session, empty for the console;
- ``started_at``: the logon time to the second, as on Linux; left unset when Windows gives none.

The calls go through an object with the Win32 names (:class:`WtsApi`); :func:`load_wtsapi32` gives the real
``wtsapi32.dll`` on Windows (loaded at the first reading), tests give a fake that hands out buffers and checks
that each is freed.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from agent.collectors._files import timestamp
from agent.collectors._probes import LogOnce
from protos.counterguard.v1 import facts_pb2

log = logging.getLogger(__name__)
WTS_CURRENT_SERVER_HANDLE = None
WTS_USER_NAME, WTS_DOMAIN_NAME, WTS_CLIENT_NAME, WTS_CLIENT_PROTOCOL_TYPE, WTS_SESSION_INFO = 5, 7, 10, 16, 24
WTS_PROTOCOL_RDP = 2
# WTS_CONNECTSTATE_CLASS
WTS_ACTIVE, WTS_CONNECTED, WTS_CONNECT_QUERY, WTS_SHADOW, WTS_DISCONNECTED = 0, 1, 2, 3, 4
WTS_IDLE, WTS_LISTEN, WTS_RESET, WTS_DOWN, WTS_INIT = 5, 6, 7, 8, 9
_NOT_SESSIONS = frozenset({WTS_LISTEN, WTS_RESET, WTS_DOWN, WTS_INIT})
_FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
T = TypeVar("T")
_WCHAR16 = ctypes.c_uint16  # WCHAR on Windows; the names in WTSINFOW are not read, only its layout matters


class WTS_SESSION_INFOW(ctypes.Structure):  # noqa: N801 - the Win32 name
    _fields_ = [("SessionId", ctypes.c_uint32), ("pWinStationName", ctypes.c_wchar_p), ("State", ctypes.c_int)]


class WTSINFOW(ctypes.Structure):
    _fields_ = [
        ("State", ctypes.c_int), ("SessionId", ctypes.c_uint32),
        ("IncomingBytes", ctypes.c_uint32), ("OutgoingBytes", ctypes.c_uint32),
        ("IncomingFrames", ctypes.c_uint32), ("OutgoingFrames", ctypes.c_uint32),
        ("IncomingCompressedBytes", ctypes.c_uint32), ("OutgoingCompressedBytes", ctypes.c_uint32),
        ("WinStationName", _WCHAR16 * 32), ("Domain", _WCHAR16 * 17), ("UserName", _WCHAR16 * 21),
        ("ConnectTime", ctypes.c_int64), ("DisconnectTime", ctypes.c_int64), ("LastInputTime", ctypes.c_int64),
        ("LogonTime", ctypes.c_int64), ("CurrentTime", ctypes.c_int64),
    ]


class WtsSession(NamedTuple):
    """What Windows says about one session."""

    session_id: int
    station: str  # "Console", "RDP-Tcp#3", "" when disconnected
    state: int  # WTS_CONNECTSTATE_CLASS
    user: str
    domain: str
    client: str
    protocol: int  # WTSClientProtocolType: 0 console, 2 Remote Desktop
    logon_time: int  # FILETIME: 100 ns since 1601-01-01 UTC; 0 when unknown


class WtsApi(Protocol):
    """``wtsapi32.dll``'s session calls (same names and arguments as Win32), and the calling thread's last error."""

    def WTSEnumerateSessionsW(self, server: Any, reserved: int, version: int, info: Any, count: Any) -> int: ...
    def WTSQuerySessionInformationW(self, server: Any, session: int, info_class: int, buffer: Any,
                                    size: Any) -> int: ...
    def WTSFreeMemory(self, memory: Any) -> None: ...
    def last_error(self) -> int: ...


class _Wtsapi32:
    """The real ``wtsapi32.dll`` with its prototypes declared."""

    def __init__(self) -> None:
        dll: Any = ctypes.WinDLL("wtsapi32", use_last_error=True)  # type: ignore[attr-defined]
        dword, pdword = ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)
        dll.WTSEnumerateSessionsW.restype = ctypes.c_int
        dll.WTSEnumerateSessionsW.argtypes = [ctypes.c_void_p, dword, dword,
                                              ctypes.POINTER(ctypes.POINTER(WTS_SESSION_INFOW)), pdword]
        dll.WTSQuerySessionInformationW.restype = ctypes.c_int
        dll.WTSQuerySessionInformationW.argtypes = [ctypes.c_void_p, dword, ctypes.c_int,
                                                    ctypes.POINTER(ctypes.c_void_p), pdword]
        dll.WTSFreeMemory.restype, dll.WTSFreeMemory.argtypes = None, [ctypes.c_void_p]
        self.WTSEnumerateSessionsW = dll.WTSEnumerateSessionsW
        self.WTSQuerySessionInformationW = dll.WTSQuerySessionInformationW
        self.WTSFreeMemory = dll.WTSFreeMemory

    def last_error(self) -> int:
        return int(ctypes.get_last_error())  # type: ignore[attr-defined]


def load_wtsapi32() -> WtsApi | None:
    """The real ``wtsapi32.dll``; ``None`` off Windows."""
    return _Wtsapi32() if sys.platform == "win32" else None


class WtsError(OSError):
    """A session call failed; the message names it and the Win32 error."""


# ------------------------------------------------------------------------------------------ reading


def _query(api: WtsApi, session: int, info_class: int, read: Callable[[int, int], T]) -> T | None:
    """One piece of information about a session, ``read`` from the buffer Windows allocated (address, size in
    bytes) before it is freed; ``None`` when Windows refuses."""
    buffer, size = ctypes.c_void_p(), ctypes.c_uint32(0)
    if not api.WTSQuerySessionInformationW(WTS_CURRENT_SERVER_HANDLE, session, info_class, ctypes.pointer(buffer),
                                           ctypes.pointer(size)):
        return None
    if not buffer.value:
        return None
    try:
        return read(buffer.value, size.value)
    finally:
        api.WTSFreeMemory(buffer)


def _text(address: int, size: int) -> str:
    """A ``WCHAR`` string of at most ``size`` bytes."""
    return ctypes.wstring_at(address, size // ctypes.sizeof(ctypes.c_wchar)).split("\0", 1)[0].strip()


def _struct(kind: Any) -> Callable[[int, int], Any]:
    """A copy of a fixed-size value (``USHORT``, ``WTSINFOW``); ``None`` when the buffer is too short."""
    def read(address: int, size: int) -> Any:
        return kind.from_buffer_copy(ctypes.string_at(address, ctypes.sizeof(kind))) if size >= ctypes.sizeof(kind) \
            else None
    return read


def read_session(api: WtsApi, session_id: int, station: str, state: int) -> WtsSession:
    """Everything the fact needs about one session (empty strings and zeros for what Windows refuses)."""
    def text(info_class: int) -> str:
        return _query(api, session_id, info_class, _text) or ""

    protocol = _query(api, session_id, WTS_CLIENT_PROTOCOL_TYPE, _struct(ctypes.c_uint16))
    info = _query(api, session_id, WTS_SESSION_INFO, _struct(WTSINFOW))
    return WtsSession(session_id, station, state, text(WTS_USER_NAME), text(WTS_DOMAIN_NAME), text(WTS_CLIENT_NAME),
                      protocol.value if protocol is not None else 0, info.LogonTime if info is not None else 0)


def enumerate_sessions(api: WtsApi) -> list[WtsSession]:
    """Every session on this machine, as Windows lists them. Raises :class:`WtsError` when it will not."""
    listing, count = ctypes.POINTER(WTS_SESSION_INFOW)(), ctypes.c_uint32(0)
    if not api.WTSEnumerateSessionsW(WTS_CURRENT_SERVER_HANDLE, 0, 1, ctypes.pointer(listing), ctypes.pointer(count)):
        raise WtsError(f"WTSEnumerateSessionsW failed (error {api.last_error()})")
    try:
        found = [(listing[i].SessionId, listing[i].pWinStationName or "", listing[i].State) for i in range(count.value)]
    finally:
        api.WTSFreeMemory(ctypes.cast(listing, ctypes.c_void_p))
    return [read_session(api, session_id, station, state) for session_id, station, state in found
            if is_user_session_candidate(session_id, state)]


# ------------------------------------------------------------------------------------------ deciding


def is_user_session_candidate(session_id: int, state: int) -> bool:
    """Not session 0, not a listener, not a session being set up or torn down."""
    return session_id != 0 and state not in _NOT_SESSIONS


def filetime(value: int) -> dt.datetime | None:
    """A FILETIME (100 ns since 1601-01-01 UTC) as aware UTC to the second; ``None`` for 0 or nonsense."""
    if value <= 0:
        return None
    try:
        return (_FILETIME_EPOCH + dt.timedelta(microseconds=value // 10)).replace(microsecond=0)
    except OverflowError:
        return None


def account_name(user: str, domain: str) -> str:
    """``DOMAIN\\user``, or ``user`` when Windows names no domain."""
    return f"{domain}\\{user}" if domain else user


def user_session(session: WtsSession) -> facts_pb2.UserSession | None:
    """The fact for one session; ``None`` for what is not a user's session (see the module docstring)."""
    if not is_user_session_candidate(session.session_id, session.state) or not session.user:
        return None
    fact = facts_pb2.UserSession(
        username=account_name(session.user, session.domain),
        terminal=str(session.session_id),
        host=session.client if session.protocol == WTS_PROTOCOL_RDP else "",
    )
    started = filetime(session.logon_time)
    if started is not None:
        fact.started_at.CopyFrom(timestamp(started))
    return fact


class SessionReader:
    """The user sessions now, through ``wtsapi32`` (the real one unless another is given); thread-safe.

    When Windows will not list the sessions, the last list stands (no spurious logouts) and the failure is
    logged once.
    """

    def __init__(self, api: WtsApi | None = None) -> None:
        self._api = api
        self._loaded = api is not None
        self._lock = threading.Lock()
        self._last: list[facts_pb2.UserSession] = []
        self._log_once = LogOnce(log, "sessions")

    def __call__(self) -> list[facts_pb2.UserSession]:
        with self._lock:
            if not self._loaded:
                self._api, self._loaded = load_wtsapi32(), True
            if self._api is None:
                self._log_once("the Remote Desktop Services API is not available on this platform")
                return []
            try:
                listed = enumerate_sessions(self._api)
            except WtsError as exc:
                self._log_once(f"{exc}; keeping the last list")
                return list(self._last)
            self._log_once.clear()
            self._last = [fact for fact in map(user_session, listed) if fact is not None]
            return list(self._last)


_reader = SessionReader()


def user_sessions(path: Path) -> list[facts_pb2.UserSession]:
    """The users' sessions now (``path`` is the Linux back end's utmp file and unused here)."""
    del path
    return _reader()
