"""``counterguard asset`` list | show | register | edit | move | sign | maintain | retire | import | check:
the equipment register of regulation 11.12 (see :mod:`controller.assets.service`).

Times people type (``--from``, ``--to``) and dates (``--on``) are in the active policy's time zone,
as in ``violations``. ``asset maintain`` re-evaluates the workstations it records maintenance for,
as ``maintenance add`` does, and says what changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from controller.assets import fields
from controller.assets.reconcile import Reconciliation
from controller.assets.service import AssetDetail, AssetService, AssetView
from controller.cli import context
from controller.cli.output import JsonOption, print_fields, print_json, print_table
from controller.cli.violations import parse_moment, policy_zone, result_line, rules_service, whoami

asset_app = typer.Typer(help="The equipment register (R11.12): assets per window, 领用签字, maintenance.",
                        no_args_is_help=True)

TagArgument = typer.Argument(..., metavar="TAG", help="The asset tag (资产编号).")
ByOption = typer.Option(None, "--by", help="Who records it (default: your login name).")
WindowOption = typer.Option(None, "--window", help="Only this window.")
UnitOption = typer.Option(None, "--unit", help="The unit (进驻部门); default: the window's.")
AgentOption = typer.Option(None, "--agent", metavar="ID", help="A PC: its workstation's agent id.")
SerialOption = typer.Option(None, "--serial", help="A PC: its system serial (when it has no agent yet).")
UsbOption = typer.Option(None, "--usb", metavar="VID:PID[:SERIAL]", help="A USB peripheral: its ids.")
PrinterOption = typer.Option(None, "--printer", metavar="NAME", help="A printer: its print queue's name.")
PrinterUriOption = typer.Option(None, "--printer-uri", metavar="URI", help="A printer: its queue's URI or port.")


def _service(*, with_rules: bool = False) -> AssetService:
    return AssetService(context.engine(), zone=policy_zone(), rules=rules_service() if with_rules else None)


def _row(view: AssetView) -> tuple[object, ...]:
    signed = f"{view.signed_by} {view.signed_on}" if view.signed_by else ""
    return (view.tag, view.kind, view.window, view.unit, view.description, view.identity, signed,
            f"retired {view.retired_at:%Y-%m-%d}" if view.retired_at else "")


@asset_app.command("list")
def list_assets(
    window: Optional[str] = WindowOption,
    unit: Optional[str] = typer.Option(None, "--unit", help="Only this unit."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only this kind (pc, printer, scanner …)."),
    include_retired: bool = typer.Option(False, "--all", help="Include retired assets."),
    as_json: bool = JsonOption,
) -> None:
    """Assets by window and tag, with who signed for them last."""
    found = _service().list(window=window, unit=unit, kind=kind, include_retired=include_retired)
    if as_json:
        print_json(found)
    elif not found:
        typer.echo("No assets match.")
    else:
        print_table(f"Assets ({len(found)})", ("tag", "kind", "window", "unit", "description", "identity", "signed",
                                               "status"), (_row(v) for v in found))


@asset_app.command("show")
def show(tag: str = TagArgument, as_json: bool = JsonOption) -> None:
    """One asset: its fields, signatures, maintenance and full history."""
    detail = _service().show(tag)
    if as_json:
        print_json(detail)
        return
    _print(detail)


def _print(detail: AssetDetail) -> None:
    a = detail.asset
    print_fields(f"Asset {a.tag}", (
        ("kind", a.kind), ("description", a.description), ("window", a.window), ("unit", a.unit),
        ("identity", a.identity or "none (not discoverable)"),
        ("registered", f"{a.registered_at:%Y-%m-%d %H:%M} UTC by {a.registered_by or '?'}"),
        ("status", f"retired {a.retired_at:%Y-%m-%d} by {a.retired_by or '?'}: {a.retired_reason}" if a.retired_at
         else "in service"),
    ))
    if detail.signatures:
        print_table("领用签字", ("signed on", "unit", "signed by", "note", "recorded by"),
                    ((s.signed_on, s.unit, s.signed_by, s.note, s.recorded_by) for s in detail.signatures))
    if detail.maintenance:
        print_table("Maintenance", ("from", "to", "note", "workstations", "recorded by"), (
            (m.starts_at, m.ends_at, m.note, [w["agent_id"] for w in m.workstations], m.recorded_by)
            for m in detail.maintenance))
    print_table("History", ("when", "action", "before", "after", "note", "by"), (
        (e.recorded_at, e.action, _changes(e.before), _changes(e.after), e.note, e.recorded_by)
        for e in detail.history))


def _changes(values: dict[str, object] | None) -> str:
    return ", ".join(f"{k}={'' if v is None else v}" for k, v in (values or {}).items())


def _echo_asset(view: AssetView, message: str, as_json: bool) -> None:
    if as_json:
        print_json(view)
    else:
        typer.echo(message)


@asset_app.command("register")
def register_asset(
    tag: str = TagArgument,
    kind: str = typer.Option(..., "--kind", help="pc, printer, scanner, card_reader, signature_pad, evaluator, "
                                                 "phone, desk, chair or other."),
    window: str = typer.Option(..., "--window", help="The window (counter) it belongs to."),
    unit: Optional[str] = UnitOption,
    description: str = typer.Option("", "--description", "-d", help="What it is, e.g. 联想 M720 主机."),
    agent: Optional[str] = AgentOption,
    serial: Optional[str] = SerialOption,
    usb: Optional[str] = UsbOption,
    printer: Optional[str] = PrinterOption,
    printer_uri: Optional[str] = PrinterUriOption,
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Add an asset to the register; give how the agents see it (--agent, --usb, --printer) if they can."""
    view = _service().register(tag, kind, window, unit=unit, description=description, agent=agent, serial=serial,
                               usb=usb, printer=printer, printer_uri=printer_uri, by=whoami(by))
    where = f"window {view.window}" + (f" ({view.unit})" if view.unit else "")
    _echo_asset(view, f"Asset {view.tag} ({view.kind}) registered at {where}"
                      + (f", recognised by {view.identity}." if view.identity else "."), as_json)


