"""The decision tables kept in memory: every write moves the revision, and a warm controller sees it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, event, insert, select, update
from sqlalchemy.engine import Engine

from controller.db import make_engine, session_scope
from controller.ingest import IngestService
from controller.models import Agent
from controller.policy.model import RuleKind
from controller.policy.store import PolicyStore
from controller.rules.records import (
    ACCOUNT_MAPPING,
    DECISION_REVISION,
    DECISION_TABLES,
    EXEMPTION,
    MAINTENANCE_RECORD,
    REGISTERED_DEVICE,
    SOFTWARE_APPROVAL,
    VIOLATION,
)
from controller.models import AGENT as AGENTS
from controller.rules.decision_tables import REVISION, DecisionCache
from controller.rules.service import RulesService
from policies import DEFAULT_POLICY
from tests.controller.rules.builders import MINUTE, Facts, Policies, desktop_game, dpkg, local, policy, rule

AGENT = "ag-decisions-01"
WHEN = dt.datetime(2026, 11, 2, 1, tzinfo=dt.UTC)

ROWS: dict[str, dict[str, Any]] = {
    "software_approval": {"name": "cg-mines.desktop", "decision": "approved", "decided_at": WHEN},
    "exemption": {"agent_id": AGENT, "starts_at": WHEN, "ends_at": WHEN + dt.timedelta(hours=2), "reason": "加班",
                  "created_at": WHEN},
    "registered_device": {"vendor_id": "0781", "product_id": "5567", "registered_at": WHEN},
    "account_mapping": {"account": "zhang", "staff": "张三", "created_at": WHEN},
    "maintenance_record": {"agent_id": AGENT, "starts_at": WHEN, "ends_at": WHEN + dt.timedelta(hours=1),
                           "note": "换硬盘", "recorded_at": WHEN},
}
TABLES = {t.name: t for t in (SOFTWARE_APPROVAL, EXEMPTION, REGISTERED_DEVICE, ACCOUNT_MAPPING, MAINTENANCE_RECORD)}
CHANGED = {"software_approval": {"decision": "denied"}, "exemption": {"reason": "周末值班"},
           "registered_device": {"description": "签章U盾"}, "account_mapping": {"staff": "李四"},
           "maintenance_record": {"note": "换内存"}}


def revision(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(DECISION_REVISION.c.revision)).scalar_one())


@pytest.fixture
def agent(engine: Engine, clock: Any) -> str:
    with session_scope(engine) as session:
        session.add(Agent(id=AGENT, window="W01", unit="市场监管局", enrolled_at=clock(), cert_serial="1",
                          cert_fingerprint="f", cert_not_after=clock() + dt.timedelta(days=365)))
    return AGENT


@pytest.fixture
def elsewhere(engine: Engine) -> Iterator[Engine]:
    """A second engine on the same database: another process (the CLI, psql, another controller)."""
    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        yield other
    finally:
        other.dispose()


def test_the_counted_tables_are_the_decisions_and_the_policy_in_force() -> None:
    assert set(DECISION_TABLES) == set(TABLES) | {"policy_activation"}  # that one: see the policy test below


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_insert_update_and_delete_on_a_decision_table_moves_the_revision(
        engine: Engine, elsewhere: Engine, agent: str, name: str) -> None:
    table = TABLES[name]
    seen = [revision(engine)]
    with elsewhere.begin() as conn:
        row_id = conn.execute(insert(table).values(ROWS[name]).returning(table.c.id)).scalar_one()
    seen.append(revision(engine))
    with elsewhere.begin() as conn:
        conn.execute(update(table).where(table.c.id == row_id).values(CHANGED[name]))
    seen.append(revision(engine))
    with elsewhere.begin() as conn:
        conn.execute(delete(table).where(table.c.id == row_id))
    seen.append(revision(engine))

    assert seen == sorted(set(seen)) and len(seen) == 4, f"revisions after insert, update, delete: {seen}"


def test_a_write_rolled_back_leaves_the_revision(engine: Engine, elsewhere: Engine, agent: str) -> None:
    before = revision(engine)
    with elsewhere.connect() as conn, conn.begin() as transaction:
        conn.execute(insert(SOFTWARE_APPROVAL).values(ROWS["software_approval"]))
        transaction.rollback()
    assert revision(engine) == before


def test_a_warm_controller_reads_the_decisions_again_only_after_one_changed(
        engine: Engine, elsewhere: Engine, agent: str, clock: Any) -> None:
    rules = RulesService(engine, Policies(policy(rule(RuleKind.UNAPPROVED_SOFTWARE, id="software"))), clock)
    ingest = IngestService(engine, clock)
    facts = Facts()
    facts.heartbeats(local(2026, 11, 2, 9), local(2026, 11, 2, 9, 2))
    facts.software(local(2026, 11, 2, 9, 1), [dpkg("coreutils"), desktop_game()])
    facts.delta(local(2026, 11, 2, 9, 4), removed=[dpkg("coreutils")])
    facts.delta(local(2026, 11, 2, 9, 8), added=[dpkg("coreutils")])
    reads: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *_: reads.append(statement) if "FROM software_approval" in statement
                 else None)
    sent = 0

    def report(upto: dt.datetime) -> int:
        """Send what was received by ``upto``; how many agents the evaluation after it judged."""
        nonlocal sent
        clock.now = upto
        batch = [f.fact for f in facts.stored[sent:] if f.received_at <= upto]
        sent += len(batch)
        ingest.ingest(AGENT, batch)
        return rules.on_ingest(AGENT, batch).agents

    assert (report(local(2026, 11, 2, 9, 3)), report(local(2026, 11, 2, 9, 5))) == (1, 1), "both batches judged"
    with engine.connect() as conn:
        assert [v.status for v in conn.execute(select(VIOLATION))] == ["open"]
    assert len(reads) == 1, "two evaluations with no decision in between read the approvals once"

    with elsewhere.begin() as conn:  # the centre approves it, from another process
        conn.execute(insert(SOFTWARE_APPROVAL).values(name="cg-mines.desktop", unit="市场监管局", decision="approved",
                                                      decided_by="主任", decided_at=clock()))
    assert report(local(2026, 11, 2, 9, 9)) == 1

    assert len(reads) == 2, "the approval moved the revision: read once more"
    with engine.connect() as conn:
        assert [v.status for v in conn.execute(select(VIOLATION))] == ["withdrawn"]


def test_a_policy_put_in_force_elsewhere_reaches_a_warm_controller(
        engine: Engine, elsewhere: Engine, agent: str, clock: Any) -> None:
    """The rules keep the active policy until the revision moves; putting one in force moves it."""
    rules, ingest = RulesService(engine, PolicyStore(engine, clock), clock), IngestService(engine, clock)
    facts = Facts()
    monday = local(2026, 11, 2, 10)
    facts.heartbeats(monday, monday)
    facts.start(monday + 2 * MINUTE, 4242, "gnome-mines")

    clock.now = monday + MINUTE
    ingest.ingest(AGENT, [facts.stored[0].fact])
    assert rules.catch_up(AGENT).agents == 0, "no policy in force yet: nothing to judge by"
    before = revision(engine)
    PolicyStore(elsewhere, clock).apply(DEFAULT_POLICY.read_text(encoding="utf-8"), "default.yaml", "主任")
    assert revision(engine) == before + 1

    clock.now = monday + 3 * MINUTE
    ingest.ingest(AGENT, [facts.stored[1].fact])
    rules.catch_up(AGENT)

    with engine.connect() as conn:
        assert [v.rule_id for v in conn.execute(select(VIOLATION))] == ["games-video-music"]


def test_each_workstation_gets_its_own_its_windows_and_its_units_decisions(engine: Engine, agent: str) -> None:
    """What :class:`DecisionCache` hands an evaluation: the rows that apply to that workstation, nothing else."""
    other = "ag-decisions-02"
    with session_scope(engine) as session:
        session.add(Agent(id=other, window="W02", enrolled_at=WHEN, cert_serial="2", cert_fingerprint="g",
                          cert_not_after=WHEN + dt.timedelta(days=365)))
    span = {"starts_at": WHEN, "ends_at": WHEN + dt.timedelta(hours=2), "created_at": WHEN}
    with engine.begin() as conn:
        for agent_id, window, reason, removed in ((AGENT, None, "own", None), (None, "W01", "window", None),
                                                  (None, "W02", "other window", None), (other, None, "other pc", None),
                                                  (AGENT, None, "removed", WHEN)):
            conn.execute(insert(EXEMPTION).values(**span, agent_id=agent_id, window=window, reason=reason,
                                                  removed_at=removed))
        for name, unit, window in (("all", None, None), ("unit", "市场监管局", None), ("other unit", "税务局", None),
                                   ("window", None, "W01"), ("other window", None, "W02")):
            conn.execute(insert(SOFTWARE_APPROVAL).values(name=name, unit=unit, window=window, decision="approved",
                                                          decided_at=WHEN))
        for product, window in (("0001", "W01"), ("0002", "W02")):
            conn.execute(insert(REGISTERED_DEVICE).values(vendor_id="0781", product_id=product, window=window,
                                                          registered_at=WHEN))
        for agent_id, note in ((AGENT, "own"), (other, "other")):
            conn.execute(insert(MAINTENANCE_RECORD).values({**ROWS["maintenance_record"], "agent_id": agent_id,
                                                            "note": note}))
    cache = DecisionCache()
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(AGENTS, REVISION.label("decision_revision")))}
        mine, theirs = (cache.context(conn, rows[a], rows[a].decision_revision) for a in (AGENT, other))

    assert [e.reason for e in mine.exemptions] == ["own", "window"]
    assert [(a.name, a.scope) for a in mine.approvals] == [("all", "all"), ("unit", "unit"), ("window", "window")]
    assert [d.product_id for d in mine.devices] == ["0001"]
    assert [m.reason for m in mine.maintenance] == ["own"]
    assert [e.reason for e in theirs.exemptions] == ["other window", "other pc"]
    assert [a.name for a in theirs.approvals] == ["all", "other window"]
    assert cache.reads == 1, "both workstations from one read"
