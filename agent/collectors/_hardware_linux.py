"""Linux hardware inventory: DMI system data, CPU, memory and disks, read from sysfs and procfs.

Every value comes from a pseudo-file; a file that is absent (no DMI on many ARM boards, no cpufreq in
virtual machines) or root-only (``product_serial``, ``board_serial``) leaves its field empty.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from agent.collectors import Roots
from agent.collectors._classify import chassis_name
from agent.collectors._files import list_dir, read_bytes, read_int, read_text
from protos.counterguard.v1 import facts_pb2

# SystemInfo field → file under /sys/class/dmi/id.
_DMI_FILES: dict[str, str] = {
    "vendor": "sys_vendor",
    "model": "product_name",
    "serial": "product_serial",
    "uuid": "product_uuid",
    "bios_vendor": "bios_vendor",
    "bios_version": "bios_version",
    "bios_date": "bios_date",
    "board_vendor": "board_vendor",
    "board_model": "board_name",
    "board_serial": "board_serial",
}

# Block devices that are not hardware: loop files, RAM disks, compressed swap, device-mapper, software RAID,
# network block devices.
_VIRTUAL_BLOCK_PREFIXES: tuple[str, ...] = ("loop", "ram", "zram", "dm-", "md", "nbd")

# ARM "CPU implementer" codes (as lscpu names them) for CPUs whose cpuinfo has no vendor_id.
_ARM_IMPLEMENTERS: dict[str, str] = {
    "0x41": "ARM", "0x42": "Broadcom", "0x43": "Cavium", "0x48": "HiSilicon", "0x4e": "NVIDIA",
    "0x50": "APM", "0x51": "Qualcomm", "0x53": "Samsung", "0x61": "Apple", "0x70": "Phytium", "0xc0": "Ampere",
}


def system_info(roots: Roots) -> facts_pb2.SystemInfo:
    """Vendor, model, serial, UUID, BIOS and board from DMI; empty fields where DMI says nothing."""
    dmi = roots.sysfs / "class" / "dmi" / "id"
    info = facts_pb2.SystemInfo(**{field: read_text(dmi / name) for field, name in _DMI_FILES.items()})
    info.chassis_type = chassis_name(read_text(dmi / "chassis_type"))
    return info


def _cpuinfo_blocks(roots: Roots) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as one dict per processor block, keys lower-cased."""
    blocks: list[dict[str, str]] = []
    for chunk in read_text(roots.procfs / "cpuinfo").split("\n\n"):
        block: dict[str, str] = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                block.setdefault(key.strip().lower(), value.strip())
        if block:
            blocks.append(block)
    return blocks


def _first(blocks: list[dict[str, str]], *keys: str) -> str:
    """The first non-empty value of any of ``keys`` in any block."""
    for key in keys:
        for block in blocks:
            if block.get(key):
                return block[key]
    return ""


def cpu_info(roots: Roots) -> facts_pb2.CpuInfo:
    """Model, vendor, architecture, core counts and maximum clock of the CPU."""
    blocks = _cpuinfo_blocks(roots)
    logical = sum(1 for block in blocks if "processor" in block) or (os.cpu_count() or 0)
    cores = {(b["physical id"], b["core id"]) for b in blocks if "physical id" in b and "core id" in b}
    vendor = _first(blocks, "vendor_id") or _ARM_IMPLEMENTERS.get(_first(blocks, "cpu implementer").lower(), "")
    max_khz = read_int(roots.sysfs / "devices" / "system" / "cpu" / "cpu0" / "cpufreq" / "cpuinfo_max_freq")
    return facts_pb2.CpuInfo(
        model=_first(blocks, "model name", "hardware", "processor name", "cpu model"),
        vendor=vendor,
        architecture=platform.machine(),
        physical_cores=len(cores) or logical,
        logical_cores=logical,
        max_mhz=max_khz / 1000 if max_khz and max_khz > 0 else 0.0,
    )


def memory_info(roots: Roots) -> facts_pb2.MemoryInfo:
    """Installed RAM and swap, from ``/proc/meminfo`` (kB there, bytes here)."""
    totals: dict[str, int] = {}
    for line in read_text(roots.procfs / "meminfo").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if key in ("MemTotal", "SwapTotal") and fields and fields[0].isdigit():
            totals[key] = int(fields[0]) * 1024
    return facts_pb2.MemoryInfo(total_bytes=totals.get("MemTotal", 0), swap_bytes=totals.get("SwapTotal", 0))


def _vpd_serial(path: Path) -> str:
    """The unit serial number from a SCSI VPD page 0x80 (4-byte header, then ASCII)."""
    page = read_bytes(path)
    if len(page) <= 4 or page[1] != 0x80:
        return ""
    return page[4 : 4 + int.from_bytes(page[2:4], "big")].decode("ascii", "replace").strip(" \x00")


def _usb_ancestor_serial(block: Path) -> str:
    """The serial of the USB device a disk hangs off (a memory stick), found by walking up sysfs."""
    try:
        node = (block / "device").resolve(strict=True)
    except (OSError, RuntimeError):
        return ""
    for ancestor in (node, *node.parents[:8]):
        if (ancestor / "idVendor").is_file():
            return read_text(ancestor / "serial")
    return ""


def _wwid_serial(wwid: str) -> str:
    """A serial from a world-wide id: ``t10.ATA <model> <serial>`` names it last; other forms are kept whole."""
    return wwid.split()[-1] if wwid.startswith("t10.") and len(wwid.split()) > 1 else wwid


def _disk_serial(block: Path) -> str:
    """The first serial sysfs offers: the device's, the disk's (virtio), VPD 0x80, the USB device's, the WWID."""
    return (
        read_text(block / "device" / "serial")
        or read_text(block / "serial")
        or _vpd_serial(block / "device" / "vpd_pg80")
        or _usb_ancestor_serial(block)
        or _wwid_serial(read_text(block / "device" / "wwid") or read_text(block / "wwid"))
    )


def disks(roots: Roots) -> list[facts_pb2.Disk]:
    """Physical disks under ``/sys/block`` (virtual block devices are skipped), sizes in bytes."""
    result: list[facts_pb2.Disk] = []
    for block in list_dir(roots.sysfs / "block"):
        if block.name.startswith(_VIRTUAL_BLOCK_PREFIXES):
            continue
        sectors = read_int(block / "size") or 0
        result.append(
            facts_pb2.Disk(
                name=block.name,
                vendor=read_text(block / "device" / "vendor"),
                model=read_text(block / "device" / "model"),
                serial=_disk_serial(block),
                size_bytes=max(sectors, 0) * 512,
                removable=read_text(block / "removable") == "1",
                rotational=read_text(block / "queue" / "rotational") == "1",
            )
        )
    return result
