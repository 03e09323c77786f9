"""``counterguard score …`` in this process against a real SQLite database: what a person types and reads."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from openpyxl import load_workbook

from controller.cli import output
from controller.db import make_engine
from controller.migrate import upgrade
from tests.controller.cli_run import run
from tests.controller.scoring.centre import add_centre, add_violation, apply_policy


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 250)  # wide enough that no cell wraps
    monkeypatch.setattr(output.err_console, "width", 250)


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    """Global options for a migrated SQLite database with the default policy, the small centre and two violations."""
    url = f"sqlite:///{tmp_path / 'cg.db'}"
    engine = make_engine(url)
    upgrade(engine)
    apply_policy(engine)
    add_centre(engine)
    add_violation(engine, "ag-a01", 3, accounts=("zhangsan",))
    add_violation(engine, "ag-a02", 5, accounts=("guest",))
    engine.dispose()
    return ["--data-dir", str(tmp_path / "var"), "--db", url]


def test_the_table_shows_every_person_and_the_unattributed(capsys: pytest.CaptureFixture[str], db: list[str]) -> None:
    code, out, err = run(capsys, *db, "score", "month", "2026-11")

    assert code == 0, err
    assert "月度考核" in out and "工作纪律" in out and "先进工作者" in out
    assert "张三" in out and "李四" in out and "王五" in out
    assert "Unattributed violations (1)" in out and "guest" in out


def test_xlsx_needs_a_file_and_is_written_to_it(capsys: pytest.CaptureFixture[str], db: list[str],
                                                tmp_path: Path) -> None:
    code, _, err = run(capsys, *db, "score", "month", "2026-11", "--format", "xlsx")
    assert (code, err.strip()) == (1, "error: --format xlsx writes a file: add -o FILE.xlsx")

    target = tmp_path / "nov.xlsx"
    code, out, err = run(capsys, *db, "score", "month", "2026-11", "--format", "xlsx", "-o", str(target))

    assert code == 0, err
    assert "Wrote the 2026-11 sheet (3 people)" in out
    assert load_workbook(target)["月度考核"]["A1"].value == "工号"


def test_csv_and_json_go_to_standard_output(capsys: pytest.CaptureFixture[str], db: list[str]) -> None:
    code, out, _ = run(capsys, *db, "score", "month", "2026-11", "--format", "csv", "--unit", "tax")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out.lstrip("\ufeff"))))
    assert [(r["工号"], r["总分"]) for r in rows] == [("S2", "100"), ("S1", "95")]

    code, out, _ = run(capsys, *db, "score", "month", "2026-11", "--format", "json")
    assert code == 0 and json.loads(out)["policy_id"] == "counterguard-default"


def test_month_syntax_errors_name_the_argument(capsys: pytest.CaptureFixture[str], db: list[str],
                                               tmp_path: Path) -> None:
    code, _, err = run(capsys, *db, "score", "month", "11/2026")
    assert (code, err.strip()) == (1, "error: MONTH '11/2026' is not a month of the form YYYY-MM (e.g. 2026-11)")

    code, _, err = run(capsys, *db, "score", "import", str(tmp_path / "x.csv"), "--month", "2026-1")
    assert (code, err.strip()) == (1, "error: --month '2026-1' is not a month of the form YYYY-MM (e.g. 2026-11)")


def test_explain_close_reopen_and_history(capsys: pytest.CaptureFixture[str], db: list[str]) -> None:
    code, out, err = run(capsys, *db, "score", "explain", "S1", "2026-11")
    assert code == 0, err
    assert "S1 张三" in out and "25 of 30" in out and "R11.6; R9 7(2)14" in out and "account zhangsan" in out

    code, out, _ = run(capsys, *db, "score", "close", "2026-11", "--by", "主任", "--reason", "done")
    assert (code, out.strip()) == (0, "Closed 2026-11 (3 people, policy counterguard-default 2026.2) by 主任.")
    code, _, err = run(capsys, *db, "score", "close", "2026-11", "--by", "主任")
    assert code == 1 and "was closed by 主任" in err

    code, out, _ = run(capsys, *db, "score", "reopen", "2026-11", "--reason", "late dismissal", "--by", "主任")
    assert (code, out.strip()) == (0, "Reopened 2026-11 by 主任: late dismissal.")
    code, out, _ = run(capsys, *db, "score", "history", "2026-11", "--json")
    assert [(e["action"], e["reason"]) for e in json.loads(out)] == [("close", "done"), ("reopen", "late dismissal")]

    code, _, err = run(capsys, *db, "score", "explain", "S7", "2026-11")
    assert code == 1 and err.startswith("error: S7 is not on the sheet of 2026-11")


def test_import_names_bad_rows_and_lists_entries(capsys: pytest.CaptureFixture[str], db: list[str],
                                                 tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.csv", tmp_path / "good.csv"
    bad.write_text("工号,项目,分值,依据\nS1,规范服务,-1,R9 7(1)3\nS1,规范服务,x,R9 7(1)3\n", encoding="utf-8")
    good.write_text("工号,项目,分值,依据,事由\nS1,规范服务,-1,R9 7(1)3,迟到\n", encoding="utf-8")

    code, _, err = run(capsys, *db, "score", "import", str(bad), "--month", "2026-11")
    assert code == 1 and f"{bad}:3: points: 'x' is not a number" in err and "nothing was imported" in err

    code, out, _ = run(capsys, *db, "score", "import", str(good), "--month", "2026-11", "--by", "录入员")
    assert (code, out.strip()) == (0, f"Imported 1 entry for 2026-11 from {good}.")
    code, out, _ = run(capsys, *db, "score", "entries", "2026-11", "--json")
    [stored] = json.loads(out)
    assert (stored["staff"], stored["points"], stored["entered_by"], stored["source_row"]) == ("S1", -1, "录入员", 2)
