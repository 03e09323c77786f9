"""``counterguard inventory show | software list | processes`` as a person (or a script) reads them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main, output
from controller.convert import datetime_to_timestamp
from controller.db import make_engine, session_scope
from controller.ingest import IngestService
from controller.migrate import upgrade
from controller.models import Agent
from protos.counterguard.v1 import facts_pb2 as pb

AGENT = "ag-0123456789"
T0 = dt.datetime(2026, 11, 2, 1, 0, tzinfo=dt.UTC)


def _inventory(disk_serial: str, usb: bool) -> pb.InventorySnapshot:
    inventory = pb.InventorySnapshot(
        hostname="pc-w01",
        system=pb.SystemInfo(vendor="Lenovo", model="ThinkCentre M720t", serial="PC0ABCDE", bios_version="M1UKT4AA"),
        cpu=pb.CpuInfo(model="Intel(R) Core(TM) i5-9500", physical_cores=6, logical_cores=6, architecture="x86_64"),
        memory=pb.MemoryInfo(total_bytes=16 * 2**30),
        disks=[pb.Disk(name="sda", model="ST1000DM010", serial=disk_serial, size_bytes=1000204886016)],
        network_interfaces=[pb.NetworkInterface(name="eth0", mac="00:11:22:33:44:55", addresses=["10.1.2.3/24"], up=True)],
        default_gateway="10.1.2.1",
        os=pb.OsInfo(family="linux", name="UOS", version="20", id="uos", kernel="5.10.0"),
        usb_devices=[pb.UsbDevice(bus_id="1-1", vendor_id="046d", product_id="c077", vendor="Logitech",
                                  product="M105 Mouse", device_class=pb.DEVICE_CLASS_HID)],
        printers=[pb.Printer(name="HP_LaserJet", make_model="HP LaserJet Pro M404", is_default=True)],
    )
    if usb:
        inventory.usb_devices.add(bus_id="2-1", vendor_id="0781", product_id="5567", vendor="SanDisk",
                                  product="Cruzer Blade", serial="4C5300011", device_class=pb.DEVICE_CLASS_STORAGE)
    return inventory


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite database with one agent that reported two inventories, software and processes."""
    monkeypatch.setattr(output.console, "width", 200)  # wide enough that no cell wraps
    monkeypatch.setattr(output.err_console, "width", 200)
    url = f"sqlite:///{tmp_path / 'cg.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with session_scope(engine) as session:
        session.add(Agent(id=AGENT, hostname="pc-w01", window="W01", enrolled_at=T0, cert_serial="1",
                          cert_fingerprint="f", cert_not_after=T0 + dt.timedelta(days=365)))
    now = T0

    def fact(sequence: int, **kind: Any) -> pb.Fact:
        return pb.Fact(sequence=sequence, observed_at=datetime_to_timestamp(now), **kind)

    software = [
        pb.SoftwareItem(source=pb.SOFTWARE_SOURCE_DPKG, name="bash", version="5.2.15", section="shells"),
        pb.SoftwareItem(source=pb.SOFTWARE_SOURCE_DPKG, name="gnome-mines", version="40.1", section="games"),
        pb.SoftwareItem(source=pb.SOFTWARE_SOURCE_DESKTOP_ENTRY, name="wps-office-wps.desktop", version="11.1",
                        categories=["Office", "WordProcessor"]),
    ]
    IngestService(engine, lambda: now).ingest(AGENT, [
        fact(1, inventory=_inventory("Z9A1", usb=False)),
        fact(2, software_snapshot=pb.SoftwareSnapshot(items=software)),
        fact(3, process_snapshot=pb.ProcessSnapshot(processes=[
            pb.ProcessInfo(pid=1, name="systemd", executable="/usr/lib/systemd/systemd", username="root",
                           started_at=datetime_to_timestamp(T0)),
            pb.ProcessInfo(pid=4242, name="wps", executable="/opt/kingsoft/wps-office/office6/wps", username="zhang",
                           started_at=datetime_to_timestamp(T0)),
        ])),
    ])
    now = T0 + dt.timedelta(hours=2)
    IngestService(engine, lambda: now).ingest(AGENT, [
        fact(4, inventory=_inventory("WX41", usb=True)),
        fact(5, process_started=pb.ProcessStarted(process=pb.ProcessInfo(
            pid=5000, name="steam", executable="/usr/games/steam", username="zhang",
            started_at=datetime_to_timestamp(now)))),
    ])
    engine.dispose()
    return url


