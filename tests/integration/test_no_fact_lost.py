"""Nothing lost, nothing doubled: real controller and agent processes on loopback, killed at awkward moments.

Every test ends with the same audit (:func:`audit`). The agent's outbox says which sequence numbers it
ever assigned (``next_sequence - 1``, from ``status --json``); the controller's ``fact`` table, read
through SQLAlchemy, must hold each of them exactly once: contiguous from 1, no number missing (but those
the agent reports as set aside), none twice (rows are counted, not only distinct numbers, so a broken
unique constraint would show), none the agent never assigned. The scenarios here neither overflow the
outbox nor send anything invalid, so the audit also insists that nothing was dropped or set aside: a
replaced ``OutboxNotice`` leaves a number no one can account for, and would be a finding in itself.

Scenarios: (a) the controller SIGKILLed three times mid-stream and restarted on the same ports and data;
(b) a long outage with thousands of queued facts, and the drain measured; (c) the agent SIGKILLed holding
committed, unsent facts; (d) the agent SIGKILLed while sending; (e) a batch the controller stored whose
acknowledgement the agent never saw, made exactly with a copy of the outbox. And (f) an outbox
restored from an older snapshot (a restore card, a reverted VM): re-sent facts are duplicates, facts
numbered into the held range are renumbered at the controller's request, and nothing is lost or doubled.

The figures (facts assigned, rows held, drain throughput) go into the test's ``user_properties`` (JUnit
XML, report logs) and straight to the terminal, whether or not pytest captures output.
"""

from __future__ import annotations

import datetime as dt
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from controller.models import FACT
from tests.integration.processes import Agent, restart_controller, start_controller, wait_for

pytestmark = pytest.mark.integration

# Short intervals so a few seconds make a stream of facts, and a short backoff so the agent notices
# a restarted controller within a second instead of after up to five minutes.
FAST = {
    "report_interval_seconds": "1",
    "heartbeat_interval_seconds": "1",
    "process_poll_interval_seconds": "1",
    "session_poll_interval_seconds": "1",
    "backoff_initial_seconds": "0.2",
    "backoff_max_seconds": "1",
    "rpc_timeout_seconds": "5",
}

Report = Callable[[str, object], None]


@pytest.fixture
def report(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Report:
    """Keep a figure with the test's properties (JUnit XML, report logs) and print it to the terminal even when
    pytest captures output. (``user_properties`` rather than ``record_property``, which warns under xunit2.)"""
    def emit(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))
        with capsys.disabled():
            print(f"\n    [no-fact-lost] {name}: {value}", flush=True)
    return emit


class Controllers:
    """The controller of one test across kills and restarts (always the one running now)."""

    def __init__(self, data_dir: Path) -> None:
        self.current = start_controller(data_dir)
        self._engine: Engine | None = None

    def kill_and_restart(self) -> None:
        self.current.kill()
        self.current = restart_controller(self.current)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(f"sqlite:///{self.current.database_path}")
        return self._engine

    def held_sequences(self, agent_id: str) -> list[int]:
        """Every stored sequence of the agent, one per row (a number held twice appears twice)."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(FACT.c.sequence).where(FACT.c.agent_id == agent_id)).scalars())

    def held_max(self, agent_id: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(select(func.max(FACT.c.sequence)).where(FACT.c.agent_id == agent_id)).scalar()
        return int(value or 0)

    def facts(self, agent_id: str) -> dict[int, tuple[str, dt.datetime]]:
        """Sequence → (kind, observed_at) of every stored fact of the agent."""
        query = select(FACT.c.sequence, FACT.c.kind, FACT.c.observed_at).where(FACT.c.agent_id == agent_id)
        with self.engine.connect() as conn:
            return {int(seq): (kind, observed) for seq, kind, observed in conn.execute(query)}

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self.current.stop()


@pytest.fixture
def controllers(tmp_path: Path) -> Iterator[Controllers]:
    running = Controllers(tmp_path / "controller")
    try:
        yield running
    finally:
        running.close()


@contextmanager
def running_agent(agent: Agent, log: Path) -> Iterator[subprocess.Popen[str]]:
    """``counterguard-agent run`` for the duration of the block; killed if the block fails."""
    process = agent.start_logged(log)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@contextmanager
def sleepers(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` short-lived programs for the agent to see start (and, when the block ends, stop)."""
    started = [subprocess.Popen(["sleep", "300"]) for _ in range(count)]
    try:
        yield started
    finally:
        for process in started:
            process.kill()
        for process in started:
            process.wait()


