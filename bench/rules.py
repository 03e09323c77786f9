"""Benchmark: how fast a violation is stored, and how many facts per second the rules get through.

Prints figures measured in this run only:

1. **Latency** — from starting a program the default catalogue knows (``/bin/sleep`` copied as
   ``gnome-mines``) to its violation being stored: a real ``counterguard serve`` (its clock set to a
   Monday morning with the ``COUNTERGUARD_FAKE_NOW`` test hook, so it is working time) and a real
   ``counterguard-agent run`` with its default settings, on loopback, SQLite; median of ``--runs``.
   Target (issue "The computer-usage rules"): ≤ 3 s.
2. **Throughput** — a month of synthetic facts per workstation (boot, inventory, software and process
   lists at each start, heartbeats every 60 s while on, process starts and stops including games and
   videos, logins, input activity, foreground windows, some machines left on after work, weekend
   duty), evaluated under the default policy:
   a. pure evaluation (:func:`evaluate_agent`) of a whole month per workstation, as a re-evaluation does;
   b. the service path a controller runs: every batch the agent would send is ingested and followed by
      its evaluation, ``catch_up`` (database round trips included), on SQLite or ``--db`` (e.g. PostgreSQL), for a
      sample of workstation-days; then what 1,000 workstations need, from the measured per-batch cost.

   The hall's decisions are recorded first (``--staff``: account mappings, approvals, registered
   devices), since every evaluation applies them; the SQL statements per batch are counted.

Usage: ``python bench/rules.py [--runs N] [--workstations N] [--service-days N] [--staff N] [--db URL]
[--skip-latency]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.convert import datetime_to_timestamp  # noqa: E402
from controller.policy.calendar import WorkCalendar  # noqa: E402
from controller.policy.catalogue import CatalogueMatcher  # noqa: E402
from controller.policy.loader import load_policy_file  # noqa: E402
from controller.rules.evaluate import Account, RuleContext, StoredFact, evaluate_agent  # noqa: E402
from policies import DEFAULT_POLICY  # noqa: E402
from protos.counterguard.v1 import facts_pb2 as pb  # noqa: E402

BIN = Path(sys.executable).parent
MONDAY_MORNING = "2026-11-02T10:00:00+08:00"
MONTH = dt.datetime(2026, 10, 31, 16, 0, tzinfo=dt.UTC)  # 2026-11-01 00:00 in Shanghai
ORDINARY = ["bash", "ls", "grep", "python3", "wps", "et", "firefox", "chrome", "evince", "nautilus", "cron",
            "sshd", "dbus-daemon", "systemd", "pulseaudio", "gvfsd", "Xorg", "ibus-daemon", "sogoupinyin"]


# ------------------------------------------------------------------------------ 1. latency


def _start_controller(work: Path) -> tuple[subprocess.Popen[str], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERGUARD_")}
    env.update(PATH=f"{BIN}:{env['PATH']}", COUNTERGUARD_FAKE_NOW=MONDAY_MORNING)
    controller = subprocess.Popen(
        [str(BIN / "counterguard"), "--data-dir", str(work / "controller"), "serve", "--listen", "127.0.0.1:0",
         "--enroll-listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert controller.stdout is not None
    for _ in range(200):
        line = controller.stdout.readline()
        if "enroll_port" in line:
            return controller, int(json.loads(line[line.index("{"):])["enroll_port"])
    controller.kill()
    raise SystemExit("the controller did not report its ports")


def latency(runs: int) -> list[float]:
    """Seconds from starting a catalogued program to its violation in the database, per run."""
    from sqlalchemy import create_engine, text

    work = Path(tempfile.mkdtemp(prefix="cg-bench-rules-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERGUARD_")}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    controller, enroll_port = _start_controller(work)
    agent = None
    try:
        cg = [str(BIN / "counterguard"), "--data-dir", str(work / "controller")]
        token = json.loads(subprocess.run([*cg, "token", "create", "--window", "BENCH", "--expires", "1h", "--json"],
                                          check=True, capture_output=True, text=True, env=env).stdout)["token"]
        ag = [str(BIN / "counterguard-agent"), "--state-dir", str(work / "agent")]
        subprocess.run([*ag, "enroll", "--controller", f"127.0.0.1:{enroll_port}", "--token", token,
                        "--ca-cert", str(work / "controller" / "pki" / "ca.pem")], check=True, capture_output=True,
                       env=env)
        agent = subprocess.Popen([*ag, "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        game = work / "bin" / "gnome-mines"
        game.parent.mkdir()
        shutil.copy("/bin/sleep", game)
        engine = create_engine(f"sqlite:///{work / 'controller' / 'counterguard.db'}")
        query = text("SELECT count(*) FROM violation WHERE rule_id = 'games-video-music' AND subject LIKE :pid")
        with engine.connect() as conn:  # wait for the agent's start-up report
            deadline = time.monotonic() + 60
            while not conn.execute(text("SELECT count(*) FROM fact")).scalar() and time.monotonic() < deadline:
                time.sleep(0.2)
        time.sleep(3)
        seconds = []
        for _ in range(runs):
            started = time.monotonic()
            player = subprocess.Popen([str(game), "120"])
            try:
                while time.monotonic() - started < 30:
                    with engine.connect() as conn:
                        if conn.execute(query, {"pid": f"%pid {player.pid} %"}).scalar():
                            break
                    time.sleep(0.02)
                seconds.append(time.monotonic() - started)
            finally:
                player.kill()
                player.wait()
            time.sleep(2.5)
        engine.dispose()
        return seconds
    finally:
        for process in (agent, controller):
            if process is not None:
                process.terminate()
                process.wait(15)
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------ 2. synthetic facts


class Month:
    """One workstation's synthetic month: facts with receive times, grouped into the batches the agent sends."""

    def __init__(self, number: int, days: int, rng: random.Random, calendar: WorkCalendar) -> None:
        self.rng = rng
        self.batches: list[tuple[dt.datetime, list[pb.Fact]]] = []
        self.sequence = 0
        self.software = [pb.SoftwareItem(source=pb.SOFTWARE_SOURCE_DPKG, name=f"package-{i}", version="1.0",
                                         section="utils") for i in range(800)]
        if number % 7 == 0:
            self.software.append(pb.SoftwareItem(source=pb.SOFTWARE_SOURCE_DESKTOP_ENTRY, name="sol.desktop",
                                                 categories=["Game", "CardGame"]))
        self.inventory = pb.InventorySnapshot(
            hostname=f"w{number:04d}", system=pb.SystemInfo(serial=f"PC{number}", board_serial=f"MB{number}"),
            cpu=pb.CpuInfo(model="Intel Core i5"), memory=pb.MemoryInfo(total_bytes=16 * 2**30),
            disks=[pb.Disk(name="sda", serial=f"S{number}", size_bytes=512 * 10**9)],
            network_interfaces=[pb.NetworkInterface(name="eno1", mac="aa:bb:cc:00:00:01", addresses=["10.0.0.9/24"])],
            default_gateway="10.0.0.1", os=pb.OsInfo(machine_id=f"m{number}"))
        for day in range(days):
            midnight = MONTH + dt.timedelta(days=day)
            if calendar.is_working_day(calendar.local_date(midnight + dt.timedelta(hours=12))):
                off = midnight + dt.timedelta(hours=17, minutes=rng.randint(0, 40))  # 17:00–17:40 local
                if rng.random() < 0.15:
                    off += dt.timedelta(hours=rng.randint(2, 5))  # left on after work
                self.day(midnight + dt.timedelta(hours=8, minutes=rng.randint(40, 60)), off, work=True)
            elif rng.random() < 0.1:  # weekend duty
                self.day(midnight + dt.timedelta(hours=9), midnight + dt.timedelta(hours=12), work=False)

    @property
    def facts(self) -> int:
        return sum(len(batch) for _, batch in self.batches)

    def fact(self, at: dt.datetime, **kind: Any) -> pb.Fact:
        self.sequence += 1
        return pb.Fact(sequence=self.sequence, observed_at=datetime_to_timestamp(at), **kind)

    def send(self, at: dt.datetime, *facts: pb.Fact) -> None:
        self.batches.append((at + dt.timedelta(seconds=1), list(facts)))

    def day(self, on: dt.datetime, off: dt.datetime, work: bool) -> None:  # noqa: PLR0915 - a day, in order
        rng, boot = self.rng, datetime_to_timestamp(on - dt.timedelta(minutes=1))
        beat = lambda at, kind=pb.PowerEvent.KIND_HEARTBEAT: self.fact(at, power=pb.PowerEvent(  # noqa: E731
            kind=kind, boot_time=boot))
        processes = [pb.ProcessInfo(pid=100 + i, name=rng.choice(ORDINARY), started_at=boot) for i in range(200)]
        self.send(on, beat(on, pb.PowerEvent.KIND_BOOT), self.fact(on, inventory=self.inventory),
                  self.fact(on, software_snapshot=pb.SoftwareSnapshot(items=self.software)),
                  self.fact(on, process_snapshot=pb.ProcessSnapshot(processes=processes)),
                  self.fact(on, session_snapshot=pb.SessionSnapshot()),
                  self.fact(on, session=pb.SessionEvent(kind=pb.SessionEvent.KIND_LOGIN, session=pb.UserSession(
                      username="zhang", terminal=":0", started_at=datetime_to_timestamp(on)))), beat(on))
        events: list[tuple[dt.datetime, pb.Fact]] = []
        length = (off - on).total_seconds()
        for n in range(150 if work else 30):  # ordinary programs: a few minutes each
            start = on + dt.timedelta(seconds=rng.uniform(60, length - 600))
            info = pb.ProcessInfo(pid=1000 + n, name=rng.choice(ORDINARY), started_at=datetime_to_timestamp(start))
            stop = start + dt.timedelta(seconds=rng.uniform(1, 600))
            events += [(start, self.fact(start, process_started=pb.ProcessStarted(process=info))),
                       (stop, self.fact(stop, process_stopped=pb.ProcessStopped(pid=info.pid, name=info.name,
                                                                                started_at=info.started_at)))]
        for name, chance in (("gnome-mines", 0.2), ("vlc", 0.1)):
            if rng.random() < chance:
                start = on + dt.timedelta(seconds=rng.uniform(600, length - 3000))
                info = pb.ProcessInfo(pid=rng.randint(5000, 9000), name=name, executable=f"/usr/games/{name}",
                                      username="zhang", started_at=datetime_to_timestamp(start))
                stop = start + dt.timedelta(minutes=rng.randint(5, 40))
                events += [(start, self.fact(start, process_started=pb.ProcessStarted(process=info))),
                           (stop, self.fact(stop, process_stopped=pb.ProcessStopped(pid=info.pid, name=name,
                                                                                    started_at=info.started_at)))]
        moment = on
        while moment < off - dt.timedelta(minutes=40):  # active and idle spells, a title now and then
            moment += dt.timedelta(minutes=rng.randint(5, 30))
            events.append((moment, self.fact(moment, activity=pb.InputActivity(state=pb.InputActivity.STATE_ACTIVE,
                                                                               username="zhang", session=":0"))))
            shop = rng.random() < 0.05
            events.append((moment, self.fact(moment, foreground=pb.ForegroundWindow(
                category="shopping" if shop else "", pattern_id="taobao" if shop else "", executable="firefox",
                pid=1003))))
            idle = moment + dt.timedelta(minutes=rng.randint(5, 20))
            events.append((idle, self.fact(idle, activity=pb.InputActivity(
                state=pb.InputActivity.STATE_IDLE, username="zhang", session=":0", idle_seconds=300))))
            moment = idle
        moment = on + dt.timedelta(minutes=1)
        while moment < off:
            events.append((moment, beat(moment)))
            moment += dt.timedelta(minutes=1)
        events.sort(key=lambda pair: pair[0])
        for at, fact in events:  # renumber in time order: sequences follow observation, as in the outbox
            self.sequence += 1
            fact.sequence = self.sequence
            self.send(at, fact)
        self.send(off, self.fact(off, power=pb.PowerEvent(kind=pb.PowerEvent.KIND_SHUTDOWN, boot_time=boot)))
        self.batches.sort(key=lambda batch: batch[1][0].sequence)


