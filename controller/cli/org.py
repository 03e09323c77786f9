"""``counterguard`` staff, unit, window and assign commands: the organisation and its posts over time.

``staff add | list | import FILE.csv | leave | show``, ``unit add | list``, ``window add | list``
and ``assign STAFF --window W --post A|B --from DATE [--to DATE]``. Dates are local dates
(``2026-11-01``, the policy's time zone); "today" is today there. Account mappings are
``counterguard account map`` (:mod:`controller.cli.decisions`).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Optional

import typer

from controller.cli import context
from controller.cli.output import JsonOption, print_fields, print_json, print_table
from controller.cli.violations import policy_zone, whoami
from controller.errors import InvalidInput
from controller.org.service import Assigned, OrgService

staff_app = typer.Typer(help="Staff (工号), their posts and absences.", no_args_is_help=True)
unit_app = typer.Typer(help="Units (进驻部门) that staff the windows.", no_args_is_help=True)
window_app = typer.Typer(help="Service windows (counters) and who holds their A and B posts.", no_args_is_help=True)

ByOption = typer.Option(None, "--by", help="Who records this (default: your login name).")
DateOption = typer.Option(None, "--date", metavar="YYYY-MM-DD", help="As on this local date (default: today).")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_date(text: str, option: str) -> dt.date:
    """A local date people typed, ``2026-11-01``; :class:`InvalidInput` naming ``option`` otherwise."""
    value = text.strip()
    try:
        if _DATE.match(value):
            return dt.date.fromisoformat(value)
    except ValueError:
        pass
    raise InvalidInput(f"{option} {text!r} is not a date like 2026-11-01")


def _day(text: str | None) -> dt.date:
    return parse_date(text, "--date") if text else dt.datetime.now(policy_zone()).date()


def _service() -> OrgService:
    return OrgService(context.engine())


def _people(holders: list[dict[str, Any]]) -> str:
    return ", ".join(f"{h['staff']} {h['name']}" + (" (away)" if h["absent"] else "") for h in holders)


# ------------------------------------------------------------------------------ units and windows


@unit_app.command("add")
def unit_add(
    code: str = typer.Argument(..., help="Short code, e.g. tax."),
    name: str = typer.Argument(..., help="Name, e.g. 税务局."),
    home_department: str = typer.Option("", "--home-department", help="Who receives escalations (通报主管部门)."),
    by: Optional[str] = ByOption,
) -> None:
    """Add a unit (进驻部门)."""
    unit = _service().add_unit(code, name, home_department=home_department, by=whoami(by))
    typer.echo(f"Unit {unit['code']} ({unit['name']}) added.")


@unit_app.command("list")
def unit_list(as_json: bool = JsonOption) -> None:
    """Units, with how many staff and windows each has."""
    units = _service().units()
    if as_json:
        print_json(units)
    elif not units:
        typer.echo("No units; add one with `counterguard unit add`.")
    else:
        print_table(f"Units ({len(units)})", ("code", "name", "home department", "staff", "windows"),
                    ((u["code"], u["name"], u["home_department"], u["staff"], u["windows"]) for u in units))


@window_app.command("add")
def window_add(
    code: str = typer.Argument(..., help="Counter number, as the workstations were enrolled with (e.g. A03)."),
    unit: Optional[str] = typer.Option(None, "--unit", help="The unit that staffs it."),
    description: str = typer.Option("", "--description", help="e.g. 不动产登记."),
    by: Optional[str] = ByOption,
) -> None:
    """Add a window (counter)."""
    window = _service().add_window(code, unit=unit, description=description, by=whoami(by))
    typer.echo(f"Window {window['code']} added" + (f" for unit {window['unit']}." if window["unit"] else "."))


@window_app.command("list")
def window_list(date: Optional[str] = DateOption, as_json: bool = JsonOption) -> None:
    """Windows and who holds their A and B posts today (or on --date)."""
    day = _day(date)
    windows = _service().windows(day)
    if as_json:
        print_json({"date": day, "windows": windows})
    elif not windows:
        typer.echo("No windows; add one with `counterguard window add`.")
    else:
        print_table(f"Windows on {day} ({len(windows)})", ("window", "unit", "description", "A post", "B post"),
                    ((w["code"], w["unit"], w["description"], _people(w["A"]), _people(w["B"])) for w in windows))


# ------------------------------------------------------------------------------ staff


@staff_app.command("add")
def staff_add(
    code: str = typer.Argument(..., help="Staff number (工号), e.g. S001."),
    name: str = typer.Argument(..., help="Name, e.g. 张三."),
    unit: str = typer.Option(..., "--unit", help="Their unit (see `counterguard unit list`)."),
    note: str = typer.Option("", "--note", help="Anything worth keeping with them."),
    by: Optional[str] = ByOption,
) -> None:
    """Add a staff member."""
    staff = _service().add_staff(code, name, unit, note=note, by=whoami(by))
    typer.echo(f"Staff member {staff['code']} {staff['name']} added to unit {staff['unit']}.")


@staff_app.command("list")
def staff_list(
    unit: Optional[str] = typer.Option(None, "--unit", help="Only this unit."),
    date: Optional[str] = DateOption,
    as_json: bool = JsonOption,
) -> None:
    """Staff, with the posts they hold and whether they are away today (or on --date)."""
    day = _day(date)
    staff = _service().staff_list(day, unit)
    if as_json:
        print_json({"date": day, "staff": staff})
    elif not staff:
        typer.echo("No staff; add them with `counterguard staff add` or `counterguard staff import`.")
    else:
        print_table(f"Staff on {day} ({len(staff)})", ("code", "name", "unit", "posts", "away", "active"),
                    ((s["code"], s["name"], s["unit"], s["posts"], s["absent"], s["active"]) for s in staff))


@staff_app.command("import")
def staff_import(
    file: Path = typer.Argument(..., metavar="FILE.csv",
                                help="Columns code,name,unit[,window,post,from,to]; header row first."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Import a centre's roster; if any row is bad, nothing is imported and every bad row is listed."""
    result = _service().import_staff(file, by=whoami(by))
    if as_json:
        print_json(result)
        return
    typer.echo(f"Imported {result.staff} staff member{'s' if result.staff != 1 else ''} and {result.assignments} "
               f"post{'s' if result.assignments != 1 else ''} from {file}.")
    for ended in result.ended:
        typer.echo(f"{ended.staff}'s post {ended.post} of window {ended.window} now ends on {ended.valid_to}.")


