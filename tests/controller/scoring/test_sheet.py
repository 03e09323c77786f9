"""The monthly sheet as a pure computation: sections, floors, bonus, ranking, what counts, the money scheme."""

from __future__ import annotations

import datetime as dt
import json
import itertools
from typing import Any

from controller.org.attribution import Attributed, Attribution
from controller.policy.loader import load_policy_file
from controller.policy.model import Scoring
from controller.scoring.model import ManualEntry, Sheet, SheetViolation, StaffInfo, UnitInfo
from controller.scoring.sheet import compute_sheet
from policies import DEFAULT_POLICY

DEFAULT = load_policy_file(DEFAULT_POLICY).scoring
MONEY = load_policy_file("policies/examples/r12-money.yaml").scoring
NOW = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)
UNITS = {"tax": UnitInfo("tax", "税务局", "市税务局"), "police": UnitInfo("police", "公安局", "")}
_ids = itertools.count(1)


def staff(*codes: str, unit: str = "tax") -> list[StaffInfo]:
    return [StaffInfo(code, f"name-{code}", unit) for code in codes]


def violation(rule: str = "games", points: float = 5, section: str | None = "工作纪律", *, day: int = 3,
              status: str = "open", informational: bool = False, money: float = 0, window: str = "A01",
              unit: str = "tax") -> SheetViolation:
    return SheetViolation(id=next(_ids), rule_id=rule, ref=f"ref-{rule}", title=f"title {rule}",
                          local_date=dt.date(2026, 11, day), status=status, informational=informational,
                          points=points, money=money, section=section, window=window, unit=unit)


def user(v: SheetViolation, code: str, owner: str | None = None) -> Attribution:
    people = [Attributed(code, "user", f"account of {code}")]
    if owner:
        people.append(Attributed(owner, "owner", "A post of A01"))
    return Attribution(v.id, tuple(people))


def entry(code: str, section: str, points: float = 0, **extra: Any) -> ManualEntry:
    values: dict[str, Any] = {"ref": "R9 7(1)1", "reason": "by hand", "entered_by": "centre", "entered_at": NOW,
                              "source_file": "m.csv", "source_row": 2}
    values.update(extra)
    return ManualEntry(id=next(_ids), month="2026-11", staff=code, section=section, points=points, **values)


def sheet(scoring: Scoring = DEFAULT, people: list[StaffInfo] | None = None,
          charged: list[tuple[SheetViolation, Attribution]] = (),  # type: ignore[assignment]
          entries: list[ManualEntry] = ()) -> Sheet:  # type: ignore[assignment]
    return compute_sheet(scoring, "2026-11", policy_id="p", policy_version="1",
                         staff=people if people is not None else staff("S1", "S2", "S3", "S4", "S5"),
                         units=UNITS, violations=[v for v, _ in charged],
                         attributions={v.id: a for v, a in charged}, entries=list(entries), computed_at=NOW)


def sections(s: Sheet, code: str) -> dict[str, float]:
    person = s.person(code)
    assert person is not None
    return {x.name: x.value for x in person.sections}


def test_a_clean_month_is_the_base_in_four_sections() -> None:
    result = sheet()

    assert sections(result, "S1") == {"规范服务": 30, "工作纪律": 30, "工作业绩": 30, "窗口互评": 10}
    assert [p.total for p in result.people] == [100] * 5
    assert {p.rank for p in result.people} == {1} and all(p.tied and p.advanced for p in result.people)


def test_deductions_land_in_their_sections_with_the_violation_ids_and_reference() -> None:
    first, second = violation(day=3), violation(day=3)
    third = violation("damage", 5, "规范服务", day=9)

    result = sheet(charged=[(first, user(first, "S1")), (second, user(second, "S1")), (third, user(third, "S1"))])

    assert sections(result, "S1") == {"规范服务": 25, "工作纪律": 20, "工作业绩": 30, "窗口互评": 10}
    person = result.person("S1")
    assert person is not None and person.total == 85
    games = next(line for line in person.lines if line.rule_id == "games")
    assert (games.violation_ids, games.points, games.count, games.ref, games.date, games.role, games.how) == (
        [first.id, second.id], -10, 2, "ref-games", dt.date(2026, 11, 3), "user", "account of S1")


def test_a_section_without_floor_goes_below_zero_and_one_with_floor_zero_stops_there() -> None:
    charged = [(v, user(v, "S1")) for v in (violation(points=5) for _ in range(8))]  # 工作纪律 −40: no floor
    performance = entry("S1", "工作业绩", -20), entry("S1", "工作业绩", -15)         # 工作业绩 −35: floor zero

    result = sheet(charged=charged, entries=list(performance))

    person = result.person("S1")
    assert person is not None
    discipline, work = person.section("工作纪律"), person.section("工作业绩")
    assert discipline is not None and (discipline.raw, discipline.value, discipline.floored) == (-10, -10, False)
    assert work is not None and (work.raw, work.value, work.floored) == (-5, 0, True)
    assert person.total == 30 + (-10) + 0 + 10


