"""Windows back end of the removable-storage collector: USB and removable-media disks from WMI, their drive letters
from the partition associations, and a cheap drive-letter check deciding when WMI is asked again.

A disk is a ``Win32_DiskDrive`` on USB (``InterfaceType`` ``USB``) or with removable or external media
(``MediaType``), with a medium in it (``Size`` above 0: an empty card reader is not storage). Its ``device`` is
``PHYSICALDRIVE<n>``; vendor and product are what the disk driver reports (``VEN_``/``PROD_`` of the
``PNPDeviceID``, ``Model`` without " USB Device"), the serial is ``SerialNumber``. Vendor and product ids come
from the USB device (``Win32_PnPEntity`` ``USB\\VID_xxxx&PID_xxxx\\<serial>``) whose instance is the disk's
serial, which is also the ``bus_id``; a stick without a serial number (Windows then makes an instance id up,
with ``&`` in it) keeps them empty. A mount is a drive letter on one of its partitions
(``Win32_DiskDriveToDiskPartition`` → ``Win32_LogicalDiskToPartition``), with the partition (``Disk #2,
Partition #0``) as its ``device``, ``E:\\`` as its mount point and ``Win32_LogicalDisk.FileSystem``.

WMI costs tens of milliseconds a query, so :class:`RemovableProbe` asks it only when the drive letters change
(``GetLogicalDrives`` and ``GetDriveTypeW``, microseconds), every ``refresh_seconds`` (30) for disks without a
letter, and again at each poll for up to ``settle_seconds`` (6) after a change while a new letter is not yet on a
disk WMI knows (WMI learns of a stick a moment after its letter appears). At the agent's 2 s poll a stick shows
up within about 2 s of getting its letter. When WMI fails, the last reading stands (no spurious removals) and
the failure is logged once.

WMI is read through the inventory's :class:`~agent.collectors._inventory_windows.WmiReader` and the drive
letters through a :class:`DriveApi` with the Win32 names; tests give fakes with hand-made records. The real ones
(pywin32's WMI, ``kernel32`` through ctypes) exist only on Windows.
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from agent.collectors import Roots
from agent.collectors._inventory_windows import _GENERIC_MAKERS, Win32Wmi, WmiReader
from agent.collectors._probes import LogOnce
from protos.counterguard.v1 import facts_pb2

log = logging.getLogger(__name__)
DRIVE_REMOVABLE = 2
DRIVE_FIXED = 3
_DISK_NUMBER = re.compile(r"PHYSICALDRIVE(\d+)$", re.IGNORECASE)
_PARTITION_DISK = re.compile(r"^Disk #(\d+), Partition #\d+$")
_DISK_PNP_ID = re.compile(r"^[^\\]+\\DISK&VEN_([^&]*)&PROD_([^&\\]*)(?:&REV_[^\\]*)?\\(.+)$", re.IGNORECASE)
_USB_DEVICE_ID = re.compile(r"^USB\\VID_([0-9A-F]{4})&PID_([0-9A-F]{4})\\([^\\]+)$", re.IGNORECASE)
_PATH_KEY = re.compile(r'DeviceID="((?:[^"\\]|\\.)*)"')
_USB_DEVICE_SUFFIX = re.compile(r"\s+USB Device$", re.IGNORECASE)
Row = Mapping[str, Any]
Letters = tuple[tuple[str, int], ...]


class Mount(NamedTuple):
    """A drive letter on a partition of a removable disk."""

    source: str  # the partition, e.g. "Disk #2, Partition #0"
    mount_point: str  # "E:\\"
    fs_type: str


class Reading(NamedTuple):
    """One look through WMI: the removable disks and their drive letters."""

    disks: list[facts_pb2.RemovableStorage]
    mounts: list[Mount]


class DriveApi(Protocol):
    """``kernel32.GetLogicalDrives`` (bit 0 = ``A:``) and ``kernel32.GetDriveTypeW`` (of ``"E:\\"``)."""

    def GetLogicalDrives(self) -> int: ...
    def GetDriveTypeW(self, root: str) -> int: ...


def load_kernel32() -> DriveApi | None:
    """The real ``kernel32.dll`` with the two prototypes declared; ``None`` off Windows."""
    if sys.platform != "win32" or not hasattr(ctypes, "WinDLL"):
        return None
    dll: Any = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    dll.GetLogicalDrives.restype, dll.GetLogicalDrives.argtypes = ctypes.c_uint32, []
    dll.GetDriveTypeW.restype, dll.GetDriveTypeW.argtypes = ctypes.c_uint, [ctypes.c_wchar_p]
    return dll  # type: ignore[no-any-return]


def drive_letters(api: DriveApi) -> Letters:
    """Every drive letter with its drive type, ``(("C:", 3), ("E:", 2))``."""
    mask = int(api.GetLogicalDrives())
    letters = [f"{chr(ord('A') + bit)}:" for bit in range(26) if mask & (1 << bit)]
    return tuple((letter, int(api.GetDriveTypeW(letter + "\\"))) for letter in letters)


# ------------------------------------------------------------------------------------------ parsing


def _text(row: Row, name: str) -> str:
    value = row.get(name)
    return value.strip().strip("\x00").strip() if isinstance(value, str) else ""


def _size(row: Row) -> int:
    try:
        return int(str(row.get("Size") or 0).strip())
    except ValueError:
        return 0


def path_key(object_path: str) -> str:
    """The key of a WMI object path, unescaped: ``…Win32_LogicalDisk.DeviceID="E:"`` → ``E:``."""
    match = _PATH_KEY.search(object_path or "")
    return re.sub(r"\\(.)", r"\1", match.group(1)) if match else ""


def _instance_serial(instance: str) -> str:
    """The serial in a disk's instance id (``4C53…363&0`` → ``4C53…363``); ``""`` when Windows made the id up."""
    serial = instance.rsplit("&", 1)[0] if "&" in instance else instance
    return "" if "&" in serial else serial


