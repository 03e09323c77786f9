"""Rule kinds about what is plugged in, who logs in, and the antivirus: R11.2 (removable storage),
R11.1 and R11.3 (accounts), R11.9 (antivirus).

**removable_storage** — a removable disk attached or mounted that is not a registered device of
this workstation (vendor id, product id and serial; a registration without a serial covers every
device of the model). A device is its vendor and product ids and its serial (else its USB bus id,
else its disk name); it is attached from the first ATTACHED or MOUNTED report until REMOVED, a
shutdown or a new boot. "Each time": ``session`` = one per attachment; ``day`` = one per device per
local day; ``once`` = one per device. Only attachments within the rule's ``when`` count.

**session_account** — a login session (session list at agent start, then logins and logouts) by an
account that is mapped to nobody at the session's start (R11.3), or mapped only to staff who may
not use this workstation's window (R11.1). Mappings are matched case-insensitively; one without
windows allows any window. "Each time": ``session`` = one per session (account, terminal and the
start time the agent reported); ``day`` = one per account per local day; ``once`` = one per account.

**antivirus** — the policy's antivirus products are the ones the centre accepts (``agent.antivirus``):
one of them must be installed and running. A violation while the latest status the agent reported
has none installed and running, or the running ones' last scan (where readable) is older than
their ``max_days_without_scan``; only while the machine is on (power intervals), and within the
rule's ``when``. Without products in the policy, or before the agent reported any status, there
is nothing to judge. "Each time": ``day`` = one per problem per local day; ``session`` = one per
problem per boot of the machine; ``once`` = one per problem.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field

from controller.policy.model import Occurrence, Rule
from controller.rules.base import Env, ViolationCandidate, conditions_pass, first_instant, last_instant, raw_iso
from controller.rules.intervals import FactId, Interval, TimedFact, intersect, merge, raw_time
from controller.rules.sessions import Session, login_sessions, power_ends
from protos.counterguard.v1 import facts_pb2

Storage = facts_pb2.RemovableStorage
Power = facts_pb2.PowerEvent
_PARTITION = re.compile(r"(?<=[a-z])\d+$|(?<=\d)p\d+$")


def _group(rule: Rule, env: Env, session_key: str, parts: list[Interval]) -> list[tuple[str, list[Interval]]]:
    """(period key, parts) for the rule's "each time"."""
    if rule.per is Occurrence.SESSION:
        return [(session_key, parts)]
    if rule.per is Occurrence.ONCE:
        return [("", parts)]
    return [(day.isoformat(), pieces) for day, pieces in sorted(env.split_by_day(parts).items())]


# ------------------------------------------------------------------------------ removable storage


@dataclass
class Attachment:
    identity: str
    report: facts_pb2.RemovableStorage
    key: str  # the first report's observation time, as the agent gave it
    start: dt.datetime
    end: dt.datetime
    open: bool
    mounts: list[str] = field(default_factory=list)
    fact_ids: list[FactId] = field(default_factory=list)


def device_identity(report: facts_pb2.RemovableStorage) -> str:
    ids = f"{report.vendor_id.lower()}:{report.product_id.lower()}"
    if report.serial:
        return f"{ids} serial {report.serial}"
    if report.bus_id:
        return f"{ids} at USB {report.bus_id}"
    return f"{ids} disk {_PARTITION.sub('', report.device)}"


def attachments(facts: list[TimedFact]) -> list[Attachment]:
    """Removable-storage reports (in sequence order) as attachments per device."""
    result: list[Attachment] = []
    attached: dict[str, Attachment] = {}
    previous: dt.datetime | None = None
    for fact in facts:
        if power_ends(fact):
            at = fact.time if fact.fact.power.kind == Power.KIND_SHUTDOWN else (previous or fact.time)
            for current in attached.values():
                current.end, current.open = max(current.start, at), False
            attached.clear()
        elif fact.kind == "removable_storage":
            report = fact.fact.removable_storage
            identity = device_identity(report)
            current = attached.get(identity)
            if report.action in (Storage.ACTION_ATTACHED, Storage.ACTION_MOUNTED):
                if current is None:
                    current = Attachment(identity, report, raw_iso(fact), fact.time, fact.time, True)
                    attached[identity] = current
                    result.append(current)
                current.end = max(current.end, fact.time)
                current.fact_ids.append(fact.fact_id)
                if report.mount_point and report.mount_point not in current.mounts:
                    current.mounts.append(report.mount_point)
            elif report.action == Storage.ACTION_REMOVED and current is not None:
                current.end, current.open = max(current.start, fact.time), False
                current.fact_ids.append(fact.fact_id)
                del attached[identity]
            elif current is not None:
                current.fact_ids.append(fact.fact_id)
        previous = fact.time if previous is None else max(previous, fact.time)
    for current in attached.values():
        current.end = max(current.end, previous or current.end)
    return result


