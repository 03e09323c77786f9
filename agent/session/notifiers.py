"""How a session helper shows a notice: the desktop's own notification service, chosen per platform.

A :class:`Notifier` has one method, ``show(title, body)``, which raises :class:`NotifierError` with
the reason when the notice could not be shown. Linux uses the freedesktop notification service on the
session bus (``_notify_linux``), Windows a toast (``_notify_windows``); :func:`default_notifier` picks
the one of this platform, once.
"""

from __future__ import annotations

import sys
from typing import Protocol

from agent.errors import AgentError

APP_NAME = "CounterGuard"


class NotifierError(AgentError):
    """A notice could not be shown; the text says why."""


class Notifier(Protocol):
    """Shows one notice to the person at the screen."""

    def show(self, title: str, body: str) -> None: ...


def default_notifier() -> Notifier:
    """The notifier of this platform."""
    if sys.platform == "win32":
        from agent.session._notify_windows import ToastNotifier

        return ToastNotifier()
    from agent.session._notify_linux import FreedesktopNotifier

    return FreedesktopNotifier()