def last_assigned(agent: Agent) -> int:
    box = agent.status()["outbox"]
    return 0 if box is None else int(box["next_sequence"]) - 1


def queued(agent: Agent, kind: str) -> int:
    """How many facts of ``kind`` wait in the agent's outbox (read beside the running agent: WAL allows it)."""
    with sqlite3.connect(agent.state_dir / "outbox.db", timeout=30) as db:
        return int(db.execute("SELECT COUNT(*) FROM facts WHERE kind = ?", (kind,)).fetchone()[0])


def stop_agent(process: subprocess.Popen[str], log: Path) -> None:
    """SIGTERM, as systemd stops the service; it must exit 0 after its last send."""
    process.send_signal(signal.SIGTERM)
    code = process.wait(40)
    assert code == 0, f"the agent exited {code} on SIGTERM:\n{log.read_text(encoding='utf-8')[-3000:]}"


def drain(agent: Agent, controllers: Controllers, agent_id: str, timeout: float = 60) -> int:
    """Wait until the controller holds everything the agent had assigned when this was called."""
    target = last_assigned(agent)
    wait_for(lambda: controllers.held_max(agent_id) >= target, timeout=timeout,
             what=f"the controller to hold sequence {target}")
    return target


def deliver_rest(agent: Agent) -> None:
    """If the last send at SIGTERM left facts behind, ``run --once`` delivers them (adding its start-up facts)."""
    if agent.status()["outbox"]["depth"]:
        agent.run("run", "--once")


@dataclass(frozen=True)
class Audit:
    assigned: int
    rows: int
    summary: str


def set_aside_sequences(agent: Agent) -> set[int]:
    with sqlite3.connect(agent.state_dir / "outbox.db") as db:
        return {int(row[0]) for row in db.execute("SELECT sequence FROM set_aside")}


def audit(controllers: Controllers, agent: Agent, agent_id: str) -> Audit:
    """Every number the agent assigned is held exactly once; nothing else is held (the agent has stopped)."""
    box = agent.status()["outbox"]
    last = int(box["next_sequence"]) - 1
    aside = set_aside_sequences(agent)
    rows = controllers.held_sequences(agent_id)
    counts = Counter(rows)
    summary = (f"agent assigned 1..{last}; controller holds {len(rows)} rows ({len(counts)} distinct); "
               f"outbox depth {box['depth']}, set aside {box['set_aside']}, dropped {box['dropped'] or 'none'}")
    doubled = sorted(seq for seq, n in counts.items() if n > 1)
    missing = sorted(set(range(1, last + 1)) - set(counts) - aside)
    foreign = sorted(seq for seq in counts if not 1 <= seq <= last)
    assert box["depth"] == 0, f"facts still wait in the outbox: {summary}"
    assert not box["dropped"] and not box["set_aside"], f"this scenario should neither drop nor set aside: {summary}"
    assert not missing, f"lost {len(missing)} facts, first {missing[:20]}: {summary}"
    assert not doubled, f"{len(doubled)} sequences stored twice, first {doubled[:20]}: {summary}"
    assert not foreign, f"the controller holds numbers the agent never assigned {foreign[:20]}: {summary}"
    assert len(rows) == last - len(aside), summary
    shown = controllers.current.json("agents", "show", agent_id)["last_sequence"]
    assert shown == last, f"`agents show` says last_sequence {shown}: {summary}"
    return Audit(assigned=last, rows=len(rows), summary=summary)


