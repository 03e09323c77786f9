"""What every rule kind shares: the violation candidate, the decisions it reads, the facts it sees.

:class:`Env` is one agent's evaluation input (policy, calendar, catalogue matcher, corrected facts,
decisions, range) with the derived views the rule kinds need (power intervals, program runs,
activity spans, working time), each computed once. A rule kind is a function
``(rule, env) -> list[ViolationCandidate]`` (see :mod:`controller.rules.evaluate`).

Keys: a violation's key is the SHA-256 of (rule id, agent id, subject key, period key), where the
subject and period keys are built from what the agent reported verbatim (a pid and the start time
it reported, a package name, a local date), never from corrected times, so the same facts give the
same keys whatever else was loaded with them.

Conditions: a rule's ``conditions`` are tested against a plain dict of the fact behind a candidate
(``process.username``, ``software.source`` …) by dotted path; comparisons are literal and
case-insensitive, like the catalogue's; a missing field is the empty string. Nothing is executed.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from statistics import median
from typing import Any, Protocol

from controller.policy.model import Penalty, Policy, Rule, When
from controller.rules.intervals import (
    ActivitySpan,
    FactId,
    Interval,
    PowerInterval,
    ProgramRun,
    TimedFact,
    activity_spans,
    as_intervals,
    merge,
    power_intervals,
    program_runs,
    pulse_window,
    raw_time,
    subtract,
)

MAX_EVIDENCE = 50
MIN_HEARTBEAT = dt.timedelta(seconds=5)
MAX_HEARTBEAT = dt.timedelta(hours=1)


# ------------------------------------------------------------------------------ collaborators


class WorkingTime(Protocol):
    """What the rules need of :class:`controller.policy.calendar.WorkCalendar`."""

    def working_intervals(self, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]: ...

    def end_of_working_day(self, day: dt.date) -> dt.datetime | None: ...

    def is_working_day(self, day: dt.date) -> bool: ...

    def is_working_time(self, moment: dt.datetime) -> bool: ...

    def local_date(self, moment: dt.datetime) -> dt.date: ...


class Matcher(Protocol):
    """What the rules need of :class:`controller.policy.catalogue.CatalogueMatcher`."""

    def match_process(self, name: str, executable: str = "") -> Any: ...

    def match_title(self, title: str) -> Any: ...

    def match_software(self, source: int | str = 0, name: str = "", display_name: str = "", publisher: str = "",
                       section: str = "", categories: Iterable[str] = (), executable: str = "") -> Any: ...


# ------------------------------------------------------------------------------ decisions (plain data)


@dataclass(frozen=True)
class Approval:
    """A software decision that applies to this workstation (its unit, its window, or everyone)."""

    name: str
    source: str = ""  # "" = any source; else a source label such as dpkg, desktop-entry
    scope: str = "all"  # all, unit, window: the most specific decision wins
    decision: str = "approved"  # approved | denied
    decided_at: dt.datetime | None = None


@dataclass(frozen=True)
class TimeSpan:
    """An exemption or a maintenance record: a span of time with a reason."""

    starts_at: dt.datetime
    ends_at: dt.datetime
    reason: str = ""
    record_id: int | None = None


@dataclass(frozen=True)
class Device:
    """A registered removable device; an empty serial stands for every device of the model."""

    vendor_id: str
    product_id: str
    serial: str = ""
    description: str = ""


@dataclass(frozen=True)
class Account:
    """An OS account mapped to a staff member, the windows they may use (empty: any) and when."""

    account: str
    staff: str
    windows: tuple[str, ...] = ()
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None


@dataclass(frozen=True)
class RuleContext:
    """Everything besides facts that a workstation's violations depend on, already scoped to it."""

    window: str = ""
    unit: str | None = None
    approvals: tuple[Approval, ...] = ()
    exemptions: tuple[TimeSpan, ...] = ()
    devices: tuple[Device, ...] = ()
    accounts: tuple[Account, ...] = ()
    maintenance: tuple[TimeSpan, ...] = ()
    last_seen_at: dt.datetime | None = None  # our last contact with the agent (an empty report counts)

    @cached_property
    def approvals_by_name(self) -> Mapping[str, tuple[Approval, ...]]:
        """``approvals`` by case-folded name: an inventory's hundreds of items each look theirs up."""
        index: dict[str, list[Approval]] = {}
        for approval in self.approvals:
            index.setdefault(approval.name.casefold(), []).append(approval)
        return {name: tuple(found) for name, found in index.items()}


# ------------------------------------------------------------------------------ the result


@dataclass(frozen=True)
class ViolationCandidate:
    """A violation as evaluation finds it, before it is stored (the store keeps status and history)."""

    key: str
    rule_id: str
    ref: str
    title: str
    kind: str
    category: str
    agent_id: str
    subject: str
    period_start: dt.datetime
    period_end: dt.datetime | None
    occurred_at: dt.datetime
    local_date: dt.date
    evidence_fact_ids: tuple[FactId, ...]
    evidence_summary: str
    informational: bool
    attribute_to_owner: bool
    penalty: Penalty
    # The OS accounts its evidence names, else those logged in when it happened; not part of the key.
    accounts: tuple[str, ...] = ()


