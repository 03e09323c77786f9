"""The session collector: who is logged in, as a snapshot first and then login and logout events.

A session is identified by ``(user, terminal, start time)``. The back end for this platform is chosen
once, at import; Linux reads utmp (``_utmp_linux``), Windows asks the Remote Desktop Services API
(``_sessions_windows``).
"""

from __future__ import annotations

import sys

from agent.collectors import Roots
from protos.counterguard.v1 import facts_pb2

if sys.platform.startswith("linux"):
    from agent.collectors import _utmp_linux as _backend
elif sys.platform == "win32":
    from agent.collectors import _sessions_windows as _backend
else:  # pragma: no cover - no other platform has a back end
    raise NotImplementedError(f"no session collector for platform {sys.platform!r}")

__all__ = ["SessionTracker", "collect_sessions", "session_key"]

SessionKey = tuple[str, str, int, int]


def session_key(session: facts_pb2.UserSession) -> SessionKey:
    """What identifies a session: user, terminal and when it started."""
    return (session.username, session.terminal, session.started_at.seconds, session.started_at.nanos)


def collect_sessions(roots: Roots = Roots()) -> list[facts_pb2.UserSession]:
    """The sessions logged in now, oldest first."""
    sessions = _backend.user_sessions(roots.utmp)
    return sorted(sessions, key=lambda s: (s.started_at.seconds, s.started_at.nanos, s.terminal, s.username))


class SessionTracker:
    """Remembers the logged-in sessions and reports logins and logouts since the previous call."""

    def __init__(self, roots: Roots = Roots()) -> None:
        self._roots = roots
        self._known: dict[SessionKey, facts_pb2.UserSession] = {}

    def snapshot(self) -> facts_pb2.SessionSnapshot:
        """Every session now; later polls report changes against it."""
        sessions = collect_sessions(self._roots)
        self._known = {session_key(s): s for s in sessions}
        return facts_pb2.SessionSnapshot(sessions=sessions)

    def poll(self) -> list[facts_pb2.SessionEvent]:
        """Logouts, then logins, since the previous call. Before any snapshot, every session is a login."""
        current = {session_key(s): s for s in collect_sessions(self._roots)}
        logouts = [s for key, s in self._known.items() if key not in current]
        logins = [s for key, s in current.items() if key not in self._known]
        self._known = current
        return [
            *(facts_pb2.SessionEvent(kind=facts_pb2.SessionEvent.KIND_LOGOUT, session=s) for s in logouts),
            *(facts_pb2.SessionEvent(kind=facts_pb2.SessionEvent.KIND_LOGIN, session=s) for s in logins),
        ]
