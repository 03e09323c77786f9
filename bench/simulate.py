"""The fleet simulator: N simulated workstations reporting to a real controller over real mutual TLS.

Every simulated workstation enrols like a real agent (its own EC key, a CSR, a one-time-per-window
token, its own client certificate) and then reports over its own gRPC channel, one Report every
``--interval`` seconds (spread evenly), with the fact mix of a counter PC: a first report with the
inventory, software, process and session snapshots and the boot; then heartbeats, program starts
and stops, idle/active transitions, foreground changes, now and then a software change or a
catalogued game (so the rules engine has work), and a share of machines left on after hours.
Many workstations share one client process (asyncio, ``grpc.aio``); several client processes share
the load.

Printed (measured in this run only): acknowledged reports/s and facts/s, ack latency p50/p95/p99,
errors by status, Reports refused early for overload (``shed``: ``RESOURCE_EXHAUSTED`` with
``retry-after-ms``, sent again after the wait as an agent does), and the controller's CPU (% of one
core, all its processes) and RSS over time.

The controller acknowledges a Report once its facts are committed and judges them with the rules
afterwards, off the acknowledgement path. So the simulator also reads the *evaluation backlog* from the
controller's database every few seconds: the agents holding facts the rules have not judged yet
(``agent.last_sequence > agent.evaluated_sequence``) and the age of the oldest of them (now − their
earliest ``last_seen_at``). Reported: the largest backlog and age while measuring (``backlog_max``,
``backlog_age_max_s``), the backlog left when the load ends (``backlog_at_end``) and how long after the
load every fact had been judged (``caught_up_s``; null if that took longer than ``--catch-up-timeout``).

    python bench/simulate.py --agents 500 --duration 120                  # starts its own controller
    python bench/simulate.py --agents 2000 --interval 60 --db postgresql+psycopg://127.0.0.1/test
    python bench/simulate.py --find-max --p99-ms 200                      # the largest fleet that holds

Time of day matters: a heartbeat inside working hours changes no rule and is not evaluated, one in
the evening is. ``--at 2026-11-30T10:00:00+08:00`` runs the fleet in a working morning (the
controller's clock starts there through its test hook ``$COUNTERGUARD_FAKE_NOW``, and the facts carry
that time); without it the run is in the real time of day, whatever that is where the policy applies.

With ``--find-max`` the fleet grows step by step (each step a fresh controller and database) until a
step fails to hold; the last step that held is reported. A step *holds* when it had no errors, its p99
stayed below ``--p99-ms`` AND the rules caught up with every fact after the load (``caught_up_s`` not
null): a controller that acknowledges fast but never finishes judging does not hold. The client
processes run on the same machine as the controller, so they take CPU from it: the figures are a lower
bound for a controller host with its own cores.

A soak run watches for leaks and creeping backlogs: ``--sample-every SECONDS`` prints one line per
period while measuring (elapsed time, acks so far and per second, controller RSS summed over its
process tree, its CPU over the period, the backlog), and at the end the RSS trend: the average of the
first and of the last measured minute and the slope of a least-squares line through the RSS samples
after the warm-up (``rss_slope_mib_per_min``; near 0 for a controller that does not leak). A
10-minute soak of 3000 workstations on PostgreSQL (the client processes need about one core):

    python bench/simulate.py --agents 3000 --interval 60 --warmup 60 --duration 600 \\
        --sample-every 60 --workers 2 --db postgresql+psycopg://postgres@127.0.0.1/soak
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.transport import throttle_seconds  # noqa: E402 - what a real agent makes of a refusal
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc, facts_pb2  # noqa: E402

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

BIN = Path(sys.executable).parent
AGENTS_PER_WINDOW = 1
GAMES = [("QQGame.exe", "C:\\Program Files\\Tencent\\QQGame\\QQGame.exe"), ("gnome-mines", "/usr/games/gnome-mines"),
         ("sol.exe", "C:\\Windows\\System32\\sol.exe")]
OFFICE = [("WINWORD.EXE", "C:\\Program Files\\Microsoft Office\\WINWORD.EXE"), ("wps", "/opt/kingsoft/wps-office/wps"),
          ("chrome.exe", "C:\\Program Files\\Google\\Chrome\\chrome.exe"), ("soffice.bin", "/usr/lib/soffice.bin"),
          ("ZWFW.exe", "D:\\政务服务\\ZWFW.exe")]


# ------------------------------------------------------------------------------ the controller


@dataclass
class Controller:
    process: subprocess.Popen[str]
    data_dir: Path
    port: int
    enroll_port: int
    log: list[str] = field(default_factory=list)

    @property
    def ca(self) -> bytes:
        return (self.data_dir / "pki" / "ca.pem").read_bytes()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_controller(data_dir: Path, db: str | None, workers: int, env: dict[str, str] | None = None) -> Controller:
    cmd = [str(BIN / "counterguard"), "--data-dir", str(data_dir)] + (["--db", db] if db else [])
    cmd += ["serve", "--listen", "127.0.0.1:0", "--enroll-listen", "127.0.0.1:0"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})})
    log: list[str] = []
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        log.append(line)
        if "{" in line and "enroll_port" in line:
            info = json.loads(line[line.index("{"):])
            controller = Controller(process, data_dir, int(info["port"]), int(info["enroll_port"]), log)
            threading.Thread(target=_drain, args=(process, log), daemon=True).start()
            return controller
    process.kill()
    raise SystemExit("the controller did not start:\n" + "".join(log))


def database_url(data_dir: Path, db: str | None) -> str:
    """The URL of the database the controller started on ``data_dir`` uses (its SQLite file unless ``db``)."""
    return db or f"sqlite:///{(data_dir / 'counterguard.db').resolve()}"


def _drain(process: subprocess.Popen[str], log: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        log.append(line)
        del log[:-200]


def make_tokens(data_dir: Path, db: str | None, windows: int, per_window: int) -> list[tuple[str, str]]:
    """One token per window (``W0001`` …), each good for ``per_window`` enrolments."""
    tokens = []
    base = [str(BIN / "counterguard"), "--data-dir", str(data_dir)] + (["--db", db] if db else [])
    for number in range(1, windows + 1):
        window = f"W{number:04d}"
        out = subprocess.run(base + ["token", "create", "--window", window, "--unit", f"unit{number % 7}",
                                     "--uses", str(per_window), "--expires", "1d", "--json"],
                             check=True, capture_output=True, text=True).stdout
        tokens.append((window, json.loads(out)["token"]))
    return tokens


# ------------------------------------------------------------------------------ enrolment


@dataclass(frozen=True)
class Identity:
    agent_id: str
    window: str
    key_pem: bytes
    cert_pem: bytes


async def enrol_all(enroll_address: str, ca: bytes, tokens: list[tuple[str, str]], per_window: int) -> list[Identity]:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    limit = asyncio.Semaphore(32)
    async with grpc.aio.secure_channel(enroll_address, credentials) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)

        async def one(window: str, token: str, n: int) -> Identity:
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sim-{window}-{n}")])
            csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
            request = agent_pb2.EnrollRequest(token=token, csr_pem=csr.public_bytes(serialization.Encoding.PEM),
                                              hostname=f"sim-{window}-{n}", machine_id=os.urandom(16).hex(),
                                              os_family="windows" if n % 3 else "linux", agent_version="sim")
            async with limit:
                response = await stub.Enroll(request, timeout=60)
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            return Identity(response.agent_id, window, key_pem, response.certificate_pem)

        return list(await asyncio.gather(*(one(w, t, n) for w, t in tokens for n in range(per_window))))


# ------------------------------------------------------------------------------ the fact mix


def _ts(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class Workstation:
    """One simulated counter PC: its sequence numbers, its running programs, its person."""

    def __init__(self, identity: Identity, rng: random.Random, after_hours_share: float,
                 now: dt.datetime | None = None) -> None:
        self.identity = identity
        self.rng = rng
        self.sequence = 0
        self.user = f"staff{rng.randrange(10_000):04d}"
        self.running: dict[int, tuple[str, str, dt.datetime]] = {}
        self.next_pid = 1000
        self.active = True
        self.left_on = rng.random() < after_hours_share
        self.boot = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=rng.randrange(5, 120))

    def _fact(self, now: dt.datetime, **kind: object) -> facts_pb2.Fact:
        self.sequence += 1
        return facts_pb2.Fact(sequence=self.sequence, observed_at=_ts(now), **kind)  # type: ignore[arg-type]

    def first_report(self, now: dt.datetime) -> list[facts_pb2.Fact]:
        n = self.identity.agent_id
        inventory = facts_pb2.InventorySnapshot(
            hostname=f"sim-{n}",
            system=facts_pb2.SystemInfo(vendor="LENOVO", model="ThinkCentre M720t", serial=f"PC{n[-10:]}"),
            cpu=facts_pb2.CpuInfo(model="Intel(R) Core(TM) i5-9500 CPU @ 3.00GHz", vendor="GenuineIntel",
                                  architecture="x86_64", physical_cores=6, logical_cores=6, max_mhz=4400),
            memory=facts_pb2.MemoryInfo(total_bytes=8 << 30),
            disks=[facts_pb2.Disk(name="sda", vendor="ATA", model="WDC WD10EZEX", serial=f"WD{n[-8:]}",
                                  size_bytes=1 << 40, rotational=True)],
            network_interfaces=[facts_pb2.NetworkInterface(name="eth0", mac="52:54:00:%02x:%02x:%02x" % (
                self.rng.randrange(256), self.rng.randrange(256), self.rng.randrange(256)), up=True, speed_mbps=1000)],
            default_gateway="10.20.0.1",
            os=facts_pb2.OsInfo(family="windows", name="Windows 10 Pro", version="22H2", machine_id=n),
            usb_devices=[facts_pb2.UsbDevice(bus_id="1-1", vendor_id="046d", product_id="c31c", vendor="Logitech",
                                             product="Keyboard", device_class=facts_pb2.DEVICE_CLASS_HID)],
            printers=[facts_pb2.Printer(name="HP LaserJet", uri="usb://HP/LaserJet", is_default=True)],
        )
        software = facts_pb2.SoftwareSnapshot(items=[
            facts_pb2.SoftwareItem(source=facts_pb2.SOFTWARE_SOURCE_WINDOWS_REGISTRY, name=f"pkg{i}",
                                   display_name=f"Program {i}", version=f"1.{i}", publisher="Vendor")
            for i in range(250)])
        processes = facts_pb2.ProcessSnapshot(processes=[
            facts_pb2.ProcessInfo(pid=4 + i, ppid=1, name=f"svc{i}.exe", username="SYSTEM",
                                  started_at=_ts(self.boot)) for i in range(120)])
        session = facts_pb2.UserSession(username=self.user, terminal="console", started_at=_ts(self.boot))
        return [
            self._fact(now, power=facts_pb2.PowerEvent(kind=facts_pb2.PowerEvent.KIND_BOOT, boot_time=_ts(self.boot))),
            self._fact(now, inventory=inventory),
            self._fact(now, software_snapshot=software),
            self._fact(now, process_snapshot=processes),
            self._fact(now, session_snapshot=facts_pb2.SessionSnapshot(sessions=[session])),
        ]

    def next_report(self, now: dt.datetime, game_share: float) -> list[facts_pb2.Fact]:
        rng = self.rng
        facts = [self._fact(now, power=facts_pb2.PowerEvent(kind=facts_pb2.PowerEvent.KIND_HEARTBEAT,
                                                            boot_time=_ts(self.boot)))]
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            facts.append(self._start(now, *rng.choice(OFFICE)))
        if rng.random() < game_share:
            facts.append(self._start(now, *rng.choice(GAMES)))
        for pid in [p for p in self.running if rng.random() < 0.3]:
            name, _, started = self.running.pop(pid)
            facts.append(self._fact(now, process_stopped=facts_pb2.ProcessStopped(pid=pid, name=name,
                                                                                   started_at=_ts(started))))
        if rng.random() < 0.2:
            self.active = not self.active
            state = facts_pb2.InputActivity.STATE_ACTIVE if self.active else facts_pb2.InputActivity.STATE_IDLE
            facts.append(self._fact(now, activity=facts_pb2.InputActivity(
                state=state, username=self.user, session="1", idle_seconds=0 if self.active else 300,
                source="windows")))
        if rng.random() < 0.3:
            facts.append(self._fact(now, foreground=facts_pb2.ForegroundWindow(executable=rng.choice(OFFICE)[0],
                                                                              username=self.user)))
        if rng.random() < 0.01:
            item = facts_pb2.SoftwareItem(source=facts_pb2.SOFTWARE_SOURCE_WINDOWS_REGISTRY,
                                          name=f"new{self.sequence}", display_name="新软件", version="1.0")
            facts.append(self._fact(now, software_delta=facts_pb2.SoftwareDelta(added=[item])))
        return facts

    def _start(self, now: dt.datetime, name: str, executable: str) -> facts_pb2.Fact:
        self.next_pid += 4
        self.running[self.next_pid] = (name, executable, now)
        info = facts_pb2.ProcessInfo(pid=self.next_pid, ppid=1, name=name, executable=executable,
                                     username=self.user, started_at=_ts(now))
        return self._fact(now, process_started=facts_pb2.ProcessStarted(process=info))


# ------------------------------------------------------------------------------ client processes


@dataclass
class ClientResult:
    latencies_ms: list[float] = field(default_factory=list)
    facts: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_reports: int = 0
    shed: int = 0  # refused early for overload (RESOURCE_EXHAUSTED + retry-after-ms) and sent again


async def _run_clients(address: str, ca: bytes, identities: list[Identity], interval: float, duration: float,
                       warmup: float, game_share: float, after_hours: float, seed: int, shift: float = 0.0,
                       acked: Synchronized[int] | None = None) -> ClientResult:
    """Drive ``identities`` until the warm-up and the measured period are over.

    ``acked``, if given, counts every acknowledged Report (warm-up included) across all client
    processes, so the soak lines can show acks while the run goes on.
    """
    result = ClientResult()
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop_at = start + warmup + duration

    async def workstation(identity: Identity, offset: float) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=identity.key_pem,
                                                   certificate_chain=identity.cert_pem)
        station = Workstation(identity, random.Random(rng.random()), after_hours,
                              dt.datetime.now(dt.UTC) + dt.timedelta(seconds=shift))
        async with grpc.aio.secure_channel(address, credentials) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            next_at = start + offset
            first = True
            while next_at < stop_at and loop.time() < stop_at:
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=shift)
                facts = station.first_report(now) if first else station.next_report(now, game_share)
                # Like a real agent that keeps up: nothing waits behind the batch.
                request = agent_pb2.ReportRequest(facts=facts, agent_version="sim", outbox_depth=0)
                while True:
                    began = loop.time()
                    try:
                        await stub.Report(request, timeout=30)
                    except grpc.aio.AioRpcError as exc:
                        wait = throttle_seconds(exc.code(), tuple(exc.trailing_metadata() or ()))
                        if wait is not None and loop.time() + wait < stop_at:
                            # Refused early by an overloaded controller: like an agent, the facts again after the wait.
                            if began >= start + warmup:
                                result.shed += 1
                            await asyncio.sleep(wait)
                            # What the workstation observed meanwhile joins the same batch, as in its outbox.
                            while next_at + interval <= loop.time() and next_at + interval < stop_at:
                                next_at += interval
                                now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=shift)
                                request.facts.extend(station.next_report(now, game_share))
                            continue
                        if began >= start + warmup:
                            result.errors[exc.code().name] = result.errors.get(exc.code().name, 0) + 1
                        station.sequence -= len(request.facts)  # an agent keeps them in its outbox and sends them again
                        failed = True
                    else:
                        failed = False
                    break
                if failed:
                    next_at += interval
                    continue
                if acked is not None:
                    with acked.get_lock():
                        acked.value += 1
                if first:
                    result.first_reports += 1
                elif began >= start + warmup:
                    result.latencies_ms.append((loop.time() - began) * 1000)
                    result.facts += len(request.facts)
                first = False
                next_at += interval

    # Workstations come up spread over one interval (the first report of each during the warm-up).
    await asyncio.gather(*(workstation(identity, rng.random() * min(interval, warmup or interval))
                           for identity in identities))
    return result


def _client_main(address: str, ca: bytes, identities: list[Identity], options: dict[str, float],
                 queue: mp.Queue, acked: Synchronized[int] | None = None) -> None:  # type: ignore[type-arg]
    result = asyncio.run(_run_clients(address, ca, identities, **options, acked=acked))  # type: ignore[arg-type]
    queue.put(result)


# ------------------------------------------------------------------------------ measuring the controller


class ControllerWatch(threading.Thread):
    """Samples CPU and RSS of the controller (and its worker processes) once a second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.samples: list[tuple[float, float, int]] = []  # (time, cpu seconds, rss bytes)
        self._halt = threading.Event()

    def _read(self) -> tuple[float, int]:
        cpu, rss = 0.0, 0
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                times = process.cpu_times()
                cpu += times.user + times.system
                rss += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return cpu, rss

    def run(self) -> None:
        while not self._halt.wait(1.0):
            cpu, rss = self._read()
            self.samples.append((time.monotonic(), cpu, rss))

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def between(self, start: float, end: float) -> tuple[float, list[int]]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return 0.0, [s[2] for s in inside]
        cpu = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) * 100
        return cpu, [s[2] for s in inside]


