"""The shape of a policy file, as typed models validated on load (unknown fields are errors).

A policy is declarative: rules pick one of the fixed rule kinds below and set its parameters;
nothing in a policy is ever executed as code. Every rule cites the regulation it enforces
(``ref``, e.g. ``R11.6; R9 7(2)14``), and that reference travels into every violation and onto the
score sheet.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=500)]
_MONTH_DAY = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")


class Strict(BaseModel):
    """Base of every policy model: unknown fields are errors, values are not silently coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Category(StrEnum):
    """Software categories. The first six are what the regulations forbid; office/business are allowed."""

    GAME = "game"
    VIDEO = "video"
    MUSIC = "music"
    SHOPPING = "shopping"
    CHAT = "chat"
    STOCK = "stock"
    OFFICE = "office"
    BUSINESS = "business"


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def iso(self) -> int:
        """1 = Monday … 7 = Sunday, as ``date.isoweekday()``."""
        return list(Weekday).index(self) + 1


class Period(Strict):
    """One working period of a day, local time, e.g. 09:00–12:00. ``end`` is exclusive."""

    start: dt.time
    end: dt.time

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end <= self.start:
            raise ValueError(f"period ends ({self.end:%H:%M}) before it starts ({self.start:%H:%M})")
        return self


def _check_periods(periods: list[Period]) -> list[Period]:
    ordered = sorted(periods, key=lambda p: p.start)
    for earlier, later in zip(ordered, ordered[1:]):
        if later.start < earlier.end:
            raise ValueError(
                f"periods {earlier.start:%H:%M}–{earlier.end:%H:%M} and {later.start:%H:%M}–{later.end:%H:%M} overlap"
            )
    return ordered


class SeasonalTimetable(Strict):
    """Periods that replace the normal ones between two dates of every year (e.g. a summer timetable)."""

    name: NonEmpty = "summer"
    start: str = Field(description="first day, MM-DD")
    end: str = Field(description="last day, MM-DD (inclusive)")
    periods: list[Period] = Field(min_length=1)

    @field_validator("start", "end")
    @classmethod
    def _month_day(cls, value: str) -> str:
        if not _MONTH_DAY.match(value):
            raise ValueError(f"{value!r} is not a MM-DD date")
        return value

    @field_validator("periods")
    @classmethod
    def _no_overlap(cls, periods: list[Period]) -> list[Period]:
        return _check_periods(periods)


class Timetable(Strict):
    """When the centre works: weekdays and periods, optional seasonal periods."""

    weekdays: list[Weekday] = Field(default_factory=lambda: [Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI])
    periods: list[Period] = Field(min_length=1)
    seasonal: list[SeasonalTimetable] = Field(default_factory=list)

    @field_validator("periods")
    @classmethod
    def _no_overlap(cls, periods: list[Period]) -> list[Period]:
        return _check_periods(periods)


class DayKind(StrEnum):
    WORKDAY = "workday"
    HOLIDAY = "holiday"


class CalendarOverride(Strict):
    """A date the national calendar library does not know yet (or a local decision)."""

    date: dt.date
    kind: DayKind
    note: str = ""


class Calendar(Strict):
    """The national calendar (statutory holidays and make-up working days, 调休) plus local overrides."""

    country: Literal["CN"] = "CN"
    subdivision: str | None = None
    overrides: list[CalendarOverride] = Field(default_factory=list)

    @field_validator("overrides")
    @classmethod
    def _unique_dates(cls, overrides: list[CalendarOverride]) -> list[CalendarOverride]:
        seen: set[dt.date] = set()
        for override in overrides:
            if override.date in seen:
                raise ValueError(f"date {override.date} is overridden twice")
            seen.add(override.date)
        return overrides


