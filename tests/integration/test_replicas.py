"""Two controller processes on one PostgreSQL, with agents spread over both.

Replica A and replica B are two ``counterguard serve`` processes on their own port pairs, sharing the
data folder (one CA) and a fresh PostgreSQL database, with the controller clock on a Monday morning
(``COUNTERGUARD_FAKE_NOW``) and a policy whose agent-silent rule waits one minute. Real agents enrol
and report through each. A client holding an enrolled agent's certificate then sends, round after
round, the same batch to both replicas at the same moment, and two different batches of the same
agent (a game started in one, stopped in the other) to the two replicas at the same moment. What a
user would check: every fact of every agent is stored exactly once, every acknowledgement is right,
every game is one violation, nothing failed in either controller, and the sweep flags each agent
that went silent once, in one of the replicas.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, text

from controller.rules.claims import PG_SWEEP_LOCK, SWEEP_GROUPS
from policies import DEFAULT_POLICY
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc, facts_pb2
from tests.integration.processes import Agent, Controller, start_controller, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

MONDAY_MORNING = "2026-11-02T10:00:00+08:00"
ROUNDS = 8
BATCH = 20


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Controller, Controller]]:
    data = tmp_path / "controller"
    policy = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    policy["version"] += "-replicas"
    next(rule for rule in policy["rules"] if rule["kind"] == "agent_silent")["grace_minutes"] = 1
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True), encoding="utf-8")
    env = {"COUNTERGUARD_FAKE_NOW": MONDAY_MORNING, "COUNTERGUARD_RULES_SWEEP_INTERVAL_SECONDS": "2"}
    first = start_controller(data, postgres_url, env=env)
    first.cli("policy", "apply", str(policy_file))
    second = None
    try:
        second = start_controller(data, postgres_url, env=env)
        yield first, second
    finally:
        for running in (first, second):
            if running is not None:
                running.stop()


# ------------------------------------------------------------------------------------ a client agent


class ClientAgent:
    """An agent enrolled over the real Enroll call, reporting hand-made batches to either replica."""

    def __init__(self, enrolled_at: Controller, token: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "counter-pc")]))
               .sign(key, hashes.SHA256()))
        self.ca = enrolled_at.ca_cert.read_bytes()
        with grpc.secure_channel(f"127.0.0.1:{enrolled_at.enroll_port}", grpc.ssl_channel_credentials(self.ca)) as ch:
            answer = agent_pb2_grpc.AgentServiceStub(ch).Enroll(agent_pb2.EnrollRequest(
                token=token, csr_pem=csr.public_bytes(serialization.Encoding.PEM), hostname="counter-client",
                os_family="linux", agent_version="0.1.0"), timeout=30)
        self.agent_id = answer.agent_id
        self.key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        self.certificate = answer.certificate_pem
        self.sequence = 0
        self.boot = _timestamp(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))

    def stub(self, controller: Controller) -> tuple[grpc.Channel, Any]:
        credentials = grpc.ssl_channel_credentials(self.ca, self.key, self.certificate)
        channel = grpc.secure_channel(f"127.0.0.1:{controller.port}", credentials,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
        return channel, agent_pb2_grpc.AgentServiceStub(channel)

    def batch(self, game_pid: int | None = None, started: Timestamp | None = None,
              stopped: bool = False) -> list[facts_pb2.Fact]:
        """``BATCH`` facts: heartbeats, and a game's start (``started`` None) or stop."""
        facts = []
        for index in range(BATCH):
            self.sequence += 1
            now = _timestamp(dt.datetime.now(dt.UTC))
            fact = facts_pb2.Fact(sequence=self.sequence, observed_at=now)
            if index == BATCH // 2 and game_pid is not None and not stopped:
                fact.process_started.process.CopyFrom(facts_pb2.ProcessInfo(
                    pid=game_pid, name="gnome-mines", executable="/usr/games/gnome-mines", username="zhang",
                    started_at=now))
            elif index == BATCH // 2 and game_pid is not None:
                fact.process_stopped.CopyFrom(facts_pb2.ProcessStopped(pid=game_pid, name="gnome-mines",
                                                                        started_at=started))
            else:
                fact.power.CopyFrom(facts_pb2.PowerEvent(kind=facts_pb2.PowerEvent.KIND_HEARTBEAT,
                                                         boot_time=self.boot))
            facts.append(fact)
        return facts


def _timestamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def at_once(calls: list[tuple[Any, list[facts_pb2.Fact]]]) -> list[Any]:
    """Send each batch with its stub, all released at the same moment; the answers, or the errors."""
    barrier = threading.Barrier(len(calls))
    answers: list[Any] = [None] * len(calls)

    def send(index: int) -> None:
        stub, facts = calls[index]
        barrier.wait()
        try:
            answers[index] = stub.Report(agent_pb2.ReportRequest(facts=facts), timeout=60)
        except grpc.RpcError as exc:
            answers[index] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


# ------------------------------------------------------------------------------------ the test


