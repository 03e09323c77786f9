"""``counterguard serve --workers N`` and ``--reuse-port``: real controller processes sharing the two ports.

What a user checks: one "listening" line, N processes that all take connections on the same port, an
agent served through them, the metrics of all of them on the supervisor's /metrics, a worker that
dies is started again, a second controller started by mistake is still refused, SIGTERM, or the
supervisor's death, ends every process; and two controllers started with ``--reuse-port`` share
the ports.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.processes import BIN, Agent, Controller, _env, start_controller, wait_for

pytestmark = pytest.mark.integration


def workers_of(controller: Controller) -> list[psutil.Process]:
    """The worker processes of a supervising ``serve`` (not multiprocessing's resource tracker)."""
    return spawned_by(psutil.Process(controller.process.pid))


def spawned_by(parent: psutil.Process) -> list[psutil.Process]:
    return [c for c in parent.children() if "spawn_main" in " ".join(c.cmdline())]


def rules_processes_of(workers: list[psutil.Process]) -> list[psutil.Process]:
    """Each worker's rules process (on PostgreSQL the rules are judged in a niced child of the worker)."""
    found = wait_for(lambda: [spawned_by(w) for w in workers] if all(spawned_by(w) for w in workers) else None,
                     timeout=60, what="every worker's rules process")
    assert [len(children) for children in found] == [1] * len(workers)
    return [children[0] for children in found]


def health_over_many_connections(controller: Controller, count: int) -> list[grpc.Channel]:
    """``count`` TLS connections to the enrolment port, each checked with a health call; left open."""
    credentials = grpc.ssl_channel_credentials(controller.ca_cert.read_bytes())
    channels = []
    for _ in range(count):
        channel = grpc.secure_channel(f"127.0.0.1:{controller.enroll_port}", credentials,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=20)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        channels.append(channel)
    return channels


def reports_counted(port: int) -> float:
    """Report calls answered OK, from the /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        lines = page.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("counterguard_rpcs_total{") and 'method="Report"' in line and 'code="OK"' in line)


def connections_on(process: psutil.Process, port: int) -> int:
    return sum(1 for c in process.net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def two_workers(tmp_path: Path, postgres_url: str, metrics_port: int) -> Iterator[Controller]:
    """``serve --workers 2`` on PostgreSQL, the database for several controller processes."""
    running = start_controller(tmp_path / "controller", postgres_url, serve_args=("--workers", "2"),
                               env={"COUNTERGUARD_METRICS_PORT": str(metrics_port)})
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.postgres
def test_two_workers_share_the_ports_serve_agents_and_stop_on_sigterm(
        two_workers: Controller, agent: Agent, tmp_path: Path, metrics_port: int) -> None:
    controller = two_workers
    line = next(line for line in controller.log if "listening" in line)
    assert json.loads(line[line.index("{"):])["workers"] == 2
    workers = workers_of(controller)
    assert len(workers) == 2
    rules = rules_processes_of(workers)
    # 19 is the nicest there is (the test run may be niced already: the agent's tests lower their own priority).
    wait_for(lambda: [p.nice() for p in rules] == [min(19, w.nice() + 10) for w in workers], timeout=60,
             what="the rules processes to run 10 steps nicer than their workers")

    channels = health_over_many_connections(controller, 24)
    try:
        spread = [connections_on(worker, controller.enroll_port) for worker in workers]
    finally:
        for channel in channels:
            channel.close()
    assert sum(spread) == 24 and min(spread) > 0, f"connections per worker: {spread}"

    agent_id = agent.enroll(controller, controller.token())
    for _ in range(3):
        agent.run("run", "--once")
    assert controller.json("agents", "show", agent_id)["last_sequence"] > 0
    reports = reports_counted(metrics_port)  # the supervisor's /metrics sums what the workers counted
    assert reports >= 3, reports

    # A controller started by mistake on the same ports is refused, as without workers.
    second = subprocess.run(
        [str(BIN / "counterguard"), "--data-dir", str(tmp_path / "other"), "serve",
         "--listen", f"127.0.0.1:{controller.port}", "--enroll-listen", "127.0.0.1:0"],
        capture_output=True, text=True, env=_env(), timeout=120)
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{controller.port}: address already in use" in second.stderr
    assert "Traceback" not in second.stderr
    assert sum(1 for line in controller.log if "listening" in line and "{" in line) == 1

    controller.process.send_signal(signal.SIGTERM)
    assert controller.process.wait(60) == 0
    _, alive = psutil.wait_procs(workers + rules, timeout=10)
    assert alive == []
    assert any("counterguard controller stopped" in line for line in controller.log)


@pytest.mark.postgres
def test_a_worker_that_dies_is_started_again_and_workers_end_with_their_supervisor(two_workers: Controller) -> None:
    controller = two_workers
    victim = workers_of(controller)[1]
    its_rules = rules_processes_of([victim])
    victim.kill()
    victim.wait(10)
    _, alive = psutil.wait_procs(its_rules, timeout=15)
    assert alive == [], "the rules process outlived its worker"

    wait_for(lambda: any("listening again" in line for line in controller.log), timeout=60,
             what="the supervisor to start the worker again")
    restarted = workers_of(controller)
    assert len(restarted) == 2 and victim.pid not in {w.pid for w in restarted}
    rules = rules_processes_of(restarted)
    assert any(f"(pid {victim.pid}) exited with code -9" in line for line in controller.log)
    for channel in health_over_many_connections(controller, 4):
        channel.close()

    controller.kill()  # the supervisor, with no chance to stop its workers

    _, alive = psutil.wait_procs(restarted + rules, timeout=30)
    assert alive == [], "worker or rules processes outlived their supervisor"
    with pytest.raises(grpc.RpcError):
        health_over_many_connections(controller, 1)


def test_controllers_started_with_reuse_port_share_the_ports(tmp_path: Path) -> None:
    first = start_controller(tmp_path / "controller", serve_args=("--reuse-port",))
    second = None
    try:
        second = start_controller(tmp_path / "controller", ports=(first.port, first.enroll_port),
                                  serve_args=("--reuse-port",))
        assert (second.port, second.enroll_port) == (first.port, first.enroll_port)
        channels = health_over_many_connections(first, 24)
        try:
            spread = [connections_on(psutil.Process(c.process.pid), first.enroll_port) for c in (first, second)]
        finally:
            for channel in channels:
                channel.close()
        assert sum(spread) == 24 and min(spread) > 0, f"connections per controller: {spread}"
    finally:
        for running in (second, first):
            if running is not None:
                running.stop()
