"""Current state derived from stored facts: software, running programs, sessions, inventory and its diff."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from controller import state
from controller.convert import datetime_to_timestamp
from controller.db import session_scope
from controller.errors import NotFound
from controller.ingest import IngestService
from controller.models import Agent
from controller.state import InstalledSoftware, InventoryChange, RunningProcess, UserSession
from protos.counterguard.v1 import facts_pb2 as pb

AGENT = "ag-0123456789"
T0 = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)


class Reporter:
    """An agent sending one fact per report through the real ingest service, a minute apart."""

    def __init__(self, engine: Engine, clock: Any) -> None:
        self.service = IngestService(engine, clock)
        self.clock = clock
        self.sequence = 0

    def send(self, **kind: Any) -> int:
        self.sequence += 1
        fact = pb.Fact(sequence=self.sequence, observed_at=datetime_to_timestamp(self.clock()), **kind)
        self.service.ingest(AGENT, [fact])
        self.clock.advance(minutes=1)
        return self.sequence


@pytest.fixture
def reporter(engine: Engine, clock: Any) -> Reporter:
    with session_scope(engine) as session:
        session.add(
            Agent(id=AGENT, enrolled_at=clock(), cert_serial="1", cert_fingerprint="f",
                  cert_not_after=clock() + dt.timedelta(days=365))
        )
    return Reporter(engine, clock)


def dpkg(name: str, version: str, section: str = "utils", **extra: Any) -> pb.SoftwareItem:
    return pb.SoftwareItem(source=pb.SOFTWARE_SOURCE_DPKG, name=name, version=version, section=section, **extra)


def proc(pid: int, name: str, minute: int) -> pb.ProcessInfo:
    return pb.ProcessInfo(pid=pid, name=name, executable=f"/usr/bin/{name}", username="zhang",
                          started_at=datetime_to_timestamp(T0 + dt.timedelta(minutes=minute)))


def running(pid: int, name: str, minute: int) -> RunningProcess:
    return RunningProcess(pid, name, f"/usr/bin/{name}", "zhang", T0 + dt.timedelta(minutes=minute))


# ------------------------------------------------------------------------------ software


def test_software_is_the_latest_snapshot_with_later_deltas_applied(engine: Engine, reporter: Reporter) -> None:
    reporter.send(software_snapshot=pb.SoftwareSnapshot(items=[dpkg("old-only", "1")]))  # superseded
    reporter.send(software_delta=pb.SoftwareDelta(added=[dpkg("superseded-delta", "1")]))
    reporter.send(software_snapshot=pb.SoftwareSnapshot(items=[
        dpkg("bash", "5.2"), dpkg("vim", "9.0"), dpkg("gnome-mines", "40.1", "games"),
    ]))
    desktop = pb.SoftwareItem(
        source=pb.SOFTWARE_SOURCE_DESKTOP_ENTRY, name="com.qq.weixin.desktop", display_name="微信", version="4.0",
        categories=["Network", "InstantMessaging"], executable="wechat",
        install_date=datetime_to_timestamp(T0),
    )
    reporter.send(software_delta=pb.SoftwareDelta(added=[desktop], removed=[dpkg("vim", "9.0")]))
    reporter.send(power=pb.PowerEvent(kind=pb.PowerEvent.KIND_HEARTBEAT))  # other kinds do not interfere
    reporter.send(software_delta=pb.SoftwareDelta(changed=[dpkg("bash", "5.2.15")]))

    software = state.installed_software(engine, AGENT)

    assert [(s.source, s.name, s.version, s.hints) for s in software] == [
        ("dpkg", "bash", "5.2.15", ()),
        ("desktop-entry", "com.qq.weixin.desktop", "4.0", ("chat",)),
        ("dpkg", "gnome-mines", "40.1", ("game",)),
    ]
    assert software[1] == InstalledSoftware(
        source="desktop-entry", name="com.qq.weixin.desktop", version="4.0", display_name="微信", publisher="",
        section="", categories=("Network", "InstantMessaging"), executable="wechat", install_date=T0, hints=("chat",),
    )


def test_software_deltas_before_any_snapshot_still_count(engine: Engine, reporter: Reporter) -> None:
    reporter.send(software_delta=pb.SoftwareDelta(added=[dpkg("supertux", "0.6", "games")]))

    assert [s.name for s in state.installed_software(engine, AGENT)] == ["supertux"]


# ------------------------------------------------------------------------------ processes


def test_running_processes_follow_starts_and_stops_after_the_snapshot(engine: Engine, reporter: Reporter) -> None:
    reporter.send(process_snapshot=pb.ProcessSnapshot(processes=[proc(9, "gone-before-restart", 0)]))
    reporter.send(process_snapshot=pb.ProcessSnapshot(processes=[
        proc(1, "systemd", 0), proc(100, "bash", 1), proc(200, "wps", 2),
    ]))
    reporter.send(process_started=pb.ProcessStarted(process=proc(300, "firefox", 5)))
    reporter.send(process_stopped=pb.ProcessStopped(pid=200, name="wps", started_at=datetime_to_timestamp(T0 + dt.timedelta(minutes=2))))
    # A stop for an earlier process that had pid 100 does not end the bash running under it now.
    reporter.send(process_stopped=pb.ProcessStopped(pid=100, name="bash", started_at=datetime_to_timestamp(T0)))
    reporter.send(process_started=pb.ProcessStarted(process=proc(400, "wechat", 7)))
    reporter.send(process_stopped=pb.ProcessStopped(pid=400, name="wechat"))  # no start time: pid alone
    reporter.send(process_started=pb.ProcessStarted(process=proc(300, "steam", 9)))  # pid reused: firefox ended

    assert state.running_processes(engine, AGENT) == [
        running(100, "bash", 1), running(300, "steam", 9), running(1, "systemd", 0),
    ]


def test_nothing_runs_after_a_shutdown(engine: Engine, reporter: Reporter) -> None:
    reporter.send(process_snapshot=pb.ProcessSnapshot(processes=[proc(1, "systemd", 0)]))
    reporter.send(power=pb.PowerEvent(kind=pb.PowerEvent.KIND_HEARTBEAT))
    assert [p.name for p in state.running_processes(engine, AGENT)] == ["systemd"]

    reporter.send(power=pb.PowerEvent(kind=pb.PowerEvent.KIND_SHUTDOWN))

    assert state.running_processes(engine, AGENT) == []


# ------------------------------------------------------------------------------ sessions


def test_current_sessions_follow_logins_and_logouts(engine: Engine, reporter: Reporter) -> None:
    def user(name: str, terminal: str, minute: int) -> pb.UserSession:
        return pb.UserSession(username=name, terminal=terminal, started_at=datetime_to_timestamp(T0 + dt.timedelta(minutes=minute)))

    reporter.send(session_snapshot=pb.SessionSnapshot(sessions=[user("zhang", ":0", 0)]))
    reporter.send(session=pb.SessionEvent(kind=pb.SessionEvent.KIND_LOGIN, session=user("li", "pts/0", 3)))
    reporter.send(session=pb.SessionEvent(kind=pb.SessionEvent.KIND_LOGIN, session=user("wang", "pts/1", 4)))
    reporter.send(session=pb.SessionEvent(kind=pb.SessionEvent.KIND_LOGOUT, session=user("wang", "pts/1", 4)))

    assert state.current_sessions(engine, AGENT) == [
        UserSession("li", "pts/0", "", T0 + dt.timedelta(minutes=3)),
        UserSession("zhang", ":0", "", T0),
    ]


# ------------------------------------------------------------------------------ inventory


def inventory_snapshot() -> pb.InventorySnapshot:
    return pb.InventorySnapshot(
        hostname="pc-w01",
        system=pb.SystemInfo(vendor="Lenovo", model="ThinkCentre M720t", serial="PC0ABCDE"),
        memory=pb.MemoryInfo(total_bytes=16 * 2**30),
        disks=[pb.Disk(name="sda", model="ST1000DM010", serial="Z9A1", size_bytes=10**12, rotational=True)],
        network_interfaces=[pb.NetworkInterface(name="eth0", mac="00:11:22:33:44:55", addresses=["10.1.2.3/24"], up=True)],
        usb_devices=[pb.UsbDevice(bus_id="1-1", vendor_id="046d", product_id="c077", vendor="Logitech",
                                  product="M105 Mouse", device_class=pb.DEVICE_CLASS_HID)],
        printers=[pb.Printer(name="HP_LaserJet", make_model="HP LaserJet Pro M404")],
        filesystems=[pb.Filesystem(device="/dev/sda1", mount_point="/", fs_type="ext4", total_bytes=10**11, free_bytes=5 * 10**10)],
    )


def test_inventory_diff_finds_a_replaced_disk_and_an_added_usb_stick() -> None:
    old = inventory_snapshot()
    new = inventory_snapshot()
    new.disks[0].serial = "WX41"
    new.usb_devices.add(bus_id="2-1", vendor_id="0781", product_id="5567", vendor="SanDisk", product="Cruzer Blade",
                        serial="4C5300011", device_class=pb.DEVICE_CLASS_STORAGE)
    new.network_interfaces[0].addresses[:] = ["10.1.2.99/24"]
    new.filesystems[0].free_bytes -= 10**9  # using the disk is not a change of inventory

    assert state.diff_inventory(old, new) == [
        InventoryChange("disks", "sda (serial WX41)", "present", False, True),
        InventoryChange("disks", "sda (serial Z9A1)", "present", True, False),
        InventoryChange("network", "eth0", "addresses", ["10.1.2.3/24"], ["10.1.2.99/24"]),
        InventoryChange("usb", "0781:5567:4C5300011 SanDisk Cruzer Blade", "present", False, True),
    ]
    assert state.diff_inventory(old, old) == []


def test_inventory_diff_of_single_sections_and_device_classes() -> None:
    old = inventory_snapshot()
    new = inventory_snapshot()
    new.hostname = "pc-w02"
    new.memory.total_bytes = 32 * 2**30
    new.usb_devices[0].device_class = pb.DEVICE_CLASS_UNSPECIFIED
    new.usb_devices[0].interface_classes[:] = [pb.DEVICE_CLASS_HID, pb.DEVICE_CLASS_SMART_CARD]
    del new.printers[:]

    assert state.diff_inventory(old, new) == [
        InventoryChange("system", "", "hostname", "pc-w01", "pc-w02"),
        InventoryChange("memory", "", "total_bytes", 16 * 2**30, 32 * 2**30),
        InventoryChange("usb", "046d:c077 at 1-1 Logitech M105 Mouse", "device_class", "hid", "unspecified"),
        InventoryChange("usb", "046d:c077 at 1-1 Logitech M105 Mouse", "interface_classes", [], ["hid", "smart card"]),
        InventoryChange("printers", "HP_LaserJet", "present", True, False),
    ]
    assert state.usb_device_class(new.usb_devices[0]) == "hid, smart card"


def test_inventory_history_and_lookup(engine: Engine, reporter: Reporter, clock: Any) -> None:
    assert state.last_seen(engine, AGENT) is None
    with pytest.raises(NotFound, match="has not reported an inventory yet"):
        state.inventory(engine, AGENT)
    first = reporter.send(inventory=inventory_snapshot())
    reporter.send(power=pb.PowerEvent(kind=pb.PowerEvent.KIND_HEARTBEAT))
    changed = inventory_snapshot()
    changed.hostname = "pc-w01-new"
    second = reporter.send(inventory=changed)

    history = state.inventory_history(engine, AGENT)
    latest = state.inventory(engine, AGENT)
    earlier = state.inventory(engine, AGENT, history[0].fact_id)

    assert [(r.sequence, r.snapshot) for r in history] == [(first, None), (second, None)]
    assert history[0].received_at < history[1].received_at
    assert (latest.fact_id, latest.sequence, latest.snapshot) == (history[1].fact_id, second, changed)
    assert earlier.snapshot == inventory_snapshot()
    assert state.last_seen(engine, AGENT) == clock() - dt.timedelta(minutes=1)
    with pytest.raises(NotFound, match=f"agent '{AGENT}' has no inventory fact 999999"):
        state.inventory(engine, AGENT, 999999)


@pytest.mark.parametrize(
    "view",
    [state.last_seen, state.inventory_history, state.inventory, state.installed_software,
     state.running_processes, state.current_sessions],
)
def test_an_unknown_agent_is_not_found(engine: Engine, view: Any) -> None:
    with pytest.raises(NotFound, match="no agent 'ag-nobody'"):
        view(engine, "ag-nobody")
