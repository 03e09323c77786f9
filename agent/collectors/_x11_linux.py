"""The X display of the active graphical session, opened through libX11 with ``ctypes`` (no GUI library).

``_xdisplay_linux`` finds the display and its cookie; the cookie is handed to Xlib with
``XSetAuthorization``, so the process environment is never changed.

Every query opens the display, asks, and closes it again, under one lock: the X server may restart
between polls. Xlib's error handlers are replaced once, so a window vanishing mid-query (``BadWindow``)
is an empty answer, and a server dying mid-query is survived where libX11 has ``XSetIOErrorExitHandler``
(1.7 and later; older libX11 would still exit on it).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from agent.collectors import Roots
from agent.collectors._probes import LogOnce
from agent.collectors._xdisplay_linux import COOKIE_NAME, DisplayTarget, locate_display

log = logging.getLogger(__name__)

c_ulong_p = ctypes.POINTER(ctypes.c_ulong)
_ANY_PROPERTY_TYPE = 0
_MAX_PROPERTY_LONGS = 1 << 16
_lock = threading.Lock()  # Xlib's authorization and error handlers are process-wide: one query at a time


class XTextProperty(ctypes.Structure):
    _fields_ = [("value", ctypes.c_void_p), ("encoding", ctypes.c_ulong), ("format", ctypes.c_int),
                ("nitems", ctypes.c_ulong)]


_ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_IO_ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_IO_EXIT_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


class _Errors:
    """Counts the X errors Xlib reported, instead of letting its default handler end the process."""

    count = 0
    io_failed = False


@_ERROR_HANDLER
def _on_error(_display: Any, _event: Any) -> int:
    _Errors.count += 1
    return 0


@_IO_ERROR_HANDLER
def _on_io_error(_display: Any) -> int:
    _Errors.io_failed = True
    return 0


@_IO_EXIT_HANDLER
def _on_io_exit(_display: Any, _data: Any) -> None:
    _Errors.io_failed = True


_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "XOpenDisplay": (ctypes.c_void_p, [ctypes.c_char_p]),
    "XCloseDisplay": (ctypes.c_int, [ctypes.c_void_p]),
    "XDefaultRootWindow": (ctypes.c_ulong, [ctypes.c_void_p]),
    "XInternAtom": (ctypes.c_ulong, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]),
    "XGetWindowProperty": (ctypes.c_int, [
        ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_long, ctypes.c_long, ctypes.c_int,
        ctypes.c_ulong, c_ulong_p, ctypes.POINTER(ctypes.c_int), c_ulong_p, c_ulong_p,
        ctypes.POINTER(ctypes.c_void_p)]),
    "XGetInputFocus": (ctypes.c_int, [ctypes.c_void_p, c_ulong_p, ctypes.POINTER(ctypes.c_int)]),
    "XQueryTree": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_ulong, c_ulong_p, c_ulong_p,
                                  ctypes.POINTER(c_ulong_p), ctypes.POINTER(ctypes.c_uint)]),
    "XGetWMName": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(XTextProperty)]),
    "Xutf8TextPropertyToTextList": (ctypes.c_int, [
        ctypes.c_void_p, ctypes.POINTER(XTextProperty), ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p)),
        ctypes.POINTER(ctypes.c_int)]),
    "XFreeStringList": (None, [ctypes.POINTER(ctypes.c_char_p)]),
    "XFree": (ctypes.c_int, [ctypes.c_void_p]),
    "XSync": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "XSetAuthorization": (None, [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]),
    "XSetErrorHandler": (ctypes.c_void_p, [_ERROR_HANDLER]),
    "XSetIOErrorHandler": (ctypes.c_void_p, [_IO_ERROR_HANDLER]),
}


def load_library(soname: str, prototypes: Mapping[str, tuple[Any, list[Any]]]) -> ctypes.CDLL | None:
    """A shared library with the given function prototypes declared; ``None`` when it is not installed."""
    try:
        library = ctypes.CDLL(soname)
    except OSError:
        return None
    for name, (restype, argtypes) in prototypes.items():
        function = getattr(library, name)
        function.restype, function.argtypes = restype, argtypes
    return library


_xlib_state: dict[str, ctypes.CDLL | None] = {}


def xlib() -> ctypes.CDLL | None:
    """libX11, loaded once with its error handlers replaced; ``None`` when it is not installed."""
    with _lock:
        if "lib" not in _xlib_state:
            library = load_library("libX11.so.6", _PROTOTYPES)
            if library is not None:
                library.XSetErrorHandler(_on_error)
                library.XSetIOErrorHandler(_on_io_error)
            _xlib_state["lib"] = library
        return _xlib_state["lib"]


# ------------------------------------------------------------------ queries


class Connection:
    """One open display and the few queries the probes make on it."""

    def __init__(self, lib: ctypes.CDLL, handle: int, target: DisplayTarget) -> None:
        self.lib, self.handle, self.target = lib, handle, target

    @property
    def failed(self) -> bool:
        """An X error or a lost connection since the display was opened."""
        return _Errors.count > 0 or _Errors.io_failed

    def root(self) -> int:
        return int(self.lib.XDefaultRootWindow(self.handle))

    def atom(self, name: str) -> int:
        """The atom's number; 0 when the server has never heard of it."""
        return int(self.lib.XInternAtom(self.handle, name.encode(), True))

    def cardinals(self, window: int, name: str) -> list[int]:
        """A 32-bit-format property (``CARDINAL``, ``WINDOW``) as integers; ``[]`` when absent."""
        found = self._property(window, name)
        if found is None or found[1] != 32:
            return []
        return list(found[2])

    def utf8_property(self, window: int, name: str) -> str | None:
        """An 8-bit-format property decoded as UTF-8 (``_NET_WM_NAME``); ``None`` when absent."""
        found = self._property(window, name)
        if found is None or found[1] != 8:
            return None
        return bytes(found[2]).decode("utf-8", errors="replace")

    def _property(self, window: int, name: str) -> tuple[int, int, Any] | None:
        atom = self.atom(name)
        if not atom or not window:
            return None
        kind, fmt = ctypes.c_ulong(), ctypes.c_int()
        count, after, data = ctypes.c_ulong(), ctypes.c_ulong(), ctypes.c_void_p()
        status = self.lib.XGetWindowProperty(
            self.handle, window, atom, 0, _MAX_PROPERTY_LONGS, False, _ANY_PROPERTY_TYPE,
            ctypes.byref(kind), ctypes.byref(fmt), ctypes.byref(count), ctypes.byref(after), ctypes.byref(data))
        if status != 0 or not data.value:
            return None
        try:
            item = {8: ctypes.c_ubyte, 16: ctypes.c_short, 32: ctypes.c_ulong}.get(fmt.value)
            if item is None:
                return None
            values = (item * count.value).from_address(data.value)
            return kind.value, fmt.value, [int(v) for v in values] if fmt.value != 8 else bytes(values)
        finally:
            self.lib.XFree(data)

    def wm_name(self, window: int) -> str | None:
        """``WM_NAME`` in whatever encoding it was set (STRING, COMPOUND_TEXT, UTF8_STRING), as text."""
        prop = XTextProperty()
        if not self.lib.XGetWMName(self.handle, window, ctypes.byref(prop)) or not prop.value:
            return None
        try:
            texts, count = ctypes.POINTER(ctypes.c_char_p)(), ctypes.c_int()
            if self.lib.Xutf8TextPropertyToTextList(self.handle, ctypes.byref(prop), ctypes.byref(texts),
                                                    ctypes.byref(count)) < 0 or not texts:
                raw = ctypes.string_at(prop.value, prop.nitems)
                return raw.decode("latin-1" if prop.format == 8 else "utf-8", errors="replace")
            try:
                return "".join((texts[i] or b"").decode("utf-8", errors="replace") for i in range(count.value))
            finally:
                self.lib.XFreeStringList(texts)
        finally:
            self.lib.XFree(prop.value)

    def input_focus(self) -> int:
        """The window with the keyboard focus; 0 for none or ``PointerRoot``."""
        focus, revert = ctypes.c_ulong(), ctypes.c_int()
        self.lib.XGetInputFocus(self.handle, ctypes.byref(focus), ctypes.byref(revert))
        return focus.value if focus.value > 1 else 0

    def parent(self, window: int) -> int:
        """The window's parent; 0 at the root or when the window is gone."""
        root, parent = ctypes.c_ulong(), ctypes.c_ulong()
        children, count = c_ulong_p(), ctypes.c_uint()
        if not self.lib.XQueryTree(self.handle, window, ctypes.byref(root), ctypes.byref(parent),
                                   ctypes.byref(children), ctypes.byref(count)):
            return 0
        if children:
            self.lib.XFree(children)
        return parent.value if parent.value != root.value else 0