class Match(Strict):
    """How a catalogue entry is recognised. Every comparison is case-insensitive and literal (no regex)."""

    executables: list[str] = Field(default_factory=list)      # basenames: QQGame.exe, gnome-mines
    packages: list[str] = Field(default_factory=list)         # dpkg/flatpak/snap names
    desktop_ids: list[str] = Field(default_factory=list)      # org.gnome.Mines.desktop
    display_names: list[str] = Field(default_factory=list)    # registry DisplayName / desktop Name (substring)
    publishers: list[str] = Field(default_factory=list)       # registry Publisher / Maintainer (substring)
    title_contains: list[str] = Field(default_factory=list)   # window-title substrings: 淘宝, bilibili

    @model_validator(mode="after")
    def _something(self) -> Match:
        if not any((self.executables, self.packages, self.desktop_ids, self.display_names, self.publishers, self.title_contains)):
            raise ValueError("a catalogue entry must match on at least one of executables, packages, "
                             "desktop_ids, display_names, publishers, title_contains")
        return self


class CatalogueEntry(Strict):
    """One program or site the centre knows, and its category."""

    id: Identifier
    name: NonEmpty  # e.g. QQ游戏
    category: Category
    match: Match


class Catalogue(Strict):
    """The software catalogue: named entries, plus Debian sections and freedesktop categories by category."""

    entries: list[CatalogueEntry] = Field(default_factory=list)
    sections: dict[str, Category] = Field(default_factory=dict)          # Debian Section → category
    desktop_categories: dict[str, Category] = Field(default_factory=dict)  # freedesktop Categories → category

    @field_validator("entries")
    @classmethod
    def _unique_ids(cls, entries: list[CatalogueEntry]) -> list[CatalogueEntry]:
        seen: set[str] = set()
        for entry in entries:
            if entry.id in seen:
                raise ValueError(f"catalogue entry id {entry.id!r} is used twice")
            seen.add(entry.id)
        return entries


class RuleKind(StrEnum):
    """The fixed set of checks a rule can be (each is code in :mod:`controller.rules`, never policy text)."""

    FORBIDDEN_PROGRAM = "forbidden_program"          # R11.6, R9 7(2)14, R3 7(3), R12 3(4)2
    UNAPPROVED_SOFTWARE = "unapproved_software"      # R11.2
    POWERED_ON_AFTER_HOURS = "powered_on_after_hours"  # R11.4, R9 7(2)13
    ACTIVITY_OUTSIDE_HOURS = "activity_outside_hours"  # R11.8
    REMOVABLE_STORAGE = "removable_storage"          # R11.2
    SESSION_ACCOUNT = "session_account"              # R11.1, R11.3
    HARDWARE_CHANGED = "hardware_changed"            # R11.7
    OS_REINSTALLED = "os_reinstalled"                # R11.6
    ANTIVIRUS = "antivirus"                          # R11.9
    NETWORK_CHANGED = "network_changed"              # R11.10
    AGENT_SILENT = "agent_silent"                    # tampering


class Occurrence(StrEnum):
    """What "each time" (每次) means for a rule: the span one violation covers."""

    SESSION = "session"  # one per program run / device attachment / session
    DAY = "day"          # one per subject per local day
    ONCE = "once"        # one per subject for as long as the condition lasts (installed software …)


class When(StrEnum):
    ALWAYS = "always"
    WORKING_TIME = "working_time"
    OUTSIDE_WORKING_TIME = "outside_working_time"


class SoftwareMode(StrEnum):
    ALLOW_LIST = "allow_list"  # anything not approved for the unit is a violation
    DENY_LIST = "deny_list"    # only forbidden categories (and denied names) are violations


class Condition(Strict):
    """A declarative test on one field of the fact behind a violation: ``field op value``."""

    field: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_.]*$")]  # e.g. process.username
    op: Literal["eq", "ne", "in", "not_in", "contains", "startswith"]
    value: str | list[str]


class Penalty(Strict):
    """What one violation costs, used by the score sheet (points) or the money scheme (yuan)."""

    section: str | None = None  # score-sheet section, e.g. 工作纪律
    points: float = Field(default=0, ge=0, le=100)
    money: float = Field(default=0, ge=0, le=100000)


