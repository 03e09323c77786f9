"""The directory of enrolled agents: listing, details, revocation, and authenticating a client certificate.

:meth:`AgentDirectory.authenticate` asks the database on every call (one primary-key lookup), so
a revocation takes effect at the very next call, on every controller replica, with no cache to
invalidate.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from controller.clock import Clock, utc_now
from controller.db import session_scope
from controller.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from controller.models import Agent
from controller.pki import agent_id_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentSummary:
    """One line of ``agents list``."""

    id: str
    hostname: str
    window: str
    enrolled_at: dt.datetime
    last_seen_at: dt.datetime | None
    last_sequence: int
    outbox_depth: int | None
    revoked: bool


@dataclass(frozen=True)
class AgentDetails:
    """Everything ``agents show`` prints: identity, certificate, activity, revocation."""

    id: str
    hostname: str
    machine_id: str
    os_family: str
    agent_version: str
    window: str
    unit: str | None
    token_id: str | None
    enrolled_at: dt.datetime
    cert_serial: str
    cert_fingerprint: str
    cert_not_after: dt.datetime
    last_seen_at: dt.datetime | None
    last_sequence: int
    outbox_depth: int | None
    revoked: bool
    revoked_at: dt.datetime | None
    revoked_reason: str


def _details(row: Agent) -> AgentDetails:
    return AgentDetails(
        id=row.id,
        hostname=row.hostname,
        machine_id=row.machine_id,
        os_family=row.os_family,
        agent_version=row.agent_version,
        window=row.window,
        unit=row.unit,
        token_id=row.token_id,
        enrolled_at=row.enrolled_at,
        cert_serial=row.cert_serial,
        cert_fingerprint=row.cert_fingerprint,
        cert_not_after=row.cert_not_after,
        last_seen_at=row.last_seen_at,
        last_sequence=row.last_sequence,
        outbox_depth=row.outbox_depth,
        revoked=row.revoked_at is not None,
        revoked_at=row.revoked_at,
        revoked_reason=row.revoked_reason,
    )


class AgentDirectory:
    """Read and revoke enrolled agents; tell whether a presented certificate belongs to one."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    def list(self) -> list[AgentSummary]:
        """Every enrolled agent (revoked ones too), by window then id."""
        with session_scope(self._engine) as session:
            rows = session.scalars(select(Agent).order_by(Agent.window, Agent.id)).all()
        return [
            AgentSummary(
                id=row.id,
                hostname=row.hostname,
                window=row.window,
                enrolled_at=row.enrolled_at,
                last_seen_at=row.last_seen_at,
                last_sequence=row.last_sequence,
                outbox_depth=row.outbox_depth,
                revoked=row.revoked_at is not None,
            )
            for row in rows
        ]

    def get(self, agent_id: str) -> AgentDetails:
        with session_scope(self._engine) as session:
            row = session.get(Agent, agent_id)
        if row is None:
            raise NotFound(f"no agent {agent_id!r}")
        return _details(row)

    def revoke(self, agent_id: str, reason: str = "") -> AgentDetails:
        """Refuse the agent's certificate from its next call on; its facts stay."""
        if len(reason) > 256:
            raise InvalidInput("the revocation reason is longer than 256 characters")
        with session_scope(self._engine) as session:
            row = session.get(Agent, agent_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no agent {agent_id!r}")
            if row.revoked_at is not None:
                raise Conflict(f"agent {agent_id!r} is already revoked (since {row.revoked_at:%Y-%m-%d %H:%M} UTC)")
            row.revoked_at = self._clock()
            row.revoked_reason = reason
            session.add(row)
        log.info("revoked agent %s: %s", agent_id, reason or "no reason given")
        return _details(row)

    def authenticate(self, cert_pem: bytes) -> Agent:
        """The agent a TLS-verified client certificate belongs to, else :class:`Unauthenticated`.

        The certificate must name a known agent (CN), be the very certificate issued to it
        (SHA-256 fingerprint) and the agent must not be revoked.
        """
        agent_id, presented = identify(cert_pem)
        with session_scope(self._engine) as session:
            row = session.get(Agent, agent_id)
        check_certificate(agent_id, presented, row)
        assert row is not None
        return row


@functools.lru_cache(maxsize=16384)  # agents of one worker: above, each call parses again (≈ 50 µs)
def identify(cert_pem: bytes) -> tuple[str, str]:
    """The agent id a TLS-verified client certificate names and its fingerprint, else :class:`Unauthenticated`.

    Only reads the certificate (kept for the next call of the same agent); whether it is still the
    agent's certificate is :func:`check_certificate`'s question, asked of the database each time.
    """
    try:
        agent_id, presented = agent_id_of(cert_pem)
    except ValueError:
        raise Unauthenticated("the client certificate cannot be read") from None
    if not agent_id:
        raise Unauthenticated("the client certificate names no agent")
    return agent_id, presented


def check_certificate(agent_id: str, presented: str, row: Any) -> None:
    """Raise :class:`Unauthenticated` unless ``row`` (the agent's stored row, or None) holds the certificate
    with fingerprint ``presented`` and is not revoked."""
    if row is None:
        raise Unauthenticated(f"unknown agent {agent_id!r}: enrol again")
    if not hmac.compare_digest(presented, row.cert_fingerprint):
        raise Unauthenticated(f"the certificate presented is not the one issued to agent {agent_id!r}")
    if row.revoked_at is not None:
        raise Unauthenticated(
            f"agent {agent_id!r} is revoked" + (f": {row.revoked_reason}" if row.revoked_reason else "")
        )
