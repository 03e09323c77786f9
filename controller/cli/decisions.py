"""Decisions the rules read: ``software approve | deny | decisions``, ``exemption add | list | remove``,
``devices register | list``, ``account map | list``, ``maintenance add | list``.

Each recording command re-evaluates what the decision affects right away (the rule kinds it
concerns, on the workstations it concerns, from the earliest open violation it could change) and
says what changed: an approval or an exemption withdraws the open violations it covers; a dismissed
or confirmed violation keeps its status. Times are read as in ``violations`` (policy time zone).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

import typer
from sqlalchemy import select

from controller.cli import context
from controller.cli.inventory import software_app
from controller.cli.output import JsonOption, print_json, print_table
from controller.cli.violations import parse_moment, policy_zone, result_line, rules_service, whoami
from controller.models import AGENT
from controller.rules.decisions import DecisionService, Recorded
from controller.rules.service import EvaluationResult

exemption_app = typer.Typer(help="Permission to use workstations outside working hours (R11.8).", no_args_is_help=True)
devices_app = typer.Typer(help="Registered removable devices (R11.2).", no_args_is_help=True)
account_app = typer.Typer(help="OS accounts and the staff they belong to (R11.1, R11.3).", no_args_is_help=True)
maintenance_app = typer.Typer(help="Maintenance records of workstations (R11.7).", no_args_is_help=True)

ByOption = typer.Option(None, "--by", help="Who decides (default: your login name).")
UnitOption = typer.Option(None, "--unit", help="Only for this unit (进驻部门).")
WindowOption = typer.Option(None, "--window", help="Only for this window.")
SourceOption = typer.Option(None, "--source", help="dpkg, desktop-entry, flatpak, snap or windows-registry.")


def _decisions() -> DecisionService:
    return DecisionService(context.engine())


def _agents(window: str | None = None, unit: str | None = None, agent_id: str | None = None) -> list[str]:
    query = select(AGENT.c.id).order_by(AGENT.c.id)
    if agent_id:
        query = query.where(AGENT.c.id == agent_id)
    elif window:
        query = query.where(AGENT.c.window == window)
    elif unit:
        query = query.where(AGENT.c.unit == unit)
    with context.engine().connect() as conn:
        return list(conn.execute(query).scalars())


def _reevaluate(recorded: Recorded, agents: list[str], reason: str) -> EvaluationResult:
    """Evaluate the decision's rule kinds again on ``agents``, far enough back to withdraw what it covers."""
    service = rules_service()
    now = dt.datetime.now(dt.UTC)
    result = EvaluationResult()
    for agent in agents:
        starts = [now - dt.timedelta(days=1)]
        earliest = service.earliest_open(recorded.kinds, agent)
        if earliest is not None:
            starts.append(earliest)
        if recorded.since is not None:
            starts.append(recorded.since - dt.timedelta(days=1))
        result += service.evaluate(agent, min(starts), now, kinds=recorded.kinds, reason=reason)
    return result


def _done(recorded: Recorded, message: str, result: EvaluationResult, as_json: bool) -> None:
    if as_json:
        print_json({"table": recorded.table, "id": recorded.id, **recorded.values, "reevaluated": vars(result)})
        return
    typer.echo(f"{message} {result_line(result)}")


