"""Who a violation counts against: the person using the workstation, and (R12) the workstation's owner.

Never guess. A violation is attributed from what the engine stored with it (the OS accounts its
evidence names, or the sessions open on the workstation at that moment: ``Violation.accounts``),
the account mappings, and the posts and absences on its local date:

1. **Accounts.** Each account maps (``account_mapping``, valid at ``occurred_at``) to staff codes;
   names compare case-insensitively, and a Windows ``DOMAIN\\user`` not mapped as such as ``user``.
   Exactly one person → the user. Several people (an account shared by two, or two accounts
   logged in) → only those among them who hold a post of the violation's window that day and are
   not absent; exactly one left → the user, otherwise unattributed ("account x is used by S1
   and S2; neither was on duty at window W on D"). An account that maps to nobody (an
   outsider, R11.3) → unattributed, saying so: the post on duty is NOT blamed for it.
2. **No account** (the engine knew none: a PC left on overnight, a device plugged in before
   anyone logged in) → the post on duty at the window that day: the A post, or the B post when the
   A post holder is absent (or there is no A post). Nobody on duty, or two people holding the same
   post → unattributed, saying why.
3. **Owner** (only when the violation's rule has ``attribute_to_owner``, R12 3(4)2): the A post
   holder of the window that day, absent or not (the person the computer is issued to). When the
   owner is also the user they are listed once, as the user (one person, one incident).

The window of a violation is its workstation's (``agent.window``); the date is its ``local_date``.
:class:`OrgDirectory` loads the organisation once and attributes any number of violations in
memory, so a month's sheet for a thousand people costs one read of each table.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.engine import Connection

from controller.org.records import ABSENCE, ASSIGNMENT, POSTS, STAFF, WINDOW
from controller.rules.records import ACCOUNT_MAPPING

Role = Literal["user", "owner"]


@dataclass(frozen=True)
class AttributionInput:
    """What attribution needs of a stored violation."""

    violation_id: int
    window: str                      # the workstation's window code ("" when the agent has none)
    local_date: dt.date
    occurred_at: dt.datetime         # UTC
    accounts: tuple[str, ...] = ()   # OS accounts the engine stored with the violation
    attribute_to_owner: bool = False


@dataclass(frozen=True)
class Attributed:
    """One person a violation counts against, and in which role, with how we know (shown on the sheet)."""

    staff: str  # staff code (工号)
    role: Role
    how: str    # e.g. "account zhangsan", "B post on duty at window A03 (A post holder S001 absent)"


@dataclass(frozen=True)
class Attribution:
    """The people a violation counts against; ``unattributed`` says why no user was identified ("" if one was)."""

    violation_id: int
    people: tuple[Attributed, ...]
    unattributed: str = ""

    @property
    def user(self) -> Attributed | None:
        return next((p for p in self.people if p.role == "user"), None)


@dataclass(frozen=True)
class _Post:
    staff: str
    post: str
    valid_from: dt.date
    valid_to: dt.date | None

    def covers(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


@dataclass(frozen=True)
class _Mapping:
    staff: str
    valid_from: dt.datetime | None
    valid_to: dt.datetime | None

    def covers(self, moment: dt.datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= moment) and \
            (self.valid_to is None or moment < self.valid_to)


@dataclass(frozen=True)
class StaffInfo:
    """A staff member as the directory knows them."""

    code: str
    name: str
    unit: str
    active: bool


def _listing(codes: Sequence[str]) -> str:
    """``S1``, ``S1 and S2``, ``S1, S2 and S3``."""
    return codes[0] if len(codes) == 1 else f"{', '.join(codes[:-1])} and {codes[-1]}"


def _accounts(names: Sequence[str], one: str = "is", several: str = "are") -> str:
    """``account x is`` / ``accounts x and y are`` (the verb left out when empty)."""
    text = f"account {names[0]}" if len(names) == 1 else f"accounts {_listing(names)}"
    verb = one if len(names) == 1 else several
    return f"{text} {verb}" if verb else text


class OrgDirectory:
    """The organisation as of one read: account mappings, posts and absences, queried in memory."""

    def __init__(self, staff: Sequence[StaffInfo] = (), windows: dict[str, str | None] | None = None) -> None:
        self._staff = {s.code: s for s in staff}
        self._windows = {code.casefold(): unit for code, unit in (windows or {}).items()}
        self._posts: dict[str, list[_Post]] = defaultdict(list)
        self._absences: dict[str, list[tuple[dt.date, dt.date]]] = defaultdict(list)
        self._accounts: dict[str, list[_Mapping]] = defaultdict(list)
        self._posts_on: dict[tuple[str, dt.date], dict[str, list[str]]] = {}  # memo: the tables never change
        self._duty: dict[tuple[str, dt.date], tuple[str | None, str]] = {}

    @classmethod
    def load(cls, conn: Connection) -> OrgDirectory:
        """Read the account mappings, assignments, absences, windows and staff once."""
        staff = [StaffInfo(r.code, r.name, r.unit, bool(r.active))
                 for r in conn.execute(select(STAFF.c.code, STAFF.c.name, STAFF.c.unit, STAFF.c.active))]
        windows = {r.code: r.unit for r in conn.execute(select(WINDOW.c.code, WINDOW.c.unit))}
        directory = cls(staff, windows)
        for r in conn.execute(select(ASSIGNMENT.c.staff, ASSIGNMENT.c.window, ASSIGNMENT.c.post,
                                     ASSIGNMENT.c.valid_from, ASSIGNMENT.c.valid_to)):
            directory._posts[r.window.casefold()].append(_Post(r.staff, r.post, r.valid_from, r.valid_to))
        for r in conn.execute(select(ABSENCE.c.staff, ABSENCE.c.starts_on, ABSENCE.c.ends_on)):
            directory._absences[r.staff].append((r.starts_on, r.ends_on))
        for r in conn.execute(select(ACCOUNT_MAPPING.c.account, ACCOUNT_MAPPING.c.staff, ACCOUNT_MAPPING.c.valid_from,
                                     ACCOUNT_MAPPING.c.valid_to)):
            directory._accounts[r.account.strip().casefold()].append(_Mapping(r.staff, r.valid_from, r.valid_to))
        return directory

    # ------------------------------------------------------------------ lookups

    def staff(self, code: str) -> StaffInfo | None:
        """The staff member with this code, if on the staff list."""
        return self._staff.get(code)

    def label(self, code: str) -> str:
        """``S001 张三`` (the code alone when the name is unknown)."""
        info = self._staff.get(code)
        return f"{code} {info.name}" if info else code

    def window_unit(self, window: str) -> str | None:
        """The unit that staffs ``window`` (``None`` when unknown or unset)."""
        return self._windows.get(window.casefold())

    def holders(self, window: str, day: dt.date, post: str) -> list[str]:
        """Staff codes holding ``post`` (A or B) of ``window`` on ``day``, sorted (normally zero or one)."""
        key = (window.casefold(), day)
        posts = self._posts_on.get(key)
        if posts is None:
            found: dict[str, set[str]] = defaultdict(set)
            for held in self._posts.get(key[0], ()):
                if held.covers(day):
                    found[held.post].add(held.staff)
            posts = self._posts_on[key] = {name: sorted(codes) for name, codes in found.items()}
        return posts.get(post, [])

    def absent(self, staff: str, day: dt.date) -> bool:
        """Whether ``staff`` is recorded as away on ``day``."""
        return any(start <= day <= end for start, end in self._absences.get(staff, ()))

    def account_staff(self, account: str, moment: dt.datetime) -> list[str]:
        """Staff codes ``account`` maps to at ``moment``, sorted: names compare case-insensitively, and a
        Windows ``DOMAIN\\user`` is looked up as ``user`` when the whole name is not mapped."""
        name = account.strip().casefold()
        mappings = self._accounts.get(name) or self._accounts.get(name.rpartition("\\")[2], ())
        if len(mappings) == 1:
            return [mappings[0].staff] if mappings[0].covers(moment) else []
        return sorted({m.staff for m in mappings if m.covers(moment)})

    def staff_in_unit(self, unit: str | None, day: dt.date) -> list[str]:
        """Staff codes of ``unit`` (all units when ``None``) who are active members on ``day``, sorted.

        The staff table keeps no membership dates: an active staff member is a member on every day.
        """
        return sorted(s.code for s in self._staff.values() if s.active and (unit is None or s.unit == unit))

    # ------------------------------------------------------------------ posts

    def on_duty(self, window: str, day: dt.date) -> tuple[str | None, str]:
        """The staff code on duty at ``window`` on ``day`` (A, or B when A is absent) and how; ``None`` + why if
        nobody."""
        key = (window, day)
        if key not in self._duty:
            self._duty[key] = self._find_on_duty(window, day)
        return self._duty[key]

    def _find_on_duty(self, window: str, day: dt.date) -> tuple[str | None, str]:
        if not window:
            return None, "the workstation is not at any window"
        a_post = self.holders(window, day, "A")
        if len(a_post) > 1:
            return None, f"{_listing(a_post)} all hold the A post of window {window} on {day}"
        if a_post and not self.absent(a_post[0], day):
            return a_post[0], f"A post on duty at window {window}"
        b_post = self.holders(window, day, "B")
        why_a = f"A post holder {a_post[0]} absent" if a_post else "no A post holder"
        if len(b_post) > 1:
            return None, f"{why_a} and {_listing(b_post)} all hold the B post of window {window} on {day}"
        if b_post and not self.absent(b_post[0], day):
            return b_post[0], f"B post on duty at window {window} ({why_a})"
        if b_post:
            return None, f"window {window} had nobody on duty on {day}: {why_a}, B post holder {b_post[0]} absent"
        if a_post:
            return None, f"window {window} had nobody on duty on {day}: {why_a} and there is no B post"
        return None, f"nobody holds a post of window {window} on {day}"

    def owner(self, window: str, day: dt.date) -> str | None:
        """The A post holder of ``window`` on ``day`` (absent or not); ``None`` when there is none or several."""
        a_post = self.holders(window, day, "A") if window else []
        return a_post[0] if len(a_post) == 1 else None

    def _on_post(self, staff: str, window: str, day: dt.date) -> bool:
        return bool(window) and not self.absent(staff, day) and any(
            staff in self.holders(window, day, post) for post in POSTS)

    # ------------------------------------------------------------------ attribution

    def _user_by_accounts(self, v: AttributionInput, accounts: list[str]) -> tuple[Attributed | None, str]:
        people = {a: self.account_staff(a, v.occurred_at) for a in accounts}
        outsiders = [a for a, staff in people.items() if not staff]
        if outsiders:
            return None, f"{_accounts(outsiders)} not mapped to any staff member (an outsider, R11.3)"
        named = sorted({s for staff in people.values() for s in staff})
        unknown = [s for s in named if s not in self._staff]
        if unknown:
            return None, f"{_accounts(accounts, 'maps', 'map')} to {_listing(unknown)}, not on the staff list"
        if len(named) == 1:
            return Attributed(named[0], "user", _accounts(accounts, "", "")), ""
        return self._shared(v, accounts, named)

    def _shared(self, v: AttributionInput, accounts: list[str], named: list[str]) -> tuple[Attributed | None, str]:
        """Several people behind the accounts: the one of them on a post of the window that day, if exactly one."""
        how = _accounts(accounts, "", "")
        on_post = [s for s in named if self._on_post(s, v.window, v.local_date)]
        if len(on_post) == 1:
            others = [s for s in named if s != on_post[0]]
            verb = "was" if len(others) == 1 else "were"
            return Attributed(on_post[0], "user", f"{how}, shared with {_listing(others)}, who {verb} not on duty "
                                                  f"at window {v.window}"), ""
        if not on_post:
            state = "neither was" if len(named) == 2 else "none of them was"
        else:
            state = f"{_listing(on_post)} were {'both' if len(on_post) == 2 else 'all'}"
        where = f"window {v.window}" if v.window else "any window (the workstation has none)"
        return None, f"{_accounts(accounts)} used by {_listing(named)}; {state} on duty at {where} on {v.local_date}"

    def attribute(self, violation: AttributionInput) -> Attribution:
        """Attribute one violation by the rules in this module's docstring."""
        v = violation
        accounts = [a.strip() for a in v.accounts]
        if len(accounts) > 1 or (accounts and not accounts[0]):
            accounts = list(dict.fromkeys(a for a in accounts if a))
        if accounts:
            user, why = self._user_by_accounts(v, accounts)
        else:
            code, how = self.on_duty(v.window, v.local_date)
            user, why = (Attributed(code, "user", how), "") if code else (None, f"no account is known and {how}")
        people = [user] if user else []
        if v.attribute_to_owner:
            owner = self.owner(v.window, v.local_date)
            if owner is not None and (user is None or owner != user.staff):
                people.append(Attributed(owner, "owner", f"A post holder of window {v.window} (the computer's owner)"))
        return Attribution(v.violation_id, tuple(people), why)

    def attribute_all(self, violations: Sequence[AttributionInput]) -> dict[int, Attribution]:
        return {v.violation_id: self.attribute(v) for v in violations}
