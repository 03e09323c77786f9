"""``counterguard violations list | show | confirm | dismiss | evaluate``: what the rules found, and judging it.

``show`` says whom a violation counts against (:mod:`controller.org.attribution`), or why nobody.

Times people type (``--from``, ``--to``) are in the active policy's time zone (Asia/Shanghai
without one): ``2026-11-02`` is the start of that day for ``--from`` and its end for ``--to``;
``2026-11-02 18:30`` is that local time; a time with an offset (``…T10:30:00+00:00``) is taken as given.
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
from typing import Optional
from zoneinfo import ZoneInfo

import typer

from controller.cli import context
from controller.cli.output import JsonOption, print_fields, print_json, print_table, to_jsonable
from controller.errors import InvalidInput
from controller.org.attribution import Attribution, AttributionInput, OrgDirectory
from controller.rules.service import EvaluationResult, RulesService
from controller.rules.violations import ViolationRecord, ViolationService

violations_app = typer.Typer(help="Violations the rules found: list, show, confirm, dismiss, evaluate.",
                             no_args_is_help=True)

DEFAULT_ZONE = "Asia/Shanghai"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

IdArgument = typer.Argument(..., metavar="ID", help="Violation id (see `counterguard violations list`).")
ReasonOption = typer.Option(..., "--reason", "-r", help="Why (kept with the violation).")
ByOption = typer.Option(None, "--by", help="Who decides (default: your login name).")


# ------------------------------------------------------------------------------ shared with decisions


def whoami(by: str | None = None) -> str:
    if by:
        return by[:128]
    try:
        return getpass.getuser()[:128]
    except (OSError, KeyError):  # no login name (e.g. a container without a passwd entry)
        return ""


def _store():  # type: ignore[no-untyped-def]
    from controller.policy.store import PolicyStore

    return PolicyStore(context.engine())


def rules_service() -> RulesService:
    return RulesService(context.engine(), _store())


def policy_zone() -> ZoneInfo:
    """The active policy's time zone, or Asia/Shanghai before any policy is active."""
    loaded = _store().active()
    return loaded.policy.zone if loaded is not None else ZoneInfo(DEFAULT_ZONE)