def rss_trend(samples: list[tuple[float, float, int]], start: float, end: float) -> dict[str, float | None]:
    """The RSS trend between ``start`` and ``end`` (monotonic seconds) from ControllerWatch samples.

    The averages of the first and of the last minute (the same samples when the period is shorter
    than a minute) and the slope of the least-squares line through all samples, in MiB per minute:
    a steady controller stays near 0, a leak shows as a steady positive slope over a long soak.
    """
    inside = [(t, rss / 2**20) for t, _, rss in samples if start <= t <= end]
    if not inside:
        return {"rss_first_min_mib": None, "rss_last_min_mib": None, "rss_slope_mib_per_min": None}
    first = [mib for t, mib in inside if t <= inside[0][0] + 60]
    last = [mib for t, mib in inside if t >= inside[-1][0] - 60]
    slope = None
    if len(inside) >= 2:
        mean_t = sum(t for t, _ in inside) / len(inside)
        mean_m = sum(m for _, m in inside) / len(inside)
        spread = sum((t - mean_t) ** 2 for t, _ in inside)
        slope = sum((t - mean_t) * (m - mean_m) for t, m in inside) / spread * 60 if spread else None
    return {"rss_first_min_mib": round(sum(first) / len(first), 1), "rss_last_min_mib": round(sum(last) / len(last), 1),
            "rss_slope_mib_per_min": None if slope is None else round(slope, 2)}


