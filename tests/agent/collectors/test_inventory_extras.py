"""PCI devices, mounted file systems and local accounts in the inventory (FusionInventory's
CONTROLLERS, DRIVES, LOCAL_USERS and LOCAL_GROUPS sections)."""

from __future__ import annotations

import os
from pathlib import Path

from agent.collectors import Roots
from agent.collectors._accounts_linux import local_groups, local_users
from agent.collectors._filesystems_linux import LOCAL_TYPES, filesystems
from agent.collectors._pci_linux import pci_devices
from agent.collectors.inventory import collect_inventory

PCI_IDS = """\
# comment
8086  Intel Corporation
\t1237  440FX - 82441FX PMC [Natoma]
\t2922  82801IR/IO/IH (ICH9R/DO/DH) 6 port SATA Controller [AHCI mode]
\t\t1af4 1100  QEMU Virtual Machine
10de  NVIDIA Corporation
\t1c82  GP107 [GeForce GTX 1050 Ti]
C 01  Mass storage controller
"""


def _pci(fake, slot: str, cls: str, vendor: str, device: str, driver: str | None = None) -> None:
    base = f"sys/bus/pci/devices/{slot}"
    fake.write(f"{base}/class", cls + "\n")
    fake.write(f"{base}/vendor", vendor + "\n")
    fake.write(f"{base}/device", device + "\n")
    fake.write(f"{base}/subsystem_vendor", "0x1af4\n")
    fake.write(f"{base}/subsystem_device", "0x1100\n")
    if driver:
        fake.symlink(f"{base}/driver", f"../../../bus/pci/drivers/{driver}")


def test_pci_devices_carry_ids_class_driver_and_names_from_pci_ids(fake) -> None:
    _pci(fake, "0000:00:1f.2", "0x010601", "0x8086", "0x2922", driver="ahci")
    _pci(fake, "0000:01:00.0", "0x030000", "0x10de", "0x1c82")
    ids = fake.write("usr/share/misc/pci.ids", PCI_IDS)
    roots = Roots(sysfs=fake.roots.sysfs, pci_ids=(fake.root / "missing.ids", ids))

    sata, gpu = pci_devices(roots)

    assert (sata.slot, sata.class_code, sata.vendor_id, sata.device_id, sata.driver) == (
        "0000:00:1f.2", "010601", "8086", "2922", "ahci")
    assert sata.vendor == "Intel Corporation"
    assert sata.device == "82801IR/IO/IH (ICH9R/DO/DH) 6 port SATA Controller [AHCI mode]"
    assert (sata.subsystem_vendor_id, sata.subsystem_device_id) == ("1af4", "1100")
    assert (gpu.vendor, gpu.device, gpu.driver) == ("NVIDIA Corporation", "GP107 [GeForce GTX 1050 Ti]", "")


def test_pci_devices_without_pci_ids_keep_their_ids(fake) -> None:
    _pci(fake, "0000:00:00.0", "0x060000", "0x8086", "0x1237")
    (device,) = pci_devices(Roots(sysfs=fake.roots.sysfs, pci_ids=(fake.root / "none",)))
    assert (device.vendor_id, device.device_id, device.vendor, device.device) == ("8086", "1237", "", "")


def test_filesystems_keep_local_disks_and_leave_out_pseudo_and_network_mounts(fake) -> None:
    fake.write("proc/self/mounts", "\n".join([
        "sysfs /sys sysfs rw 0 0",
        "/dev/sda1 / ext4 rw,relatime 0 0",
        "tmpfs /run tmpfs rw 0 0",
        "server:/export /mnt/nfs nfs4 rw 0 0",
        "/dev/sdb1 /media/user/U\\040DISK vfat rw 0 0",
        "overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0",
    ]) + "\n")
    sizes = {"/": (1000, 400), "/media/user/U DISK": (50, 10)}

    def statvfs(path: str) -> os.statvfs_result:
        blocks, free = sizes[path]
        return os.statvfs_result((4096, 4096, blocks, free, free, 0, 0, 0, 0, 255))

    root, stick = filesystems(fake.roots, statvfs)

    assert (root.device, root.mount_point, root.fs_type) == ("/dev/sda1", "/", "ext4")
    assert (root.total_bytes, root.free_bytes) == (1000 * 4096, 400 * 4096)
    assert (stick.mount_point, stick.fs_type, stick.total_bytes) == ("/media/user/U DISK", "vfat", 50 * 4096)


def test_a_mount_point_that_cannot_be_measured_is_kept_with_zero_sizes(fake) -> None:
    fake.write("proc/self/mounts", "/dev/sr0 /media/cdrom iso9660 ro 0 0\n")

    def statvfs(path: str) -> os.statvfs_result:
        raise PermissionError(path)

    (cdrom,) = filesystems(fake.roots, statvfs)
    assert (cdrom.mount_point, cdrom.total_bytes) == ("/media/cdrom", 0)


def test_local_users_and_groups_come_from_passwd_and_group_without_secrets(fake) -> None:
    fake.write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n+nisuser::::::\n"
                              "zhang:x:1000:1000:Zhang Wei,,,:/home/zhang:/bin/bash\n")
    fake.write("etc/group", "root:x:0:\nsudo:x:27:zhang,li\n")

    users = local_users(fake.roots)
    groups = local_groups(fake.roots)

    assert [(u.name, u.uid, u.full_name, u.home) for u in users] == [
        ("root", 0, "root", "/root"), ("zhang", 1000, "Zhang Wei", "/home/zhang")]
    assert [(g.name, g.gid, list(g.members)) for g in groups] == [("root", 0, []), ("sudo", 27, ["zhang", "li"])]


def test_the_real_machine_reports_pci_devices_filesystems_and_accounts() -> None:
    inventory = collect_inventory()
    assert any(u.name == "root" and u.uid == 0 for u in inventory.local_users)
    assert all(fs.fs_type in LOCAL_TYPES and fs.mount_point.startswith("/") for fs in inventory.filesystems)
    if Path("/sys/bus/pci/devices").is_dir() and any(Path("/sys/bus/pci/devices").iterdir()):
        assert inventory.pci_devices and all(len(d.vendor_id) == 4 for d in inventory.pci_devices)
