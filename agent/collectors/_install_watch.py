"""The install watcher: a software rescan within seconds of an install, and only one per burst of changes.

A watchdog observer watches every install location that exists (see ``_install_locations``) and, for
one that does not exist yet, its nearest existing ancestor, for the next path component only (``/opt``
missing: ``/`` for ``opt``). A change in a location marks a rescan; a change in such an ancestor, or in
the password file, marks only a refresh of what is watched. Either starts a burst, and
:class:`Debouncer` decides when it is over: quiet for ``quiet`` seconds, or ``max_delay`` seconds after
its first change, whichever comes first (a package manager touches hundreds of files; an install that
runs longer than ``max_delay`` gets a rescan in the middle and another after it). Then the watcher
refreshes its watches and calls ``rescan`` once, when the burst touched a location or the refresh found
a new one (a folder that appears may already hold what was installed). A refresh also runs every
``refresh_interval`` seconds, in case a change was missed.

inotify is asked only for entries created, deleted, moved and written (in an ancestor or the password
file's folder: not even written to, only finished writing), never for opens and reads: every program
start opens ``/etc/ld.so.cache``. A watched directory itself counts only when it is deleted or moved.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from agent.collectors import Roots
from agent.collectors._install_locations import Location, linux_locations, windows_locations

__all__ = ["Debouncer", "InstallWatcher", "default_locations", "watch_rules"]

log = logging.getLogger(__name__)
_GONE_EVENTS = frozenset({"deleted", "moved"})
# The events asked of inotify: entries coming, going and closed after writing; and in install locations
# every write and attribute change too (a ``touch``, a link replaced in place).
_STRUCTURE: list[type[FileSystemEvent]] = [DirCreatedEvent, FileCreatedEvent, DirDeletedEvent, FileDeletedEvent,
                                            DirMovedEvent, FileMovedEvent, FileClosedEvent]
_CONTENT: list[type[FileSystemEvent]] = [*_STRUCTURE, FileModifiedEvent]
WatchKey = tuple[Path, bool, bool]  # directory, recursive, content events too


def default_locations(roots: Roots) -> list[Location]:
    """This platform's install locations."""
    return windows_locations(os.environ) if sys.platform == "win32" else linux_locations(roots)


class Debouncer:
    """When a burst of changes is over: ``quiet`` seconds after its last change, at most ``max_delay`` after its first."""

    def __init__(self, quiet: float, max_delay: float) -> None:
        self._quiet, self._max_delay = quiet, max_delay
        self._first: float | None = None
        self._last = 0.0

    def note(self, now: float) -> None:
        """A change happened at ``now`` (monotonic seconds)."""
        if self._first is None:
            self._first = now
        self._last = now

    def due(self) -> float | None:
        """When the current burst ends; ``None`` when there is none."""
        if self._first is None:
            return None
        return min(self._last + self._quiet, self._first + self._max_delay)

    def take(self, now: float) -> bool:
        """True (and the burst forgotten) when a burst has ended by ``now``."""
        due = self.due()
        if due is None or now < due:
            return False
        self._first = None
        return True


def _nearest_existing(path: Path) -> Location | None:
    """For a missing directory: its nearest existing ancestor, watched for the next component only."""
    for parent in path.parents:
        if parent.is_dir():
            return Location(parent, names=frozenset({path.relative_to(parent).parts[0]}), rescan=False)
    return None


def watch_rules(locations: Iterable[Location]) -> list[Location]:
    """What to watch now: each location that is a directory, and for each missing one its nearest ancestor."""
    rules: list[Location] = []
    for location in locations:
        path = Path(location.path)
        rule = Location(path, location.recursive, location.names, location.rescan) if path.is_dir() \
            else _nearest_existing(path)
        if rule is not None and rule not in rules:
            rules.append(rule)
    return rules


def _matches(rule: Location, path: Path, event_type: str) -> bool:
    """Whether a change of ``path`` counts for ``rule``."""
    if path == rule.path:
        return event_type in _GONE_EVENTS
    if rule.recursive:
        return rule.path in path.parents
    return path.parent == rule.path and (not rule.names or path.name in rule.names)


class _Relay(FileSystemEventHandler):
    """Hands every change inotify reports to the watcher."""

    def __init__(self, changed: Callable[[list[Path], str], None]) -> None:
        self._changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [Path(os.fsdecode(event.src_path))]
        if event.dest_path:
            paths.append(Path(os.fsdecode(event.dest_path)))
        self._changed(paths, event.event_type)


