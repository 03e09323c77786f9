"""Attribution over real rows on each back end: accounts, shared accounts, posts on duty, absences, owners."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from controller.org.attribution import Attributed, AttributionInput, OrgDirectory
from controller.org.records import ABSENCE, ASSIGNMENT, STAFF, UNIT, WINDOW
from controller.rules.records import ACCOUNT_MAPPING

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
DAY = dt.date(2026, 11, 10)
MORNING = dt.datetime(2026, 11, 10, 2, 0, tzinfo=dt.UTC)  # 10:00 in Shanghai on DAY


class Org:
    """Writes organisation rows straight into the tables (also states the service would refuse)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert(UNIT, code="tax", name="税务局")
        self._insert(WINDOW, code="A03", unit="tax")
        self._insert(WINDOW, code="A04", unit="tax")

    def _insert(self, table: Any, **values: Any) -> None:
        values.setdefault("created_by", "test")
        values.setdefault("created_at", NOW)
        with self.engine.begin() as conn:
            conn.execute(insert(table).values(**values))

    def staff(self, *codes: str, unit: str = "tax", active: bool = True) -> None:
        for code in codes:
            self._insert(STAFF, code=code, name=f"name of {code}", unit=unit, active=active, note="")

    def post(self, staff: str, window: str, post: str, start: dt.date = dt.date(2026, 1, 1),
             end: dt.date | None = None) -> None:
        self._insert(ASSIGNMENT, staff=staff, window=window, post=post, valid_from=start, valid_to=end)

    def away(self, staff: str, start: dt.date, end: dt.date) -> None:
        self._insert(ABSENCE, staff=staff, starts_on=start, ends_on=end, reason="年假")

    def account(self, account: str, staff: str, start: dt.datetime | None = None,
                end: dt.datetime | None = None) -> None:
        self._insert(ACCOUNT_MAPPING, account=account, staff=staff, windows="", valid_from=start, valid_to=end)

    def directory(self) -> OrgDirectory:
        with self.engine.connect() as conn:
            return OrgDirectory.load(conn)


@pytest.fixture
def org(engine: Engine) -> Org:
    return Org(engine)


def violation(*accounts: str, window: str = "A03", day: dt.date = DAY, owner: bool = False,
              at: dt.datetime | None = None) -> AttributionInput:
    occurred = at or dt.datetime.combine(day, dt.time(2), tzinfo=dt.UTC)
    return AttributionInput(7, window, day, occurred, tuple(accounts), owner)


# ------------------------------------------------------------------------------ accounts