def usb_devices(rows: Sequence[Row]) -> dict[str, tuple[str, str, str]]:
    """USB devices by serial (upper case): vendor id, product id (lower-case hex) and the device id."""
    found: dict[str, tuple[str, str, str]] = {}
    for row in rows:
        device_id = _text(row, "DeviceID")
        match = _USB_DEVICE_ID.match(device_id)
        if match and "&" not in match.group(3):
            found[match.group(3).upper()] = (match.group(1).lower(), match.group(2).lower(), device_id)
    return found


def is_removable_disk(row: Row) -> bool:
    """On USB, or removable or external media, and with a medium in it."""
    media = _text(row, "MediaType").lower()
    on_usb = _text(row, "InterfaceType").upper() == "USB"
    return (on_usb or media.startswith(("removable", "external"))) and _size(row) > 0


def removable_disk(row: Row, usb: Mapping[str, tuple[str, str, str]]) -> facts_pb2.RemovableStorage:
    """One ``Win32_DiskDrive`` as removable storage (``action`` left unset)."""
    pnp = _DISK_PNP_ID.match(_text(row, "PNPDeviceID"))
    vendor_code, product_code, instance = pnp.groups() if pnp else ("", "", "")
    vendor_code, product_code = (code.replace("_", " ").strip() for code in (vendor_code, product_code))
    maker = _text(row, "Manufacturer")
    disk = facts_pb2.RemovableStorage(
        device=_text(row, "DeviceID").rsplit("\\", 1)[-1],
        vendor=vendor_code or ("" if _GENERIC_MAKERS.match(maker) else maker),
        product=_USB_DEVICE_SUFFIX.sub("", _text(row, "Model")) or product_code,
        serial=_text(row, "SerialNumber") or _instance_serial(instance),
        size_bytes=_size(row),
    )
    identity = usb.get(_instance_serial(instance).upper()) or usb.get(disk.serial.upper())
    if identity is not None:
        disk.vendor_id, disk.product_id, disk.bus_id = identity
    return disk