def run(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> tuple[int, str, str]:
    try:
        main(["--db", db, *args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inventory_show(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run(capsys, db, "inventory", "show", AGENT)

    assert code == 0
    for text in ("Inventory of ag-0123456789", "pc-w01", "fact", "(sequence 4)", "2026-11-02 03:00:00 UTC",
                 "ThinkCentre M720t", "PC0ABCDE", "6 physical, 6 logical", "16.0 GiB", "UOS",
                 "WX41", "931.5 GiB", "Network interfaces (1), default gateway 10.1.2.1", "10.1.2.3/24",
                 "USB devices (2)", "046d:c077", "Logitech", "hid", "0781:5567", "Cruzer Blade", "storage",
                 "HP LaserJet Pro M404", "PCI devices: none reported"):
        assert text in out, text
    assert "Z9A1" not in out  # the replaced disk is in the older inventory only


def test_inventory_show_json(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run(capsys, db, "inventory", "show", AGENT, "--json")

    shown = json.loads(out)
    assert code == 0
    assert (shown["agent_id"], shown["sequence"], shown["observed_at"]) == (AGENT, 4, "2026-11-02T03:00:00+00:00")
    assert shown["snapshot"]["disks"][0]["serial"] == "WX41"
    assert shown["snapshot"]["memory"]["total_bytes"] == 16 * 2**30
    assert [u["device_class"] for u in shown["snapshot"]["usb_devices"]] == ["hid", "storage"]


def test_inventory_diff(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run(capsys, db, "inventory", "show", AGENT, "--diff")

    assert code == 0
    title = " ".join(out.split("┏")[0].split())  # a title wider than the table wraps
    assert title == "Inventory changes of ag-0123456789: fact 1 (2026-11-02 01:00 UTC) → fact 4 (2026-11-02 03:00 UTC)"
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert "disks sda (serial WX41) present no yes" in lines
    assert "disks sda (serial Z9A1) present yes no" in lines
    assert "usb 0781:5567:4C5300011 SanDisk Cruzer Blade present no yes" in lines

    code, out, _ = run(capsys, db, "inventory", "show", AGENT, "--diff", "--json")
    changes = json.loads(out)["changes"]
    assert {(c["section"], c["item"], c["new"]) for c in changes} == {
        ("disks", "sda (serial WX41)", True), ("disks", "sda (serial Z9A1)", False),
        ("usb", "0781:5567:4C5300011 SanDisk Cruzer Blade", True),
    }


def test_inventory_diff_of_the_same_inventory(capsys: pytest.CaptureFixture[str], db: str) -> None:
    _, out, _ = run(capsys, db, "inventory", "show", AGENT, "--json")
    fact_id = str(json.loads(out)["fact_id"])

    code, out, _ = run(capsys, db, "inventory", "show", AGENT, "--diff", "--from", fact_id, "--to", fact_id)

    assert code == 0
    assert out.startswith(f"No changes in the inventory of {AGENT}: fact {fact_id}")


def test_software_list(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run(capsys, db, "software", "list", AGENT)

    assert code == 0
    assert "Software on ag-0123456789 (3)" in out
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert "dpkg gnome-mines 40.1 games game" in lines
    assert "desktop-entry wps-office-wps.desktop 11.1 Office, WordProcessor office" in lines

    code, out, _ = run(capsys, db, "software", "list", AGENT, "--category", "game", "--json")
    assert [(s["name"], s["hints"]) for s in json.loads(out)] == [("gnome-mines", ["game"])]

    code, out, _ = run(capsys, db, "software", "list", AGENT, "--hinted", "--json")
    assert [s["name"] for s in json.loads(out)] == ["gnome-mines", "wps-office-wps.desktop"]

    code, out, _ = run(capsys, db, "software", "list", AGENT, "--category", "chat")
    assert (code, out) == (0, f"None of the 3 installed programs on agent {AGENT} is in category 'chat'.\n")


def test_processes(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run(capsys, db, "processes", AGENT)

    assert code == 0
    assert "Programs running on ag-0123456789 (3, newest first)" in out
    for text in ("steam", "/usr/games/steam", "5000", "wps", "4242", "systemd", "2026-11-02 03:00:00 UTC"):
        assert text in out, text

    code, out, _ = run(capsys, db, "processes", AGENT, "--json", "--limit", "1")
    assert json.loads(out) == [{"pid": 5000, "name": "steam", "executable": "/usr/games/steam", "username": "zhang",
                                "started_at": "2026-11-02T03:00:00+00:00"}]


@pytest.mark.parametrize(
    "command", [["inventory", "show"], ["software", "list"], ["processes"], ["inventory", "show", "--diff"]]
)
def test_an_unknown_agent_is_one_sentence(capsys: pytest.CaptureFixture[str], db: str, command: list[str]) -> None:
    code, out, err = run(capsys, db, *command, "ag-nobody")

    assert code == 1
    assert out == ""
    assert err.strip() == "error: no agent 'ag-nobody'; see `counterguard agents list`"