class InstallWatcher:
    """Calls ``rescan`` once after each burst of changes in the install locations (see the module docstring)."""

    def __init__(self, rescan: Callable[[], None], roots: Roots = Roots(), *, quiet: float = 2.0,
                 max_delay: float = 8.0, refresh_interval: float = 60.0,
                 locations: Callable[[], list[Location]] | None = None) -> None:
        self._rescan = rescan
        self._locations = locations if locations is not None else (lambda: default_locations(roots))
        self._refresh_interval = refresh_interval
        self._handler = _Relay(self._changed)
        self._burst = Debouncer(quiet, max_delay)
        self._pending_rescan = False
        self._rules: list[Location] = []
        self._watches: dict[WatchKey, ObservedWatch] = {}
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None
        self._cond = threading.Condition()
        self._watch_lock = threading.Lock()

    @property
    def watched(self) -> list[Path]:
        """The directories being watched now."""
        with self._watch_lock:
            return sorted({path for path, _, _ in self._watches})

    def start(self) -> None:
        """Watch what exists now and start the observer and the debounce thread."""
        with self._watch_lock:
            if self._observer is not None:
                return
            self._observer = Observer()
            self._observer.start()
        self.refresh()
        self._worker = threading.Thread(target=self._run, name="install-watch", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop watching; end both threads."""
        with self._cond:
            worker, self._worker = self._worker, None
            self._cond.notify_all()
        with self._watch_lock:
            observer, self._observer = self._observer, None
            self._watches.clear()
        if worker is not None:
            worker.join(timeout=5)
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def refresh(self) -> bool:
        """Watch the locations as they are now; True when a location to rescan on is newly watched."""
        rules = watch_rules(self._locations())
        content = {(Path(rule.path), rule.recursive) for rule in rules if rule.rescan}
        wanted = {(Path(rule.path), rule.recursive, (Path(rule.path), rule.recursive) in content) for rule in rules}
        with self._watch_lock:
            if self._observer is None:
                return False
            for key in [key for key in self._watches if key not in wanted]:
                self._unschedule(key)
            for key in sorted(wanted - set(self._watches)):
                self._schedule(key)
            before = {rule for rule in self._rules if rule.rescan}
            self._rules = rules
        return any(rule.rescan and rule not in before for rule in rules)

    def _schedule(self, key: WatchKey) -> None:
        assert self._observer is not None
        path, recursive, content = key
        try:
            self._watches[key] = self._observer.schedule(self._handler, str(path), recursive=recursive,
                                                         event_filter=_CONTENT if content else _STRUCTURE)
        except OSError as exc:  # gone meanwhile, or out of inotify watches: the scheduled rescan still runs
            log.warning("cannot watch %s for installs: %s", path, exc)

    def _unschedule(self, key: WatchKey) -> None:
        assert self._observer is not None
        watch = self._watches.pop(key)
        try:
            self._observer.unschedule(watch)
        except (KeyError, OSError):  # its directory is gone and watchdog dropped it already
            pass

    def _changed(self, paths: list[Path], event_type: str) -> None:
        """Called on the observer thread: note a rescan or a refresh for the rules the change matches."""
        with self._watch_lock:
            hits = [rule.rescan for rule in self._rules for path in paths if _matches(rule, path, event_type)]
        if hits:
            with self._cond:
                self._pending_rescan = self._pending_rescan or any(hits)
                self._burst.note(time.monotonic())
                self._cond.notify_all()

    def _wait(self, next_refresh: float) -> tuple[bool, bool] | None:
        """Sleep until a burst ends or a refresh is due: (burst ended, rescan asked); ``None`` when stopping."""
        with self._cond:
            while self._worker is not None:
                now = time.monotonic()
                due = self._burst.due()
                wake_at = next_refresh if due is None else min(due, next_refresh)
                if now >= wake_at:
                    ended = self._burst.take(now)
                    asked, self._pending_rescan = self._pending_rescan and ended, self._pending_rescan and not ended
                    return ended, asked
                self._cond.wait(wake_at - now)
        return None

    def _run(self) -> None:
        next_refresh = time.monotonic() + self._refresh_interval
        while (woke := self._wait(next_refresh)) is not None:
            ended, asked = woke
            if ended or time.monotonic() >= next_refresh:
                try:
                    found = self.refresh()
                except OSError as exc:  # e.g. the password file unreadable for a moment
                    log.warning("install watch refresh failed: %s", exc)
                    found = False
                next_refresh = time.monotonic() + self._refresh_interval
                if asked or found:
                    self._call_rescan()

    def _call_rescan(self) -> None:
        try:
            self._rescan()
        except Exception:  # noqa: BLE001 - the watcher outlives a failing callback
            log.exception("install watch: the rescan callback failed")
