"""Which X display is the active graphical session's, and the cookie that opens it (no Xlib needed).

The agent runs as a system service, so it has no ``DISPLAY`` of its own. :func:`locate_display` finds one:

1. ``DISPLAY`` in the agent's environment (a developer running it by hand), with ``XAUTHORITY`` or
   ``~/.Xauthority``;
2. otherwise the active logind session that has a display (``<run>/systemd/sessions/*``, ``ACTIVE=1`` and
   ``DISPLAY=:N``), which also names the user;
3. otherwise the lowest ``<x11_sockets>/X<N>`` socket.

The cookie comes from the first readable Xauthority file that has one for the display, among: the
``XAUTHORITY`` of a process of the session's user running on that display, the X server's own ``-auth``
file (Xorg under lightdm, GDM and SDDM, and Xvfb, pass one), and the user's ``~/.Xauthority``.
Supported: local X11 displays (Xorg, Xvfb, Xwayland where its cookie is found). Not supported: pure
Wayland without Xwayland, remote ``host:N`` displays.
"""

from __future__ import annotations

import contextlib
import itertools
import pwd
import socket
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psutil

from agent.collectors import Roots
from agent.collectors._files import list_dir, read_bytes, read_text

COOKIE_NAME = b"MIT-MAGIC-COOKIE-1"
_FAMILY_LOCAL, _FAMILY_WILD = 256, 65535
_X_SERVERS = frozenset({"Xorg", "X", "Xvfb", "Xwayland", "Xephyr", "Xvnc", "Xtigervnc", "Xnest"})


class XauthEntry(NamedTuple):
    """One record of an Xauthority file."""

    family: int
    address: bytes
    number: bytes
    name: bytes
    data: bytes


def parse_xauthority(data: bytes) -> list[XauthEntry]:
    """The records of an Xauthority file (big-endian ``family`` then four length-prefixed fields)."""
    entries: list[XauthEntry] = []
    pos = 0
    while pos + 2 <= len(data):
        (family,) = struct.unpack_from(">H", data, pos)
        pos += 2
        fields: list[bytes] = []
        for _ in range(4):
            if pos + 2 > len(data):
                return entries
            (length,) = struct.unpack_from(">H", data, pos)
            fields.append(data[pos + 2:pos + 2 + length])
            pos += 2 + length
        if pos > len(data):
            return entries
        entries.append(XauthEntry(family, *fields))
    return entries


def pick_cookie(entries: list[XauthEntry], display_number: str, hostname: str) -> bytes | None:
    """The MIT-MAGIC-COOKIE-1 for a local display: this host's entry first, then any local or wildcard one."""
    number = display_number.encode()
    usable = [e for e in entries if e.name == COOKIE_NAME and e.number in (number, b"")
              and e.family in (_FAMILY_LOCAL, _FAMILY_WILD)]
    usable.sort(key=lambda e: (e.address != hostname.encode(), e.number != number))
    return usable[0].data if usable else None


@dataclass(frozen=True)
class DisplayTarget:
    """A display to open, the cookie to present, and whose session it is."""

    name: str
    cookie: bytes | None
    username: str
    session: str


def display_number(name: str) -> str:
    """``":0"``, ``":0.0"``, ``"unix:1"`` → ``"0"``, ``"1"``; ``""`` when it is not a display name."""
    _, sep, rest = name.rpartition(":")
    number = rest.split(".", 1)[0]
    return number if sep and number.isdigit() else ""


def logind_sessions(run: Path) -> list[dict[str, str]]:
    """logind's state file of every session (``<run>/systemd/sessions/<id>``: ``USER=``, ``ACTIVE=`` ...),
    each with its ``ID``."""
    sessions: list[dict[str, str]] = []
    for path in list_dir(run / "systemd" / "sessions"):
        lines = (line.partition("=") for line in read_text(path).splitlines())
        sessions.append({**{key: value for key, sep, value in lines if sep}, "ID": path.name})
    return sessions


def active_x_session(run: Path) -> dict[str, str] | None:
    """The active logind session with an X display, with its ``ID``; ``None`` when there is none."""
    for session in logind_sessions(run):
        if session.get("ACTIVE") == "1" and display_number(session.get("DISPLAY", "")):
            return session
    return None


def socket_displays(x11_sockets: Path) -> list[str]:
    """The displays whose server socket is in ``x11_sockets`` (``X0`` → ``":0"``), lowest first."""
    numbers = [p.name[1:] for p in list_dir(x11_sockets) if p.name[:1] == "X" and p.name[1:].isdigit()]
    return [f":{n}" for n in sorted(numbers, key=int)]


def _process_xauthorities(number: str, username: str) -> Iterator[Path]:
    """``XAUTHORITY`` of the user's processes on display ``:number``, and the X server's ``-auth`` file."""
    for process in psutil.process_iter(["username", "name", "cmdline"]):
        info = process.info
        cmdline = info.get("cmdline") or []
        if info.get("name") in _X_SERVERS and f":{number}" in cmdline and "-auth" in cmdline[:-1]:
            yield Path(cmdline[cmdline.index("-auth") + 1])
        elif username and info.get("username") == username:
            with contextlib.suppress(psutil.Error, OSError):
                environ = process.environ()
                if display_number(environ.get("DISPLAY", "")) == number and environ.get("XAUTHORITY"):
                    yield Path(environ["XAUTHORITY"])


def _home(username: str) -> Path | None:
    """The user's home directory; ``None`` for an unknown user."""
    try:
        return Path(pwd.getpwnam(username).pw_dir)
    except KeyError:
        return None


def find_cookie(name: str, username: str, extra: tuple[Path, ...] = ()) -> bytes | None:
    """The cookie for display ``name`` from the first Xauthority file that has one (see the module doc)."""
    number, hostname = display_number(name), socket.gethostname()
    home = _home(username) if username else None
    homes = (home / ".Xauthority",) if home is not None else ()
    seen: set[Path] = set()
    for path in itertools.chain(extra, _process_xauthorities(number, username), homes):
        if path in seen:
            continue
        seen.add(path)
        cookie = pick_cookie(parse_xauthority(read_bytes(path)), number, hostname)
        if cookie is not None:
            return cookie
    return None


def locate_display(roots: Roots, environ: Mapping[str, str]) -> DisplayTarget | None:
    """The display of the active graphical session (see the module docstring for the order)."""
    if environ.get("DISPLAY"):
        name, user = environ["DISPLAY"], environ.get("USER", "")
        home = Path(environ["HOME"]) if environ.get("HOME") else None
        files = [Path(environ["XAUTHORITY"])] if environ.get("XAUTHORITY") else []
        files += [home / ".Xauthority"] if home is not None else []
        return DisplayTarget(name, find_cookie(name, "", tuple(files)), user, "")
    session = active_x_session(roots.run)
    if session is not None:
        name, user = session["DISPLAY"], session.get("USER", "")
        return DisplayTarget(name, find_cookie(name, user), user, session["ID"])
    displays = socket_displays(roots.x11_sockets)
    if displays:
        return DisplayTarget(displays[0], find_cookie(displays[0], ""), "", "")
    return None
