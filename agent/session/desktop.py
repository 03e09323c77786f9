"""What a session helper knows of the session it runs in: its id, its account, whether it still exists.

- Session id: on Windows the process's Terminal Services session (``ProcessIdToSessionId``), which the
  service checks against the pipe; on Linux logind's ``XDG_SESSION_ID``, else the X ``DISPLAY``.
- Account: the process's own (psutil), in the form the service learns from the operating system.
- Still there (:func:`session_alive`): on Linux the logind session's state file must exist and not be
  ``closing``, and a local X display's socket must exist; a helper left behind by a desktop that does not
  end its processes at logout then exits by itself. Windows ends a session's processes with it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from typing import Any

import psutil

from agent.collectors import Roots
from agent.collectors._files import read_text


def current_user() -> str:
    """This process's account (``DOMAIN\\name`` on Windows)."""
    return str(psutil.Process().username())


def current_session(environ: Mapping[str, str] = os.environ) -> str:
    """This process's session id (see the module docstring)."""
    if sys.platform == "win32":
        kernel32: Any = ctypes.WinDLL("kernel32")  # type: ignore[attr-defined]
        session = ctypes.c_ulong(0)
        kernel32.ProcessIdToSessionId(os.getpid(), ctypes.byref(session))
        return str(session.value)
    return environ.get("XDG_SESSION_ID") or environ.get("DISPLAY", "")


def session_alive(environ: Mapping[str, str] = os.environ, roots: Roots = Roots()) -> bool:
    """Whether the session this process belongs to still exists (always true where that cannot be told)."""
    if sys.platform == "win32":
        return True
    from agent.collectors._xdisplay_linux import display_number  # Linux only

    sessions = roots.run / "systemd" / "sessions"
    session_id = environ.get("XDG_SESSION_ID", "")
    if session_id and sessions.is_dir():
        state = read_text(sessions / session_id)
        if not state or "\nSTATE=closing" in f"\n{state}":
            return False
    display = environ.get("DISPLAY", "")
    number = display_number(display) if display.startswith((":", "unix:")) else ""
    if number and roots.x11_sockets.is_dir():
        return (roots.x11_sockets / f"X{number}").exists()
    return True
