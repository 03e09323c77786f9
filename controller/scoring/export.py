"""The sheet as files a centre uses: CSV (with the BOM Excel and WPS need), JSON, and XLSX.

The tables are the same in every format, headed in Chinese as the policy names its sections:

* 月度考核 — one row per person: 工号, 姓名, 单位, each section, 附加分, 总分, 名次, 并列, 先进工作者,
  标记 (article-8 flags). Under the money scheme: 工号, 姓名, 单位, 扣款(元), 通报, 标记.
* 扣分明细 — one row per line behind a score: the violations of one rule on one day (with their ids,
  the rule's reference and how the person was identified), manual entries, the peer review.
* 未认定违规 — the counted violations nobody could be identified for, with the reason.

CSV carries the first table only; XLSX all three, each with a frozen heading row. Text that a
spreadsheet would run as a formula (a name or a reason starting with ``=`` …) stays text.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

from controller.scoring.model import Line, Person, Sheet

SUMMARY, DETAIL, UNATTRIBUTED = "月度考核", "扣分明细", "未认定违规"
ROLES = {"user": "当事人", "owner": "电脑责任人", "": ""}
KINDS = {"violation": "违规", "manual": "人工录入", "peer_review": "窗口互评投票"}
YES = "是"
MAX_WIDTH = 60
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

Table = tuple[list[str], list[list[Any]]]


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 2)


def _flags(person: Person) -> str:
    return "；".join(person.flags)


def summary(sheet: Sheet) -> Table:
    """The first table: one row per person."""
    if sheet.scheme == "money":
        headers = ["工号", "姓名", "单位", "扣款(元)", "通报", "标记"]
        rows = [[p.staff, p.name, p.unit_name or p.unit, _number(p.money), _escalation(p), _flags(p)]
                for p in sheet.people]
        return headers, rows
    other = any(p.other for p in sheet.people)
    headers = ["工号", "姓名", "单位", *(s.name for s in sheet.sections), *(["其他扣分"] if other else []),
               sheet.bonus_name, "总分", "名次", "并列", "先进工作者", "标记"]
    rows = []
    for p in sheet.people:
        sections = [_number(s.value) for s in p.sections]
        rows.append([p.staff, p.name, p.unit_name or p.unit, *sections, *([_number(p.other)] if other else []),
                     _number(p.bonus), _number(p.total), p.rank, YES if p.tied else "", YES if p.advanced else "",
                     _flags(p)])
    return headers, rows


def _escalation(person: Person) -> str:
    return "；".join(f"通报主管部门：{e.department}（{e.rule_id} {e.ref}，{e.count}次）" for e in person.escalations)


def detail(sheet: Sheet) -> Table:
    """The second table: every line behind every score."""
    amount = "扣款(元)" if sheet.scheme == "money" else "分值"
    headers = ["工号", "姓名", "日期", "项目", amount, "类别", "规则", "依据", "说明", "违规编号", "次数", "角色",
               "认定方式"]
    rows = [[p.staff, p.name, line.date.isoformat() if line.date else "", line.section, _amount(sheet, line),
             KINDS[line.kind], line.rule_id, line.ref, line.title, ", ".join(map(str, line.violation_ids)),
             line.count, ROLES[line.role], line.how]
            for p in sheet.people for line in p.lines]
    return headers, rows


def _amount(sheet: Sheet, line: Line) -> int | float:
    return _number(line.money if sheet.scheme == "money" else line.points)


def unattributed(sheet: Sheet) -> Table:
    """The third table: counted violations charged to nobody."""
    amount = "金额(元)" if sheet.scheme == "money" else "分值"
    headers = ["违规编号", "日期", "窗口", "单位", "规则", "依据", "说明", "项目", amount, "未认定原因"]
    rows = [[u.violation_id, u.date.isoformat(), u.window, u.unit, u.rule_id, u.ref, u.title, u.section,
             _number(u.money if sheet.scheme == "money" else u.points), u.reason]
            for u in sheet.unattributed]
    return headers, rows


def title(sheet: Sheet) -> str:
    scope = f"（{sheet.unit}）" if sheet.unit else ""
    state = f"，已于 {sheet.closed_at:%Y-%m-%d} 由 {sheet.closed_by} 关账" if sheet.closed_at else "（未关账）"
    return f"{sheet.month} 月度考核{scope}：政策 {sheet.policy_id} {sheet.policy_version}{state}"


# ------------------------------------------------------------------------------ formats


def to_csv(sheet: Sheet) -> bytes:
    """The first table as CSV, UTF-8 with a BOM (so Excel and WPS read the Chinese text right)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    headers, rows = summary(sheet)
    writer.writerow(headers)
    writer.writerows([[_csv_text(value) for value in row] for row in rows])
    return "\ufeff".encode() + out.getvalue().encode("utf-8")


def to_json(sheet: Sheet) -> str:
    return json.dumps(sheet.to_json(), ensure_ascii=False, indent=2) + "\n"


def write_xlsx(sheet: Sheet, path: str | Path) -> None:
    """The three tables as an XLSX workbook, with the sheet's notes below the first.

    Written in openpyxl's write-only mode (rows streamed once), which keeps a large centre's
    detail sheet fast.
    """
    book = Workbook(write_only=True)
    tables = ((SUMMARY, summary(sheet)), (DETAIL, detail(sheet)), (UNATTRIBUTED, unattributed(sheet)))
    for index, (name, (headers, rows)) in enumerate(tables):
        worksheet = book.create_sheet(name)
        notes = [title(sheet), *sheet.notes] if index == 0 else []
        _fill(worksheet, headers, rows, notes)
    book.properties.title = title(sheet)
    book.save(str(path))


def _fill(worksheet: Any, headers: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str]) -> None:
    worksheet.freeze_panes = "A2"
    for column, header in enumerate(headers, start=1):
        longest = max([_width(header), *(_width(row[column - 1]) for row in rows)])
        worksheet.column_dimensions[get_column_letter(column)].width = min(longest + 2, MAX_WIDTH)
    heading = []
    for header in headers:
        cell = WriteOnlyCell(worksheet, value=header)
        cell.font, cell.alignment = Font(bold=True), Alignment(horizontal="center")
        heading.append(cell)
    worksheet.append(heading)
    for row in rows:
        worksheet.append([_xlsx_value(worksheet, value) for value in row])
    if notes:
        worksheet.append([])
        for note in notes:
            worksheet.append([f"注：{note}"])


def _csv_text(value: Any) -> Any:
    """Text a spreadsheet would take for a formula, quoted with a leading apostrophe (numbers stay numbers)."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _xlsx_value(worksheet: Any, value: Any) -> Any:
    """A cell value; text starting with ``=`` is stored as text, not as a formula."""
    if not (isinstance(value, str) and value.startswith("=")):
        return value
    cell = WriteOnlyCell(worksheet, value=value)
    cell.data_type = "s"
    return cell


def _width(value: Any) -> int:
    """Display width: CJK characters take two columns."""
    text = "" if value is None else str(value)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
