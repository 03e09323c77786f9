"""The monthly sheet, computed: pure functions from (scoring scheme, staff, violations with their
attributions, manual entries) to a :class:`~controller.scoring.model.Sheet`. No database, no clock.

What counts. A violation counts when its status is one of the scheme's ``counted_statuses`` (open
and confirmed by default; never dismissed or withdrawn) and its rule is not informational. It is
charged to every person its attribution names: the user and, for a rule with ``attribute_to_owner``,
the workstation's owner, each the rule's full penalty. A violation without a user is listed under
``unattributed`` with the reason and charged to nobody; nobody is guessed.

Points (regulation 9). Each section starts at its points; violations and manual entries deduct from
it; a section with floor ``zero`` (扣完为止) stops at 0, one with floor ``none`` (不设底线) may go
below. The peer-review section (窗口互评) is set by the votes entered for the person: the grade of
the vote share gives the section's points. Bonus points (附加分) are added outside every section.
Total = base + Σ (section value − section points) + deductions outside a section + bonus.
Ranking is competition ranking on the total (1, 2, 2, 4): people with equal totals share a rank
and are marked as tied; everyone ranked within ``top_n`` is 先进工作者, so a tie at the boundary
marks all of the tied (the sheet says so).

Money (regulation 12). Each violation costs its rule's money for each person charged; manual
amounts are signed (negative charges more).

Manual entries count only under the scheme they were entered for (points or yuan): a month
recomputed under another scheme notes the ones it leaves out. Article-8 flags count under both. Per person and rule, the penalised incidents are
counted; more than ``escalate_after`` marks the case for the unit's home department (通报主管部门).

Flags (article 8). A person charged with ``repeat_flag_at`` or more counted violations of one rule
in the month is flagged; flags entered by hand are shown with their reference.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from controller.org.attribution import Attributed, Attribution
from controller.policy.model import BONUS_SECTION, Scoring
from controller.scoring.entries import entry_unit
from controller.scoring.model import (
    Escalation,
    Line,
    ManualEntry,
    Person,
    SectionInfo,
    SectionScore,
    Sheet,
    SheetViolation,
    StaffInfo,
    Unattributed,
    UnitInfo,
)

_PRECISION = 6  # totals are compared after rounding, so 0.1 + 0.2 ties with 0.3


def counts(scoring: Scoring, violation: SheetViolation) -> bool:
    """Whether a violation counts on the sheet at all (its status and its rule)."""
    return violation.status in scoring.counted_statuses and not violation.informational


def compute_sheet(
    scoring: Scoring,
    month: str,
    *,
    policy_id: str,
    policy_version: str,
    staff: Sequence[StaffInfo],
    units: Mapping[str, UnitInfo],
    violations: Iterable[SheetViolation],
    attributions: Mapping[int, Attribution],
    entries: Iterable[ManualEntry],
    computed_at: dt.datetime,
) -> Sheet:
    """The whole centre's sheet for ``month``; see the module docstring for every rule it applies."""
    known = {s.code: s for s in staff}
    lines: dict[str, list[Line]] = defaultdict(list)
    incidents: dict[str, list[tuple[SheetViolation, str]]] = defaultdict(list)
    unattributed: list[Unattributed] = []
    for violation in sorted(violations, key=lambda v: (v.local_date, v.id)):
        if not counts(scoring, violation):
            continue
        attribution = attributions.get(violation.id)
        charged, reason = _charged(attribution, known)
        if reason:
            unattributed.append(_unattributed(violation, reason))
        for person in charged:
            incidents[person.staff].append((violation, person.role))
            lines[person.staff].append(_violation_line(scoring, violation, person.role, person.how))
    notes: list[str] = []
    by_staff: dict[str, list[ManualEntry]] = defaultdict(list)
    for entry in sorted(entries, key=lambda e: e.id):
        if entry.staff in known:
            by_staff[entry.staff].append(entry)
        else:
            notes.append(f"manual entry {entry.id} is for {entry.staff}, who is not in the staff table: not counted")
    on_sheet = [s for s in staff if s.active or lines.get(s.code) or by_staff.get(s.code)]
    people = [
        _person(scoring, member, units, _grouped(lines[member.code]), by_staff[member.code], incidents[member.code])
        for member in on_sheet
    ]
    people, note = _ranked(scoring, people)
    return Sheet(
        month=month, policy_id=policy_id, policy_version=policy_version, scheme=scoring.scheme,
        currency=scoring.currency, base=scoring.base,
        sections=[SectionInfo(name=s.name, points=s.points, floor=s.floor) for s in scoring.sections],
        top_n=scoring.top_n, counted_statuses=list(scoring.counted_statuses), escalate_after=scoring.escalate_after,
        computed_at=computed_at, people=people, unattributed=unattributed, notes=[*([note] if note else []), *notes],
    )


