"""The removable-storage collector: USB sticks, phones as storage and card readers attached, mounted,
unmounted and removed, with vendor, product and serial.

:class:`RemovableTracker` compares what the platform shows now with the last poll and reports the
differences, in the order UNMOUNTED, REMOVED, ATTACHED, MOUNTED; the first poll reports everything
present. A disk is identified by its device name, USB bus id, ids, serial and size, so a stick swapped
for another under the same name is a removal and an attachment. A mount event's ``device`` is what is
mounted (``sdb1``), with the disk's vendor, product and serial.

:class:`MountWatcher` makes a mount visible within a second instead of at the next poll: a watchdog
observer on the mount roots (``/media``, ``/run/media``, ``/mnt`` or the policy's) and their direct
subdirectories (``/media/<user>``), and on ``<sysfs>/block`` unless that is a real sysfs, where inotify
sees no devices come and go (the poll, every 2 s by default, is what finds them there).

The back end for this platform is chosen once, at import; Linux is ``_removable_linux``, Windows
``_removable_windows``. Elsewhere the tracker sees nothing and says so once.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from agent.collectors import Roots
from agent.collectors._files import list_dir
from agent.collectors._probes import LogOnce
from protos.counterguard.v1 import facts_pb2

_backend: ModuleType | None
if sys.platform.startswith("linux"):
    from agent.collectors import _removable_linux as _backend
elif sys.platform == "win32":
    from agent.collectors import _removable_windows as _backend
else:  # pragma: no cover - neither Linux nor Windows
    _backend = None

__all__ = ["MountWatcher", "RemovableTracker", "disk_key"]

log = logging.getLogger(__name__)
Action = facts_pb2.RemovableStorage.Action
DiskKey = tuple[str, str, str, str, str, int]
MountKey = tuple[DiskKey, str, str]
_QUIET_EVENTS = frozenset({"opened", "closed", "closed_no_write"})


def disk_key(disk: facts_pb2.RemovableStorage) -> DiskKey:
    """What identifies one medium in one slot: device name, bus id, vendor and product ids, serial, size."""
    return (disk.device, disk.bus_id, disk.vendor_id, disk.product_id, disk.serial, disk.size_bytes)


def _event(template: facts_pb2.RemovableStorage, action: Action) -> facts_pb2.RemovableStorage:
    event = facts_pb2.RemovableStorage()
    event.CopyFrom(template)
    event.action = action
    return event


class RemovableTracker:
    """Remembers the removable disks and their mounts, and reports what changed since the last poll."""

    def __init__(self, roots: Roots = Roots(), *, backend: Any = None) -> None:
        """``backend``: this platform's (the default), or another with the same functions (tests)."""
        self._roots = roots
        self._backend = backend if backend is not None else _backend
        self._disks: dict[DiskKey, facts_pb2.RemovableStorage] = {}
        self._mounts: dict[MountKey, facts_pb2.RemovableStorage] = {}
        self._log_once = LogOnce(log, "removable storage")

    def poll(self) -> list[facts_pb2.RemovableStorage]:
        """UNMOUNTED, REMOVED, ATTACHED and MOUNTED events since the previous poll."""
        if self._backend is None:
            self._log_once(f"no removable-storage probe for platform {sys.platform!r}")
            return []
        disks = {disk_key(d): d for d in self._backend.removable_disks(self._roots)}
        mounted = self._mounted(disks, self._backend.mounts(self._roots))
        events = [
            *(_event(m, facts_pb2.RemovableStorage.ACTION_UNMOUNTED) for k, m in self._mounts.items() if k not in mounted),
            *(_event(d, facts_pb2.RemovableStorage.ACTION_REMOVED) for k, d in self._disks.items() if k not in disks),
            *(_event(d, facts_pb2.RemovableStorage.ACTION_ATTACHED) for k, d in disks.items() if k not in self._disks),
            *(_event(m, facts_pb2.RemovableStorage.ACTION_MOUNTED) for k, m in mounted.items() if k not in self._mounts),
        ]
        self._disks, self._mounts = disks, mounted
        return events

    def _mounted(self, disks: dict[DiskKey, facts_pb2.RemovableStorage],
                 table: Iterable[tuple[str, str, str]]) -> dict[MountKey, facts_pb2.RemovableStorage]:
        """The mounts of the given disks: each a copy of its disk with device, mount point and type set."""
        found: dict[MountKey, facts_pb2.RemovableStorage] = {}
        for source, mount_point, fs_type in table:
            for key, disk in disks.items():
                if self._backend.belongs_to(source, disk.device):
                    mount = facts_pb2.RemovableStorage()
                    mount.CopyFrom(disk)
                    mount.device, mount.mount_point, mount.fs_type = source, mount_point, fs_type
                    found[(key, source, mount_point)] = mount
        return found