class Rule(Strict):
    """One rule: a kind of check, its parameters, when it applies, and what it costs."""

    id: Identifier
    kind: RuleKind
    ref: NonEmpty  # the regulation(s) it enforces, e.g. "R11.6; R9 7(2)14"
    title: NonEmpty
    enabled: bool = True
    when: When = When.ALWAYS
    per: Occurrence = Occurrence.SESSION
    categories: list[Category] = Field(default_factory=list)  # forbidden_program, unapproved_software (deny list)
    sources: list[Literal["process", "foreground"]] = Field(default_factory=lambda: ["process", "foreground"])
    mode: SoftwareMode | None = None          # unapproved_software
    grace_minutes: int = Field(default=0, ge=0, le=24 * 60)  # powered_on_after_hours, agent_silent, activity
    informational: bool = False               # recorded, never scored (e.g. network_changed by default)
    attribute_to_owner: bool = False          # R12: the computer's owner is penalised too
    condition: Literal["all", "any", "none"] = "all"
    conditions: list[Condition] = Field(default_factory=list)
    penalty: Penalty = Field(default_factory=Penalty)
    notice: str = Field(default="", max_length=200)  # on-screen text when recorded; "" → agent.notice_default

    @model_validator(mode="after")
    def _parameters(self) -> Rule:
        if self.kind is RuleKind.FORBIDDEN_PROGRAM and not self.categories:
            raise ValueError("a forbidden_program rule needs categories")
        if self.kind is RuleKind.UNAPPROVED_SOFTWARE and self.mode is None:
            raise ValueError("an unapproved_software rule needs mode: allow_list or deny_list")
        return self


class ScoreSection(Strict):
    """A section of the monthly sheet (regulation 9): its points and whether it may go below zero."""

    name: NonEmpty
    points: float = Field(ge=0)
    floor: Literal["none", "zero"] = "none"  # 不设底线 / 扣完为止

    @field_validator("name")
    @classmethod
    def _not_bonus(cls, value: str) -> str:
        if value == BONUS_SECTION:
            raise ValueError(f"{BONUS_SECTION!r} is the name of the bonus column, not of a section")
        return value


BONUS_SECTION = "附加分"  # bonus points: added to the total, outside every section (no floor, no cap)


class PeerReviewBand(Strict):
    """One grade of the peer review (窗口互评): a vote share from ``min_share`` (0–1) up gives ``points``."""

    name: NonEmpty
    min_share: float = Field(ge=0, le=1)
    points: float = Field(ge=0)


def _r9_bands() -> list[PeerReviewBand]:
    return [PeerReviewBand(name="优秀", min_share=0.9, points=10), PeerReviewBand(name="一般", min_share=0.7, points=5),
            PeerReviewBand(name="差", min_share=0, points=0)]


class PeerReview(Strict):
    """The peer review by votes (R9: ≥ 90 % 优秀 10, ≥ 70 % 一般 5, otherwise 差 0): the section it sets."""

    section: NonEmpty = "窗口互评"
    bands: list[PeerReviewBand] = Field(default_factory=_r9_bands, min_length=1)

    @field_validator("bands")
    @classmethod
    def _cover_every_share(cls, bands: list[PeerReviewBand]) -> list[PeerReviewBand]:
        ordered = sorted(bands, key=lambda b: b.min_share, reverse=True)
        if ordered[-1].min_share != 0:
            raise ValueError("the lowest peer-review band must start at min_share 0, so every vote share has a grade")
        if len({b.min_share for b in ordered}) != len(ordered):
            raise ValueError("two peer-review bands start at the same min_share")
        return ordered

    def band(self, share: float) -> PeerReviewBand:
        """The grade of a vote share (0–1)."""
        return next(b for b in self.bands if share >= b.min_share)


