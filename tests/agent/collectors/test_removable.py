"""Removable storage: disks from a fake sysfs, mounts from a fake mount table, the events their changes
make, and a real watchdog observer on temporary mount roots."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from agent.collectors import Roots
from agent.collectors._removable_linux import belongs_to, is_on_sysfs, mounts, removable_disks
from agent.collectors.removable import MountWatcher, RemovableTracker
from protos.counterguard.v1 import facts_pb2

if TYPE_CHECKING:
    from conftest import FakeSystem

R = facts_pb2.RemovableStorage
USB_HOST = "sys/devices/pci0000:00/0000:00:14.0/usb1"


def usb_stick(fake: FakeSystem, name: str = "sdb", *, bus_id: str = "1-2", serial: str = "4C530001230119115142",
              sectors: int = 60_062_500, removable: bool = True) -> Path:
    """A SanDisk stick as the kernel shows it: the USB device, its mass-storage interface, the SCSI disk."""
    fake.usb(bus_id, vendor_id="0781", product_id="5581", manufacturer="SanDisk", product="Ultra",
             serial=serial, interfaces=["08"])
    scsi = f"{USB_HOST}/{bus_id}/{bus_id}:1.0/host6/target6:0:0/6:0:0:0"
    return fake.block(name, sectors, removable=removable, device_dir=scsi,
                      device={"vendor": "SanDisk \n", "model": "Ultra Fit       \n"})


def mount_table(fake: FakeSystem, *lines: str) -> None:
    base = ["sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0", "/dev/sda2 / ext4 rw,relatime 0 0"]
    fake.write("proc/self/mounts", "\n".join([*base, *lines]) + "\n")


def actions(events: list[facts_pb2.RemovableStorage]) -> list[tuple[str, str, str]]:
    return [(R.Action.Name(e.action).removeprefix("ACTION_"), e.device, e.mount_point) for e in events]


def test_a_stick_is_attached_mounted_unmounted_and_removed(fake: FakeSystem) -> None:
    fake.block("sda", 1_000_215_216, device_dir="sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0")
    usb_stick(fake)
    mount_table(fake)
    tracker = RemovableTracker(fake.roots)
    [attached] = tracker.poll()
    assert (attached.action, attached.device, attached.bus_id) == (R.ACTION_ATTACHED, "sdb", "1-2")
    assert (attached.vendor_id, attached.product_id, attached.vendor, attached.product) == ("0781", "5581", "SanDisk", "Ultra")
    assert (attached.serial, attached.size_bytes) == ("4C530001230119115142", 60_062_500 * 512)
    assert tracker.poll() == []
    mount_table(fake, "/dev/sdb1 /media/alice/KINGSTON\\040U vfat rw,nosuid,nodev,uid=1000 0 0")
    [mounted] = tracker.poll()
    assert actions([mounted]) == [("MOUNTED", "sdb1", "/media/alice/KINGSTON U")]
    assert (mounted.fs_type, mounted.serial, mounted.vendor_id) == ("vfat", "4C530001230119115142", "0781")
    mount_table(fake)
    assert actions(tracker.poll()) == [("UNMOUNTED", "sdb1", "/media/alice/KINGSTON U")]
    mount_table(fake, "/dev/sdb1 /mnt vfat rw 0 0")
    assert actions(tracker.poll()) == [("MOUNTED", "sdb1", "/mnt")]
    shutil.rmtree(fake.root / "sys/block/sdb")  # pulled out while mounted: the kernel drops the disk first
    assert actions(tracker.poll()) == [("UNMOUNTED", "sdb1", "/mnt"), ("REMOVED", "sdb", "")]


def test_the_first_poll_reports_what_is_there_and_a_swap_under_the_same_name_is_two_events(fake: FakeSystem) -> None:
    usb_stick(fake)
    mount_table(fake, "/dev/sdb /run/media/bob/DATA exfat rw 0 0")  # no partition table: the whole disk
    tracker = RemovableTracker(fake.roots)
    assert actions(tracker.poll()) == [("ATTACHED", "sdb", ""), ("MOUNTED", "sdb", "/run/media/bob/DATA")]
    shutil.rmtree(fake.root / "sys/block/sdb")
    usb_stick(fake, bus_id="1-3", serial="OTHER-STICK")  # another stick, faster than a poll, under sdb again
    mount_table(fake)
    events = tracker.poll()
    assert actions(events) == [("UNMOUNTED", "sdb", "/run/media/bob/DATA"), ("REMOVED", "sdb", ""), ("ATTACHED", "sdb", "")]
    assert (events[1].serial, events[2].serial) == ("4C530001230119115142", "OTHER-STICK")


def test_fixed_disks_empty_readers_and_non_usb_removables(fake: FakeSystem) -> None:
    fake.block("sda", 500_000, device_dir="sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0")
    fake.block("sdc", 0, removable=True, device={"vendor": "Generic-", "model": "SD/MMC"})  # reader, no card
    fake.block("sdd", 31_116_288, removable=True, device={"vendor": "HP      ", "model": "v220w"})
    usb_stick(fake, "sde", bus_id="2-1", removable=False)  # many USB disks say removable=0
    fake.block("nvme0n1", 1_000_000, removable=True)  # not sd*
    disks = {d.device: d for d in removable_disks(fake.roots)}
    assert sorted(disks) == ["sdd", "sde"]
    assert (disks["sdd"].vendor, disks["sdd"].product, disks["sdd"].bus_id) == ("HP", "v220w", "")
    assert disks["sde"].bus_id == "2-1"


def test_the_mount_table_and_partition_matching(fake: FakeSystem) -> None:
    fake.write("proc/self/mounts", "/dev/sdb1 /media/a\\134b\\011c vfat rw 0 0\nbad line\ntmpfs /run tmpfs rw 0 0\n")
    assert [tuple(m) for m in mounts(fake.roots)] == [("sdb1", "/media/a\\b\tc", "vfat"), ("tmpfs", "/run", "tmpfs")]
    assert belongs_to("sdb1", "sdb") and belongs_to("sdb", "sdb") and belongs_to("sdb12", "sdb")
    assert not belongs_to("sdba1", "sdb") and not belongs_to("sdc1", "sdb")
    assert RemovableTracker(Roots(sysfs=fake.root / "none", procfs=fake.root / "none")).poll() == []


def test_inotify_is_not_trusted_on_a_real_sysfs(fake: FakeSystem) -> None:
    assert is_on_sysfs(Path("/sys/block"), Roots())  # the real one: devices appear without inotify events
    mount_table(fake)
    (fake.root / "sys/block").mkdir(parents=True)
    assert not is_on_sysfs(fake.root / "sys/block", fake.roots)


class Wakes:
    """Counts wake-ups and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self, timeout: float = 5.0) -> bool:
        woke = self.event.wait(timeout)
        self.event.clear()
        return woke


