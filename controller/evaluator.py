"""The rules service in a process of its own, at a lower CPU priority than the process that answers.

Judging facts costs far more CPU than storing them. In the answering process, the evaluation threads
share the interpreter's lock with the gRPC threads, and the kernel cannot favour the answers: a
thread's priority means nothing while another thread of the process holds that lock. In a child
process of its own, niced (``rules_evaluation_niceness``), the evaluation gets what CPU the answering
processes leave, and acknowledgements stay fast when the host is saturated while the rules fall behind
and catch up (their progress is in the database: ``agent.evaluated_sequence``).

:class:`EvaluatorProcess` is what :class:`controller.evaluation.EvaluationQueue` and the sweeper call
(``catch_up``, ``backlog``, ``sweep``, ``close``): each call goes to the child over a pipe and returns
what :class:`controller.rules.service.RulesService` returned there, or raises :class:`EvaluatorError`.
Calls run in threads in the child, as many at once as the parent makes. A child that dies fails the
calls it was running (their facts stay unevaluated; the queue's scan takes them up again) and is
started again by the next call, at most once per ``RESTART_DELAY_SECONDS``.

On SQLite the evaluation stays in the answering process: a niced process holding the one write lock
would hold up every report (see ``controller.config.Settings.rules_evaluation_process``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from controller.clock import Clock, clock_from, utc_now
from controller.errors import CounterGuardError

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 2.0
STOP_TIMEOUT_SECONDS = 35.0  # a sweep in progress may take up to 30 s
_CALLS = frozenset({"catch_up", "backlog", "sweep"})


class EvaluatorError(CounterGuardError):
    """A call to the rules process failed: the process stopped, or the rules service raised there."""


@dataclass(frozen=True)
class EvaluatorStart:
    """What the child is given: where the database is, its clock's start, its priority and log set-up."""

    database_url: str
    clock_start: dt.datetime | None  # a clock not the real one: its reading at the monotonic time clock_began
    clock_began: float
    niceness: int
    threads: int
    parent_pid: int
    log_format: str
    log_level: int


