"""``counterguard score month | close | reopen | explain | import | entries | history`` (the monthly sheet).

``score month`` prints the sheet as a table, or writes it as CSV (UTF-8 with a BOM), JSON or XLSX;
a closed month is shown from its frozen copy. Months are written ``YYYY-MM``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Optional

import typer

from controller.cli import context
from controller.cli.output import JsonOption, console, print_fields, print_json, print_table
from controller.cli.violations import whoami
from controller.errors import InvalidInput
from controller.scoring.export import ROLES, summary, title, to_csv, to_json, write_xlsx
from controller.scoring.model import Person, Sheet
from controller.scoring.service import ScoreService, parse_month

score_app = typer.Typer(help="The monthly score sheet (regulation 9) and the money scheme (regulation 12).",
                        no_args_is_help=True)

MonthArgument = typer.Argument(..., metavar="MONTH", help="The month, YYYY-MM (e.g. 2026-11).")
ByOption = typer.Option(None, "--by", help="Who does it (default: your login name).")


class Format(StrEnum):
    TABLE = "table"
    CSV = "csv"
    XLSX = "xlsx"
    JSON = "json"


def _service() -> ScoreService:
    from controller.policy.store import PolicyStore

    return ScoreService(context.engine(), PolicyStore(context.engine()))


def _month(text: str, what: str = "MONTH") -> str:
    parse_month(text, what)
    return text.strip()


@score_app.command("month")
def month(
    month_text: str = MonthArgument,
    unit: Optional[str] = typer.Option(None, "--unit", help="Only this unit's rows (ranks stay the centre's)."),
    output_format: Format = typer.Option(Format.TABLE, "--format", "-f", help="table, csv, xlsx or json."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file (required for xlsx)."),
) -> None:
    """The month's sheet: per person, per section, total, rank, 先进工作者; the unattributed violations."""
    the_month = _month(month_text)
    if output_format is Format.XLSX and output is None:
        raise InvalidInput("--format xlsx writes a file: add -o FILE.xlsx")
    sheet = _service().month(the_month, unit)
    if output_format is Format.TABLE:
        _print_sheet(sheet)
        return
    if output_format is Format.XLSX:
        assert output is not None
        _writing(output, lambda: write_xlsx(sheet, output))
    else:
        data = to_csv(sheet) if output_format is Format.CSV else to_json(sheet).encode("utf-8")
        if output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            return
        _writing(output, lambda: output.write_bytes(data))
    typer.echo(f"Wrote the {sheet.month} sheet ({len(sheet.people)} people) to {output}.")


def _writing(path: Path, write: Callable[[], object]) -> None:
    try:
        write()
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None


def _print_sheet(sheet: Sheet) -> None:
    headers, rows = summary(sheet)
    print_table(title(sheet), headers, rows)
    for note in sheet.notes:
        console.print(f"note: {note}", highlight=False)
    if sheet.unattributed:
        print_table(f"Unattributed violations ({len(sheet.unattributed)}): charged to nobody",
                    ("id", "date", "window", "rule", "ref", "reason"),
                    ((u.violation_id, u.date, u.window, u.rule_id, u.ref, u.reason) for u in sheet.unattributed))


@score_app.command("close")
def close(month_text: str = MonthArgument, by: Optional[str] = ByOption,
          reason: str = typer.Option("", "--reason", "-r", help="Why (kept in the month's history)."),
          as_json: bool = JsonOption) -> None:
    """Freeze the month: from now on its sheet is shown as it is now, whatever changes later."""
    sheet = _service().close(_month(month_text), whoami(by), reason)
    if as_json:
        print_json({"month": sheet.month, "closed_at": sheet.closed_at, "closed_by": sheet.closed_by,
                    "people": len(sheet.people), "policy": f"{sheet.policy_id}@{sheet.policy_version}"})
        return
    typer.echo(f"Closed {sheet.month} ({len(sheet.people)} people, policy {sheet.policy_id} {sheet.policy_version}) "
               f"by {sheet.closed_by or 'unknown'}.")


@score_app.command("reopen")
def reopen(month_text: str = MonthArgument, reason: str = typer.Option(..., "--reason", "-r", help="Why (required)."),
           by: Optional[str] = ByOption) -> None:
    """Reopen a closed month: it is computed again from what the database holds; logged with the reason."""
    event = _service().reopen(_month(month_text), whoami(by), reason)
    typer.echo(f"Reopened {event.month} by {event.by or 'unknown'}: {event.reason}.")