class Scoring(Strict):
    """The scoring scheme: points per section (regulation 9) or money per incident (regulation 12)."""

    scheme: Literal["points", "money"] = "points"
    base: float = 100
    sections: list[ScoreSection] = Field(default_factory=list)
    top_n: int = Field(default=3, ge=0)
    counted_statuses: list[Literal["open", "confirmed"]] = Field(default_factory=lambda: ["open", "confirmed"])
    escalate_after: int | None = Field(default=None, ge=1)  # R12: more than N incidents of a kind → 通报主管部门
    currency: str = "CNY"
    # R9 article 8: a person with this many counted violations of one rule in a month is flagged.
    repeat_flag_at: int | None = Field(default=3, ge=1)
    peer_review: PeerReview = Field(default_factory=PeerReview)

    @model_validator(mode="after")
    def _consistent(self) -> Scoring:
        names = [s.name for s in self.sections]
        if len(set(names)) != len(names):
            raise ValueError("two scoring sections have the same name")
        section = next((s for s in self.sections if s.name == self.peer_review.section), None)
        if section is not None and max(b.points for b in self.peer_review.bands) > section.points:
            raise ValueError(f"a peer-review band gives more points than section {section.name!r} has ({section.points:g})")
        return self

    def section(self, name: str) -> ScoreSection | None:
        return next((s for s in self.sections if s.name == name), None)


class AntivirusProduct(Strict):
    name: NonEmpty
    process_names: list[str] = Field(default_factory=list)
    packages: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    max_days_without_scan: int | None = Field(default=None, ge=1)


class AgentSettings(Strict):
    """The agent-side part of a policy, sent to agents through ``FetchPolicy``. Zero keeps the agent's own."""

    report_interval_seconds: int = Field(default=0, ge=0, le=3600)
    heartbeat_interval_seconds: int = Field(default=0, ge=0, le=3600)
    process_poll_interval_seconds: int = Field(default=0, ge=0, le=600)
    session_poll_interval_seconds: int = Field(default=0, ge=0, le=600)
    software_scan_interval_seconds: int = Field(default=0, ge=0, le=86400)
    inventory_interval_seconds: int = Field(default=0, ge=0, le=7 * 86400)
    idle_threshold_seconds: int = Field(default=300, ge=10, le=86400)
    activity_poll_interval_seconds: int = Field(default=0, ge=0, le=600)
    foreground_enabled: bool = False
    foreground_poll_interval_seconds: int = Field(default=0, ge=0, le=600)
    report_titles: bool = False
    antivirus: list[AntivirusProduct] = Field(default_factory=list)
    antivirus_check_interval_seconds: int = Field(default=0, ge=0, le=86400)
    removable_mount_roots: list[str] = Field(default_factory=lambda: ["/media", "/run/media", "/mnt"])
    notices_enabled: bool = False  # tell the person at the screen when a violation is recorded
    notice_default: str = Field(default="您的操作违反了窗口服务制度,本次已记录。", min_length=1, max_length=200)


class Policy(Strict):
    """A whole policy file."""

    id: Identifier  # never reused for another policy
    version: Annotated[str, Field(min_length=1, max_length=64)]
    name: NonEmpty
    description: str = ""
    timezone: str = "Asia/Shanghai"
    calendar: Calendar = Field(default_factory=Calendar)
    timetable: Timetable
    catalogue: Catalogue = Field(default_factory=Catalogue)
    rules: list[Rule] = Field(min_length=1)
    scoring: Scoring = Field(default_factory=Scoring)
    agent: AgentSettings = Field(default_factory=AgentSettings)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)") from None
        return value

    @field_validator("rules")
    @classmethod
    def _unique_rule_ids(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return rules

    @model_validator(mode="after")
    def _sections_exist(self) -> Policy:
        names = {s.name for s in self.scoring.sections}
        for rule in self.rules:
            if rule.penalty.section and names and rule.penalty.section not in names:
                raise ValueError(f"rule {rule.id!r}: penalty section {rule.penalty.section!r} is not one of the "
                                 f"scoring sections ({', '.join(sorted(names))})")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
