"""The foreground-window collector: which kind of program the person is looking at, matched locally.

The window title never leaves the workstation unless the policy's ``report_titles`` is on: the agent
matches it against the policy's :class:`TitlePattern` list itself (:func:`classify`) and reports the
category and pattern id it matched, with the foreground program's executable name. It reports only
changes of (category, pattern, executable), plus the title when titles are reported.

The back end for this platform is chosen once, at import: Linux reads X11 (``_foreground_linux``),
Windows calls ``user32`` (``_foreground_windows``); elsewhere the collector sees nothing and says so once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import PureWindowsPath
from types import ModuleType

import psutil

from agent.collectors import Roots
from agent.collectors._probes import ForegroundSample, LogOnce
from protos.counterguard.v1 import agent_pb2, facts_pb2

_backend: ModuleType | None
if sys.platform.startswith("linux"):
    from agent.collectors import _foreground_linux as _backend
elif sys.platform == "win32":
    from agent.collectors import _foreground_windows as _backend
else:  # pragma: no cover - neither Linux nor Windows
    _backend = None

__all__ = ["ForegroundReader", "ForegroundTracker", "basename", "classify", "default_reader", "process_identity"]

log = logging.getLogger(__name__)
ForegroundReader = Callable[[], ForegroundSample | None]
"""Reads the foreground window now; ``None`` when there is none or the platform cannot tell."""


def basename(executable: str) -> str:
    """The file name of a program path, ``/`` or ``\\`` separated (``C:\\x\\WeChat.exe`` → ``WeChat.exe``)."""
    return PureWindowsPath(executable).name if executable else ""


def _same_program(a: str, b: str) -> bool:
    """Case-insensitive basenames, with or without a Windows ``.exe``."""
    a, b = a.casefold(), b.casefold()
    return a == b or a.removesuffix(".exe") == b.removesuffix(".exe")


def classify(title: str, executable: str,
             patterns: Iterable[agent_pb2.TitlePattern]) -> tuple[str, str] | None:
    """The (category, pattern id) of the first pattern whose title substring or executable matches.

    Title substrings match case-insensitively anywhere in the title; executables match the basename of
    the foreground program case-insensitively. ``None`` when no pattern matches.
    """
    folded, program = title.casefold(), basename(executable)
    for pattern in patterns:
        if any(needle and needle.casefold() in folded for needle in pattern.title_contains):
            return pattern.category, pattern.id
        if program and any(name and _same_program(program, basename(name)) for name in pattern.executables):
            return pattern.category, pattern.id
    return None


def process_identity(pid: int) -> tuple[str, str]:
    """The executable basename and the user of a process; empty strings for what cannot be read."""
    if pid <= 0:
        return "", ""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            name, username = process.name(), _or_empty(process.username)
            return basename(_or_empty(process.exe) or name), username
    except psutil.Error:
        return "", ""


def _or_empty(read: Callable[[], str]) -> str:
    try:
        return read() or ""
    except psutil.AccessDenied:
        return ""


def default_reader(roots: Roots = Roots()) -> ForegroundReader:
    """The foreground reader of this platform; one that logs once and sees nothing where there is none."""
    if _backend is not None:
        reader: ForegroundReader = _backend.default_reader(roots)
        return reader
    log_once = LogOnce(log, "foreground window")

    def unsupported() -> ForegroundSample | None:
        log_once(f"no foreground probe for platform {sys.platform!r}")
        return None

    return unsupported


class ForegroundTracker:
    """Classifies the foreground window on each poll and reports it when the result changed."""

    def __init__(self, patterns: Iterable[agent_pb2.TitlePattern] = (), *, report_titles: bool = False,
                 reader: ForegroundReader | None = None, roots: Roots = Roots(),
                 identify: Callable[[int], tuple[str, str]] = process_identity) -> None:
        self._patterns = list(patterns)
        self._report_titles = report_titles
        self._read = reader if reader is not None else default_reader(roots)
        self._identify = identify
        self._last: tuple[str, ...] | None = None

    def set_policy(self, patterns: Iterable[agent_pb2.TitlePattern], report_titles: bool) -> None:
        """Use a new pattern list; the next poll reports if the window's classification changes with it."""
        self._patterns = list(patterns)
        self._report_titles = report_titles

    def reset(self) -> None:
        """Forget the last report: the next poll reports the foreground window whatever it is."""
        self._last = None

    def poll(self) -> facts_pb2.ForegroundWindow | None:
        """The foreground window if its category, pattern or program changed since the last report."""
        sample = self._read()
        if sample is None:
            return None
        executable, username = self._identify(sample.pid)
        category, pattern_id = classify(sample.title, executable, self._patterns) or ("", "")
        title = sample.title if self._report_titles else ""
        key = (category, pattern_id, executable, title)
        if key == self._last:
            return None
        self._last = key
        return facts_pb2.ForegroundWindow(category=category, pattern_id=pattern_id, executable=executable,
                                          pid=sample.pid, username=username, title=title)
