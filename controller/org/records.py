"""Database tables of the organisation model: units, windows, staff, their posts over time, absences.

Codes are what people type and what CSV files carry: a unit's code (e.g. ``tax``), a window's
counter number (``A03``, the same string as an agent's ``window``), a staff member's 工号. Rows
refer to each other by code. Posts and absences are kept by local date (the policy's time zone):
``valid_to`` / ``ends_on`` are inclusive and empty means "until further notice". Nothing is deleted:
an assignment ends by getting a ``valid_to``, so "who sat where on 3 November" has one answer
forever. OS accounts map to staff codes in ``account_mapping`` (see :mod:`controller.rules.records`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import BigInteger, Column, Date, Index, Integer, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

from controller.db import UTCDateTime

BigId = BigInteger().with_variant(Integer(), "sqlite")
POSTS = ("A", "B")  # A岗 (main post) / B岗 (substitute: takes over when A is absent)


def _utc() -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=False))


def _id() -> Any:
    return Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))


class Unit(SQLModel, table=True):
    """A 进驻部门: the department that staffs windows; ``home_department`` receives escalations (通报主管部门)."""

    __tablename__ = "unit"
    __table_args__ = (UniqueConstraint("code", name="uq_unit_code"),)

    id: int | None = _id()
    code: str = Field(max_length=64)
    name: str = Field(max_length=255)
    home_department: str = Field(default="", max_length=255)
    created_by: str = Field(default="", max_length=128)
    created_at: dt.datetime = _utc()


class Window(SQLModel, table=True):
    """A service window (counter): its number is the ``window`` of the agents on its workstations."""

    __tablename__ = "service_window"
    __table_args__ = (UniqueConstraint("code", name="uq_service_window_code"),)

    id: int | None = _id()
    code: str = Field(max_length=64)
    unit: str | None = Field(default=None, max_length=64)  # unit code
    description: str = Field(default="", max_length=255)
    created_by: str = Field(default="", max_length=128)
    created_at: dt.datetime = _utc()


class Staff(SQLModel, table=True):
    """A staff member (工号 ``code``) of a unit."""

    __tablename__ = "staff"
    __table_args__ = (UniqueConstraint("code", name="uq_staff_code"),)

    id: int | None = _id()
    code: str = Field(max_length=64)
    name: str = Field(max_length=128)
    unit: str = Field(max_length=64)  # unit code
    active: bool = True
    note: str = Field(default="", max_length=255)
    created_by: str = Field(default="", max_length=128)
    created_at: dt.datetime = _utc()


class Assignment(SQLModel, table=True):
    """Staff member ``staff`` holds post A or B of ``window`` from ``valid_from`` to ``valid_to`` (inclusive)."""

    __tablename__ = "assignment"
    __table_args__ = (
        Index("ix_assignment_window", "window", "valid_from"),
        Index("ix_assignment_staff", "staff", "valid_from"),
    )

    id: int | None = _id()
    staff: str = Field(max_length=64)
    window: str = Field(max_length=64)
    post: str = Field(max_length=1)
    valid_from: dt.date = Field(sa_column=Column(Date(), nullable=False))
    valid_to: dt.date | None = Field(default=None, sa_column=Column(Date(), nullable=True))
    created_by: str = Field(default="", max_length=128)
    created_at: dt.datetime = _utc()


class Absence(SQLModel, table=True):
    """Staff member ``staff`` is away (leave, training …) from ``starts_on`` to ``ends_on`` (inclusive)."""

    __tablename__ = "absence"
    __table_args__ = (Index("ix_absence_staff", "staff", "starts_on"),)

    id: int | None = _id()
    staff: str = Field(max_length=64)
    starts_on: dt.date = Field(sa_column=Column(Date(), nullable=False))
    ends_on: dt.date = Field(sa_column=Column(Date(), nullable=False))
    reason: str = Field(default="", max_length=255)
    created_by: str = Field(default="", max_length=128)
    created_at: dt.datetime = _utc()


UNIT = cast(Table, Unit.__table__)  # type: ignore[attr-defined]
WINDOW = cast(Table, Window.__table__)  # type: ignore[attr-defined]
STAFF = cast(Table, Staff.__table__)  # type: ignore[attr-defined]
ASSIGNMENT = cast(Table, Assignment.__table__)  # type: ignore[attr-defined]
ABSENCE = cast(Table, Absence.__table__)  # type: ignore[attr-defined]
