"""Prometheus metrics scraped from the real /metrics endpoint after real reports, and JSON log lines.

In-process: the server :func:`controller.server.run_until` builds (real gRPC with mutual TLS, the
default policy, the rules service) with the metrics endpoint beside it, once per database back end;
every scrape is an HTTP GET. As real processes: ``counterguard serve`` with one and with two worker
processes, a real agent reporting, and the endpoint scraped while they run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from controller.config import Settings
from controller.metrics import InstrumentedRules, MetricsServer, serve_metrics
from controller.pki import ServerPKI
from controller.policy.provider import StoredPolicyProvider
from controller.policy.store import PolicyStore
from controller.rules.service import RulesService
from controller.server import RunningServer, build_server
from policies import DEFAULT_POLICY
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc, facts_pb2
from tests.controller.test_grpc_server import (
    TIMEOUT,
    Enrolled,
    _key_and_csr,
    enrol,
    fact,
    heartbeat,
    mtls,
    new_token,
    report,
    rpc_error,
)
from tests.integration.processes import Agent, start_controller, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        assert answer.status == 200
        text = answer.read().decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass
class Observed:
    server: RunningServer
    metrics: MetricsServer
    rules: InstrumentedRules


@pytest.fixture
def observed(tmp_path: Path, engine: Engine, pki: ServerPKI, clock) -> Iterator[Observed]:
    """The controller as ``serve`` runs it (default policy, rules), a 3-report burst, and /metrics on a free port."""
    settings = Settings(data_dir=tmp_path / "controller", listen="127.0.0.1:0", enroll_listen="127.0.0.1:0",
                        agent_reports_per_second=0.001, agent_report_burst=3)
    store = PolicyStore(engine, clock)
    store.ensure_default(DEFAULT_POLICY, applied_by="test")
    rules = InstrumentedRules(RulesService(engine, store, clock))
    server = build_server(settings, engine, pki, clock, policies=StoredPolicyProvider(store, clock=clock), rules=rules)
    server.start()
    metrics = serve_metrics("127.0.0.1", 0)
    try:
        yield Observed(server, metrics, rules)
    finally:
        metrics.stop()
        server.stop(None)


def game_started(sequence: int, when: dt.datetime) -> facts_pb2.Fact:
    process = facts_pb2.ProcessInfo(pid=4242, name="gnome-mines", executable="/usr/games/gnome-mines",
                                    username="zhang")
    process.started_at.FromDatetime(when)
    return fact(sequence, when, process_started=facts_pb2.ProcessStarted(process=process))


def test_reports_facts_violations_outbox_totals_and_sweeps_are_counted(
    observed: Observed, pki: ServerPKI, engine: Engine, clock
) -> None:
    """``clock`` is Monday 09:30 in Shanghai: a game started then is a violation of ``games-video-music``."""
    before = scrape(observed.metrics.url)
    key, csr = _key_and_csr()
    agent = Enrolled(enrol(observed.server, pki, new_token(engine, clock), csr), key)
    notice = fact(4, clock(), outbox_notice=facts_pb2.OutboxNotice(
        set_aside=3, dropped={"power": 5, "process_started": 1, "made-up kind": 2}))
    batch = [heartbeat(1, clock()), heartbeat(2, clock()), game_started(3, clock() - dt.timedelta(minutes=1)), notice]
    no_kind = facts_pb2.Fact(sequence=9)
    no_kind.observed_at.FromDatetime(clock())
    with mtls(observed.server, agent) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        assert report(channel, batch).acknowledged_sequence == 4
        again = stub.Report(agent_pb2.ReportRequest(facts=batch, outbox_depth=250), timeout=TIMEOUT)
        assert again.acknowledged_sequence == 4  # all four again: duplicates
        invalid = rpc_error(stub.Report, agent_pb2.ReportRequest(facts=[heartbeat(5, clock()), no_kind]))
        limited = rpc_error(stub.Report, agent_pb2.ReportRequest(facts=[heartbeat(5, clock())]))
    assert (invalid.code(), limited.code()) == (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    after = scrape(observed.metrics.url)

    assert moved(before, after, "counterguard_rpcs_total", method="Enroll", code="OK") == 1
    for code, count in (("OK", 2), ("INVALID_ARGUMENT", 1), ("RESOURCE_EXHAUSTED", 1)):
        assert moved(before, after, "counterguard_rpcs_total", method="Report", code=code) == count, code
        assert moved(before, after, "counterguard_rpc_duration_seconds_count", method="Report", code=code) == count
    assert 0 < moved(before, after, "counterguard_rpc_duration_seconds_sum", method="Report", code="OK") < 2 * TIMEOUT
    assert moved(before, after, "counterguard_facts_total", outcome="stored") == 4
    assert moved(before, after, "counterguard_facts_total", outcome="duplicate") == 4
    assert moved(before, after, "counterguard_facts_total", outcome="invalid") == 2
    assert moved(before, after, "counterguard_violations_created_total", rule="games-video-music") == 1
    # One report said 250 facts wait behind it (the first said nothing, like an older agent).
    assert moved(before, after, "counterguard_agent_outbox_depth_facts_count") == 1
    assert moved(before, after, "counterguard_agent_outbox_depth_facts_sum") == 250
    # On PostgreSQL each stored report was a group of its own (nothing else arrived meanwhile); SQLite never groups.
    grouped = 2 if engine.dialect.name == "postgresql" else 0
    assert moved(before, after, "counterguard_ingest_group_reports_count") == grouped
    assert moved(before, after, "counterguard_ingest_group_reports_sum") == grouped
    assert moved(before, after, "counterguard_agent_outbox_depth_facts_bucket", le="100.0") == 0
    assert moved(before, after, "counterguard_agent_outbox_depth_facts_bucket", le="1000.0") == 1

    who = agent.agent_id
    assert value(after, "counterguard_agent_outbox_set_aside_facts", agent=who) == 3
    dropped = {kind: value(after, "counterguard_agent_outbox_dropped_facts", agent=who, kind=kind)
               for kind in ("power", "process_started", "other")}
    assert dropped == {"power": 5, "process_started": 1, "other": 2}, "a kind the controller does not know is other"

    assert observed.rules.sweep() is not None
    swept = scrape(observed.metrics.url)
    assert moved(after, swept, "counterguard_sweeps_total", outcome="swept") == 1
    assert moved(after, swept, "counterguard_sweep_duration_seconds_count") == 1


def test_the_endpoint_refuses_a_port_in_use(observed: Observed) -> None:
    from controller.errors import CounterGuardError

    with pytest.raises(CounterGuardError, match=f"cannot serve metrics on 127.0.0.1:{observed.metrics.port}: "
                                                "address already in use"):
        serve_metrics("127.0.0.1", observed.metrics.port)


# ----------------------------------------------------------------------------- real processes


@pytest.mark.integration
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_exposes_metrics_after_a_real_agent_reported_and_logs_json_lines(tmp_path: Path, workers: int) -> None:
    port = free_port()
    controller = start_controller(tmp_path / "controller", env={
        "COUNTERGUARD_METRICS_PORT": str(port), "COUNTERGUARD_LOG_FORMAT": "json",
        "COUNTERGUARD_WORKERS": str(workers)})
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        before = scrape(url)
        agent = Agent(state_dir=tmp_path / "agent")
        agent.enroll(controller, controller.token("W02"))
        agent.run("run", "--once")
        after = wait_for(lambda: (s := scrape(url)) and value(s, "counterguard_facts_total", outcome="stored") and s,
                         what="stored facts in the metrics")
    finally:
        controller.stop()

    assert moved(before, after, "counterguard_rpcs_total", method="Enroll", code="OK") == 1
    assert moved(before, after, "counterguard_rpcs_total", method="Report", code="OK") >= 1
    assert value(after, "counterguard_facts_total", outcome="stored") >= 5  # start-up: inventory, software, …
    log_lines = [line for line in controller.log if line.startswith("{") and '"level"' in line]
    assert log_lines, "".join(controller.log)
    for line in log_lines:
        entry = json.loads(line)
        assert entry["time"].endswith("Z") and {"level", "logger", "message", "process"} <= entry.keys()
    assert any(f"Prometheus metrics on {url}" == json.loads(line)["message"] for line in log_lines)
