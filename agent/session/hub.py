"""The service's side of the session channel: the helpers connected now, their samples, notices to them.

:class:`SessionHub` accepts helpers on the channel (:mod:`agent.session.channel`), one thread each.
A helper must say ``hello`` within :data:`HELLO_TIMEOUT` seconds; its account (and on Windows its
session id) must be what the operating system says of the connection, and every later message must
carry the same session and account. A helper proves nothing else: what it sends is taken as what
that account's session shows, attributed to that account, and it can ask for nothing. Anything
malformed, oversized or out of place is refused: logged with the reason, the connection closed.

The hub sends each helper the sampling settings (``config``) when it connects and whenever they
change, and hands notices to every helper connected (:meth:`show`). Of the helpers' samples,
:meth:`current` picks the fresh one of the person at the screen: the one with the least input idleness
(a session in the background has not seen input for as long as it is in the background).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.notices import WarnOnce
from agent.session import protocol
from agent.session.channel import ChannelError, Endpoint, Listener, Peer, listen
from agent.session.protocol import HELPER_TYPES, MAX_FROM_HELPER, Message, ProtocolError
from protos.counterguard.v1 import agent_pb2

log = logging.getLogger(__name__)
HELLO_TIMEOUT = 5.0
MAX_HELPERS = 16
_ACCEPT_WAIT = 0.5
_MIN_FRESH = 10.0  # a sample is fresh for 3 sampling intervals, and at least this long


@dataclass(eq=False)
class Helper:
    """One connected helper: who it is and what it last sampled."""

    endpoint: Endpoint
    peer: Peer
    session: str
    user: str
    platform: str
    sample: Message | None = None
    sampled_at: float = 0.0
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    shown_log: WarnOnce = field(default_factory=lambda: WarnOnce(log))

    def send(self, msg: Message) -> bool:
        """Send one message; ``False`` when the helper is gone."""
        try:
            with self.send_lock:
                self.endpoint.send_bytes(protocol.encode({**msg, "session": self.session, "user": self.user}))
        except (OSError, ValueError):
            return False
        return True


def refusal(hello: Message, peer: Peer) -> str:
    """Why a ``hello`` does not match what the operating system says of the connection ("" when it does)."""
    if peer.user and hello["user"] != peer.user:
        return f"it says it runs as {hello['user']!r} but the connection comes from {peer.user!r}"
    if peer.session and hello["session"] != peer.session:
        return f"it says it is in session {hello['session']!r} but the connection comes from session {peer.session!r}"
    return ""


class SessionHub:
    """Accepts session helpers and talks to them; see the module docstring."""

    def __init__(self, address: str, *, opener: Callable[[str], Listener] = listen,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.address = address
        self._open = opener
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._helpers: list[Helper] = []
        self._config: Message = {"sample_interval": 0.0, "foreground": False, "report_titles": False,
                                 "title_patterns": []}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> bool:
        """Listen and accept helpers in a thread; ``False`` (logged) when the channel cannot be opened."""
        try:
            listener = self._open(self.address)
        except ChannelError as exc:
            log.error("session helpers cannot connect: %s", exc)
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept_loop, args=(listener,), name="session-hub", daemon=True)
        self._thread.start()
        log.info("listening for session helpers on %s", self.address)
        return True

    def stop(self) -> None:
        """Stop accepting, close every helper's connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            helpers, self._helpers = self._helpers, []
        for helper in helpers:
            helper.endpoint.close()

    def _accept_loop(self, listener: Listener) -> None:
        try:
            while not self._stop.is_set():
                try:
                    accepted = listener.accept(_ACCEPT_WAIT)
                except (OSError, ChannelError) as exc:
                    log.warning("accepting a session helper failed: %s", exc)
                    self._stop.wait(_ACCEPT_WAIT)
                    continue
                if accepted is not None:
                    threading.Thread(target=self._serve, args=accepted, name="session-helper", daemon=True).start()
        finally:
            listener.close()

    # ------------------------------------------------------------------ one helper

    def _serve(self, endpoint: Endpoint, peer: Peer) -> None:
        helper = None
        ours = True  # whether this thread closes the connection (not when stop() took the helper to close it)
        try:
            helper = self._welcome(endpoint, peer)
            if helper is not None:
                self._listen(helper)
        finally:
            if helper is not None:
                with self._lock:
                    ours = helper in self._helpers
                    if ours:
                        self._helpers.remove(helper)
                log.info("session helper left session=%s user=%s", helper.session, helper.user)
            if ours:  # one close per connection: a second could close a descriptor opened meanwhile
                endpoint.close()

    def _refuse(self, peer: Peer, reason: str) -> None:
        log.warning("session channel: refused a helper (pid %d, account %s): %s", peer.pid, peer.user or "?", reason)

    def _receive(self, endpoint: Endpoint, peer: Peer) -> Message | None:
        """The next message, checked; ``None`` (refusal logged) for a malformed one or a hang-up."""
        try:
            return protocol.decode(endpoint.recv_bytes(MAX_FROM_HELPER), HELPER_TYPES)
        except ProtocolError as exc:
            self._refuse(peer, str(exc))
        except EOFError:
            pass
        except OSError as exc:  # recv_bytes refuses a frame above the limit with OSError("bad message length")
            if not self._stop.is_set():  # else stop() closed the connection under us
                self._refuse(peer, f"unreadable message ({exc}; at most {MAX_FROM_HELPER} bytes)")
        return None

    def _welcome(self, endpoint: Endpoint, peer: Peer) -> Helper | None:
        try:
            said_hello = endpoint.poll(HELLO_TIMEOUT)
        except (OSError, EOFError):
            return None
        if not said_hello:
            self._refuse(peer, f"no 'hello' within {HELLO_TIMEOUT:g} s")
            return None
        hello = self._receive(endpoint, peer)
        if hello is None:
            return None
        if hello["type"] != "hello":
            self._refuse(peer, f"{hello['type']!r} before 'hello'")
            return None
        reason = refusal(hello, peer)
        helper = Helper(endpoint, peer, hello["session"], peer.user or hello["user"], hello["platform"])
        with self._lock:
            if not reason and len(self._helpers) >= MAX_HELPERS:
                reason = f"{MAX_HELPERS} helpers are connected already"
            if not reason:
                self._helpers.append(helper)
            config = dict(self._config)
        if reason:
            self._refuse(peer, reason)
            return None
        log.info("session helper connected session=%s user=%s pid=%d platform=%s", helper.session, helper.user,
                 peer.pid, helper.platform)
        helper.send(protocol.message("config", "", "", **config))
        return helper

    def _listen(self, helper: Helper) -> None:
        while not self._stop.is_set():
            try:
                if not helper.endpoint.poll(_ACCEPT_WAIT):
                    continue
            except (OSError, EOFError):
                return
            msg = self._receive(helper.endpoint, helper.peer)
            if msg is None:
                return
            if (msg["session"], msg["user"]) != (helper.session, helper.user):
                self._refuse(helper.peer, f"a message for session {msg['session']!r} and account {msg['user']!r}")
                return
            if msg["type"] == "hello":
                self._refuse(helper.peer, "a second 'hello'")
                return
            self._take(helper, msg)

    def _take(self, helper: Helper, msg: Message) -> None:
        if msg["type"] == "sample":
            with self._lock:
                helper.sample, helper.sampled_at = msg, self._monotonic()
        elif msg["error"]:
            helper.shown_log(f"the helper in session {helper.session} ({helper.user}) could not show a notice: "
                             f"{msg['error']}")
        else:
            helper.shown_log.clear()
            log.info("notice shown key=%s session=%s user=%s", msg["key"], helper.session, helper.user)

    # ------------------------------------------------------------------ what the service asks

    def configure(self, *, sample_interval: float | None = None, foreground: bool | None = None,
                  report_titles: bool | None = None,
                  title_patterns: Iterable[agent_pb2.TitlePattern] | None = None) -> None:
        """Change what the helpers sample and how often (``None``: keep), and tell the connected ones."""
        changes: dict[str, Any] = {"sample_interval": sample_interval, "foreground": foreground,
                                   "report_titles": report_titles}
        if title_patterns is not None:
            changes["title_patterns"] = [
                {"id": p.id, "category": p.category, "title_contains": list(p.title_contains),
                 "executables": list(p.executables)} for p in title_patterns]
        with self._lock:
            self._config.update({k: v for k, v in changes.items() if v is not None})
            config, helpers = dict(self._config), list(self._helpers)
        for helper in helpers:
            helper.send(protocol.message("config", "", "", **config))

    @property
    def report_titles(self) -> bool:
        return bool(self._config["report_titles"])

    def show(self, notice: agent_pb2.Notice) -> int:
        """Send a notice to every connected helper; how many it went to."""
        with self._lock:
            helpers = list(self._helpers)
        msg = protocol.message("notice", "", "", key=notice.violation_key, title=notice.title, body=notice.body)
        return sum(helper.send(msg) for helper in helpers)

    def current(self) -> tuple[Helper, Message] | None:
        """The fresh sample of the person at the screen (least idle), with its helper; ``None`` when none is fresh."""
        now = self._monotonic()
        fresh_for = max(_MIN_FRESH, 3 * float(self._config["sample_interval"]))
        with self._lock:
            fresh = [(h, h.sample) for h in self._helpers if h.sample is not None and now - h.sampled_at <= fresh_for]
        if not fresh:
            return None
        return min(fresh, key=lambda pair: (_idle_rank(pair[1]), -pair[0].sampled_at))  # type: ignore[return-value]

    def connected(self) -> list[tuple[str, str]]:
        """(session, account) of each connected helper."""
        with self._lock:
            return [(h.session, h.user) for h in self._helpers]


def _idle_rank(sample: Message | None) -> float:
    idle = sample.get("idle_seconds") if sample else None
    return float("inf") if idle is None else float(idle)