@staff_app.command("leave")
def staff_leave(
    staff: str = typer.Argument(..., help="Staff number (工号)."),
    start: str = typer.Option(..., "--from", metavar="YYYY-MM-DD", help="First day away."),
    end: str = typer.Option(..., "--to", metavar="YYYY-MM-DD", help="Last day away."),
    reason: str = typer.Option(..., "--reason", "-r", help="e.g. 年假, 病假, 培训."),
    by: Optional[str] = ByOption,
) -> None:
    """Record an absence: on those days their B post is on duty for them."""
    away = _service().leave(staff, parse_date(start, "--from"), parse_date(end, "--to"), reason, by=whoami(by))
    typer.echo(f"{staff} is away from {away['starts_on']} to {away['ends_on']} ({away['reason']}).")


@staff_app.command("show")
def staff_show(staff: str = typer.Argument(..., help="Staff number (工号)."), as_json: bool = JsonOption) -> None:
    """One staff member's posts, absences and OS accounts, all of their history."""
    found = _service().history(staff)
    if as_json:
        print_json(found)
        return
    s = found.staff
    print_fields(f"Staff member {s['code']} {s['name']}", (
        ("unit", s["unit"]), ("active", s["active"]), ("note", s["note"]),
        ("added", f"{s['created_at']:%Y-%m-%d %H:%M} UTC by {s['created_by'] or '?'}"),
    ))
    _section("Posts", ("window", "post", "from", "to"),
             [(a["window"], a["post"], a["valid_from"], a["valid_to"] or "until further notice")
              for a in found.assignments])
    _section("Absences", ("from", "to", "reason"),
             [(a["starts_on"], a["ends_on"], a["reason"]) for a in found.absences])
    _section("OS accounts", ("account", "windows", "valid from", "valid to"),
             [(a["account"], a["windows"] or "any", a["valid_from"], a["valid_to"]) for a in found.accounts])


def _section(title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        print_table(title, columns, rows)
    else:
        typer.echo(f"{title}: none.")


# ------------------------------------------------------------------------------ posts


def assign(
    staff: str = typer.Argument(..., help="Staff number (工号)."),
    window: str = typer.Option(..., "--window", help="The window (counter)."),
    post: str = typer.Option(..., "--post", metavar="A|B", help="A (main post) or B (substitute)."),
    start: str = typer.Option(..., "--from", metavar="YYYY-MM-DD", help="First day on the post."),
    end: Optional[str] = typer.Option(None, "--to", metavar="YYYY-MM-DD", help="Last day (default: until further "
                                                                               "notice)."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Give a staff member the A or B post of a window from a date; whoever held it until further notice hands over."""
    result: Assigned = _service().assign(staff, window, post, parse_date(start, "--from"),
                                         parse_date(end, "--to") if end else None, by=whoami(by))
    if as_json:
        print_json(result)
        return
    until = f" to {result.valid_to}" if result.valid_to else " until further notice"
    typer.echo(f"{result.staff} holds post {result.post} of window {result.window} from {result.valid_from}{until}.")
    for ended in result.ended:
        typer.echo(f"{ended.staff}'s post {ended.post} of window {ended.window} now ends on {ended.valid_to}.")


def register(app: typer.Typer) -> None:
    """Mount this module's commands on ``app``."""
    app.add_typer(staff_app, name="staff")
    app.add_typer(unit_app, name="unit")
    app.add_typer(window_app, name="window")
    app.command("assign")(assign)