def test_an_account_of_one_person_names_that_person_whatever_the_posts(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S002", "A03", "A")
    org.account("zhangsan", "S001")
    result = org.directory().attribute(violation("ZhangSan"))  # Windows account names ignore case
    assert result.people == (Attributed("S001", "user", "account ZhangSan"),)
    assert result.unattributed == ""
    assert result.user == result.people[0]


def test_a_windows_domain_account_is_found_by_its_user_name(org: Org) -> None:
    org.staff("S001", "S002")
    org.account("zhangsan", "S001")
    org.account(r"CENTRE\lisi", "S002")
    directory = org.directory()
    assert directory.attribute(violation(r"CENTRE\ZhangSan")).user == Attributed(
        "S001", "user", r"account CENTRE\ZhangSan")
    assert directory.attribute(violation(r"centre\lisi")).user.staff == "S002"  # type: ignore[union-attr]
    assert directory.attribute(violation(r"OTHER\lisi")).people == ()  # mapped with its domain: only that one


def test_a_shared_account_goes_to_the_one_of_them_on_duty(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A03", "A")
    org.post("S002", "A04", "A")
    org.account("counter3", "S001")
    org.account("counter3", "S002")
    result = org.directory().attribute(violation("counter3"))
    assert result.user == Attributed("S001", "user",
                                     "account counter3, shared with S002, who was not on duty at window A03")


def test_a_shared_account_with_the_on_duty_person_absent_goes_to_the_other_holding_a_post(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A03", "A")
    org.post("S002", "A03", "B")
    org.account("counter3", "S001")
    org.account("counter3", "S002")
    org.away("S001", DAY, DAY)
    assert org.directory().attribute(violation("counter3")).user.staff == "S002"  # type: ignore[union-attr]


def test_a_shared_account_with_both_on_duty_stays_unattributed(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A03", "A")
    org.post("S002", "A03", "B")
    org.account("counter3", "S001")
    org.account("counter3", "S002")
    result = org.directory().attribute(violation("counter3"))
    assert result.people == ()
    assert result.unattributed == ("account counter3 is used by S001 and S002; S001 and S002 were both on duty "
                                   "at window A03 on 2026-11-10")


def test_a_shared_account_with_neither_on_duty_stays_unattributed(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A04", "A")
    org.account("counter3", "S001")
    org.account("counter3", "S002")
    result = org.directory().attribute(violation("counter3"))
    assert result.people == ()
    assert result.unattributed == "account counter3 is used by S001 and S002; neither was on duty at window A03 on " \
                                  "2026-11-10"


def test_two_accounts_logged_in_go_to_the_one_holding_a_post_that_day(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A03", "A")
    org.account("zhangsan", "S001")
    org.account("lisi", "S002")
    directory = org.directory()
    assert directory.attribute(violation("zhangsan", "lisi")).user == Attributed(
        "S001", "user", "accounts zhangsan and lisi, shared with S002, who was not on duty at window A03")
    org.post("S002", "A03", "B")
    assert org.directory().attribute(violation("zhangsan", "lisi")).unattributed == (
        "accounts zhangsan and lisi are used by S001 and S002; S001 and S002 were both on duty at window A03 on "
        "2026-11-10")


def test_an_outsider_account_is_unattributed_and_the_post_on_duty_is_not_blamed(org: Org) -> None:
    org.staff("S001")
    org.post("S001", "A03", "A")
    result = org.directory().attribute(violation("guest"))
    assert result.people == ()
    assert result.unattributed == "account guest is not mapped to any staff member (an outsider, R11.3)"


def test_an_outsider_beside_a_known_account_is_unattributed(org: Org) -> None:
    org.staff("S001")
    org.post("S001", "A03", "A")
    org.account("zhangsan", "S001")
    result = org.directory().attribute(violation("zhangsan", "guest"))
    assert result.people == ()
    assert "guest" in result.unattributed


def test_an_account_mapping_counts_only_while_it_is_valid(org: Org) -> None:
    org.staff("S001", "S002")
    handover = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
    org.account("counter3", "S001", end=handover)
    org.account("counter3", "S002", start=handover)
    directory = org.directory()
    before = directory.attribute(violation("counter3", day=dt.date(2026, 11, 15)))
    after = directory.attribute(violation("counter3", day=dt.date(2026, 11, 16)))
    assert (before.user.staff, after.user.staff) == ("S001", "S002")  # type: ignore[union-attr]


def test_an_account_mapped_to_someone_not_on_the_staff_list_is_unattributed(org: Org) -> None:
    org.account("lisi", "S404")
    result = org.directory().attribute(violation("lisi"))
    assert result.people == ()
    assert result.unattributed == "account lisi maps to S404, not on the staff list"


# ------------------------------------------------------------------------------ posts on duty


def test_no_account_goes_to_the_a_post(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A03", "A")
    org.post("S002", "A03", "B")
    result = org.directory().attribute(violation())
    assert result.people == (Attributed("S001", "user", "A post on duty at window A03"),)


def test_a_post_absent_goes_to_the_b_post(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A03", "A")
    org.post("S002", "A03", "B")
    org.away("S001", dt.date(2026, 11, 9), dt.date(2026, 11, 10))
    result = org.directory().attribute(violation())
    assert result.people == (
        Attributed("S002", "user", "B post on duty at window A03 (A post holder S001 absent)"),)
    next_day = org.directory().attribute(violation(day=dt.date(2026, 11, 11)))
    assert next_day.user is not None and next_day.user.staff == "S001"


def test_a_post_absent_and_no_b_post_is_unattributed(org: Org) -> None:
    org.staff("S001")
    org.post("S001", "A03", "A")
    org.away("S001", DAY, DAY)
    result = org.directory().attribute(violation())
    assert result.people == ()
    assert result.unattributed == ("no account is known and window A03 had nobody on duty on 2026-11-10: A post "
                                   "holder S001 absent and there is no B post")


def test_both_posts_absent_is_unattributed(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A03", "A")
    org.post("S002", "A03", "B")
    org.away("S001", DAY, DAY)
    org.away("S002", DAY, DAY)
    assert org.directory().attribute(violation()).unattributed.endswith("B post holder S002 absent")


def test_only_a_b_post_is_on_duty_when_there_is_no_a_post(org: Org) -> None:
    org.staff("S002")
    org.post("S002", "A03", "B")
    assert org.directory().on_duty("A03", DAY) == ("S002", "B post on duty at window A03 (no A post holder)")


def test_nobody_on_a_window_or_no_window_is_unattributed(org: Org) -> None:
    directory = org.directory()
    assert directory.attribute(violation()).unattributed == \
        "no account is known and nobody holds a post of window A03 on 2026-11-10"
    assert directory.attribute(violation(window="")).unattributed == \
        "no account is known and the workstation is not at any window"


def test_two_a_posts_at_once_are_never_guessed_between(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A03", "A")
    org.post("S002", "A03", "A", start=dt.date(2026, 11, 1))  # the service refuses this; the table may hold it
    directory = org.directory()
    result = directory.attribute(violation(owner=True))
    assert result.people == ()
    assert result.unattributed == \
        "no account is known and S001 and S002 all hold the A post of window A03 on 2026-11-10"
    assert directory.owner("A03", DAY) is None


def test_a_mid_month_substitution_changes_who_is_on_duty(org: Org) -> None:
    org.staff("S001", "S003")
    org.post("S001", "A03", "A", end=dt.date(2026, 11, 15))
    org.post("S003", "A03", "A", start=dt.date(2026, 11, 16))
    directory = org.directory()
    on_15 = directory.attribute(violation(day=dt.date(2026, 11, 15)))
    on_16 = directory.attribute(violation(day=dt.date(2026, 11, 16)))
    assert (on_15.user.staff, on_16.user.staff) == ("S001", "S003")  # type: ignore[union-attr]


def test_window_codes_match_whatever_the_case(org: Org) -> None:
    org.staff("S001")
    org.post("S001", "A03", "A")
    assert org.directory().on_duty("a03", DAY)[0] == "S001"


# ------------------------------------------------------------------------------ owners (R12)


def test_the_owner_is_added_when_the_rule_says_so(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A03", "A")
    org.account("lisi", "S002")
    result = org.directory().attribute(violation("lisi", owner=True))
    assert result.people == (Attributed("S002", "user", "account lisi"),
                             Attributed("S001", "owner", "A post holder of window A03 (the computer's owner)"))
    assert org.directory().attribute(violation("lisi")).people == (Attributed("S002", "user", "account lisi"),)


def test_the_owner_who_is_also_the_user_is_listed_once(org: Org) -> None:
    org.staff("S001")
    org.post("S001", "A03", "A")
    org.account("zhangsan", "S001")
    assert org.directory().attribute(violation("zhangsan", owner=True)).people == (
        Attributed("S001", "user", "account zhangsan"),)


def test_the_absent_owner_still_owns_the_computer(org: Org) -> None:
    org.staff("S001", "S002")
    org.post("S001", "A03", "A")
    org.post("S002", "A03", "B")
    org.away("S001", DAY, DAY)
    result = org.directory().attribute(violation(owner=True))
    assert [(p.staff, p.role) for p in result.people] == [("S002", "user"), ("S001", "owner")]


def test_an_unattributed_violation_still_counts_against_the_owner(org: Org) -> None:
    org.staff("S001")
    org.post("S001", "A03", "A")
    result = org.directory().attribute(violation("guest", owner=True))
    assert [(p.staff, p.role) for p in result.people] == [("S001", "owner")]
    assert result.user is None and "guest" in result.unattributed


# ------------------------------------------------------------------------------ members, scale


def test_staff_in_unit_lists_active_members(org: Org) -> None:
    org._insert(UNIT, code="ss", name="社保局")
    org.staff("S002", "S001")
    org.staff("S009", active=False)
    org.staff("S100", unit="ss")
    directory = org.directory()
    assert directory.staff_in_unit("tax", DAY) == ["S001", "S002"]
    assert directory.staff_in_unit(None, DAY) == ["S001", "S002", "S100"]
    assert directory.label("S100") == "S100 name of S100"
    assert directory.window_unit("a03") == "tax"


def test_a_month_for_a_thousand_staff_is_attributed_to_someone_every_time(engine: Engine) -> None:
    """The volume of a real month (its time is the scoring benchmark's: bench/scoring.py)."""
    staff = [{"code": f"S{i:04d}", "name": f"n{i}", "unit": "tax", "active": True, "note": "", "created_by": "",
              "created_at": NOW} for i in range(1000)]
    posts = [{"staff": f"S{i:04d}", "window": f"W{i // 2:03d}", "post": "AB"[i % 2],
              "valid_from": dt.date(2026, 1, 1), "valid_to": None, "created_by": "", "created_at": NOW}
             for i in range(1000)]
    accounts = [{"account": f"user{i}", "staff": f"S{i:04d}", "windows": "", "created_by": "", "created_at": NOW}
                for i in range(1000)]
    absences = [{"staff": f"S{i:04d}", "starts_on": dt.date(2026, 11, 3), "ends_on": dt.date(2026, 11, 7),
                 "reason": "", "created_by": "", "created_at": NOW} for i in range(0, 1000, 10)]
    with engine.begin() as conn:
        for table, rows in ((STAFF, staff), (ASSIGNMENT, posts), (ACCOUNT_MAPPING, accounts), (ABSENCE, absences)):
            conn.execute(insert(table), rows)
    violations = [AttributionInput(n, f"W{n % 500:03d}", dt.date(2026, 11, 1 + n % 30), MORNING,
                                   (f"user{n % 1000}",) if n % 3 else (), bool(n % 2)) for n in range(30_000)]
    with engine.connect() as conn:
        directory = OrgDirectory.load(conn)
    result = directory.attribute_all(violations)
    assert len(result) == 30_000 and all(a.user is not None for a in result.values())
