"""Importing a centre's register from CSV: UTF-8, UTF-8 with BOM, GB18030; every bad row named, nothing half-done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from controller.assets.service import AssetService
from controller.errors import InvalidInput, NotFound
from tests.controller.assets.centre import add_agent, add_org

GOOD = """tag,kind,window,unit,description,agent,usb,printer,signed_by,signed_on,note
ZX-PC-01,pc,W01,,联想 M720 主机,ag-1,,,张三,2026/10/8,首次领用
ZX-PR-01,printer,W01,,惠普激光打印机,,03f0:042a:VNC3B12345,HP_LaserJet_M1136,张三,2026-10-08,
ZX-CR-01,card_reader,W03,,身份证阅读器,,0400:c35a,,,,
ZX-DK-01,desk,W03,hrss,"办公桌, 1.4 米",,,,,,
"""


@pytest.fixture
def assets(engine: Engine, clock: Any) -> AssetService:
    add_org(engine, clock)
    add_agent(engine, clock, "ag-1", "W01")
    return AssetService(engine, clock)


def _write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "register.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_a_good_file_is_imported_in_any_encoding_excel_writes(assets: AssetService, tmp_path: Path,
                                                               encoding: str) -> None:
    path = _write(tmp_path, GOOD.replace("\n", "\r\n"), encoding)

    assert assets.import_csv(path, by="管理员") == ["ZX-PC-01", "ZX-PR-01", "ZX-CR-01", "ZX-DK-01"]

    listed = {v.tag: v for v in assets.list()}
    assert (listed["ZX-PC-01"].agent_id, listed["ZX-PC-01"].unit, listed["ZX-PC-01"].description) == (
        "ag-1", "tax", "联想 M720 主机")
    assert (listed["ZX-PR-01"].printer_name, listed["ZX-PR-01"].serial) == ("HP_LaserJet_M1136", "VNC3B12345")
    assert (listed["ZX-DK-01"].description, listed["ZX-DK-01"].unit) == ("办公桌, 1.4 米", "hrss")
    assert (listed["ZX-PC-01"].signed_by, str(listed["ZX-PC-01"].signed_on)) == ("张三", "2026-10-08")
    assert listed["ZX-CR-01"].signed_by is None
    detail = assets.show("ZX-PC-01")
    assert [(s.unit, s.note) for s in detail.signatures] == [("tax", "首次领用")]
    assert [(e.action, e.note, e.recorded_by) for e in detail.history] == [
        ("registered", "imported from register.csv", "管理员"), ("signed", "首次领用", "管理员")]


def test_chinese_headings_and_kinds(assets: AssetService, tmp_path: Path) -> None:
    path = _write(tmp_path, "资产编号,类别,窗口,名称,USB,领用人,领用日期\n"
                            "ZX-10,读卡器,W02,身份证阅读器,0400:c35a:ID77,李四,2026/11/1\n"
                            "ZX-11,椅子,W02,转椅,,,\n", "gb18030")

    assert assets.import_csv(path) == ["ZX-10", "ZX-11"]
    reader = assets.show("ZX-10").asset
    assert (reader.kind, reader.description, reader.serial, reader.signed_by) == ("card_reader", "身份证阅读器", "ID77",
                                                                                  "李四")
    assert assets.show("ZX-11").asset.kind == "chair"


def test_every_bad_row_is_named_and_nothing_is_imported(assets: AssetService, tmp_path: Path) -> None:
    assets.register("ZX-OLD", "scanner", "W02", usb="04a9:1909:SC-4410")
    path = _write(tmp_path, (
        "Tag,Kind,Window,Unit,USB,Signed_By,Signed_On\n"
        "ZX-1,desk,W01,,,,\n"              # line 2: good
        "ZX-2,sofa,W99,,,,\n"              # line 3: kind and window
        "\n"
        "ZX-1,chair,W01,,,,\n"             # line 5: the tag of line 2
        "ZX-3,scanner,W01,police,04a9:1909:SC-4410,,\n"  # line 6: unit, and the device is ZX-OLD
        "ZX-4,card_reader,W02,,0bda:0169:R1,李四,2026-13-01\n"  # line 7: date
        "ZX-5,card_reader,W02,,0bda:0169:R1,,\n"  # line 8: the device of line 7 (which is bad, but claims it)
        "ZX-6,desk,W09,,,王五,2026-11-01\n"  # line 9: W09 has no unit to sign for it
        ",desk,W01,,,,\n"                  # line 10: no tag
    ))

    with pytest.raises(InvalidInput) as raised:
        assets.import_csv(path)

    lines = str(raised.value).splitlines()
    assert lines[0] == f"{path}: 7 bad rows, nothing imported:"
    assert lines[1:] == [
        f"{path}:3: kind: 'sofa' is not one of pc, printer, scanner, card_reader, signature_pad, evaluator, phone, "
        "desk, chair, other",
        f"{path}:3: window: no window 'W99' (see `counterguard window list`)",
        f"{path}:5: tag: ZX-1 is already on row 2",
        f"{path}:6: unit: no unit 'police' (see `counterguard unit list`)",
        f"{path}:6: usb: USB device 04a9:1909:SC-4410 is already asset ZX-OLD",
        f"{path}:7: signed_on: '2026-13-01' is not a date (2026-11-02)",
        f"{path}:8: usb: USB device 0bda:0169:R1 is already on row 7",
        f"{path}:9: unit: the window has no unit and none is given, so nobody can have signed for it",
        f"{path}:10: tag: an asset tag is required",
    ]
    assert [v.tag for v in assets.list()] == ["ZX-OLD"]


@pytest.mark.parametrize(("text", "message"), [
    ("", "the file is empty; its first line must name the columns"),
    ("ZX-1,desk,W01\n", ":1: header: unknown column 'zx-1'"),
    ("tag,kind\nZX-1,desk\n", ":1: header: the required column 'window' is missing"),
    ("tag,kind,window,kind\n", ":1: header: column 'kind' appears twice"),
    ("tag,kind,window\n", "there are no rows under the header"),
    ("tag,kind,window\nZX-1,desk,W01,extra\n", ":2: row: 4 cells, but the header names 3"),
])
def test_file_problems_are_one_sentence(assets: AssetService, tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        assets.import_csv(_write(tmp_path, text))
    assert assets.list() == []


def test_a_file_that_is_not_csv_text_is_refused(assets: AssetService, tmp_path: Path) -> None:
    path = tmp_path / "register.xlsx"
    path.write_bytes(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00")

    with pytest.raises(InvalidInput, match="is not a CSV text file in UTF-8 or GB18030"):
        assets.import_csv(path)
    with pytest.raises(NotFound, match="missing.csv: no such file"):
        assets.import_csv(tmp_path / "missing.csv")
