"""Rule kinds about programs: forbidden programs running (R11.6, R3 7(3), R12 3(4)2) and unapproved software (R11.2).

**forbidden_program** — a process the catalogue puts in one of the rule's categories, or a
foreground window the agent matched to one, during the rule's ``when`` (e.g. working time).
"Each time" (``per``): ``session`` = one violation per program run (pid and the start time the
agent reported), however long it runs and across the lunch break; a forbidden title in the
foreground counts once per run of the program showing it (e.g. one browser run), and not at all
when that process is already a forbidden run of the same rule; ``day`` = one per program (catalogue
entry) per local day; ``once`` = one per program for as long as it keeps being found.

**unapproved_software** — installed software. ``deny_list``: an item the catalogue (entry, Debian
section, desktop category) puts in one of the rule's categories, or one explicitly denied for this
workstation, unless explicitly approved. ``allow_list``: every item (use conditions, e.g.
``software.source in [desktop-entry, windows-registry]``, to leave the operating system's own
packages out) that is neither approved for this workstation nor office/business software in the
catalogue. The most specific decision wins (window, then unit, then everyone; the newest among
equals). Decisions apply to everything evaluated after they are recorded, also software installed
before: an approval withdraws the open violation on re-evaluation. ``when`` does not apply.
"Each time": ``once`` = one per item (source and name) on the workstation, through removal and
reinstallation; ``session`` = one per installation as its install date says; ``day`` = one per item
per local day it is installed.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from controller.convert import software_source_label
from controller.policy.model import Category, Occurrence, Rule, SoftwareMode
from controller.rules.base import (
    Env,
    ViolationCandidate,
    conditions_pass,
    first_instant,
    last_instant,
    minutes,
)
from controller.rules.intervals import FactId, Interval, ProgramRun, TimedFact, raw_time
from protos.counterguard.v1 import facts_pb2

_ALLOWED = frozenset({Category.OFFICE, Category.BUSINESS})
_SOURCE_LABELS: dict[int, str] = {}
# Catalogue answers for process names, per matcher (a policy version): every evaluation asks again.
_PROCESS_HITS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Any]] = weakref.WeakKeyDictionary()


def source_label(source: int) -> str:
    label = _SOURCE_LABELS.get(source)
    if label is None:
        label = _SOURCE_LABELS[source] = software_source_label(source)
    return label


def match_process(env: Env, name: str, executable: str) -> Any:
    """:meth:`CatalogueMatcher.match_process`, remembered per matcher."""
    try:
        cache = _PROCESS_HITS.setdefault(env.matcher, {})
    except TypeError:  # a matcher that cannot be weakly referenced: ask it every time
        return env.matcher.match_process(name, executable)
    key = (name, executable)
    if key not in cache:
        if len(cache) > 50_000:
            cache.clear()
        cache[key] = env.matcher.match_process(name, executable)
    return cache[key]
_SCOPE_RANK = {"window": 3, "unit": 2, "all": 1}


# ------------------------------------------------------------------------------ forbidden programs


@dataclass
class _Use:
    """A forbidden program in use: a process run or a foreground episode, with the parts that count."""

    program: str  # catalogue entry id, or the category a title matched
    label: str  # what people read: 扫雷 (GNOME Mines), 淘宝 …
    category: str
    session: str  # identity of the run, for the per-session key
    start: dt.datetime
    end: dt.datetime
    open: bool
    parts: list[Interval]
    fact_ids: list[FactId]
    how: str  # "process gnome-mines (pid 4242)", "foreground window of firefox (pid 77)"
    matched_on: str
    username: str = ""  # the OS account the process or window belongs to


def forbidden_program(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """Forbidden programs running or in the foreground during the rule's ``when``."""
    wanted = {c.value for c in rule.categories}
    uses: list[_Use] = []
    counted_pids: set[tuple[int, str]] = set()
    if "process" in rule.sources:
        for run in env.runs:
            use = _process_use(rule, env, run, wanted)
            if use is not None:
                uses.append(use)
                counted_pids.add((run.pid, run.key))
    if "foreground" in rule.sources:
        uses += _foreground_uses(rule, env, wanted, counted_pids)
    return _group_uses(rule, env, uses)


