"""What a monthly sheet is made of and what it is: the inputs of the computation and the sheet itself.

Everything is a plain frozen dataclass: the inputs the service fills from the database (or a test
by hand) and the sheet (thousands of lines for a large centre, so cheap to build). The sheet goes
to JSON and back through pydantic (:data:`SHEET`), so a closed month's frozen copy is the same
object read back from its JSON, exactly as it was computed, and a stored copy is validated.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import TypeAdapter


@dataclass(frozen=True)
class StaffInfo:
    """A staff member as the sheet shows them; inactive staff appear only when something is charged to them."""

    code: str
    name: str
    unit: str
    active: bool = True


@dataclass(frozen=True)
class UnitInfo:
    """A unit (进驻部门) and the home department its escalations go to (通报主管部门)."""

    code: str
    name: str
    home_department: str = ""


@dataclass(frozen=True)
class SheetViolation:
    """A stored violation as the sheet needs it (the penalty is the rule's when it was evaluated)."""

    id: int
    rule_id: str
    ref: str
    title: str
    local_date: dt.date
    status: str
    informational: bool
    points: float
    money: float
    section: str | None
    window: str = ""
    unit: str = ""  # the window's unit, for the unattributed list of a unit's sheet


@dataclass(frozen=True)
class ManualEntry:
    """A manual line (see :mod:`controller.scoring.records`)."""

    id: int
    month: str
    staff: str
    section: str
    points: float
    ref: str
    reason: str
    entered_by: str
    entered_at: dt.datetime
    votes_for: int | None = None
    votes_total: int | None = None
    flag: str = ""
    unit: str = "points"  # points | yuan: the scheme it was entered under
    source_file: str = ""
    source_row: int | None = None


@dataclass(frozen=True, kw_only=True)
class Line:
    """One line behind a person's score: violations of one rule on one day in one role, or a manual entry.

    ``points`` is the signed change to ``section`` (or to the total when ``section`` is "" or 附加分);
    ``money`` is the yuan charged (money scheme). ``how`` says how the person was identified, or who
    entered the line and from where.
    """

    kind: Literal["violation", "manual", "peer_review"]
    section: str
    points: float
    money: float = 0
    date: dt.date | None = None
    rule_id: str = ""
    ref: str
    title: str
    violation_ids: list[int] = field(default_factory=list)
    entry_ids: list[int] = field(default_factory=list)
    role: Literal["user", "owner", ""] = ""
    how: str = ""
    count: int = 1


@dataclass(frozen=True, kw_only=True)
class SectionScore:
    """A section of one person: its full points, the sum before the floor, and the value after it."""

    name: str
    points: float
    raw: float
    value: float

    @property
    def floored(self) -> bool:
        return self.value != self.raw


@dataclass(frozen=True, kw_only=True)
class Escalation:
    """More than ``escalate_after`` incidents of one rule: the case goes to the unit's home department."""

    rule_id: str
    ref: str
    title: str
    count: int
    as_user: int
    as_owner: int
    department: str


@dataclass(frozen=True, kw_only=True)
class Person:
    """One row of the sheet and every line behind it."""

    staff: str
    name: str
    unit: str
    unit_name: str = ""
    sections: list[SectionScore] = field(default_factory=list)
    other: float = 0  # points changed outside every section (a penalty without a section)
    bonus: float = 0  # 附加分
    total: float = 0
    rank: int | None = None
    tied: bool = False
    advanced: bool = False  # 先进工作者
    money: float = 0  # yuan charged (扣款)
    flags: list[str] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)

    def section(self, name: str) -> SectionScore | None:
        return next((s for s in self.sections if s.name == name), None)


@dataclass(frozen=True, kw_only=True)
class Unattributed:
    """A counted violation nobody could be identified for: listed for the centre, charged to nobody."""

    violation_id: int
    rule_id: str
    ref: str
    title: str
    date: dt.date
    window: str
    unit: str
    reason: str
    section: str = ""
    points: float = 0
    money: float = 0


@dataclass(frozen=True, kw_only=True)
class SectionInfo:
    name: str
    points: float
    floor: Literal["none", "zero"]


@dataclass(frozen=True, kw_only=True)
class Sheet:
    """A month's sheet: the scheme it was computed under, a row per person, and the unattributed violations."""

    month: str
    policy_id: str
    policy_version: str
    scheme: Literal["points", "money"]
    currency: str = "CNY"
    base: float
    sections: list[SectionInfo]
    bonus_name: str = "附加分"
    top_n: int
    counted_statuses: list[str]
    escalate_after: int | None = None
    computed_at: dt.datetime
    closed_at: dt.datetime | None = None
    closed_by: str = ""
    unit: str | None = None  # set when the sheet shows one unit's rows of the centre's sheet
    people: list[Person]
    unattributed: list[Unattributed] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def person(self, staff: str) -> Person | None:
        return next((p for p in self.people if p.staff == staff), None)

    def for_unit(self, unit: str) -> Sheet:
        """The rows of one unit (ranks stay the centre's) and the unattributed violations at its windows."""
        return replace(self, unit=unit, people=[p for p in self.people if p.unit == unit],
                       unattributed=[u for u in self.unattributed if u.unit == unit])

    def to_json(self) -> dict[str, Any]:
        """The sheet as JSON values (what a closed month stores)."""
        return SHEET.dump_python(self, mode="json")  # type: ignore[no-any-return]

    @staticmethod
    def from_json(document: Any) -> Sheet:
        """A sheet from :meth:`to_json`'s values, validated."""
        return SHEET.validate_python(document)


SHEET: TypeAdapter[Sheet] = TypeAdapter(Sheet)