def test_bonus_points_add_to_the_total_outside_the_sections() -> None:
    result = sheet(entries=[entry("S2", "附加分", 3, reason="拾金不昧"), entry("S2", "规范服务", -1)])

    person = result.person("S2")
    assert person is not None
    assert (person.bonus, person.total, sections(result, "S2")["规范服务"]) == (3, 102, 29)
    assert result.people[0].staff == "S2" and result.people[0].rank == 1 and not result.people[0].tied


def test_ties_share_a_rank_and_the_next_rank_is_skipped() -> None:
    entries = [entry("S1", "规范服务", -1), entry("S2", "规范服务", -1), entry("S3", "规范服务", -4)]

    result = sheet(entries=entries)

    ranks = {p.staff: (p.total, p.rank, p.tied) for p in result.people}
    assert ranks == {"S4": (100, 1, True), "S5": (100, 1, True), "S1": (99, 3, True), "S2": (99, 3, True),
                     "S3": (96, 5, False)}


def test_everyone_tied_at_the_top_n_boundary_is_marked_and_the_sheet_says_so() -> None:
    entries = [entry("S1", "附加分", 5), entry("S3", "规范服务", -2), entry("S4", "规范服务", -2),
               entry("S5", "规范服务", -3)]

    result = sheet(entries=entries)

    marked = {p.staff: p.rank for p in result.people if p.advanced}
    assert marked == {"S1": 1, "S2": 2, "S3": 3, "S4": 3}
    assert result.person("S5").advanced is False  # type: ignore[union-attr]
    assert result.notes == ["2 people share rank 3 (98 points): all of them are 先进工作者, 4 for 3 places"]


def test_only_counted_statuses_count_never_dismissed_nor_withdrawn() -> None:
    kept = [violation(status="open"), violation(status="confirmed")]
    ignored = [violation(status="dismissed"), violation(status="withdrawn")]
    only_confirmed = DEFAULT.model_copy(update={"counted_statuses": ["confirmed"]})
    charged = [(v, user(v, "S1")) for v in kept + ignored]

    default, strict = sheet(charged=charged), sheet(only_confirmed, charged=charged)

    assert sections(default, "S1")["工作纪律"] == 20
    assert sections(strict, "S1")["工作纪律"] == 25
    ids = [i for line in default.person("S1").lines for i in line.violation_ids]  # type: ignore[union-attr]
    assert sorted(ids) == sorted(v.id for v in kept)


def test_informational_rules_never_count() -> None:
    network = violation("network-changed", points=5, informational=True)

    result = sheet(charged=[(network, user(network, "S1"))])

    assert sections(result, "S1")["工作纪律"] == 30 and result.person("S1").lines == []  # type: ignore[union-attr]


def test_unattributed_violations_are_listed_and_charged_to_nobody() -> None:
    shared = violation(window="B02")
    outsider = violation("session-account", 0, None, window="B03", unit="police")
    attributions = [
        (shared, Attribution(shared.id, (), "account clerk is shared by S1 and S2; both were on duty at window B02")),
        (outsider, Attribution(outsider.id, (Attributed("S3", "owner", "A post of B03"),), "account guest maps to nobody")),
    ]

    result = sheet(charged=attributions)

    assert all(p.total == 100 and not p.lines for p in result.people)
    assert [(u.violation_id, u.window, u.reason) for u in result.unattributed] == [
        (shared.id, "B02", "account clerk is shared by S1 and S2; both were on duty at window B02"),
        (outsider.id, "B03", "account guest maps to nobody")]
    assert [u.violation_id for u in result.for_unit("police").unattributed] == [outsider.id]


def test_a_violation_of_a_stranger_is_unattributed_not_dropped() -> None:
    v = violation()

    result = sheet(charged=[(v, user(v, "S99"))])

    assert [u.reason for u in result.unattributed] == ["attributed to S99, who is not in the staff table"]


def test_owner_loses_points_too_when_the_rule_says_so() -> None:
    v = violation("shopping", 2, "工作纪律")

    result = sheet(charged=[(v, user(v, "S2", owner="S1"))])

    assert sections(result, "S1")["工作纪律"] == 28 and sections(result, "S2")["工作纪律"] == 28
    owner_line = result.person("S1").lines[0]  # type: ignore[union-attr]
    assert (owner_line.role, owner_line.how, owner_line.violation_ids) == ("owner", "A post of A01", [v.id])