# ------------------------------------------------------------------------------ violations


def _charged(attribution: Attribution | None, known: Mapping[str, StaffInfo]) -> tuple[list[Attributed], str]:
    """The people a violation is charged to and, when it is charged to nobody, why.

    Without a known user nobody is charged, not even the owner: the violation goes on the
    unattributed list. An owner who is not in the staff table is left out (the user still pays).
    """
    if attribution is None:
        return [], "not attributed"
    user = attribution.user
    if user is None:
        return [], attribution.unattributed or "nobody identified"
    if user.staff not in known:
        return [], f"attributed to {user.staff}, who is not in the staff table"
    return [p for p in attribution.people if p.staff in known], ""


def _unattributed(violation: SheetViolation, reason: str) -> Unattributed:
    return Unattributed(
        violation_id=violation.id, rule_id=violation.rule_id, ref=violation.ref, title=violation.title,
        date=violation.local_date, window=violation.window, unit=violation.unit, reason=reason,
        section=violation.section or "", points=violation.points, money=violation.money,
    )


def _violation_line(scoring: Scoring, violation: SheetViolation, role: str, how: str) -> Line:
    section = violation.section or ""
    if scoring.scheme == "points" and section and scoring.section(section) is None:
        section = ""  # a section the scheme no longer has: counted outside the sections
    return Line(kind="violation", section=section, points=-violation.points, money=violation.money,
                date=violation.local_date, rule_id=violation.rule_id, ref=violation.ref, title=violation.title,
                violation_ids=[violation.id], role=role, how=how)  # type: ignore[arg-type]


def _grouped(lines: list[Line]) -> list[Line]:
    """Violation lines of the same rule, day, role and attribution merged into one, with every id."""
    merged: dict[tuple[object, ...], Line] = {}
    for line in lines:
        key = (line.rule_id, line.date, line.role, line.how, line.section)
        if key in merged:
            first = merged[key]
            merged[key] = replace(first, points=first.points + line.points, money=first.money + line.money,
                                  violation_ids=[*first.violation_ids, *line.violation_ids], count=first.count + 1)
        else:
            merged[key] = line
    return list(merged.values())


# ------------------------------------------------------------------------------ one person


def _person(scoring: Scoring, member: StaffInfo, units: Mapping[str, UnitInfo], lines: list[Line],
            entries: list[ManualEntry], incidents: list[tuple[SheetViolation, str]]) -> Person:
    notes: list[str] = []
    unit = entry_unit(scoring)
    other_scheme = [e for e in entries if e.unit != unit and (e.points or e.votes_total)]
    if other_scheme:
        notes.append(f"manual entries {', '.join(str(e.id) for e in other_scheme)} are in {other_scheme[0].unit}, "
                     f"not counted under the {scoring.scheme} scheme")
    counted = [e for e in entries if e.unit == unit]
    manual = [_manual_line(scoring, e) for e in counted if e.votes_total is None and (e.points or not e.flag)]
    review = _peer_review(scoring, [e for e in counted if e.votes_total is not None], notes)
    every = [*lines, *manual, *review]
    sections = [_section(s.name, s.points, s.floor, every) for s in scoring.sections]
    names = {s.name for s in scoring.sections}
    other = sum(line.points for line in every if line.section not in names and line.section != BONUS_SECTION)
    bonus = sum(line.points for line in every if line.section == BONUS_SECTION)
    total = scoring.base + sum(s.value - s.points for s in sections) + other + bonus
    money = sum(line.money for line in every)
    home = units.get(member.unit)
    flags = _repeat_flags(scoring, incidents) + [f"{e.flag} ({e.ref})" for e in entries if e.flag]
    return Person(
        staff=member.code, name=member.name, unit=member.unit, unit_name=home.name if home else "",
        sections=sections, other=_round(other), bonus=_round(bonus),
        total=_round(total) if scoring.scheme == "points" else 0, money=_round(money), flags=flags,
        escalations=_escalations(scoring, incidents, home, member), notes=notes, lines=every,
    )