class X11:
    """Opens the active session's display for one query at a time, finding it again when it changes."""

    def __init__(self, roots: Roots, environ: Mapping[str, str] | None = None, *,
                 log_once: LogOnce | None = None) -> None:
        self._roots = roots
        self._environ = os.environ if environ is None else environ
        self._target: DisplayTarget | None = None
        self.log_once = log_once or LogOnce(log, "X11")

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection | None]:
        """An open display, or ``None`` (the reason logged once) when there is none to open."""
        lib = xlib()
        if lib is None:
            self.log_once("libX11 (libx11-6) is not installed")
            yield None
            return
        with _lock:
            handle = self._open(lib)
            if handle is None or self._target is None:
                yield None
                return
            try:
                yield Connection(lib, handle, self._target)
            finally:
                lib.XCloseDisplay(handle)

    def _open(self, lib: ctypes.CDLL) -> int | None:
        """Open the known display, or locate it afresh (once) when that fails."""
        failed = ""
        for attempt in range(2):
            if self._target is None or attempt:
                self._target = locate_display(self._roots, self._environ)
            if self._target is None:
                break
            handle = self._try_open(lib, self._target)
            if handle is not None:
                return handle
            failed, self._target = self._target.name, None
        if failed:
            self.log_once(f"cannot open X display {failed} (no server, or no cookie that it accepts)")
        else:
            self.log_once("no X display: no DISPLAY, no active logind session with one, no X server socket")
        return None

    def _try_open(self, lib: ctypes.CDLL, target: DisplayTarget) -> int | None:
        """``XOpenDisplay`` with the target's cookie (Xlib's default authorization without one)."""
        if target.cookie is None:
            lib.XSetAuthorization(None, 0, None, 0)
        else:
            lib.XSetAuthorization(COOKIE_NAME, len(COOKIE_NAME), target.cookie, len(target.cookie))
        _Errors.count, _Errors.io_failed = 0, False
        handle = lib.XOpenDisplay(target.name.encode())
        if not handle:
            return None
        self._guard_io(lib, handle)
        return int(handle)

    @staticmethod
    def _guard_io(lib: ctypes.CDLL, handle: int) -> None:
        """Survive the server dying mid-query, where libX11 lets us (1.7 and later)."""
        setter = getattr(lib, "XSetIOErrorExitHandler", None)
        if setter is not None:
            setter.restype, setter.argtypes = None, [ctypes.c_void_p, _IO_EXIT_HANDLER, ctypes.c_void_p]
            setter(handle, _on_io_exit, None)
