"""The Linux inventory collector against fake sysfs/procfs/etc trees."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import pytest

from agent.collectors.inventory import collect_inventory
from protos.counterguard.v1 import facts_pb2

if TYPE_CHECKING:
    from conftest import FakeSystem


class Addr(NamedTuple):
    """The shape of psutil's snicaddr."""

    family: int
    address: str
    netmask: str | None


def no_addresses() -> Mapping[str, Sequence[Addr]]:
    return {}


def inventory(fake: FakeSystem, addresses: Mapping[str, Sequence[Addr]] | None = None) -> facts_pb2.InventorySnapshot:
    return collect_inventory(fake.roots, read_addresses=lambda: addresses or {})


# ------------------------------------------------------------------------ system (DMI)


def test_dmi_fields_are_read_and_chassis_code_named(fake: FakeSystem) -> None:
    fake.dmi(
        sys_vendor="LENOVO", product_name="ThinkCentre M920t", product_serial="PC1A2B3C",
        product_uuid="4c4c4544-0042-3510-8052-b4c04f4d3732", bios_vendor="LENOVO", bios_version="M1UKT4BA",
        bios_date="11/05/2019", board_vendor="LENOVO", board_name="3136", board_serial="L1HF9AB012C",
        chassis_type="3",
    )
    system = inventory(fake).system
    assert (system.vendor, system.model, system.serial) == ("LENOVO", "ThinkCentre M920t", "PC1A2B3C")
    assert system.uuid == "4c4c4544-0042-3510-8052-b4c04f4d3732"
    assert (system.bios_vendor, system.bios_version, system.bios_date) == ("LENOVO", "M1UKT4BA", "11/05/2019")
    assert (system.board_vendor, system.board_model, system.board_serial) == ("LENOVO", "3136", "L1HF9AB012C")
    assert system.chassis_type == "Desktop"


def test_missing_dmi_directory_gives_empty_system_without_error(fake: FakeSystem) -> None:
    assert not (fake.roots.sysfs / "class/dmi/id").exists()
    assert inventory(fake).system == facts_pb2.SystemInfo()


def test_unreadable_serials_are_empty_and_the_rest_is_kept(fake: FakeSystem) -> None:
    fake.dmi(sys_vendor="Inspur", product_name="CE520")
    fake.unreadable("sys/class/dmi/id/product_serial")  # root-only for others: reading fails
    fake.unreadable("sys/class/dmi/id/board_serial")
    system = inventory(fake).system
    assert (system.vendor, system.model) == ("Inspur", "CE520")
    assert system.serial == "" and system.board_serial == ""


def test_unknown_chassis_code_is_kept_as_is(fake: FakeSystem) -> None:
    fake.dmi(chassis_type="99")
    assert inventory(fake).system.chassis_type == "99"


# ------------------------------------------------------------------------------ CPU, memory


def intel_block(processor: int, core: int, physical: int = 0) -> dict[str, str | int]:
    return {
        "processor": processor, "vendor_id": "GenuineIntel", "model name": "Intel(R) Core(TM) i5-9500 CPU @ 3.00GHz",
        "physical id": physical, "siblings": 4, "core id": core, "cpu cores": 2,
    }


