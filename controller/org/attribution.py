"""Who a violation counts against: the person using the workstation, and (R12) the workstation's owner.

Never guess. A violation is attributed from what the engine stored with it (the OS accounts its
evidence names, or the sessions open on the workstation at that moment: ``Violation.accounts``),
the account mappings, and the posts and absences on its local date:

1. **Accounts.** Each account maps (``account_mapping``, valid at ``occurred_at``) to staff codes.
   Exactly one person → the user. Several people (an account shared by two, or two accounts
   logged in) → only those among them who hold a post of the violation's window that day and are
   not absent; exactly one left → the user, otherwise unattributed ("account x is shared by S1
   and S2; neither / both were on duty at window W"). An account that maps to nobody (an
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.engine import Connection

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


class OrgDirectory:
    """The organisation as of one read: account mappings, posts and absences, queried in memory."""

    @classmethod
    def load(cls, conn: Connection) -> OrgDirectory:
        """Read the account mappings, assignments, absences, windows and staff once."""
        raise NotImplementedError

    def attribute(self, violation: AttributionInput) -> Attribution:
        """Attribute one violation by the rules in this module's docstring."""
        raise NotImplementedError

    def attribute_all(self, violations: Sequence[AttributionInput]) -> dict[int, Attribution]:
        return {v.violation_id: self.attribute(v) for v in violations}

    def on_duty(self, window: str, day: dt.date) -> tuple[str | None, str]:
        """The staff code on duty at ``window`` on ``day`` (A, or B when A is absent) and how; ``None`` + why if nobody."""
        raise NotImplementedError

    def owner(self, window: str, day: dt.date) -> str | None:
        """The A post holder of ``window`` on ``day`` (absent or not); ``None`` when there is none or several."""
        raise NotImplementedError

    def staff_in_unit(self, unit: str | None, day: dt.date) -> list[str]:
        """Staff codes of ``unit`` (all units when ``None``) who are active members on ``day``, sorted."""
        raise NotImplementedError
