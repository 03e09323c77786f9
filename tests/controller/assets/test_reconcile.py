"""The register against real inventories stored through ingest: unregistered equipment, items no longer seen."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine

from controller.assets.service import AssetService
from controller.models import AGENT
from tests.controller.assets.centre import (
    CARD_READER,
    HUB,
    KEYBOARD,
    MOUSE,
    PRINT_QUEUE,
    SCANNER,
    SIGNATURE_PAD,
    STICK,
    USB_PRINTER,
    Reporter,
    add_agent,
    add_org,
    pc,
    usb,
)

MOVED_READER = usb("076b", "3021", "CR-9", 6, 6, vendor="OMNIKEY", product="CardMan 3021", bus_id="2-1")


def test_check_reports_unregistered_equipment_missing_items_and_moves(engine: Engine, clock: Any) -> None:
    add_org(engine, clock)
    for agent, window in (("ag-1", "W01"), ("ag-2", "W02"), ("ag-3", "W03")):
        add_agent(engine, clock, agent, window, hostname=f"pc-{window.lower()}")
    reporter = Reporter(engine, clock)
    reporter.inventory("ag-1", pc(devices=[SCANNER, KEYBOARD, MOUSE, HUB]))
    scanner_seen_at = clock()
    reporter.inventory("ag-3", pc(serial="PC-W03"))
    ag3_last_contact = clock()
    assets = AssetService(engine, clock)
    assets.register("PC-1", "pc", "W01", agent="ag-1")
    assets.register("PC-2", "pc", "W02", serial="PC-W02")  # before its agent enrolled: known by its serial
    assets.register("PC-3", "pc", "W03", agent="ag-3")
    assets.register("S-1", "scanner", "W01", usb="04a9:1909:SC-4410", description="佳能扫描仪")
    assets.register("P-2", "printer", "W02", printer="Office_Printer")
    assets.register("R-9", "card_reader", "W03", usb="076b:3021:CR-9")
    assets.register("D-1", "desk", "W01")

    clock.advance(days=1)
    with engine.begin() as conn:
        conn.execute(update(AGENT).where(AGENT.c.id == "ag-3").values(revoked_at=clock()))
    reporter.inventory("ag-1", pc(devices=[USB_PRINTER, CARD_READER, KEYBOARD, MOUSE, HUB, STICK],
                                  printers=[PRINT_QUEUE]))
    reporter.inventory("ag-2", pc(serial="PC-W02", hostname="w02", devices=[SIGNATURE_PAD, MOVED_READER]))

    report = assets.check()

    assert (report.checked_at, report.workstations, report.assets_checked) == (clock(), 2, 6)
    assert [(u.agent_id, u.kind, u.description, u.register_with) for u in report.unregistered] == [
        ("ag-1", "printer", "HP_LaserJet_M1136 (HP LaserJet M1136 MFP, hpcups 3.22) at "
                            "usb://HP/LaserJet%20M1136%20MFP?serial=VNC3B12345", "--printer HP_LaserJet_M1136"),
        ("ag-1", "card_reader", "OMNIKEY CardMan 3021 (USB 076b:3021:CR-7781)", "--usb 076b:3021:CR-7781"),
        ("ag-2", "signature_pad", "汉王 手写签名板 ESP370 (USB 1b8e:0101)", "--usb 1b8e:0101"),
    ]  # the keyboard, the mouse, the hub and the USB stick are not equipment
    assert {u.window for u in report.unregistered} == {"W01", "W02"}
    assert [(m.tag, m.last_seen_at, m.last_seen_on) for m in report.missing] == [
        ("P-2", None, None),
        ("PC-3", ag3_last_contact, "ag-3"),  # its agent is revoked: its last contact
        ("S-1", scanner_seen_at, "ag-1"),  # the last inventory that showed it
    ]
    assert report.missing[2].identity == "USB 04a9:1909:SC-4410"
    assert [(e.tag, e.window, e.seen_window, e.agent_id) for e in report.elsewhere] == [("R-9", "W03", "W02", "ag-2")]

    # Registering what was found, and moving the reader where it is, leaves only what is really gone.
    assets.register("P-1", "printer", "W01", printer="HP_LaserJet_M1136")
    assets.register("R-1", "card_reader", "W01", usb="076b:3021:CR-7781")
    assets.register("SP-2", "signature_pad", "W02", usb="1b8e:0101")
    assets.move("R-9", "W02")
    after = assets.check()
    assert (after.unregistered, after.elsewhere) == ((), ())
    assert [m.tag for m in after.missing] == ["P-2", "PC-3", "S-1"]


def test_a_printer_registered_by_its_usb_serial_covers_its_queue_too(engine: Engine, clock: Any) -> None:
    add_org(engine, clock)
    add_agent(engine, clock, "ag-1", "W01")
    Reporter(engine, clock).inventory("ag-1", pc(devices=[USB_PRINTER], printers=[PRINT_QUEUE]))
    assets = AssetService(engine, clock)
    assets.register("PC-1", "pc", "W01", agent="ag-1")
    assets.register("P-1", "printer", "W01", usb="03f0:042a:VNC3B12345")

    report = assets.check()

    assert (report.unregistered, report.missing) == ((), ())


def test_an_empty_register_reports_every_pc_and_nothing_missing(engine: Engine, clock: Any) -> None:
    add_org(engine, clock)
    add_agent(engine, clock, "ag-1", "W01")
    add_agent(engine, clock, "ag-silent", "W02")  # never sent an inventory: not a current inventory
    Reporter(engine, clock).inventory("ag-1", pc(serial="To be filled by O.E.M."))

    report = AssetService(engine, clock).check()

    assert [(u.kind, u.description, u.register_with) for u in report.unregistered] == [
        ("pc", "Lenovo M720 w01", "--agent ag-1")]
    assert (report.workstations, report.missing) == (1, ())