class EvaluatorProcess:
    """The parent's side: forwards rules calls to the child and hands back their results."""

    def __init__(self, database_url: str, *, clock: Clock = utc_now, niceness: int = 10, threads: int = 4,
                 log_format: str = "text") -> None:
        self._database_url = database_url
        self._clock = clock
        self._fake_clock = clock is not utc_now
        self._niceness = niceness
        self._threads = threads
        self._log_format = log_format
        self._lock = threading.Lock()  # guards the process, the pipe's sending end and the calls in flight
        self._process: BaseProcess | None = None
        self._pipe: Connection | None = None
        self._calls: dict[int, tuple[Connection, futures.Future[Any]]] = {}  # by call number: pipe, result
        self._numbers = itertools.count(1)
        self._started_at = -RESTART_DELAY_SECONDS
        self._closed = False

    # ------------------------------------------------------------------ the rules service's calls

    def catch_up(self, agent_id: str) -> Any:
        return self._call("catch_up", agent_id)

    def backlog(self, settled_before: dt.datetime | None = None) -> list[str]:
        return list(self._call("backlog", settled_before=settled_before))

    def sweep(self, now: dt.datetime | None = None) -> Any:
        return self._call("sweep", now)

    @property
    def pid(self) -> int | None:
        """The child's process id, while one runs."""
        with self._lock:
            return self._process.pid if self._process is not None and self._process.is_alive() else None

    def start(self) -> None:
        """Start the child now (calls also start it when it is not running)."""
        with self._lock:
            self._ensure_running()

    def close(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Ask the child to finish its calls, free its sweep groups and exit; kill it after ``timeout`` s."""
        with self._lock:
            self._closed = True
            process, pipe = self._process, self._pipe
            if process is None or pipe is None:
                return
            try:
                pipe.send(("stop",))
            except OSError:
                pass
        process.join(timeout)
        if process.is_alive():
            log.error("the rules process (pid %s) did not stop within %.0f s; killing it", process.pid, timeout)
            process.kill()
            process.join(5)

    # ------------------------------------------------------------------ the pipe

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result: futures.Future[Any] = futures.Future()
        with self._lock:
            if self._closed:
                raise EvaluatorError("the rules process is closed")
            pipe = self._ensure_running()
            number = next(self._numbers)
            self._calls[number] = (pipe, result)
            try:
                pipe.send((name, number, args, kwargs))
            except (OSError, ValueError) as exc:
                del self._calls[number]
                raise EvaluatorError(f"the rules process cannot be reached: {exc}") from None
        return result.result()

    def _ensure_running(self) -> Connection:
        """The pipe to a running child, starting one if needed (the lock is held)."""
        if self._process is not None and self._process.is_alive() and self._pipe is not None:
            return self._pipe
        wait = self._started_at + RESTART_DELAY_SECONDS - time.monotonic()
        if wait > 0:
            raise EvaluatorError(f"the rules process stopped; it is started again in {wait:.1f} s")
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe(duplex=True)
        start = EvaluatorStart(self._database_url, self._clock() if self._fake_clock else None, time.monotonic(),
                               self._niceness,
                               self._threads, os.getpid(), self._log_format, logging.getLogger().level)
        process = context.Process(target=evaluator_main, args=(start, theirs), name="counterguard-rules",
                                  daemon=True)
        process.start()
        theirs.close()
        if self._process is not None:
            log.warning("the rules process (pid %s) stopped with code %s; started it again as pid %s",
                        self._process.pid, self._process.exitcode, process.pid)
        self._process, self._pipe, self._started_at = process, ours, time.monotonic()
        threading.Thread(target=self._read, args=(process, ours), name="rules-process-answers", daemon=True).start()
        return ours

    def _read(self, process: BaseProcess, pipe: Connection) -> None:
        """Hand each answer of ``process`` to its caller; when the process is gone, fail the calls left."""
        while True:
            try:
                number, ok, value = pipe.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                _, waiting = self._calls.pop(number, (None, None))
            if waiting is not None and ok:
                waiting.set_result(value)
            elif waiting is not None:
                waiting.set_exception(EvaluatorError(value))
        process.join(1.0)
        with self._lock:
            if self._pipe is pipe:
                self._pipe = None
            left = [number for number, (sent_on, _) in self._calls.items() if sent_on is pipe]
            lost = [self._calls.pop(number)[1] for number in left]
        pipe.close()
        for waiting in lost:
            waiting.set_exception(EvaluatorError(
                f"the rules process stopped (exit code {process.exitcode}) before it answered"))


# ---------------------------------------------------------------------------------------------- in the child


def evaluator_main(start: EvaluatorStart, pipe: Connection) -> None:
    """The child's whole life: :func:`serve_calls`, then out at once.

    The child leaves with ``os._exit`` once its work is done and its log flushed: the interpreter's own
    teardown (every module, every object of SQLAlchemy and the rules) costs it a few tenths of a second of
    CPU, which a niced process on a saturated host gets only after seconds, and then the controller's
    stop would wait for nothing (over 30 s measured on a busy host)."""
    code = 1
    try:
        serve_calls(start, pipe)
        code = 0
    except BaseException:  # noqa: BLE001 - logged, and the exit code says it
        log.exception("the rules process failed")
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def serve_calls(start: EvaluatorStart, pipe: Connection) -> None:
    """Build the rules service, answer calls in threads until told to stop or the parent is gone."""
    from controller.db import make_engine
    from controller.logs import configure_logging
    from controller.policy.store import PolicyStore
    from controller.rules.service import RulesService

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(start.log_format, level=start.log_level)
    lower_priority(start.niceness)
    clock = clock_from(start.clock_start, start.clock_began) if start.clock_start is not None else utc_now
    engine = make_engine(start.database_url)
    rules = RulesService(engine, PolicyStore(engine, clock), clock)
    sending = threading.Lock()

    def answer(number: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            if name not in _CALLS:
                raise ValueError(f"no such call {name!r}")
            reply = (number, True, getattr(rules, name)(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - the caller gets the reason; the trace is logged here
            log.exception("the rules service's %s failed", name)
            reply = (number, False, f"{name} failed in the rules process: {exc}")
        with sending:
            try:
                pipe.send(reply)
            except (TypeError, AttributeError, pickle.PicklingError) as exc:  # pickled before a byte is written
                pipe.send((number, False, f"{name}'s result could not be sent back: {exc}"))

    pool = futures.ThreadPoolExecutor(max_workers=start.threads, thread_name_prefix="rules")
    try:
        while True:
            if not pipe.poll(1.0):
                if os.getppid() != start.parent_pid:
                    log.warning("the controller process %d is gone; the rules process stops", start.parent_pid)
                    break
                continue
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                break
            if message[0] == "stop":
                break
            name, number, args, kwargs = message
            pool.submit(answer, number, name, args, kwargs)
    finally:
        pool.shutdown(wait=True)
        rules.close()
        engine.dispose()


def lower_priority(niceness: int) -> None:
    """Make this process ``niceness`` steps nicer (Unix); a failure is logged and changes nothing."""
    if niceness <= 0 or not hasattr(os, "nice"):
        return
    try:
        os.nice(niceness)
    except OSError as exc:
        log.warning("could not lower the rules process's CPU priority: %s", exc)