def failed_reports(log: Path) -> int:
    return log.read_text(encoding="utf-8").count("report failed")


# ------------------------------------------------------------------------------------------ tests


def test_controller_killed_mid_stream(controllers: Controllers, agent: Agent, tmp_path: Path, report: Report) -> None:
    """(a) kill -9 the controller three times while facts stream in; restart it on the same ports and data."""
    agent.settings.update(FAST)
    agent_id = agent.enroll(controllers.current, controllers.current.token())
    log = tmp_path / "agent.log"
    rng = random.Random(20261102)
    with running_agent(agent, log) as service:
        for _ in range(3):
            held = controllers.held_max(agent_id)
            wait_for(lambda: controllers.held_max(agent_id) > held + 3, what="the agent to report more facts")
            with sleepers(30):  # a burst of process starts, so a batch is likely in flight at the kill
                time.sleep(rng.uniform(0.8, 2.0))
                controllers.kill_and_restart()
            time.sleep(rng.uniform(0.0, 1.0))
        drain(agent, controllers, agent_id)
        stop_agent(service, log)
    deliver_rest(agent)

    result = audit(controllers, agent, agent_id)
    report("controller kills", 3)
    report("failed reports the agent retried", failed_reports(log))
    report("controller killed mid-stream", result.summary)


def test_long_outage_delivers_everything_once(controllers: Controllers, agent: Agent, tmp_path: Path,
                                              report: Report) -> None:
    """(b) the controller is down while the agent queues thousands of facts; then the drain is measured."""
    agent.settings.update(FAST, heartbeat_interval_seconds="0.05")  # ~20 heartbeats a second
    agent_id = agent.enroll(controllers.current, controllers.current.token())
    log = tmp_path / "agent.log"
    with running_agent(agent, log) as service:
        wait_for(lambda: controllers.held_max(agent_id) > 0, what="the first report")
        controllers.current.stop()
        held_before = controllers.held_max(agent_id)
        outage = time.monotonic()
        for burst in range(1, 4):  # 3 × 400 process starts and stops, plus the heartbeats meanwhile
            with sleepers(400):
                wait_for(lambda: queued(agent, "process_started") >= 400 * burst, timeout=60,
                         what=f"burst {burst}'s process starts in the outbox")
            wait_for(lambda: queued(agent, "process_stopped") >= 400 * burst, timeout=60,
                     what=f"burst {burst}'s process stops in the outbox")
        wait_for(lambda: last_assigned(agent) >= held_before + 2500, timeout=120, interval=0.5,
                 what="2500 facts queued during the outage")
        queued_until = last_assigned(agent)
        outage_seconds = time.monotonic() - outage

        controllers.current = restart_controller(controllers.current)
        back = time.monotonic()
        first: tuple[float, int] | None = None  # when the first batch was seen stored, and how far it went
        while (held := controllers.held_max(agent_id)) < queued_until:
            if first is None and held > held_before:
                first = (time.monotonic(), held)
            assert time.monotonic() - back < 120, "the backlog did not drain within 120 s"
            time.sleep(0.01)
        done = time.monotonic()
        stop_agent(service, log)
    deliver_rest(agent)

    result = audit(controllers, agent, agent_id)
    backlog = queued_until - held_before
    since_back = done - back
    report("outage", f"{outage_seconds:.1f} s, {backlog} facts queued")
    report("drain", f"{backlog} facts in {since_back:.2f} s from the controller's restart "
                    f"({backlog / since_back:.0f} facts/s, the agent's reconnection backoff included)")
    if first is not None and queued_until > first[1]:
        rest, seconds = queued_until - first[1], done - first[0]
        rate = rest / max(seconds, 1e-3)
        report("drain after the first batch", f"{rest} facts in {seconds:.2f} s ({rate:.0f} facts/s)")
    report("long outage", result.summary)