# ------------------------------------------------------------------------------ the evaluation backlog


def backlog_engine(url: str) -> Engine:
    """A small engine that only reads the controller's database beside it.

    SQLite is opened read-only (``mode=ro``): in WAL mode it reads a consistent snapshot while the
    controller writes, and the busy timeout rides out a checkpoint. PostgreSQL gets one connection.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return create_engine(f"sqlite:///file:{parsed.database}?mode=ro&uri=true",
                             connect_args={"check_same_thread": False, "timeout": 30})
    return create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)


# Seconds the simulated time runs ahead of the real one (``--at``): the controller's clock and the facts'.
SHIFT = 0.0


def read_backlog(engine: Engine) -> tuple[int, float | None]:
    """The agents with facts the rules have not judged yet, and the age in seconds of the oldest of them.

    The age is now − the earliest ``last_seen_at`` among those agents (None when there are none).
    """
    from controller.models import AGENT  # here, not at the top: the client processes never need it

    query = select(func.count(), func.min(AGENT.c.last_seen_at)).where(
        AGENT.c.last_sequence > AGENT.c.evaluated_sequence)
    with engine.connect() as conn:
        count, oldest = conn.execute(query).one()
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=SHIFT)
    age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
    return int(count), age


def catch_up(engine: Engine, since: float, timeout: float, poll: float = 0.5) -> tuple[int, float | None]:
    """Wait until the rules have judged every stored fact.

    Returns the backlog found at the first look (what the load left behind) and the seconds from
    ``since`` (monotonic; the end of the load) until the backlog was empty, or None after ``timeout``.
    """
    left, _ = read_backlog(engine)
    count = left
    while count:
        if time.monotonic() - since >= timeout:
            return left, None
        time.sleep(poll)
        count, _ = read_backlog(engine)
    return left, round(time.monotonic() - since, 1)


class BacklogWatch(threading.Thread):
    """Samples the evaluation backlog every ``every`` seconds (a short read of the ``agent`` table)."""

    def __init__(self, engine: Engine, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.every = every
        self.samples: list[tuple[float, int, float | None]] = []  # (time, agents behind, oldest age s)
        self.failed_reads = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            try:
                count, age = read_backlog(self.engine)
            except OperationalError:  # a database busy beyond the timeout: this sample is lost, not the run
                self.failed_reads += 1
                continue
            self.samples.append((time.monotonic(), count, age))

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def between(self, start: float, end: float) -> tuple[int, float]:
        """The largest backlog and the largest age of its oldest agent sampled between ``start`` and ``end``."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        return max((s[1] for s in inside), default=0), max((s[2] or 0.0 for s in inside), default=0.0)


