"""The sheet as files: XLSX read back with openpyxl, CSV with its BOM read with the csv module, JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from openpyxl import load_workbook

from controller.org.attribution import Attribution
from controller.scoring.export import to_csv, to_json, write_xlsx
from controller.scoring.model import Sheet, StaffInfo
from tests.controller.scoring.test_sheet import MONEY, entry, sheet, staff, user, violation


def november() -> tuple[Sheet, list[int]]:
    """S1 played twice on 3 November (−10 工作纪律); S2 got 3 bonus points; S3 and S4 tie at 100; one unattributed."""
    games = [violation(day=3), violation(day=3)]
    stray = violation(window="B09")
    charged = [(v, user(v, "S1")) for v in games] + [(stray, Attribution(stray.id, (), "nobody on duty at B09"))]
    return sheet(people=staff("S1", "S2", "S3", "S4"), charged=charged,
                 entries=[entry("S2", "附加分", 3, reason="拾金不昧")]), [v.id for v in games]


def test_the_xlsx_workbook_reads_like_a_centres_sheet(tmp_path: Path) -> None:
    result, game_ids = november()
    path = tmp_path / "2026-11.xlsx"

    write_xlsx(result, path)

    book = load_workbook(path)
    assert book.sheetnames == ["月度考核", "扣分明细", "未认定违规"]
    summary = book["月度考核"]
    headings = [c.value for c in summary[1]]
    assert headings == ["工号", "姓名", "单位", "规范服务", "工作纪律", "工作业绩", "窗口互评", "附加分", "总分", "名次",
                        "并列", "先进工作者", "标记"]
    rows = {row[0]: dict(zip(headings, row)) for row in summary.iter_rows(min_row=2, max_row=5, values_only=True)}
    assert rows["S1"]["工作纪律"] == 20 and rows["S1"]["总分"] == 90 and rows["S1"]["名次"] == 4
    assert rows["S1"]["先进工作者"] in (None, "")
    assert (rows["S2"]["附加分"], rows["S2"]["总分"], rows["S2"]["名次"], rows["S2"]["先进工作者"]) == (3, 103, 1, "是")
    assert (rows["S3"]["名次"], rows["S3"]["并列"], rows["S3"]["先进工作者"]) == (2, "是", "是")
    assert rows["S2"]["单位"] == "税务局" and rows["S2"]["姓名"] == "name-S2"
    assert summary.freeze_panes == "A2"
    assert summary.column_dimensions["A"].width >= 6 and summary.column_dimensions["M"].width <= 60

    details = book["扣分明细"]
    detail_headings = [c.value for c in details[1]]
    lines = [dict(zip(detail_headings, row)) for row in details.iter_rows(min_row=2, values_only=True)]
    game = next(line for line in lines if line["工号"] == "S1")
    assert (game["日期"], game["项目"], game["分值"], game["规则"], game["依据"], game["违规编号"], game["次数"]) == (
        "2026-11-03", "工作纪律", -10, "games", "ref-games", ", ".join(map(str, game_ids)), 2)
    assert game["角色"] == "当事人" and game["认定方式"] == "account of S1"

    stray = [dict(zip([c.value for c in book["未认定违规"][1]], row))
             for row in book["未认定违规"].iter_rows(min_row=2, values_only=True)]
    assert [(s["窗口"], s["未认定原因"]) for s in stray] == [("B09", "nobody on duty at B09")]


def test_money_scheme_columns_are_the_charge_and_the_escalation(tmp_path: Path) -> None:
    incidents = [violation("shopping", 0, None, money=50, day=d) for d in (2, 3, 4, 5)]
    result = sheet(MONEY, staff("S1", "S2"), [(v, user(v, "S1", owner="S2")) for v in incidents])
    path = tmp_path / "money.xlsx"

    write_xlsx(result, path)

    summary = load_workbook(path)["月度考核"]
    assert [c.value for c in summary[1]] == ["工号", "姓名", "单位", "扣款(元)", "通报", "标记"]
    first = [c.value for c in summary[2]]
    assert first[:4] == ["S1", "name-S1", "税务局", 200]
    assert first[4] == "通报主管部门：市税务局（shopping ref-shopping，4次）"
    assert load_workbook(path)["扣分明细"]["E1"].value == "扣款(元)"


def test_the_csv_starts_with_a_bom_and_reads_with_the_csv_module() -> None:
    result, _ = november()

    data = to_csv(result)

    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    s2 = next(r for r in rows if r["工号"] == "S2")
    assert (s2["总分"], s2["名次"], s2["先进工作者"], s2["附加分"]) == ("103", "1", "是", "3")
    assert len(rows) == 4


def test_text_that_looks_like_a_formula_stays_text(tmp_path: Path) -> None:
    result = sheet(people=staff("S1"), entries=[entry("S1", "规范服务", -1, reason='=HYPERLINK("http://x","y")')])
    path = tmp_path / "formula.xlsx"

    write_xlsx(result, path)
    data = to_csv(sheet(people=[*staff("S2"), StaffInfo("S3", "=1+2", "tax")]))

    cell = load_workbook(path)["扣分明细"]["I2"]
    assert (cell.value, cell.data_type) == ('=HYPERLINK("http://x","y")', "s")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [r["姓名"] for r in rows] == ["name-S2", "'=1+2"]


def test_the_json_is_the_whole_sheet() -> None:
    result, game_ids = november()

    document = json.loads(to_json(result))

    assert Sheet.from_json(document) == result
    s1 = next(p for p in document["people"] if p["staff"] == "S1")
    assert s1["lines"][0]["violation_ids"] == game_ids
