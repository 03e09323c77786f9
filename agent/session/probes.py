"""Input idleness and the foreground window as the session helpers see them, for the service's collectors.

A Windows service runs in session 0 and sees neither the person's input nor their windows; the
helper in the person's session samples both and the service reads them here, behind the same
interfaces as its own probes: :class:`HelperIdleReader` is an ``IdleReader`` for
:class:`agent.collectors.activity.ActivityTracker`, and :class:`HelperForegroundTracker` has the
methods of :class:`agent.collectors.foreground.ForegroundTracker`. The helper has already matched
the window against the policy's title patterns; the title is taken only when the policy reports
titles. The account is the one the operating system named for the helper's connection.

:func:`use_helper_probes` decides where the service's desktop probes read: ``agent`` (its own: X11
and logind on Linux), ``helper``, or ``auto`` (the helper on Windows, the agent's own elsewhere).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from agent.collectors._probes import IdleSample, LogOnce
from agent.session.hub import SessionHub
from protos.counterguard.v1 import agent_pb2, facts_pb2

DESKTOP_PROBES = ("auto", "agent", "helper")


def use_helper_probes(setting: str, platform: str = sys.platform) -> bool:
    """Whether input idleness and the foreground window come from the session helpers."""
    return setting == "helper" or (setting == "auto" and platform == "win32")


class HelperIdleReader:
    """Input idleness of the person at the screen, from their session helper."""

    def __init__(self, hub: SessionHub, log_once: LogOnce) -> None:
        self._hub = hub
        self._log_once = log_once

    def __call__(self) -> IdleSample | None:
        current = self._hub.current()
        if current is None:
            self._log_once("no session helper has sent a sample lately")
            return None
        helper, sample = current
        if sample["idle_seconds"] is None:
            self._log_once(f"the helper in session {helper.session} cannot read input idleness")
            return None
        self._log_once.clear()
        return IdleSample(float(sample["idle_seconds"]), helper.user, helper.session,
                          sample["idle_source"] or "helper")


class HelperForegroundTracker:
    """The foreground window of the person at the screen, from their session helper; reported on change."""

    def __init__(self, hub: SessionHub) -> None:
        self._hub = hub
        self._last: tuple[str, ...] | None = None

    def set_policy(self, patterns: Iterable[agent_pb2.TitlePattern], report_titles: bool) -> None:
        """Send the helpers the patterns to match and whether titles may be sent."""
        self._hub.configure(title_patterns=patterns, report_titles=report_titles)

    def reset(self) -> None:
        """Forget the last report: the next poll reports the foreground window whatever it is."""
        self._last = None

    def poll(self) -> facts_pb2.ForegroundWindow | None:
        """The foreground window if its category, pattern or program changed since the last report."""
        current = self._hub.current()
        if current is None or current[1]["foreground"] is None:
            return None
        helper, sample = current
        window = sample["foreground"]
        title = window["title"] if self._hub.report_titles else ""
        key = (window["category"], window["pattern_id"], window["executable"], title)
        if key == self._last:
            return None
        self._last = key
        return facts_pb2.ForegroundWindow(category=window["category"], pattern_id=window["pattern_id"],
                                          executable=window["executable"], pid=window["pid"], username=helper.user,
                                          title=title)