class SoakReport(threading.Thread):
    """Prints one line every ``every`` seconds while measuring: acks, controller RSS and CPU, backlog."""

    def __init__(self, every: float, measure_from: float, watch: ControllerWatch, backlog: BacklogWatch,
                 acked: Synchronized[int], as_json: bool) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.measure_from = measure_from
        self.watch = watch
        self.backlog = backlog
        self.acked = acked
        self.as_json = as_json
        self._halt = threading.Event()

    def run(self) -> None:
        if self._halt.wait(max(0.0, self.measure_from - time.monotonic())):
            return
        began, acks_before = time.monotonic(), self.acked.value
        period_from, acks_from = began, acks_before
        while not self._halt.wait(self.every):
            now, acks = time.monotonic(), self.acked.value
            cpu, rss = self.watch.between(period_from, now)
            _, count, age = self.backlog.samples[-1] if self.backlog.samples else (now, None, None)
            line = {"elapsed_s": round(now - began), "acks": acks - acks_before,
                    "acks_per_s": round((acks - acks_from) / (now - period_from), 1),
                    "controller_rss_mib": round(rss[-1] / 2**20) if rss else None,
                    "controller_cpu_percent": round(cpu, 1), "backlog": count,
                    "backlog_age_s": None if age is None else round(age, 1)}
            print(json.dumps({"soak": line}) if self.as_json else
                  f"  soak {line['elapsed_s']:>5} s: {line['acks']} acks ({line['acks_per_s']}/s), controller RSS "
                  f"{line['controller_rss_mib']} MiB, CPU {line['controller_cpu_percent']} %, backlog "
                  f"{line['backlog']} agents" + (f" (oldest {age:.1f} s)" if age is not None else ""), flush=True)
            period_from, acks_from = now, acks

    def stop(self) -> None:
        self._halt.set()
        self.join()