@asset_app.command("edit")
def edit(
    tag: str = TagArgument,
    description: Optional[str] = typer.Option(None, "--description", "-d", help="A new description."),
    agent: Optional[str] = AgentOption,
    serial: Optional[str] = SerialOption,
    usb: Optional[str] = UsbOption,
    printer: Optional[str] = PrinterOption,
    printer_uri: Optional[str] = PrinterUriOption,
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Change an asset's description or identity (the identity options given replace the old identity)."""
    view = _service().edit(tag, description=description, agent=agent, serial=serial, usb=usb, printer=printer,
                           printer_uri=printer_uri, by=whoami(by))
    _echo_asset(view, f"Asset {view.tag}: {view.description or 'no description'}; "
                      f"recognised by {view.identity or 'nothing'}.", as_json)


@asset_app.command("move")
def move(
    tag: str = TagArgument,
    window: str = typer.Option(..., "--window", help="The window it moves to."),
    unit: Optional[str] = UnitOption,
    note: str = typer.Option("", "--note", help="Why."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Move an asset to another window (and unit)."""
    view = _service().move(tag, window, unit=unit, note=note, by=whoami(by))
    _echo_asset(view, f"Asset {view.tag} is now at window {view.window}"
                      + (f" ({view.unit})." if view.unit else "."), as_json)


@asset_app.command("sign")
def sign(
    tag: str = TagArgument,
    person: str = typer.Option(..., "--by", help="Who signed for it (领用人)."),
    unit: Optional[str] = typer.Option(None, "--unit", help="The unit signing (default: the asset's)."),
    on: Optional[str] = typer.Option(None, "--on", metavar="DATE", help="When (default: today)."),
    note: str = typer.Option("", "--note", help="A note kept with the signature."),
    as_json: bool = JsonOption,
) -> None:
    """Record 领用签字: the unit signed for the asset on receipt."""
    signature = _service().sign(tag, person, unit=unit, on=fields.day("on", on) if on else None, note=note,
                                by=whoami())
    if as_json:
        print_json(signature)
    else:
        typer.echo(f"Asset {tag.strip()} signed for by {signature.signed_by} ({signature.unit}) on "
                   f"{signature.signed_on}.")


@asset_app.command("maintain")
def maintain(
    tag: str = TagArgument,
    start: str = typer.Option(..., "--from", help="Start: 2026-11-02 14:00 (policy time zone)."),
    end: str = typer.Option(..., "--to", help="End; a date alone means the end of that day."),
    note: str = typer.Option(..., "--note", help="What was done and by whom."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Record maintenance of an asset; hardware changes of its workstation in that time are not violations."""
    zone = policy_zone()
    done = _service(with_rules=True).maintain(tag, parse_moment(start, "--from", zone),
                                              parse_moment(end, "--to", zone, end_of_day=True), note, by=whoami(by))
    if as_json:
        print_json(done)
        return
    agents = [w["agent_id"] for w in done.maintenance.workstations]
    on = (f" and for workstation{'s' if len(agents) != 1 else ''} {', '.join(agents)}" if agents
          else " (no workstation shows it now: no workstation maintenance record)")
    evaluation = f" {result_line(done.evaluation)}" if done.evaluation is not None and agents else ""
    typer.echo(f"Maintenance {done.maintenance.id} recorded for asset {done.tag}{on}.{evaluation}")


@asset_app.command("retire")
def retire(
    tag: str = TagArgument,
    reason: str = typer.Option(..., "--reason", "-r", help="Why (报废, 调出 …)."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Take an asset out of service; it stays in the register with its history."""
    view = _service().retire(tag, reason, by=whoami(by))
    _echo_asset(view, f"Asset {view.tag} retired: {view.retired_reason}.", as_json)


@asset_app.command("import")
def import_assets(
    file: Path = typer.Argument(..., metavar="FILE.csv", help="tag, kind, window columns and optional ones."),
    by: Optional[str] = ByOption,
    as_json: bool = JsonOption,
) -> None:
    """Register every asset of a CSV file (UTF-8 or GB18030), or none when any row is bad."""
    tags = _service().import_csv(file, by=whoami(by))
    if as_json:
        print_json({"file": str(file), "imported": tags})
    else:
        typer.echo(f"Imported {len(tags)} asset{'s' if len(tags) != 1 else ''} from {file}.")


@asset_app.command("check")
def check(as_json: bool = JsonOption) -> None:
    """Discovered equipment that is not registered, and registered items no longer seen."""
    report = _service().check()
    if as_json:
        print_json(report)
        return
    _print_check(report)


def _print_check(report: Reconciliation) -> None:
    summary = (f"{report.workstations} workstation{'s' if report.workstations != 1 else ''} reporting, "
               f"{report.assets_checked} discoverable asset{'s' if report.assets_checked != 1 else ''}: "
               f"{len(report.unregistered)} unregistered, {len(report.missing)} not seen, "
               f"{len(report.elsewhere)} at another window.")
    typer.echo(summary)
    if report.unregistered:
        print_table("Not in the register", ("window", "workstation", "kind", "device", "register with"), (
            (u.window, f"{u.agent_id} ({u.hostname})" if u.hostname else u.agent_id, u.kind, u.description,
             f"--kind {u.kind} --window {u.window} {u.register_with}") for u in report.unregistered))
    if report.missing:
        print_table("Registered, not seen", ("tag", "kind", "window", "description", "identity", "last seen"), (
            (m.tag, m.kind, m.window, m.description, m.identity,
             f"{m.last_seen_at:%Y-%m-%d %H:%M} UTC on {m.last_seen_on}" if m.last_seen_at else "never")
            for m in report.missing))
    if report.elsewhere:
        print_table("Seen at another window", ("tag", "kind", "registered at", "seen at", "workstation"), (
            (e.tag, e.kind, e.window, e.seen_window, e.agent_id) for e in report.elsewhere))


def register(app: typer.Typer) -> None:
    """Mount this module's commands on ``app``."""
    app.add_typer(asset_app, name="asset")
