"""A small centre in the database for the scoring tests: org rows, workstations, stored violations, policies.

Org rows are written straight into the organisation tables and violations straight into the
violation table, as the rules engine stores them (the end-to-end path is in
``tests/integration/test_score_month.py``); everything else goes through the real services.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from controller.models import AGENT
from controller.org.records import ABSENCE, ASSIGNMENT, STAFF, UNIT, WINDOW
from controller.policy.store import PolicyStore
from controller.rules.records import ACCOUNT_MAPPING, VIOLATION
from policies import DEFAULT_POLICY, EXAMPLES

AT = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
MONEY_POLICY = EXAMPLES / "r12-money.yaml"
_keys = itertools.count(1)


def apply_policy(engine: Engine, path: Path = DEFAULT_POLICY) -> PolicyStore:
    store = PolicyStore(engine)
    store.apply(path.read_text(encoding="utf-8"), str(path), "test")
    return store


def add_centre(engine: Engine) -> None:
    """Units tax (home department 市税务局) and police; windows A01 (tax), A02 (police); staff S1–S3, S9 inactive.

    S1 holds the A post of A01 and S2 its B post; S3 the A post of A02. Account zhangsan is S1's.
    """
    created = {"created_by": "test", "created_at": AT}
    with engine.begin() as conn:
        conn.execute(insert(UNIT), [{"code": "tax", "name": "税务局", "home_department": "市税务局", **created},
                                    {"code": "police", "name": "公安局", "home_department": "市公安局", **created}])
        conn.execute(insert(WINDOW), [{"code": "A01", "unit": "tax", "description": "", **created},
                                      {"code": "A02", "unit": "police", "description": "", **created}])
        conn.execute(insert(STAFF), [
            {"code": code, "name": name, "unit": unit, "active": active, "note": "", **created}
            for code, name, unit, active in (("S1", "张三", "tax", True), ("S2", "李四", "tax", True),
                                             ("S3", "王五", "police", True), ("S9", "赵六", "tax", False))])
        conn.execute(insert(ASSIGNMENT), [
            {"staff": s, "window": w, "post": p, "valid_from": dt.date(2026, 10, 1), "valid_to": None, **created}
            for s, w, p in (("S1", "A01", "A"), ("S2", "A01", "B"), ("S3", "A02", "A"))])
        conn.execute(insert(ACCOUNT_MAPPING), [{"account": "zhangsan", "staff": "S1", "windows": "",
                                                "valid_from": None, "valid_to": None, **created}])
        for agent, window in (("ag-a01", "A01"), ("ag-a02", "A02")):
            conn.execute(insert(AGENT).values(
                id=agent, hostname=agent, window=window, enrolled_at=AT, cert_serial=agent, cert_fingerprint=agent,
                cert_not_after=AT + dt.timedelta(days=365), last_sequence=0))


def add_absence(engine: Engine, staff: str, start: dt.date, end: dt.date) -> None:
    with engine.begin() as conn:
        conn.execute(insert(ABSENCE).values(staff=staff, starts_on=start, ends_on=end, reason="年假", created_by="t",
                                            created_at=AT))


def add_violation(engine: Engine, agent: str, day: int, *, rule: str = "games-video-music",
                  ref: str = "R11.6; R9 7(2)14", points: float = 5, section: str | None = "工作纪律",
                  money: float = 0, accounts: tuple[str, ...] = (), owner: bool = False, status: str = "open",
                  informational: bool = False, month: int = 11) -> int:
    """A violation as the rules engine stores it, on ``day`` of November 2026 at 10:00 Shanghai time."""
    moment = dt.datetime(2026, month, day, 2, 0, tzinfo=dt.UTC)
    values: dict[str, Any] = {
        "key": f"k{next(_keys):06d}", "rule_id": rule, "ref": ref, "title": f"title of {rule}", "kind": "forbidden_program",
        "category": "game", "policy_id": "counterguard-default", "policy_version": "2026.1", "agent_id": agent,
        "subject": "gnome-mines", "accounts": list(accounts), "period_start": moment, "period_end": moment,
        "occurred_at": moment, "local_date": dt.date(2026, month, day), "evidence": {"fact_ids": [], "summary": ""},
        "informational": informational, "attribute_to_owner": owner, "penalty_points": points,
        "penalty_money": money, "penalty_section": section, "status": status, "status_by": "", "status_at": None,
        "status_reason": "", "created_at": moment, "updated_at": moment,
    }
    with engine.begin() as conn:
        return int(conn.execute(insert(VIOLATION).values(**values)).inserted_primary_key[0])  # type: ignore[index]
