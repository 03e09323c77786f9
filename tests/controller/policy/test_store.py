"""The policy store, once per database back end: apply, history, no-ops, refusals, the default, caching."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from controller.db import session_scope
from controller.errors import Conflict, NotFound
from controller.policy.loader import PolicyError
from controller.policy.records import PolicyActivation, PolicyVersion
from controller.policy.store import PolicyStore, content_sha256
from policies import DEFAULT_POLICY, EXAMPLES

POLICY = """\
id: hall
version: "{version}"
name: 服务大厅
timetable:
  periods: [{{start: "09:00", end: "12:00"}}]
rules:
  - {{id: games, kind: forbidden_program, ref: R11.6, title: 游戏, categories: [game]}}
"""


def text(version: str = "1") -> str:
    return POLICY.format(version=version)


def counts(engine: Engine) -> tuple[int, int]:
    with session_scope(engine) as session:
        versions = session.scalar(select(func.count()).select_from(PolicyVersion)) or 0
        activations = session.scalar(select(func.count()).select_from(PolicyActivation)) or 0
    return versions, activations


@pytest.fixture
def store(engine: Engine, clock) -> PolicyStore:  # type: ignore[no-untyped-def]
    return PolicyStore(engine, clock)


def test_apply_then_active_and_history(store: PolicyStore, engine: Engine, clock) -> None:  # type: ignore[no-untyped-def]
    assert store.active() is None and store.history() == []

    record = store.apply(text(), "hall.yaml", "alice")

    assert (record.label, record.source, record.applied_by, record.applied_at) == ("hall@1", "hall.yaml", "alice", clock.now)
    assert record.active and not record.unchanged and record.sha256 == content_sha256(text())
    loaded = store.active()
    assert loaded is not None and loaded.version == "hall@1" and loaded.policy.name == "服务大厅"
    assert loaded.record.content == text()
    assert loaded.calendar.is_working_day(dt.date(2026, 11, 2))
    assert loaded.matcher.match_process("x.exe") is None
    (entry,) = store.history()
    assert entry.label == "hall@1" and entry.active


def test_a_new_version_becomes_active_and_the_history_keeps_both(store: PolicyStore, clock) -> None:  # type: ignore[no-untyped-def]
    store.apply(text("1"), "hall.yaml", "alice")
    clock.advance(hours=1)
    store.apply(text("2"), "hall.yaml", "bob")

    loaded = store.active()
    assert loaded is not None and loaded.version == "hall@2"
    assert [(r.label, r.applied_by, r.active) for r in store.history()] == [("hall@2", "bob", True), ("hall@1", "alice", False)]
    assert store.get("hall", "1").applied_by == "alice" and not store.get("hall", "1").active
    assert store.get("hall", "2").active


def test_the_same_content_twice_is_a_no_op_that_says_so(store: PolicyStore, engine: Engine) -> None:
    store.apply(text(), "hall.yaml", "alice")

    again = store.apply(text(), "elsewhere.yaml", "bob")

    assert again.unchanged and again.active and again.applied_by == "alice"
    assert counts(engine) == (1, 1)


def test_applying_an_older_version_again_rolls_back(store: PolicyStore, engine: Engine, clock) -> None:  # type: ignore[no-untyped-def]
    store.apply(text("1"), "hall.yaml", "alice")
    store.apply(text("2"), "hall.yaml", "alice")
    clock.advance(minutes=5)

    back = store.apply(text("1"), "hall.yaml", "carol")

    assert not back.unchanged and (back.applied_by, back.applied_at) == ("carol", clock.now)
    loaded = store.active()
    assert loaded is not None and loaded.version == "hall@1"
    assert [r.label for r in store.history()] == ["hall@1", "hall@2", "hall@1"]
    assert counts(engine) == (2, 3)


def test_changed_content_under_a_stored_version_is_refused(store: PolicyStore, engine: Engine) -> None:
    store.apply(text(), "hall.yaml", "alice")

    with pytest.raises(Conflict, match="policy hall version 1 was already applied .* give the changed file a new version"):
        store.apply(text().replace("服务大厅", "大厅"), "hall.yaml", "bob")
    assert counts(engine) == (1, 1)


def test_an_invalid_file_stores_nothing(store: PolicyStore, engine: Engine) -> None:
    with pytest.raises(PolicyError, match=r"^bad.yaml:7: rules\[0\].categories\[0\]: 'gmae' is not one of"):
        store.apply(text().replace("[game]", "[gmae]"), "bad.yaml", "alice")

    assert counts(engine) == (0, 0) and store.active() is None


def test_get_a_version_never_applied(store: PolicyStore) -> None:
    with pytest.raises(NotFound, match="policy hall version 9 was never applied"):
        store.get("hall", "9")


def test_ensure_default_applies_the_shipped_default_once(store: PolicyStore, engine: Engine) -> None:
    first = store.ensure_default(DEFAULT_POLICY, "counterguard serve")

    assert first is not None and first.policy_id == "counterguard-default" and first.source == "default.yaml"
    assert store.ensure_default(DEFAULT_POLICY, "counterguard serve") is None
    assert counts(engine) == (1, 1)


def test_ensure_default_leaves_an_applied_policy_alone(store: PolicyStore) -> None:
    store.apply((EXAMPLES / "r12-money.yaml").read_text(encoding="utf-8"), "r12-money.yaml", "alice")

    assert store.ensure_default(DEFAULT_POLICY, "counterguard serve") is None
    loaded = store.active()
    assert loaded is not None and loaded.policy.id == "r12-money"


def test_active_is_parsed_once_and_seen_by_another_store(engine: Engine, clock) -> None:  # type: ignore[no-untyped-def]
    writer, reader = PolicyStore(engine, clock), PolicyStore(engine, clock)
    writer.apply(text("1"), "hall.yaml", "alice")

    first = reader.active()
    assert reader.active() is first  # cached: nothing parsed again

    writer.apply(text("2"), "hall.yaml", "alice")  # e.g. `policy apply` while serve runs
    second = reader.active()
    assert second is not None and second.version == "hall@2" and second is not first


def test_a_stored_version_that_no_longer_validates_keeps_the_previous(
    engine: Engine, clock, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    writer, reader = PolicyStore(engine, clock), PolicyStore(engine, clock)
    writer.apply(text("1"), "hall.yaml", "alice")
    assert (reader.active() or pytest.fail()).version == "hall@1"
    record = writer.apply(text("2"), "hall.yaml", "alice")
    with session_scope(engine) as session:  # as if written by a newer controller with a field we do not know
        session.execute(
            update(PolicyVersion).where(PolicyVersion.id == record.id).values(content=text("2") + "future_field: 1\n")  # type: ignore[arg-type]
        )

    with caplog.at_level(logging.ERROR, logger="controller.policy.store"):
        kept = reader.active()
        kept_again = reader.active()

    assert kept is not None and kept.version == "hall@1" and kept_again is kept
    (message,) = [r.getMessage() for r in caplog.records]
    assert "the active policy hall@2 cannot be used, keeping hall@1" in message and "future_field" in message
