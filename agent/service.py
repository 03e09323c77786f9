"""The workstation service: collect facts on a schedule, queue them in the outbox, send them.

At start the service queues a boot event (only for a boot not reported before), the full
inventory, software, process and session snapshots, the input activity and removable storage present,
and a heartbeat. Then two threads run until a ``threading.Event`` says stop: the collector thread polls
processes, sessions, software, input activity, removable storage, the foreground window (only when the
policy turns it on) and the antivirus products (only those the policy lists), sends heartbeats and
checks the inventory (queued only when its hash changed or a full interval passed), each at its
interval, and a step at once when something asks for it (a watchdog observer on the mount roots asks
for the removable-storage poll, one on the install locations for the software scan). The transport
thread sends every ``report_interval`` and soon after new facts arrive, carries out the controller's
commands and fetches the policy when its version changes (the policy's non-zero intervals replace the
configured ones; its title patterns, antivirus products and mount roots go to the collectors). A third
thread keeps the agent within its self-limits (``agent.selflimit``): a step it shed runs only when
asked for, and when it asks for a restart the service stops as on SIGTERM with ``restart_requested``
set. The session helpers (``agent.session``) are listened for while the service runs: they show the
notices a Report answer carries, and on Windows read input idleness and the foreground window for it.
On SIGTERM/SIGINT the loops stop, a shutdown event is queued if
the system itself is stopping, and one last send is tried.
:meth:`AgentService.run_once` queues the start-up facts and sends until the outbox is empty.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from google.protobuf.message import Message

from agent.clock import Clock, utc_now
from agent.collectors import Roots
from agent.config import AgentConfig
from agent.enroll import load_enrollment
from agent.errors import AgentError, DeliveryError
from agent.outbox import Outbox
from agent.selflimit import SelfLimitWatch
from agent.session.link import SessionLink
from agent.transport import Transport
from protos.counterguard.v1 import agent_pb2, facts_pb2

log = logging.getLogger(__name__)
BOOT_TIME = "boot_time"
INVENTORY_HASH = "inventory_hash"
INVENTORY_SENT_AT = "inventory_sent_at"
_SAME_BOOT = dt.timedelta(seconds=10)  # boot times computed from uptime jitter by a second or so
_COALESCE_SECONDS = 1.0  # after new facts arrive, wait this long for more before sending
# Inventory values that change by themselves; left out when deciding whether the inventory changed.
_VOLATILE_INVENTORY_FIELDS: dict[str, tuple[str, ...]] = {"filesystems": ("free_bytes",)}


@dataclass(frozen=True)
class Intervals:
    """The schedule (and the idle threshold) in seconds: from the configuration, overridden by the policy."""

    report_interval: float
    heartbeat_interval: float
    process_poll_interval: float
    session_poll_interval: float
    software_scan_interval: float
    inventory_interval: float
    activity_poll_interval: float
    idle_threshold: float
    foreground_poll_interval: float
    removable_poll_interval: float
    antivirus_check_interval: float

    @classmethod
    def from_config(cls, config: AgentConfig) -> Intervals:
        return cls(**{name: float(getattr(config, f"{name}_seconds")) for name in _interval_names()})

    def with_policy(self, policy: agent_pb2.AgentPolicy) -> Intervals:
        """These intervals with the policy's non-zero values (``<name>_seconds``) in their place."""
        known = policy.DESCRIPTOR.fields_by_name
        changes = {name: float(getattr(policy, f"{name}_seconds")) for name in _interval_names()
                   if f"{name}_seconds" in known}
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v > 0})


def _interval_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Intervals)]


def inventory_digest(snapshot: facts_pb2.InventorySnapshot) -> str:
    """SHA-256 of the inventory without the values that change on their own (free disk space).

    A changed digest is what makes the service send the inventory again before the daily full send.
    """
    stable = facts_pb2.InventorySnapshot()
    stable.CopyFrom(snapshot)
    fields = stable.DESCRIPTOR.fields_by_name
    for repeated, volatile in _VOLATILE_INVENTORY_FIELDS.items():
        if repeated in fields:
            for item in getattr(stable, repeated):
                for name in volatile:
                    item.ClearField(name)
    return hashlib.sha256(stable.SerializeToString(deterministic=True)).hexdigest()


def roots_for(config: AgentConfig) -> Roots:
    """The collectors' file-system roots, with the configured extra application dirs and dpkg status file."""
    base = Roots()
    return dataclasses.replace(
        base,
        application_dirs=base.application_dirs + tuple(config.extra_application_dirs),
        dpkg_status=config.dpkg_status or base.dpkg_status,
    )


