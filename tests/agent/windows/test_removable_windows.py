"""The Windows removable-storage back end against hand-made WMI records (``data/wmi_removable.json``).

:class:`FakeWindows` is the OS boundary: it answers WMI queries with the recorded instances (only the
properties asked for, as WMI does), and ``GetLogicalDrives``/``GetDriveTypeW`` from the recorded drive
types; ``unplug`` takes a disk away the way Windows does (its letters, partitions and PnP entries go).
The tracker on top is the real one, so the events are what the agent would report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.collectors import _removable_windows as win
from agent.collectors.removable import RemovableTracker
from protos.counterguard.v1 import facts_pb2

DATA = Path(__file__).parent / "data" / "wmi_removable.json"
R = facts_pb2.RemovableStorage


class FakeWindows:
    """WMI and the two kernel32 drive calls of one PC, which can lose a disk or fail."""

    def __init__(self) -> None:
        recorded = json.loads(DATA.read_text(encoding="utf-8"))
        self.classes: dict[str, list[dict[str, Any]]] = recorded["classes"]
        self.drive_types: dict[str, int] = recorded["drive_types"]
        self.queries: list[str] = []
        self.broken = False

    def query(self, class_name: str, properties: Sequence[str]) -> list[dict[str, Any]]:
        if self.broken:
            raise RuntimeError("0x80041010 WBEM_E_INVALID_CLASS")  # what a com_error says, more or less
        self.queries.append(class_name)
        return [{k: row[k] for k in properties if k in row} for row in self.classes.get(class_name, [])]

    def GetLogicalDrives(self) -> int:  # noqa: N802 - the Win32 names
        return sum(1 << (ord(letter[0]) - ord("A")) for letter in self.drive_types)

    def GetDriveTypeW(self, root: str) -> int:  # noqa: N802
        return self.drive_types.get(root.rstrip("\\"), 0)

    def unplug(self, number: int, *, letters: Sequence[str]) -> None:
        """Disk ``number`` is gone: its drive, partitions, letters and USB device."""
        drive = f"PHYSICALDRIVE{number}"
        disk = next(d for d in self.classes["Win32_DiskDrive"] if d["DeviceID"].endswith(drive))
        serial = disk["PNPDeviceID"].rsplit("\\", 1)[1].rsplit("&", 1)[0]
        self.classes["Win32_DiskDrive"].remove(disk)
        self.classes["Win32_PnPEntity"] = [e for e in self.classes["Win32_PnPEntity"] if serial not in e["DeviceID"]]
        self.classes["Win32_DiskDriveToDiskPartition"] = [
            link for link in self.classes["Win32_DiskDriveToDiskPartition"] if drive not in link["Antecedent"]]
        self.classes["Win32_LogicalDiskToPartition"] = [link for link in self.classes["Win32_LogicalDiskToPartition"]
                                                         if f"Disk #{number}," not in link["Antecedent"]]
        for letter in letters:
            del self.drive_types[letter]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def windows() -> FakeWindows:
    return FakeWindows()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def probe_for(windows: FakeWindows, clock: Clock) -> win.RemovableProbe:
    return win.RemovableProbe(windows, windows, monotonic=clock)


def actions(events: list[facts_pb2.RemovableStorage]) -> list[tuple[str, str, str]]:
    return [(R.Action.Name(e.action).removeprefix("ACTION_"), e.device, e.mount_point) for e in events]


def test_usb_and_removable_media_disks_with_their_usb_identity(windows: FakeWindows) -> None:
    disks = {d.device: d for d in win.read_removable(windows).disks}
    assert sorted(disks) == ["PHYSICALDRIVE2", "PHYSICALDRIVE3", "PHYSICALDRIVE5"]  # not internal, not an empty reader
    stick = disks["PHYSICALDRIVE2"]
    assert (stick.vendor, stick.product, stick.serial) == ("SANDISK", "SanDisk Cruzer Blade", "4C530001230101109363")
    assert (stick.vendor_id, stick.product_id) == ("0781", "5567")
    assert stick.bus_id == r"USB\VID_0781&PID_5567\4C530001230101109363"
    assert stick.size_bytes == 15631349760 and stick.action == R.ACTION_UNSPECIFIED
    passport = disks["PHYSICALDRIVE3"]
    assert (passport.vendor, passport.product) == ("WD", "WD My Passport 25E2")
    assert (passport.vendor_id, passport.product_id, passport.size_bytes) == ("1058", "25e2", 2000363420160)


def test_a_stick_without_a_serial_number_keeps_its_ids_empty(windows: FakeWindows) -> None:
    nameless = next(d for d in win.read_removable(windows).disks if d.device == "PHYSICALDRIVE5")
    assert (nameless.vendor, nameless.product) == ("GENERIC", "Generic Flash Disk")
    assert (nameless.serial, nameless.vendor_id, nameless.product_id, nameless.bus_id) == ("", "", "", "")


def test_drive_letters_follow_the_partition_associations(windows: FakeWindows) -> None:
    assert win.read_removable(windows).mounts == [
        win.Mount("Disk #2, Partition #0", "E:\\", "FAT32"),
        win.Mount("Disk #3, Partition #0", "F:\\", "NTFS"),
        win.Mount("Disk #3, Partition #1", "G:\\", "exFAT"),
        win.Mount("Disk #5, Partition #0", "I:\\", "FAT32"),
    ]


def test_no_removable_disk_costs_one_query(windows: FakeWindows) -> None:
    windows.classes["Win32_DiskDrive"] = windows.classes["Win32_DiskDrive"][:2]  # the internal disks only
    assert win.read_removable(windows) == win.Reading([], [])
    assert windows.queries == ["Win32_DiskDrive"]


def test_object_paths_partitions_and_drive_letters() -> None:
    path = r'\\PC\root\cimv2:Win32_DiskDrive.DeviceID="\\\\.\\PHYSICALDRIVE12"'
    assert win.path_key(path) == r"\\.\PHYSICALDRIVE12"
    assert win.path_key(r'\\PC\root\cimv2:Win32_LogicalDisk.DeviceID="E:"') == "E:"
    assert win.path_key("garbage") == ""
    assert win.belongs_to("Disk #12, Partition #1", "PHYSICALDRIVE12")
    assert not win.belongs_to("Disk #1, Partition #2", "PHYSICALDRIVE12")
    assert win.belongs_to("E:", "E:") and not win.belongs_to("E:", "PHYSICALDRIVE4")


def test_drive_letters_come_from_the_bitmask(windows: FakeWindows) -> None:
    letters = dict(win.drive_letters(windows))
    assert list(letters) == ["C:", "D:", "E:", "F:", "G:", "H:", "I:", "X:", "Z:"]
    assert letters["E:"] == win.DRIVE_REMOVABLE and letters["F:"] == win.DRIVE_FIXED


def test_the_tracker_reports_attach_mount_unmount_remove(windows: FakeWindows, clock: Clock) -> None:
    tracker = RemovableTracker(backend=probe_for(windows, clock))
    first = tracker.poll()
    assert actions(first) == [
        ("ATTACHED", "PHYSICALDRIVE2", ""), ("ATTACHED", "PHYSICALDRIVE3", ""), ("ATTACHED", "PHYSICALDRIVE5", ""),
        ("MOUNTED", "Disk #2, Partition #0", "E:\\"), ("MOUNTED", "Disk #3, Partition #0", "F:\\"),
        ("MOUNTED", "Disk #3, Partition #1", "G:\\"), ("MOUNTED", "Disk #5, Partition #0", "I:\\"),
    ]
    mounted_stick = first[3]
    assert (mounted_stick.serial, mounted_stick.vendor_id, mounted_stick.fs_type) == ("4C530001230101109363", "0781",
                                                                                      "FAT32")
    clock.now += 2
    assert tracker.poll() == []
    windows.unplug(3, letters=["F:", "G:"])
    clock.now += 2
    assert actions(tracker.poll()) == [("UNMOUNTED", "Disk #3, Partition #0", "F:\\"),
                                       ("UNMOUNTED", "Disk #3, Partition #1", "G:\\"),
                                       ("REMOVED", "PHYSICALDRIVE3", "")]


def test_wmi_is_asked_only_when_the_drive_letters_change_or_the_reading_is_old(windows: FakeWindows,
                                                                              clock: Clock) -> None:
    tracker = RemovableTracker(backend=probe_for(windows, clock))
    tracker.poll()
    reads = windows.queries.count("Win32_DiskDrive")
    for _ in range(10):  # 20 s of polls with nothing changing
        clock.now += 2
        tracker.poll()
    assert windows.queries.count("Win32_DiskDrive") == reads
    clock.now += 10  # 30 s after the last reading: disks without a letter are looked for too
    tracker.poll()
    assert windows.queries.count("Win32_DiskDrive") == reads + 1
    windows.unplug(2, letters=["E:"])
    clock.now += 2
    assert actions(tracker.poll())[-1] == ("REMOVED", "PHYSICALDRIVE2", "")
    assert windows.queries.count("Win32_DiskDrive") == reads + 2


def test_a_letter_that_wmi_does_not_know_yet_is_looked_for_again_for_a_few_seconds(windows: FakeWindows,
                                                                                   clock: Clock) -> None:
    recorded = json.loads(json.dumps(windows.classes))
    windows.unplug(2, letters=["E:"])
    tracker = RemovableTracker(backend=probe_for(windows, clock))
    tracker.poll()
    windows.drive_types["E:"] = win.DRIVE_REMOVABLE  # the letter is there, WMI has not caught up
    clock.now += 2
    assert tracker.poll() == []
    windows.classes = recorded  # now it has
    clock.now += 2
    assert actions(tracker.poll()) == [("ATTACHED", "PHYSICALDRIVE2", ""), ("MOUNTED", "Disk #2, Partition #0", "E:\\")]
    reads = windows.queries.count("Win32_DiskDrive")
    clock.now += 2
    tracker.poll()
    assert windows.queries.count("Win32_DiskDrive") == reads  # found: no more looking


def test_an_empty_card_reader_letter_stops_being_looked_for(windows: FakeWindows, clock: Clock) -> None:
    del windows.drive_types["H:"]
    tracker = RemovableTracker(backend=probe_for(windows, clock))
    tracker.poll()
    windows.drive_types["H:"] = win.DRIVE_REMOVABLE  # a reader slot: a letter, never a disk with a medium
    for _ in range(3):
        clock.now += 2
        assert tracker.poll() == []
    reads = windows.queries.count("Win32_DiskDrive")
    for _ in range(5):
        clock.now += 2
        tracker.poll()
    assert windows.queries.count("Win32_DiskDrive") == reads


def test_a_failing_wmi_keeps_the_last_reading_and_says_so_once(windows: FakeWindows, clock: Clock,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    tracker = RemovableTracker(backend=probe_for(windows, clock))
    tracker.poll()
    windows.broken = True
    with caplog.at_level(logging.INFO, logger="agent.collectors._removable_windows"):
        for _ in range(3):
            clock.now += 31
            assert tracker.poll() == []  # no removals made up
    assert [r.getMessage() for r in caplog.records] == [
        "removable storage: nothing to report: WMI failed (0x80041010 WBEM_E_INVALID_CLASS); keeping the last reading"]
    windows.broken = False
    windows.unplug(5, letters=["I:"])
    clock.now += 2
    assert actions(tracker.poll()) == [("UNMOUNTED", "Disk #5, Partition #0", "I:\\"),
                                       ("REMOVED", "PHYSICALDRIVE5", "")]


def test_off_windows_the_module_loads_and_the_real_drive_api_is_absent() -> None:
    assert win.load_kernel32() is None
    assert not win.is_on_sysfs(Path("/sys/block"), win.Roots())
