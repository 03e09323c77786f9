"""PCI devices (the controllers FusionInventory lists) from ``<sysfs>/bus/pci/devices``.

Vendor and device names come from the system's ``pci.ids`` database when it is installed (Debian's
``pciutils``/``hwdata``); only the ids present on this machine are looked up, in one pass over the file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

from agent.collectors import Roots
from agent.collectors._files import list_dir, read_text
from protos.counterguard.v1 import facts_pb2


def _hex(path: Path, digits: int) -> str:
    """``0x8086`` → ``8086`` (lower case, zero-padded); ``""`` when unreadable."""
    text = read_text(path).lower().removeprefix("0x")
    return text.zfill(digits) if text else ""


def _driver(device: Path) -> str:
    try:
        return os.path.basename(os.readlink(device / "driver"))
    except OSError:
        return ""


def pci_names(paths: Iterable[Path], wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Names for ``(vendor, "")`` and ``(vendor, device)`` ids from the first readable ``pci.ids``.

    The answer is cached per file version (path, size, modification time) and set of ids, so the
    hourly inventory check reads the 1.3 MB database only when it or the hardware changed.
    """
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        return _names_from(path, st.st_size, st.st_mtime_ns, frozenset(wanted))
    return {}


@functools.lru_cache(maxsize=4)
def _names_from(
    path: Path, _size: int, _mtime_ns: int, wanted: frozenset[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """One pass over a ``pci.ids`` file, keeping the names of the ``wanted`` ids (the cache key
    includes the file's size and time, so a changed file is read again)."""
    vendors = {vendor for vendor, _ in wanted}
    names: dict[tuple[str, str], str] = {}
    vendor = ""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("C "):  # the device-class section follows the vendors
                    break
                if not line.strip() or line.startswith("#"):
                    continue
                if not line.startswith("\t"):
                    vendor, _, name = line.strip().partition("  ")
                    if vendor in vendors:
                        names[(vendor, "")] = name.strip()
                elif not line.startswith("\t\t") and vendor in vendors:
                    device, _, name = line.strip().partition("  ")
                    if (vendor, device) in wanted:
                        names[(vendor, device)] = name.strip()
    except OSError:
        return {}
    return names


def pci_devices(roots: Roots) -> list[facts_pb2.PciDevice]:
    """Every PCI function, in slot order, with names when ``pci.ids`` knows them."""
    devices = []
    for entry in list_dir(roots.sysfs / "bus" / "pci" / "devices"):
        devices.append(
            facts_pb2.PciDevice(
                slot=entry.name,
                class_code=_hex(entry / "class", 6),
                vendor_id=_hex(entry / "vendor", 4),
                device_id=_hex(entry / "device", 4),
                subsystem_vendor_id=_hex(entry / "subsystem_vendor", 4),
                subsystem_device_id=_hex(entry / "subsystem_device", 4),
                driver=_driver(entry),
            )
        )
    wanted = {(d.vendor_id, d.device_id) for d in devices}
    names = pci_names(roots.pci_ids, wanted) if devices else {}
    for device in devices:
        device.vendor = names.get((device.vendor_id, ""), "")
        device.device = names.get((device.vendor_id, device.device_id), "")
    return devices
