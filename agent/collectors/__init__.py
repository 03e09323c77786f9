"""Collectors: one module per kind of fact, each yielding protobuf messages and knowing nothing of the network.

:class:`Roots` names every file-system location a collector reads, so tests point them at fake
``/sys``, ``/proc`` and dpkg trees and the same code runs anywhere.

:data:`COLLECTORS` is the one registry of collector modules: the agent service and the contract tests
read it instead of discovering modules. Each public module (``inventory``, ``software``, ...) picks its
platform back end (``_inventory_linux`` and so on) once, at import, the way psutil does.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

DEFAULT_APPLICATION_DIRS: tuple[Path, ...] = (
    Path("/usr/share/applications"),
    Path("/usr/local/share/applications"),
    Path("/var/lib/flatpak/exports/share/applications"),
    Path("/var/lib/snapd/desktop/applications"),
)
DEFAULT_MOUNT_ROOTS: tuple[Path, ...] = (Path("/media"), Path("/run/media"), Path("/mnt"))


@dataclass(frozen=True)
class Roots:
    """Where the Linux collectors read from; the defaults are the real system locations."""

    sysfs: Path = Path("/sys")
    procfs: Path = Path("/proc")
    etc: Path = Path("/etc")
    dpkg_status: Path = Path("/var/lib/dpkg/status")
    dpkg_info: Path = Path("/var/lib/dpkg/info")
    application_dirs: tuple[Path, ...] = DEFAULT_APPLICATION_DIRS
    flatpak_dirs: tuple[Path, ...] = (Path("/var/lib/flatpak"),)
    snap_dir: Path = Path("/snap")
    # Where programs are unpacked outside any package database; watched for new installs.
    opt_dirs: tuple[Path, ...] = (Path("/opt"),)
    utmp: Path = Path("/run/utmp")
    var_log: Path = Path("/var/log")
    run: Path = Path("/run")
    pci_ids: tuple[Path, ...] = (Path("/usr/share/misc/pci.ids"), Path("/usr/share/hwdata/pci.ids"))
    # The X servers' sockets, one ``X<n>`` per display ``:<n>`` (the foreground and idle probes).
    x11_sockets: Path = Path("/tmp/.X11-unix")
    # Where removable storage gets mounted; those that exist are watched (the policy may name others).
    mount_roots: tuple[Path, ...] = DEFAULT_MOUNT_ROOTS


@dataclass(frozen=True)
class Collector:
    """One collector module and the ``Fact.kind`` fields (see ``facts.proto``) its messages go into."""

    name: str
    fact_kinds: tuple[str, ...]

    @property
    def module_name(self) -> str:
        """The dotted module path, e.g. ``agent.collectors.inventory``."""
        return f"{__name__}.{self.name}"

    def load(self) -> ModuleType:
        """Import the module (and with it the back end for this platform)."""
        return importlib.import_module(self.module_name)


COLLECTORS: tuple[Collector, ...] = (
    Collector("inventory", ("inventory",)),
    Collector("software", ("software_snapshot", "software_delta")),
    Collector("processes", ("process_snapshot", "process_started", "process_stopped")),
    Collector("sessions", ("session_snapshot", "session")),
    Collector("power", ("power",)),
    Collector("activity", ("activity",)),
    Collector("foreground", ("foreground",)),
    Collector("removable", ("removable_storage",)),
    Collector("antivirus", ("antivirus",)),
)
"""Every collector, listed explicitly. A new collector module is added here or the contract test fails."""