def _process_use(rule: Rule, env: Env, run: ProgramRun, wanted: set[str]) -> _Use | None:
    hit = match_process(env, run.name, run.executable)
    if hit is None or hit.category.value not in wanted:
        return None
    parts = env.when(rule.when, run.start, run.end)
    values = {
        "process": {"name": run.name, "executable": run.executable, "username": run.username, "pid": run.pid},
        "catalogue": {"entry_id": hit.entry_id or "", "name": hit.name, "category": hit.category.value},
        "agent": env.agent_values(),
    }
    if not parts or not conditions_pass(rule, values):
        return None
    return _Use(
        program=hit.entry_id or hit.name, label=hit.name, category=hit.category.value,
        session=f"{run.name or run.executable} {run.key}", start=run.start, end=run.end, open=run.open,
        parts=parts, fact_ids=run.fact_ids, how=f"process {run.name or run.executable} (pid {run.pid}"
        + (f", user {run.username})" if run.username else ")"), matched_on=hit.matched_on, username=run.username,
    )


@dataclass
class _Foreground:
    category: str
    pattern_id: str
    executable: str
    pid: int
    username: str
    start: dt.datetime
    end: dt.datetime
    open: bool
    fact_ids: list[FactId] = field(default_factory=list)


def foreground_episodes(env: Env) -> list[_Foreground]:
    """Each foreground fact starts an episode lasting until the next, a shutdown or boot, or the last contact."""
    episodes: list[_Foreground] = []
    current: _Foreground | None = None
    previous: dt.datetime | None = None
    for fact in env.facts:
        if fact.kind == "foreground" or (fact.kind == "power" and fact.fact.power.kind in (
                facts_pb2.PowerEvent.KIND_SHUTDOWN, facts_pb2.PowerEvent.KIND_BOOT, facts_pb2.PowerEvent.KIND_SUSPEND)):
            if current is not None:
                ended = fact.time if fact.kind != "power" or fact.fact.power.kind != facts_pb2.PowerEvent.KIND_BOOT \
                    else (previous or fact.time)
                current.end, current.open = max(current.start, ended), False
                current = None
            if fact.kind == "foreground":
                window = fact.fact.foreground
                category = window.category
                pattern = window.pattern_id
                if not category and window.title:
                    hit = env.matcher.match_title(window.title)
                    if hit is not None:
                        category, pattern = hit.category.value, hit.entry_id or ""
                if category:
                    current = _Foreground(category, pattern, window.executable, window.pid, window.username,
                                          fact.time, fact.time, True, [fact.fact_id])
                    episodes.append(current)
        previous = fact.time if previous is None else max(previous, fact.time)
    if current is not None and previous is not None:
        current.end = max(current.start, previous)
    return episodes


def _foreground_uses(rule: Rule, env: Env, wanted: set[str], counted: set[tuple[int, str]]) -> list[_Use]:
    by_pid: dict[int, list[ProgramRun]] = defaultdict(list)
    for run in env.runs:
        by_pid[run.pid].append(run)
    uses: dict[tuple[str, str], _Use] = {}
    for episode in foreground_episodes(env):
        if episode.category not in wanted:
            continue
        run = next((r for r in by_pid.get(episode.pid, []) if r.start <= episode.start <= r.end), None)
        run_key = run.key if run is not None else "unknown run"
        if episode.pid and (episode.pid, run_key) in counted:
            continue  # the process itself is already a forbidden run of this rule
        parts = env.when(rule.when, episode.start, episode.end)
        values = {
            "foreground": {"category": episode.category, "pattern_id": episode.pattern_id,
                           "executable": episode.executable, "pid": episode.pid, "username": episode.username},
            "catalogue": {"entry_id": episode.pattern_id, "category": episode.category},
            "agent": env.agent_values(),
        }
        if not parts or not conditions_pass(rule, values):
            continue
        program = episode.pattern_id or episode.category
        session = f"foreground {program} in {episode.executable or 'pid'} pid {episode.pid} {run_key}"
        use = uses.get((program, session))
        if use is None:
            uses[(program, session)] = _Use(
                program=program, label=program, category=episode.category, session=session,
                start=episode.start, end=episode.end, open=episode.open, parts=list(parts),
                fact_ids=list(episode.fact_ids),
                how=f"foreground window of {episode.executable or 'a program'} (pid {episode.pid})",
                matched_on=f"title:{episode.pattern_id or episode.category}", username=episode.username,
            )
        else:
            use.end, use.open = max(use.end, episode.end), episode.open
            use.parts += parts
            use.fact_ids += episode.fact_ids
    return list(uses.values())


