"""Manual entries from a CSV file: how a file is read and what a good row is.

The file is UTF-8 (with or without the BOM Excel and WPS write) or GB18030 (what Chinese Excel
saves as "CSV"). The first row names the columns, in English or in Chinese:

============  =====================  ===========================================================
column        also                   what
============  =====================  ===========================================================
staff         工号                   the staff code (required; must be in the staff table)
name          姓名                   optional; when given it must be the staff member's name
section       项目, 考核项目         a section of the policy, 附加分 (bonus), or empty
points        分值, 金额             signed: negative deducts, positive is bonus (附加分 only);
                                     under the money scheme, yuan (negative charges the person)
votes         票数, 互评票数         peer review: favourable/total, e.g. 18/20 (窗口互评)
flag          标记, 取消评优         an article-8 disqualification, e.g. 服务对象不满意3次
ref           依据                   the regulation applied, e.g. R9 7(1)3 (required)
reason        事由, 说明             what happened
entered_by    录入人                 who entered it (default: the person importing)
============  =====================  ===========================================================

Every bad row is reported as ``FILE:ROW: field: reason`` (ROW counts the heading as row 1) and
nothing is imported unless every row is good.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping
from typing import Any

from controller.errors import InvalidInput
from controller.policy.model import BONUS_SECTION, Scoring
from controller.scoring.model import StaffInfo

COLUMNS: dict[str, tuple[str, ...]] = {
    "staff": ("工号",),
    "name": ("姓名",),
    "section": ("项目", "考核项目"),
    "points": ("分值", "金额"),
    "votes": ("票数", "互评票数"),
    "flag": ("标记", "取消评优"),
    "ref": ("依据",),
    "reason": ("事由", "说明"),
    "entered_by": ("录入人",),
}
_ALIASES = {alias: name for name, aliases in COLUMNS.items() for alias in (name, *aliases)}
_VOTES = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_LIMITS = {"flag": 255, "ref": 255, "reason": 500, "entered_by": 128}
MAX_POINTS = 1000
MAX_MONEY = 1_000_000


class _Bad(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


def decode(data: bytes, name: str) -> str:
    """The text of a CSV file: UTF-8 (BOM or not), else GB18030."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for encoding in ("utf-8", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise InvalidInput(f"{name}: the file is neither UTF-8 nor GB18030 text")


def parse_entries(data: bytes, name: str, scoring: Scoring, staff: Mapping[str, StaffInfo],
                  default_by: str) -> list[dict[str, Any]]:
    """The rows of a manual-entry file as column values; :class:`InvalidInput` naming every bad row."""
    reader = csv.reader(io.StringIO(decode(data, name), newline=""))
    header = next(reader, None)
    if header is None:
        raise InvalidInput(f"{name}: the file is empty; the first row names the columns ({', '.join(COLUMNS)})")
    columns = _columns(header, name)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(columns):
            problems.append(f"{name}:{number}: row: {len(cells)} cells for {len(columns)} columns")
            continue
        values = {column: (cells[i].strip() if i < len(cells) else "") for i, column in enumerate(columns)}
        try:
            rows.append({**_row(values, scoring, staff, default_by), "source_row": number})
        except _Bad as bad:
            problems.append(f"{name}:{number}: {bad}")
    if problems:
        count = f"{len(problems)} bad row{'s' if len(problems) != 1 else ''}"
        raise InvalidInput(f"{name} has {count}; nothing was imported:\n" + "\n".join(problems))
    if not rows:
        raise InvalidInput(f"{name}: no entries below the heading row")
    return rows


def _columns(header: list[str], name: str) -> list[str]:
    columns = []
    for cell in header:
        column = _ALIASES.get(cell.strip().lstrip("\ufeff").lower()) or _ALIASES.get(cell.strip())
        if column is None:
            raise InvalidInput(f"{name}:1: column {cell.strip()!r} is not one of {', '.join(COLUMNS)} "
                               "(or their Chinese names)")
        if column in columns:
            raise InvalidInput(f"{name}:1: column {column!r} appears twice")
        columns.append(column)
    for required in ("staff", "ref"):
        if required not in columns:
            raise InvalidInput(f"{name}:1: the {required!r} column is missing")
    return columns


