"""Reading a centre's roster CSV: the file's encoding, its header, and each row's own fields.

The file is UTF-8 with or without a byte-order mark (what Excel and WPS write), else GB18030
(what older Chinese Excel writes). The first row is the header: ``code,name,unit`` are required,
``window,post,from,to`` optional, in any order. A row without a window is a staff member without a
post; a row with one needs its post (A or B) and its first day. Dates are ``2026-11-01``, or
``2026/11/1`` as a spreadsheet saves them. Row numbers are the spreadsheet's: the header is row 1.

This module checks what a row says by itself (and codes repeated in the file); whether its unit and
window exist and its post is free is checked against the database by
:meth:`controller.org.service.OrgService.import_staff`. A problem reads ``FILE:ROW: field: reason``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controller.errors import InvalidInput
from controller.org.records import POSTS

REQUIRED = ("code", "name", "unit")
OPTIONAL = ("window", "post", "from", "to")
LIMITS = {"code": 64, "name": 128, "unit": 64, "window": 64}
MAX_BYTES = 10 * 1024 * 1024
_DATE = re.compile(r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})$")


@dataclass(frozen=True)
class Problem:
    """What is wrong with one field of one row of a file."""

    path: Path
    row: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.row}: {self.field}: {self.reason}"


def rejected(path: Path, problems: list[Problem]) -> InvalidInput:
    """The error for a file with bad rows: how many, and every problem on its own line."""
    count = len({p.row for p in problems})
    rows = f"{count} row{'s are' if count != 1 else ' is'}"
    return InvalidInput("\n".join([f"{path}: {rows} not valid; nothing was imported:", *map(str, problems)]))


@dataclass(frozen=True)
class RosterRow:
    """One checked row of the roster: a staff member and, optionally, the post they hold from a date."""

    row: int
    code: str
    name: str
    unit: str
    window: str = ""
    post: str = ""
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None


def decode(path: Path) -> str:
    """The file's text: UTF-8 (a BOM is dropped), else GB18030; :class:`InvalidInput` if neither, or unreadable."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise InvalidInput(f"{path}: the file is larger than {MAX_BYTES // (1024 * 1024)} MB")
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: the file is neither UTF-8 nor GB18030 text; save it as CSV UTF-8") from None


def _date(text: str) -> dt.date:
    match = _DATE.match(text)
    if not match:
        raise ValueError
    return dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))


def _header(path: Path, cells: list[str]) -> list[str]:
    names = [c.strip().lower() for c in cells]
    problems = [f"{path}:1: header: unknown column {n!r} (the columns are {', '.join(REQUIRED + OPTIONAL)})"
                for n in names if n and n not in REQUIRED + OPTIONAL]
    problems += [f"{path}:1: header: column {n!r} appears twice" for n in sorted({n for n in names if n})
                 if names.count(n) > 1]
    problems += [f"{path}:1: header: the required column {n!r} is missing" for n in REQUIRED if n not in names]
    if problems:
        raise InvalidInput("\n".join([f"{path}: the header row is not usable; nothing was imported:", *problems]))
    return names


def _fields(values: dict[str, str], problem: Callable[[str, str], None]) -> None:
    """Report the row's missing or overlong fields."""
    for name in REQUIRED:
        if not values.get(name):
            problem(name, "required")
    for name, limit in LIMITS.items():
        if len(values.get(name, "")) > limit:
            problem(name, f"longer than {limit} characters")


def _post(values: dict[str, str], problem: Callable[[str, str], None]) -> tuple[str, dt.date | None, dt.date | None]:
    """The post, first and last day of a row's assignment; what is wrong with them is reported."""
    post = values.get("post", "").upper()
    dates: dict[str, dt.date | None] = {"from": None, "to": None}
    for name in dates:
        if values.get(name):
            try:
                dates[name] = _date(values[name])
            except ValueError:
                problem(name, f"{values[name]!r} is not a date like 2026-11-01")
    if not values.get("window"):
        if post or values.get("from") or values.get("to"):
            problem("window", "required when post, from or to is given")
        return "", None, None
    if post not in POSTS:
        problem("post", f"{values['post']!r} is not A or B" if post else "required (A or B) for a row with a window")
    if not values.get("from"):
        problem("from", "required for a row with a window (the first day of the post)")
    start, end = dates["from"], dates["to"]
    if start and end and end < start:
        problem("to", f"{end} is before from ({start})")
    return post, start, end


def read_roster(path: Path) -> tuple[list[RosterRow], list[Problem]]:
    """The rows that are fine by themselves, and every problem found in the others."""
    reader = csv.reader(io.StringIO(decode(path), newline=""))
    rows: list[RosterRow] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    try:
        header = next(reader, None)
        if header is None or not any(c.strip() for c in header):
            raise InvalidInput(f"{path}: the file is empty; the first row must be the header "
                               f"({', '.join(REQUIRED + OPTIONAL)})")
        names = _header(path, header)
        for number, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue  # a blank line in the file, a blank row in the spreadsheet
            found: list[Problem] = []

            def problem(name: str, reason: str, number: int = number, found: list[Problem] = found) -> None:
                found.append(Problem(path, number, name, reason))

            values = {n: c.strip() for n, c in zip(names, cells) if n}
            _fields(values, problem)
            if len(cells) > len(names) and any(c.strip() for c in cells[len(names):]):
                problem("row", f"{len(cells)} cells but the header has {len(names)} columns")
            post, start, end = _post(values, problem)
            code = values.get("code", "")
            if code and code in seen:
                problem("code", f"{code} is also on row {seen[code]}")
            seen.setdefault(code, number)
            problems += found
            if not found:
                rows.append(RosterRow(number, code, values["name"], values["unit"], values.get("window", ""), post,
                                      start, end))
    except csv.Error as exc:
        raise InvalidInput(f"{path}:{reader.line_num}: the file is not valid CSV ({exc})") from None
    return rows, problems
