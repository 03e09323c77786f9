"""Benchmark: how long a month's score sheet takes for a centre of 1,000 staff.

Builds a centre in a fresh database (SQLite file, or ``--db`` for PostgreSQL): 10 units, 500
windows with an A and a B post each (1,000 staff), one OS account per person and one shared by
two, a few absences, and 30 days of violations stored as the rules engine stores them (per
workstation and working day: a game or video now and then, a machine left on after work, unknown
accounts; some dismissed), plus manual entries (peer-review votes for everyone, some deductions and
bonus points). Then times :meth:`ScoreService.month` — reading the month's violations in one query,
attributing every one with the organisation loaded once, computing every section, floor and rank —
and the XLSX export of the result. Median of ``--runs``, wall clock and this process's CPU time (on
a busy machine the wall clock also counts waiting for a core). Target (issue 4): < 1 s for the sheet.

Usage: ``python bench/scoring.py [--staff N] [--runs N] [--db URL] [--postgres]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, insert, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from controller.db import make_engine  # noqa: E402
from controller.migrate import upgrade  # noqa: E402
from controller.models import AGENT  # noqa: E402
from controller.org.records import ABSENCE, ASSIGNMENT, STAFF, UNIT, WINDOW  # noqa: E402
from controller.policy.store import PolicyStore  # noqa: E402
from controller.rules.records import ACCOUNT_MAPPING, VIOLATION  # noqa: E402
from controller.scoring.export import write_xlsx  # noqa: E402
from controller.scoring.records import SCORE_ENTRY  # noqa: E402
from controller.scoring.service import ScoreService  # noqa: E402
from policies import DEFAULT_POLICY  # noqa: E402

AT = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
PG_ADMIN = os.environ.get("COUNTERGUARD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
RULES = [  # (rule id, ref, section, points, share of workstation-days)
    ("games-video-music", "R11.6; R9 7(2)14", "工作纪律", 5, 0.10),
    ("powered-on-after-hours", "R11.4; R9 7(2)13", "工作纪律", 1, 0.15),
    ("session-account", "R11.1; R11.3", None, 0, 0.03),
    ("hardware-changed", "R11.7; R9 7(1)9", "规范服务", 5, 0.005),
]


def build_centre(engine: Engine, staff_count: int, rng: random.Random) -> int:
    """The centre and a month of violations; returns how many violations were stored."""
    created = {"created_by": "bench", "created_at": AT}
    windows = staff_count // 2
    with engine.begin() as conn:
        conn.execute(insert(UNIT), [{"code": f"u{u}", "name": f"单位{u}", "home_department": f"主管部门{u}", **created}
                                    for u in range(10)])
        conn.execute(insert(WINDOW), [{"code": f"W{w:03d}", "unit": f"u{w % 10}", "description": "", **created}
                                      for w in range(windows)])
        conn.execute(insert(STAFF), [{"code": f"S{s:04d}", "name": f"员工{s}", "unit": f"u{(s // 2) % 10}",
                                      "active": True, "note": "", **created} for s in range(staff_count)])
        conn.execute(insert(ASSIGNMENT), [
            {"staff": f"S{s:04d}", "window": f"W{s // 2:03d}", "post": "AB"[s % 2], "valid_from": dt.date(2026, 1, 1),
             "valid_to": None, **created} for s in range(staff_count)])
        conn.execute(insert(ABSENCE), [
            {"staff": f"S{s:04d}", "starts_on": dt.date(2026, 11, 9), "ends_on": dt.date(2026, 11, 13), "reason": "年假",
             **created} for s in range(0, staff_count, 20)])
        accounts = [{"account": f"user{s}", "staff": f"S{s:04d}", "windows": "", "valid_from": None,
                     "valid_to": None, **created} for s in range(staff_count)]
        accounts.append({**accounts[1], "account": "user0"})  # one account shared by two people
        conn.execute(insert(ACCOUNT_MAPPING), accounts)
        conn.execute(insert(AGENT), [
            {"id": f"ag-{w:03d}", "hostname": f"pc{w}", "machine_id": "", "os_family": "linux", "agent_version": "",
             "window": f"W{w:03d}", "unit": None, "enrolled_at": AT, "cert_serial": f"s{w}",
             "cert_fingerprint": f"f{w}", "cert_not_after": AT + dt.timedelta(days=365), "revoked_at": None,
             "revoked_reason": "", "last_seen_at": None, "last_sequence": 0} for w in range(windows)])
        rows = list(_violations(windows, rng))
        for chunk in range(0, len(rows), 5000):
            conn.execute(insert(VIOLATION), rows[chunk:chunk + 5000])
        conn.execute(insert(SCORE_ENTRY), list(_entries(staff_count, rng)))
    return len(rows)


def _violations(windows: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    number = 0
    for day in range(1, 31):
        date = dt.date(2026, 11, day)
        if date.isoweekday() > 5:
            continue
        for w in range(windows):
            for rule, ref, section, points, share in RULES:
                if rng.random() >= share:
                    continue
                number += 1
                moment = dt.datetime(2026, 11, day, 2, rng.randrange(60), tzinfo=dt.UTC)
                staff = 2 * w + rng.randrange(2)
                accounts = [] if rule == "powered-on-after-hours" else (
                    [f"user{staff}"] if rule != "session-account" else [f"guest{rng.randrange(9)}"])
                yield {
                    "key": f"{number:064d}", "rule_id": rule, "ref": ref, "title": rule, "kind": "forbidden_program",
                    "category": "", "policy_id": "counterguard-default", "policy_version": "2026.1",
                    "agent_id": f"ag-{w:03d}", "subject": f"s{number}", "accounts": accounts, "period_start": moment,
                    "period_end": moment, "occurred_at": moment, "local_date": date,
                    "evidence": {"fact_ids": [number], "summary": ""}, "informational": False,
                    "attribute_to_owner": False, "penalty_points": points, "penalty_money": 0,
                    "penalty_section": section, "status": "dismissed" if rng.random() < 0.05 else "open",
                    "status_by": "", "status_at": None, "status_reason": "", "created_at": moment,
                    "updated_at": moment,
                }


def _entries(staff_count: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    base = {"month": "2026-11", "flag": "", "entered_by": "bench", "entered_at": AT, "source_file": "bench.csv",
            "source_sha256": "0" * 64}
    for s in range(staff_count):
        total = 20
        yield {**base, "staff": f"S{s:04d}", "section": "窗口互评", "points": 0, "votes_for": rng.randint(10, total),
               "votes_total": total, "ref": "R9 7(4)", "reason": "", "source_row": s + 2}
        if rng.random() < 0.2:
            yield {**base, "staff": f"S{s:04d}", "section": "规范服务", "points": -rng.choice((1, 2, 5)),
                   "votes_for": None, "votes_total": None, "ref": "R9 7(1)3", "reason": "着装", "source_row": None}
        if rng.random() < 0.05:
            yield {**base, "staff": f"S{s:04d}", "section": "附加分", "points": 2, "votes_for": None,
                   "votes_total": None, "ref": "R9 6", "reason": "表扬", "source_row": None}


@contextmanager
def database(url: str | None, postgres: bool) -> Iterator[tuple[str, str]]:
    """A fresh database: the given URL, a new PostgreSQL database (dropped afterwards), or a SQLite file."""
    if url:
        yield url, make_url(url).get_backend_name()
        return
    if not postgres:
        with tempfile.TemporaryDirectory(prefix="cg-bench-score-") as folder:
            yield f"sqlite:///{Path(folder) / 'cg.db'}", "sqlite"
        return
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"cg_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False), "postgresql"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(url: str, backend: str, staff_count: int, runs: int) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine)
        store = PolicyStore(engine)
        store.apply(DEFAULT_POLICY.read_text(encoding="utf-8"), str(DEFAULT_POLICY), "bench")
        violations = build_centre(engine, staff_count, random.Random(11))
        service = ScoreService(engine, store, lambda: dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
        service.month("2026-11")  # warm: the policy parsed, the connection pool filled
        times, cpu, sheet = [], [], None
        for _ in range(runs):
            began, began_cpu = time.perf_counter(), time.process_time()
            sheet = service.month("2026-11")
            times.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
        assert sheet is not None
        with tempfile.TemporaryDirectory() as folder:
            began = time.perf_counter()
            write_xlsx(sheet, Path(folder) / "sheet.xlsx")
            xlsx = time.perf_counter() - began
        lines = sum(len(p.lines) for p in sheet.people)
        print(f"{backend}: month sheet for {len(sheet.people)} staff, {violations} violations stored "
              f"({lines} lines charged, {len(sheet.unattributed)} unattributed): median {statistics.median(times):.3f} s, "
              f"min {min(times):.3f} s over {runs} runs (target < 1 s); this process's CPU time median "
              f"{statistics.median(cpu):.3f} s (the database server's not included); XLSX export {xlsx:.2f} s")
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--staff", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", help="Database URL (default: a temporary SQLite file).")
    parser.add_argument("--postgres", action="store_true", help="Also measure on a fresh PostgreSQL database.")
    args = parser.parse_args()
    with database(args.db, False) as (url, backend):
        measure(url, backend, args.staff, args.runs)
    if args.postgres and not args.db:
        try:
            with database(None, True) as (url, backend):
                measure(url, backend, args.staff, args.runs)
        except OperationalError as exc:
            print(f"postgresql: not measured, the server at {PG_ADMIN} is not usable ({exc.orig})")


if __name__ == "__main__":
    main()