# ------------------------------------------------------------------------------ one run


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(args: argparse.Namespace, agents: int) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="cg-sim-"))
    controller = None
    engine = None
    try:
        global SHIFT
        db = args.db
        env = {}
        if args.at:  # the controller's clock starts there (its test hook) and the facts carry that time
            at = dt.datetime.fromisoformat(args.at)
            SHIFT = (at - dt.datetime.now(dt.UTC)).total_seconds()
            env = {"COUNTERGUARD_FAKE_NOW": at.isoformat()}
        controller = start_controller(folder / "controller", db, args.workers, env)
        windows = max(1, min(agents, args.windows))
        per_window = -(-agents // windows)
        tokens = make_tokens(folder / "controller", db, windows, per_window)
        began = time.monotonic()
        identities = asyncio.run(enrol_all(f"127.0.0.1:{controller.enroll_port}", controller.ca, tokens,
                                           per_window))[:agents]
        enrol_s = time.monotonic() - began
        engine = backlog_engine(database_url(folder / "controller", db))
        read_backlog(engine)  # fails here, plainly, if the controller's schema has no evaluated_sequence
        watch = ControllerWatch(controller.process.pid)
        watch.start()
        backlog = BacklogWatch(engine)
        backlog.start()
        processes = max(1, min(args.clients, agents))
        context = mp.get_context("spawn")
        queue: mp.Queue = context.Queue()  # type: ignore[type-arg]
        acked = context.Value("q", 0)
        options = {"interval": args.interval, "duration": args.duration, "warmup": args.warmup,
                   "game_share": args.game_share, "after_hours": args.after_hours, "shift": SHIFT}
        workers = [context.Process(target=_client_main, args=(
            f"127.0.0.1:{controller.port}", controller.ca, identities[i::processes], {**options, "seed": i}, queue,
            acked)) for i in range(processes)]
        for worker in workers:
            worker.start()
        measure_from = time.monotonic() + args.warmup
        soak = None
        if args.sample_every > 0:
            soak = SoakReport(args.sample_every, measure_from, watch, backlog, acked, args.json)
            soak.start()
        results = [queue.get() for _ in workers]
        measure_to = time.monotonic()
        if soak is not None:
            soak.stop()
        backlog.stop()
        for worker in workers:
            worker.join()
        watch.stop()
        backlog_at_end, caught_up_s = catch_up(engine, measure_to, args.catch_up_timeout)
        backlog_max, backlog_age_max = backlog.between(measure_from, measure_to)
        latencies = [v for r in results for v in r.latencies_ms]
        errors: dict[str, int] = {}
        for r in results:
            for code, count in r.errors.items():
                errors[code] = errors.get(code, 0) + count
        cpu, rss = watch.between(measure_from, measure_to)
        seconds = max(1e-9, measure_to - measure_from)
        return {
            "agents": agents, "interval_s": args.interval, "measured_s": round(seconds, 1),
            "enrol_s": round(enrol_s, 1), "first_reports": sum(r.first_reports for r in results),
            "reports": len(latencies), "reports_per_s": round(len(latencies) / seconds, 1),
            "facts_per_s": round(sum(r.facts for r in results) / seconds, 1),
            "p50_ms": round(percentile(latencies, 0.50), 1), "p95_ms": round(percentile(latencies, 0.95), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1), "errors": errors,
            "shed": sum(r.shed for r in results),
            "controller_cpu_percent": round(cpu, 1),
            "controller_rss_mib": [round(v / 2**20) for v in rss[:: max(1, len(rss) // 10)]],
            "controller_rss_mib_max": round(max(rss, default=0) / 2**20),
            **rss_trend(watch.samples, measure_from, measure_to),
            "backlog_max": backlog_max, "backlog_age_max_s": round(backlog_age_max, 1),
            "backlog_at_end": backlog_at_end, "caught_up_s": caught_up_s,
            "catch_up_timeout_s": args.catch_up_timeout, "backlog_failed_reads": backlog.failed_reads,
        }
    finally:
        if engine is not None:
            engine.dispose()
        if controller is not None:
            controller.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200, help="simulated workstations")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between reports of one workstation")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds measured after the warm-up")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring (default: 1 interval)")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--windows", type=int, default=100, help="windows (one enrolment token each)")
    parser.add_argument("--workers", type=int, default=1, help="controller worker processes (serve --workers)")
    parser.add_argument("--db", default=None, help="database URL for the controller (default: its SQLite file)")
    parser.add_argument("--game-share", type=float, default=0.002, help="share of reports with a game started")
    parser.add_argument("--after-hours", type=float, default=0.1, help="share of machines left on overnight")
    parser.add_argument("--at", default=None,
                        help="simulate from this ISO time with an offset, in the past (e.g. a working morning); "
                             "default: now")
    parser.add_argument("--find-max", action="store_true", help="grow the fleet until p99 or errors break")
    parser.add_argument("--p99-ms", type=float, default=200.0, help="the p99 limit for --find-max")
    parser.add_argument("--sample-every", type=float, default=0.0,
                        help="soak: print a line every SECONDS while measuring and the RSS trend (0: off)")
    parser.add_argument("--catch-up-timeout", type=float, default=300.0,
                        help="seconds to wait after the load for the rules to judge every fact")
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = args.interval
    sizes = [args.agents] if not args.find_max else [args.agents * 2**i for i in range(12)]
    held = None
    for size in sizes:
        figures = run(args, size)
        print(json.dumps(figures, ensure_ascii=False) if args.json else _line(figures), flush=True)
        if args.sample_every > 0 and not args.json:
            print(_trend(figures), flush=True)
        ok = (not figures["errors"] and not figures["shed"]
              and float(figures["p99_ms"]) < args.p99_ms  # type: ignore[arg-type]
              and figures["caught_up_s"] is not None)
        if not args.find_max:
            return 0 if not figures["errors"] and not figures["shed"] else 1
        if not ok:
            break
        held = figures
    print(f"largest fleet that held p99 < {args.p99_ms:.0f} ms with no errors or refusals and the rules caught up: "
          f"{held['agents'] if held else 'none'} workstations at one report per {args.interval:.0f} s")
    return 0


def _line(f: dict[str, object]) -> str:
    return (f"{f['agents']:>6} workstations, 1 report/{f['interval_s']:.0f} s: {f['reports_per_s']} reports/s, "
            f"{f['facts_per_s']} facts/s acked; latency p50 {f['p50_ms']} ms, p95 {f['p95_ms']} ms, "
            f"p99 {f['p99_ms']} ms; errors {f['errors'] or 'none'}; "
            f"refused for overload and sent again after the wait: {f['shed'] or 'none'}; "
            f"controller CPU {f['controller_cpu_percent']} % "
            f"of one core, RSS max {f['controller_rss_mib_max']} MiB (samples {f['controller_rss_mib']}); "
            f"enrolment of all took {f['enrol_s']} s; evaluation backlog max {f['backlog_max']} agents "
            f"(oldest {f['backlog_age_max_s']} s), {f['backlog_at_end']} at the end of the load, "
            + (f"caught up {f['caught_up_s']} s after it" if f["caught_up_s"] is not None else
               f"NOT caught up within {f['catch_up_timeout_s']:.0f} s"))


def _trend(f: dict[str, object]) -> str:
    return (f"RSS trend after the warm-up: first minute {f['rss_first_min_mib']} MiB, last minute "
            f"{f['rss_last_min_mib']} MiB, slope {f['rss_slope_mib_per_min']} MiB/min (least squares)")


if __name__ == "__main__":
    raise SystemExit(main())