class AgentService:
    """The agent's collectors, outbox and transport, and the loops that drive them."""

    def __init__(self, config: AgentConfig, *, clock: Clock = utc_now, roots: Roots | None = None,
                 outbox: Outbox | None = None, transport: Transport | None = None) -> None:
        from agent.collectors import (
            activity,
            antivirus,
            foreground,
            inventory,
            power,
            processes,
            removable,
            sessions,
            software,
        )

        self.config = config
        self.clock = clock
        self.roots = roots if roots is not None else roots_for(config)
        # Not enrolled: fail before creating any file.
        enrollment = transport.enrollment if transport else load_enrollment(config.state_dir)
        self.outbox = outbox or Outbox(config.outbox_path, max_facts=config.outbox_max_facts, clock=clock)
        self.transport = transport or Transport(config, self.outbox, clock, enrollment=enrollment)
        self.transport.on_response = self._on_response
        self.intervals = Intervals.from_config(config)
        self.policy_version = ""
        self._inventory, self._power = inventory, power
        self._software = software.SoftwareTracker(self.roots)
        self._processes = processes.ProcessTracker(clock)
        self._sessions = sessions.SessionTracker(self.roots)
        self.session = SessionLink(config)  # the session helpers: notices, and the desktop on Windows
        self._activity = activity.ActivityTracker(self.intervals.idle_threshold, self.session.idle_reader(),
                                                  roots=self.roots)
        self._foreground = self.session.foreground_tracker() or foreground.ForegroundTracker(roots=self.roots)
        self._foreground_enabled = False
        self._removable = removable.RemovableTracker(self.roots)
        self._mount_watcher = removable.MountWatcher(lambda: self.collect_soon("removable poll"), self.roots)
        self._antivirus = antivirus.AntivirusChecker(roots=self.roots)
        self._install_watcher = software.InstallWatcher(
            lambda: self.collect_soon("software scan"), self.roots,
            quiet=config.install_watch_quiet_seconds, max_delay=config.install_watch_max_delay_seconds)
        self.self_limit = SelfLimitWatch.from_config(config, enqueue=self._enqueue, restart=self._restart, clock=clock)
        self.restart_requested = False  # the self-limits asked for a fresh process once this one has stopped
        self._collect_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # new facts: send soon
        self._nudge = threading.Event()  # a collection step asked for: run it now
        self._soon: set[str] = set()
        self._soon_lock = threading.Lock()

    # ------------------------------------------------------------ collecting

    def _enqueue(self, *messages: Message | None, meta: dict[str, str] | None = None) -> None:
        present = [m for m in messages if m is not None]
        if present or meta:
            self.outbox.put_many(present, meta=meta)
            self._wake.set()

    def _safely(self, what: str, action: Callable[[], None]) -> None:
        """Run one collection step; a failing collector is logged and must not stop the others."""
        try:
            with self._collect_lock:
                action()
        except Exception:  # noqa: BLE001 - the service outlives any one collector's failure
            log.exception("collector failed step=%s", what)

    def enqueue_startup(self) -> None:
        """Queue what the controller needs after a (re)start: boot, inventory, snapshots, a heartbeat."""
        self._safely("boot", self._enqueue_boot)
        self._safely("inventory", lambda: self.check_inventory(force=True))
        self._safely("software snapshot", lambda: self._enqueue(self._software.snapshot()))
        self._safely("process snapshot", lambda: self._enqueue(self._processes.snapshot()))
        self._safely("session snapshot", lambda: self._enqueue(self._sessions.snapshot()))
        self._safely("activity", lambda: self._enqueue(self._activity.poll()))
        self._safely("removable storage", lambda: self._enqueue(*self._removable.poll()))
        self._safely("antivirus", lambda: self._enqueue(self._antivirus.check()))
        self._safely("heartbeat", lambda: self._enqueue(self._power.heartbeat(self.roots)))

    def _enqueue_boot(self) -> None:
        boot_time = self._power.boot_time(self.roots)
        stored = self.outbox.get_meta(BOOT_TIME)
        if stored is not None and abs(dt.datetime.fromisoformat(stored) - boot_time) < _SAME_BOOT:
            return
        self._enqueue(self._power.boot_event(self.roots), meta={BOOT_TIME: boot_time.isoformat()})

    def check_inventory(self, *, force: bool = False) -> None:
        """Collect the inventory; queue it when forced, changed, or not sent for a full interval."""
        snapshot = self._inventory.collect_inventory(self.roots)
        digest = inventory_digest(snapshot)
        now = self.clock()
        sent_at = self.outbox.get_meta(INVENTORY_SENT_AT)
        stale = sent_at is None or (now - dt.datetime.fromisoformat(sent_at)).total_seconds() >= \
            self.config.inventory_full_interval_seconds
        if force or stale or digest != self.outbox.get_meta(INVENTORY_HASH):
            self._enqueue(snapshot, meta={INVENTORY_HASH: digest, INVENTORY_SENT_AT: now.isoformat()})

    def _tasks(self) -> list[tuple[str, str, Callable[[], None]]]:
        """The periodic collection steps: name, the ``Intervals`` field that paces it, action."""
        return [
            ("process poll", "process_poll_interval", lambda: self._enqueue(*self._processes.poll())),
            ("session poll", "session_poll_interval", lambda: self._enqueue(*self._sessions.poll())),
            ("heartbeat", "heartbeat_interval", lambda: self._enqueue(self._power.heartbeat(self.roots))),
            ("software scan", "software_scan_interval", lambda: self._enqueue(self._software.poll())),
            ("inventory check", "inventory_interval", self.check_inventory),
            ("activity poll", "activity_poll_interval", lambda: self._enqueue(self._activity.poll())),
            ("foreground poll", "foreground_poll_interval", self._poll_foreground),
            ("removable poll", "removable_poll_interval", self._poll_removable),
            ("antivirus check", "antivirus_check_interval", lambda: self._enqueue(self._antivirus.check())),
        ]

    def _poll_foreground(self) -> None:
        """The foreground window, when the policy turned the probe on."""
        if self._foreground_enabled:
            self._enqueue(self._foreground.poll())

    def _poll_removable(self) -> None:
        """Removable storage changes; then watch the mount roots' directories as they are now."""
        self._enqueue(*self._removable.poll())
        self._mount_watcher.refresh()

    def collect_soon(self, step: str) -> None:
        """Ask the collector thread to run one step (a ``_tasks`` name) now rather than at its interval."""
        with self._soon_lock:
            self._soon.add(step)
        self._nudge.set()

    def _take_soon(self) -> set[str]:
        with self._soon_lock:
            steps, self._soon = self._soon, set()
        return steps

    def _collector_loop(self) -> None:
        """Run each step when its interval (read afresh: the policy may change it) has passed, or when asked."""
        tasks = self._tasks()
        last_run = {name: time.monotonic() for name, _, _ in tasks}

        def due(name: str, interval: str) -> float:
            return last_run[name] + float(getattr(self.intervals, interval))

        while not self._stop.is_set():
            asked = self._take_soon()
            for name, interval, action in tasks:
                if name in asked or time.monotonic() >= due(name, interval):
                    last_run[name] = time.monotonic()
                    if name in asked or name not in self.self_limit.shed_steps:  # shed: only when asked for
                        self._safely(name, action)
            next_due = min(due(name, interval) for name, interval, _ in tasks)
            self._nudge.wait(max(0.05, next_due - time.monotonic()))
            self._nudge.clear()

    # -------------------------------------------------------------- sending

    def _on_response(self, response: agent_pb2.ReportResponse) -> None:
        """Carry out the controller's commands, and fetch the policy when its version changed."""
        for command in response.commands:
            if command.kind == agent_pb2.Command.KIND_SEND_FULL_INVENTORY:
                self._safely("inventory (command)", lambda: self.check_inventory(force=True))
            elif command.kind == agent_pb2.Command.KIND_SEND_FULL_SOFTWARE:
                self._safely("software snapshot (command)", lambda: self._enqueue(self._software.snapshot()))
            else:
                log.warning("ignoring an unknown command kind=%d", command.kind)
        if response.policy_version and response.policy_version != self.policy_version:
            self._update_policy()
        if response.notices:
            self.session.announce(response.notices)

    def _update_policy(self) -> None:
        try:
            answer = self.transport.fetch_policy(self.policy_version)
        except AgentError as exc:
            log.warning("policy not updated: %s", exc)
            return
        if answer.changed:
            self.intervals = Intervals.from_config(self.config).with_policy(answer.policy)
            self._safely("policy", lambda: self._apply_policy(answer.policy))
            log.info("policy applied version=%s intervals=%s", answer.version, self.intervals)
        self.policy_version = answer.version

    def _apply_policy(self, policy: agent_pb2.AgentPolicy) -> None:
        """Hand the policy's threshold, title patterns, antivirus products and mount roots to the collectors."""
        self._activity.set_threshold(self.intervals.idle_threshold)
        self._foreground.set_policy(policy.title_patterns, policy.report_titles)
        if policy.foreground_enabled and not self._foreground_enabled:
            self._foreground.reset()
            self.collect_soon("foreground poll")
        self._foreground_enabled = policy.foreground_enabled
        self.session.apply_policy(policy, self.intervals.activity_poll_interval, self.intervals.foreground_poll_interval)
        self._antivirus.set_probes(policy.antivirus)
        if policy.antivirus:
            self.collect_soon("antivirus check")
        mount_roots = tuple(Path(root) for root in policy.removable_mount_roots) or self.roots.mount_roots
        self._mount_watcher.set_mount_roots(mount_roots)

    def _send(self) -> None:
        try:
            self.transport.send_pending()
        except Exception:  # noqa: BLE001 - keep sending later whatever one round hit
            log.exception("sending failed")

    def _transport_loop(self) -> None:
        while not self._stop.is_set():
            self._send()
            delay = self.transport.retry_after()
            if delay > 0:
                self._stop.wait(delay)
            elif self._wake.wait(self.intervals.report_interval):
                self._wake.clear()
                self._stop.wait(min(_COALESCE_SECONDS, self.intervals.report_interval))

    # ------------------------------------------------------------ lifecycle

    def run_once(self) -> int:
        """Queue the start-up facts and send until the outbox is empty; returns how many were acknowledged."""
        self.enqueue_startup()
        deadline = time.monotonic() + self.config.run_once_timeout_seconds
        delivered = 0
        while self.outbox.depth() > 0:
            delivered += self.transport.send_pending()
            if self.outbox.depth() == 0:
                break
            wait = self.transport.retry_after()
            if self.transport.revoked or time.monotonic() + wait > deadline:
                raise DeliveryError(self._undelivered_message())
            self._stop.wait(wait)
        return delivered

    def _undelivered_message(self) -> str:
        why = self.transport.last_error or "no progress"
        return (f"{self.outbox.depth()} facts not delivered to {self.transport.enrollment.report_address} "
                f"within {self.config.run_once_timeout_seconds:g}s ({why}); they stay in the outbox")

    def _restart(self) -> None:
        """The self-limits' RESTART fact is in the outbox: stop, and let the command line start afresh."""
        self.restart_requested = True
        self.stop()

    def stop(self) -> None:
        """Ask the loops to stop (safe from a signal handler or another thread)."""
        self._stop.set()
        self._wake.set()
        self._nudge.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`stop`); returns the process exit code."""
        self._install_signal_handlers()
        self.enqueue_startup()
        self._mount_watcher.start()
        self._install_watcher.start()
        self.session.start()
        threads = [threading.Thread(target=loop, name=name, daemon=True)
                   for name, loop in (("collectors", self._collector_loop), ("transport", self._transport_loop),
                                      ("self-limit", lambda: self.self_limit.run(self._stop)))]
        for thread in threads:
            thread.start()
        log.info("agent running agent_id=%s controller=%s", self.transport.enrollment.agent_id,
                 self.transport.enrollment.report_address)
        while not self._stop.wait(1.0):
            pass
        for thread in threads:
            thread.join(timeout=self.config.rpc_timeout_seconds + 1)
        self._mount_watcher.stop()
        self._install_watcher.stop()
        self.session.stop()
        self._shutdown(transport_idle=not threads[1].is_alive())
        return 0

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("stopping on signal=%s", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _shutdown(self, *, transport_idle: bool) -> None:
        """Queue a shutdown event if the system is going down, try one last short send, close."""
        if self._power.system_is_stopping(self.roots, self.clock):
            self._safely("shutdown event", lambda: self._enqueue(self._power.shutdown_event(self.roots)))
        if transport_idle:
            try:
                self.transport.send_pending(self.config.shutdown_send_timeout_seconds, force=True)
            except AgentError as exc:
                log.warning("last send failed: %s", exc)
        log.info("agent stopped outbox_depth=%d", self.outbox.depth())

    def close(self) -> None:
        self._mount_watcher.stop()
        self._install_watcher.stop()
        self.session.stop()
        self.transport.close()
        self.outbox.close()