def test_two_replicas_store_every_fact_once_and_every_violation_once(
        replicas: tuple[Controller, Controller], tmp_path: Path, postgres_url: str) -> None:
    first, second = replicas
    agents = [Agent(state_dir=tmp_path / f"agent-{n}") for n in range(4)]
    homes = [first, second, first, second]
    agent_ids = [agent.enroll(home, home.token(f"W0{n}")) for n, (agent, home) in enumerate(zip(agents, homes))]
    runs = [subprocess.Popen(agent.command("run", "--once"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=agent.env()) for agent in agents]  # each through its own replica
    for run in runs:
        assert run.wait(180) == 0, run.stderr.read() if run.stderr else ""

    client = ClientAgent(first, first.token("W09"))
    channels = [client.stub(first), client.stub(second)]
    stubs = [stub for _, stub in channels]
    try:
        for round_ in range(ROUNDS):
            same = client.batch()
            answers = at_once([(stubs[0], same), (stubs[1], same)])
            assert all(isinstance(a, agent_pb2.ReportResponse) for a in answers), answers
            assert [a.acknowledged_sequence for a in answers] == [client.sequence] * 2

            pid = 7000 + round_
            start = client.batch(pid)
            stop = client.batch(pid, started=start[BATCH // 2].process_started.process.started_at, stopped=True)
            answers = at_once([(stubs[0], start), (stubs[1], stop)])
            assert all(isinstance(a, agent_pb2.ReportResponse) for a in answers), answers
            assert answers[0].acknowledged_sequence >= start[-1].sequence
            assert answers[1].acknowledged_sequence == client.sequence
    finally:
        for channel, _ in channels:
            channel.close()

    engine = create_engine(postgres_url)
    try:
        # While the answers are slow (a busy machine) they do not wait for their evaluation: the rules judge the
        # last rounds after them. Every fact judged, then.
        wait_for(lambda: _judged(engine, client.agent_id), timeout=120, what="the rules to judge every fact")
        with engine.connect() as conn:
            held = {row.agent_id: row for row in conn.execute(text(
                "SELECT agent_id, count(*) AS facts, count(DISTINCT sequence) AS numbers, min(sequence) AS low, "
                "max(sequence) AS high FROM fact GROUP BY agent_id"))}
            games = conn.execute(text(
                "SELECT subject FROM violation WHERE agent_id = :a AND rule_id = 'games-video-music'"),
                {"a": client.agent_id}).scalars().all()
        for agent, agent_id in zip(agents, agent_ids):
            outbox = agent.status()["outbox"]
            sent = outbox["next_sequence"] - 1
            assert outbox["depth"] == 0
            assert (held[agent_id].facts, held[agent_id].numbers, held[agent_id].low, held[agent_id].high) == \
                (sent, sent, 1, sent), agent_id
        row = held[client.agent_id]
        assert (row.facts, row.numbers, row.low, row.high) == (client.sequence,) * 2 + (1, client.sequence)
        assert sorted(games) == sorted(set(games)) and len(games) == ROUNDS
        assert all(f"pid {7000 + n}" in " ".join(games) for n in range(ROUNDS))

        everyone = [*agent_ids, client.agent_id]
        silent = wait_for(lambda: _silent(engine, everyone), timeout=150, what="the sweep to flag every silent agent")
        with engine.connect() as conn:
            last_report = conn.execute(text("SELECT max(received_at) FROM fact WHERE agent_id = :a"),
                                       {"a": client.agent_id}).scalar_one()

        def claimed() -> tuple[int, int] | None:
            """(groups held, processes holding them), once a round has claimed every group: a round frees its
            groups and claims them again one by one, so a look in the middle of one sees only part of them."""
            with engine.connect() as conn:
                groups, holders = conn.execute(text(
                    "SELECT count(DISTINCT objid), count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = :key AND granted AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"), {"key": PG_SWEEP_LOCK}).one()
            return (groups, holders) if groups == SWEEP_GROUPS else None

        groups, holders = wait_for(claimed, timeout=60, interval=0.05, what="a sweep round holding every group")
    finally:
        engine.dispose()
    assert sorted(agent for agent, _ in silent) == sorted(everyone)  # one per agent, not one per replica
    assert dict(silent)[client.agent_id] > last_report  # the client went silent after its last report: a sweep
    assert groups == SWEEP_GROUPS and holders in {1, 2}  # each group held by one replica, none by both

    logs = ["".join(first.log), "".join(second.log)]
    assert 1 <= sum(_sweep_created(log) for log in logs) <= len(everyone)
    for log in logs:
        for trouble in ("Traceback", "IntegrityError", "evaluating the rules after a report", "sweep of agent"):
            assert trouble not in log


def _judged(engine: Any, agent_id: str) -> bool:
    """Whether the rules have judged every fact the agent's row says is held."""
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT last_sequence = evaluated_sequence FROM agent WHERE id = :a"),
                                 {"a": agent_id}).scalar_one())


def _silent(engine: Any, agents: list[str]) -> list[tuple[str, dt.datetime]] | None:
    """The agent-silent violations of ``agents`` (agent, created at), once every agent has one."""
    with engine.connect() as conn:
        flagged = conn.execute(text(
            "SELECT agent_id, created_at FROM violation WHERE rule_id = 'agent-silent' AND agent_id = ANY(:agents)"),
            {"agents": agents}).all()
    return [tuple(row) for row in flagged] if len({row[0] for row in flagged}) == len(agents) else None


def _sweep_created(log: str) -> int:
    """Violations the sweeps of one controller created, from its "swept …: N violations new" lines."""
    return sum(int(line.split(": ")[-1].split(" violations new")[0])
               for line in log.splitlines() if "swept" in line and "violations new" in line)
