"""Recording and reading the organisation: units, windows, staff, posts over time and absences.

Every reference must exist when it is recorded: a staff member's unit, an assignment's staff member
and window, a window's unit. A post (A or B of a window) has one holder on any day: a new holder of
a post that someone holds "until further notice" ends that assignment the day before (the result
says so); any other overlap is a :class:`~controller.errors.Conflict`, never silently resolved.
Window codes are unique whatever their case (agents' windows are matched that way). Each write is
one transaction; the roster CSV import (:mod:`controller.org.roster`) is all or nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from controller.clock import Clock, utc_now
from controller.errors import Conflict, InvalidInput, NotFound
from controller.org.records import ABSENCE, ASSIGNMENT, POSTS, STAFF, UNIT, WINDOW
from controller.org.roster import Problem, RosterRow, read_roster, rejected
from controller.rules.records import ACCOUNT_MAPPING


@dataclass(frozen=True)
class Held:
    """One assignment of a post: who, from, to (inclusive; ``None`` until further notice)."""

    staff: str
    valid_from: dt.date
    valid_to: dt.date | None
    id: int | None = None  # the stored assignment's id (None: not stored yet)
    row: int = 0  # the roster row it comes from (0: not from a file)

    def span(self) -> str:
        return f"from {self.valid_from}" + (f" to {self.valid_to}" if self.valid_to else " until further notice")

    def overlaps(self, other: Held) -> bool:
        return (self.valid_to is None or other.valid_from <= self.valid_to) and \
            (other.valid_to is None or self.valid_from <= other.valid_to)


@dataclass(frozen=True)
class Ended:
    """An open-ended assignment a new one ended the day before it starts."""

    staff: str
    window: str
    post: str
    valid_from: dt.date
    valid_to: dt.date


@dataclass(frozen=True)
class Assigned:
    """An assignment as recorded, and the assignments it ended."""

    id: int
    staff: str
    window: str
    post: str
    valid_from: dt.date
    valid_to: dt.date | None
    ended: tuple[Ended, ...] = ()


@dataclass(frozen=True)
class Imported:
    """What a roster import added: staff, assignments, and the open-ended assignments it ended."""

    staff: int
    assignments: int
    ended: tuple[Ended, ...] = ()


@dataclass(frozen=True)
class StaffHistory:
    """A staff member with every post, absence and OS account they ever had."""

    staff: dict[str, Any]
    assignments: list[dict[str, Any]] = field(default_factory=list)
    absences: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)


def place(post: str, window: str, held: list[Held], new: Held) -> list[Held]:
    """The assignments of ``held`` (one post's) that ``new`` ends; :class:`Conflict` if it clashes with any other."""
    ending = []
    for other in held:
        if not other.overlaps(new):
            continue
        if other.valid_to is None and other.valid_from < new.valid_from and other.staff != new.staff:
            ending.append(other)
            continue
        raise Conflict(f"post {post} of window {window} is held by {other.staff} {other.span()}, which overlaps "
                       f"the new assignment of {new.staff} {new.span()}")
    return ending


def check_span(start: dt.date, end: dt.date | None, what: str) -> None:
    if end is not None and end < start:
        raise InvalidInput(f"the {what} ends ({end}) before it starts ({start})")


def _text(value: str, label: str, limit: int) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidInput(f"a {label} is required")
    if len(value) > limit:
        raise InvalidInput(f"the {label} {value[:20]!r}… is longer than {limit} characters")
    return value


class OrgService:
    """Units, windows, staff, posts and absences; transport-free."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    # ------------------------------------------------------------------ units and windows

    def add_unit(self, code: str, name: str, *, home_department: str = "", by: str = "") -> dict[str, Any]:
        """Add a unit (进驻部门); ``home_department`` receives escalations (通报主管部门)."""
        values = {"code": _text(code, "unit code", 64), "name": _text(name, "unit name", 255),
                  "home_department": home_department.strip()[:255], "created_by": by[:128],
                  "created_at": self._clock()}
        with self._writing(f"unit {values['code']} already exists") as conn:
            if self._unit(conn, values["code"]) is not None:
                raise Conflict(f"unit {values['code']} already exists")
            conn.execute(insert(UNIT).values(**values))
        return values

    def units(self) -> list[dict[str, Any]]:
        """Units with how many staff and windows each has."""
        staff = select(STAFF.c.unit, func.count().label("n")).group_by(STAFF.c.unit).subquery()
        windows = select(WINDOW.c.unit, func.count().label("n")).group_by(WINDOW.c.unit).subquery()
        query = (select(UNIT.c.code, UNIT.c.name, UNIT.c.home_department,
                        func.coalesce(staff.c.n, 0).label("staff"), func.coalesce(windows.c.n, 0).label("windows"))
                 .outerjoin(staff, staff.c.unit == UNIT.c.code).outerjoin(windows, windows.c.unit == UNIT.c.code)
                 .order_by(UNIT.c.code))
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def add_window(self, code: str, *, unit: str | None = None, description: str = "",
                   by: str = "") -> dict[str, Any]:
        """Add a window (counter); its code is the ``window`` its workstations' agents were enrolled with."""
        values = {"code": _text(code, "window code", 64), "unit": (unit or "").strip() or None,
                  "description": description.strip()[:255], "created_by": by[:128], "created_at": self._clock()}
        with self._writing(f"window {values['code']} already exists") as conn:
            existing = self._window(conn, values["code"])
            if existing is not None:
                raise Conflict(f"window {existing} already exists")
            if values["unit"] is not None:
                self._known_unit(conn, values["unit"])
            conn.execute(insert(WINDOW).values(**values))
        return values

    def windows(self, day: dt.date) -> list[dict[str, Any]]:
        """Windows with their unit and the holders of their A and B posts on ``day`` (code, name, absent)."""
        with self._engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                select(WINDOW.c.code, WINDOW.c.unit, WINDOW.c.description).order_by(WINDOW.c.code))]
            posts = self._posts_on(conn, day)
            names = {row.code: row.name for row in conn.execute(select(STAFF.c.code, STAFF.c.name))}
            away = self._away(conn, day)
        for row in rows:
            for post in POSTS:
                row[post] = [{"staff": code, "name": names.get(code, ""), "absent": code in away}
                             for code in posts.get((row["code"], post), [])]
        return rows

    def holders(self, window: str, day: dt.date) -> dict[str, list[str]]:
        """Who holds which post of ``window`` on ``day``: {"A": [...], "B": [...]} (normally one each at most)."""
        with self._engine.connect() as conn:
            code = self._known_window(conn, window)
            posts = self._posts_on(conn, day, code)
        return {post: posts.get((code, post), []) for post in POSTS}

    # ------------------------------------------------------------------ staff

    def add_staff(self, code: str, name: str, unit: str, *, note: str = "", by: str = "") -> dict[str, Any]:
        """Add a staff member (工号 ``code``) of an existing unit."""
        values = {"code": _text(code, "staff code", 64), "name": _text(name, "name", 128),
                  "unit": _text(unit, "unit", 64), "active": True, "note": note.strip()[:255],
                  "created_by": by[:128], "created_at": self._clock()}
        taken = f"staff member {values['code']} already exists; see `counterguard staff show {values['code']}`"
        with self._writing(taken) as conn:
            self._known_unit(conn, values["unit"])
            if self._staff(conn, values["code"]) is not None:
                raise Conflict(taken)
            conn.execute(insert(STAFF).values(**values))
        return values

    def staff_list(self, day: dt.date, unit: str | None = None) -> list[dict[str, Any]]:
        """Staff (of ``unit``), each with the posts they hold and whether they are away on ``day``."""
        query = select(STAFF.c.code, STAFF.c.name, STAFF.c.unit, STAFF.c.active, STAFF.c.note).order_by(STAFF.c.code)
        with self._engine.connect() as conn:
            if unit:
                self._known_unit(conn, unit)
                query = query.where(STAFF.c.unit == unit)
            rows = [dict(r._mapping) for r in conn.execute(query)]
            posts = self._posts_on(conn, day)
            away = self._away(conn, day)
        held: dict[str, list[str]] = {}
        for (window, post), codes in sorted(posts.items()):
            for code in codes:
                held.setdefault(code, []).append(f"{window} {post}")
        for row in rows:
            row["posts"] = held.get(row["code"], [])
            row["absent"] = row["code"] in away
        return rows

    def history(self, code: str) -> StaffHistory:
        """One staff member with every post, absence and account mapping they ever had."""
        with self._engine.connect() as conn:
            row = self._staff(conn, code)
            if row is None:
                raise NotFound(f"no staff member {code!r}; see `counterguard staff list`")

            def rows(table: Any, where: Any, *order: Any) -> list[dict[str, Any]]:
                return [dict(r._mapping) for r in conn.execute(select(table).where(where).order_by(*order))]

            return StaffHistory(
                dict(row._mapping),
                rows(ASSIGNMENT, ASSIGNMENT.c.staff == code, ASSIGNMENT.c.valid_from, ASSIGNMENT.c.id),
                rows(ABSENCE, ABSENCE.c.staff == code, ABSENCE.c.starts_on, ABSENCE.c.id),
                rows(ACCOUNT_MAPPING, ACCOUNT_MAPPING.c.staff == code, ACCOUNT_MAPPING.c.account, ACCOUNT_MAPPING.c.id),
            )

    # ------------------------------------------------------------------ posts and absences

    def assign(self, staff: str, window: str, post: str, valid_from: dt.date, valid_to: dt.date | None = None, *,
               by: str = "") -> Assigned:
        """Give ``staff`` post A or B of ``window`` from ``valid_from`` to ``valid_to`` (inclusive; None: until
        further notice)."""
        post = (post or "").strip().upper()
        if post not in POSTS:
            raise InvalidInput(f"post {post!r} is not A or B")
        check_span(valid_from, valid_to, "assignment")
        with self._engine.begin() as conn:
            if self._staff(conn, staff) is None:
                raise NotFound(f"no staff member {staff!r}; add them with `counterguard staff add`")
            code = self._known_window(conn, window, lock=True)
            new = Held(staff, valid_from, valid_to)
            ended = [self._end(conn, code, post, old, valid_from - dt.timedelta(days=1))
                     for old in place(post, code, self._held(conn, code, post), new)]
            key = self._insert_assignment(conn, code, post, new, by)
        return Assigned(key, staff, code, post, valid_from, valid_to, tuple(ended))

    def _end(self, conn: Connection, window: str, post: str, old: Held, last: dt.date) -> Ended:
        """End a stored open-ended assignment on ``last`` (its successor starts the day after)."""
        conn.execute(update(ASSIGNMENT).where(ASSIGNMENT.c.id == old.id).values(valid_to=last))
        return Ended(old.staff, window, post, old.valid_from, last)

    def _insert_assignment(self, conn: Connection, window: str, post: str, new: Held, by: str) -> int:
        return int(conn.execute(insert(ASSIGNMENT).values(
            staff=new.staff, window=window, post=post, valid_from=new.valid_from, valid_to=new.valid_to,
            created_by=by[:128], created_at=self._clock()).returning(ASSIGNMENT.c.id)).scalar_one())

    def leave(self, staff: str, starts_on: dt.date, ends_on: dt.date, reason: str, *, by: str = "") -> dict[str, Any]:
        """Record that ``staff`` is away from ``starts_on`` to ``ends_on`` (inclusive): their B post takes over."""
        check_span(starts_on, ends_on, "absence")
        values = {"staff": staff, "starts_on": starts_on, "ends_on": ends_on,
                  "reason": _text(reason, "reason (e.g. 年假, 病假, 培训)", 255), "created_by": by[:128],
                  "created_at": self._clock()}
        with self._engine.begin() as conn:
            if self._staff(conn, staff) is None:
                raise NotFound(f"no staff member {staff!r}; see `counterguard staff list`")
            values["id"] = int(conn.execute(insert(ABSENCE).values(**values).returning(ABSENCE.c.id)).scalar_one())
        return values

    # ------------------------------------------------------------------ the roster file

    def import_staff(self, path: Path, *, by: str = "") -> Imported:
        """Import a centre's roster CSV: every row checked first, then all written in one transaction, or nothing."""
        rows, problems = read_roster(path)
        with self._engine.begin() as conn:
            units = set(conn.execute(select(UNIT.c.code)).scalars())
            existing = set(conn.execute(select(STAFF.c.code)).scalars())
            windows = {code.lower(): code for code in conn.execute(select(WINDOW.c.code)).scalars()}
            held: dict[tuple[str, str], list[Held]] = {}
            for row in rows:
                found = []
                if row.unit not in units:
                    found.append(("unit", f"no unit {row.unit!r}; add it with `counterguard unit add`"))
                if row.code in existing:
                    found.append(("code", f"staff member {row.code} already exists"))
                window = windows.get(row.window.lower(), "")
                if row.window and not window:
                    found.append(("window", f"no window {row.window!r}; add it with `counterguard window add`"))
                if not found and window:
                    found += self._place_row(conn, held, row, window)
                problems += [Problem(path, row.row, name, reason) for name, reason in found]
            if problems:
                raise rejected(path, sorted(problems, key=lambda p: p.row))
            return self._write_roster(conn, rows, held, by)

    def _place_row(self, conn: Connection, held: dict[tuple[str, str], list[Held]], row: RosterRow,
                   window: str) -> list[tuple[str, str]]:
        """Fit the row's post among those held (stored, and given by earlier rows); the conflict if it does not fit."""
        key = (window, row.post)
        if key not in held:
            held[key] = self._held(conn, window, row.post)
        if row.valid_from is None:  # read_roster gives every row with a window its first day
            return [("from", "required for a row with a window")]
        new = Held(row.code, row.valid_from, row.valid_to, row=row.row)
        try:
            ending = place(row.post, window, held[key], new)
        except Conflict as exc:
            return [("post", str(exc))]
        last = row.valid_from - dt.timedelta(days=1)
        held[key] = [dataclasses.replace(h, valid_to=last) if h in ending else h for h in held[key]] + [new]
        return []

    def _write_roster(self, conn: Connection, rows: list[RosterRow], held: dict[tuple[str, str], list[Held]],
                      by: str) -> Imported:
        """Write the checked rows: staff, then each post's new assignments and the stored ones they end."""
        if rows:
            conn.execute(insert(STAFF), [{"code": r.code, "name": r.name, "unit": r.unit, "active": True, "note": "",
                                          "created_by": by[:128], "created_at": self._clock()} for r in rows])
        ended, added = [], 0
        for (window, post), posts in held.items():
            stored = {h.id: h for h in self._held(conn, window, post)}
            for h in posts:
                if h.id is None:
                    self._insert_assignment(conn, window, post, h, by)
                    added += 1
                elif h.valid_to is not None and h.valid_to != stored[h.id].valid_to:
                    ended.append(self._end(conn, window, post, h, h.valid_to))
        return Imported(len(rows), added, tuple(ended))

    # ------------------------------------------------------------------ lookups (inside a transaction)

    @contextmanager
    def _writing(self, taken: str) -> Iterator[Connection]:
        """A transaction whose unique-key clash (someone added the same code just now) is a :class:`Conflict`."""
        try:
            with self._engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise Conflict(taken) from None

    def _unit(self, conn: Connection, code: str) -> Any:
        return conn.execute(select(UNIT.c.code).where(UNIT.c.code == code)).one_or_none()

    def _known_unit(self, conn: Connection, code: str) -> None:
        if self._unit(conn, code) is None:
            raise NotFound(f"no unit {code!r}; add it with `counterguard unit add` (see `counterguard unit list`)")

    def _staff(self, conn: Connection, code: str) -> Any:
        return conn.execute(select(STAFF).where(STAFF.c.code == code)).one_or_none()

    def _window(self, conn: Connection, code: str, *, lock: bool = False) -> str | None:
        query = select(WINDOW.c.code).where(func.lower(WINDOW.c.code) == code.strip().lower())
        return conn.execute(query.with_for_update() if lock else query).scalar_one_or_none()

    def _known_window(self, conn: Connection, code: str, *, lock: bool = False) -> str:
        found = self._window(conn, code, lock=lock)
        if found is None:
            raise NotFound(f"no window {code!r}; add it with `counterguard window add` "
                           "(see `counterguard window list`)")
        return found

    def _held(self, conn: Connection, window: str, post: str) -> list[Held]:
        query = select(ASSIGNMENT).where(ASSIGNMENT.c.window == window, ASSIGNMENT.c.post == post)
        return [Held(r.staff, r.valid_from, r.valid_to, r.id) for r in conn.execute(query.order_by(ASSIGNMENT.c.id))]

    def _away(self, conn: Connection, day: dt.date) -> set[str]:
        query = select(ABSENCE.c.staff).where(ABSENCE.c.starts_on <= day, ABSENCE.c.ends_on >= day)
        return set(conn.execute(query).scalars())

    def _posts_on(self, conn: Connection, day: dt.date, window: str | None = None) -> dict[tuple[str, str], list[str]]:
        query = select(ASSIGNMENT.c.window, ASSIGNMENT.c.post, ASSIGNMENT.c.staff).where(
            ASSIGNMENT.c.valid_from <= day, (ASSIGNMENT.c.valid_to.is_(None)) | (ASSIGNMENT.c.valid_to >= day))
        if window is not None:
            query = query.where(ASSIGNMENT.c.window == window)
        found: dict[tuple[str, str], list[str]] = {}
        for row in conn.execute(query.order_by(ASSIGNMENT.c.staff)):
            found.setdefault((row.window, row.post), []).append(row.staff)
        return found
