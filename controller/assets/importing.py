"""Loading a centre's equipment register from a CSV file: all rows or none, every bad row named.

The file is UTF-8 (with or without the BOM Excel writes) or GB18030 (what Excel and WPS save as
"CSV" on a Chinese Windows). The first non-empty line names the columns, in any order:

``tag, kind, window`` (required), ``unit, description, agent, serial, usb, printer, printer_uri,
signed_by, signed_on, note`` (optional) — the fields of ``asset register`` (``serial`` is a PC's
system serial; a USB device's serial goes in ``usb`` as ``VID:PID:SERIAL``), plus the 领用签字 of
the row's unit: who signed (``signed_by``), when (``signed_on``, ``2026-11-02`` or ``2026/11/2``) and
a ``note``. Chinese headings are read as these: 资产编号, 类别, 窗口, 单位, 名称, 终端, 序列号, USB,
打印机, 打印机地址, 领用人, 领用日期, 备注; and a kind may be given by its Chinese name (打印机, 读卡器 …).

A PC given with its workstation (``agent``) gets the system serial of the agent's latest inventory.
A row is bad when a field is (see :mod:`controller.assets.fields`), when its window or unit is not
in the organisation tables, when its tag or strong identity is already in the register or on an
earlier row. Every problem is reported as ``FILE:ROW: field: reason``, ROW being the line of the
file where the row starts (the header is usually line 1), and then nothing is imported.

:class:`Lookups` also serves single registrations: what exists (windows, units, agents) and what
is taken (tags, strong identities), read once.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from controller.assets import fields
from controller.assets.discovery import Key, asset_keys, strong
from controller.assets.fields import FieldConflict, FieldError, FieldProblem
from controller.assets.records import ASSET
from controller.errors import InvalidInput, NotFound
from controller.convert import row_to_fact
from controller.models import AGENT, FACT
from controller.org.records import UNIT, WINDOW

REQUIRED = ("tag", "kind", "window")
COLUMNS = (*REQUIRED, "unit", "description", "agent", "serial", "usb", "printer", "printer_uri", "signed_by",
           "signed_on", "note")
HEADINGS = {"资产编号": "tag", "类别": "kind", "窗口": "window", "单位": "unit", "名称": "description", "终端": "agent",
            "序列号": "serial", "打印机": "printer", "打印机地址": "printer_uri", "领用人": "signed_by",
            "领用日期": "signed_on", "备注": "note"}
_ENCODINGS = ("utf-8-sig", "gb18030")


@dataclass(frozen=True)
class Row:
    line: int
    cells: dict[str, str]


@dataclass(frozen=True)
class SignatureCells:
    signed_by: str
    signed_on: dt.date
    note: str


@dataclass
class Lookups:
    """What exists and what is taken, read once per registration or import."""

    conn: Connection
    windows: dict[str, str | None]  # window code → its unit
    units: set[str]
    agents: set[str]
    tags: dict[str, str]  # tag → where it is taken ("in the register", "on row 7")
    owners: dict[Key, str] = field(default_factory=dict)  # strong key → its holder ("asset ZX-1", "on row 7")

    @classmethod
    def load(cls, conn: Connection, *, ignore_tag: str | None = None) -> Lookups:
        windows = {row.code: row.unit for row in conn.execute(select(WINDOW.c.code, WINDOW.c.unit))}
        units = set(conn.execute(select(UNIT.c.code)).scalars())
        agents = set(conn.execute(select(AGENT.c.id)).scalars())
        lookups = cls(conn, windows, units, agents, {})
        for row in conn.execute(select(ASSET)):
            if row.tag == ignore_tag:
                continue
            lookups.tags[row.tag] = "in the register"
            if row.retired_at is None:
                lookups.claim(row._mapping, f"asset {row.tag}")
        return lookups

    def place(self, window: str | None, unit: str | None) -> dict[str, Any]:
        """Window and unit columns: the window must exist; the unit defaults to the window's."""
        if window is None:
            raise FieldError("window", "a window is required")
        if window not in self.windows:
            raise FieldError("window", f"no window {window!r} (see `counterguard window list`)")
        if unit is not None:
            self.require_unit(unit)
        return {"window": window, "unit": unit or self.windows[window]}

    def require_unit(self, unit: str) -> None:
        if unit not in self.units:
            raise FieldError("unit", f"no unit {unit!r} (see `counterguard unit list`)")

    def fill_serial(self, values: dict[str, Any]) -> None:
        """A PC registered with its workstation gets the system serial of the agent's latest inventory."""
        agent = values.get("agent_id")
        if agent and agent in self.agents and not values.get("serial"):
            payload = self.conn.execute(
                select(FACT.c.payload).where(FACT.c.agent_id == agent, FACT.c.kind == "inventory")
                .order_by(FACT.c.sequence.desc()).limit(1)
            ).scalar_one_or_none()
            if payload is not None:
                values["serial"] = fields.system_serial(row_to_fact(payload).inventory.system.serial)

    def check_new(self, values: Any) -> None:
        """Refuse a tag or a strong identity someone holds, and a workstation that does not exist."""
        if values["tag"] in self.tags:
            raise FieldConflict("tag", f"{values['tag']} is already {self.tags[values['tag']]}")
        if values.get("agent_id") and values["agent_id"] not in self.agents:
            raise FieldError("agent", f"no agent {values['agent_id']!r} (see `counterguard agents list`)")
        for key in _strong_keys(values):
            if key in self.owners:
                raise FieldConflict(_KEY_FIELDS[key[0]], f"{_key_text(key)} is already {self.owners[key]}")

    def claim(self, values: Any, holder: str) -> None:
        """Mark the tag and the strong identity of ``values`` (as far as they are known) as taken by ``holder``."""
        if "tag" in values:
            self.tags.setdefault(values["tag"], holder)
        if "agent_id" in values:
            for key in _strong_keys(values):
                self.owners.setdefault(key, holder)