def _group_uses(rule: Rule, env: Env, uses: list[_Use]) -> list[ViolationCandidate]:
    if rule.per is Occurrence.SESSION:
        return [_use_candidate(rule, env, [use], use.session, use.session, use.parts) for use in uses]
    grouped: dict[tuple[str, str], list[tuple[_Use, list[Interval]]]] = defaultdict(list)
    for use in uses:
        if rule.per is Occurrence.DAY:
            for day, parts in env.split_by_day(use.parts).items():
                grouped[(use.program, day.isoformat())].append((use, parts))
        else:
            grouped[(use.program, "")].append((use, use.parts))
    candidates = []
    for (program, period), members in sorted(grouped.items()):
        parts = [p for _, ps in members for p in ps]
        candidates.append(_use_candidate(rule, env, [u for u, _ in members], program, period, parts))
    return candidates


def _use_candidate(rule: Rule, env: Env, uses: list[_Use], subject_key: str, period: str,
                   parts: list[Interval]) -> ViolationCandidate:
    first = min(uses, key=lambda u: u.start)
    when = {"working_time": "during working time", "outside_working_time": "outside working time"}.get(
        rule.when.value, "")
    still = " (still running at the last report)"
    runs = "; ".join(f"{u.how} from {env.local(u.start)} to {env.local(u.end)}" + (still if u.open else "")
                     for u in sorted(uses, key=lambda u: u.start)[:5])
    summary = (f"{first.label} ({first.category}, matched on {first.matched_on}) in use {when}: {runs}; "
               f"{minutes(parts)} min {when or 'in total'}, first at {env.local(first_instant(parts))}.")
    per_session = rule.per is Occurrence.SESSION
    return env.candidate(
        rule,
        subject=f"{first.label}: {first.session}" if per_session else first.label,
        subject_key=subject_key,
        period_key=period,
        period_start=first_instant(parts) if not per_session else first.start,
        period_end=max(u.end for u in uses) if per_session else last_instant(parts),
        occurred_at=first_instant(parts),
        fact_ids=[i for u in uses for i in u.fact_ids],
        summary=summary,
        category=first.category,
        accounts=[u.username for u in uses],
    )


# ------------------------------------------------------------------------------ installed software


@dataclass
class Installed:
    """One software item (source, name) while it was installed: first and last time seen."""

    item: facts_pb2.SoftwareItem
    start: dt.datetime
    end: dt.datetime
    open: bool
    fact_ids: list[FactId] = field(default_factory=list)


def installed_episodes(facts: Iterable[TimedFact]) -> list[Installed]:
    """Software snapshots and deltas (in sequence order) as installation episodes per item."""
    episodes: list[Installed] = []
    present: dict[tuple[int, str], Installed] = {}
    previous: dt.datetime | None = None

    def add(item: facts_pb2.SoftwareItem, fact: TimedFact) -> None:
        key = (item.source, item.name)
        current = present.get(key)
        if current is None:
            current = Installed(item, fact.time, fact.time, True, [fact.fact_id])
            present[key] = current
            episodes.append(current)
        else:
            current.item = item
            current.end = max(current.end, fact.time)
            if current.fact_ids[-1] != fact.fact_id:
                current.fact_ids.append(fact.fact_id)

    def remove(key: tuple[int, str], at: dt.datetime, fact_id: FactId | None) -> None:
        current = present.pop(key, None)
        if current is not None:
            current.end, current.open = max(current.start, at), False
            if fact_id is not None:
                current.fact_ids.append(fact_id)

    for fact in facts:
        if fact.kind == "software_snapshot":
            listed = {(i.source, i.name): i for i in fact.fact.software_snapshot.items}
            for key in [k for k in present if k not in listed]:
                remove(key, previous or fact.time, fact.fact_id)
            for item in listed.values():
                add(item, fact)
        elif fact.kind == "software_delta":
            delta = fact.fact.software_delta
            for item in delta.removed:
                remove((item.source, item.name), fact.time, fact.fact_id)
            for item in [*delta.added, *delta.changed]:
                add(item, fact)
        previous = fact.time if previous is None else max(previous, fact.time)
    for current in present.values():
        current.end = max(current.end, previous or current.end)
    return episodes


