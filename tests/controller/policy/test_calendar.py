"""Working days and working time: the national calendar (调休), overrides, seasonal timetables, zones."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from controller.policy.calendar import WorkCalendar
from controller.policy.loader import load_policy_file, load_policy_text
from policies import DEFAULT_POLICY, EXAMPLES

SHANGHAI = ZoneInfo("Asia/Shanghai")
UTC = dt.UTC


@pytest.fixture(scope="module")
def r12() -> WorkCalendar:
    return WorkCalendar(load_policy_file(DEFAULT_POLICY))


@pytest.fixture(scope="module")
def r3() -> WorkCalendar:
    return WorkCalendar(load_policy_file(EXAMPLES / "r3-summer.yaml"))


def at(day: str, time: str, zone: dt.tzinfo = SHANGHAI) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=zone)


def hours(periods: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(f"{p.start:%H:%M}", f"{p.end:%H:%M}") for p in periods]


def policy_with(extra: str, zone: str = "Asia/Shanghai") -> WorkCalendar:
    text = f"""\
id: t
version: "1"
name: t
timezone: {zone}
timetable:
  periods: [{{start: "09:00", end: "12:00"}}, {{start: "13:00", end: "17:00"}}]
rules: [{{id: r, kind: hardware_changed, ref: R11.7, title: t}}]
{extra}
"""
    return WorkCalendar(load_policy_text(text, "t.yaml"))


# ----------------------------------------------------------------------------- days


@pytest.mark.parametrize("day", [dt.date(2026, 2, 14), dt.date(2026, 2, 28)])
def test_make_up_working_saturdays_of_the_spring_festival(r12: WorkCalendar, day: dt.date) -> None:
    assert day.isoweekday() == 6
    assert r12.is_working_day(day)
    assert hours(r12.periods(day)) == [("09:00", "12:00"), ("13:00", "17:00")]


def test_national_day_is_a_holiday(r12: WorkCalendar) -> None:
    day = dt.date(2026, 10, 1)
    assert day.isoweekday() == 4
    assert not r12.is_working_day(day)
    assert r12.periods(day) == []
    assert r12.holiday_name(day) == "National Day"


def test_a_weekday_made_a_day_off_by_the_national_calendar(r12: WorkCalendar) -> None:
    assert not r12.is_working_day(dt.date(2026, 2, 20))  # Friday, off in exchange for 02-14


def test_a_plain_saturday_and_a_plain_monday(r12: WorkCalendar) -> None:
    assert not r12.is_working_day(dt.date(2026, 11, 7))
    assert r12.is_working_day(dt.date(2026, 11, 2))


def test_an_override_wins_over_the_national_calendar() -> None:
    calendar = policy_with(
        "calendar:\n  overrides:\n"
        "    - {date: 2026-10-01, kind: workday, note: 值班}\n"
        "    - {date: 2026-11-02, kind: holiday, note: 中心停电}\n"
    )

    assert calendar.is_working_day(dt.date(2026, 10, 1))
    assert not calendar.is_working_day(dt.date(2026, 11, 2))
    assert calendar.holiday_name(dt.date(2026, 11, 2)) == "中心停电"
    assert calendar.is_working_day(dt.date(2026, 11, 3))


def test_is_working_day_wants_a_date() -> None:
    with pytest.raises(TypeError):
        policy_with("").is_working_day(at("2026-11-02", "10:00"))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- seasons


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("2026-04-30", [("08:00", "12:00"), ("14:00", "18:00")]),
        ("2026-05-06", [("08:00", "12:00"), ("14:30", "18:30")]),  # 05-01 … 05-05 are Labour Day holidays
        ("2026-09-30", [("08:00", "12:00"), ("14:30", "18:30")]),
        ("2026-10-09", [("08:00", "12:00"), ("14:00", "18:00")]),
    ],
)
def test_summer_timetable_boundaries(r3: WorkCalendar, day: str, expected: list[tuple[str, str]]) -> None:
    assert hours(r3.periods(dt.date.fromisoformat(day))) == expected


def test_summer_starts_on_its_first_day_inclusive() -> None:
    text = """\
id: t
version: "1"
name: t
calendar:
  overrides: [{date: 2026-05-01, kind: workday}, {date: 2026-10-01, kind: workday}]
timetable:
  periods: [{start: "08:00", end: "12:00"}]
  seasonal: [{start: "05-01", end: "09-30", periods: [{start: "07:30", end: "11:30"}]}]
rules: [{id: r, kind: hardware_changed, ref: R11.7, title: t}]
"""
    summer = WorkCalendar(load_policy_text(text, "t.yaml"))
    assert hours(summer.periods(dt.date(2026, 4, 30))) == [("08:00", "12:00")]
    assert hours(summer.periods(dt.date(2026, 5, 1))) == [("07:30", "11:30")]
    assert hours(summer.periods(dt.date(2026, 9, 30))) == [("07:30", "11:30")]
    assert hours(summer.periods(dt.date(2026, 10, 1))) == [("08:00", "12:00")]


def test_a_season_across_the_new_year() -> None:
    text = """\
id: t
version: "1"
name: t
calendar:
  overrides: [{date: 2027-01-01, kind: workday}]
timetable:
  periods: [{start: "09:00", end: "17:00"}]
  seasonal: [{name: 冬令, start: "12-01", end: "02-28", periods: [{start: "09:30", end: "16:30"}]}]
