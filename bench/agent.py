"""Benchmark: the agent as a workstation service — process-poll cost, install detection time, steady RSS and CPU.

Prints figures measured in this run only:

(a) the process collector's steady cost: the real ``ProcessTracker.poll`` every 2 s with about 300
    extra processes present (``sleep``), as CPU time over wall time of the polling process (% of one
    core), beside the same loop without the collector; target ≤ 0.2 % of one core;
(b) the time from ``dpkg -i`` of a small real package (built here with ``dpkg-deb``, removed again with
    ``dpkg -r``) to its software fact stored at a real controller (the fact's ``received_at``), with a
    real agent whose scheduled software scan is an hour away, so only the install watcher can find it;
    target ≤ 10 s. Needs root; the figure is skipped, saying so, without it;
(c) the steady RSS and CPU of ``counterguard-agent run`` at default settings, reporting to that controller.

Usage: ``python bench/agent.py [--seconds S] [--processes N] [--installs N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POLL_INTERVAL = 2.0

POLL_LOOP = """
import json, sys, time, psutil
from agent.collectors.processes import ProcessTracker
mode, seconds = sys.argv[1], float(sys.argv[2])
tracker = ProcessTracker()
tracker.snapshot()
me = psutil.Process()
start_cpu, start = sum(me.cpu_times()[:2]), time.monotonic()
polls, poll_cpu, tick = 0, 0.0, start
while time.monotonic() - start < seconds:
    if mode == "poll":
        before = time.process_time()
        tracker.poll()
        poll_cpu += time.process_time() - before
        polls += 1
    tick += %(interval)r
    time.sleep(max(0.0, tick - time.monotonic()))
wall = time.monotonic() - start
cpu = sum(me.cpu_times()[:2]) - start_cpu
print(json.dumps({"cpu_percent": cpu / wall * 100, "polls": polls, "ms_per_poll": poll_cpu / max(polls, 1) * 1000,
                  "pids": len(psutil.pids())}))