def test_cpu_counts_physical_cores_by_package_and_core_id(fake: FakeSystem) -> None:
    # Two cores with hyper-threading: four logical processors, two (physical id, core id) pairs.
    fake.cpuinfo(intel_block(0, 0), intel_block(1, 1), intel_block(2, 0), intel_block(3, 1))
    fake.write("sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "4400000\n")
    cpu = inventory(fake).cpu
    assert cpu.model == "Intel(R) Core(TM) i5-9500 CPU @ 3.00GHz"
    assert cpu.vendor == "GenuineIntel"
    assert (cpu.logical_cores, cpu.physical_cores) == (4, 2)
    assert cpu.max_mhz == pytest.approx(4400.0)
    assert cpu.architecture == platform.machine()


def test_cpu_on_two_sockets_counts_cores_per_socket(fake: FakeSystem) -> None:
    fake.cpuinfo(intel_block(0, 0, physical=0), intel_block(1, 0, physical=1))
    assert inventory(fake).cpu.physical_cores == 2


def test_arm_cpu_without_core_ids_falls_back_to_logical_and_names_implementer(fake: FakeSystem) -> None:
    block: dict[str, str | int] = {"processor": 0, "BogoMIPS": "100.00", "CPU implementer": "0x70", "CPU part": "0x662"}
    fake.cpuinfo(block, {**block, "processor": 1}, {**block, "processor": 2}, {**block, "processor": 3})
    cpu = inventory(fake).cpu
    assert cpu.vendor == "Phytium"
    assert (cpu.logical_cores, cpu.physical_cores) == (4, 4)
    assert cpu.max_mhz == 0.0  # no cpufreq in this tree


def test_memory_total_and_swap_in_bytes(fake: FakeSystem) -> None:
    fake.meminfo(total_kb=16_305_412, swap_kb=2_097_148)
    memory = inventory(fake).memory
    assert memory.total_bytes == 16_305_412 * 1024
    assert memory.swap_bytes == 2_097_148 * 1024


# ------------------------------------------------------------------------------------ disks


def test_sata_disk_size_model_and_rotation(fake: FakeSystem) -> None:
    wwid = "t10.ATA     ST1000DM010-2EP102                          Z9AE1XYZ\n"
    fake.block("sda", 1_953_525_168, rotational=True,
               device={"vendor": "ATA     \n", "model": "ST1000DM010-2EP1\n", "wwid": wwid})
    (disk,) = inventory(fake).disks
    assert disk.name == "sda"
    assert disk.size_bytes == 1_953_525_168 * 512 == 1_000_204_886_016
    assert (disk.vendor, disk.model) == ("ATA", "ST1000DM010-2EP1")
    assert disk.serial == "Z9AE1XYZ"  # taken from the t10 WWID when sysfs has no serial file
    assert disk.rotational and not disk.removable


def test_nvme_serial_comes_from_the_controller(fake: FakeSystem) -> None:
    fake.block("nvme0n1", 500_118_192, device_dir="sys/devices/pci0000:00/0000:00:1d.0/nvme/nvme0",
               device={"model": "SAMSUNG MZVLB512HBJQ-000L7\n", "serial": "S4ENNX0N123456\n"},
               files={"wwid": "eui.0025388b91b7e4e1\n"})
    (disk,) = inventory(fake).disks
    assert disk.serial == "S4ENNX0N123456"
    assert disk.model == "SAMSUNG MZVLB512HBJQ-000L7"
    assert not disk.rotational


def test_scsi_serial_from_vpd_page_80(fake: FakeSystem) -> None:
    serial = b"WD-WCC4N0123456"
    fake.block("sdb", 100, device={"vpd_pg80": b"\x00\x80" + len(serial).to_bytes(2, "big") + serial})
    assert inventory(fake).disks[0].serial == "WD-WCC4N0123456"


def test_usb_stick_disk_takes_the_serial_of_its_usb_device(fake: FakeSystem) -> None:
    usb = fake.usb("2-1", vendor_id="0781", product_id="5567", serial="4C530001230504117263", interfaces=["08"])
    scsi = usb.relative_to(fake.root) / "2-1:1.0/host6/target6:0:0/6:0:0:0"
    fake.block("sdc", 60_062_500, removable=True, device_dir=str(scsi),
               device={"vendor": "SanDisk \n", "model": "Cruzer Blade    \n"})
    (disk,) = inventory(fake).disks
    assert disk.serial == "4C530001230504117263"
    assert disk.removable and disk.vendor == "SanDisk" and disk.model == "Cruzer Blade"


def test_virtual_block_devices_are_skipped(fake: FakeSystem) -> None:
    for name in ("loop0", "ram0", "zram0", "dm-0", "md127", "nbd0"):
        fake.block(name, 2048)
    fake.block("vda", 536_870_912, files={"serial": "overlayblk\n"})
    disks = inventory(fake).disks
    assert [d.name for d in disks] == ["vda"]
    assert disks[0].serial == "overlayblk"  # virtio keeps its serial on the disk itself


def test_disk_with_unreadable_size_is_listed_with_zero(fake: FakeSystem) -> None:
    fake.unreadable("sys/block/sdd/size")
    (disk,) = inventory(fake).disks
    assert disk.name == "sdd" and disk.size_bytes == 0


# ---------------------------------------------------------------------------------- network


def test_interfaces_with_addresses_in_cidr_and_virtual_flag(fake: FakeSystem) -> None:
    fake.net("lo", mac="00:00:00:00:00:00", operstate="unknown", physical=False)
    fake.net("enp3s0", mac="8C:16:45:AA:BB:CC", speed="1000")
    fake.net("docker0", mac="02:42:ac:11:00:01", operstate="down", speed="-1", physical=False)
    addresses = {
        "enp3s0": [
            Addr(socket.AF_INET, "192.168.1.5", "255.255.255.0"),
            Addr(socket.AF_INET6, "fe80::1%enp3s0", "ffff:ffff:ffff:ffff::"),
            Addr(socket.AF_PACKET, "8c:16:45:aa:bb:cc", None),
        ],
        "docker0": [Addr(socket.AF_INET, "172.17.0.1", "255.255.0.0")],
    }
    interfaces = {i.name: i for i in inventory(fake, addresses).network_interfaces}
    assert set(interfaces) == {"enp3s0", "docker0"}
    wired = interfaces["enp3s0"]
    assert wired.mac == "8c:16:45:aa:bb:cc"
    assert list(wired.addresses) == ["192.168.1.5/24", "fe80::1/64"]
    assert wired.up and wired.speed_mbps == 1000 and not wired.virtual
    bridge = interfaces["docker0"]
    assert list(bridge.addresses) == ["172.17.0.1/16"]
    assert not bridge.up and bridge.speed_mbps == 0 and bridge.virtual


def test_speed_unreadable_while_link_down_is_zero(fake: FakeSystem) -> None:
    fake.net("wlp2s0", mac="a4:c3:f0:11:22:33", operstate="dormant", speed="")
    fake.unreadable("sys/class/net/wlp2s0/speed")
    (wifi,) = inventory(fake).network_interfaces
    assert wifi.speed_mbps == 0 and not wifi.up and not wifi.virtual


def test_address_without_netmask_is_a_host_address(fake: FakeSystem) -> None:
    fake.net("tun0", mac="", physical=False)
    (tun,) = inventory(fake, {"tun0": [Addr(socket.AF_INET, "10.8.0.2", None)]}).network_interfaces
    assert list(tun.addresses) == ["10.8.0.2/32"]


def test_default_gateway_is_the_lowest_metric_default_route(fake: FakeSystem) -> None:
    fake.route(
        ("wlp2s0", "00000000", "FE01A8C0", "0003", 600, "00000000"),  # 192.168.1.254 via wifi, metric 600
        ("enp3s0", "00000000", "0101A8C0", "0003", 100, "00000000"),  # 192.168.1.1, metric 100
        ("enp3s0", "0001A8C0", "00000000", "0001", 100, "00FFFFFF"),  # the local subnet, no gateway
    )
    assert inventory(fake).default_gateway == "192.168.1.1"


def test_no_default_route_gives_no_gateway(fake: FakeSystem) -> None:
    fake.route(("enp3s0", "0001A8C0", "00000000", "0001", 100, "00FFFFFF"))
    assert inventory(fake).default_gateway == ""


# --------------------------------------------------------------------------------------- OS


def test_os_release_machine_id_kernel_and_install_date(fake: FakeSystem) -> None:
    fake.write("etc/os-release", 'PRETTY_NAME="UnionTech OS Desktop 20 Pro"\nNAME="UnionTech OS Desktop"\n'
               'VERSION_ID="20"\nVERSION="20 Pro"\nID=uos\n')
    installed = dt.datetime(2023, 3, 14, 2, 0, tzinfo=dt.UTC).timestamp()
    fake.write("etc/machine-id", "0123456789abcdef0123456789abcdef\n", mtime=installed + 3600)
    fake.write("var/log/installer/syslog", "...")
    os.utime(fake.root / "var/log/installer", (installed, installed))
    fake.write("var/lib/dpkg/info/base-files.list", "/.\n", mtime=installed + 86400 * 300)  # upgraded later
    fake.write("proc/sys/kernel/osrelease", "4.19.0-amd64-desktop\n")
    fake.write("proc/sys/kernel/hostname", "ck-window-07\n")
    snapshot = inventory(fake)
    assert snapshot.hostname == "ck-window-07"
    system = snapshot.os
    assert (system.family, system.name, system.version, system.id) == ("linux", "UnionTech OS Desktop", "20", "uos")
    assert system.kernel == "4.19.0-amd64-desktop"
    assert system.machine_id == "0123456789abcdef0123456789abcdef"
    assert system.architecture == platform.machine()
    assert system.install_date.ToDatetime(tzinfo=dt.UTC) == dt.datetime(2023, 3, 14, 2, 0, tzinfo=dt.UTC)


def test_version_falls_back_to_version_when_no_version_id(fake: FakeSystem) -> None:
    fake.write("etc/os-release", "NAME='Kylin'\nVERSION=\"V10 (SP1)\"\nID=kylin\n# a comment\n")
    system = inventory(fake).os
    assert (system.name, system.version, system.id) == ("Kylin", "V10 (SP1)", "kylin")


def test_os_without_any_file_has_empty_fields_and_no_install_date(fake: FakeSystem) -> None:
    system = inventory(fake).os
    assert system.family == "linux" and system.name == "" and system.machine_id == ""
    assert not system.HasField("install_date")
    assert system.kernel == os.uname().release  # no fake procfs file: the running kernel


# -------------------------------------------------------------------------------------- USB


def test_usb_storage_stick_is_storage_with_its_serial(fake: FakeSystem) -> None:
    fake.usb("2-1", vendor_id="0781", product_id="5567", manufacturer="SanDisk", product="Cruzer Blade",
             serial="4C530001230504117263", interfaces=["08"])
    (stick,) = inventory(fake).usb_devices
    assert stick.bus_id == "2-1"
    assert (stick.vendor_id, stick.product_id) == ("0781", "5567")
    assert (stick.vendor, stick.product, stick.serial) == ("SanDisk", "Cruzer Blade", "4C530001230504117263")
    assert stick.device_class == facts_pb2.DEVICE_CLASS_STORAGE
    assert list(stick.interface_classes) == [facts_pb2.DEVICE_CLASS_STORAGE]


def test_printer_is_classed_by_its_interfaces(fake: FakeSystem) -> None:
    # An HP multifunction printer: vendor-specific, printer, vendor-specific and card-reader interfaces.
    fake.usb("1-4", vendor_id="03F0", product_id="2B17", manufacturer="HP", product="LaserJet M1136 MFP",
             serial="CNB9K12345", device_class="00", interfaces=["ff", "07", "ff", "08"])
    (printer,) = inventory(fake).usb_devices
    assert printer.device_class == facts_pb2.DEVICE_CLASS_PRINTER
    assert (printer.vendor_id, printer.product_id) == ("03f0", "2b17")
    assert list(printer.interface_classes) == [
        facts_pb2.DEVICE_CLASS_VENDOR_SPECIFIC, facts_pb2.DEVICE_CLASS_PRINTER, facts_pb2.DEVICE_CLASS_STORAGE,
    ]


@pytest.mark.parametrize(
    ("device_class", "interfaces", "expected"),
    [
        ("ef", ["0e", "0e", "01", "01"], facts_pb2.DEVICE_CLASS_VIDEO),  # webcam with microphone (IAD)
        ("00", ["03", "03"], facts_pb2.DEVICE_CLASS_HID),  # keyboard
        ("00", ["03", "08"], facts_pb2.DEVICE_CLASS_STORAGE),  # "keyboard" that also offers a disk
        ("00", ["0b"], facts_pb2.DEVICE_CLASS_SMART_CARD),  # ID card reader
        ("09", ["09"], facts_pb2.DEVICE_CLASS_HUB),
        ("e0", ["e0", "e0"], facts_pb2.DEVICE_CLASS_WIRELESS),  # Bluetooth dongle
        ("02", ["02", "0a"], facts_pb2.DEVICE_CLASS_COMMUNICATIONS),
        ("ff", ["ff"], facts_pb2.DEVICE_CLASS_VENDOR_SPECIFIC),
        ("00", ["dc"], facts_pb2.DEVICE_CLASS_OTHER),  # diagnostic device
        ("00", ["06"], facts_pb2.DEVICE_CLASS_IMAGE),  # a phone in MTP/PTP mode
        ("00", [], facts_pb2.DEVICE_CLASS_UNSPECIFIED),  # no interface readable
    ],
)
def test_usb_device_class(fake: FakeSystem, device_class: str, interfaces: list[str], expected: int) -> None:
    fake.usb("3-2", vendor_id="1234", product_id="abcd", device_class=device_class, interfaces=interfaces)
    assert inventory(fake).usb_devices[0].device_class == expected


def test_root_hubs_and_interface_entries_are_not_devices(fake: FakeSystem) -> None:
    root_hub = fake.root / "sys/devices/pci0000:00/0000:00:14.0/usb1"
    fake.write(root_hub / "idVendor", "1d6b\n")
    fake.write(root_hub / "bDeviceClass", "09\n")
    fake.symlink("sys/bus/usb/devices/usb1", root_hub)
    fake.usb("1-1", vendor_id="046d", product_id="c077", device_class="00", interfaces=["03"])
    devices = inventory(fake).usb_devices
    assert [d.bus_id for d in devices] == ["1-1"]  # not usb1, not 1-1:1.0
    assert devices[0].vendor == "" and devices[0].serial == ""  # string descriptors absent: empty


# ---------------------------------------------------------------------------------- printers


PRINTERS_CONF = """\
# Printer configuration file for CUPS v2.4.2
# Written by cupsd
<DefaultPrinter HP_LaserJet_M1136>
PrinterId 1
UUID urn:uuid:0b1d2c3e-4f50-3a61-7b82-9c0d1e2f3a4b
Info HP LaserJet M1136 MFP
Location 3号窗口
MakeModel HP LaserJet m1136 MFP, hpcups 3.22.10
DeviceURI hp:/usb/HP_LaserJet_M1136_MFP?serial=CNB9K12345
State Idle
Accepting Yes
</DefaultPrinter>
<Printer Office_Share>
Info Shared office printer
DeviceURI smb://hall%5Cclerk:S3cret!@fileserver/office
MakeModel Generic PCL Laser Printer
</Printer>
"""


def test_cups_printers_with_default_flag_and_no_credentials(fake: FakeSystem) -> None:
    fake.write("etc/cups/printers.conf", PRINTERS_CONF)
    default, shared = inventory(fake).printers
    assert default.name == "HP_LaserJet_M1136" and default.is_default
    assert default.uri == "hp:/usb/HP_LaserJet_M1136_MFP?serial=CNB9K12345"
    assert default.make_model == "HP LaserJet m1136 MFP, hpcups 3.22.10"
    assert (default.location, default.info) == ("3号窗口", "HP LaserJet M1136 MFP")
    assert shared.name == "Office_Share" and not shared.is_default
    assert shared.uri == "smb://fileserver/office"
    assert "S3cret" not in str(inventory(fake))


def test_no_cups_means_no_printers(fake: FakeSystem) -> None:
    assert list(inventory(fake).printers) == []


# ------------------------------------------------------------------------------------ whole


def test_empty_machine_gives_an_empty_but_valid_snapshot(fake: FakeSystem) -> None:
    snapshot = collect_inventory(fake.roots, read_addresses=no_addresses)
    assert snapshot.hostname  # the socket library's name when procfs has none
    assert list(snapshot.disks) == [] and list(snapshot.network_interfaces) == [] and list(snapshot.usb_devices) == []
    assert snapshot.memory.total_bytes == 0 and snapshot.default_gateway == ""
    assert snapshot.cpu.logical_cores == os.cpu_count()  # no cpuinfo: what the OS says
    assert facts_pb2.InventorySnapshot.FromString(snapshot.SerializeToString()) == snapshot
