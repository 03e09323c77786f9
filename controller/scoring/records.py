"""Database tables of the score sheet: manual entries, closed months and the months' history.

Violations are not copied here: a month's sheet is computed from the violations, the organisation
and the manual entries whenever it is asked for, until the month is closed. Closing stores the
whole sheet as JSON (with the policy it was computed under) in ``score_month``; from then on the
month is read from that copy, whatever changes later. Reopening deletes the copy; every close and
reopen is kept in ``score_month_event`` with who, when and why.

A manual entry is what the system cannot observe (dress, attendance, peer-review votes, bonus
points 附加分, an article-8 disqualification): signed points (negative: a deduction; positive: bonus)
or, under the money scheme, a signed amount in yuan (``unit`` says which), always with the
regulation it applies, who entered it and the file and row it came from. Every constraint and index is named explicitly.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

from controller.db import UTCDateTime

BigId = BigInteger().with_variant(Integer(), "sqlite")
MONTH_ACTIONS = ("close", "reopen")


def _utc() -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=False))


def _id() -> Any:
    return Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))


class ScoreEntry(SQLModel, table=True):
    """One manual line of a month's sheet for one staff member."""

    __tablename__ = "score_entry"
    __table_args__ = (Index("ix_score_entry_month_staff", "month", "staff"),)

    id: int | None = _id()
    month: str = Field(max_length=7)  # YYYY-MM
    staff: str = Field(max_length=64)  # staff code (工号)
    section: str = Field(default="", max_length=64)  # a policy section, 附加分, or "" (a flag alone; money)
    points: float = 0  # signed: negative deducts, positive is bonus (附加分); yuan under the money scheme
    unit: str = Field(default="points", max_length=8)  # points | yuan: the scheme it was entered under
    votes_for: int | None = None  # peer review (窗口互评): favourable votes …
    votes_total: int | None = None  # … of all votes cast
    flag: str = Field(default="", max_length=255)  # an article-8 disqualification entered by hand
    ref: str = Field(max_length=255)  # the regulation it applies, e.g. R9 7(1)3
    reason: str = Field(default="", max_length=500)
    entered_by: str = Field(max_length=128)
    entered_at: dt.datetime = _utc()
    source_file: str = Field(default="", max_length=500)
    source_row: int | None = None
    source_sha256: str = Field(default="", max_length=64)  # of the whole file: one file is imported once a month


class ScoreMonth(SQLModel, table=True):
    """A closed month: its sheet frozen as JSON, computed under ``policy_id`` ``policy_version``."""

    __tablename__ = "score_month"
    __table_args__ = (UniqueConstraint("month", name="uq_score_month_month"),)

    id: int | None = _id()
    month: str = Field(max_length=7)
    closed_at: dt.datetime = _utc()
    closed_by: str = Field(max_length=128)
    reason: str = Field(default="", max_length=500)
    policy_id: str = Field(max_length=64)
    policy_version: str = Field(max_length=64)
    sheet: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON(), nullable=False))


class ScoreMonthEvent(SQLModel, table=True):
    """A close or a reopen of a month: who, when, why (and for a close, which policy and which sheet)."""

    __tablename__ = "score_month_event"
    __table_args__ = (Index("ix_score_month_event_month", "month"),)

    id: int | None = _id()
    month: str = Field(max_length=7)
    action: str = Field(max_length=16)  # close | reopen
    by: str = Field(max_length=128)
    at: dt.datetime = _utc()
    reason: str = Field(default="", max_length=500)
    policy_id: str = Field(default="", max_length=64)
    policy_version: str = Field(default="", max_length=64)
    sheet_sha256: str = Field(default="", max_length=64)  # of the frozen sheet's JSON (close only)


SCORE_ENTRY = cast(Table, ScoreEntry.__table__)  # type: ignore[attr-defined]
SCORE_MONTH = cast(Table, ScoreMonth.__table__)  # type: ignore[attr-defined]
SCORE_MONTH_EVENT = cast(Table, ScoreMonthEvent.__table__)  # type: ignore[attr-defined]