def violation_key(rule_id: str, agent_id: str, subject_key: str, period_key: str) -> str:
    """The deterministic key of a violation: SHA-256 over its four parts."""
    text = "\x1f".join((rule_id, agent_id, subject_key, period_key))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def evidence_ids(ids: Iterable[FactId]) -> tuple[FactId, ...]:
    """Fact ids without repeats, in order, at most :data:`MAX_EVIDENCE` (the first and last halves)."""
    unique = tuple(dict.fromkeys(ids))
    if len(unique) <= MAX_EVIDENCE:
        return unique
    half = MAX_EVIDENCE // 2
    return unique[:half] + unique[-half:]


# ------------------------------------------------------------------------------ conditions


def _lookup(values: Mapping[str, Any], path: str) -> Any:
    current: Any = values
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return ""
    return current


def _texts(value: Any) -> list[str]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return [str(v).casefold() for v in value]
    return ["" if value is None else str(value).casefold()]


def condition_holds(op: str, actual: Any, expected: str | list[str]) -> bool:
    """One ``field op value`` test; a list field holds when any of its elements does (``ne``, ``not_in``: none)."""
    wanted = [w.casefold() for w in ([expected] if isinstance(expected, str) else expected)]
    values = _texts(actual)
    if op in ("eq", "in"):
        return any(v in wanted for v in values)
    if op in ("ne", "not_in"):
        return not any(v in wanted for v in values)
    if op == "contains":
        return any(w in v for v in values for w in wanted)
    if op == "startswith":
        return any(v.startswith(w) for v in values for w in wanted)
    raise ValueError(f"unknown condition operator {op!r}")


def conditions_pass(rule: Rule, values: Mapping[str, Any]) -> bool:
    """Whether the rule's conditions (all / any / none of them) hold for the fact ``values``."""
    if not rule.conditions:
        return True
    results = (condition_holds(c.op, _lookup(values, c.field), c.value) for c in rule.conditions)
    if rule.condition == "all":
        return all(results)
    if rule.condition == "any":
        return any(results)
    return not any(results)


# ------------------------------------------------------------------------------ the input


