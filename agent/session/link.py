"""What the agent service holds of the session helpers: the hub, the notice dispatcher, the probes' source.

:class:`SessionLink` is the one object :class:`agent.service.AgentService` keeps for all of this. It
decides (``desktop_probes`` setting, :func:`agent.session.probes.use_helper_probes`) whether the
service's input-idle and foreground-window collectors read the helpers' samples, asks the helpers to
sample at the pace those collectors poll, and passes the controller's notices on only while the
policy the agent holds has notices on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from agent.collectors._probes import LogOnce
from agent.config import AgentConfig
from agent.notices import NoticeDispatcher
from agent.session.channel import default_address
from agent.session.hub import SessionHub
from agent.session.probes import HelperForegroundTracker, HelperIdleReader, use_helper_probes
from protos.counterguard.v1 import agent_pb2

log = logging.getLogger(__name__)


class SessionLink:
    """The service's side of the session helpers; see the module docstring."""

    def __init__(self, config: AgentConfig, hub: SessionHub | None = None) -> None:
        self.hub = hub or SessionHub(default_address(config.run_dir))
        self.notices = NoticeDispatcher(self.hub.show)
        self.helper_probes = use_helper_probes(config.desktop_probes)
        self.notices_enabled = False
        if self.helper_probes:
            self.hub.configure(sample_interval=config.activity_poll_interval_seconds)

    def idle_reader(self) -> HelperIdleReader | None:
        """The input-idle reader the activity collector uses: the helpers', or ``None`` for its own."""
        return HelperIdleReader(self.hub, LogOnce(log, "input idle (session helper)")) if self.helper_probes else None

    def foreground_tracker(self) -> HelperForegroundTracker | None:
        """The foreground tracker to use instead of the agent's own, or ``None`` to keep that."""
        return HelperForegroundTracker(self.hub) if self.helper_probes else None

    def apply_policy(self, policy: agent_pb2.AgentPolicy, activity_interval: float,
                     foreground_interval: float) -> None:
        """Follow a new policy: notices on or off, and what the helpers sample how often."""
        if policy.notices_enabled != self.notices_enabled:
            log.info("notices to the person at the screen are %s", "on" if policy.notices_enabled else "off")
        self.notices_enabled = policy.notices_enabled
        if self.helper_probes:
            interval = min(activity_interval, foreground_interval if policy.foreground_enabled else math.inf)
            self.hub.configure(sample_interval=interval, foreground=policy.foreground_enabled)

    def announce(self, notices: Iterable[agent_pb2.Notice]) -> None:
        """Hand the controller's notices to the helpers (queued, never blocking) when notices are on."""
        if self.notices_enabled:
            self.notices.submit(notices)
        else:
            log.info("notices from the controller ignored: the policy held here has them off")

    def start(self) -> None:
        """Listen for the helpers."""
        self.hub.start()

    def stop(self) -> None:
        """Stop delivering notices and close the helpers' connections."""
        self.notices.stop()
        self.hub.stop()
