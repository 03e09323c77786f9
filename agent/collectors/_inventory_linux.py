"""Linux back end of the inventory collector: hostname and OS here, hardware and devices from sibling modules.

The OS install date is a best effort, as Linux records none: the earliest modification time among
``<var_log>/installer`` (written by the Debian installer, never touched again), ``<etc>/machine-id``
(created on first boot) and ``<dpkg_info>/base-files.list`` (written when the base system was unpacked,
rewritten only when ``base-files`` is upgraded). Taking the earliest means a later upgrade cannot move
the date forward; the date is left unset when none of them exists.
"""

from __future__ import annotations

import os
import platform
import socket

from agent.collectors import Roots
from agent.collectors._accounts_linux import local_groups, local_users
from agent.collectors._files import mtime, read_text, timestamp
from agent.collectors._filesystems_linux import StatVfs, filesystems
from agent.collectors._hardware_linux import cpu_info, disks, memory_info, system_info
from agent.collectors._network_linux import AddressReader, default_gateway, network_interfaces
from agent.collectors._pci_linux import pci_devices
from agent.collectors._peripherals_linux import printers, usb_devices
from protos.counterguard.v1 import facts_pb2


def hostname(roots: Roots) -> str:
    """The kernel's host name (``/proc/sys/kernel/hostname``), or the socket library's when that is unreadable."""
    return read_text(roots.procfs / "sys" / "kernel" / "hostname") or socket.gethostname()


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` lines of an ``os-release`` file, quotes removed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            values[key] = value
    return values


def os_info(roots: Roots) -> facts_pb2.OsInfo:
    """Distribution name, version and id, kernel release, architecture, machine id and install date."""
    release = parse_os_release(read_text(roots.etc / "os-release"))
    info = facts_pb2.OsInfo(
        family="linux",
        name=release.get("NAME", ""),
        version=release.get("VERSION_ID") or release.get("VERSION", ""),
        id=release.get("ID", ""),
        kernel=read_text(roots.procfs / "sys" / "kernel" / "osrelease") or os.uname().release,
        architecture=platform.machine(),
        machine_id=read_text(roots.etc / "machine-id"),
    )
    candidates = (roots.var_log / "installer", roots.etc / "machine-id", roots.dpkg_info / "base-files.list")
    times = [moment for moment in map(mtime, candidates) if moment is not None]
    if times:
        info.install_date.CopyFrom(timestamp(min(times)))
    return info


def collect_inventory(
    roots: Roots, read_addresses: AddressReader, statvfs: StatVfs = os.statvfs
) -> facts_pb2.InventorySnapshot:
    """The whole inventory of this machine."""
    return facts_pb2.InventorySnapshot(
        hostname=hostname(roots),
        system=system_info(roots),
        cpu=cpu_info(roots),
        memory=memory_info(roots),
        disks=disks(roots),
        network_interfaces=network_interfaces(roots, read_addresses),
        default_gateway=default_gateway(roots),
        os=os_info(roots),
        usb_devices=usb_devices(roots),
        printers=printers(roots),
        pci_devices=pci_devices(roots),
        filesystems=filesystems(roots, statvfs),
        local_users=local_users(roots),
        local_groups=local_groups(roots),
    )
