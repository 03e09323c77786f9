"""The software collector: installed packages and programs, a full list first and then only the changes.

An item is identified on a workstation by ``(source, name)``; :class:`SoftwareTracker` remembers the last
list it reported and turns the next scan into a ``SoftwareDelta`` (added, removed, changed). The back end
for this platform is chosen once, at import; Linux is ``_software_linux``.

:class:`InstallWatcher` (from ``_install_watch``) asks for such a scan within seconds of an install: a
watchdog observer on the install locations, one rescan per burst of changes.
"""

from __future__ import annotations

import sys

from agent.collectors import Roots
from agent.collectors._install_watch import InstallWatcher
from protos.counterguard.v1 import facts_pb2

if sys.platform.startswith("linux"):
    from agent.collectors import _software_linux as _backend
elif sys.platform == "win32":
    from agent.collectors import _software_windows as _backend
else:  # pragma: no cover - no other platform has a back end
    raise NotImplementedError(f"no software collector for platform {sys.platform!r}")

__all__ = ["InstallWatcher", "SoftwareTracker", "collect_software", "software_key"]

SoftwareKey = tuple[int, str]


def software_key(item: facts_pb2.SoftwareItem) -> SoftwareKey:
    """What identifies an item on one workstation: its source and its name."""
    return (item.source, item.name)


def collect_software(roots: Roots = Roots()) -> list[facts_pb2.SoftwareItem]:
    """Everything installed on this machine, sorted by ``(source, name)``; unreadable sources give nothing."""
    return sorted(_backend.collect_software(roots), key=software_key)


class SoftwareTracker:
    """Remembers the installed software between scans and reports what changed."""

    def __init__(self, roots: Roots = Roots()) -> None:
        self._roots = roots
        self._known: dict[SoftwareKey, facts_pb2.SoftwareItem] = {}

    def snapshot(self) -> facts_pb2.SoftwareSnapshot:
        """The full list now; later polls report changes against it."""
        items = collect_software(self._roots)
        self._known = {software_key(item): item for item in items}
        return facts_pb2.SoftwareSnapshot(items=items)

    def poll(self) -> facts_pb2.SoftwareDelta | None:
        """What was added, removed or changed (any field) since the last snapshot or poll; ``None`` if nothing."""
        current = {software_key(item): item for item in collect_software(self._roots)}
        delta = facts_pb2.SoftwareDelta(
            added=[item for key, item in current.items() if key not in self._known],
            removed=[item for key, item in self._known.items() if key not in current],
            changed=[item for key, item in current.items() if key in self._known and self._known[key] != item],
        )
        self._known = current
        return delta if delta.added or delta.removed or delta.changed else None
