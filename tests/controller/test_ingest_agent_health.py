"""The agent's self-limit facts (``agent_health``: SHED, RESTORED, RESTART) are accepted and stored like any other."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.engine import Engine

from controller.convert import datetime_to_timestamp, row_to_fact
from controller.ingest import IngestResult, IngestService
from controller.models import Fact
from protos.counterguard.v1 import facts_pb2 as pb
from tests.controller.test_ingest import AGENT, add_agent, stored_facts

Health = pb.AgentHealth
MiB = 1024 * 1024


def health(sequence: int, observed: dt.datetime, action: int, rss_mib: float, reason: str) -> pb.Fact:
    shed = [] if action == Health.ACTION_RESTORED else ["foreground", "software_rescan"]
    return pb.Fact(sequence=sequence, observed_at=datetime_to_timestamp(observed), agent_health=Health(
        action=action, cpu_percent=1.25, rss_bytes=int(rss_mib * MiB), shed=shed, reason=reason,
        cpu_limit_percent=5, rss_limit_bytes=120 * MiB))


def test_shed_restored_and_restart_facts_are_stored(engine: Engine, clock) -> None:
    add_agent(engine)
    service = IngestService(engine, clock)
    observed = clock() - dt.timedelta(seconds=3)
    batch = [health(1, observed, Health.ACTION_SHED, 130, "RSS 130.0 MiB, limit 120.0 MiB"),
             health(2, observed, Health.ACTION_RESTORED, 100, "under the limits for 120 s: optional work resumed"),
             health(3, observed, Health.ACTION_RESTART, 190, "RSS 190.0 MiB, hard limit 180.0 MiB: restarting")]

    assert service.ingest(AGENT, batch) == IngestResult(acknowledged_sequence=3, stored=3, duplicates=0)
    assert stored_facts(engine) == [(1, "agent_health"), (2, "agent_health"), (3, "agent_health")]
    with engine.connect() as conn:
        payloads = conn.execute(select(Fact.payload).where(Fact.agent_id == AGENT).order_by(Fact.sequence)).scalars()
        assert [row_to_fact(payload) for payload in payloads] == batch
