"""Rule kinds about when the workstation is on and used: after hours (R11.4, R9 7(2)13), outside
working hours (R11.8), and an agent that stops reporting while its machine is on.

**powered_on_after_hours** — the machine is still on ``grace_minutes`` after the end of a working
day: a power interval (merged heartbeats, see :mod:`controller.rules.intervals`) covers the end of
the day's last period plus the grace. Only working days count: on a weekend or holiday there is no
end of work to leave the machine on after (using it then is ``activity_outside_hours``); a machine
left on from Friday evening counts for Friday. A gap in the heartbeats at that instant (the agent
was not running) gives the benefit of the doubt. "Each time" is each working day, whatever ``per``
says.

**activity_outside_hours** — input activity (ACTIVE/IDLE reports) outside the working day: before
its first period starts or after its last period ends, each widened by ``grace_minutes``, and all
day on days that are not working days. The break between two periods of one working day (lunch)
is not "outside working hours": staff are on duty on the premises. Exemptions (overtime, weekend
duty) and maintenance records of the workstation take their time out. Less than one minute of
activity in total is not counted (a mouse knocked while cleaning). "Each time": ``day`` = one per
user per local day; ``session``/``once`` = one per user per stretch of off-hours time (an evening,
a night, a weekend).

**agent_silent** — the agent reported nothing for more than ``grace_minutes`` while its machine
was on: the last power fact before the silence was not a shutdown or suspend, and either the next
report carries the same boot time (the machine stayed up; the silence is counted from the last
fact) or there is no next report yet (counted up to now: the sweep). When the next report shows a
new boot, the machine was off or restarting and only the time after the new boot counts. Silence
is judged on observation times, so facts delivered late after a network or controller outage fill
the gap and withdraw the violation. Only the silent time within the rule's ``when`` counts.
"Each time": ``day`` = one per local day; ``session``/``once`` = one per silence.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from controller.policy.model import Occurrence, Rule, When
from controller.rules.base import Env, ViolationCandidate, first_instant, last_instant, minutes, raw_iso
from controller.rules.intervals import FactId, Interval, intersect, merge, raw_time, subtract
from protos.counterguard.v1 import facts_pb2

Power = facts_pb2.PowerEvent
MIN_ACTIVITY = dt.timedelta(minutes=1)


# ------------------------------------------------------------------------------ powered on after hours


def powered_on_after_hours(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """One violation per working day on which the machine was still on ``grace`` after the end of work."""
    if not env.power:
        return []
    grace = dt.timedelta(minutes=rule.grace_minutes)
    first = env.local_date(min(p.start for p in env.power)) - dt.timedelta(days=1)
    last = env.local_date(max(p.end for p in env.power))
    candidates = []
    day = first
    while day <= last:
        end_of_work = env.calendar.end_of_working_day(day)
        day += dt.timedelta(days=1)
        if end_of_work is None:
            continue
        cutoff = end_of_work + grace
        covering = next((p for p in env.power if p.start <= cutoff <= p.end), None)
        if covering is None:
            continue
        work_day = env.local_date(end_of_work)
        closed = {"shutdown": "shut down", "suspend": "suspended"}.get(covering.closed_by, "last heartbeat")
        summary = (f"The computer was still on at {env.local(cutoff)}, {rule.grace_minutes} min after the end of "
                   f"work ({env.local(end_of_work)}): on from {env.local(covering.start)} to at least "
                   f"{env.local(covering.end)} ({closed}).")
        near = [i for i in covering.fact_ids[:1]] + _around(env, covering.fact_ids, cutoff) + covering.fact_ids[-1:]
        candidates.append(env.candidate(
            rule, subject="computer power", period_key=work_day.isoformat(), period_start=end_of_work,
            period_end=covering.end, occurred_at=cutoff, fact_ids=near, summary=summary,
        ))
    return candidates


def _around(env: Env, fact_ids: list[FactId], moment: dt.datetime) -> list[FactId]:
    """The power facts just before and just after ``moment``: the heartbeats that prove it."""
    times = {f.fact_id: f.time for f in env.facts if f.kind == "power"}
    before = [i for i in fact_ids if times.get(i, moment) <= moment][-1:]
    after = [i for i in fact_ids if times.get(i, moment) > moment][:1]
    return before + after


# ------------------------------------------------------------------------------ activity outside hours


def _off_hours(env: Env, start: dt.datetime, end: dt.datetime, grace: dt.timedelta) -> list[Interval]:
    """Time outside the working day (first period start − grace … last period end + grace) in [start, end)."""
    working = env.working(start - dt.timedelta(days=1), end + dt.timedelta(days=1))
    by_day: dict[dt.date, list[Interval]] = defaultdict(list)
    for interval in working:
        by_day[env.local_date(interval.start)].append(interval)
    envelopes = merge(Interval(min(i.start for i in d) - grace, max(i.end for i in d) + grace) for d in by_day.values())
    return subtract([Interval(start, end)], envelopes)


def activity_outside_hours(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """Input activity outside the working day, without an exemption or maintenance record covering it."""
    spans = [s for s in env.activity if s.end > s.start]
    if not spans:
        return []
    grace = dt.timedelta(minutes=rule.grace_minutes)
    lower, upper = min(s.start for s in spans), max(s.end for s in spans)
    stretches = _off_hours(env, lower, upper, grace)
    groups: dict[tuple[str, str], list[tuple[Interval, list[FactId]]]] = defaultdict(list)
    for span in spans:
        pieces = subtract(intersect([Interval(span.start, span.end)], stretches), env.exempt)
        user = span.username
        for piece in pieces:
            if rule.per is Occurrence.DAY:
                for day, parts in env.split_by_day([piece]).items():
                    groups[(user, day.isoformat())] += [(p, span.fact_ids) for p in parts]
            else:
                stretch = next(s for s in stretches if s.start <= piece.start < s.end)
                groups[(user, stretch.start.isoformat())].append((piece, span.fact_ids))
    candidates = []
    for (user, period), members in sorted(groups.items()):
        parts = merge(p for p, _ in members)
        if sum((p.end - p.start for p in parts), dt.timedelta()) < MIN_ACTIVITY:
            continue
        spans_text = ", ".join(f"{env.local(p.start)}–{env.local(p.end)[-5:]}" for p in parts[:6])
        more = f" and {len(parts) - 6} more" if len(parts) > 6 else ""
        shown = user or "unknown user"
        summary = (f"{shown} used the computer outside working hours for {minutes(parts)} min "
                   f"({spans_text}{more}); no exemption or maintenance record covers it.")
        candidates.append(env.candidate(
            rule, subject=f"user {shown}", period_key=period, period_start=first_instant(parts),
            period_end=last_instant(parts), occurred_at=first_instant(parts),
            fact_ids=[i for _, ids in members for i in ids], summary=summary, accounts=[user],
        ))
    return candidates


# ------------------------------------------------------------------------------ agent silent


def _silences(env: Env, grace: dt.timedelta) -> list[tuple[Interval, dt.datetime, str, list[FactId]]]:
    """(silent interval, the last contact before it, that fact's key, the facts around it) while the machine was on."""
    ordered = sorted(env.facts, key=lambda f: (f.time, f.fact.sequence))
    result = []
    state: int | None = None  # the kind of the last power fact
    boot: dt.datetime | None = None
    for index, fact in enumerate(ordered):
        if fact.kind == "power":
            state = fact.fact.power.kind
            boot = raw_time(fact.fact.power.boot_time) if fact.fact.power.HasField("boot_time") else boot
        if state in (None, Power.KIND_SHUTDOWN, Power.KIND_SUSPEND):
            continue
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        if following is None:
            until = max(env.end, env.context.last_seen_at or env.end)
            contact = max(fact.time, env.context.last_seen_at or fact.time)
            if until - contact > grace:
                result.append((Interval(contact + grace, until), contact, raw_iso(fact), [fact.fact_id]))
            continue
        if following.time - fact.time <= grace:
            continue
        start = fact.time + grace
        next_power = next((f for f in ordered[index + 1 :] if f.kind == "power"), None)
        if next_power is not None and next_power.fact.power.HasField("boot_time"):
            new_boot = raw_time(next_power.fact.power.boot_time)
            if boot is not None and new_boot is not None and abs(new_boot - boot) > dt.timedelta(seconds=10):
                start = new_boot - next_power.offset + grace
        if start < following.time:
            facts = [fact.fact_id, following.fact_id]
            result.append((Interval(start, following.time), fact.time, raw_iso(fact), facts))
    return result


def agent_silent(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """The agent stopped reporting for longer than ``grace`` while its machine was on."""
    grace = dt.timedelta(minutes=rule.grace_minutes)
    groups: dict[str, list[tuple[Interval, dt.datetime, list[FactId]]]] = defaultdict(list)
    for silence, contact, contact_key, fact_ids in _silences(env, grace):
        parts = env.when(rule.when, silence.start, silence.end) if silence.end > silence.start else []
        parts = [p for p in parts if p.end > p.start]
        if rule.per is Occurrence.DAY:
            for day, pieces in env.split_by_day(parts).items():
                groups[day.isoformat()] += [(p, contact, fact_ids) for p in pieces]
        else:
            groups[contact_key] += [(p, contact, fact_ids) for p in parts]
    candidates = []
    for period, members in sorted(groups.items()):
        parts = merge(p for p, _, _ in members)
        if not parts:
            continue
        contacts = sorted({c for _, c, _ in members})
        where = {When.WORKING_TIME: " of working time", When.OUTSIDE_WORKING_TIME: " outside working time"}.get(
            rule.when, "")
        summary = (f"No report for {minutes(parts)} min{where} while the computer was on (last report "
                   f"{env.local(contacts[0])}; no shutdown was reported): silent "
                   + ", ".join(f"{env.local(p.start)}–{env.local(p.end)[-5:]}" for p in parts[:6]) + ".")
        candidates.append(env.candidate(
            rule, subject="agent reports", period_key=period, period_start=first_instant(parts),
            period_end=last_instant(parts), occurred_at=first_instant(parts),
            fact_ids=[i for _, _, ids in members for i in ids], summary=summary,
        ))
    return candidates