rules: [{id: r, kind: hardware_changed, ref: R11.7, title: t}]
"""
    winter = WorkCalendar(load_policy_text(text, "t.yaml"))
    assert winter.is_working_day(dt.date(2027, 1, 1))
    assert hours(winter.periods(dt.date(2026, 11, 30))) == [("09:00", "17:00")]
    assert hours(winter.periods(dt.date(2026, 12, 1))) == [("09:30", "16:30")]
    assert hours(winter.periods(dt.date(2027, 1, 1))) == [("09:30", "16:30")]
    assert hours(winter.periods(dt.date(2027, 3, 1))) == [("09:00", "17:00")]


# ----------------------------------------------------------------------------- time


def test_working_intervals_across_lunch(r12: WorkCalendar) -> None:
    intervals = r12.working_intervals(at("2026-11-02", "11:00"), at("2026-11-02", "14:00"))

    assert intervals == [
        (at("2026-11-02", "11:00").astimezone(UTC), at("2026-11-02", "12:00").astimezone(UTC)),
        (at("2026-11-02", "13:00").astimezone(UTC), at("2026-11-02", "14:00").astimezone(UTC)),
    ]
    assert all(start.tzinfo is UTC and end.tzinfo is UTC for start, end in intervals)


def test_working_intervals_across_midnight_utc_are_shanghai_days(r12: WorkCalendar) -> None:
    # 2026-11-02 20:00 UTC … 2026-11-03 06:00 UTC is Tuesday 04:00 … 14:00 in Shanghai.
    start = dt.datetime(2026, 11, 2, 20, tzinfo=UTC)
    end = dt.datetime(2026, 11, 3, 6, tzinfo=UTC)

    assert r12.working_intervals(start, end) == [
        (dt.datetime(2026, 11, 3, 1, tzinfo=UTC), dt.datetime(2026, 11, 3, 4, tzinfo=UTC)),
        (dt.datetime(2026, 11, 3, 5, tzinfo=UTC), dt.datetime(2026, 11, 3, 6, tzinfo=UTC)),
    ]
    assert r12.local_date(start) == dt.date(2026, 11, 3)


def test_working_intervals_over_a_week_skip_the_weekend(r12: WorkCalendar) -> None:
    intervals = r12.working_intervals(at("2026-11-02", "00:00"), at("2026-11-09", "00:00"))

    assert len(intervals) == 10
    assert sum((end - start for start, end in intervals), dt.timedelta()) == dt.timedelta(hours=35)
    assert r12.working_intervals(at("2026-11-02", "10:00"), at("2026-11-02", "10:00")) == []


def test_is_working_time(r12: WorkCalendar) -> None:
    assert r12.is_working_time(at("2026-11-02", "09:00"))
    assert r12.is_working_time(at("2026-11-02", "11:59:59"))
    assert not r12.is_working_time(at("2026-11-02", "12:00"))
    assert not r12.is_working_time(at("2026-11-02", "08:59"))
    assert r12.is_working_time(dt.datetime(2026, 11, 2, 1, 30, tzinfo=UTC))  # 09:30 in Shanghai
    assert not r12.is_working_time(at("2026-10-01", "10:00"))
    assert r12.is_working_time(at("2026-02-14", "10:00"))


def test_end_of_working_day(r12: WorkCalendar, r3: WorkCalendar) -> None:
    assert r12.end_of_working_day(dt.date(2026, 11, 2)) == dt.datetime(2026, 11, 2, 9, tzinfo=UTC)
    assert r12.end_of_working_day(dt.date(2026, 11, 7)) is None
    assert r3.end_of_working_day(dt.date(2026, 7, 1)) == dt.datetime(2026, 7, 1, 10, 30, tzinfo=UTC)


def test_naive_datetimes_are_refused(r12: WorkCalendar) -> None:
    naive = dt.datetime(2026, 11, 2, 10)
    for call in (
        lambda: r12.is_working_time(naive),
        lambda: r12.local_date(naive),
        lambda: r12.working_intervals(naive, naive + dt.timedelta(hours=1)),
    ):
        with pytest.raises(ValueError, match="naive"):
            call()


def test_a_zone_with_daylight_saving_time() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    calendar = policy_with("calendar:\n  overrides: [{date: 2026-03-29, kind: workday}]\n", zone="Europe/Berlin")

    # Sunday 2026-03-29: clocks go from 02:00 to 03:00; 09:00 local is 07:00 UTC (summer time).
    (morning, afternoon) = calendar.working_intervals(
        dt.datetime(2026, 3, 29, tzinfo=berlin), dt.datetime(2026, 3, 30, tzinfo=berlin)
    )
    assert morning == (dt.datetime(2026, 3, 29, 7, tzinfo=UTC), dt.datetime(2026, 3, 29, 10, tzinfo=UTC))
    assert afternoon[1] == dt.datetime(2026, 3, 29, 15, tzinfo=UTC)
    # Friday before: winter time, 09:00 local is 08:00 UTC.
    assert calendar.working_intervals(
        dt.datetime(2026, 3, 27, 9, tzinfo=berlin), dt.datetime(2026, 3, 27, 10, tzinfo=berlin)
    ) == [(dt.datetime(2026, 3, 27, 8, tzinfo=UTC), dt.datetime(2026, 3, 27, 9, tzinfo=UTC))]


def test_the_holidays_of_a_year_are_built_once(r12: WorkCalendar) -> None:
    r12.is_working_day(dt.date(2026, 1, 5))
    first = r12._national(2026)
    for day in range(1, 29):
        r12.is_working_day(dt.date(2026, 2, day))
    assert r12._national(2026) is first
