"""Enrolment tokens: what an admin hands to whoever installs an agent at a counter.

A token reads ``<id>.<secret>``. The id is a short random hex string that names the token in
listings and logs; the secret (``secrets.token_urlsafe(24)``) is shown once, when the token is
created, and only its SHA-256 is stored. A token is bound to a window (and optionally a unit),
expires, and may be used a limited number of times; :mod:`controller.enrollment` consumes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from controller.clock import Clock, utc_now
from controller.db import session_scope
from controller.errors import Conflict, InvalidInput, NotFound
from controller.models import EnrollmentToken

_ID_BYTES = 6  # 12 hex characters
_SECRET_BYTES = 24
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_TOKEN_LIFETIME = dt.timedelta(days=366)


@dataclass(frozen=True)
class CreatedToken:
    """A new token; ``token`` is the secret string, which is never available again."""

    token_id: str
    token: str
    window: str
    unit: str | None
    expires_at: dt.datetime
    max_uses: int
    note: str


@dataclass(frozen=True)
class TokenSummary:
    """A stored token as an admin sees it (never the secret). ``status``: active, expired, used up, revoked."""

    token_id: str
    window: str
    unit: str | None
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime
    max_uses: int
    uses: int
    revoked_at: dt.datetime | None
    note: str
    status: str


def parse_duration(text: str) -> dt.timedelta:
    """``"30m"``, ``"12h"``, ``"7d"``, ``"2w"`` (or ``"90s"``) as a positive :class:`~datetime.timedelta`."""
    match = _DURATION.match(text or "")
    if match is None:
        raise InvalidInput(f"invalid duration {text!r}: use a number and m, h, d or w, such as 30m or 7d")
    amount = int(match.group(1))
    if amount <= 0:
        raise InvalidInput(f"invalid duration {text!r}: it must be longer than zero")
    try:
        return dt.timedelta(seconds=amount * _UNIT_SECONDS[match.group(2)])
    except OverflowError:
        raise InvalidInput(f"invalid duration {text!r}: it is far too long") from None


def hash_secret(secret: str) -> str:
    """The stored form of a token secret: SHA-256, lower-case hex (the secret has 192 random bits)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Compare a presented secret with the stored hash in constant time."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def split_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token string, else ``None``."""
    token_id, dot, secret = (token or "").strip().partition(".")
    if not dot or not re.fullmatch(r"[0-9a-f]{1,16}", token_id) or not secret:
        return None
    return token_id, secret


def token_status(row: EnrollmentToken, now: dt.datetime) -> str:
    """Why a token can or cannot enrol anyone now: ``active``, ``revoked``, ``expired`` or ``used up``."""
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at <= now:
        return "expired"
    if row.uses >= row.max_uses:
        return "used up"
    return "active"


def _check_text(name: str, value: str | None, limit: int, *, required: bool = False) -> None:
    if required and not (value or "").strip():
        raise InvalidInput(f"the {name} must not be empty")
    if value is not None and len(value) > limit:
        raise InvalidInput(f"the {name} is longer than {limit} characters")


class TokenService:
    """Create, list and revoke enrolment tokens."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    def create(
        self,
        window: str,
        unit: str | None = None,
        *,
        expires_in: dt.timedelta,
        max_uses: int = 1,
        created_by: str = "",
        note: str = "",
    ) -> CreatedToken:
        """Make a token for ``window`` valid for ``expires_in`` and ``max_uses`` enrolments."""
        window = (window or "").strip()
        unit = (unit or "").strip() or None
        _check_text("window", window, 64, required=True)
        _check_text("unit", unit, 128)
        _check_text("note", note, 256)
        _check_text("creator name", created_by, 128)
        if max_uses < 1:
            raise InvalidInput(f"the number of uses must be at least 1, not {max_uses}")
        if expires_in <= dt.timedelta(0):
            raise InvalidInput("a token must expire in the future")
        if expires_in > MAX_TOKEN_LIFETIME:
            raise InvalidInput(f"a token may be valid for at most {MAX_TOKEN_LIFETIME.days} days")

        now = self._clock()
        token_id = secrets.token_hex(_ID_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        row = EnrollmentToken(
            id=token_id,
            secret_hash=hash_secret(secret),
            window=window,
            unit=unit,
            created_at=now,
            created_by=created_by,
            expires_at=now + expires_in,
            max_uses=max_uses,
            note=note,
        )
        with session_scope(self._engine) as session:
            session.add(row)
        return CreatedToken(
            token_id=token_id,
            token=f"{token_id}.{secret}",
            window=window,
            unit=unit,
            expires_at=row.expires_at,
            max_uses=max_uses,
            note=note,
        )

    def list(self, include_expired: bool = False) -> list[TokenSummary]:
        """Tokens, newest first; by default only those that can still enrol someone.

        ``include_expired=True`` also lists tokens that are expired, used up or revoked.
        """
        now = self._clock()
        query = select(EnrollmentToken).order_by(col(EnrollmentToken.created_at).desc(), col(EnrollmentToken.id))
        if not include_expired:
            query = query.where(
                col(EnrollmentToken.revoked_at).is_(None),
                col(EnrollmentToken.expires_at) > now,
                col(EnrollmentToken.uses) < col(EnrollmentToken.max_uses),
            )
        with session_scope(self._engine) as session:
            rows = session.scalars(query).all()
        return [self._summary(row, now) for row in rows]

    def revoke(self, token_id: str) -> TokenSummary:
        """Make a token unusable from now on; enrolments it already made stay valid."""
        now = self._clock()
        with session_scope(self._engine) as session:
            row = session.get(EnrollmentToken, token_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no enrolment token {token_id!r}")
            if row.revoked_at is not None:
                raise Conflict(f"enrolment token {token_id!r} is already revoked")
            row.revoked_at = now
            session.add(row)
        return self._summary(row, now)

    @staticmethod
    def _summary(row: EnrollmentToken, now: dt.datetime) -> TokenSummary:
        return TokenSummary(
            token_id=row.id,
            window=row.window,
            unit=row.unit,
            created_at=row.created_at,
            created_by=row.created_by,
            expires_at=row.expires_at,
            max_uses=row.max_uses,
            uses=row.uses,
            revoked_at=row.revoked_at,
            note=row.note,
            status=token_status(row, now),
        )
