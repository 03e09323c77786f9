"""``counterguard policy validate | apply | show | history | test``: the computer-usage rules as files.

``validate`` and ``test`` need no database; ``apply`` stores a validated file as the active policy
(running controllers pick it up within seconds); ``show`` and ``history`` read what is stored.
"""

from __future__ import annotations

import dataclasses
import getpass
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from google.protobuf.json_format import ParseDict, ParseError
from rich.markup import escape

from controller.cli import context
from controller.cli.output import JsonOption, err_console, fmt, print_fields, print_json, print_table
from controller.errors import CounterGuardError, InvalidInput, NotFound
from controller.policy.loader import PolicyError, load_policy_file, read_policy_file, read_yaml
from controller.policy.model import Penalty, Policy, Rule
from controller.policy.store import PolicyRecord, PolicyStore
from protos.counterguard.v1 import facts_pb2

policy_app = typer.Typer(help="Validate, apply, show and try out policy files.", no_args_is_help=True)

FileArgument = typer.Argument(..., metavar="FILE", help="A policy file (YAML).")

# What `policy test` shows of each violation candidate (those it has; the rules engine may add more).
CANDIDATE_FIELDS = (
    "key", "rule_id", "ref", "title", "agent_id", "subject", "period_start", "period_end", "occurred_at",
    "evidence_summary",
)


def _whoami() -> str:
    try:
        return getpass.getuser()[:128]
    except (OSError, KeyError):  # no login name (e.g. a container without a passwd entry)
        return ""


def _store() -> PolicyStore:
    return PolicyStore(context.engine())


def _load(path: Path) -> Policy:
    """The validated policy in ``path``; on errors, every problem on its own line and exit 1."""
    try:
        return load_policy_file(path)
    except PolicyError as exc:
        for issue in exc.issues:
            err_console.print(str(issue), markup=False, highlight=False)
        count = len(exc.issues)
        err_console.print(
            f"[bold red]error:[/] {escape(str(path))} is not a valid policy ({count} problem{'s' if count != 1 else ''})",
            highlight=False,
        )
        raise typer.Exit(1) from None


def _summary(policy: Policy) -> str:
    rules, entries = len(policy.rules), len(policy.catalogue.entries)
    return (
        f"policy {policy.id} version {policy.version}, {rules} rule{'s' if rules != 1 else ''}, "
        f"{entries} catalogue entr{'ies' if entries != 1 else 'y'}"
    )


def penalty_text(rule: Rule, penalty: Penalty | None = None, currency: str = "CNY") -> str:
    """What a rule costs, for people: ``工作纪律 −5``, ``50 CNY``, ``informational``, ``—``."""
    penalty = penalty or rule.penalty
    if rule.informational:
        return "informational"
    parts = []
    if penalty.points:
        parts.append(f"{penalty.section + ' ' if penalty.section else ''}−{penalty.points:g}")
    if penalty.money:
        parts.append(f"{penalty.money:g} {currency}")
    text = ", ".join(parts) or "—"
    return text + (" (+ owner)" if rule.attribute_to_owner else "")


# ----------------------------------------------------------------------------- validate, apply


@policy_app.command("validate")
def validate(path: Path = FileArgument) -> None:
    """Check a policy file; prints every problem with its line and field."""
    policy = _load(path)
    typer.echo(f"{path}: valid — {_summary(policy)}")


@policy_app.command("apply")
def apply(
    path: Path = FileArgument,
    applied_by: str | None = typer.Option(None, "--by", metavar="NAME", help="Who applies it (default: your login)."),
) -> None:
    """Validate a policy file and make it the active policy (nothing is stored if it is invalid)."""
    _load(path)  # the errors, formatted; the store validates again before it writes
    record = _store().apply(read_policy_file(path), path.name, applied_by if applied_by is not None else _whoami())
    if record.unchanged:
        typer.echo(f"policy {record.policy_id} version {record.version} is already active; nothing changed")
        return
    typer.echo(
        f"policy {record.policy_id} version {record.version} (sha256 {record.sha256[:12]}) from {path} is now active; "
        "running controllers use it within seconds"
    )


# ----------------------------------------------------------------------------- show, history


