"""``counterguard serve --workers N``: N controller processes on the same two ports, supervised by one.

One Python process serves on one core, so a host runs several that share the ports with
SO_REUSEPORT (the kernel spreads new connections over them). The supervising process does the
once-only work first (schema migration, certificates, the default policy), then keeps the ports
reserved for the workers: it binds them itself without listening, which also resolves a port 0 to
one port all workers use, and keeps a controller started without ``--reuse-port`` out. It starts
the workers (``multiprocessing`` spawn: a fresh interpreter, no gRPC state inherited), prints the
one "listening" line when all of them listen, restarts a worker that dies (after a pause that grows
while it keeps dying), and on SIGTERM or SIGINT stops them all gracefully.

Only worker 0 runs the periodic sweep, so a host sweeps in one thread; across hosts the sweep's
groups are claimed in the database (:mod:`controller.rules.claims`).
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from controller.clock import Clock, clock_from, utc_now
from controller.config import Settings
from controller.errors import CounterGuardError
from controller.server import (
    SHUTDOWN_GRACE_SECONDS,
    StopRequest,
    listening_line,
    prepare,
    run_until,
    stop_on_signals,
)

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0
# A worker stopping gets the calls' grace, the sweep in progress (at most 30 s) and a margin, then is killed.
STOP_TIMEOUT_SECONDS = SHUTDOWN_GRACE_SECONDS + 40.0
RESTART_DELAY_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 30.0
# A worker that ran this long before dying is restarted after the shortest pause again.
STABLE_SECONDS = 60.0
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class WorkerStart:
    """What a worker process is given: its number, the settings with the reserved ports, its clock's start."""

    index: int
    settings: Settings
    clock_start: dt.datetime | None  # a clock not the real one: its reading at the monotonic time clock_began
    clock_began: float
    parent_pid: int
    log_level: int


def supervise(settings: Settings, clock: Clock = utc_now) -> int:
    """Prepare once, run ``settings.workers`` worker processes until SIGTERM or SIGINT; returns the exit code."""
    prepared = prepare(settings, clock)
    if prepared.engine.dialect.name == "sqlite":
        log.warning("%d workers share one SQLite file, which takes one write at a time; "
                    "PostgreSQL is the database for several controller processes", settings.workers)
    prepared.engine.dispose()
    with ExitStack() as reserved:
        listen, port = _reserve(settings.listen, reserved)
        enroll_listen, enroll_port = _reserve(settings.enroll_listen, reserved)
        if settings.metrics_port:
            _serve_metrics_of_all(settings, reserved)
        shared = replace(settings, listen=listen, enroll_listen=enroll_listen, reuse_port=True, metrics_port=0)
        with stop_on_signals() as stop:
            workers = [_Worker(index, shared, clock) for index in range(settings.workers)]
            try:
                _start_all(workers, stop)
                if stop.is_set():
                    return 0
                print(listening_line(settings, port, enroll_port, len(workers)), flush=True)
                _watch(workers, stop)
            finally:
                _stop_all(workers)
    print("counterguard controller stopped", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------- the ports


def _reserve(address: str, reserved: ExitStack) -> tuple[str, int]:
    """Bind ``address`` (without listening) with SO_REUSEPORT for as long as ``reserved`` is open;
    the address with the port it got (the given one, or a free one for port 0)."""
    host, _, port_text = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port_text), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (ValueError, socket.gaierror) as exc:
        raise CounterGuardError(f"cannot listen on {address}: not a valid host:port address ({exc})") from None
    port = int(port_text)
    for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
        holder = reserved.enter_context(socket.socket(family, kind, proto))
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            holder.bind((sockaddr[0], port, *sockaddr[2:]))
        except OSError as exc:
            raise CounterGuardError(f"cannot listen on {address}: {(exc.strerror or str(exc)).lower()}") from None
        port = holder.getsockname()[1]
    return f"{host}:{port}", port


def _serve_metrics_of_all(settings: Settings, resources: ExitStack) -> None:
    """Serve /metrics here, summed over the workers: they keep their metrics in files in one folder
    (``$PROMETHEUS_MULTIPROC_DIR``, a fresh one unless given), which they inherit when they start."""
    from controller.metrics import MULTIPROCESS_VARIABLE, serve_metrics

    if not os.environ.get(MULTIPROCESS_VARIABLE):
        os.environ[MULTIPROCESS_VARIABLE] = resources.enter_context(
            tempfile.TemporaryDirectory(prefix="counterguard-metrics-"))
    resources.callback(serve_metrics(settings.metrics_host, settings.metrics_port).stop)


# ---------------------------------------------------------------------------------------------- the workers


