"""Linux back end of the removable-storage collector: disks from sysfs, mounts from the mount table.

A disk is ``<sysfs>/block/sd*`` with ``removable`` = 1 or a USB device among its ancestors (USB sticks
often say ``removable`` 0, USB hard disks always do), and a medium in it (``size`` above 0: an empty
card reader is not storage). Vendor, product and serial come from the USB ancestor (``idVendor``,
``idProduct``, ``manufacturer``, ``product``, ``serial``), else from the SCSI ``device/vendor`` and
``device/model``. A disk is mounted when it or one of its partitions (``sdb1``) is a source in
``<procfs>/self/mounts``. Optical drives (``sr*``), SD cards on an internal reader (``mmcblk*``) and
disks mounted through device mapper (LUKS) are not covered.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from agent.collectors import Roots
from agent.collectors._files import list_dir, read_int, read_text
from protos.counterguard.v1 import facts_pb2

_SECTOR = 512


class Mount(NamedTuple):
    """One line of the mount table."""

    source: str  # e.g. "sdb1" for /dev/sdb1, else the source as written
    mount_point: str
    fs_type: str


def _usb_ancestor(device: Path, sysfs: Path) -> Path | None:
    """The USB device directory (the one with ``idVendor``) above a block device, if it is on USB."""
    try:
        path, top = device.resolve(), sysfs.resolve()
    except (OSError, RuntimeError):
        return None
    while path != path.parent and path.is_relative_to(top):
        if (path / "idVendor").is_file():
            return path
        path = path.parent
    return None


def _disk(block: Path, sysfs: Path) -> facts_pb2.RemovableStorage | None:
    """One ``<sysfs>/block/<name>`` as removable storage; ``None`` when it is fixed or has no medium."""
    usb = _usb_ancestor(block / "device", sysfs)
    size = read_int(block / "size") or 0
    if (read_int(block / "removable") != 1 and usb is None) or size <= 0:
        return None
    disk = facts_pb2.RemovableStorage(device=block.name, size_bytes=size * _SECTOR,
                                      vendor=read_text(block / "device" / "vendor"),
                                      product=read_text(block / "device" / "model"))
    if usb is not None:
        disk.bus_id = usb.name
        disk.vendor_id, disk.product_id = read_text(usb / "idVendor").lower(), read_text(usb / "idProduct").lower()
        disk.vendor = read_text(usb / "manufacturer") or disk.vendor
        disk.product = read_text(usb / "product") or disk.product
        disk.serial = read_text(usb / "serial")
    return disk


def removable_disks(roots: Roots) -> list[facts_pb2.RemovableStorage]:
    """Every removable disk with a medium in it, by device name (``action`` left unset)."""
    found = (_disk(block, roots.sysfs) for block in list_dir(roots.sysfs / "block") if block.name.startswith("sd"))
    return [disk for disk in found if disk is not None]


def _unescape(field: str) -> str:
    r"""The kernel writes space, tab, newline and backslash in mount fields as octal (``\040``)."""
    if "\\" not in field:
        return field
    raw = field.encode("utf-8", errors="surrogateescape")
    out, i = bytearray(), 0
    while i < len(raw):
        chunk = raw[i + 1:i + 4]
        if raw[i:i + 1] == b"\\" and len(chunk) == 3 and all(48 <= c <= 55 for c in chunk):
            out.append(int(chunk, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", errors="replace")


def mounts(roots: Roots) -> list[Mount]:
    """The mount table (``<procfs>/self/mounts``); ``/dev/sdb1`` becomes source ``sdb1``."""
    table: list[Mount] = []
    for line in read_text(roots.procfs / "self" / "mounts").splitlines():
        fields = line.split()
        if len(fields) >= 3:
            source = _unescape(fields[0])
            source = source.removeprefix("/dev/") if source.startswith("/dev/") else source
            table.append(Mount(source, _unescape(fields[1]), fields[2]))
    return table


def belongs_to(source: str, disk: str) -> bool:
    """Whether a mount source is the disk itself or one of its partitions (``sdb``, ``sdb1``)."""
    return source == disk or (source.startswith(disk) and source[len(disk):].isdigit())


def is_on_sysfs(path: Path, roots: Roots) -> bool:
    """Whether ``path`` lies on a sysfs mount, where inotify reports no device changes."""
    try:
        resolved = os.path.realpath(path)
    except (OSError, ValueError):
        return False
    best, fs_type = "", ""
    for mount in mounts(roots):
        point = mount.mount_point.rstrip("/") or "/"
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fs_type = point, mount.fs_type
    return fs_type == "sysfs"