def _links(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """An association's (antecedent, dependent) keys."""
    return [(path_key(_text(row, "Antecedent")), path_key(_text(row, "Dependent"))) for row in rows]


def read_removable(wmi: WmiReader) -> Reading:
    """The removable disks and their drive letters, from WMI (five queries; one when there is no such disk)."""
    rows = [row for row in wmi.query("Win32_DiskDrive", ["DeviceID", "Model", "Manufacturer", "SerialNumber",
                                                         "Size", "MediaType", "InterfaceType", "PNPDeviceID"])
            if is_removable_disk(row)]
    if not rows:
        return Reading([], [])
    usb = usb_devices(wmi.query("Win32_PnPEntity", ["DeviceID"]))
    disks = [removable_disk(row, usb) for row in rows]
    wanted = {_text(row, "DeviceID").upper() for row in rows}
    partitions = [(disk, part) for disk, part in _links(wmi.query("Win32_DiskDriveToDiskPartition",
                                                                  ["Antecedent", "Dependent"]))
                  if disk.upper() in wanted]
    letters: dict[str, list[str]] = {}
    for part, letter in _links(wmi.query("Win32_LogicalDiskToPartition", ["Antecedent", "Dependent"])):
        letters.setdefault(part, []).append(letter)
    file_systems = {_text(row, "DeviceID").upper(): _text(row, "FileSystem")
                    for row in wmi.query("Win32_LogicalDisk", ["DeviceID", "FileSystem"])}
    mounts = [Mount(part, f"{letter}\\", file_systems.get(letter.upper(), ""))
              for _, part in sorted(partitions) for letter in sorted(letters.get(part, []))]
    return Reading(disks, mounts)


# ------------------------------------------------------------------------------------ the back end


def belongs_to(source: str, disk: str) -> bool:
    """Whether a mount's partition (``Disk #2, Partition #0``) is on the disk (``PHYSICALDRIVE2``)."""
    on_partition, disk_number = _PARTITION_DISK.match(source), _DISK_NUMBER.search(disk)
    if on_partition and disk_number:
        return int(on_partition.group(1)) == int(disk_number.group(1))
    return source == disk


def is_on_sysfs(path: Path, roots: Roots) -> bool:
    """Windows has no sysfs."""
    return False


class RemovableProbe:
    """The removable disks and their letters now, asking WMI only when the drive letters say something changed."""

    def __init__(self, wmi: WmiReader | None = None, drives: DriveApi | None = None, *,
                 refresh_seconds: float = 30.0, settle_seconds: float = 6.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wmi = wmi
        self._drives = drives  # the real kernel32 is loaded at the first reading, not at import
        self._refresh_seconds, self._settle_seconds = refresh_seconds, settle_seconds
        self._monotonic = monotonic
        self._reading: Reading | None = None
        self._letters: Letters = ()
        self._read_at = 0.0
        self._waiting: set[str] = set()  # new letters not yet on a disk WMI knows
        self._settle_until = 0.0
        self._log_once = LogOnce(log, "removable storage")

    def removable_disks(self, roots: Roots) -> list[facts_pb2.RemovableStorage]:
        """The removable disks (``roots`` is the Linux back end's); reads WMI again when due."""
        self._refresh()
        return list(self._reading.disks) if self._reading else []

    def mounts(self, roots: Roots) -> list[Mount]:
        """The drive letters of the removable disks, as of the last :meth:`removable_disks`."""
        if self._reading is None:
            self._refresh()
        return list(self._reading.mounts) if self._reading else []

    belongs_to = staticmethod(belongs_to)

    def _refresh(self) -> None:
        now = self._monotonic()
        if self._drives is None:
            self._drives = load_kernel32()
        letters = drive_letters(self._drives) if self._drives is not None else ()
        changed = letters != self._letters
        waiting, settle_until = self._waiting, self._settle_until
        if changed and self._reading is not None:  # at the first reading every letter is already there
            known = {letter for letter, _ in self._letters}
            waiting = {letter for letter, kind in letters if kind in (DRIVE_REMOVABLE, DRIVE_FIXED)} - known
            settle_until = now + self._settle_seconds
        stale = now - self._read_at >= self._refresh_seconds
        if self._reading is not None and not changed and not stale and not (waiting and now < settle_until):
            return
        try:
            reading = read_removable(self._wmi or self._real_wmi())
        except Exception as exc:  # noqa: BLE001 - pywintypes.com_error and kin: keep the last reading
            self._log_once(f"WMI failed ({exc}); keeping the last reading")
            return
        self._log_once.clear()
        self._reading, self._letters, self._read_at = reading, letters, now
        self._waiting = waiting - {mount.mount_point.rstrip("\\") for mount in reading.mounts}
        self._settle_until = settle_until

    def _real_wmi(self) -> WmiReader:
        self._wmi = Win32Wmi()
        return self._wmi


_probe = RemovableProbe()


def removable_disks(roots: Roots) -> list[facts_pb2.RemovableStorage]:
    """Every removable disk with a medium in it (``action`` left unset)."""
    return _probe.removable_disks(roots)


def mounts(roots: Roots) -> list[Mount]:
    """The drive letters on the removable disks."""
    return _probe.mounts(roots)
