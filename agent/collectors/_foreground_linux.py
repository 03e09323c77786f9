"""Linux back end of the foreground probe: the active X11 window's title and process, through libX11.

The active window is ``_NET_ACTIVE_WINDOW`` on the root window, which every EWMH window manager keeps
(GNOME, KDE, Xfce, DDE on UOS, UKUI on Kylin, Openbox ...). Without one (no window manager, or an old
one) the window with the keyboard focus is used, climbing to the nearest ancestor that has a title.
The title is ``_NET_WM_NAME`` (UTF-8), else ``WM_NAME`` in whatever encoding the client set it; the
process is ``_NET_WM_PID`` (0 when the client does not set it). See ``_x11_linux`` for how the display
is found; pure Wayland sessions are not seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from agent.collectors import Roots
from agent.collectors._probes import ForegroundSample, LogOnce
from agent.collectors._x11_linux import X11, Connection

log = logging.getLogger(__name__)
_MAX_DEPTH = 32


def _titled(conn: Connection, window: int) -> tuple[int, str | None]:
    """The window, or its nearest ancestor below the root, that has a title, with that title."""
    for _ in range(_MAX_DEPTH):
        if not window:
            break
        title = conn.utf8_property(window, "_NET_WM_NAME")
        if title is None:
            title = conn.wm_name(window)
        if title is not None:
            return window, title
        window = conn.parent(window)
    return 0, None


def active_window(conn: Connection) -> int:
    """``_NET_ACTIVE_WINDOW`` when the window manager keeps it, else the window with the input focus."""
    active = conn.cardinals(conn.root(), "_NET_ACTIVE_WINDOW")
    if active and active[0]:
        return active[0]
    return conn.input_focus()


def read_foreground(conn: Connection) -> ForegroundSample | None:
    """The foreground window's title and process on an open display; ``None`` when no window is active."""
    window, title = _titled(conn, active_window(conn))
    if not window:
        return None
    pids = conn.cardinals(window, "_NET_WM_PID")
    return ForegroundSample(title=title or "", pid=pids[0] if pids else 0, display=conn.target.name)


class ForegroundReader:
    """Reads the foreground window of the active graphical session, one display query per call."""

    def __init__(self, roots: Roots = Roots(), environ: Mapping[str, str] | None = None) -> None:
        self._x11 = X11(roots, environ, log_once=LogOnce(log, "foreground window"))

    def __call__(self) -> ForegroundSample | None:
        with self._x11.connection() as conn:
            return read_foreground(conn) if conn is not None else None


def default_reader(roots: Roots) -> ForegroundReader:
    """The foreground reader for this platform."""
    return ForegroundReader(roots)