def test_a_real_observer_wakes_on_the_mount_roots_and_follows_new_user_folders(fake: FakeSystem, tmp_path: Path) -> None:
    media, mnt = tmp_path / "media", tmp_path / "mnt"
    media.mkdir()
    mount_table(fake)
    (fake.root / "sys/block").mkdir(parents=True)
    wakes = Wakes()
    watcher = MountWatcher(wakes, fake.roots, mount_roots=[media, mnt, tmp_path / "run-media"])
    watcher.start()
    try:
        assert set(watcher.watched) == {fake.root / "sys/block", media}  # roots that exist; a fake sysfs is watched
        (media / "alice").mkdir()  # udisks makes the user's folder ...
        assert wakes.wait()
        watcher.refresh()  # ... which the service's next poll adds to the watch
        assert media / "alice" in watcher.watched
        wakes.event.clear()
        (media / "alice" / "KINGSTON").mkdir()  # ... and the mount point in it
        assert wakes.wait()
        (fake.root / "sys/block/sdb").mkdir()
        assert wakes.wait()
        mnt.mkdir()
        watcher.set_mount_roots([mnt])  # the policy names other roots
        assert set(watcher.watched) == {fake.root / "sys/block", mnt}
        (mnt / "usb").mkdir()
        assert wakes.wait()
    finally:
        watcher.stop()
    assert watcher.watched == []