def test_peer_review_votes_set_the_section_by_the_90_and_70_percent_thresholds() -> None:
    votes = [entry("S1", "窗口互评", votes_for=18, votes_total=20), entry("S2", "窗口互评", votes_for=17, votes_total=20),
             entry("S3", "窗口互评", votes_for=13, votes_total=20), entry("S4", "窗口互评", votes_for=7, votes_total=10)]

    result = sheet(entries=votes)

    assert {code: sections(result, code)["窗口互评"] for code in ("S1", "S2", "S3", "S4", "S5")} == {
        "S1": 10, "S2": 5, "S3": 0, "S4": 5, "S5": 10}
    line = result.person("S2").lines[0]  # type: ignore[union-attr]
    assert (line.kind, line.points, line.title) == ("peer_review", -5, "votes 17/20 (85%): 一般 5")
    assert result.person("S5").notes == ["no peer-review votes entered: 窗口互评 stays at 10"]  # type: ignore[union-attr]


def test_repeated_violations_of_one_rule_are_flagged_and_manual_flags_shown() -> None:
    three = [violation(day=d) for d in (3, 4, 5)]
    two = [violation("damage", 5, "规范服务", day=d) for d in (3, 4)]
    charged = [(v, user(v, "S1")) for v in three + two]

    result = sheet(charged=charged, entries=[entry("S2", "", 0, flag="服务对象不满意3次", ref="R9 8(3)")])

    assert result.person("S1").flags == ["R9 article 8: 3 violations of games (ref-games) this month"]  # type: ignore[union-attr]
    assert result.person("S2").flags == ["服务对象不满意3次 (R9 8(3))"]  # type: ignore[union-attr]


def test_money_scheme_charges_user_and_owner_and_escalates_after_more_than_three() -> None:
    incidents = [violation("shopping", 0, None, money=50, day=d) for d in (2, 3, 4, 5)]
    charged = [(v, user(v, "S2", owner="S1")) for v in incidents[:3]] + [(incidents[3], user(incidents[3], "S1"))]
    people = staff("S1", "S2") + staff("P1", unit="police")

    result = sheet(MONEY, people, charged, entries=[entry("P1", "", -20, ref="R12 3(1)", unit="yuan")])

    money = {p.staff: p.money for p in result.people}
    assert money == {"S1": 200, "S2": 150, "P1": 20}
    s1 = result.person("S1")
    assert s1 is not None and [(e.rule_id, e.count, e.as_user, e.as_owner, e.department) for e in s1.escalations] == [
        ("shopping", 4, 1, 3, "市税务局")]
    assert result.person("S2").escalations == []  # type: ignore[union-attr]  # 3 is not more than 3
    assert all(p.rank is None and not p.advanced for p in result.people)


def test_entries_of_the_other_scheme_are_left_out_and_said_so() -> None:
    points_entry, yuan_entry = entry("S1", "规范服务", -2), entry("S1", "", -30, unit="yuan")

    as_points, as_money = (sheet(scoring, staff("S1"), entries=[points_entry, yuan_entry]) for scoring in (DEFAULT, MONEY))

    assert as_points.person("S1").total == 98  # type: ignore[union-attr]
    assert as_points.person("S1").notes[0] == f"manual entries {yuan_entry.id} are in yuan, not counted under the points scheme"  # type: ignore[union-attr]
    assert as_money.person("S1").money == 30  # type: ignore[union-attr]
    assert as_money.person("S1").notes == [f"manual entries {points_entry.id} are in points, not counted under the money scheme"]  # type: ignore[union-attr]


def test_escalation_names_a_missing_home_department() -> None:
    incidents = [violation("shopping", 0, None, money=50, day=d, unit="police") for d in (2, 3, 4, 5)]

    result = sheet(MONEY, staff("P1", unit="police"), [(v, user(v, "P1")) for v in incidents])

    assert result.person("P1").escalations[0].department == "(unit police has no home department recorded)"  # type: ignore[union-attr]


def test_inactive_staff_appear_only_when_charged() -> None:
    people = [*staff("S1"), StaffInfo("S8", "left", "tax", active=False), StaffInfo("S9", "left", "tax", active=False)]
    v = violation()

    result = sheet(people=people, charged=[(v, user(v, "S9"))])

    assert [p.staff for p in result.people] == ["S1", "S9"]


def test_the_sheet_round_trips_through_json_unchanged() -> None:
    v = violation()
    result = sheet(charged=[(v, user(v, "S1", owner="S2"))], entries=[entry("S3", "窗口互评", votes_for=1, votes_total=2)])

    assert Sheet.from_json(json.loads(json.dumps(result.to_json()))) == result
