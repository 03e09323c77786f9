"""The agent's part of the stored policy: version string, settings, title patterns, antivirus probes."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from controller.grpc_server import BuiltinPolicy
from controller.policy.provider import StoredPolicyProvider, agent_policy
from controller.policy.store import PolicyStore
from policies import DEFAULT_POLICY, EXAMPLES


class Ticks:
    """A settable monotonic clock for the provider's refresh interval."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(engine: Engine, clock) -> PolicyStore:  # type: ignore[no-untyped-def]
    return PolicyStore(engine, clock)


def test_the_builtin_policy_until_one_is_applied(store: PolicyStore) -> None:
    version, policy = StoredPolicyProvider(store).current()

    assert version == BuiltinPolicy.VERSION and policy == BuiltinPolicy().current()[1]


def test_the_default_policy_for_agents(store: PolicyStore) -> None:
    store.ensure_default(DEFAULT_POLICY, "test")

    version, policy = StoredPolicyProvider(store).current()

    assert version == "counterguard-default@2026.2"
    assert policy.foreground_enabled and not policy.report_titles
    assert (policy.idle_threshold_seconds, policy.foreground_poll_interval_seconds) == (300, 5)
    assert policy.report_interval_seconds == 0, "zero: agents keep their own interval"
    assert list(policy.removable_mount_roots) == ["/media", "/run/media", "/mnt"]
    patterns = {p.id: p for p in policy.title_patterns}
    assert list(patterns["taobao"].title_contains) == ["淘宝", "taobao"] and patterns["taobao"].category == "shopping"
    assert "QQGame.exe" in patterns["qqgame"].executables
    assert "tonghuashun" in patterns and "netease-cloud-music" in patterns
    # Chat is allowed by default and office software is never forbidden: the agent is not told about them.
    assert {p.category for p in policy.title_patterns} == {"game", "video", "music", "shopping", "stock"}
    probes = {p.name: p for p in policy.antivirus}
    assert "360sd.exe" in probes["360杀毒 / 360安全卫士"].process_names
    assert list(probes["ClamAV"].packages) == ["clamav-daemon"]
    assert policy.antivirus_check_interval_seconds == 600


def test_a_policy_forbidding_chat_sends_the_chat_patterns(store: PolicyStore) -> None:
    store.apply((EXAMPLES / "r12-money.yaml").read_text(encoding="utf-8"), "r12-money.yaml", "test")
    loaded = store.active()
    assert loaded is not None

    categories = {p.category for p in agent_policy(loaded).title_patterns}

    assert categories == {"shopping", "chat", "game", "video"}


def test_no_title_patterns_when_the_foreground_is_not_watched(store: PolicyStore) -> None:
    text_ = DEFAULT_POLICY.read_text(encoding="utf-8").replace("foreground_enabled: true", "foreground_enabled: false")
    store.apply(text_.replace('version: "2026.2"', 'version: "no-foreground"'), "x.yaml", "test")

    _, policy = StoredPolicyProvider(store).current()

    assert not policy.foreground_enabled and len(policy.title_patterns) == 0


def test_a_newly_applied_policy_is_served_after_the_refresh_interval(store: PolicyStore) -> None:
    ticks = Ticks()
    provider = StoredPolicyProvider(store, refresh_seconds=5, monotonic=ticks)
    store.ensure_default(DEFAULT_POLICY, "test")
    assert provider.current()[0] == "counterguard-default@2026.2"

    store.apply((EXAMPLES / "r3-summer.yaml").read_text(encoding="utf-8"), "r3-summer.yaml", "test")
    ticks.now += 4
    assert provider.current()[0] == "counterguard-default@2026.2"
    ticks.now += 1
    assert provider.current()[0] == "r3-summer@2026.1"


def test_a_database_failure_keeps_the_policy_in_force(store: PolicyStore, engine: Engine) -> None:
    ticks = Ticks()
    provider = StoredPolicyProvider(store, refresh_seconds=5, monotonic=ticks)
    store.ensure_default(DEFAULT_POLICY, "test")
    before = provider.current()
    with engine.begin() as conn:  # the store cannot be read any more
        conn.execute(text("DROP TABLE policy_activation"))

    ticks.now += 60
    assert provider.current() == before