def _list(title: str, columns: tuple[str, ...], rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(rows)
    elif not rows:
        typer.echo(f"No {title.lower()}.")
    else:
        print_table(f"{title} ({len(rows)})", columns, ([row[c] for c in columns] for row in rows))


# ------------------------------------------------------------------------------ software


def _decide(decision: str, name: str, source: str | None, unit: str | None, window: str | None, reason: str,
            by: str | None, as_json: bool) -> None:
    recorded = _decisions().decide_software(name, decision, source=source or "", unit=unit, window=window,
                                            reason=reason, by=whoami(by))
    where = f"window {window}" if window else f"unit {unit}" if unit else "every workstation"
    why = "software approved afterwards" if decision == "approved" else "software decision changed"
    result = _reevaluate(recorded, _agents(window=window, unit=unit), why)
    _done(recorded, f"{name}{f' ({source})' if source else ''} {decision} for {where}.", result, as_json)


@software_app.command("approve")
def approve(
    name: str = typer.Argument(..., help="Package, desktop-entry or program name as `software list` shows it."),
    source: Optional[str] = SourceOption,
    unit: Optional[str] = UnitOption,
    window: Optional[str] = WindowOption,
    reason: str = typer.Option("", "--reason", "-r", help="Why (e.g. the approval document)."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Approve a program for a unit, a window or every workstation (R11.2); open violations for it are withdrawn."""
    _decide("approved", name, source, unit, window, reason, by, as_json)


@software_app.command("deny")
def deny(
    name: str = typer.Argument(..., help="Package, desktop-entry or program name as `software list` shows it."),
    source: Optional[str] = SourceOption,
    unit: Optional[str] = UnitOption,
    window: Optional[str] = WindowOption,
    reason: str = typer.Option("", "--reason", "-r", help="Why."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Forbid a program for a unit, a window or every workstation, whatever its category."""
    _decide("denied", name, source, unit, window, reason, by, as_json)


@software_app.command("decisions")
def software_decisions(as_json: bool = JsonOption) -> None:
    """Every software approval and denial."""
    _list("Software decisions", ("id", "name", "source", "unit", "window", "decision", "decided_by", "decided_at",
                                 "reason"), _decisions().software_decisions(), as_json)


# ------------------------------------------------------------------------------ exemptions


@exemption_app.command("add")
def exemption_add(
    workstation: Optional[str] = typer.Option(None, "--workstation", "-w", metavar="AGENT", help="Agent id."),
    window: Optional[str] = typer.Option(None, "--window", help="Every workstation of this window instead."),
    start: str = typer.Option(..., "--from", help="Start: 2026-11-02 18:00 (policy time zone)."),
    end: str = typer.Option(..., "--to", help="End: 2026-11-02 21:00; a date alone means the end of that day."),
    reason: str = typer.Option(..., "--reason", "-r", help="Why, e.g. 加班 or 周末值班."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Allow use of a workstation outside working hours (R11.8); covered violations are withdrawn."""
    zone = policy_zone()
    recorded = _decisions().add_exemption(parse_moment(start, "--from", zone),
                                          parse_moment(end, "--to", zone, end_of_day=True), reason,
                                          agent_id=workstation, window=window, by=whoami(by))
    result = _reevaluate(recorded, _agents(window=window, agent_id=workstation), f"exemption: {reason}")
    _done(recorded, f"Exemption {recorded.id} ({reason}) recorded for {workstation or f'window {window}'}.", result,
          as_json)


@exemption_app.command("list")
def exemption_list(
    include_removed: bool = typer.Option(False, "--all", help="Include removed exemptions."),
    as_json: bool = JsonOption,
) -> None:
    """Exemptions, by start."""
    _list("Exemptions", ("id", "agent_id", "window", "starts_at", "ends_at", "reason", "created_by", "removed_at"),
          _decisions().exemptions(include_removed), as_json)


@exemption_app.command("remove")
def exemption_remove(exemption_id: int = typer.Argument(..., metavar="ID"), by: Optional[str] = ByOption,
                     as_json: bool = JsonOption) -> None:
    """Take an exemption back; what it covered is judged again."""
    recorded = _decisions().remove_exemption(exemption_id, whoami(by))
    window = recorded.values.get("window")
    result = _reevaluate(recorded, _agents(window=window, agent_id=recorded.agent_id), "exemption removed")
    _done(recorded, f"Exemption {exemption_id} removed.", result, as_json)


# ------------------------------------------------------------------------------ devices, accounts, maintenance


@devices_app.command("register")
def devices_register(
    vendor_id: str = typer.Option(..., "--vendor-id", help="USB vendor id, four hex digits (e.g. 096e)."),
    product_id: str = typer.Option(..., "--product-id", help="USB product id, four hex digits."),
    serial: str = typer.Option("", "--serial", help="Serial number; without it, every device of the model."),
    note: str = typer.Option("", "--note", help="What it is, e.g. 电子签章 UKey."),
    unit: Optional[str] = UnitOption,
    window: Optional[str] = WindowOption,
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Register a removable device (signing key, ID-card reader …) so using it is no violation."""
    recorded = _decisions().register_device(vendor_id, product_id, serial=serial, description=note, unit=unit,
                                            window=window, by=whoami(by))
    result = _reevaluate(recorded, _agents(window=window, unit=unit), "device registered")
    _done(recorded, f"Device {vendor_id}:{product_id}{f' serial {serial}' if serial else ''} registered.", result,
          as_json)


@devices_app.command("list")
def devices_list(as_json: bool = JsonOption) -> None:
    """Registered devices."""
    _list("Registered devices", ("id", "vendor_id", "product_id", "serial", "description", "unit", "window",
                                 "registered_by", "registered_at"), _decisions().devices(), as_json)


@account_app.command("map")
def account_map(
    account: str = typer.Argument(..., help="The OS login name."),
    staff: str = typer.Option(..., "--staff", help="Staff number (工号) of the owner; see `counterguard staff list`."),
    window: list[str] = typer.Option([], "--window", help="A window they may use (repeat; none: any window)."),
    start: Optional[str] = typer.Option(None, "--from", help="Valid from (default: always)."),
    end: Optional[str] = typer.Option(None, "--to", help="Valid until (default: always)."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Map an OS account to a staff member (R11.1, R11.3)."""
    zone = policy_zone()
    windows = tuple(w.strip() for value in window for w in value.split(",") if w.strip())
    recorded = _decisions().map_account(
        account, staff, windows=windows, valid_from=parse_moment(start, "--from", zone) if start else None,
        valid_to=parse_moment(end, "--to", zone, end_of_day=True) if end else None, by=whoami(by))
    result = _reevaluate(recorded, _agents(), "account mapped")
    _done(recorded, f"Account {account} mapped to {staff}" + (f" for window(s) {', '.join(windows)}." if windows
                                                               else " for any window."), result, as_json)


@account_app.command("list")
def account_list(as_json: bool = JsonOption) -> None:
    """Account mappings."""
    _list("Account mappings", ("id", "account", "staff", "windows", "valid_from", "valid_to", "created_by"),
          _decisions().accounts(), as_json)


@maintenance_app.command("add")
def maintenance_add(
    workstation: str = typer.Option(..., "--workstation", "-w", metavar="AGENT", help="Agent id."),
    start: str = typer.Option(..., "--from", help="Start: 2026-11-02 14:00 (policy time zone)."),
    end: str = typer.Option(..., "--to", help="End; a date alone means the end of that day."),
    note: str = typer.Option(..., "--note", help="What was done and by whom."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Record maintenance: hardware, OS and network changes in that time are not violations (R11.7)."""
    zone = policy_zone()
    recorded = _decisions().add_maintenance(workstation, parse_moment(start, "--from", zone),
                                            parse_moment(end, "--to", zone, end_of_day=True), note, by=whoami(by))
    result = _reevaluate(recorded, [workstation], "maintenance recorded")
    _done(recorded, f"Maintenance {recorded.id} recorded for {workstation}.", result, as_json)


@maintenance_app.command("list")
def maintenance_list(as_json: bool = JsonOption) -> None:
    """Maintenance records, by start."""
    _list("Maintenance records", ("id", "agent_id", "starts_at", "ends_at", "note", "recorded_by"),
          _decisions().maintenance(), as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(exemption_app, name="exemption")
    app.add_typer(devices_app, name="devices")
    app.add_typer(account_app, name="account")
    app.add_typer(maintenance_app, name="maintenance")