def software_decision(env: Env, source: str, name: str) -> str | None:
    """The most specific approval or denial of this item for this workstation, if any."""
    best: tuple[int, dt.datetime, str] | None = None
    for approval in env.context.approvals_by_name.get(name.casefold(), ()):
        if approval.source and approval.source.casefold() != source:
            continue
        rank = (_SCOPE_RANK.get(approval.scope, 0), approval.decided_at or dt.datetime.min.replace(tzinfo=dt.UTC),
                approval.decision)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return best[2] if best else None


def unapproved_software(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """Installed software that is forbidden (deny list) or not approved (allow list) for this workstation."""
    software = [f for f in env.facts if f.kind in ("software_snapshot", "software_delta")]
    groups: dict[tuple[str, str], list[tuple[Installed, str, str]]] = defaultdict(list)
    for episode in installed_episodes(software):
        item = episode.item
        source = source_label(item.source)
        decision = software_decision(env, source, item.name)
        hit = env.matcher.match_software(item.source, item.name, item.display_name, item.publisher, item.section,
                                         list(item.categories), item.executable)
        if decision == "denied":
            reason = "it is explicitly denied for this workstation"
        elif decision == "approved":
            continue
        elif rule.mode is SoftwareMode.ALLOW_LIST:
            if hit is not None and hit.category in _ALLOWED:
                continue
            reason = "it is not approved for this workstation's unit or window" + (
                f" (the catalogue says {hit.category.value}: {hit.matched_on})" if hit is not None else "")
        elif hit is not None and hit.category in rule.categories:
            reason = f"the catalogue puts it in {hit.category.value} ({hit.matched_on})"
        else:
            continue
        values = {
            "software": {"source": source, "name": item.name, "version": item.version,
                         "display_name": item.display_name, "publisher": item.publisher, "section": item.section,
                         "categories": list(item.categories), "executable": item.executable},
            "catalogue": {"entry_id": (hit.entry_id or "") if hit else "", "name": hit.name if hit else "",
                          "category": hit.category.value if hit else ""},
            "agent": env.agent_values(),
        }
        if not conditions_pass(rule, values):
            continue
        subject = f"{source}:{item.name}"
        category = hit.category.value if hit is not None else ""
        for period in _software_periods(rule, env, episode):
            groups[(subject, period)].append((episode, category, reason))
    return [_software_candidate(rule, env, subject, period, members) for (subject, period), members in
            sorted(groups.items())]


def _software_periods(rule: Rule, env: Env, episode: Installed) -> list[str]:
    if rule.per is Occurrence.ONCE:
        return [""]
    if rule.per is Occurrence.SESSION:
        installed = raw_time(episode.item.install_date)
        return [installed.isoformat() if installed else "unknown install date"]
    days = env.split_by_day([Interval(episode.start, max(episode.end, episode.start + dt.timedelta(seconds=1)))])
    return [day.isoformat() for day in sorted(days)]


def _software_candidate(rule: Rule, env: Env, subject: str, period: str,
                        members: list[tuple[Installed, str, str]]) -> ViolationCandidate:
    episodes = [e for e, _, _ in members]
    first, last = min(episodes, key=lambda e: e.start), max(episodes, key=lambda e: e.end)
    _, category, reason = members[-1]
    item = first.item
    shown = item.display_name or item.name
    still = "still installed at the last report" if last.open else f"removed by {env.local(last.end)}"
    start = first.start
    if rule.per is Occurrence.DAY:
        start = max(start, env.day_start(dt.date.fromisoformat(period)))
    summary = f"{shown} {item.version} ({subject}) installed: {reason}; first seen {env.local(first.start)}, {still}."
    return env.candidate(
        rule,
        subject=f"{subject} ({shown})" if shown != item.name else subject,
        subject_key=subject,
        period_key=period,
        period_start=start,
        period_end=last.end,
        occurred_at=start,
        fact_ids=[i for e in episodes for i in e.fact_ids],
        summary=summary,
        category=category,
    )