@score_app.command("explain")
def explain(staff: str = typer.Argument(..., metavar="STAFF", help="Staff code (工号)."),
            month_text: str = MonthArgument, as_json: bool = JsonOption) -> None:
    """Every line behind one person's score."""
    sheet, person = _service().explain(staff, _month(month_text))
    if as_json:
        print_json({"month": sheet.month, "closed_at": sheet.closed_at, "policy_id": sheet.policy_id,
                    "policy_version": sheet.policy_version, "scheme": sheet.scheme, "person": person})
        return
    _print_person(sheet, person)


def _print_person(sheet: Sheet, p: Person) -> None:
    if sheet.scheme == "money":
        fields = [("扣款(元)", f"{p.money:g}"),
                  ("通报", "; ".join(f"{e.rule_id} ×{e.count} → {e.department}" for e in p.escalations))]
    else:
        fields = [(s.name, f"{s.value:g} of {s.points:g}" + (f" (raw {s.raw:g}, floor applied)" if s.floored else ""))
                  for s in p.sections]
        fields += [("其他扣分", f"{p.other:g}")] if p.other else []
        fields += [(sheet.bonus_name, f"{p.bonus:g}"), ("总分", f"{p.total:g}"),
                   ("名次", f"{p.rank}" + (" (tied)" if p.tied else "")), ("先进工作者", "是" if p.advanced else "")]
    fields += [("flags", "; ".join(p.flags)), ("notes", "; ".join(p.notes))]
    state = f"closed {sheet.closed_at:%Y-%m-%d} by {sheet.closed_by}" if sheet.closed_at else "not closed"
    print_fields(f"{p.staff} {p.name} ({p.unit_name or p.unit}), {sheet.month}, {state}", fields)
    if not p.lines:
        typer.echo("Nothing charged this month.")
        return
    amount = "yuan" if sheet.scheme == "money" else "points"
    print_table("Lines", ("date", "section", amount, "rule", "ref", "what", "violations", "role", "how"), (
        (line.date, line.section, f"{line.money if sheet.scheme == 'money' else line.points:g}", line.rule_id,
         line.ref, line.title, ", ".join(map(str, line.violation_ids)), ROLES[line.role], line.how)
        for line in p.lines))


@score_app.command("import")
def import_entries(file: Path = typer.Argument(..., metavar="FILE.csv", help="Manual entries (UTF-8 or GB18030)."),
                   month_text: str = typer.Option(..., "--month", metavar="YYYY-MM", help="The month they are for."),
                   by: Optional[str] = ByOption) -> None:
    """Import manual entries (dress, attendance, peer-review votes, bonus, flags): every row or none."""
    result = _service().import_entries(file, _month(month_text, "--month"), whoami(by))
    typer.echo(f"Imported {len(result.entries)} entr{'ies' if len(result.entries) != 1 else 'y'} "
               f"for {result.month} from {result.file}.")


@score_app.command("entries")
def entries(month_text: str = MonthArgument, as_json: bool = JsonOption) -> None:
    """The month's manual entries."""
    found = _service().entries(_month(month_text))
    if as_json:
        print_json(found)
        return
    if not found:
        typer.echo("No manual entries for this month.")
        return
    print_table(f"Manual entries ({len(found)})",
                ("id", "staff", "section", "points", "votes", "flag", "ref", "reason", "entered by", "from"),
                ((e.id, e.staff, e.section, f"{e.points:g}", f"{e.votes_for}/{e.votes_total}" if e.votes_total else "",
                  e.flag, e.ref, e.reason, e.entered_by, f"{e.source_file}:{e.source_row}" if e.source_file else "")
                 for e in found))


@score_app.command("history")
def history(month_text: str = MonthArgument, as_json: bool = JsonOption) -> None:
    """Every close and reopen of the month."""
    events = _service().history(_month(month_text))
    if as_json:
        print_json(events)
        return
    if not events:
        typer.echo("The month was never closed.")
        return
    print_table("Closes and reopens", ("at", "action", "by", "reason", "policy"),
                ((e.at, e.action, e.by, e.reason, f"{e.policy_id} {e.policy_version}".strip()) for e in events))


def register(app: typer.Typer) -> None:
    """Mount this module's commands on ``app``."""
    app.add_typer(score_app, name="score")