def test_agent_killed_between_commit_and_send(controllers: Controllers, agent: Agent, tmp_path: Path,
                                              report: Report) -> None:
    """(c) the agent commits facts it cannot send (controller down), is killed, and runs again."""
    agent.settings.update(FAST)
    agent_id = agent.enroll(controllers.current, controllers.current.token())
    controllers.current.stop()
    log = tmp_path / "agent.log"
    with running_agent(agent, log) as first_run:
        wait_for(lambda: last_assigned(agent) >= 8, what="start-up facts and heartbeats in the outbox")
        first_run.send_signal(signal.SIGKILL)
        first_run.wait(10)
    killed_at = dt.datetime.now(dt.UTC)
    before = agent.status()["outbox"]
    last_before = int(before["next_sequence"]) - 1
    assert before["depth"] == last_before, f"nothing could have been sent, yet the outbox holds {before}"

    controllers.current = restart_controller(controllers.current)
    with running_agent(agent, log) as second_run:
        wait_for(lambda: last_assigned(agent) > last_before, what="the second run's first fact")
        drain(agent, controllers, agent_id)
        stop_agent(second_run, log)
    deliver_rest(agent)

    result = audit(controllers, agent, agent_id)
    facts = controllers.facts(agent_id)
    assert result.assigned > last_before
    observed = {seq: moment.replace(tzinfo=dt.UTC) for seq, (_, moment) in facts.items()}
    early = [seq for seq in range(1, last_before + 1) if observed[seq] > killed_at]
    assert not early, f"facts {early} numbered before the kill were observed after it"
    reused = [seq for seq in range(last_before + 1, result.assigned + 1) if observed[seq] < killed_at]
    assert not reused, f"the second run numbered facts {reused} that were observed before the kill"
    report("agent killed holding", f"{last_before} committed, unsent facts")
    report("agent killed between commit and send", result.summary)


def test_agent_killed_while_sending(controllers: Controllers, agent: Agent, tmp_path: Path, report: Report) -> None:
    """(d) kill -9 the agent three times while it sends: batches the controller stored but the agent never
    saw acknowledged are sent again and must be stored once."""
    agent.settings.update(FAST)
    agent_id = agent.enroll(controllers.current, controllers.current.token())
    log = tmp_path / "agent.log"
    rng = random.Random(20261103)
    for _ in range(3):
        with running_agent(agent, log) as service, sleepers(30):
            held = controllers.held_max(agent_id)
            wait_for(lambda: controllers.held_max(agent_id) > held, what="the agent to report")
            time.sleep(rng.uniform(0.5, 2.0))
            service.send_signal(signal.SIGKILL)
            service.wait(10)
    before = last_assigned(agent)
    with running_agent(agent, log) as service:
        wait_for(lambda: last_assigned(agent) > before, what="the agent's start-up facts")
        drain(agent, controllers, agent_id)
        stop_agent(service, log)
    deliver_rest(agent)

    result = audit(controllers, agent, agent_id)
    report("agent killed while sending", result.summary)


def _send_in_process(agent: Agent) -> int:
    """Deliver the outbox with the agent's own transport code, in this process, adding no start-up facts."""
    from agent.config import AgentConfig
    from agent.outbox import Outbox
    from agent.transport import Transport

    config = AgentConfig(state_dir=agent.state_dir, rpc_timeout_seconds=10)
    with Outbox(config.outbox_path) as outbox:
        transport = Transport(config, outbox)
        try:
            return transport.send_pending()
        finally:
            transport.close()


def _copy_outbox(state_dir: Path, to: Path) -> None:
    """A consistent copy of a stopped agent's outbox (SQLite's backup API, WAL included)."""
    with sqlite3.connect(state_dir / "outbox.db") as source, sqlite3.connect(to) as target:
        source.backup(target)


def _restore_outbox(copy: Path, state_dir: Path) -> None:
    """Put the copy back into the agent's outbox, through SQLite (a raw file write under a WAL
    database that another connection has seen leaves it unreadable: "disk I/O error")."""
    with sqlite3.connect(copy) as source, sqlite3.connect(state_dir / "outbox.db") as target:
        source.backup(target)