class _Worker:
    """One worker slot: its current process, and when to start it again after it died."""

    def __init__(self, index: int, settings: Settings, clock: Clock) -> None:
        self.index = index
        self._settings = settings
        self._clock = clock
        self._fake = clock is not utc_now
        self.process: BaseProcess | None = None
        self._messages: Connection | None = None
        self.started_at = 0.0
        self.failures = 0
        self.restart_at: float | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        start = WorkerStart(self.index, self._settings, self._clock() if self._fake else None, time.monotonic(),
                            os.getpid(), logging.getLogger().level)
        self.process = context.Process(target=worker_main, args=(start, sender),
                                       name=f"counterguard-worker-{self.index}")
        self.process.start()
        sender.close()
        self._messages, self.started_at, self.restart_at = receiver, time.monotonic(), None

    def message(self) -> tuple[str, str] | None:
        """What the worker said since the last call: ``("ready", "")`` or ``("error", sentence)``, else ``None``."""
        if self._messages is None or not self._messages.poll():
            return None
        try:
            kind, text = self._messages.recv()
        except (EOFError, OSError):
            self._messages.close()
            self._messages = None
            return None
        return str(kind), str(text)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def died(self) -> None:
        """Note that the worker exited unasked and when to start it again."""
        assert self.process is not None
        ran = time.monotonic() - self.started_at
        self.failures = 1 if ran >= STABLE_SECONDS else self.failures + 1
        delay = min(RESTART_DELAY_MAX_SECONDS, RESTART_DELAY_SECONDS * 2 ** (self.failures - 1))
        log.warning("worker %d (pid %s) exited with code %s after %.0f s; starting it again in %.0f s",
                    self.index, self.pid, self.process.exitcode, ran, delay)
        self.restart_at = time.monotonic() + delay
        self.process = None
        if self._messages is not None:
            self._messages.close()
            self._messages = None


def _start_all(workers: list[_Worker], stop: StopRequest) -> None:
    """Start every worker and wait until all listen; the first one's error fails the start."""
    for worker in workers:
        worker.start()
    waiting = set(range(len(workers)))
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while waiting and not stop.is_set():
        for index in sorted(waiting):
            message = workers[index].message()
            if message is not None and message[0] == "error":
                raise CounterGuardError(message[1])
            if message is not None:
                waiting.discard(index)
            elif not workers[index].alive():
                code = workers[index].process.exitcode  # type: ignore[union-attr]
                raise CounterGuardError(f"worker {index} exited with code {code} before it listened")
        if time.monotonic() > deadline:
            raise CounterGuardError(f"{len(waiting)} worker processes did not start listening within "
                                    f"{START_TIMEOUT_SECONDS:.0f} s")
        stop.wait(_POLL_SECONDS)


def _watch(workers: list[_Worker], stop: StopRequest) -> None:
    """Until a stop is requested: start again the workers that die, and log what restarted workers say."""
    while not stop.wait(_POLL_SECONDS):
        for worker in workers:
            message = worker.message()
            if message is not None and message[0] == "ready":
                log.info("worker %d (pid %s) listening again", worker.index, worker.pid)
            elif message is not None:
                log.error("worker %d could not start: %s", worker.index, message[1])
            if worker.process is not None and not worker.alive():
                worker.died()
            if worker.process is None and worker.restart_at is not None and time.monotonic() >= worker.restart_at:
                worker.start()
    log.info("%s; stopping %d workers", stop.reason, len(workers))


def _stop_all(workers: list[_Worker]) -> None:
    """SIGTERM every live worker, wait for them to finish, kill any still running after the timeout."""
    running = [w.process for w in workers if w.process is not None and w.process.is_alive()]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for process in running:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.error("worker pid %s did not stop within %.0f s; killing it", process.pid, STOP_TIMEOUT_SECONDS)
            process.kill()
            process.join(5)


# ---------------------------------------------------------------------------------------------- in a worker


def worker_main(start: WorkerStart, messages: Connection) -> None:
    """A worker process: serve on the reserved ports until SIGTERM or until the supervisor is gone."""
    from controller.logs import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor decides
    configure_logging(start.settings.log_format, level=start.log_level)
    clock = clock_from(start.clock_start, start.clock_began) if start.clock_start is not None else utc_now
    try:
        prepared = prepare(start.settings, clock)
    except CounterGuardError as exc:
        messages.send(("error", str(exc)))
        raise SystemExit(1) from None
    try:
        with stop_on_signals(signal.SIGTERM) as stop, _orphan_watch(start.parent_pid, stop):
            run_until(start.settings, prepared, clock, stop, lambda _running: messages.send(("ready", "")),
                      sweep=start.index == 0)
    except CounterGuardError as exc:
        messages.send(("error", str(exc)))
        raise SystemExit(1) from None
    finally:
        prepared.engine.dispose()


@contextmanager
def _orphan_watch(parent_pid: int, stop: StopRequest) -> Iterator[None]:
    """Stop this worker if its supervisor disappears (killed with no chance to stop it)."""
    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:
                stop.request("the supervising process is gone")

    watcher = threading.Thread(target=watch, name="supervisor-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join(2.0)
