"""Collectors: one module per kind of fact, each yielding protobuf messages and knowing nothing of the network.

:class:`Roots` names every file-system location a collector reads, so tests point them at fake
``/sys``, ``/proc`` and dpkg trees and the same code runs anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_APPLICATION_DIRS: tuple[Path, ...] = (
    Path("/usr/share/applications"),
    Path("/usr/local/share/applications"),
    Path("/var/lib/flatpak/exports/share/applications"),
    Path("/var/lib/snapd/desktop/applications"),
)


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
    utmp: Path = Path("/run/utmp")
    var_log: Path = Path("/var/log")