def test_batch_whose_acknowledgement_was_lost_is_stored_once(controllers: Controllers, agent: Agent,
                                                              tmp_path: Path, report: Report) -> None:
    """(e) deterministic: the controller committed a batch, the agent never learnt it (killed before
    deleting). Made exactly by delivering a copy of the outbox and putting the copy back afterwards."""
    agent.settings.update(FAST)
    agent_id = agent.enroll(controllers.current, controllers.current.token())
    controllers.current.stop()
    log = tmp_path / "agent.log"
    with running_agent(agent, log) as offline:
        wait_for(lambda: last_assigned(agent) >= 6, what="facts committed while the controller is down")
        offline.send_signal(signal.SIGKILL)
        offline.wait(10)
    unsent = last_assigned(agent)
    _copy_outbox(agent.state_dir, tmp_path / "before-ack.db")

    controllers.current = restart_controller(controllers.current)
    assert _send_in_process(agent) == unsent
    assert controllers.held_max(agent_id) == unsent
    _restore_outbox(tmp_path / "before-ack.db", agent.state_dir)  # the acknowledgement never happened
    assert agent.status()["outbox"]["depth"] == unsent

    with running_agent(agent, log) as service:
        wait_for(lambda: last_assigned(agent) > unsent, what="the agent's start-up facts")
        drain(agent, controllers, agent_id)
        stop_agent(service, log)
    deliver_rest(agent)

    result = audit(controllers, agent, agent_id)
    report("acknowledgement lost", f"{unsent} facts sent twice; {result.summary}")


def test_outbox_restored_from_an_older_snapshot_loses_and_doubles_nothing(controllers: Controllers, agent: Agent,
                                                                          tmp_path: Path) -> None:
    """A counter PC with a restore card (硬盘还原卡) or a reverted VM snapshot comes back with an old outbox:
    facts the controller already holds wait again, and the next numbers it assigns are held too.

    The controller compares a fact under a held number with the one it holds: the same content is a
    duplicate; another content is a new fact, reported back in ``conflicting_sequences`` and renumbered
    by the agent above the acknowledgement.
    """
    agent.settings.update(FAST)
    agent_id = agent.enroll(controllers.current, controllers.current.token())
    controllers.current.stop()
    log = tmp_path / "agent.log"
    with running_agent(agent, log) as offline:
        wait_for(lambda: last_assigned(agent) >= 6, what="facts committed while the controller is down")
        offline.send_signal(signal.SIGKILL)
        offline.wait(10)
    _copy_outbox(agent.state_dir, tmp_path / "snapshot.db")
    controllers.current = restart_controller(controllers.current)
    agent.run("run", "--once")  # delivers the snapshot's facts and its own start-up facts
    _restore_outbox(tmp_path / "snapshot.db", agent.state_dir)
    restored_at = dt.datetime.now(dt.UTC)

    agent.run("run", "--once")
    payloads = _stored_payloads(controllers, agent_id)
    fresh = [seq for seq, (kind, observed) in controllers.facts(agent_id).items()
             if kind == "inventory" and observed.replace(tzinfo=dt.UTC) > restored_at]
    assert fresh, "the inventory observed after the restore was taken for a duplicate and never stored"
    assert len(payloads) == len(set(payloads)), (
        f"{len(payloads) - len(set(payloads))} facts stored twice under different sequence numbers")


def _stored_payloads(controllers: Controllers, agent_id: str) -> list[bytes]:
    """Each stored fact without its sequence number: the same observation stored twice shows up twice."""
    from protos.counterguard.v1 import facts_pb2

    query = select(FACT.c.payload).where(FACT.c.agent_id == agent_id)
    with controllers.engine.connect() as conn:
        payloads = []
        for (payload,) in conn.execute(query):
            fact = facts_pb2.Fact.FromString(payload)
            fact.ClearField("sequence")
            payloads.append(fact.SerializeToString(deterministic=True))
    return payloads
