"""The score service on each back end: a month from the database, closing and reopening, manual entries."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from controller.errors import Conflict, InvalidInput, NotFound
from controller.rules.records import ACCOUNT_MAPPING
from controller.rules.violations import ViolationService
from controller.scoring.service import ScoreService
from tests.conftest import FakeClock
from tests.controller.scoring.centre import MONEY_POLICY, add_absence, add_centre, add_violation, apply_policy

MONTH = "2026-11"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC))


@pytest.fixture
def service(engine: Engine, clock: FakeClock) -> ScoreService:
    add_centre(engine)
    return ScoreService(engine, apply_policy(engine), clock)


def total(service: ScoreService, staff: str, month: str = MONTH) -> float:
    person = service.month(month).person(staff)
    assert person is not None
    return person.total


def test_a_month_is_computed_from_the_stored_violations_and_the_organisation(
        engine: Engine, service: ScoreService) -> None:
    game = add_violation(engine, "ag-a01", 3, accounts=("zhangsan",))                    # S1 by account
    after_hours = add_violation(engine, "ag-a01", 4, rule="powered-on-after-hours", ref="R11.4; R9 7(2)13",
                                points=1)                                               # no account: A post S1
    add_absence(engine, "S1", dt.date(2026, 11, 9), dt.date(2026, 11, 13))
    covered = add_violation(engine, "ag-a01", 10, rule="powered-on-after-hours", points=1)  # S1 away: B post S2
    outsider = add_violation(engine, "ag-a02", 5, accounts=("guest",))                    # maps to nobody
    add_violation(engine, "ag-a01", 6, accounts=("zhangsan",), status="dismissed")
    add_violation(engine, "ag-a01", 7, informational=True, accounts=("zhangsan",))
    add_violation(engine, "ag-a01", 3, month=10, accounts=("zhangsan",))                  # October

    sheet = service.month(MONTH)

    s1, s2, s3 = (sheet.person(code) for code in ("S1", "S2", "S3"))
    assert s1 is not None and s2 is not None and s3 is not None
    assert (s1.section("工作纪律").value, s1.total, s2.total, s3.total) == (24, 94, 99, 100)  # type: ignore[union-attr]
    assert [(line.violation_ids, line.role, line.how) for line in s1.lines] == [
        ([game], "user", "account zhangsan"), ([after_hours], "user", "A post on duty at window A01")]
    assert [line.violation_ids for line in s2.lines] == [[covered]] and "S1 absent" in s2.lines[0].how
    assert [(u.violation_id, u.unit) for u in sheet.unattributed] == [(outsider, "police")]
    assert "guest" in sheet.unattributed[0].reason
    assert [p.staff for p in sheet.people] == ["S3", "S2", "S1"]  # S9 is inactive with nothing charged
    assert (sheet.policy_id, sheet.policy_version) == ("counterguard-default", "2026.2")


def test_one_units_rows_keep_the_centres_ranks(engine: Engine, service: ScoreService) -> None:
    add_violation(engine, "ag-a02", 5, accounts=("guest",))
    add_violation(engine, "ag-a01", 3, accounts=("zhangsan",))

    sheet = service.month(MONTH, unit="tax")

    assert [(p.staff, p.rank, p.tied) for p in sheet.people] == [("S2", 1, True), ("S1", 3, False)] and sheet.unattributed == []
    with pytest.raises(NotFound, match="no unit 'nope'"):
        service.month(MONTH, unit="nope")


def test_a_closed_month_stays_as_it_was_after_a_late_dismissal_until_it_is_reopened(
        engine: Engine, service: ScoreService, clock: FakeClock) -> None:
    game = add_violation(engine, "ag-a01", 3, accounts=("zhangsan",))
    closed = service.close(MONTH, "主任", "November done")
    ViolationService(engine, clock).dismiss(game, "it was a training video", "supervisor")

    frozen = service.month(MONTH)

    assert frozen == closed and total(service, "S1") == 95
    assert (frozen.closed_by, frozen.closed_at) == ("主任", clock())
    with pytest.raises(Conflict, match="month 2026-11 was closed by 主任"):
        service.close(MONTH, "someone")

    clock.advance(days=2)
    service.reopen(MONTH, "主任", "violation dismissed after the close")

    assert total(service, "S1") == 100 and service.month(MONTH).closed_at is None
    assert [(e.action, e.by, e.reason, e.at) for e in service.history(MONTH)] == [
        ("close", "主任", "November done", clock() - dt.timedelta(days=2)),
        ("reopen", "主任", "violation dismissed after the close", clock())]
    assert service.history(MONTH)[0].policy_version == "2026.2" and len(service.history(MONTH)[0].sheet_sha256) == 64


def test_reopening_needs_a_closed_month_and_a_reason(service: ScoreService) -> None:
    with pytest.raises(Conflict, match="month 2026-11 is not closed"):
        service.reopen(MONTH, "主任", "why")
    service.close(MONTH, "主任")
    with pytest.raises(InvalidInput, match="a reason is required"):
        service.reopen(MONTH, "主任", "  ")


def test_a_month_that_is_not_a_month_is_refused(service: ScoreService) -> None:
    with pytest.raises(InvalidInput, match="month '2026-13' is not a month of the form YYYY-MM"):
        service.month("2026-13")


# ------------------------------------------------------------------------------ manual entries


GOOD = """staff,name,section,points,votes,flag,ref,reason
S1,张三,规范服务,-2,,,R9 7(1)3,着装不规范
S2,,附加分,3,,,R9 6,拾金不昧
S3,,窗口互评,,17/20,,R9 7(4),窗口互评
S2,,,,,服务对象不满意3次,R9 8(3),
"""


def test_a_good_file_is_imported_with_its_rows_and_counts_on_the_sheet(
        tmp_path: Path, service: ScoreService) -> None:
    path = tmp_path / "november.csv"
    path.write_text(GOOD, encoding="utf-8")

    result = service.import_entries(path, MONTH, "录入员")

    assert [(e.staff, e.section, e.points, e.source_row, e.entered_by) for e in result.entries] == [
        ("S1", "规范服务", -2, 2, "录入员"), ("S2", "附加分", 3, 3, "录入员"), ("S3", "窗口互评", 0, 4, "录入员"),
        ("S2", "", 0, 5, "录入员")]
    sheet = service.month(MONTH)
    assert {p.staff: p.total for p in sheet.people} == {"S1": 98, "S2": 103, "S3": 95}
    assert sheet.person("S2").flags == ["服务对象不满意3次 (R9 8(3))"]  # type: ignore[union-attr]
    assert service.entries(MONTH) == result.entries


def test_a_file_with_a_bom_or_in_gb18030_reads_the_same(tmp_path: Path, service: ScoreService) -> None:
    bom, gbk = tmp_path / "bom.csv", tmp_path / "gbk.csv"
    bom.write_bytes("\ufeff工号,项目,分值,依据,事由\r\nS1,规范服务,-1,R9 7(1)3,迟到\r\n".encode())
    gbk.write_bytes("工号,项目,分值,依据,事由\r\nS2,规范服务,-1,R9 7(1)3,早退\r\n".encode("gb18030"))

    first, second = service.import_entries(bom, MONTH, "t"), service.import_entries(gbk, MONTH, "t")

    assert [(e.staff, e.section, e.reason) for e in first.entries + second.entries] == [
        ("S1", "规范服务", "迟到"), ("S2", "规范服务", "早退")]


def test_bad_rows_are_all_named_and_nothing_is_imported(tmp_path: Path, service: ScoreService) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("staff,section,points,votes,ref\n"
                    "S1,规范服务,-2,,R9 7(1)3\n"        # good
                    "S7,规范服务,-2,,R9 7(1)3\n"        # unknown staff
                    "S1,卫生,-2,,R9 7(1)3\n"            # unknown section
                    "S1,规范服务,abc,,R9 7(1)3\n"       # not a number
                    "S1,规范服务,2,,R9 7(1)3\n"         # a section only loses points
                    "S1,窗口互评,,21/20,R9 7(4)\n"      # more favourable votes than votes
                    "S1,规范服务,-1,,\n", encoding="utf-8")  # no reference

    with pytest.raises(InvalidInput) as error:
        service.import_entries(path, MONTH, "t")

    assert str(error.value).splitlines() == [
        f"{path} has 6 bad rows; nothing was imported:",
        f"{path}:3: staff: S7 is not in the staff table",
        f"{path}:4: section: '卫生' is not one of 规范服务, 工作纪律, 工作业绩, 窗口互评, 附加分",
        f"{path}:5: points: 'abc' is not a number",
        f"{path}:6: points: a section only loses points; bonus points go to 附加分",
        f"{path}:7: votes: '21/20': the total must be positive and at least the favourable votes",
        f"{path}:8: ref: empty: say which regulation the entry applies (e.g. R9 7(1)3)"]
    assert service.entries(MONTH) == []


def test_an_unknown_column_and_a_file_imported_twice_are_refused(tmp_path: Path, service: ScoreService) -> None:
    odd, good = tmp_path / "odd.csv", tmp_path / "good.csv"
    odd.write_text("staff,score,ref\nS1,-1,R9\n", encoding="utf-8")
    good.write_text(GOOD, encoding="utf-8")

    with pytest.raises(InvalidInput, match=r"odd.csv:1: column 'score' is not one of staff, name"):
        service.import_entries(odd, MONTH, "t")
    service.import_entries(good, MONTH, "t")
    with pytest.raises(Conflict, match="good.csv was already imported for 2026-11 by t"):
        service.import_entries(good, MONTH, "t")
    assert len(service.entries(MONTH)) == 4


def test_entries_are_refused_for_a_closed_month(tmp_path: Path, service: ScoreService) -> None:
    path = tmp_path / "late.csv"
    path.write_text(GOOD, encoding="utf-8")
    service.close(MONTH, "主任")

    with pytest.raises(Conflict, match="reopen it before you import entries into it"):
        service.import_entries(path, MONTH, "t")
    assert service.entries(MONTH) == []


def test_the_money_scheme_from_the_database_charges_owner_and_escalates(
        engine: Engine, clock: FakeClock) -> None:
    add_centre(engine)
    service = ScoreService(engine, apply_policy(engine, MONEY_POLICY), clock)
    for day in (2, 3, 4, 5):  # S2 at S1's computer: S2 as user, S1 as the computer's owner
        add_violation(engine, "ag-a01", day, rule="shopping-chat-games-video", ref="R12 3(4)2", points=0,
                      section=None, money=50, owner=True, accounts=("lisi",))
    with engine.begin() as conn:
        conn.execute(insert(ACCOUNT_MAPPING).values(account="lisi", staff="S2", windows="", created_by="t",
                                                    created_at=clock()))

    sheet = service.month(MONTH)

    assert {p.staff: p.money for p in sheet.people} == {"S1": 200, "S2": 200, "S3": 0}
    s2 = sheet.person("S2")
    assert s2 is not None and [(e.count, e.as_user, e.department) for e in s2.escalations] == [(4, 4, "市税务局")]
    assert [(e.count, e.as_owner) for e in sheet.person("S1").escalations] == [(4, 4)]  # type: ignore[union-attr]
