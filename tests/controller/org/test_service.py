"""The organisation service on each back end: units, windows, staff, posts over time, absences, roster import."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from controller.errors import Conflict, InvalidInput, NotFound
from controller.org.attribution import OrgDirectory
from controller.org.records import ASSIGNMENT, STAFF
from controller.org.service import Ended, OrgService

NOV = dt.date(2026, 11, 1)


def day(n: int) -> dt.date:
    return dt.date(2026, 11, n)


@pytest.fixture
def org(engine: Engine, clock: Any) -> OrgService:
    service = OrgService(engine, clock)
    service.add_unit("tax", "税务局", home_department="市税务局办公室", by="admin")
    service.add_unit("ss", "社保局")
    service.add_window("A03", unit="tax")
    service.add_window("A04", unit="tax")
    for code, name in (("S001", "张三"), ("S002", "李四"), ("S003", "王五")):
        service.add_staff(code, name, "tax")
    return service


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# ------------------------------------------------------------------------------ units, windows, staff


def test_units_windows_and_staff_are_listed_with_their_counts(org: OrgService) -> None:
    assert [(u["code"], u["name"], u["staff"], u["windows"]) for u in org.units()] == [
        ("ss", "社保局", 0, 0), ("tax", "税务局", 3, 2)]
    assert org.units()[1]["home_department"] == "市税务局办公室"
    assert [(s["code"], s["name"], s["posts"], s["absent"]) for s in org.staff_list(NOV, "tax")][:1] == [
        ("S001", "张三", [], False)]
    assert org.staff_list(NOV, "ss") == []


def test_references_must_exist_and_codes_are_unique(org: OrgService) -> None:
    with pytest.raises(NotFound, match=r"no unit 'police'; add it with `counterguard unit add`"):
        org.add_staff("S009", "赵六", "police")
    with pytest.raises(NotFound, match="no unit 'police'"):
        org.add_window("B01", unit="police")
    with pytest.raises(Conflict, match="staff member S001 already exists"):
        org.add_staff("S001", "张三", "tax")
    with pytest.raises(Conflict, match="unit tax already exists"):
        org.add_unit("tax", "税务局")
    with pytest.raises(Conflict, match="window A03 already exists"):
        org.add_window("a03")  # agents' windows are matched whatever the case
    with pytest.raises(InvalidInput, match="a name is required"):
        org.add_staff("S010", " ", "tax")
    with pytest.raises(NotFound, match="no unit 'ss '"):
        org.staff_list(NOV, "ss ")


# ------------------------------------------------------------------------------ posts


def test_a_new_holder_of_an_open_ended_post_ends_it_the_day_before(org: OrgService, engine: Engine) -> None:
    org.assign("S001", "A03", "A", NOV)
    result = org.assign("S003", "a03", "a", day(16), by="主任")

    assert (result.staff, result.window, result.post, result.valid_from, result.valid_to) == (
        "S003", "A03", "A", day(16), None)
    assert result.ended == (Ended("S001", "A03", "A", NOV, day(15)),)
    assert org.holders("A03", day(15)) == {"A": ["S001"], "B": []}
    assert org.holders("A03", day(16)) == {"A": ["S003"], "B": []}
    with engine.connect() as conn:
        directory = OrgDirectory.load(conn)
    assert (directory.on_duty("A03", day(15))[0], directory.on_duty("A03", day(16))[0]) == ("S001", "S003")
    history = org.history("S001")
    assert [(a["window"], a["post"], a["valid_from"], a["valid_to"]) for a in history.assignments] == [
        ("A03", "A", NOV, day(15))]


def test_overlapping_posts_are_a_conflict_and_nothing_changes(org: OrgService, engine: Engine) -> None:
    org.assign("S001", "A03", "A", NOV, day(20))
    with pytest.raises(Conflict, match=r"post A of window A03 is held by S001 from 2026-11-01 to 2026-11-20, "
                                       r"which overlaps the new assignment of S002 from 2026-11-10 until further"):
        org.assign("S002", "A03", "A", day(10))
    org.assign("S002", "A03", "A", day(21))  # the day after is free
    with pytest.raises(Conflict, match="held by S002 from 2026-11-21 until further notice"):
        org.assign("S002", "A03", "A", day(28))  # the same person again
    org.assign("S003", "A04", "A", day(21))
    with pytest.raises(Conflict, match="held by S003 from 2026-11-21 until further notice"):
        org.assign("S001", "A04", "A", day(10), day(25))  # cannot end an assignment before it starts
    assert count(engine, ASSIGNMENT) == 3
    org.assign("S003", "A03", "B", NOV)  # the other post is free
    assert org.holders("A03", day(25)) == {"A": ["S002"], "B": ["S003"]}


def test_an_assignment_needs_a_known_person_window_post_and_span(org: OrgService) -> None:
    with pytest.raises(NotFound, match=r"no staff member 'S404'; add them with `counterguard staff add`"):
        org.assign("S404", "A03", "A", NOV)
    with pytest.raises(NotFound, match=r"no window 'Z99'; add it with `counterguard window add`"):
        org.assign("S001", "Z99", "A", NOV)
    with pytest.raises(InvalidInput, match="post 'C' is not A or B"):
        org.assign("S001", "A03", "C", NOV)
    with pytest.raises(InvalidInput, match=r"the assignment ends \(2026-10-31\) before it starts \(2026-11-01\)"):
        org.assign("S001", "A03", "A", NOV, dt.date(2026, 10, 31))


def test_absences_are_recorded_and_shown(org: OrgService, engine: Engine) -> None:
    org.assign("S001", "A03", "A", NOV)
    org.assign("S002", "A03", "B", NOV)
    away = org.leave("S001", day(9), day(13), "年假", by="主任")

    assert (away["starts_on"], away["ends_on"], away["reason"]) == (day(9), day(13), "年假")
    assert [s["absent"] for s in org.staff_list(day(10))] == [True, False, False]
    [window] = [w for w in org.windows(day(10)) if w["code"] == "A03"]
    assert window["A"] == [{"staff": "S001", "name": "张三", "absent": True}]
    assert window["B"] == [{"staff": "S002", "name": "李四", "absent": False}]
    with engine.connect() as conn:
        assert OrgDirectory.load(conn).on_duty("A03", day(10))[0] == "S002"
    assert [a["reason"] for a in org.history("S001").absences] == ["年假"]
    with pytest.raises(NotFound, match="no staff member 'S404'"):
        org.leave("S404", day(9), day(9), "年假")
    with pytest.raises(InvalidInput, match="ends"):
        org.leave("S001", day(9), day(8), "年假")
    with pytest.raises(InvalidInput, match="a reason"):
        org.leave("S001", day(9), day(9), "")
    with pytest.raises(NotFound, match="no staff member"):
        org.history("S404")


# ------------------------------------------------------------------------------ roster import


ROSTER = """code,name,unit,window,post,from,to
S101,赵一,tax,A03,A,2026-11-01,
S102,钱二,tax,A03,B,2026-11-01,2026-11-30
S103,孙三,ss,,,,
S104,李四四,tax,a04,a,2026/11/1,
"""


def write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "roster.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_a_roster_is_imported_in_any_encoding_a_spreadsheet_writes(org: OrgService, tmp_path: Path,
                                                                  encoding: str) -> None:
    result = org.import_staff(write(tmp_path, ROSTER, encoding), by="admin")

    assert (result.staff, result.assignments, result.ended) == (4, 3, ())
    staff = {s["code"]: s for s in org.staff_list(day(2))}
    assert (staff["S101"]["name"], staff["S101"]["posts"]) == ("赵一", ["A03 A"])
    assert (staff["S103"]["unit"], staff["S103"]["posts"]) == ("ss", [])
    assert staff["S104"]["posts"] == ["A04 A"]
    assert org.holders("A03", day(30)) == {"A": ["S101"], "B": ["S102"]}
    assert org.holders("A03", dt.date(2026, 12, 1)) == {"A": ["S101"], "B": []}


def test_a_roster_can_hand_a_post_over_and_end_a_stored_one(org: OrgService, tmp_path: Path) -> None:
    org.assign("S001", "A03", "A", dt.date(2026, 1, 1))
    text = "name,code,unit,post,window,from\n赵一,S101,tax,A,A03,2026-11-01\n钱二,S102,tax,A,A03,2026-11-16\n"

    result = org.import_staff(write(tmp_path, text))

    assert result.ended == (Ended("S001", "A03", "A", dt.date(2026, 1, 1), dt.date(2026, 10, 31)),)
    assert [org.holders("A03", d)["A"] for d in (dt.date(2026, 10, 31), day(15), day(16))] == [
        ["S001"], ["S101"], ["S102"]]


def test_a_roster_with_bad_rows_imports_nothing_and_names_every_bad_row(org: OrgService, engine: Engine,
                                                                        tmp_path: Path) -> None:
    org.assign("S001", "A04", "A", NOV, day(30))
    text = "\n".join([
        "code,name,unit,window,post,from,to",
        "S101,赵一,tax,A03,A,2026-11-01,",          # 2: fine
        "S102,,tax,,,,",                             # 3: no name
        "S103,孙三,police,,,,",                      # 4: unknown unit
        "S101,赵一,tax,,,,",                         # 5: repeats row 2
        "S001,张三,tax,,,,",                         # 6: already on the staff list
        "S105,周五,tax,Z99,A,2026-11-01,",           # 7: unknown window
        "S106,吴六,tax,A03,C,2026-11-31,2026-10-01",  # 8: bad post, bad date
        "S107,郑七,tax,A04,A,2026-11-10,2026-11-12",  # 9: A04 A is held by S001 until the 30th
        "S108,冯八,tax,,B,2026-11-01,",              # 10: a post without a window
        "",                                          # 11: a blank row
        "S109,陈九,tax,A03,A,2026-11-01,,extra",     # 12: a cell beyond the header; A03 A taken by row 2
        "S110,褚十,tax,A03,A,2026-11-01,",           # 13: A03 A given to row 2 from the same day
    ]) + "\n"
    path = write(tmp_path, text)
    staff_before, posts_before = count(engine, STAFF), count(engine, ASSIGNMENT)

    with pytest.raises(InvalidInput) as caught:
        org.import_staff(path)

    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: 10 rows are not valid; nothing was imported:"
    assert lines[1:] == [
        f"{path}:3: name: required",
        f"{path}:4: unit: no unit 'police'; add it with `counterguard unit add`",
        f"{path}:5: code: S101 is also on row 2",
        f"{path}:6: code: staff member S001 already exists",
        f"{path}:7: window: no window 'Z99'; add it with `counterguard window add`",
        f"{path}:8: from: '2026-11-31' is not a date like 2026-11-01",
        f"{path}:8: post: 'C' is not A or B",
        f"{path}:9: post: post A of window A04 is held by S001 from 2026-11-01 to 2026-11-30, which overlaps the "
        "new assignment of S107 from 2026-11-10 to 2026-11-12",
        f"{path}:10: window: required when post, from or to is given",
        f"{path}:12: row: 8 cells but the header has 7 columns",
        f"{path}:13: post: post A of window A03 is held by S101 from 2026-11-01 until further notice, which "
        "overlaps the new assignment of S110 from 2026-11-01 until further notice",
    ]
    assert (count(engine, STAFF), count(engine, ASSIGNMENT)) == (staff_before, posts_before)


def test_a_roster_without_a_usable_header_or_text_is_refused(org: OrgService, tmp_path: Path) -> None:
    for text, message in (
        ("", "the file is empty; the first row must be the header"),
        ("工号,姓名\nS1,x\n", "header: unknown column '工号'"),
        ("code,name,code\n", "header: column 'code' appears twice"),
        ("code,name\nS1,x\n", "header: the required column 'unit' is missing"),
    ):
        with pytest.raises(InvalidInput, match=message):
            org.import_staff(write(tmp_path, text))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"code,name,unit\n\xff\xfe\xfd\x80\x81\n")
    with pytest.raises(InvalidInput, match="neither UTF-8 nor GB18030"):
        org.import_staff(binary)
    with pytest.raises(InvalidInput, match="cannot read the file"):
        org.import_staff(tmp_path / "missing.csv")