_KEY_FIELDS = {"agent": "agent", "system-serial": "serial", "usb": "usb", "printer-uri": "printer_uri"}


def _strong_keys(values: Any) -> list[Key]:
    keys = asset_keys(values["kind"], values["agent_id"], values["vendor_id"], values["product_id"], values["serial"],
                      values["printer_name"], values["printer_uri"])
    return [k for k in keys if strong(k)]


def _key_text(key: Key) -> str:
    names = {"agent": "workstation", "system-serial": "system serial", "usb": "USB device", "printer-uri": "printer"}
    return f"{names[key[0]]} {':'.join(key[1:])}"


# ------------------------------------------------------------------------------ reading the file


def read(path: Path) -> list[Row]:
    """The file's rows under its header; file-level problems (unreadable, no header, no rows) raise at once."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot be read ({exc.strerror})") from None
    text = _decode(path, data)
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[Row] = []
    start = 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = _header(path, line, record)
                continue
            if len(record) > len(header):
                raise InvalidInput(f"{path}:{line}: row: {len(record)} cells, but the header names {len(header)}")
            rows.append(Row(line, {name: cell.strip() for name, cell in zip(header, record)}))
    except csv.Error as exc:
        raise InvalidInput(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise InvalidInput(f"{path}: the file is empty; its first line must name the columns ({', '.join(REQUIRED)} …)")
    if not rows:
        raise InvalidInput(f"{path}: there are no rows under the header")
    return rows


def _decode(path: Path, data: bytes) -> str:
    for encoding in _ENCODINGS:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            return text
    raise InvalidInput(f"{path}: is not a CSV text file in UTF-8 or GB18030 (save it from Excel as CSV)")


def _header(path: Path, line: int, record: list[str]) -> list[str]:
    names = [HEADINGS.get(cell.strip(), cell.strip().lower()) for cell in record]
    for name in names:
        if name not in COLUMNS:
            raise InvalidInput(f"{path}:{line}: header: unknown column {name!r}; the first line must name the "
                               f"columns, of: {', '.join(COLUMNS)}")
        if names.count(name) > 1:
            raise InvalidInput(f"{path}:{line}: header: column {name!r} appears twice")
    for name in REQUIRED:
        if name not in names:
            raise InvalidInput(f"{path}:{line}: header: the required column {name!r} is missing")
    return names


# ------------------------------------------------------------------------------ checking the rows


def prepare(path: Path, rows: Iterable[Row], lookups: Lookups,
            today: dt.date) -> list[tuple[dict[str, Any], SignatureCells | None]]:
    """The asset columns and signature of every row, or :class:`InvalidInput` naming every bad row."""
    prepared: list[tuple[dict[str, Any], SignatureCells | None]] = []
    problems: list[str] = []
    count = 0
    for row in rows:
        found: list[str] = []
        values, signature = _row(row, lookups, today, found)
        problems += [f"{path}:{row.line}: {problem}" for problem in found]
        count += bool(found)
        lookups.claim(values, f"on row {row.line}")  # a bad row's tag and device still clash with later rows
        if not found:
            prepared.append((values, signature))
    if problems:
        raise InvalidInput(f"{path}: {count} bad row{'s' if count != 1 else ''}, nothing imported:\n"
                           + "\n".join(problems))
    return prepared


def _row(row: Row, lookups: Lookups, today: dt.date,
         found: list[str]) -> tuple[dict[str, Any], SignatureCells | None]:
    """One row's values (those that are right); its problems are appended to ``found``.

    Every field that does not depend on another is checked, so a row's problems come all at once.
    """
    cells = row.cells
    values: dict[str, Any] = {}
    for check in (
        lambda: values.update(tag=fields.tag(cells.get("tag", ""))),
        lambda: values.update(kind=fields.kind(cells.get("kind", ""))),
        lambda: values.update(description=fields.text("description", cells.get("description"), 255)),
        lambda: values.update(lookups.place(fields.code("window", cells.get("window")),
                                            fields.code("unit", cells.get("unit")))),
    ):
        _collect(check, found)
    if "kind" in values:
        _collect(lambda: values.update(fields.identity(
            values["kind"], agent=cells.get("agent"), serial=cells.get("serial"), usb_ids=cells.get("usb"),
            printer=cells.get("printer"), printer_uri=cells.get("printer_uri"))), found)
    if {"tag", "kind", "agent_id"} <= values.keys():
        lookups.fill_serial(values)
        _collect(lambda: lookups.check_new(values), found)
    signature: list[SignatureCells] = []
    _collect(lambda: signature.extend(_signature(cells, values.get("unit"), "window" in values, today)), found)
    return values, (signature[0] if signature else None)


def _signature(cells: dict[str, str], unit: str | None, placed: bool, today: dt.date) -> list[SignatureCells]:
    signed_by = fields.text("signed_by", cells.get("signed_by"), 128)
    signed_on = cells.get("signed_on", "")
    note = fields.text("note", cells.get("note"), 500)
    if not signed_by and not signed_on:
        return []
    if not signed_by:
        raise FieldError("signed_by", f"who signed on {signed_on} is missing")
    if not signed_on:
        raise FieldError("signed_on", f"the date {signed_by} signed is missing")
    on = fields.day("signed_on", signed_on)
    if on > today:
        raise FieldError("signed_on", f"{on} is in the future")
    if placed and unit is None:
        raise FieldError("unit", "the window has no unit and none is given, so nobody can have signed for it")
    return [SignatureCells(signed_by, on, note)]


def _collect(check: Any, found: list[str]) -> None:
    try:
        check()
    except FieldProblem as problem:
        found.append(f"{problem.field}: {problem.reason}")
