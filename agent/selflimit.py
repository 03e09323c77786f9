"""The agent's watch over itself, like osquery's watchdog: CPU and memory limits, shedding, restart, low priority.

Every check (10 s by default) reads the agent's own CPU time and resident memory. CPU is judged as
% of one core over the last ``cpu_window`` seconds (60 by default; not before a full window of readings,
so the start-up burst of a full inventory is not held against it), memory as the RSS now. The defaults,
5 % and 120 MiB, are well under osquery's 10 % and 200 MB.

Past a limit, the agent sheds its optional work (:data:`OPTIONAL_WORK`: foreground-window polling and the
scheduled software rescans; the install watcher's rescans go on), logs why in one line and queues an
``AgentHealth`` SHED fact. Back under both limits for ``restore_after`` seconds, the work resumes and a
RESTORED fact is queued. While shed, memory that stays over the limit for ``restart_checks`` checks in a
row, or passes the hard limit (1.5 × the limit by default), makes it queue a RESTART fact (committed to
the outbox before anything else happens) and ask the service to stop, close the outbox and re-execute
the same command line (:func:`reexec`): CPython seldom gives freed memory back, a fresh process does.
No restart happens before ``restart_min_uptime`` seconds of this process, so a limit set below what
the agent needs costs a restart every few minutes, not a restart loop.

:class:`SelfLimiter` is the decision alone, fed readings and a monotonic time; :class:`SelfLimitWatch`
runs it on a thread, queues its facts, writes the status file that ``counterguard-agent status`` reads
and asks for the restart. :func:`lower_priority` runs the agent at nice 10 (below normal on Windows).
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psutil

from agent import __version__
from agent.clock import Clock, utc_now
from agent.config import MiB, AgentConfig
from agent.status_file import write_status
from protos.counterguard.v1 import facts_pb2

log = logging.getLogger(__name__)
Health = facts_pb2.AgentHealth
NICE = 10
RESTART_EXIT_CODE = 75  # where the process cannot re-execute itself (Windows): the service manager restarts it

# The optional work that is shed: its name in AgentHealth.shed → the service's collection step.
OPTIONAL_WORK: dict[str, str] = {"foreground": "foreground poll", "software_rescan": "software scan"}


class Usage(NamedTuple):
    """One reading of the agent's own resource use."""

    cpu_seconds: float  # user + system CPU time of the process so far
    rss_bytes: int


def read_usage() -> Usage:
    """This process's CPU time and resident memory, through psutil."""
    process = psutil.Process()
    with process.oneshot():
        times = process.cpu_times()
        return Usage(times.user + times.system, process.memory_info().rss)


@dataclass(frozen=True)
class Limits:
    """The self-limits; seconds and bytes."""

    cpu_percent: float = 5.0
    cpu_window: float = 60.0
    rss_bytes: int = 120 * MiB
    hard_rss_bytes: int = 180 * MiB
    restore_after: float = 120.0
    restart_checks: int = 3
    restart_min_uptime: float = 300.0

    @classmethod
    def from_config(cls, config: AgentConfig) -> Limits:
        rss = int(config.self_limit_rss_mib * MiB)
        return cls(cpu_percent=config.self_limit_cpu_percent, cpu_window=config.self_limit_cpu_window_seconds,
                   rss_bytes=rss, hard_rss_bytes=int(rss * config.self_limit_hard_rss_factor),
                   restore_after=config.self_limit_restore_seconds, restart_checks=config.self_limit_restart_checks,
                   restart_min_uptime=config.self_limit_restart_min_uptime_seconds)


def _mib(value: float) -> str:
    return f"{value / MiB:.1f} MiB"