def _row(values: dict[str, str], scoring: Scoring, staff: Mapping[str, StaffInfo], default_by: str) -> dict[str, Any]:
    code = values["staff"]
    if not code:
        raise _Bad("staff", "empty")
    member = staff.get(code)
    if member is None:
        raise _Bad("staff", f"{code} is not in the staff table")
    if values.get("name") and values["name"] != member.name:
        raise _Bad("name", f"{values['name']!r} is not the name of {code} ({member.name})")
    for field, limit in _LIMITS.items():
        if len(values.get(field, "")) > limit:
            raise _Bad(field, f"longer than {limit} characters")
    if not values["ref"]:
        raise _Bad("ref", "empty: say which regulation the entry applies (e.g. R9 7(1)3)")
    flag = values.get("flag", "")
    points = _number(values.get("points", ""), scoring)
    section, votes = _section_and_votes(values, scoring, points, flag)
    by = values.get("entered_by") or default_by
    if not by:
        raise _Bad("entered_by", "empty, and the importer's name is unknown (use --by)")
    return {"staff": code, "section": section, "points": points or 0.0, "unit": entry_unit(scoring),
            "votes_for": votes[0], "votes_total": votes[1], "flag": flag, "ref": values["ref"],
            "reason": values.get("reason", ""), "entered_by": by}


def entry_unit(scoring: Scoring) -> str:
    """What an entry's number means under ``scoring``: points, or yuan under the money scheme."""
    return "yuan" if scoring.scheme == "money" else "points"


def _number(text: str, scoring: Scoring) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _Bad("points", f"{text!r} is not a number") from None
    limit = MAX_MONEY if scoring.scheme == "money" else MAX_POINTS
    if not math.isfinite(value) or abs(value) > limit:
        raise _Bad("points", f"{text!r} is out of range (at most {limit} either way)")
    return value


def _section_and_votes(values: dict[str, str], scoring: Scoring, points: float | None,
                       flag: str) -> tuple[str, tuple[int | None, int | None]]:
    section, votes = values.get("section", ""), values.get("votes", "")
    if scoring.scheme == "money":
        if section or votes:
            raise _Bad("section" if section else "votes", "the money scheme has no sections or peer review")
        if not points and not flag:
            raise _Bad("points", "an amount (yuan) or a flag is required")
        return "", (None, None)
    if votes:
        return _votes(section, scoring, points), _vote_counts(votes)
    if not section:
        if points or not flag:
            raise _Bad("section", "empty: name a section of the policy or 附加分 (only a flag may go without one)")
        return "", (None, None)
    if section == BONUS_SECTION:
        if points is None or points <= 0:
            raise _Bad("points", f"{BONUS_SECTION} adds points: give a positive number")
        return section, (None, None)
    if scoring.section(section) is None:
        names = ", ".join([s.name for s in scoring.sections] + [BONUS_SECTION])
        raise _Bad("section", f"{section!r} is not one of {names}")
    if points is None:
        if not flag:
            raise _Bad("points", "empty: give the points deducted (negative)")
    elif points > 0:
        raise _Bad("points", f"a section only loses points; bonus points go to {BONUS_SECTION}")
    return section, (None, None)


def _votes(section: str, scoring: Scoring, points: float | None) -> str:
    review = scoring.peer_review.section
    if scoring.section(review) is None:
        raise _Bad("votes", f"the policy has no peer-review section {review!r}")
    if section and section != review:
        raise _Bad("votes", f"votes set the section {review}, not {section}")
    if points is not None:
        raise _Bad("points", "leave it empty on a votes row: the votes give the points")
    return review


def _vote_counts(text: str) -> tuple[int, int]:
    match = _VOTES.match(text)
    if not match:
        raise _Bad("votes", f"{text!r} is not favourable/total, e.g. 18/20")
    favourable, total = int(match.group(1)), int(match.group(2))
    if total == 0 or favourable > total:
        raise _Bad("votes", f"{text!r}: the total must be positive and at least the favourable votes")
    return favourable, total