def pure_throughput(workstations: int, days: int) -> tuple[int, float, Counter[str]]:
    """(facts, seconds, violations by rule) of evaluating each workstation's month at once."""
    policy = load_policy_file(DEFAULT_POLICY)
    calendar, matcher = WorkCalendar(policy), CatalogueMatcher(policy.catalogue)
    context = RuleContext(window="W01", accounts=(Account("zhang", "张三"),))
    total_facts = 0
    violations: Counter[str] = Counter()
    elapsed = 0.0
    for number in range(workstations):
        month = Month(number, days, random.Random(number), calendar)
        stored = [StoredFact(f.sequence, f, received) for received, batch in month.batches for f in batch]
        started = time.perf_counter()
        found = evaluate_agent(policy, calendar, matcher, f"w{number}", stored, context,
                               MONTH, MONTH + dt.timedelta(days=days))
        elapsed += time.perf_counter() - started
        total_facts += len(stored)
        violations.update(v.rule_id for v in found)
    return total_facts, elapsed, violations


def record_decisions(engine: Any, staff: int) -> None:
    """What a hall of ``staff`` people has decided: an account mapping each, approvals, registered devices."""
    from sqlalchemy import insert

    from controller.rules.records import ACCOUNT_MAPPING, REGISTERED_DEVICE, SOFTWARE_APPROVAL

    at = MONTH - dt.timedelta(days=30)
    with engine.begin() as conn:
        if staff:
            conn.execute(insert(ACCOUNT_MAPPING), [
                {"account": f"user{n:04d}", "staff": f"员工{n:04d}", "windows": f"W{n % 100:02d}", "created_at": at}
                for n in range(staff)])
            conn.execute(insert(SOFTWARE_APPROVAL), [
                {"name": f"approved-tool-{n}", "decision": "approved", "window": f"W{n % 100:02d}" if n % 3 else None,
                 "decided_at": at} for n in range(staff * 2 // 3)])
            conn.execute(insert(REGISTERED_DEVICE), [
                {"vendor_id": "0781", "product_id": f"{n:04x}", "serial": f"SN{n}", "registered_at": at}
                for n in range(staff // 10)])


def service_throughput(workstations: int, days: int, database_url: str | None, staff: int = 0) -> dict[str, float]:
    """Ingest + evaluation (``catch_up``) of every batch of ``days`` of each workstation's month, through a
    real database, with ``staff`` people's decisions recorded (see :func:`record_decisions`)."""
    from sqlalchemy import event

    from controller.clock import utc_now
    from controller.db import make_engine, session_scope
    from controller.ingest import IngestService
    from controller.migrate import upgrade
    from controller.models import Agent
    from controller.policy.store import PolicyStore
    from controller.rules.service import RulesService

    work = Path(tempfile.mkdtemp(prefix="cg-bench-rules-db-"))
    engine = make_engine(database_url or f"sqlite:///{work / 'bench.db'}")
    try:
        upgrade(engine)
        now = [MONTH]
        clock = lambda: now[0]  # noqa: E731
        PolicyStore(engine, clock).apply(DEFAULT_POLICY.read_text(encoding="utf-8"), "default.yaml", "bench")
        ingest, rules = IngestService(engine, clock), RulesService(engine, PolicyStore(engine, clock), clock)
        policy = load_policy_file(DEFAULT_POLICY)
        calendar = WorkCalendar(policy)
        batches: list[tuple[dt.datetime, str, list[pb.Fact]]] = []
        with session_scope(engine) as session:
            for number in range(workstations):
                agent_id = f"bench-{number:04d}-{os.getpid()}"
                session.add(Agent(id=agent_id, window=f"W{number:02d}", enrolled_at=utc_now(), cert_serial=agent_id,
                                  cert_fingerprint=agent_id, cert_not_after=utc_now() + dt.timedelta(days=365)))
                month = Month(number, 31, random.Random(number), calendar)
                first, horizon = MONTH + dt.timedelta(days=1), MONTH + dt.timedelta(days=days + 1)  # from Monday
                batches += [(at, agent_id, facts) for at, facts in month.batches if first <= at < horizon]
        batches.sort(key=lambda batch: batch[0])
        record_decisions(engine, staff)
        ingest_seconds = rules_seconds = 0.0
        facts = 0
        phase, statements = ["ingest"], Counter[str]()
        event.listen(engine, "before_cursor_execute", lambda *_: statements.update(phase))
        for received, agent_id, batch in batches:
            now[0] = received
            started = time.perf_counter()
            phase[0] = "ingest"
            ingest.ingest(agent_id, batch)
            middle = time.perf_counter()
            phase[0] = "rules"
            rules.catch_up(agent_id)  # what the controller's evaluation threads run after a report
            rules_seconds += time.perf_counter() - middle
            ingest_seconds += middle - started
            facts += len(batch)
        phase[0] = "sweep"
        sweep_started = time.perf_counter()
        rules.sweep(now[0])
        sweep = time.perf_counter() - sweep_started
        return {"batches": len(batches), "facts": facts, "ingest_s": ingest_seconds, "rules_s": rules_seconds,
                "sweep_s": sweep, "workstations": workstations, "staff": staff,
                "ingest_statements": statements["ingest"], "rules_statements": statements["rules"]}
    finally:
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="latency runs (median reported)")
    parser.add_argument("--workstations", type=int, default=20, help="workstations for the pure evaluation")
    parser.add_argument("--service-workstations", type=int, default=5)
    parser.add_argument("--service-days", type=int, default=3, help="days of batches through the service path")
    parser.add_argument("--db", help="database URL for the service path (default: a temporary SQLite file)")
    parser.add_argument("--staff", type=int, default=300,
                        help="people of the hall for the service path: an account mapping each, 2/3 as many "
                             "software approvals, 1/10 as many registered devices")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()

    if not args.skip_latency:
        seconds = latency(args.runs)
        print(f"1. program start → violation stored (real agent, default settings; real controller, loopback, SQLite):"
              f" median {statistics.median(seconds):.2f} s, min {min(seconds):.2f} s, max {max(seconds):.2f} s "
              f"over {len(seconds)} runs; target ≤ 3 s")

    facts, elapsed, found = pure_throughput(args.workstations, 30)
    per_month = facts / args.workstations
    print(f"2a. pure evaluation of a month per workstation: {args.workstations} workstations, {facts:,} facts "
          f"({per_month:,.0f} per workstation-month), {elapsed:.2f} s → {facts / elapsed:,.0f} facts/s "
          f"({elapsed / facts * 1e6:.1f} µs per fact); 1,000 workstations' month: "
          f"{1000 * per_month:,.0f} facts ≈ {1000 * per_month * elapsed / facts / 60:.1f} CPU-minutes")
    print("    violations found: " + ", ".join(f"{rule} {count}" for rule, count in sorted(found.items())))

    service = service_throughput(args.service_workstations, args.service_days, args.db, args.staff)
    batches, sfacts = service["batches"], service["facts"]
    per_batch = service["rules_s"] / batches
    batches_per_month = batches / (args.service_workstations * args.service_days) * 22  # working days
    print(f"2b. service path ({'--db ' + args.db.split('@')[-1] if args.db else 'SQLite'}): "
          f"{args.service_workstations} workstations × {args.service_days} working days, {batches:,} batches, "
          f"{sfacts:,} facts: ingest {service['ingest_s']:.1f} s, rules after ingest {service['rules_s']:.1f} s "
          f"({per_batch * 1000:.1f} ms per batch, {sfacts / service['rules_s']:,.0f} facts/s), "
          f"one sweep of {args.service_workstations} agents {service['sweep_s'] * 1000:.0f} ms; SQL statements "
          f"per batch: ingest {service['ingest_statements'] / batches:.1f}, "
          f"rules {service['rules_statements'] / batches:.1f} (decisions of {args.staff} staff recorded)")
    rate = 1000 * batches_per_month / (22 * 9 * 3600)  # most batches come in the 9 hours the machines are on
    print(f"    1,000 workstations send ≈ {1000 * batches_per_month:,.0f} batches a month (≈ {rate:.1f}/s while "
          f"they are on): evaluating on ingest takes ≈ {1000 * batches_per_month * per_batch / 3600:.1f} hours a "
          f"month of one thread's wall time (database waits included), ≈ {rate * per_batch * 100:.0f} % of one "
          "thread while the machines are on")


if __name__ == "__main__":
    main()