def _registered(env: Env, report: facts_pb2.RemovableStorage) -> bool:
    for device in env.context.devices:
        same_model = (device.vendor_id.lower(), device.product_id.lower()) == (report.vendor_id.lower(),
                                                                                report.product_id.lower())
        if not same_model:
            continue
        if not device.serial or device.serial == report.serial:
            return True
    return False


def removable_storage(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """Unregistered removable storage attached or mounted."""
    relevant = [f for f in env.facts if f.kind == "removable_storage" or power_ends(f)]
    groups: dict[tuple[str, str], list[tuple[Attachment, list[Interval]]]] = defaultdict(list)
    for attachment in attachments(relevant):
        report = attachment.report
        if _registered(env, report):
            continue
        values = {
            "device": {"vendor_id": report.vendor_id, "product_id": report.product_id, "vendor": report.vendor,
                       "product": report.product, "serial": report.serial, "size_bytes": report.size_bytes,
                       "device": report.device, "mount_point": report.mount_point, "fs_type": report.fs_type},
            "agent": env.agent_values(),
        }
        parts = env.when(rule.when, attachment.start, attachment.end)
        if not parts or not conditions_pass(rule, values):
            continue
        for period, pieces in _group(rule, env, f"attached {attachment.key}", parts):
            groups[(attachment.identity, period)].append((attachment, pieces))
    candidates = []
    for (identity, period), members in sorted(groups.items()):
        first = members[0][0]
        report = first.report
        parts = [p for _, ps in members for p in ps]
        name = " ".join(x for x in (report.vendor, report.product) if x) or "removable disk"
        size = f", {report.size_bytes / 1e9:.1f} GB" if report.size_bytes else ""
        mounts = f", mounted at {', '.join(first.mounts)}" if first.mounts else ""
        last = members[-1][0]
        state = "still attached at the last report" if last.open else f"removed by {env.local(last.end)}"
        summary = (f"Unregistered removable storage {name} ({identity}{size}) attached at {env.local(first.start)}"
                   f"{mounts}; {state}.")
        candidates.append(env.candidate(
            rule, subject=f"{name} ({identity})", subject_key=identity, period_key=period,
            period_start=first_instant(parts) if rule.per is not Occurrence.SESSION else first.start,
            period_end=max(a.end for a, _ in members), occurred_at=first_instant(parts),
            fact_ids=[i for a, _ in members for i in a.fact_ids], summary=summary,
        ))
    return candidates


# ------------------------------------------------------------------------------ session accounts


def _account_problem(env: Env, username: str, moment: dt.datetime) -> str | None:
    """Why ``username`` may not use this workstation at ``moment`` (R11.3 or R11.1), or ``None``."""
    wanted = username.casefold()
    mappings = [
        a for a in env.context.accounts
        if a.account.casefold() == wanted
        and (a.valid_from is None or a.valid_from <= moment) and (a.valid_to is None or moment < a.valid_to)
    ]
    if not mappings:
        return f"account {username} is not mapped to any staff member of the centre (R11.3)"
    window = env.context.window.casefold()
    if any(not a.windows or window in (w.casefold() for w in a.windows) for a in mappings):
        return None
    staff = ", ".join(sorted({a.staff for a in mappings}))
    windows = ", ".join(sorted({w for a in mappings for w in a.windows}))
    return (f"account {username} belongs to {staff}, who may use window(s) {windows}, not this workstation's "
            f"window {env.context.window or '(none)'} (R11.1)")


def session_account(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """Sessions by unmapped accounts (R11.3) or by staff not allowed at this window (R11.1)."""
    groups: dict[tuple[str, str], list[tuple[Session, str, list[Interval]]]] = defaultdict(list)
    for session in login_sessions(env.facts):
        if not session.username:
            continue
        parts = env.when(rule.when, session.start, session.end)
        if not parts:
            continue
        problem = _account_problem(env, session.username, first_instant(parts))
        values = {"session": {"username": session.username, "terminal": session.terminal, "host": session.host},
                  "agent": env.agent_values()}
        if problem is None or not conditions_pass(rule, values):
            continue
        for period, pieces in _group(rule, env, session.key, parts):
            groups[(session.username, period)].append((session, problem, pieces))
    candidates = []
    for (username, period), members in sorted(groups.items()):
        first, problem, _ = members[0]
        parts = [p for _, _, ps in members for p in ps]
        where = f" from {first.host}" if first.host else ""
        summary = (f"Session of {username} on {first.terminal or 'a terminal'}{where} from {env.local(first.start)}"
                   f" to {env.local(members[-1][0].end)}: {problem}.")
        candidates.append(env.candidate(
            rule, subject=f"account {username}" + (f" ({first.key})" if rule.per is Occurrence.SESSION else ""),
            subject_key=username, period_key=period,
            period_start=first.start if rule.per is Occurrence.SESSION else first_instant(parts),
            period_end=max(s.end for s, _, _ in members), occurred_at=first_instant(parts),
            fact_ids=[i for s, _, _ in members for i in s.fact_ids], summary=summary, accounts=[username],
        ))
    return candidates


# ------------------------------------------------------------------------------ antivirus


def _antivirus_problems(env: Env, status: facts_pb2.AntivirusStatus, moment: dt.datetime,
                        offset: dt.timedelta) -> dict[str, tuple[str, dt.datetime]]:
    """problem → (text, since when it holds) for one reported status."""
    accepted = {p.name: p for p in env.policy.agent.antivirus}
    reported = {p.name: p for p in status.products if p.name in accepted}
    running = [p for p in reported.values() if p.installed and p.running]
    if not running:
        states = ", ".join(
            f"{name}: {'installed' if reported.get(name) and reported[name].installed else 'not installed'}"
            f"{', running' if reported.get(name) and reported[name].running else ''}"
            for name in accepted
        )
        return {"not running": ("none of the centre's antivirus products is installed and running (" + states + ")",
                                moment)}
    overdue: list[tuple[dt.datetime, str]] = []
    for product in running:
        limit = accepted[product.name].max_days_without_scan
        scanned = raw_time(product.last_scan)
        if limit is None or scanned is None:
            return {}  # a running product without a scan limit, or whose last scan is unreadable: nothing to judge
        text = f"{product.name} last scanned {env.local(scanned - offset)}, a scan is due every {limit} days"
        overdue.append((scanned - offset + dt.timedelta(days=limit), text))
    due, text = max(overdue)
    return {"scan overdue": (text, due)}


def antivirus(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """No accepted antivirus installed and running, or its last scan too old, while the machine is on."""
    if not env.policy.agent.antivirus:
        return []
    statuses = [f for f in env.facts if f.kind == "antivirus"]
    statuses.sort(key=lambda f: (f.time, f.fact.sequence))
    until = env.last_contact or env.end
    found: dict[tuple[str, str], list[tuple[list[Interval], str, list[FactId]]]] = defaultdict(list)
    for index, fact in enumerate(statuses):
        ends = statuses[index + 1].time if index + 1 < len(statuses) else max(until, fact.time)
        for problem, (text, since) in _antivirus_problems(env, fact.fact.antivirus, fact.time, fact.offset).items():
            start = max(since, fact.time)
            values = {"antivirus": {"problem": problem}, "agent": env.agent_values()}
            if start >= ends or not conditions_pass(rule, values):
                continue
            for power in env.power:  # only while the machine is on; "per session" is per boot
                on = intersect([Interval(start, ends)], [Interval(power.start, power.end)])
                parts = [q for p in on for q in env.when(rule.when, p.start, p.end) if q.end > q.start]
                if not parts:
                    continue
                boot = power.boot_reported.isoformat() if power.boot_reported else f"unknown {raw_iso(fact)}"
                for period, pieces in _group(rule, env, f"boot {boot}", parts):
                    found[(problem, period)].append((pieces, text, [fact.fact_id]))
    candidates = []
    for (problem, period), members in sorted(found.items()):
        parts = merge(p for ps, _, _ in members for p in ps)
        summary = f"{members[-1][1][:1].upper()}{members[-1][1][1:]}; from {env.local(parts[0].start)} to " \
                  f"{env.local(parts[-1].end)} while the computer was on."
        candidates.append(env.candidate(
            rule, subject=f"antivirus {problem}", period_key=period, period_start=first_instant(parts),
            period_end=last_instant(parts), occurred_at=first_instant(parts),
            fact_ids=[i for _, _, ids in members for i in ids], summary=summary,
        ))
    return candidates