def _record_json(record: PolicyRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    data.pop("content")
    data.pop("unchanged")
    return data


def _periods(periods: Sequence[Any]) -> str:
    return ", ".join(f"{p.start:%H:%M}–{p.end:%H:%M}" for p in periods)


@policy_app.command("show")
def show(as_json: bool = JsonOption) -> None:
    """Show the active policy: who applied it, its working time and its rules."""
    store = _store()
    loaded = store.active()
    if loaded is None:
        newest = store.history(limit=1)
        if newest:  # applied, but this controller cannot use it: say why rather than "none"
            try:
                store.load(newest[0])
            except PolicyError as exc:
                label = newest[0].label
                reason = f"the active policy {label} cannot be used by this controller:\n{exc}"
                raise CounterGuardError(reason) from None
        raise NotFound(
            "no policy is active; `counterguard serve` applies the default, or use `counterguard policy apply FILE`"
        )
    record, policy = loaded.record, loaded.policy
    if as_json:
        print_json({"record": _record_json(record), "policy": policy.model_dump(mode="json")})
        return
    timetable = policy.timetable
    fields: list[tuple[str, Any]] = [
        ("policy", f"{policy.id} version {policy.version}"),
        ("name", policy.name),
        ("applied by", record.applied_by),
        ("applied at", record.applied_at),
        ("source", record.source),
        ("sha256", record.sha256),
        ("time zone", policy.timezone),
        ("calendar", f"national ({policy.calendar.country}), {len(policy.calendar.overrides)} override(s)"),
        ("working days", ", ".join(day.value for day in timetable.weekdays)),
        ("working periods", _periods(timetable.periods)),
    ]
    fields += [
        (f"{season.name} ({season.start} … {season.end})", _periods(season.periods)) for season in timetable.seasonal
    ]
    fields.append(("scoring", _scoring(policy)))
    print_fields("Active policy", fields)
    currency = policy.scoring.currency
    print_table(
        "Rules",
        ("id", "kind", "ref", "when", "per", "penalty", "enabled"),
        (
            (rule.id, rule.kind, rule.ref, rule.when, rule.per, penalty_text(rule, currency=currency), rule.enabled)
            for rule in policy.rules
        ),
    )


def _scoring(policy: Policy) -> str:
    scoring = policy.scoring
    if scoring.scheme == "money":
        text = f"money ({scoring.currency})"
    else:
        sections = ", ".join(f"{s.name} {s.points:g}" for s in scoring.sections)
        text = f"points, base {scoring.base:g}" + (f": {sections}" if sections else "")
    if scoring.escalate_after:
        text += f"; escalated after {scoring.escalate_after} incidents"
    return text


@policy_app.command("history")
def history(as_json: bool = JsonOption) -> None:
    """Every policy applied, newest first (a version applied again appears again)."""
    records = _store().history()
    if as_json:
        print_json([_record_json(record) for record in records])
        return
    print_table(
        "Applied policies",
        ("applied at", "policy", "version", "by", "source", "sha256", "active"),
        (
            (r.applied_at, r.policy_id, r.version, r.applied_by, r.source, r.sha256[:12], "active" if r.active else "")
            for r in records
        ),
    )


# ----------------------------------------------------------------------------- test


def load_facts(path: Path) -> list[tuple[str, facts_pb2.Fact]]:
    """``(agent id, Fact)`` pairs from a YAML or JSON file: ``{agent: ID, facts: [...]}`` or a list of them.

    Facts use protobuf's JSON mapping (``observedAt``, ``processStarted`` …, enum names as text).
    """
    source = str(path)
    data, lines = read_yaml(read_policy_file(path), source)  # JSON is YAML; the same safe reader
    groups = data if isinstance(data, list) else [data]
    pairs: list[tuple[str, facts_pb2.Fact]] = []
    for g, group in enumerate(groups):
        where: tuple[str | int, ...] = (g,) if isinstance(data, list) else ()
        line = lines.get(where, 1)
        if not isinstance(group, dict) or set(group) - {"agent", "facts"} or not isinstance(group.get("agent"), str):
            raise InvalidInput(f"{source}:{line}: expected {{agent: ID, facts: [...]}} (or a list of those)")
        facts = group.get("facts") or []
        if not isinstance(facts, list):
            raise InvalidInput(f"{source}:{line}: facts must be a list")
        for index, fact in enumerate(facts):
            try:
                pairs.append((group["agent"], ParseDict(fact, facts_pb2.Fact())))
            except (ParseError, TypeError, ValueError) as exc:
                fact_line = lines.get((*where, "facts", index), line)
                raise InvalidInput(f"{source}:{fact_line}: facts[{index}]: {exc}") from None
    return pairs


def _plain(value: Any) -> Any:
    """Pydantic values inside a candidate (its penalty) as plain data, for JSON and tables."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _candidate(candidate: Any, agent_id: str) -> dict[str, Any]:
    if dataclasses.is_dataclass(candidate) and not isinstance(candidate, type):
        data = {f.name: getattr(candidate, f.name) for f in dataclasses.fields(candidate)}
    elif hasattr(candidate, "model_dump"):
        data = dict(candidate.model_dump())
    else:
        data = {name: getattr(candidate, name) for name in CANDIDATE_FIELDS if hasattr(candidate, name)}
    data = {name: _plain(value) for name, value in data.items()}
    data["agent_id"] = agent_id  # the engine evaluates one workstation at a time; the file says which
    return data


def evaluate(policy: Policy, facts: Sequence[tuple[str, facts_pb2.Fact]]) -> list[dict[str, Any]]:
    """What the rules engine finds in ``facts`` (``(agent id, fact)`` pairs), workstation by workstation."""
    try:
        from controller.rules.evaluate import evaluate_facts
    except ImportError as exc:
        raise CounterGuardError(f"the rules engine is not available in this installation ({exc})") from None
    by_agent: dict[str, list[tuple[str, facts_pb2.Fact]]] = {}
    for agent_id, fact in facts:
        named = by_agent.setdefault(agent_id, [])
        named.append((f"{agent_id}#{fact.sequence or len(named) + 1}", fact))  # the evidence names
    try:
        return [
            _candidate(candidate, agent_id)
            for agent_id, named in by_agent.items()
            for candidate in evaluate_facts(policy, named)
        ]
    except ValueError as exc:  # a fact the engine cannot place in time
        raise InvalidInput(f"the facts cannot be evaluated: {exc}") from None


@policy_app.command("test")
def test(
    path: Path = FileArgument,
    facts_path: Path = typer.Option(..., "--facts", metavar="FACTS", help="Facts to try it on (YAML or JSON)."),
    as_json: bool = JsonOption,
) -> None:
    """Show the violations a policy file would give for some facts, without storing anything."""
    policy = _load(path)
    try:
        facts = load_facts(facts_path)
    except PolicyError as exc:
        raise InvalidInput(str(exc)) from None
    candidates = evaluate(policy, facts)
    if as_json:
        print_json(candidates)
        return
    if not candidates:
        checked = f"{len(facts)} fact{'s' if len(facts) != 1 else ''}"
        typer.echo(f"no violations: {checked} checked against {_summary(policy)}")
        return
    count = f"{len(candidates)} violation{'s' if len(candidates) != 1 else ''}"
    typer.echo(f"{count} under policy {policy.id} version {policy.version}:")
    for c in candidates:  # a block each: evidence summaries are sentences, too long for a table
        typer.echo("")
        typer.echo(f"  {c.get('rule_id')}  [{c.get('ref')}]  {c.get('title')}")
        cost = _candidate_cost(c.get("penalty"), bool(c.get("informational")), policy.scoring.currency)
        typer.echo(f"    {c.get('agent_id')} · {fmt(c.get('occurred_at'))} · {cost}")
        typer.echo(f"    {c.get('subject')}")
        if c.get("evidence_summary"):
            typer.echo(f"    {c.get('evidence_summary')}")


def _candidate_cost(penalty: Any, informational: bool, currency: str) -> str:
    if informational:
        return "informational"
    penalty = penalty if isinstance(penalty, dict) else {}
    parts = []
    if penalty.get("points"):
        parts.append(f"{penalty.get('section') or ''} −{penalty['points']:g}".strip())
    if penalty.get("money"):
        parts.append(f"{penalty['money']:g} {currency}")
    return ", ".join(parts) or "no penalty"


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")