class SelfLimiter:
    """Decides, check by check, whether to shed, restore or restart (see the module docstring)."""

    def __init__(self, limits: Limits, started: float) -> None:
        self.limits = limits
        self._started = started
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self._shed_since: float | None = None
        self._under_since: float | None = None
        self._over_rss_checks = 0
        self.restart_due = False
        self.cpu_percent: float | None = None  # over the window so far; None before two readings

    @property
    def shed(self) -> tuple[str, ...]:
        """The optional work shed now (names as in ``AgentHealth.shed``)."""
        return tuple(OPTIONAL_WORK) if self._shed_since is not None else ()

    def _cpu(self, now: float, cpu_seconds: float) -> float | None:
        """CPU % of one core over the window; ``None`` until the readings span a full window."""
        self._samples.append((now, cpu_seconds))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.limits.cpu_window:
            self._samples.popleft()
        first_at, first_cpu = self._samples[0]
        span = now - first_at
        self.cpu_percent = (cpu_seconds - first_cpu) / span * 100 if span > 0 else None
        return self.cpu_percent if span + 1e-6 >= self.limits.cpu_window else None

    def _over(self, cpu: float | None, rss: int) -> list[str]:
        """Why the agent is over its limits now; empty when it is not."""
        limits, reasons = self.limits, []
        if cpu is not None and cpu > limits.cpu_percent:
            reasons.append(f"CPU {cpu:.1f} % over {limits.cpu_window:g} s, limit {limits.cpu_percent:g} %")
        if rss > limits.rss_bytes:
            reasons.append(f"RSS {_mib(rss)}, limit {_mib(limits.rss_bytes)}")
        return reasons

    def _fact(self, action: int, usage: Usage, reason: str) -> Health:
        return Health(action=action, cpu_percent=self.cpu_percent or 0.0, rss_bytes=usage.rss_bytes,
                      shed=list(OPTIONAL_WORK), reason=reason, cpu_limit_percent=self.limits.cpu_percent,
                      rss_limit_bytes=self.limits.rss_bytes)

    def check(self, now: float, usage: Usage) -> Health | None:
        """Judge one reading taken at ``now`` (monotonic seconds); the fact to queue when something changed."""
        if self.restart_due:
            return None
        reasons = self._over(self._cpu(now, usage.cpu_seconds), usage.rss_bytes)
        if self._shed_since is None:
            if not reasons:
                return None
            self._shed_since, self._under_since, self._over_rss_checks = now, None, 0
            return self._fact(Health.ACTION_SHED, usage, "; ".join(reasons))
        if reasons:
            self._under_since = None
            return self._restart_if_needed(now, usage)
        self._over_rss_checks = 0
        self._under_since = now if self._under_since is None else self._under_since
        if now - self._under_since < self.limits.restore_after:
            return None
        self._shed_since = self._under_since = None
        return self._restored(usage)

    def _restored(self, usage: Usage) -> Health:
        fact = self._fact(Health.ACTION_RESTORED, usage,
                          f"under the limits for {self.limits.restore_after:g} s: optional work resumed")
        del fact.shed[:]
        return fact

    def _restart_if_needed(self, now: float, usage: Usage) -> Health | None:
        """While shed and still over: a RESTART fact when memory stays over or passes the hard limit."""
        limits = self.limits
        if usage.rss_bytes > limits.rss_bytes:
            self._over_rss_checks += 1
        else:
            self._over_rss_checks = 0
        if usage.rss_bytes >= limits.hard_rss_bytes:
            reason = f"RSS {_mib(usage.rss_bytes)}, hard limit {_mib(limits.hard_rss_bytes)}"
        elif self._over_rss_checks >= limits.restart_checks:
            reason = (f"RSS {_mib(usage.rss_bytes)} over the limit {_mib(limits.rss_bytes)} for "
                      f"{self._over_rss_checks} checks after shedding")
        else:
            return None
        if now - self._started < limits.restart_min_uptime:
            return None
        self.restart_due = True
        return self._fact(Health.ACTION_RESTART, usage, reason + ": restarting")


