"""The agent's part of the active policy, for ``FetchPolicy``, the version in every ``Report`` answer and
the notices it carries.

:class:`StoredPolicyProvider` implements :class:`controller.grpc_server.PolicyProvider` over the
:class:`~controller.policy.store.PolicyStore`. It asks the store at most every ``refresh_seconds``
(every Report answer carries the version, so this runs per call), and builds the ``AgentPolicy``
once per policy version. Until a policy is active it serves the built-in empty one. Notices are
written with the policy active when they are asked for (see :mod:`controller.policy.notices`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy.exc import SQLAlchemyError

from controller.clock import Clock, utc_now
from controller.grpc_server import BuiltinPolicy
from controller.policy.model import Category, RuleKind
from controller.policy.notices import RecordedViolation, notices_for
from controller.policy.store import LoadedPolicy, PolicyStore
from protos.counterguard.v1 import agent_pb2

log = logging.getLogger(__name__)


def foreground_categories(loaded: LoadedPolicy) -> set[Category]:
    """The categories an enabled rule forbids in the foreground window: what the agent must recognise."""
    return {
        category
        for rule in loaded.policy.rules
        if rule.enabled and rule.kind is RuleKind.FORBIDDEN_PROGRAM and "foreground" in rule.sources
        for category in rule.categories
    }


def agent_policy(loaded: LoadedPolicy) -> agent_pb2.AgentPolicy:
    """The ``AgentPolicy`` of a policy: its agent settings, title patterns and antivirus probes.

    Title patterns are sent only when the foreground window is watched, and only for the catalogue
    entries of the categories a rule forbids there: the agent learns no more than it needs.
    """
    settings = loaded.policy.agent
    message = agent_pb2.AgentPolicy(
        report_interval_seconds=settings.report_interval_seconds,
        heartbeat_interval_seconds=settings.heartbeat_interval_seconds,
        process_poll_interval_seconds=settings.process_poll_interval_seconds,
        session_poll_interval_seconds=settings.session_poll_interval_seconds,
        software_scan_interval_seconds=settings.software_scan_interval_seconds,
        inventory_interval_seconds=settings.inventory_interval_seconds,
        idle_threshold_seconds=settings.idle_threshold_seconds,
        activity_poll_interval_seconds=settings.activity_poll_interval_seconds,
        foreground_enabled=settings.foreground_enabled,
        foreground_poll_interval_seconds=settings.foreground_poll_interval_seconds,
        report_titles=settings.report_titles,
        antivirus_check_interval_seconds=settings.antivirus_check_interval_seconds,
        removable_mount_roots=list(settings.removable_mount_roots),
        notices_enabled=settings.notices_enabled,
        antivirus=[
            agent_pb2.AntivirusProbe(
                name=product.name,
                process_names=list(product.process_names),
                packages=list(product.packages),
                paths=list(product.paths),
            )
            for product in settings.antivirus
        ],
    )
    if settings.foreground_enabled:
        message.title_patterns.extend(loaded.matcher.title_patterns(foreground_categories(loaded)))
    return message


class StoredPolicyProvider:
    """The active stored policy as ``(version, AgentPolicy)``; version ``"<policy id>@<version>"``."""

    def __init__(
        self,
        store: PolicyStore,
        refresh_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._clock = clock
        self._refresh = refresh_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._current: tuple[str, agent_pb2.AgentPolicy] = BuiltinPolicy().current()
        self._sha: str | None = None

    def current(self) -> tuple[str, agent_pb2.AgentPolicy]:
        """The version and the agent policy in force (re-read from the store when due)."""
        now = self._monotonic()
        with self._lock:
            if self._checked_at is not None and now - self._checked_at < self._refresh:
                return self._current
            self._checked_at = now
            try:
                loaded = self._store.active()
            except SQLAlchemyError as exc:  # the database is down: keep serving what is in force
                log.warning("cannot read the active policy (%s); keeping %s", exc, self._current[0])
                return self._current
            if loaded is not None and loaded.record.sha256 != self._sha:
                self._current = (loaded.version, agent_policy(loaded))
                self._sha = loaded.record.sha256
            return self._current

    def notices(self, agent_id: str, recorded: Sequence[RecordedViolation]) -> list[agent_pb2.Notice]:
        """The notices announcing the agent's newly recorded violations; none when the active policy's
        notices are off, no policy is active, or the store cannot be read (logged)."""
        if not recorded:
            return []
        try:
            loaded = self._store.active()
        except SQLAlchemyError as exc:
            log.warning("cannot read the active policy (%s); %d new violations of agent %s not announced",
                        exc, len(recorded), agent_id)
            return []
        return notices_for(loaded.policy, recorded, agent_id, self._clock()) if loaded is not None else []