def parse_moment(text: str, option: str, zone: ZoneInfo, *, end_of_day: bool = False) -> dt.datetime:
    """A moment people typed: a local date, a local date and time, or an ISO time with an offset."""
    value = text.strip()
    try:
        if _DATE.match(value):
            day = dt.date.fromisoformat(value) + dt.timedelta(days=1 if end_of_day else 0)
            return dt.datetime.combine(day, dt.time(), tzinfo=zone).astimezone(dt.UTC)
        moment = dt.datetime.fromisoformat(value.replace(" ", "T", 1))
    except ValueError:
        raise InvalidInput(f"{option} {text!r} is not a date (2026-11-02) or a time (2026-11-02 18:30)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(dt.UTC)


def result_line(result: EvaluationResult) -> str:
    agents = f" on {result.agents} workstation{'s' if result.agents != 1 else ''}" if result.agents else ""
    return (f"Re-evaluated{agents}: {result.created} new, {result.updated} updated, "
            f"{result.withdrawn} withdrawn violation{'s' if result.withdrawn != 1 else ''}.")


# ------------------------------------------------------------------------------ commands


def _service() -> ViolationService:
    return ViolationService(context.engine())


@violations_app.command("list")
def list_violations(
    month: Optional[str] = typer.Option(None, "--month", metavar="YYYY-MM", help="Only this month (local dates)."),
    rule: Optional[str] = typer.Option(None, "--rule", help="Only this rule id."),
    workstation: Optional[str] = typer.Option(None, "--workstation", "-w", metavar="AGENT",
                                              help="Only this workstation (agent id or window)."),
    status: Optional[str] = typer.Option(None, "--status", help="open, confirmed, dismissed or withdrawn."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Show at most this many."),
    as_json: bool = JsonOption,
) -> None:
    """Violations, oldest first."""
    found = _service().list(month=month, rule=rule, workstation=workstation, status=status, limit=limit)
    if as_json:
        print_json(found)
        return
    if not found:
        typer.echo("No violations match.")
        return
    print_table(
        f"Violations ({len(found)})",
        ("id", "date", "rule", "ref", "workstation", "subject", "points", "status"),
        ((v.id, v.local_date, v.rule_id, v.ref, f"{v.agent_id} ({v.window})" if v.window else v.agent_id,
          v.subject[:60], "info" if v.informational else f"{v.penalty_points:g}", v.status) for v in found),
    )


@violations_app.command("show")
def show(violation_id: int = IdArgument, as_json: bool = JsonOption) -> None:
    """One violation with its evidence: the summary and the facts it came from."""
    v = _service().get(violation_id)
    with context.engine().connect() as conn:
        directory = OrgDirectory.load(conn)
    attribution = directory.attribute(AttributionInput(v.id, v.window, v.local_date, v.occurred_at,
                                                       tuple(v.accounts), v.attribute_to_owner))
    if as_json:
        people = [{**to_jsonable(p), "name": getattr(directory.staff(p.staff), "name", "")}
                  for p in attribution.people]
        print_json({**to_jsonable(v), "attribution": {"people": people, "unattributed": attribution.unattributed}})
        return
    _print(v, _counts_against(directory, attribution))


def _counts_against(directory: OrgDirectory, attribution: Attribution) -> list[tuple[str, str]]:
    """``counts against: S001 张三 (account zhangsan)``, the owner likewise, or why nobody is named."""
    rows = [("counts against" if p.role == "user" else "owner, counts too", f"{directory.label(p.staff)} ({p.how})")
            for p in attribution.people]
    if attribution.unattributed:
        rows.insert(0, ("unattributed", attribution.unattributed))
    return rows


def _print(v: ViolationRecord, attribution: list[tuple[str, str]]) -> None:
    status = v.status + (f" by {v.status_by or '?'} at {v.status_at:%Y-%m-%d %H:%M} UTC: {v.status_reason}"
                         if v.status_at else "")
    cost = "informational (not scored)" if v.informational else " ".join(
        part for part in (v.penalty_section or "", f"−{v.penalty_points:g} points" if v.penalty_points else "",
                          f"{v.penalty_money:g} yuan" if v.penalty_money else "") if part) or "no penalty"
    print_fields(f"Violation {v.id}: {v.title}", (
        ("rule", f"{v.rule_id} ({v.kind}) of policy {v.policy_id} {v.policy_version}"),
        ("regulation", v.ref),
        ("workstation", f"{v.agent_id} (window {v.window})" if v.window else v.agent_id),
        ("subject", v.subject),
        ("accounts", ", ".join(v.accounts) or "none known"),
        *attribution,
        ("local date", v.local_date),
        ("occurred", v.occurred_at),
        ("period", f"{v.period_start:%Y-%m-%d %H:%M} – {v.period_end:%Y-%m-%d %H:%M} UTC" if v.period_end
         else f"from {v.period_start:%Y-%m-%d %H:%M} UTC"),
        ("penalty", cost + (" (the workstation's owner too)" if v.attribute_to_owner else "")),
        ("status", status),
        ("evidence", v.summary),
    ))
    if v.facts:
        print_table("Facts", ("fact", "seq", "kind", "observed (agent clock)", "received"),
                    ((f.fact_id, f.sequence, f.kind, f.observed_at, f.received_at) for f in v.facts))


@violations_app.command("confirm")
def confirm(violation_id: int = IdArgument, reason: str = ReasonOption, by: Optional[str] = ByOption,
            as_json: bool = JsonOption) -> None:
    """Confirm a violation (it counts as the policy's scoring says)."""
    _changed(_service().confirm(violation_id, reason, whoami(by)), as_json)


@violations_app.command("dismiss")
def dismiss(violation_id: int = IdArgument, reason: str = ReasonOption, by: Optional[str] = ByOption,
            as_json: bool = JsonOption) -> None:
    """Dismiss a violation; it stays dismissed when the rules find it again."""
    _changed(_service().dismiss(violation_id, reason, whoami(by)), as_json)


def _changed(v: ViolationRecord, as_json: bool) -> None:
    if as_json:
        print_json(v)
    else:
        typer.echo(f"Violation {v.id} ({v.rule_id}, {v.agent_id}) {v.status} by {v.status_by or 'unknown'}.")


@violations_app.command("evaluate")
def evaluate(
    start: Optional[str] = typer.Option(None, "--from", help="Start (default: 24 hours ago)."),
    end: Optional[str] = typer.Option(None, "--to", help="End (default: now)."),
    agent: Optional[str] = typer.Option(None, "--agent", help="Only this agent (default: every agent)."),
    as_json: bool = JsonOption,
) -> None:
    """Evaluate the rules again over a range (after changing decisions or the policy by hand)."""
    zone = policy_zone()
    now = dt.datetime.now(dt.UTC)
    lower = parse_moment(start, "--from", zone) if start else now - dt.timedelta(days=1)
    upper = parse_moment(end, "--to", zone, end_of_day=True) if end else now
    if upper <= lower:
        raise InvalidInput("--to must come after --from")
    if agent:
        from controller.cli.inventory import _known_agent

        _known_agent(agent)
    result = rules_service().reevaluate(lower, min(upper, now), agent, reason="no longer found on re-evaluation")
    if as_json:
        print_json({"from": lower, "to": upper, **vars(result)})
    else:
        typer.echo(result_line(result))


def register(app: typer.Typer) -> None:
    app.add_typer(violations_app, name="violations")