@dataclass
class Env:
    """One agent's evaluation: the inputs and the views derived from them (each computed once)."""

    policy: Policy
    calendar: WorkingTime
    matcher: Matcher
    agent_id: str
    facts: list[TimedFact]
    context: RuleContext
    start: dt.datetime
    end: dt.datetime
    _working_cache: list[Interval] = field(default_factory=list, repr=False)
    _working_span: tuple[dt.datetime, dt.datetime] | None = field(default=None, repr=False)

    # --------------------------------------------------------------- derived views

    @cached_property
    def last_contact(self) -> dt.datetime | None:
        return max((f.time for f in self.facts), default=None)

    @cached_property
    def first_contact(self) -> dt.datetime | None:
        return min((f.time for f in self.facts), default=None)

    @cached_property
    def heartbeat(self) -> dt.timedelta:
        """The policy's heartbeat interval, else the one the heartbeats show, else 60 s."""
        configured = self.policy.agent.heartbeat_interval_seconds
        if configured:
            return dt.timedelta(seconds=configured)
        beats = sorted(f.time for f in self.facts if f.kind == "power")
        gaps = [b - a for a, b in zip(beats, beats[1:]) if MIN_HEARTBEAT <= b - a <= MAX_HEARTBEAT]
        return median(gaps) if len(gaps) >= 3 else dt.timedelta(seconds=60)

    @cached_property
    def pulse(self) -> dt.timedelta:
        return pulse_window(self.heartbeat)

    @cached_property
    def power(self) -> list[PowerInterval]:
        return power_intervals(self.facts, self.pulse)

    @cached_property
    def on(self) -> list[Interval]:
        """When the machine was on (merged power intervals)."""
        return as_intervals(self.power)

    @cached_property
    def runs(self) -> list[ProgramRun]:
        return program_runs([f for f in self.facts if f.kind.startswith("process") or f.kind == "power"])

    @cached_property
    def activity(self) -> list[ActivitySpan]:
        return activity_spans([f for f in self.facts if f.kind in ("activity", "power")])

    @cached_property
    def exempt(self) -> list[Interval]:
        """Exemptions and maintenance records, merged: times the workstation may be used off hours."""
        spans = [*self.context.exemptions, *self.context.maintenance]
        return merge(Interval(s.starts_at, s.ends_at) for s in spans)

    def maintenance_covering(self, start: dt.datetime, end: dt.datetime) -> TimeSpan | None:
        """A maintenance record overlapping [start, end], if any."""
        for record in self.context.maintenance:
            if record.starts_at <= end and record.ends_at >= start:
                return record
        return None

    # --------------------------------------------------------------- time

    def local_date(self, moment: dt.datetime) -> dt.date:
        return self.calendar.local_date(moment)

    def local(self, moment: dt.datetime | None) -> str:
        """A moment for people: local date and time in the policy's zone."""
        if moment is None:
            return "unknown"
        return moment.astimezone(self.policy.zone).strftime("%Y-%m-%d %H:%M")

    def working(self, start: dt.datetime, end: dt.datetime) -> list[Interval]:
        """Working time within [start, end) (cached over the whole evaluation)."""
        if end <= start:
            return []
        if self._working_span is None or start < self._working_span[0] or end > self._working_span[1]:
            lower = min(start, self.first_contact or start) - dt.timedelta(days=2)
            upper = max(end, self.end, self.last_contact or end) + dt.timedelta(days=2)
            self._working_cache = [Interval(a, b) for a, b in self.calendar.working_intervals(lower, upper)]
            self._working_span = (lower, upper)
        cache = self._working_cache
        index = max(0, bisect.bisect_right([i.start for i in cache], start) - 1)
        result = []
        for interval in cache[index:]:
            if interval.start >= end:
                break
            lo, hi = max(interval.start, start), min(interval.end, end)
            if lo < hi:
                result.append(Interval(lo, hi))
        return result

    def when(self, when: When, start: dt.datetime, end: dt.datetime) -> list[Interval]:
        """The parts of [start, end] that fall in the rule's ``when``; an instant counts as a zero-length part."""
        if end <= start:
            if when is When.ALWAYS:
                return [Interval(start, start)]
            working = self.calendar.is_working_time(start)
            return [Interval(start, start)] if working == (when is When.WORKING_TIME) else []
        if when is When.ALWAYS:
            return [Interval(start, end)]
        working = self.working(start, end)
        return working if when is When.WORKING_TIME else subtract([Interval(start, end)], working)

    def day_start(self, day: dt.date) -> dt.datetime:
        """Local midnight at the start of ``day``, in UTC."""
        return dt.datetime.combine(day, dt.time(), tzinfo=self.policy.zone).astimezone(dt.UTC)

    def split_by_day(self, intervals: Iterable[Interval]) -> dict[dt.date, list[Interval]]:
        """Intervals cut at local midnight, by local date."""
        days: dict[dt.date, list[Interval]] = {}
        for start, end in intervals:
            cursor = start
            while True:
                day = self.local_date(cursor)
                midnight = self.day_start(day + dt.timedelta(days=1))
                piece_end = min(end, midnight)
                days.setdefault(day, []).append(Interval(cursor, piece_end))
                if piece_end >= end:
                    break
                cursor = piece_end
        return days

    # --------------------------------------------------------------- results

    def candidate(
        self,
        rule: Rule,
        *,
        subject: str,
        period_key: str,
        period_start: dt.datetime,
        period_end: dt.datetime | None,
        occurred_at: dt.datetime,
        fact_ids: Iterable[FactId],
        summary: str,
        category: str = "",
        subject_key: str | None = None,
        accounts: Iterable[str] = (),
    ) -> ViolationCandidate:
        """A candidate of ``rule`` on this workstation, keyed by (subject key, period key).

        ``accounts``: the OS accounts the evidence names (a process's user, the session's account).
        """
        return ViolationCandidate(
            key=violation_key(rule.id, self.agent_id, subject_key or subject, period_key),
            rule_id=rule.id,
            ref=rule.ref,
            title=rule.title,
            kind=rule.kind.value,
            category=category,
            agent_id=self.agent_id,
            subject=subject[:500],
            period_start=period_start,
            period_end=period_end,
            occurred_at=occurred_at,
            local_date=self.local_date(occurred_at),
            evidence_fact_ids=evidence_ids(fact_ids),
            evidence_summary=summary,
            informational=rule.informational,
            attribute_to_owner=rule.attribute_to_owner,
            penalty=rule.penalty,
            accounts=tuple(sorted({a for a in accounts if a})),
        )

    def agent_values(self) -> dict[str, Any]:
        return {"id": self.agent_id, "window": self.context.window, "unit": self.context.unit or ""}


def first_instant(parts: Sequence[Interval]) -> dt.datetime:
    return min(p.start for p in parts)


def last_instant(parts: Sequence[Interval]) -> dt.datetime:
    return max(p.end for p in parts)


def minutes(parts: Iterable[Interval]) -> int:
    return round(sum(((p.end - p.start) for p in parts), dt.timedelta()).total_seconds() / 60)


def raw_iso(fact: TimedFact) -> str:
    """The fact's observation time exactly as the agent reported it, for keys."""
    raw = raw_time(fact.fact.observed_at)
    return raw.isoformat() if raw else f"sequence {fact.fact.sequence}"


__all__ = [
    "Account",
    "Approval",
    "Device",
    "Env",
    "RuleContext",
    "TimeSpan",
    "ViolationCandidate",
    "conditions_pass",
    "violation_key",
]