def _section(name: str, points: float, floor: str, lines: Iterable[Line]) -> SectionScore:
    raw = points + sum(line.points for line in lines if line.section == name)
    value = max(raw, 0.0) if floor == "zero" else raw
    return SectionScore(name=name, points=points, raw=_round(raw), value=_round(value))


def _manual_line(scoring: Scoring, entry: ManualEntry) -> Line:
    source = f" ({entry.source_file}:{entry.source_row})" if entry.source_file else ""
    money = scoring.scheme == "money"
    return Line(kind="manual", section="" if money else entry.section, points=0 if money else entry.points,
                money=-entry.points if money else 0, ref=entry.ref, title=entry.reason or entry.flag,
                entry_ids=[entry.id], how=f"entered by {entry.entered_by}{source}")


def _peer_review(scoring: Scoring, entries: list[ManualEntry], notes: list[str]) -> list[Line]:
    """The peer-review section from the votes: one line setting it to its grade's points."""
    review = scoring.peer_review
    section = scoring.section(review.section)
    if section is None or scoring.scheme != "points":
        return []
    if not entries:
        notes.append(f"no peer-review votes entered: {section.name} stays at {section.points:g}")
        return []
    votes_for = sum(e.votes_for or 0 for e in entries)
    votes_total = sum(e.votes_total or 0 for e in entries)
    share = votes_for / votes_total if votes_total else 0.0
    band = review.band(share)
    return [Line(kind="peer_review", section=section.name, points=band.points - section.points,
                 ref=", ".join(sorted({e.ref for e in entries})),
                 title=f"votes {votes_for}/{votes_total} ({share:.0%}): {band.name} {band.points:g}",
                 entry_ids=[e.id for e in entries],
                 how="entered by " + ", ".join(sorted({e.entered_by for e in entries})))]


def _repeat_flags(scoring: Scoring, incidents: list[tuple[SheetViolation, str]]) -> list[str]:
    if scoring.repeat_flag_at is None:
        return []
    per_rule = Counter(v.rule_id for v, _ in incidents)
    first = {v.rule_id: v for v, _ in reversed(incidents)}
    return [f"R9 article 8: {n} violations of {rule} ({first[rule].ref}) this month"
            for rule, n in sorted(per_rule.items()) if n >= scoring.repeat_flag_at]


def _escalations(scoring: Scoring, incidents: list[tuple[SheetViolation, str]], unit: UnitInfo | None,
                 member: StaffInfo) -> list[Escalation]:
    """Rules with more than ``escalate_after`` penalised incidents charged to the person this month."""
    if scoring.escalate_after is None:
        return []
    roles: dict[str, Counter[str]] = defaultdict(Counter)
    first: dict[str, SheetViolation] = {}
    for violation, role in incidents:
        if violation.points or violation.money:
            roles[violation.rule_id][role] += 1
            first.setdefault(violation.rule_id, violation)
    department = unit.home_department if unit and unit.home_department else \
        f"(unit {member.unit} has no home department recorded)"
    return [
        Escalation(rule_id=rule, ref=first[rule].ref, title=first[rule].title, count=sum(n.values()),
                   as_user=n["user"], as_owner=n["owner"], department=department)
        for rule, n in sorted(roles.items()) if sum(n.values()) > scoring.escalate_after
    ]


# ------------------------------------------------------------------------------ ranking


def _ranked(scoring: Scoring, people: list[Person]) -> tuple[list[Person], str]:
    """Competition ranks (points scheme only), ties marked, 先进工作者 for every rank within ``top_n``."""
    if scoring.scheme != "points":
        return sorted(people, key=lambda p: (-p.money, p.staff)), ""
    ordered = sorted(people, key=lambda p: (-p.total, p.staff))
    totals = Counter(p.total for p in ordered)
    ranked: list[Person] = []
    for index, person in enumerate(ordered):
        rank = ranked[-1].rank if ranked and ranked[-1].total == person.total else index + 1
        ranked.append(replace(person, rank=rank, tied=totals[person.total] > 1,
                              advanced=scoring.top_n > 0 and rank <= scoring.top_n))
    advanced = [p for p in ranked if p.advanced]
    note = ""
    if len(advanced) > scoring.top_n:
        last = advanced[-1]
        note = (f"{totals[last.total]} people share rank {last.rank} ({last.total:g} points): all of them are "
                f"先进工作者, {len(advanced)} for {scoring.top_n} places")
    return ranked, note


def _round(value: float) -> float:
    return round(value, _PRECISION) + 0.0  # + 0.0 turns -0.0 into 0.0
