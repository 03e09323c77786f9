"""Enrolment: exchange an enrolment token and a CSR for an agent id and a client certificate.

The token is checked (format, secret in constant time, revoked, expired, used up) and one use is
consumed by a single conditional ``UPDATE``; the CSR is signed and the agent stored in that same
transaction, so a bad CSR consumes nothing and two simultaneous enrolments with a single-use
token create exactly one agent, on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from controller.clock import Clock, utc_now
from controller.db import session_scope
from controller.errors import InvalidInput, PermissionDenied
from controller.models import Agent, EnrollmentToken
from controller.pki import ServerPKI, cert_pem, fingerprint, serial_hex, sign_csr
from controller.tokens import secret_matches, split_token, token_status

log = logging.getLogger(__name__)

_ID_ATTEMPTS = 3  # a clash of 40 random bits is rare; a second one in a row is not going to happen
# The Agent columns' limits (controller.models), checked here so both back ends refuse alike.
_FIELD_LIMITS = {"hostname": 255, "machine_id": 64, "os_family": 16, "agent_version": 32}


@dataclass(frozen=True)
class EnrollResult:
    """What a newly enrolled agent needs: its id, its certificate and the CA that issued it."""

    agent_id: str
    certificate_pem: bytes
    ca_certificate_pem: bytes
    window: str
    unit: str | None


def new_agent_id() -> str:
    return "ag-" + secrets.token_hex(5)


class EnrollmentService:
    """Turns valid enrolment tokens into enrolled agents."""

    def __init__(self, engine: Engine, pki: ServerPKI, clock: Clock = utc_now, client_cert_days: int = 365) -> None:
        if client_cert_days < 1:
            raise InvalidInput(f"client certificates must be valid for at least one day, not {client_cert_days}")
        self._engine = engine
        self._pki = pki
        self._clock = clock
        self._client_cert_days = client_cert_days

    def enroll(
        self,
        token: str,
        csr_pem: bytes,
        hostname: str = "",
        machine_id: str = "",
        os_family: str = "",
        agent_version: str = "",
    ) -> EnrollResult:
        """Enrol one agent; :class:`PermissionDenied` says why a token is refused, :class:`InvalidInput` a bad CSR."""
        now = self._clock()
        token_id = self._check_token(token, now)
        fields = {
            "hostname": hostname,
            "machine_id": machine_id,
            "os_family": os_family,
            "agent_version": agent_version,
        }
        for name, value in fields.items():
            if len(value) > _FIELD_LIMITS[name]:
                raise InvalidInput(f"{name} is longer than {_FIELD_LIMITS[name]} characters")

        for attempt in range(1, _ID_ATTEMPTS + 1):
            try:
                return self._consume_and_issue(token_id, csr_pem, fields, now)
            except IntegrityError:
                if attempt == _ID_ATTEMPTS:
                    raise
                log.warning("agent id clash while enrolling with token %s; trying another id", token_id)
        raise AssertionError("unreachable")

    def _check_token(self, token: str, now: dt.datetime) -> str:
        """The token's id when it may enrol someone now, else :class:`PermissionDenied` with the reason."""
        parts = split_token(token)
        if parts is None:
            raise PermissionDenied("the enrolment token is malformed (expected <id>.<secret>)")
        token_id, secret = parts
        with session_scope(self._engine) as session:
            row = session.get(EnrollmentToken, token_id)
        if row is None:
            raise PermissionDenied(f"unknown enrolment token {token_id!r}")
        if not secret_matches(secret, row.secret_hash):
            raise PermissionDenied(f"wrong secret for enrolment token {token_id!r}")
        status = token_status(row, now)
        if status != "active":
            raise PermissionDenied(f"enrolment token {token_id!r} is {status}")
        return token_id

    def _consume_and_issue(
        self, token_id: str, csr_pem: bytes, fields: dict[str, str], now: dt.datetime
    ) -> EnrollResult:
        """One transaction: take one use of the token, sign the CSR, store the agent."""
        with session_scope(self._engine) as session:
            # The conditional UPDATE comes first: it is the atomic check-and-take (a row lock on
            # PostgreSQL, the write lock on SQLite), so a concurrent enrolment sees the new count.
            taken = session.execute(
                update(EnrollmentToken)
                .where(
                    col(EnrollmentToken.id) == token_id,
                    col(EnrollmentToken.uses) < col(EnrollmentToken.max_uses),
                    col(EnrollmentToken.revoked_at).is_(None),
                    col(EnrollmentToken.expires_at) > now,
                )
                .values(uses=col(EnrollmentToken.uses) + 1)
                .execution_options(synchronize_session=False)
            )
            consumed = cast("CursorResult[Any]", taken).rowcount
            row = session.get(EnrollmentToken, token_id, populate_existing=True)
            if consumed != 1 or row is None:
                status = token_status(row, now) if row is not None else "gone"
                raise PermissionDenied(f"enrolment token {token_id!r} is {status}")

            agent_id = new_agent_id()
            cert = sign_csr(self._pki.ca_key, self._pki.ca_cert, csr_pem, agent_id, now, self._client_cert_days)
            session.add(
                Agent(
                    id=agent_id,
                    window=row.window,
                    unit=row.unit,
                    token_id=token_id,
                    enrolled_at=now,
                    cert_serial=serial_hex(cert),
                    cert_fingerprint=fingerprint(cert),
                    cert_not_after=cert.not_valid_after_utc,
                    hostname=fields["hostname"],
                    machine_id=fields["machine_id"],
                    os_family=fields["os_family"],
                    agent_version=fields["agent_version"],
                )
            )
            session.flush()  # an id clash surfaces here, inside the transaction
        log.info(
            "enrolled agent %s (host %r) for window %s with token %s",
            agent_id,
            fields["hostname"],
            row.window,
            token_id,
        )
        return EnrollResult(
            agent_id=agent_id,
            certificate_pem=cert_pem(cert),
            ca_certificate_pem=self._pki.ca_cert_pem,
            window=row.window,
            unit=row.unit,
        )