def _plain_dir(path: Path) -> bool:
    """A directory that is neither a link nor a mount point (a mounted stick's own files are not watched)."""
    return path.is_dir() and not path.is_symlink() and not os.path.ismount(path)


class _Wake(FileSystemEventHandler):
    """Calls ``wake`` for every change under a watched directory (not for mere opens and closes)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _QUIET_EVENTS:
            self._wake()


class MountWatcher:
    """Wakes the service when something appears or disappears where removable storage gets mounted."""

    def __init__(self, wake: Callable[[], None], roots: Roots = Roots(),
                 mount_roots: Iterable[Path] | None = None) -> None:
        self._roots = roots
        self._mount_roots = tuple(mount_roots) if mount_roots is not None else roots.mount_roots
        self._handler = _Wake(wake)
        self._observer: BaseObserver | None = None
        self._watches: dict[Path, ObservedWatch] = {}
        self._lock = threading.Lock()

    @property
    def watched(self) -> list[Path]:
        """The directories being watched now."""
        with self._lock:
            return sorted(self._watches)

    def start(self) -> None:
        """Start the observer thread and watch what exists now."""
        with self._lock:
            if self._observer is None:
                self._observer = Observer()
                self._observer.start()
        self.refresh()

    def stop(self) -> None:
        """Stop watching and end the observer thread."""
        with self._lock:
            observer, self._observer = self._observer, None
            self._watches.clear()
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def set_mount_roots(self, mount_roots: Iterable[Path]) -> None:
        """Watch these mount roots instead (the policy's ``removable_mount_roots``)."""
        self._mount_roots = tuple(mount_roots)
        self.refresh()

    def wanted(self) -> set[Path]:
        """What should be watched now: existing mount roots, their subdirectories, and the block directory."""
        wanted = {root for root in self._mount_roots if root.is_dir()}
        wanted |= {sub for root in list(wanted) for sub in list_dir(root) if _plain_dir(sub)}
        block = self._roots.sysfs / "block"
        if block.is_dir() and _backend is not None and not _backend.is_on_sysfs(block, self._roots):
            wanted.add(block)
        return wanted

    def refresh(self) -> None:
        """Add watches for directories that appeared, drop those that went (cheap: call after each poll)."""
        wanted = self.wanted()
        with self._lock:
            if self._observer is None:
                return
            for path in [p for p in self._watches if p not in wanted]:
                self._unschedule(path)
            for path in sorted(wanted - set(self._watches)):
                self._schedule(path)

    def _schedule(self, path: Path) -> None:
        assert self._observer is not None
        try:
            self._watches[path] = self._observer.schedule(self._handler, str(path), recursive=False)
        except OSError as exc:  # gone meanwhile, or out of inotify watches: the poll still sees it
            log.warning("cannot watch %s for removable storage: %s", path, exc)

    def _unschedule(self, path: Path) -> None:
        assert self._observer is not None
        watch = self._watches.pop(path)
        try:
            self._observer.unschedule(watch)
        except (KeyError, OSError):  # its directory is gone and watchdog dropped it already
            pass
