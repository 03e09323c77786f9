"""``counterguard unit | window | staff | assign``, run the way an admin runs them, on each back end."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from controller.org.records import STAFF
from tests.controller.cli_run import run


@pytest.fixture
def cli(tmp_path: Path, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]) -> Any:
    def invoke(*args: str) -> tuple[int, str, str]:
        return run(capsys, "--data-dir", str(tmp_path / "admin"), "--db", database_url, *args)

    def ok(*args: str) -> str:
        code, out, err = invoke(*args)
        assert code == 0, err
        return out

    def json_of(*args: str) -> Any:
        return json.loads(ok(*args, "--json"))

    invoke.ok = ok  # type: ignore[attr-defined]
    invoke.json = json_of  # type: ignore[attr-defined]
    return invoke


@pytest.fixture
def centre(cli: Any) -> Any:
    """A unit with two windows and three staff."""
    cli.ok("unit", "add", "tax", "税务局", "--home-department", "市税务局")
    cli.ok("window", "add", "A03", "--unit", "tax", "--description", "综合受理")
    cli.ok("window", "add", "A04", "--unit", "tax")
    for code, name in (("S001", "张三"), ("S002", "李四"), ("S003", "王五")):
        cli.ok("staff", "add", code, name, "--unit", "tax")
    return cli


def test_units_windows_and_staff_are_added_and_listed(cli: Any) -> None:
    assert cli.ok("unit", "add", "tax", "税务局") == "Unit tax (税务局) added.\n"
    assert cli.ok("window", "add", "A03", "--unit", "tax") == "Window A03 added for unit tax.\n"
    assert cli.ok("staff", "add", "S001", "张三", "--unit", "tax", "--note", "组长") == \
        "Staff member S001 张三 added to unit tax.\n"

    assert cli.json("unit", "list") == [{"code": "tax", "name": "税务局", "home_department": "", "staff": 1,
                                         "windows": 1}]
    assert "税务局" in cli.ok("unit", "list")
    listed = cli.json("staff", "list", "--unit", "tax", "--date", "2026-11-02")
    assert listed == {"date": "2026-11-02", "staff": [{"code": "S001", "name": "张三", "unit": "tax", "active": True,
                                                       "note": "组长", "posts": [], "absent": False}]}


def test_empty_listings_say_what_to_do(cli: Any) -> None:
    assert "counterguard unit add" in cli.ok("unit", "list")
    assert "counterguard window add" in cli.ok("window", "list")
    assert "counterguard staff import" in cli.ok("staff", "list")


def test_assign_hands_a_post_over_and_window_list_shows_the_holders(centre: Any) -> None:
    assert centre.ok("assign", "S001", "--window", "A03", "--post", "A", "--from", "2026-11-01") == \
        "S001 holds post A of window A03 from 2026-11-01 until further notice.\n"
    centre.ok("assign", "S002", "--window", "A03", "--post", "B", "--from", "2026-11-01", "--to", "2026-11-30")
    out = centre.ok("assign", "S003", "--window", "A03", "--post", "A", "--from", "2026-11-16")
    assert out.splitlines() == ["S003 holds post A of window A03 from 2026-11-16 until further notice.",
                                "S001's post A of window A03 now ends on 2026-11-15."]
    centre.ok("staff", "leave", "S003", "--from", "2026-11-20", "--to", "2026-11-21", "--reason", "病假")

    on_20th = centre.json("window", "list", "--date", "2026-11-20")["windows"]
    assert [(w["code"], w["A"], w["B"]) for w in on_20th] == [
        ("A03", [{"staff": "S003", "name": "王五", "absent": True}], [{"staff": "S002", "name": "李四",
                                                                       "absent": False}]),
        ("A04", [], [])]
    table = centre.ok("window", "list", "--date", "2026-11-10")
    assert "S001 张三" in table and "S002 李四" in table and "综合受理" in table
    assert "S003 王五 (away)" in centre.ok("window", "list", "--date", "2026-11-21")

    shown = centre.json("staff", "show", "S001")
    assert [(a["window"], a["post"], a["valid_from"], a["valid_to"]) for a in shown["assignments"]] == [
        ("A03", "A", "2026-11-01", "2026-11-15")]
    text = centre.ok("staff", "show", "S003")
    assert "病假" in text and "2026-11-16" in text and "OS accounts: none." in text
    assigned = centre.json("assign", "S001", "--window", "A04", "--post", "B", "--from", "2026-12-01")
    assert (assigned["window"], assigned["post"], assigned["ended"]) == ("A04", "B", [])


def test_account_map_needs_a_staff_member_on_the_list(centre: Any) -> None:
    code, _, err = centre("account", "map", "zhangsan", "--staff", "S404")
    assert code == 1 and "no staff member 'S404'; add them first with `counterguard staff add`" in err
    assert centre.json("account", "map", "zhangsan", "--staff", "S001")["staff"] == "S001"
    assert [a["account"] for a in centre.json("staff", "show", "S001")["accounts"]] == ["zhangsan"]


def test_import_a_roster_file(centre: Any, tmp_path: Path) -> None:
    roster = tmp_path / "名册.csv"
    roster.write_text("code,name,unit,window,post,from\nS101,赵一,tax,A04,A,2026-11-01\nS102,钱二,tax,,,\n",
                      encoding="utf-8-sig")

    assert centre.ok("staff", "import", str(roster)) == f"Imported 2 staff members and 1 post from {roster}.\n"
    assert [s["code"] for s in centre.json("staff", "list")["staff"]] == ["S001", "S002", "S003", "S101", "S102"]
    roster.write_text("code,name,unit\nS103,孙三,tax\n", encoding="gb18030")
    assert centre.json("staff", "import", str(roster)) == {"staff": 1, "assignments": 0, "ended": []}


def test_a_bad_roster_names_every_bad_row_and_imports_nothing(centre: Any, engine: Engine, tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("code,name,unit,window,post,from\nS101,赵一,tax,A04,A,2026-11-01\nS102,钱二,nope,,,\n"
                      "S103,,tax,A03,B,2026-13-01\n", encoding="utf-8")

    code, out, err = centre("staff", "import", str(roster))

    assert code == 1 and out == "" and "Traceback" not in err
    assert f"{roster}: 2 rows are not valid; nothing was imported:" in err
    assert f"{roster}:3: unit: no unit 'nope'" in err
    assert f"{roster}:4: name: required" in err and f"{roster}:4: from: '2026-13-01' is not a date" in err
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(STAFF)).scalar_one() == 3


def test_bad_input_is_one_sentence_naming_what_is_wrong(centre: Any, tmp_path: Path) -> None:
    for args, message in (
        (("staff", "add", "S009", "赵六", "--unit", "police"), "no unit 'police'"),
        (("staff", "add", "S001", "张三", "--unit", "tax"), "staff member S001 already exists"),
        (("unit", "add", "tax", "税务局"), "unit tax already exists"),
        (("window", "add", "a03"), "window A03 already exists"),
        (("assign", "S001", "--window", "A03", "--post", "A", "--from", "2026-11-1"),
         "--from '2026-11-1' is not a date like 2026-11-01"),
        (("assign", "S001", "--window", "A03", "--post", "A", "--from", "2026-11-01", "--to", "tomorrow"),
         "--to 'tomorrow' is not a date"),
        (("assign", "S001", "--window", "A03", "--post", "C", "--from", "2026-11-01"), "post 'C' is not A or B"),
        (("assign", "S404", "--window", "A03", "--post", "A", "--from", "2026-11-01"), "no staff member 'S404'"),
        (("assign", "S001", "--window", "Z9", "--post", "A", "--from", "2026-11-01"), "no window 'Z9'"),
        (("staff", "leave", "S001", "--from", "2026-11-05", "--to", "2026-11-04", "-r", "年假"),
         "the absence ends (2026-11-04) before it starts (2026-11-05)"),
        (("staff", "leave", "S001", "--from", "11/05", "--to", "2026-11-04", "-r", "年假"), "--from '11/05'"),
        (("staff", "show", "S404"), "no staff member 'S404'"),
        (("window", "list", "--date", "2026-02-30"), "--date '2026-02-30' is not a date"),
        (("staff", "list", "--unit", "police"), "no unit 'police'"),
        (("staff", "import", str(tmp_path / "missing.csv")), "cannot read the file"),
    ):
        code, out, err = centre(*args)
        assert code == 1, (args, out, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    centre.ok("assign", "S001", "--window", "A03", "--post", "A", "--from", "2026-11-01", "--to", "2026-11-30")
    code, _, err = centre("assign", "S002", "--window", "A03", "--post", "A", "--from", "2026-11-10")
    assert code == 1 and "post A of window A03 is held by S001 from 2026-11-01 to 2026-11-30" in err


def test_today_is_the_default_date(centre: Any) -> None:
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    centre.ok("assign", "S001", "--window", "A03", "--post", "A", "--from", (today - dt.timedelta(days=1)).isoformat())
    listed = centre.json("window", "list")
    assert listed["date"] == today.isoformat()
    assert listed["windows"][0]["A"][0]["staff"] == "S001"