class SelfLimitWatch:
    """Runs :class:`SelfLimiter` every ``interval`` seconds: queues its facts, writes the status file, asks to restart."""

    def __init__(self, limits: Limits, *, interval: float, status_path: Path,
                 enqueue: Callable[[Health], None], restart: Callable[[], None],
                 read: Callable[[], Usage] = read_usage, monotonic: Callable[[], float] = time.monotonic,
                 clock: Clock = utc_now) -> None:
        self.interval = interval
        self._status_path = status_path
        self._enqueue, self._restart = enqueue, restart
        self._read, self._monotonic, self._clock = read, monotonic, clock
        self._limiter = SelfLimiter(limits, monotonic())
        self._started_at, self._started_cpu = clock(), read().cpu_seconds
        self._status_failed = False

    @classmethod
    def from_config(cls, config: AgentConfig, *, enqueue: Callable[[Health], None], restart: Callable[[], None],
                    clock: Clock = utc_now) -> SelfLimitWatch:
        return cls(Limits.from_config(config), interval=config.self_limit_check_interval_seconds,
                   status_path=config.status_path, enqueue=enqueue, restart=restart, clock=clock)

    @property
    def shed(self) -> tuple[str, ...]:
        """The optional work shed now (names as in ``AgentHealth.shed``)."""
        return self._limiter.shed

    @property
    def shed_steps(self) -> frozenset[str]:
        """The service's collection steps that are shed now."""
        return frozenset(OPTIONAL_WORK[name] for name in self._limiter.shed)

    def check(self) -> Health | None:
        """Read the agent's use once, act on the decision, write the status file; the fact queued, if any."""
        usage = self._read()
        fact = self._limiter.check(self._monotonic(), usage)
        if fact is not None:
            self._report(fact)
        self._write_status(usage)
        if fact is not None and fact.action == Health.ACTION_RESTART:
            self._restart()
        return fact

    def _report(self, fact: Health) -> None:
        action = Health.Action.Name(fact.action).removeprefix("ACTION_").lower()
        shed = f" shed={','.join(fact.shed)}" if fact.shed else ""
        log.warning("self-limit %s%s: %s", action, shed, fact.reason)
        try:
            self._enqueue(fact)
        except Exception:  # noqa: BLE001 - a restart must still happen when the outbox fails
            log.exception("self-limit: could not queue the %s fact", action)

    def status(self, usage: Usage) -> dict[str, object]:
        """What the status file holds: this process, its resource use, what is shed, the limits."""
        now = self._clock()
        uptime = (now - self._started_at).total_seconds()
        limits = self._limiter.limits
        since_start = (usage.cpu_seconds - self._started_cpu) / uptime * 100 if uptime > 0 else 0.0
        return {
            "pid": os.getpid(), "version": __version__, "started_at": self._started_at.isoformat(),
            "written_at": now.isoformat(), "check_interval_seconds": self.interval, "uptime_seconds": round(uptime, 1),
            "rss_bytes": usage.rss_bytes, "cpu_percent_since_start": round(since_start, 3),
            "cpu_percent_recent": None if self._limiter.cpu_percent is None else round(self._limiter.cpu_percent, 3),
            "cpu_window_seconds": limits.cpu_window, "shed": list(self.shed),
            "limits": {"cpu_percent": limits.cpu_percent, "rss_bytes": limits.rss_bytes,
                       "hard_rss_bytes": limits.hard_rss_bytes},
        }

    def _write_status(self, usage: Usage) -> None:
        try:
            write_status(self._status_path, self.status(usage))
        except OSError as exc:
            if not self._status_failed:
                log.warning("cannot write the status file %s: %s", self._status_path, exc)
            self._status_failed = True
        else:
            self._status_failed = False

    def run(self, stop: threading.Event) -> None:
        """Check now and every ``interval`` seconds until ``stop`` is set or a restart was asked for."""
        while not self._limiter.restart_due:
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watch outlives a failed reading
                log.exception("self-limit check failed")
            if stop.wait(self.interval):
                return


def lower_priority() -> None:
    """Run at nice 10 at least (below-normal priority on Windows); a refusal is ignored.

    On Linux a nice value belongs to a thread and is inherited by the threads it starts: call this
    before the service starts any.
    """
    try:
        if sys.platform == "win32":
            psutil.Process().nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)  # type: ignore[attr-defined]
            return
        current = os.nice(0)
        if current < NICE:
            os.nice(NICE - current)
    except (OSError, psutil.Error) as exc:
        log.info("priority left as it is: %s", exc)


def reexec() -> None:
    """Replace this process with a fresh run of the same command line (never returns).

    Where a process cannot replace itself (Windows), exit with :data:`RESTART_EXIT_CODE` instead, for
    the service manager's recovery action to start it again.
    """
    logging.shutdown()
    if sys.platform == "win32":
        raise SystemExit(RESTART_EXIT_CODE)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)
