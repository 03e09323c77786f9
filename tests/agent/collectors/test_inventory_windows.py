"""The Windows inventory back end against recorded WMI (``data/windows/wmi_*.json``).

:class:`RecordedWmi` answers a query with the recorded instances, keeping only the properties asked
for, as WMI does; a class that was not recorded has no instances.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.collectors import _inventory_windows as win
from agent.collectors._software_windows import HKLM
from protos.counterguard.v1 import facts_pb2

DATA = Path(__file__).parent / "data" / "windows"
MACHINE_GUID = "6F2B1C4E-8A3D-4E5F-9B7C-1D2E3F4A5B6C"


class RecordedWmi:
    def __init__(self, classes: dict[str, list[dict[str, Any]]]) -> None:
        self._classes = classes
        self.queries: list[str] = []

    @classmethod
    def load(cls, name: str) -> RecordedWmi:
        return cls(json.loads((DATA / name).read_text(encoding="utf-8"))["classes"])

    def query(self, class_name: str, properties: Sequence[str]) -> list[dict[str, Any]]:
        self.queries.append(class_name)
        return [{k: row[k] for k in properties if k in row} for row in self._classes.get(class_name, [])]


class OneValueRegistry:
    """A registry holding only ``MachineGuid`` (or nothing)."""

    def __init__(self, guid: str | None) -> None:
        self._guid = guid

    def subkeys(self, hive: str, path: str) -> list[str]:
        return []

    def values(self, hive: str, path: str) -> dict[str, Any]:
        if self._guid and (hive, path) == (HKLM, r"SOFTWARE\Microsoft\Cryptography"):
            return {"MachineGuid": self._guid}
        return {}


@pytest.fixture(scope="module")
def lenovo() -> facts_pb2.InventorySnapshot:
    return win.inventory(RecordedWmi.load("wmi_lenovo_m720t.json"), OneValueRegistry(MACHINE_GUID))


@pytest.fixture(scope="module")
def dell() -> facts_pb2.InventorySnapshot:
    return win.inventory(RecordedWmi.load("wmi_dell_optiplex.json"), OneValueRegistry(None))


def _utc(ts: Any) -> dt.datetime:
    return ts.ToDatetime(dt.UTC)


def test_lenovo_system_cpu_memory(lenovo: facts_pb2.InventorySnapshot) -> None:
    assert lenovo.hostname == "ck-3f-w07"
    system = lenovo.system
    assert (system.vendor, system.model, system.serial) == ("LENOVO", "10SRS1J900", "PC1KX9ZQ")
    assert system.uuid == "e8c6a4f0-3b1d-11ea-80e7-6c2b59a1b2c3"
    assert (system.bios_vendor, system.bios_version, system.bios_date) == ("LENOVO", "M1UKT4BA", "02/10/2023")
    assert (system.board_vendor, system.board_model, system.board_serial) == ("LENOVO", "3136", "L1HF0AB01CD")
    assert system.chassis_type == "Desktop"
    cpu = lenovo.cpu
    assert cpu.model == "Intel(R) Core(TM) i5-9500 CPU @ 3.00GHz"
    assert (cpu.vendor, cpu.architecture) == ("GenuineIntel", "x86_64")
    assert (cpu.physical_cores, cpu.logical_cores, cpu.max_mhz) == (6, 6, 3000.0)
    assert lenovo.memory.total_bytes == 17009852416
    assert lenovo.memory.swap_bytes == 2490368 * 1024


def test_lenovo_os(lenovo: facts_pb2.InventorySnapshot) -> None:
    os_info = lenovo.os
    assert (os_info.family, os_info.name, os_info.id) == ("windows", "Windows 10 专业版", "windows")
    assert os_info.version == "10.0.19045"
    assert os_info.architecture == "x86_64"  # from "64 位"
    assert os_info.machine_id == MACHINE_GUID.lower()
    assert _utc(os_info.install_date) == dt.datetime(2023, 3, 15, 1, 30, 12, tzinfo=dt.UTC)  # 09:30:12 at +08:00


def test_lenovo_disks(lenovo: facts_pb2.InventorySnapshot) -> None:
    disks = {d.name: d for d in lenovo.disks}
    assert list(disks) == ["PHYSICALDRIVE0", "PHYSICALDRIVE1", "PHYSICALDRIVE2"]
    nvme = disks["PHYSICALDRIVE0"]
    assert (nvme.vendor, nvme.model) == ("", "SAMSUNG MZVLB256HBHQ-000L7")  # "(标准磁盘驱动器)" is no maker
    assert (nvme.size_bytes, nvme.removable) == (256052966400, False)
    assert disks["PHYSICALDRIVE1"].serial == "ZN1ABCDE"  # padding removed
    stick = disks["PHYSICALDRIVE2"]
    assert (stick.model, stick.removable) == ("SanDisk Cruzer Blade USB Device", True)
    assert stick.serial == "4C530001230101109363"


def test_lenovo_network(lenovo: facts_pb2.InventorySnapshot) -> None:
    interfaces = {i.name: i for i in lenovo.network_interfaces}
    assert list(interfaces) == ["以太网", "WLAN", "以太网 2"]  # no WAN miniports, no kernel debugger
    wired = interfaces["以太网"]
    assert wired.mac == "98:fa:9b:12:34:56"
    assert list(wired.addresses) == ["10.20.30.41/24", "fe80::1c2d:3e4f:5a6b:7c8d/64"]
    assert (wired.up, wired.speed_mbps, wired.virtual) == (True, 1000, False)
    wifi = interfaces["WLAN"]
    assert (wifi.up, wifi.speed_mbps, list(wifi.addresses)) == (False, 0, [])  # speed unknown: 2**63-1
    vpn = interfaces["以太网 2"]
    assert (vpn.virtual, list(vpn.addresses)) == (True, ["172.31.0.5/24"])
    assert lenovo.default_gateway == "10.20.30.1"


def test_lenovo_usb_devices(lenovo: facts_pb2.InventorySnapshot) -> None:
    devices = {(d.vendor_id, d.product_id): d for d in lenovo.usb_devices}
    assert sorted(devices) == sorted([("8087", "0aaa"), ("0781", "5567"), ("12d1", "107e"), ("046d", "c52b"),
                                      ("046d", "0825"), ("03f0", "5c17"), ("072f", "90cc")])  # no root hub
    stick = devices[("0781", "5567")]
    assert stick.device_class == facts_pb2.DEVICE_CLASS_STORAGE
    assert (stick.serial, stick.vendor) == ("4C530001230101109363", "")
    assert stick.bus_id == r"USB\VID_0781&PID_5567\4C530001230101109363"

    phone = devices[("12d1", "107e")]  # composite: MTP (storage) and ADB (vendor specific)
    assert phone.device_class == facts_pb2.DEVICE_CLASS_STORAGE
    assert list(phone.interface_classes) == [facts_pb2.DEVICE_CLASS_STORAGE, facts_pb2.DEVICE_CLASS_VENDOR_SPECIFIC]
    assert (phone.product, phone.vendor, phone.serial) == ("HUAWEI Mate 40 Pro", "HUAWEI", "8KE0219A13001234")

    receiver = devices[("046d", "c52b")]
    assert receiver.device_class == facts_pb2.DEVICE_CLASS_HID and receiver.serial == ""  # "6&1B2C3D4E&0&3" is made up
    assert devices[("046d", "0825")].device_class == facts_pb2.DEVICE_CLASS_VIDEO  # camera beats its microphone
    assert devices[("046d", "0825")].product == "Logitech Webcam C270"
    assert devices[("03f0", "5c17")].device_class == facts_pb2.DEVICE_CLASS_PRINTER  # from CompatibleID Class_07
    reader = devices[("072f", "90cc")]
    assert (reader.device_class, reader.vendor) == (facts_pb2.DEVICE_CLASS_SMART_CARD, "Advanced Card Systems Ltd.")
    assert devices[("8087", "0aaa")].device_class == facts_pb2.DEVICE_CLASS_WIRELESS


def test_lenovo_printers_and_volumes(lenovo: facts_pb2.InventorySnapshot) -> None:
    printers = {p.name: p for p in lenovo.printers}
    hp = printers["HP LaserJet Professional P1106"]
    assert (hp.uri, hp.make_model, hp.is_default) == ("USB001", "HP LaserJet Professional P1106", True)
    kyocera = printers["Kyocera ECOSYS M2540dn"]
    assert (kyocera.uri, kyocera.location, kyocera.info, kyocera.is_default) == (
        "IP_10.20.30.250", "二楼 3号窗口旁", "大厅复印机", False)
    assert printers["Microsoft Print to PDF"].location == ""
    volumes = {(f.device, f.mount_point, f.fs_type) for f in lenovo.filesystems}
    # no empty CD drive, no network drive
    assert volumes == {("C:", "C:\\", "NTFS"), ("D:", "D:\\", "NTFS"), ("E:", "E:\\", "FAT32")}


def test_dell_desktop(dell: facts_pb2.InventorySnapshot) -> None:
    assert dell.hostname == "HALL-W12"  # no DNSHostName: the NetBIOS name
    assert (dell.system.vendor, dell.system.model, dell.system.serial) == ("Dell Inc.", "OptiPlex 7080", "7ABCD23")
    assert (dell.system.chassis_type, dell.system.bios_date) == ("Mini PC", "06/08/2023")
    assert dell.cpu.model == "Intel(R) Xeon(R) W-1250 CPU @ 3.30GHz"  # padding removed
    assert (dell.cpu.physical_cores, dell.cpu.logical_cores) == (12, 24)  # both sockets
    assert (dell.os.name, dell.os.architecture, dell.os.machine_id) == ("Windows 11 Pro", "x86_64", "")
    assert _utc(dell.os.install_date) == dt.datetime(2024, 1, 2, 19, 30, tzinfo=dt.UTC)  # 14:30 at -05:00
    external = next(d for d in dell.disks if d.name == "PHYSICALDRIVE1")
    assert external.removable and external.vendor == ""  # "External hard disk media" behind a SCSI bridge
    usb_nic = next(i for i in dell.network_interfaces if i.name == "Ethernet 2")
    assert usb_nic.mac == "00:e0:4c:68:01:02" and list(usb_nic.addresses) == ["198.51.100.7/24"]
    assert dell.default_gateway == "198.51.100.1"  # metric 5 beats 35; the IPv6 gateway is not the default
    classes = {(d.vendor_id, d.product_id): d.device_class for d in dell.usb_devices}
    assert classes == {("0bda", "5411"): facts_pb2.DEVICE_CLASS_HUB,
                       ("0bda", "8153"): facts_pb2.DEVICE_CLASS_COMMUNICATIONS}
    assert list(dell.printers) == []


def test_nothing_recorded_gives_an_empty_snapshot_without_raising() -> None:
    snapshot = win.inventory(RecordedWmi({}), OneValueRegistry(None))
    assert snapshot.os.family == "windows"
    assert not snapshot.hostname and not snapshot.disks and not snapshot.usb_devices and not snapshot.printers
    assert snapshot.cpu == facts_pb2.CpuInfo() and snapshot.default_gateway == ""


def test_odd_values_are_tolerated() -> None:
    wmi = RecordedWmi({
        "Win32_OperatingSystem": [{"InstallDate": "not a date", "OSArchitecture": "32 位",
                                   "SizeStoredInPagingFiles": None}],
        "Win32_Processor": [{"Name": None, "Architecture": 9, "NumberOfCores": "four"}],
        "Win32_SystemEnclosure": [{"ChassisTypes": None}],
        "Win32_NetworkAdapter": [{"Index": 1, "MACAddress": "00:11:22:33:44:55", "PhysicalAdapter": True,
                                  "Speed": None}],
        "Win32_NetworkAdapterConfiguration": [{"Index": 1, "IPAddress": ["10.0.0.2"], "IPSubnet": None}],
        "Win32_PnPEntity": [{"DeviceID": "USB\\VID_ZZZZ&PID_0001\\1"}, {"DeviceID": None}],
    })
    snapshot = win.inventory(wmi, OneValueRegistry(None))
    assert not snapshot.os.HasField("install_date")
    assert snapshot.os.architecture == "x86"  # a 32-bit Windows on a 64-bit CPU
    assert snapshot.cpu.physical_cores == 0 and snapshot.system.chassis_type == ""
    assert list(snapshot.network_interfaces[0].addresses) == ["10.0.0.2/32"]
    assert list(snapshot.usb_devices) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("20230315093012.000000+480", dt.datetime(2023, 3, 15, 1, 30, 12, tzinfo=dt.UTC)),
    ("20240102143000.500000-300", dt.datetime(2024, 1, 2, 19, 30, 0, 500000, tzinfo=dt.UTC)),
    ("20230210000000.000000+000", dt.datetime(2023, 2, 10, tzinfo=dt.UTC)),
    ("20231345000000.000000+000", None),
    ("2023-03-15", None),
    ("", None),
])
def test_cim_datetime(text: str, expected: dt.datetime | None) -> None:
    assert win.cim_datetime(text) == expected


def test_each_class_is_queried_once(lenovo: facts_pb2.InventorySnapshot) -> None:
    wmi = RecordedWmi.load("wmi_lenovo_m720t.json")
    win.inventory(wmi, OneValueRegistry(None))
    assert sorted(wmi.queries) == sorted(set(wmi.queries)), "each WMI query costs tens of milliseconds on Windows"
