"""Working time of a policy: which days are working days and which hours of them are working time.

A day is a working day when the policy's overrides say so; otherwise when it is a make-up working
day of the national calendar (调休, e.g. the Saturday before the Spring Festival), or a weekday of
the timetable that is not a statutory holiday. The national calendar comes from the ``holidays``
library (one object per year, cached); a seasonal timetable replaces the normal periods between
two MM-DD dates (inclusive, possibly across the new year).

Local times are the policy's time zone; every datetime in and out is timezone-aware, and
conversions go through :mod:`zoneinfo`, so a zone with daylight saving time is handled per day.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import holidays

from controller.policy.model import DayKind, Period, Policy


def _aware(moment: dt.datetime, name: str = "moment") -> dt.datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} {moment!r} is naive; working time needs a timezone-aware datetime")
    return moment


def _in_season(month_day: str, start: str, end: str) -> bool:
    """Whether MM-DD ``month_day`` lies in [start, end], a range that may wrap the new year."""
    if start <= end:
        return start <= month_day <= end
    return month_day >= start or month_day <= end


class WorkCalendar:
    """Working days, periods and intervals of one policy (its timetable, calendar and time zone)."""

    def __init__(self, policy: Policy) -> None:
        self.zone = policy.zone
        self._timetable = policy.timetable
        self._weekdays = frozenset(day.iso for day in policy.timetable.weekdays)
        self._overrides = {override.date: override.kind for override in policy.calendar.overrides}
        self._notes = {override.date: override.note for override in policy.calendar.overrides}
        self._country = policy.calendar.country
        self._subdivision = policy.calendar.subdivision
        self._years: dict[int, Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ days

    def _national(self, year: int) -> Any:
        """The national calendar of ``year`` (built once per year)."""
        calendar = self._years.get(year)
        if calendar is None:
            with self._lock:
                calendar = self._years.get(year)
                if calendar is None:
                    calendar = holidays.country_holidays(self._country, subdiv=self._subdivision, years=year)
                    self._years[year] = calendar
        return calendar

    def is_working_day(self, day: dt.date) -> bool:
        """Whether ``day`` (a local date) is a working day of this centre."""
        if isinstance(day, dt.datetime):
            raise TypeError("is_working_day takes a date; use local_date(moment) for a datetime")
        override = self._overrides.get(day)
        if override is not None:
            return override is DayKind.WORKDAY
        national = self._national(day.year)
        if day in national:
            return False
        if day in getattr(national, "weekend_workdays", ()):
            return True
        return day.isoweekday() in self._weekdays

    def holiday_name(self, day: dt.date) -> str | None:
        """The statutory holiday (or override note) that makes ``day`` a day off, if any."""
        override = self._overrides.get(day)
        if override is not None:
            return (self._notes.get(day) or "holiday (policy override)") if override is DayKind.HOLIDAY else None
        name = self._national(day.year).get(day)
        return str(name) if name else None

    def periods(self, day: dt.date) -> list[Period]:
        """The working periods of ``day`` in local time, in order; ``[]`` when it is no working day."""
        if not self.is_working_day(day):
            return []
        month_day = f"{day.month:02d}-{day.day:02d}"
        for season in self._timetable.seasonal:
            if _in_season(month_day, season.start, season.end):
                return list(season.periods)
        return list(self._timetable.periods)

    # ------------------------------------------------------------------ moments

    def local_date(self, moment: dt.datetime) -> dt.date:
        """The date in the policy's time zone at ``moment``."""
        return _aware(moment).astimezone(self.zone).date()

    def _utc(self, day: dt.date, time: dt.time) -> dt.datetime:
        return dt.datetime.combine(day, time, tzinfo=self.zone).astimezone(dt.UTC)

    def _day_intervals(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        intervals = []
        for period in self.periods(day):
            start, end = self._utc(day, period.start), self._utc(day, period.end)
            if start < end:  # a period swallowed by a daylight-saving jump has no length
                intervals.append((start, end))
        return intervals

    def working_intervals(self, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
        """The working time within [start, end): UTC intervals, clipped to the range, in order."""
        start, end = _aware(start, "start").astimezone(dt.UTC), _aware(end, "end").astimezone(dt.UTC)
        if end <= start:
            return []
        result: list[tuple[dt.datetime, dt.datetime]] = []
        day, last = self.local_date(start), self.local_date(end)
        while day <= last:
            for period_start, period_end in self._day_intervals(day):
                lower, upper = max(period_start, start), min(period_end, end)
                if lower < upper:
                    result.append((lower, upper))
            day += dt.timedelta(days=1)
        return result

    def is_working_time(self, moment: dt.datetime) -> bool:
        """Whether ``moment`` falls within a working period of a working day."""
        local = _aware(moment).astimezone(self.zone)
        moment_utc = moment.astimezone(dt.UTC)
        return any(start <= moment_utc < end for start, end in self._day_intervals(local.date()))

    def end_of_working_day(self, day: dt.date) -> dt.datetime | None:
        """When the last period of local ``day`` ends (UTC); ``None`` when it is no working day."""
        intervals = self._day_intervals(day)
        return intervals[-1][1] if intervals else None

    def start_of_working_day(self, day: dt.date) -> dt.datetime | None:
        """When the first period of local ``day`` starts (UTC); ``None`` when it is no working day."""
        intervals = self._day_intervals(day)
        return intervals[0][0] if intervals else None
