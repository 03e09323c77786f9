"""Enrolment tokens: creation, the stored hash, listing by status, revocation, durations."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col

from controller.db import session_scope
from controller.errors import Conflict, InvalidInput, NotFound
from controller.models import EnrollmentToken
from controller.tokens import TokenService, parse_duration, secret_matches, split_token


def test_create_returns_id_dot_secret_and_stores_only_the_hash(engine: Engine, clock) -> None:
    created = TokenService(engine, clock).create(
        "W07", "市场监管局", expires_in=dt.timedelta(days=7), max_uses=3, created_by="admin", note="new PC"
    )

    token_id, _, secret = created.token.partition(".")
    assert token_id == created.token_id and re.fullmatch(r"[0-9a-f]{12}", token_id)
    assert len(secret) >= 32
    assert created.expires_at == clock() + dt.timedelta(days=7)
    with session_scope(engine) as session:
        row = session.get(EnrollmentToken, token_id)
    assert row is not None
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = " ".join(str(value) for value in row.model_dump().values())
    assert secret not in stored
    assert (row.window, row.unit, row.max_uses, row.uses, row.created_by, row.note) == (
        "W07",
        "市场监管局",
        3,
        0,
        "admin",
        "new PC",
    )


def test_two_tokens_differ(engine: Engine, clock) -> None:
    service = TokenService(engine, clock)
    first = service.create("W01", expires_in=dt.timedelta(hours=1))
    second = service.create("W01", expires_in=dt.timedelta(hours=1))
    assert first.token_id != second.token_id and first.token != second.token


def test_secret_check_and_token_parsing() -> None:
    stored = hashlib.sha256(b"s3cret").hexdigest()
    assert secret_matches("s3cret", stored)
    assert not secret_matches("s3creT", stored)
    assert split_token("abc123.xy-Z_") == ("abc123", "xy-Z_")
    for bad in ("", "abc123", "abc123.", ".secret", "ABC.secret", "not hex.secret", "0123456789abcdef0.x"):
        assert split_token(bad) is None, bad


def test_list_shows_usable_tokens_by_default_and_all_with_status(engine: Engine, clock) -> None:
    service = TokenService(engine, clock)
    active = service.create("W01", expires_in=dt.timedelta(days=7))
    short = service.create("W02", expires_in=dt.timedelta(hours=1))
    revoked = service.create("W03", expires_in=dt.timedelta(days=7))
    used = service.create("W04", expires_in=dt.timedelta(days=7))
    service.revoke(revoked.token_id)
    with session_scope(engine) as session:
        session.execute(update(EnrollmentToken).where(col(EnrollmentToken.id) == used.token_id).values(uses=1))

    assert {t.token_id for t in service.list()} == {active.token_id, short.token_id}
    clock.advance(hours=2)
    assert [t.token_id for t in service.list()] == [active.token_id]

    statuses = {t.token_id: t.status for t in service.list(include_expired=True)}
    assert statuses == {
        active.token_id: "active",
        short.token_id: "expired",
        revoked.token_id: "revoked",
        used.token_id: "used up",
    }


def test_revoke_marks_the_token_and_refuses_twice_or_unknown(engine: Engine, clock) -> None:
    service = TokenService(engine, clock)
    created = service.create("W01", expires_in=dt.timedelta(days=1))
    clock.advance(minutes=5)

    summary = service.revoke(created.token_id)

    assert summary.status == "revoked" and summary.revoked_at == clock()
    with pytest.raises(Conflict, match="already revoked"):
        service.revoke(created.token_id)
    with pytest.raises(NotFound, match="no enrolment token 'feedfeedfeed'"):
        service.revoke("feedfeedfeed")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": "  "}, "window must not be empty"),
        ({"window": "W" * 65}, "window is longer than 64"),
        ({"max_uses": 0}, "at least 1"),
        ({"expires_in": dt.timedelta(0)}, "expire in the future"),
        ({"expires_in": dt.timedelta(days=400)}, "at most 366 days"),
        ({"note": "n" * 257}, "note is longer than 256"),
    ],
)
def test_create_refuses_bad_arguments(engine: Engine, clock, kwargs: dict, message: str) -> None:
    arguments = {"window": "W01", "expires_in": dt.timedelta(days=1), **kwargs}
    with pytest.raises(InvalidInput, match=message):
        TokenService(engine, clock).create(**arguments)
    assert TokenService(engine, clock).list(include_expired=True) == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30m", dt.timedelta(minutes=30)),
        ("12h", dt.timedelta(hours=12)),
        ("7d", dt.timedelta(days=7)),
        ("2w", dt.timedelta(weeks=2)),
        (" 90s ", dt.timedelta(seconds=90)),
    ],
)
def test_parse_duration(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["3x", "", "d", "7", "-1d", "1.5h", "7 days", "7D", "99999999999999w"])
def test_parse_duration_refuses_with_a_clear_message(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"invalid duration .*: "):
        parse_duration(text)


def test_parse_duration_refuses_zero() -> None:
    with pytest.raises(InvalidInput, match="longer than zero"):
        parse_duration("0d")
