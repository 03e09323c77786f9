"""Linux back end of the input-idle probe: X11's MIT-SCREEN-SAVER counter, else logind's idle hint.

1. X11 (source ``"x11"``): ``XScreenSaverQueryInfo`` from libXss on the active session's display (found
   as ``_x11_linux`` describes) gives the milliseconds since the last keyboard or mouse input, exactly.
2. logind (source ``"logind"``), for sessions without X (Wayland, text consoles): the active session's
   ``IdleHint``/``IdleSinceHint`` over the system D-Bus, with ``jeepney`` (pure Python). logind learns
   idleness from the desktop (which sets the hint after its own idle delay) or, on a text console, from
   the terminal's access time; so a threshold shorter than the desktop's idle delay is not seen there.
   The session is the active ``CLASS=user`` one in ``<run>/systemd/sessions``.

With neither, the probe sees nothing and logs once why.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Mapping
from typing import Any

from jeepney import DBusAddress, Properties, new_method_call
from jeepney.auth import AuthenticationError
from jeepney.io.blocking import open_dbus_connection
from jeepney.wrappers import DBusErrorResponse, unwrap_msg

from agent.collectors import Roots
from agent.collectors._probes import IdleSample, LogOnce
from agent.collectors._x11_linux import X11, Connection, load_library
from agent.collectors._xdisplay_linux import logind_sessions

log = logging.getLogger(__name__)
_DBUS_TIMEOUT = 2.0
_MANAGER = DBusAddress("/org/freedesktop/login1", bus_name="org.freedesktop.login1",
                       interface="org.freedesktop.login1.Manager")


class XScreenSaverInfo(ctypes.Structure):
    _fields_ = [("window", ctypes.c_ulong), ("state", ctypes.c_int), ("kind", ctypes.c_int),
                ("til_or_since", ctypes.c_ulong), ("idle", ctypes.c_ulong), ("event_mask", ctypes.c_ulong)]


_XSS_PROTOTYPES = {
    "XScreenSaverQueryExtension": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                                                  ctypes.POINTER(ctypes.c_int)]),
    "XScreenSaverQueryInfo": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(XScreenSaverInfo)]),
}


def screensaver_idle_ms(xss: ctypes.CDLL, conn: Connection) -> int | None:
    """Milliseconds since the last input on the display; ``None`` without the MIT-SCREEN-SAVER extension."""
    event_base, error_base = ctypes.c_int(), ctypes.c_int()
    if not xss.XScreenSaverQueryExtension(conn.handle, ctypes.byref(event_base), ctypes.byref(error_base)):
        return None
    info = XScreenSaverInfo()
    if not xss.XScreenSaverQueryInfo(conn.handle, conn.root(), ctypes.byref(info)) or conn.failed:
        return None
    return int(info.idle)


def active_user_session(roots: Roots) -> dict[str, str] | None:
    """The active logind session of a person (``CLASS=user``), with its ``ID``; ``None`` when none is."""
    for session in logind_sessions(roots.run):
        if session.get("ACTIVE") == "1" and session.get("CLASS", "user") == "user":
            return session
    return None


def _value(properties: Mapping[str, Any], name: str) -> Any:
    """A property value out of a ``GetAll`` reply, where each value is a ``(signature, value)`` pair."""
    entry = properties.get(name)
    return entry[1] if isinstance(entry, tuple) and len(entry) == 2 else entry


def logind_session_properties(bus: str, session_id: str) -> Mapping[str, Any]:
    """All properties of one logind session (``org.freedesktop.login1.Session``) over D-Bus."""
    with open_dbus_connection(bus) as conn:
        (path,) = unwrap_msg(conn.send_and_get_reply(
            new_method_call(_MANAGER, "GetSession", "s", (session_id,)), timeout=_DBUS_TIMEOUT))
        session = DBusAddress(path, bus_name=_MANAGER.bus_name, interface="org.freedesktop.login1.Session")
        (properties,) = unwrap_msg(conn.send_and_get_reply(Properties(session).get_all(), timeout=_DBUS_TIMEOUT))
    return properties  # type: ignore[no-any-return]


def logind_idle_seconds(properties: Mapping[str, Any], now: float) -> float:
    """Seconds idle by logind's hint: since ``IdleSinceHint`` (µs, wall clock) when idle, else 0."""
    if not _value(properties, "IdleHint"):
        return 0.0
    since = _value(properties, "IdleSinceHint") or 0
    return max(0.0, now - since / 1_000_000) if since else 0.0


class IdleReader:
    """Reads input idleness from X11 where the active session has a display, else from logind."""

    def __init__(self, roots: Roots = Roots(), environ: Mapping[str, str] | None = None, *,
                 bus: str = "SYSTEM") -> None:
        self._roots, self._bus = roots, bus
        self._x11_log = LogOnce(log, "input idle (X11)")
        self._logind_log = LogOnce(log, "input idle (logind)")
        self._x11 = X11(roots, environ, log_once=self._x11_log)
        self._xss = load_library("libXss.so.1", _XSS_PROTOTYPES)

    def __call__(self) -> IdleSample | None:
        return self.from_x11() or self.from_logind()

    def from_x11(self) -> IdleSample | None:
        """The X11 idle counter of the active display; ``None`` when there is none."""
        if self._xss is None:
            self._x11_log("libXss (libxss1) is not installed: no X11 idle counter")
            return None
        with self._x11.connection() as conn:
            if conn is None:
                return None
            idle_ms = screensaver_idle_ms(self._xss, conn)
            target = conn.target
        if idle_ms is None:
            self._x11_log(f"X display {target.name} has no MIT-SCREEN-SAVER extension")
            return None
        return IdleSample(idle_ms / 1000, target.username, target.name, "x11")

    def from_logind(self) -> IdleSample | None:
        """logind's idle hint for the active user session; ``None`` without logind or a session."""
        session = active_user_session(self._roots)
        if session is None:
            self._logind_log("no active logind user session")
            return None
        try:
            properties = logind_session_properties(self._bus, session["ID"])
        except (OSError, TimeoutError, DBusErrorResponse, AuthenticationError, ValueError) as exc:
            self._logind_log(f"logind did not answer over D-Bus ({exc})")
            return None
        self._logind_log.clear()
        user = str(_value(properties, "Name") or session.get("USER", ""))
        return IdleSample(logind_idle_seconds(properties, time.time()), user, session["ID"], "logind")


def default_reader(roots: Roots) -> IdleReader:
    """The idle reader for this platform."""
    return IdleReader(roots)
