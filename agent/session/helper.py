"""The session helper: a small process in the person's session that the agent service talks to.

It connects to the service's channel, says ``hello`` (its session and account), and then:

- samples what the service asks for every ``sample_interval`` seconds: input idleness and, when the
  policy watches it, the foreground window, matched here against the policy's title patterns (the
  title goes to the service only when the policy reports titles);
- shows the notices the service sends with the desktop's notifier, in a thread of its own so a slow
  notification service never delays sampling, and tells the service whether each was shown. A failing
  notifier is logged once per reason, never fatal.

It reconnects when the service goes away (backoff up to :data:`RETRY_MAX` seconds), and exits when its
session ends (:func:`agent.session.desktop.session_alive`) or on SIGTERM, SIGINT or SIGHUP.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from agent.collectors._probes import ForegroundSample, IdleSample
from agent.collectors.foreground import classify, process_identity
from agent.notices import WarnOnce
from agent.session import protocol
from agent.session.channel import ChannelError, Endpoint, connect, default_address
from agent.session.notifiers import Notifier, NotifierError
from agent.session.protocol import MAX_FROM_SERVICE, SERVICE_TYPES, Message, ProtocolError
from protos.counterguard.v1 import agent_pb2

log = logging.getLogger(__name__)
RETRY_INITIAL = 0.5
RETRY_MAX = 5.0
ALIVE_CHECK = 5.0
_QUEUED_NOTICES = 20
_WAIT = 1.0


@dataclass(frozen=True)
class Probes:
    """What the helper reads in its session (the platform's readers, or fakes in tests)."""

    idle: Callable[[], IdleSample | None]
    foreground: Callable[[], ForegroundSample | None]
    identify: Callable[[int], tuple[str, str]] = process_identity


def platform_probes() -> Probes:
    """This platform's idle and foreground readers, reading the helper's own session."""
    from agent.collectors import activity, foreground

    return Probes(idle=activity.default_reader(), foreground=foreground.default_reader())


class SessionHelper:
    """Connects to the service and serves it until the session ends; see the module docstring."""

    def __init__(self, address: str, session: str, user: str, notifier: Notifier, probes: Probes, *,
                 alive: Callable[[], bool] = lambda: True, platform: str = sys.platform,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.address = address
        self.session, self.user, self.platform = session, user, platform
        self._notifier = notifier
        self._probes = probes
        self._alive = alive
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._config: Message = {"sample_interval": 0, "foreground": False, "report_titles": False}
        self._patterns: list[agent_pb2.TitlePattern] = []
        self._notices: queue.Queue[Message] = queue.Queue(_QUEUED_NOTICES)
        self._endpoint: Endpoint | None = None
        self._send_lock = threading.Lock()
        self._connect_log = WarnOnce(log, logging.INFO)
        self._notify_log = WarnOnce(log)
        self._probe_log = WarnOnce(log)

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask the helper to exit (safe from a signal handler or another thread)."""
        self._stop.set()

    def run(self) -> int:
        """Serve the service until the session ends or the helper is stopped; returns the exit code (0)."""
        self._install_signal_handlers()
        threading.Thread(target=self._show_notices, name="notices", daemon=True).start()
        delay = RETRY_INITIAL
        while not self._stop.is_set():
            if not self._alive():
                log.info("session %s ended; the helper exits", self.session)
                break
            try:
                endpoint = connect(self.address)
            except ChannelError as exc:
                self._connect_log(str(exc))
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_INITIAL
            self._connect_log.clear()
            log.info("connected to the agent at %s session=%s user=%s", self.address, self.session, self.user)
            self._serve(endpoint)
        self._stop.set()
        return 0

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("the session helper stops on signal=%s", signal.Signals(signum).name)
            self.stop()

        for name in ("SIGTERM", "SIGINT", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), handle)

    # ------------------------------------------------------------------ one connection

    def _serve(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        try:
            self._send(protocol.message("hello", self.session, self.user, platform=self.platform,
                                        pid=os.getpid()))
            self._exchange(endpoint)
        except (EOFError, OSError):
            log.info("the agent closed the channel; reconnecting")
        except ProtocolError as exc:
            log.warning("the agent sent a message this helper does not understand (%s); reconnecting", exc)
        finally:
            self._endpoint = None
            endpoint.close()

    def _exchange(self, endpoint: Endpoint) -> None:
        next_sample = self._monotonic()
        next_check = self._monotonic() + ALIVE_CHECK
        while not self._stop.is_set():
            interval = float(self._config["sample_interval"])
            wait = min(_WAIT, max(0.0, next_sample - self._monotonic())) if interval > 0 else _WAIT
            if endpoint.poll(wait):
                self._take(protocol.decode(endpoint.recv_bytes(MAX_FROM_SERVICE), SERVICE_TYPES))
            now = self._monotonic()
            if interval > 0 and now >= next_sample:
                self._send(self.sample())
                next_sample = now + interval
            if now >= next_check:
                next_check = now + ALIVE_CHECK
                if not self._alive():
                    log.info("session %s ended; the helper exits", self.session)
                    self._stop.set()

    def _send(self, msg: Message) -> None:
        endpoint = self._endpoint
        if endpoint is None:
            return
        with self._send_lock:
            endpoint.send_bytes(protocol.encode(msg))

    def _take(self, msg: Message) -> None:
        if msg["type"] == "config":
            self._config = msg
            self._patterns = [agent_pb2.TitlePattern(id=p["id"], category=p["category"],
                                                     title_contains=p["title_contains"], executables=p["executables"])
                              for p in msg["title_patterns"]]
            log.info("sampling every %gs foreground=%s patterns=%d", msg["sample_interval"], msg["foreground"],
                     len(self._patterns))
            return
        try:
            self._notices.put_nowait(msg)
        except queue.Full:
            log.warning("too many notices waiting to be shown; dropped key=%s", msg["key"])

    # ------------------------------------------------------------------ sampling

    def sample(self) -> Message:
        """What this session shows now, as a ``sample`` message."""
        idle = self._read("input idleness", self._probes.idle)
        window = None
        if self._config["foreground"]:
            seen = self._read("foreground window", self._probes.foreground)
            if seen is not None:
                executable, _ = self._probes.identify(seen.pid)
                category, pattern = classify(seen.title, executable, self._patterns) or ("", "")
                title = seen.title[:protocol.MAX_TEXT] if self._config["report_titles"] else ""
                window = {"category": category, "pattern_id": pattern, "executable": executable, "pid": seen.pid,
                          "title": title}
        return protocol.message("sample", self.session, self.user,
                                idle_seconds=idle.idle_seconds if idle is not None else None,
                                idle_source=idle.source if idle is not None else "", foreground=window)

    def _read(self, what: str, reader: Callable[[], Any]) -> Any:
        try:
            return reader()
        except Exception as exc:  # noqa: BLE001 - a probe failing must not end the helper
            self._probe_log(f"reading the {what} failed: {exc!r}")
            return None

    # ------------------------------------------------------------------ notices

    def _show_notices(self) -> None:
        while True:
            notice = self._notices.get()
            error = ""
            try:
                self._notifier.show(notice["title"], notice["body"])
                self._notify_log.clear()
            except NotifierError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a broken notifier must not end the helper
                error = f"{type(exc).__name__}: {exc}"
            if error:
                self._notify_log(f"cannot show a notice: {error}")
            try:
                self._send(protocol.message("shown", self.session, self.user, key=notice["key"], error=error))
            except (OSError, ValueError):
                pass  # the channel is gone; the agent logs what it could not deliver


def run_session_helper(run_dir: Path) -> int:
    """``counterguard-agent session-helper``: serve the agent listening for ``run_dir``'s channel from this session."""
    from agent.session.desktop import current_session, current_user, session_alive
    from agent.session.notifiers import default_notifier

    helper = SessionHelper(default_address(run_dir), current_session(), current_user(), default_notifier(),
                           platform_probes(), alive=session_alive)
    return helper.run()
