"""Registering, changing, signing for, maintaining and retiring assets, with their history, on each back end."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from controller.assets.service import AssetService
from controller.errors import Conflict, InvalidInput, NotFound
from controller.rules.decisions import DecisionService
from tests.controller.assets.centre import SCANNER, Reporter, add_agent, add_org, pc


@pytest.fixture
def assets(engine: Engine, clock: Any) -> AssetService:
    add_org(engine, clock)
    return AssetService(engine, clock)


def test_register_sign_move_retire_keeps_the_history(assets: AssetService, clock: Any) -> None:
    view = assets.register("ZX-0001", "phone", "W01", description="IP 电话", by="管理员")
    assert (view.window, view.unit, view.identity) == ("W01", "tax", "")  # the window's unit

    clock.advance(days=1)
    signature = assets.sign("ZX-0001", "李四", on=dt.date(2026, 11, 2), note="收到", by="管理员")
    assets.sign("ZX-0001", "王五", unit="hrss", by="管理员")  # today, another unit: it holds it now
    moved = assets.move("ZX-0001", "W03", note="调整窗口", by="管理员")
    retired = assets.retire("ZX-0001", "报废", by="主任")

    assert signature.unit == "tax"
    assert (moved.window, moved.unit, moved.signed_by, str(moved.signed_on)) == ("W03", "hrss", "王五", "2026-11-03")
    assert retired.retired_reason == "报废" and retired.retired_at == clock()
    detail = assets.show("ZX-0001")
    assert [(s.signed_by, s.unit, str(s.signed_on)) for s in detail.signatures] == [
        ("李四", "tax", "2026-11-02"), ("王五", "hrss", "2026-11-03")]
    assert [(e.action, e.before, e.after, e.recorded_by) for e in detail.history[1:]] == [
        ("signed", None, {"unit": "tax", "signed_by": "李四", "signed_on": "2026-11-02"}, "管理员"),
        ("signed", {"unit": "tax"}, {"unit": "hrss", "signed_by": "王五", "signed_on": "2026-11-03"}, "管理员"),
        ("moved", {"window": "W01"}, {"window": "W03"}, "管理员"),
        ("retired", {"retired_at": None}, {"retired_at": clock().isoformat()}, "主任"),
    ]
    registered = detail.history[0]
    assert (registered.action, registered.before, registered.after["tag"], registered.after["description"]) == (
        "registered", None, "ZX-0001", "IP 电话")
    assert detail.history[3].note == "调整窗口"

    assert assets.list() == []  # retired
    assert [v.tag for v in assets.list(include_retired=True)] == ["ZX-0001"]
    with pytest.raises(Conflict, match="asset ZX-0001 was retired on 2026-11-03 \\(报废\\)"):
        assets.sign("ZX-0001", "赵六")
    with pytest.raises(Conflict, match="tag: ZX-0001 is already in the register"):
        assets.register("ZX-0001", "desk", "W01")  # a retired tag is never given again


def test_list_filters_by_window_unit_and_kind(assets: AssetService) -> None:
    assets.register("D-1", "desk", "W01")
    assets.register("D-2", "desk", "W03")
    assets.register("C-1", "chair", "W03")
    assets.register("P-1", "printer", "W02", printer="HP_LaserJet_M1136")

    assert [v.tag for v in assets.list()] == ["D-1", "P-1", "C-1", "D-2"]  # by window, then tag
    assert [v.tag for v in assets.list(window="W03")] == ["C-1", "D-2"]
    assert [v.tag for v in assets.list(unit="tax")] == ["D-1", "P-1"]
    assert [v.tag for v in assets.list(kind="desk")] == ["D-1", "D-2"]
    assert [v.tag for v in assets.list(unit="hrss", kind="chair")] == ["C-1"]
    with pytest.raises(InvalidInput, match="kind: 'sofa' is not one of pc, printer"):
        assets.list(kind="sofa")


def test_identities_by_kind_and_taken_ones(engine: Engine, clock: Any, assets: AssetService) -> None:
    add_agent(engine, clock, "ag-1", "W01")
    Reporter(engine, clock).inventory("ag-1", pc(serial="PC-77"))

    computer = assets.register("PC-1", "pc", "W01", agent="ag-1")
    reader = assets.register("R-1", "card_reader", "W01", usb="076B:3021:CR-7781")

    assert (computer.agent_id, computer.serial, computer.identity) == ("ag-1", "PC-77", "agent ag-1, serial PC-77")
    assert (reader.vendor_id, reader.product_id, reader.serial) == ("076b", "3021", "CR-7781")
    for call, error, message in (
        (lambda: assets.register("PC-2", "pc", "W02", agent="ag-1"), Conflict,
         "agent: workstation ag-1 is already asset PC-1"),
        (lambda: assets.register("PC-2", "pc", "W02", serial="PC-77"), Conflict,
         "serial: system serial PC-77 is already asset PC-1"),
        (lambda: assets.register("R-2", "scanner", "W02", usb="076b:3021:CR-7781"), Conflict,
         "usb: USB device 076b:3021:CR-7781 is already asset R-1"),
        (lambda: assets.register("PC-2", "pc", "W02", agent="ag-404"), InvalidInput, "agent: no agent 'ag-404'"),
        (lambda: assets.register("PC-2", "pc", "W02", serial="Default string"), InvalidInput, "is a placeholder"),
        (lambda: assets.register("X", "desk", "W02", usb="076b:3021"), InvalidInput, "usb: a desk is not a USB device"),
        (lambda: assets.register("X", "scanner", "W02", agent="ag-1"), InvalidInput,
         "agent: only a PC \\(kind pc\\) has a workstation, not a scanner"),
        (lambda: assets.register("X", "scanner", "W02", usb="76b:3021"), InvalidInput,
         "usb: '76b:3021' is not VID:PID or VID:PID:SERIAL"),
        (lambda: assets.register("X", "desk", "W42"), InvalidInput, "window: no window 'W42'"),
        (lambda: assets.register("X", "desk", "W01", unit="police"), InvalidInput, "unit: no unit 'police'"),
        (lambda: assets.register("X Y", "desk", "W01"), InvalidInput, "tag: 'X Y' contains spaces"),
        (lambda: assets.show("nothing"), NotFound, "no asset 'nothing'"),
    ):
        with pytest.raises(error, match=message):
            call()
    # A PC registered by its serial is the same PC as the workstation whose inventory shows that serial.
    assets.register("PC-OLD", "pc", "W02", serial="PC-88")
    add_agent(engine, clock, "ag-2", "W02")
    Reporter(engine, clock).inventory("ag-2", pc(serial="PC-88"))
    with pytest.raises(Conflict, match="serial: system serial PC-88 is already asset PC-OLD"):
        assets.register("PC-NEW", "pc", "W02", agent="ag-2")
    # Two serial-less readers of one model may both be registered: each is one of the model.
    assets.register("R-2", "card_reader", "W01", usb="0bda:0169")
    assets.register("R-3", "card_reader", "W01", usb="0bda:0169")


def test_edit_replaces_the_identity_and_records_it(assets: AssetService) -> None:
    assets.register("S-1", "scanner", "W01", usb="04a9:1909")
    edited = assets.edit("S-1", description="佳能扫描仪", usb="04a9:1909:SC-4410", by="管理员")
    assets.edit("S-1", description="佳能扫描仪")  # nothing changed: no event

    assert (edited.serial, edited.description) == ("SC-4410", "佳能扫描仪")
    [event] = [e for e in assets.show("S-1").history if e.action == "edited"]
    assert event.before == {"description": "", "serial": ""}
    assert event.after == {"description": "佳能扫描仪", "serial": "SC-4410"}


def test_maintaining_a_scanner_records_maintenance_for_the_workstation_it_is_on(
        engine: Engine, clock: Any, assets: AssetService) -> None:
    add_agent(engine, clock, "ag-1", "W01")
    Reporter(engine, clock).inventory("ag-1", pc(devices=[SCANNER]))
    assets.register("S-1", "scanner", "W01", usb="04a9:1909:SC-4410")
    assets.register("D-1", "desk", "W01")
    start = dt.datetime(2026, 11, 2, 6, tzinfo=dt.UTC)

    done = assets.maintain("S-1", start, start + dt.timedelta(hours=2), "更换滚轴 王工", by="主控室")
    desk = assets.maintain("D-1", start, start + dt.timedelta(hours=1), "修抽屉", by="主控室")

    [record] = DecisionService(engine).maintenance()
    assert (record["agent_id"], record["note"], record["recorded_by"]) == ("ag-1", "S-1: 更换滚轴 王工", "主控室")
    assert done.maintenance.workstations == ({"agent_id": "ag-1", "maintenance_record_id": record["id"]},)
    assert done.evaluation is None  # no rules service given: nothing re-evaluated
    assert desk.maintenance.workstations == ()
    [shown] = assets.show("S-1").maintenance
    assert (shown.starts_at, shown.note, shown.workstations[0]["agent_id"]) == (start, "更换滚轴 王工", "ag-1")
    assert assets.show("S-1").history[-1].after == {"starts_at": start.isoformat(),
                                                    "ends_at": (start + dt.timedelta(hours=2)).isoformat(),
                                                    "workstations": ["ag-1"]}
    with pytest.raises(InvalidInput, match="to: the maintenance ends .* before it starts"):
        assets.maintain("S-1", start, start, "x")
    with pytest.raises(InvalidInput, match="note: a value is required"):
        assets.maintain("S-1", start, start + dt.timedelta(hours=1), " ")


def test_signing_needs_a_unit_and_a_date_not_in_the_future(assets: AssetService) -> None:
    assets.register("D-9", "desk", "W09")  # W09 has no unit

    with pytest.raises(InvalidInput, match="unit: asset D-9 has no unit"):
        assets.sign("D-9", "李四")
    with pytest.raises(InvalidInput, match="on: 2026-11-03 is in the future"):
        assets.sign("D-9", "李四", unit="tax", on=dt.date(2026, 11, 3))
    with pytest.raises(InvalidInput, match="by: a value is required"):
        assets.sign("D-9", "  ", unit="tax")
    assert assets.sign("D-9", "李四", unit="tax").signed_on == dt.date(2026, 11, 2)  # Shanghai's today
    assert assets.show("D-9").asset.unit == "tax"