""" % {"interval": POLL_INTERVAL}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERGUARD_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return {**env, **(extra or {})}


# ------------------------------------------------------------------ (a) process poll


def process_poll_cost(seconds: float, processes: int) -> tuple[dict, dict]:
    """The polling loop with and without the collector, run side by side while ``processes`` sleeps exist."""
    sleepers = [subprocess.Popen(["sleep", "3600"]) for _ in range(processes)]
    try:
        runs = [subprocess.Popen([sys.executable, "-c", POLL_LOOP, mode, str(seconds)], cwd=REPO,
                                 stdout=subprocess.PIPE, text=True) for mode in ("poll", "baseline")]
        poll, baseline = (json.loads(run.communicate(timeout=seconds + 120)[0]) for run in runs)
        return poll, baseline
    finally:
        for sleeper in sleepers:
            sleeper.kill()
        for sleeper in sleepers:
            sleeper.wait()


# ------------------------------------------------------------------ a controller and an agent


@contextmanager
def controller_and_agent(work: Path) -> Iterator[tuple[list[str], list[str], str]]:
    """A ``counterguard serve`` on loopback and an enrolled agent state folder: (admin command, agent command, agent id)."""
    cg = [str(BIN / "counterguard"), "--data-dir", str(work / "controller")]
    server = subprocess.Popen([*cg, "serve", "--listen", "127.0.0.1:0", "--enroll-listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        assert server.stdout is not None
        line = ""
        while "enroll_port" not in line:
            line = server.stdout.readline()
            if not line:
                raise SystemExit("the controller did not start")
        threading.Thread(target=lambda: list(server.stdout or ()), daemon=True).start()  # keep its pipe drained
        enroll_port = json.loads(line[line.index("{"):])["enroll_port"]
        token = json.loads(subprocess.run([*cg, "token", "create", "--window", "BENCH", "--expires", "1h", "--json"],
                                          check=True, capture_output=True, text=True, env=_env()).stdout)["token"]
        ag = [str(BIN / "counterguard-agent"), "--state-dir", str(work / "agent")]
        subprocess.run([*ag, "enroll", "--controller", f"127.0.0.1:{enroll_port}", "--token", token,
                        "--ca-cert", str(work / "controller/pki/ca.pem")], check=True, capture_output=True, env=_env())
        agent_id = json.loads((work / "agent/enrollment.json").read_text())["agent_id"]
        yield cg, ag, agent_id
    finally:
        server.terminate()
        server.wait(15)


@contextmanager
def running_agent(ag: list[str], settings: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    env = _env({f"COUNTERGUARD_AGENT_{k.upper()}": v for k, v in (settings or {}).items()})
    agent = subprocess.Popen([*ag, "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        yield agent
    finally:
        agent.terminate()
        agent.wait(30)


# ------------------------------------------------------------------ (c) steady RSS and CPU


def steady_use(agent: subprocess.Popen[bytes], seconds: float) -> tuple[float, float, float]:
    """(median RSS MiB of the second half, max RSS MiB, CPU % of one core) over ``seconds`` after a 10 s settle."""
    time.sleep(10)
    process = psutil.Process(agent.pid)
    samples: list[float] = []
    start, cpu0 = time.monotonic(), sum(process.cpu_times()[:2])
    while time.monotonic() - start < seconds:
        samples.append(process.memory_info().rss / 2**20)
        time.sleep(1)
    cpu = (sum(process.cpu_times()[:2]) - cpu0) / (time.monotonic() - start) * 100
    return statistics.median(samples[len(samples) // 2:]), max(samples), cpu


# ------------------------------------------------------------------ (b) dpkg -i to the controller


def build_deb(folder: Path, name: str) -> Path:
    tree = folder / name
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0-1\nSection: games\nPriority: optional\nArchitecture: all\n"
        "Maintainer: CounterGuard Bench <bench@counterguard.invalid>\nDescription: install-detection probe\n")
    (tree / "usr/share/doc" / name).mkdir(parents=True)
    (tree / "usr/share/doc" / name / "README").write_text("Installed by bench/agent.py and removed again.\n")
    deb = folder / f"{name}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True, capture_output=True)
    return deb


def dpkg(*args: str) -> float:
    """Run dpkg (waiting while another one holds the lock); its own duration in seconds."""
    for _ in range(120):
        started = time.monotonic()
        result = subprocess.run(["dpkg", *args], capture_output=True, text=True)
        if result.returncode == 0:
            return time.monotonic() - started
        if "lock" not in result.stderr:
            raise SystemExit(f"dpkg {' '.join(args)} failed: {result.stderr}")
        time.sleep(1)
    raise SystemExit("dpkg stayed locked for two minutes")


def stored_at(database: Path, agent_id: str, name: str, *, added: bool, after: int) -> tuple[int, dt.datetime] | None:
    """The first software delta after sequence ``after`` that adds (or removes) ``name``: (sequence, received_at)."""
    from sqlalchemy import create_engine, select

    from controller.models import Fact
    from protos.counterguard.v1 import facts_pb2

    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Fact.sequence, Fact.received_at, Fact.payload).where(
                Fact.agent_id == agent_id, Fact.kind == "software_delta", Fact.sequence > after)
                .order_by(Fact.sequence)).all()
    finally:
        engine.dispose()
    for sequence, received_at, payload in rows:
        delta = facts_pb2.Fact.FromString(payload).software_delta
        if any(item.name == name for item in (delta.added if added else delta.removed)):
            return sequence, received_at
    return None


def wait_stored(database: Path, agent_id: str, name: str, *, added: bool, after: int,
                timeout: float = 60) -> tuple[int, dt.datetime]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = stored_at(database, agent_id, name, added=added, after=after)
        if found:
            return found
        time.sleep(0.2)
    raise SystemExit(f"{name} never reached the controller ({'install' if added else 'removal'})")


def install_times(work: Path, database: Path, agent_id: str, installs: int) -> list[tuple[float, float]]:
    """(dpkg -i's own duration, dpkg -i start → fact stored) for each install; each package is removed again."""
    name = f"counterguard-bench-probe-{os.getpid()}"
    deb = build_deb(work, name)
    times, after = [], 0
    time.sleep(5)  # the agent's start-up facts are in
    for _ in range(installs):
        started = dt.datetime.now(dt.UTC)
        try:
            own = dpkg("-i", str(deb))
            after, received = wait_stored(database, agent_id, name, added=True, after=after)
        finally:
            dpkg("-r", name)
        times.append((own, (received.replace(tzinfo=dt.UTC) - started).total_seconds()))
        after, _ = wait_stored(database, agent_id, name, added=False, after=after)
        time.sleep(3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of (a) and (c)")
    parser.add_argument("--processes", type=int, default=300)
    parser.add_argument("--installs", type=int, default=3)
    args = parser.parse_args()

    poll, baseline = process_poll_cost(args.seconds, args.processes)
    print(f"(a) process poll every {POLL_INTERVAL:g} s with {poll['pids']} processes present, {args.seconds:g} s: "
          f"{poll['cpu_percent']:.3f} % of one core (loop without the collector: {baseline['cpu_percent']:.3f} %); "
          f"{poll['ms_per_poll']:.2f} ms CPU per poll; target <= 0.2 %")

    work = Path(tempfile.mkdtemp(prefix="cg-bench-agent-"))
    try:
        with controller_and_agent(work) as (_, ag, agent_id):
            with running_agent(ag) as agent:
                median_rss, max_rss, cpu = steady_use(agent, args.seconds)
            print(f"(c) agent at default settings, {args.seconds:g} s after a 10 s settle: RSS median {median_rss:.1f} MiB "
                  f"(max {max_rss:.1f} MiB), CPU {cpu:.2f} % of one core")
            if os.geteuid() != 0 or not shutil.which("dpkg-deb"):
                print("(b) skipped: installing a package needs root and dpkg-deb")
                return
            with running_agent(ag, {"software_scan_interval_seconds": "3600"}):
                times = install_times(work, work / "controller/counterguard.db", agent_id, args.installs)
            stored = [total for _, total in times]
            print(f"(b) dpkg -i to the software fact stored at the controller, {len(times)} installs: median "
                  f"{statistics.median(stored):.1f} s, max {max(stored):.1f} s (dpkg -i itself: median "
                  f"{statistics.median(own for own, _ in times):.1f} s); target <= 10 s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
